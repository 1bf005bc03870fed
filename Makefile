# The two commands of the README. Both create/refresh the virtual environment at .venv.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
PIP     := $(BIN)/pip --disable-pip-version-check -q

.PHONY: demo test install install-dev system-deps bench

$(BIN)/python:
	$(PY) -m venv $(VENV)

install: $(BIN)/python
	$(PIP) install -r requirements/base.txt
	$(PIP) install --no-deps -e .

install-dev: $(BIN)/python
	$(PIP) install -r requirements/dev.txt
	$(PIP) install --no-deps -e .

# Main job: animate a real photo (the bundled astronaut, a public-domain NASA portrait) with the
# bundled dance, by the default model kinemate-photo; print where the video went.
demo: install
	$(BIN)/kinemate animate kinemate/assets/examples/astronaut.jpg \
		kinemate/assets/examples/dance.mp4 -o out/demo.mp4 --grid out/demo_grid.mp4

# System packages the suite drives for real (chromium): installed when run as root, else a
# one-line message says what to install.
system-deps:
	sh scripts/system-deps.sh

# Whole test suite (what CI runs).
test: system-deps install-dev
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

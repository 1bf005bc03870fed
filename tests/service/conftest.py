"""Fixtures of the service tests: tiny inputs, a real `kinemate serve` on loopback, keys.

The server is a subprocess (`python -m kinemate serve ...`) on a free port, running the real
pipeline with a tiny model (the golden MagicAnimate-layout weights, or the bundled
kinemate-tiny model when the golden set is missing) at 64x64 and 1-4 steps.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from service_helpers import Client, Server, prepare_model

# -- inputs ---------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def tiny_inputs(tmp_path_factory, demo_inputs) -> dict[str, Path]:
    """A small reference PNG and short DensePose driving clips made from the demo inputs."""
    from kinemate.io import fit_image, open_video, read_image, write_image, write_video

    out = tmp_path_factory.mktemp("service-inputs")
    ref = fit_image(read_image(demo_inputs / "monalisa.png"), (96, 96), "crop")
    write_image(out / "reference.png", ref)
    frames = []
    with open_video(demo_inputs / "running.mp4") as reader:
        for i, frame in enumerate(reader):
            if i % 2 == 0:
                frames.append(fit_image(frame, (64, 64), "crop"))
            if len(frames) == 16:
                break
    write_video(out / "driving.mp4", frames[:4], 25)
    write_video(out / "driving16.mp4", frames, 25)
    return {"reference": out / "reference.png", "driving": out / "driving.mp4",
            "driving16": out / "driving16.mp4"}


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path | None:
    return prepare_model(tmp_path_factory.mktemp("service-model"))


@pytest.fixture(scope="session")
def server(tmp_path_factory, model_dir):
    """One real server for all service tests (the crash test kills and restarts it)."""
    srv = Server(tmp_path_factory.mktemp("service-data"), model_dir,
                 ["--max-upload-mb", "8"]).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def client(server) -> Client:
    return server.client


@pytest.fixture()
def key(server) -> str:
    return server.new_key()



@pytest.fixture(scope="session")
def pose_server(tmp_path_factory):
    """A server running the bundled kinemate-tiny model, trained on skeleton maps: pose control
    needs such a model (the golden test model is a DensePose model, which is refused it)."""
    srv = Server(tmp_path_factory.mktemp("pose-service-data")).start()
    yield srv
    srv.stop()


# -- PostgreSQL ------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL server on loopback (see pg_helpers). Without the server
    binaries the tests that need it are skipped, except in CI (``CI`` set), where that fails."""
    import os

    from pg_helpers import PostgresServer, missing_reason, pg_bin_dir

    bin_dir = pg_bin_dir()
    if bin_dir is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(missing_reason() + " — CI must run the PostgreSQL tests")
        pytest.skip(missing_reason())
    server = PostgresServer(bin_dir).start()
    yield server
    server.cleanup()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> str:
    """A fresh job database: a SQLite file, then a new PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "kinemate.db")
    return request.getfixturevalue("postgres").create_database()

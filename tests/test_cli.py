import subprocess
import sys

from kinemate import __version__
from kinemate.cli import main


def test_version(capsys):
    try:
        main(["--version"])
    except SystemExit as exc:
        assert exc.code == 0
    assert __version__ in capsys.readouterr().out


def test_unknown_command_is_usage_error(capsys):
    try:
        rc = main(["no-such-command"])
    except SystemExit as exc:
        rc = exc.code
    assert rc == 2
    err = capsys.readouterr().err
    assert "invalid choice" in err and "Traceback" not in err


def test_module_entry_point_runs():
    out = subprocess.run(
        [sys.executable, "-m", "kinemate", "--help"], capture_output=True, text=True, check=True
    )
    assert "usage: kinemate" in out.stdout

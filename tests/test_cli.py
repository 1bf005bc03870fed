import subprocess
import sys
import types

import pytest

from kinemate import __version__, cli
from kinemate.cli import SUBCOMMANDS, build_parser, main
from kinemate.errors import InputError, UsageError


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert __version__ in capsys.readouterr().out


def test_unknown_command_is_usage_error(capsys):
    try:
        rc = main(["no-such-command"])
    except SystemExit as exc:
        rc = exc.code
    assert rc == 2
    err = capsys.readouterr().err
    assert "invalid choice" in err and "Traceback" not in err


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "usage: kinemate" in capsys.readouterr().out


def test_module_entry_point_runs():
    out = subprocess.run(
        [sys.executable, "-m", "kinemate", "--help"], capture_output=True, text=True, check=True
    )
    assert "usage: kinemate" in out.stdout
    for name in SUBCOMMANDS:  # every registered subcommand shows in --help
        assert name in out.stdout


def test_every_subcommand_has_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) == set(SUBCOMMANDS)
    for name, p in sub.choices.items():
        assert p.format_help().startswith("usage: kinemate " + name)


@pytest.fixture
def fake_command(monkeypatch):
    """A real subcommand module, registered the way every subcommand is."""
    mod = types.ModuleType("kinemate.cli._fake")
    calls = []

    def register(subparsers):
        p = subparsers.add_parser("fake", help="test command")
        p.add_argument("--fail", choices=["input", "usage", "interrupt", "bug"])
        p.set_defaults(func=run)

    def run(args):
        calls.append(args)
        if args.fail == "input":
            raise InputError("the file is broken — use another one")
        if args.fail == "usage":
            raise UsageError("bad option — pass --good")
        if args.fail == "interrupt":
            raise KeyboardInterrupt
        if args.fail == "bug":
            raise RuntimeError("a bug")
        return 0

    mod.register = register
    monkeypatch.setitem(sys.modules, "kinemate.cli._fake", mod)
    monkeypatch.setattr(cli, "SUBCOMMANDS", [*SUBCOMMANDS, "_fake"])
    return calls


def test_user_errors_are_one_line_with_exit_codes(fake_command, capsys):
    assert main(["fake"]) == 0 and len(fake_command) == 1
    assert main(["fake", "--fail", "input"]) == 1
    err = capsys.readouterr().err
    assert err == "kinemate: error: the file is broken — use another one\n"
    assert main(["fake", "--fail", "usage"]) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert main(["fake", "--fail", "interrupt"]) == 130
    with pytest.raises(RuntimeError):  # programming errors are not hidden
        main(["fake", "--fail", "bug"])


def test_verbose_shows_traceback(fake_command, caplog, capsys):
    assert main(["-v", "fake", "--fail", "input"]) == 1
    assert "kinemate: error: the file is broken" in capsys.readouterr().err
    assert any(r.exc_info for r in caplog.records)  # full traceback logged with -v
    out = subprocess.run(
        [sys.executable, "-m", "kinemate", "-v", "weights", "download", "no-such-weights"],
        capture_output=True, text=True,
    )
    assert out.returncode == 2 and "Traceback" in out.stderr


def test_missing_optional_dependency_keeps_cli_working(monkeypatch, capsys):
    monkeypatch.setattr(cli, "SUBCOMMANDS", [*SUBCOMMANDS, "_needs_missing_pkg"])

    def fake_import(name, _real=cli.importlib.import_module):
        if name == "kinemate.cli._needs_missing_pkg":
            raise ModuleNotFoundError("No module named 'nonexistent_pkg'", name="nonexistent_pkg")
        return _real(name)

    monkeypatch.setattr(cli.importlib, "import_module", fake_import)
    assert main(["_needs_missing_pkg", "x"]) == 1
    err = capsys.readouterr().err
    assert "nonexistent_pkg" in err and "install" in err and "Traceback" not in err


def test_user_error_through_real_process():
    out = subprocess.run(
        [sys.executable, "-m", "kinemate", "weights", "download", "no-such-weights"],
        capture_output=True, text=True,
    )
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "unknown weights" in out.stderr


def test_verbose_after_the_subcommand(fake_command, caplog, capsys):
    assert main(["fake", "--fail", "input", "-v"]) == 1
    assert any(r.exc_info for r in caplog.records)
    caplog.clear()
    assert main(["fake", "--fail", "input"]) == 1
    assert not any(r.exc_info for r in caplog.records)
    args = build_parser().parse_args(["weights", "list", "-v"])
    assert args.verbose is True
    assert build_parser().parse_args(["weights", "list"]).verbose is False

"""The ``kinemate`` command.

One command with subcommands. Each subcommand lives in its own module of this package and
exposes ``register(subparsers)``, which adds its parser and sets ``func`` (called with the
parsed arguments; returns an exit code or None). Subcommands appear here only when their
capability exists: add the module name to ``SUBCOMMANDS`` when it lands.

User errors (:class:`kinemate.errors.KinemateError`) are printed as one line, without a
traceback: exit 2 for usage errors, 1 for failures. ``-v`` turns on debug logs and full
tracebacks.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from kinemate import __version__
from kinemate.errors import KinemateError

# Module names under kinemate.cli, in the order they appear in --help.
SUBCOMMANDS: list[str] = ["animate", "pose", "verify", "synth", "eval", "train", "finetune",
                          "weights", "serve", "worker"]

log = logging.getLogger("kinemate")


class _Parser(argparse.ArgumentParser):
    """argparse that exits 2 with a one-line message on usage errors."""

    def error(self, message: str) -> None:  # noqa: D401
        self.print_usage(sys.stderr)
        self.exit(2, f"kinemate: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="kinemate",
        description=(
            "Animate the person in one photo with the motion of a driving video "
            "(or a pose sequence)."
        ),
        epilog="Run 'kinemate COMMAND --help' for the options of one command.",
    )
    parser.add_argument("--version", action="version", version=f"kinemate {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="show debug logs and full tracebacks"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"kinemate.cli.{name}")
        except ImportError as exc:
            # An optional dependency is missing (e.g. the service extras): every other command
            # keeps working, and this one says what to install.
            _register_unavailable(sub, name, exc)
            continue
        module.register(sub)
    _accept_verbose_anywhere(sub)
    return parser


def _accept_verbose_anywhere(subparsers: argparse._SubParsersAction) -> None:
    """Let ``-v`` also follow the subcommand (``kinemate weights download x -v``)."""
    for p in set(subparsers.choices.values()):
        if "-v" not in p._option_string_actions and "--verbose" not in p._option_string_actions:
            p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                           help="show debug logs and full tracebacks")
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                _accept_verbose_anywhere(action)


def _register_unavailable(sub, name: str, exc: ImportError) -> None:
    log.debug("subcommand %s unavailable: %s", name, exc)
    missing = getattr(exc, "name", None) or str(exc)
    p = sub.add_parser(name, help=f"(unavailable: needs {missing})", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)

    def run(args: argparse.Namespace) -> int:
        raise KinemateError(
            f"'kinemate {name}' cannot run because a package is missing ({exc}) — install the "
            "project's requirements (pip install -r requirements/dev.txt, or "
            "requirements/service.txt for the service) and try again."
        )

    p.set_defaults(func=run)


def _setup_logging(verbose: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not verbose:
        # Libraries we build on are chatty at INFO/WARNING about things users cannot act on.
        for noisy in ("diffusers", "transformers", "accelerate", "absl"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("GLOG_minloglevel", "2")


def _flag(name: str, value: str | None = None) -> str:
    """The CLI's spelling of an option named in an error message: `steps` -> --steps,
    `control=densepose` -> --control densepose, `retarget=false` -> --no-retarget."""
    flag = name.replace("_", "-")
    if value is None:
        return f"--{flag}"
    if value.lower() == "false":
        return f"--no-{flag}"
    return f"--{flag}" if value.lower() == "true" else f"--{flag} {value}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        rc = args.func(args)
    except KinemateError as exc:
        if args.verbose:
            log.exception("failed")
        print(f"kinemate: error: {exc.spelled(_flag)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("kinemate: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


def entry() -> None:  # console_scripts entry point
    sys.exit(main())

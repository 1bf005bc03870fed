"""Errors a user can cause.

Every error that a user can fix (a bad file, missing weights, no person in a photo, wrong
shapes) is a :class:`KinemateError`. Its message says what was wrong *and what to do*. The
CLI prints it as one line without a traceback and exits 1; the service turns it into a 4xx
answer.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_OPTION = re.compile(r"`([a-z][a-z0-9_]*)(?:=([^`]*))?`")


class KinemateError(Exception):
    """Base class of every error a user can cause and fix.

    A message names options and arguments by their one name in backticks, alone or with a
    value (`` `steps` ``, `` `retarget=false` ``); ``str(error)`` shows them as the Python
    keyword and HTTP field (``steps``, ``retarget=false``), and a front end with another
    spelling renders :meth:`spelled` (the CLI: ``--steps``, ``--no-retarget``).
    """

    exit_code = 1

    def spelled(self, spell: Callable[[str, str | None], str]) -> str:
        """The message with every `` `name` `` / `` `name=value` `` written as
        ``spell(name, value)`` (value None when there is none)."""
        text = str(self.args[0]) if self.args else ""
        return _OPTION.sub(lambda m: spell(m.group(1), m.group(2)), text)

    def __str__(self) -> str:
        return self.spelled(lambda name, value: name if value is None else f"{name}={value}")


class UsageError(KinemateError):
    """The command line or the call itself is wrong (bad option combination, bad value)."""

    exit_code = 2


class InputError(KinemateError):
    """An input file cannot be used: missing, unreadable, truncated, wrong type, too large."""


class WeightsError(KinemateError):
    """Model weights are missing, incomplete, or do not match the architecture."""


class NoPersonError(KinemateError):
    """No person could be found where one is required (reference photo or driving video)."""


class ConfigError(KinemateError):
    """A configuration file or value is invalid."""


class NumericsError(KinemateError):
    """The computation overflowed (non-finite values), typically a model run in a half-precision
    dtype its activations do not fit; a wider dtype fixes it."""

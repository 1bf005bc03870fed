"""Errors a user can cause.

Every error that a user can fix (a bad file, missing weights, no person in a photo, wrong
shapes) is a :class:`KinemateError`. Its message says what was wrong *and what to do*. The
CLI prints it as one line without a traceback and exits 1; the service turns it into a 4xx
answer.
"""

from __future__ import annotations


class KinemateError(Exception):
    """Base class of every error a user can cause and fix."""

    exit_code = 1


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

"""kinemate — animate a person in one photo with the motion of a driving video."""

from __future__ import annotations

__version__ = "0.1.0"

from kinemate.errors import KinemateError  # noqa: E402

__all__ = ["KinemateError", "__version__"]

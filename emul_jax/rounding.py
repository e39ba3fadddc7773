"""Rounding modes and overflow rules: the core's own enums (:mod:`emul.rounding`), re-exported."""

from emul.rounding import MODE_BITS, Overflow, Rounding

__all__ = ["Rounding", "Overflow", "MODE_BITS"]

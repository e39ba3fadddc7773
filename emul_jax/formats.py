"""Number formats: the core's own objects (:mod:`emul.formats`), re-exported unchanged."""

from emul.formats import FixedFormat, FloatFormat, Format, format

__all__ = ["FloatFormat", "FixedFormat", "format", "Format"]

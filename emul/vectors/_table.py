"""The vector table: :class:`Field` (one column) and :class:`Vectors` (codes, fields, settings)."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np

from . import _io
from ._codes import _wide_values, decode
from ..formats import FixedFormat, format as as_format



@dataclasses.dataclass(frozen=True)
class Field:
    """One column of a vector table: ``bits`` wide, holding codes of ``fmt`` (a format name), or
    raw bits when ``fmt`` is None (random words, flags, masks, indices)."""

    name: str
    bits: int
    fmt: str | None = None

    @property
    def digits(self) -> int:
        """Hex digits of this field in a hex line."""
        return (self.bits + 3) // 4

    def spec(self) -> str:
        return f"{self.name}:{self.bits}:{self.fmt or '-'}"


@dataclasses.dataclass(frozen=True, eq=False)
class Vectors:
    """A table of test vectors: ``codes[i, j]`` is field j of vector i (uint64).

    ``settings`` is the canonical, JSON-ready dict of every setting; ``generate(**settings)``
    returns the same table.
    """

    settings: dict
    fields: tuple
    codes: np.ndarray

    def __len__(self):
        return self.codes.shape[0]

    @property
    def names(self) -> tuple:
        return tuple(f.name for f in self.fields)

    def field(self, name) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"{name!r}: no such field (fields: {', '.join(self.names)})")

    def __getitem__(self, name) -> np.ndarray:
        """The codes of one field (uint64)."""
        self.field(name)
        return self.codes[:, self.names.index(name)]

    def values(self, name) -> np.ndarray:
        """The exact values of a format field: float64 (``decode``) when the format fits float64;
        for wider fixed-point formats int64/uint64 integers (``int64``, ``uint64``, ``int60``, …)
        or, with fraction bits (``fx<64,10>``), an object array of ``Fraction``."""
        f = self.field(name)
        if f.fmt is None:
            raise ValueError(f"field {name!r} holds raw bits, not codes of a format")
        fmt = as_format(f.fmt)
        if isinstance(fmt, FixedFormat) and not fmt.fits_float64:
            return _wide_values(self[name], fmt)
        return decode(self[name], fmt)

    # -- files (written by emul.vectors._io) -----------------------------------------------
    def header(self, kind="hex", sep="_", values=False) -> list[str]:
        """The header lines (without comment markers) of a file of this table."""
        return _io.header(self, kind, sep, values)

    def dump(self, fh, kind="hex", *, sep="_", values=False) -> None:
        """Write the whole file (header and lines) to a binary file object."""
        _io.dump(self, fh, kind, sep=sep, values=values)

    def to_bytes(self, kind="hex", *, sep="_", values=False) -> bytes:
        """The whole file as bytes: ``kind="hex"`` ($readmemh) or ``"csv"``."""
        out = io.BytesIO()
        self.dump(out, kind, sep=sep, values=values)
        return out.getvalue()

    def to_hex(self, path, *, sep="_") -> Path:
        """Write a ``$readmemh`` file (see the module docstring for the layout); ``"-"``: stdout."""
        return _io.write(path, lambda fh: self.dump(fh, "hex", sep=sep))

    def to_csv(self, path, *, values=False) -> Path:
        """Write a CSV file: a commented header, a row of field names, codes as ``0x…``; with
        ``values=True`` also each format field's decoded value (``a_value``, …)."""
        return _io.write(path, lambda fh: self.dump(fh, "csv", values=values))

    def write(self, path, **kw) -> Path:
        """Write hex or CSV, chosen by the file name (``.csv`` → CSV)."""
        return self.to_csv(path, **kw) if str(path).endswith(".csv") else self.to_hex(path, **kw)

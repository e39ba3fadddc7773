"""Vectors files: writing a table as ``$readmemh`` hex or CSV (header and lines), reading it back,
regenerating it from its header."""

from __future__ import annotations

import io
import json
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ._settings import FILE_VERSION, _dumps, describe

if TYPE_CHECKING:
    from ._table import Vectors

def header(table, kind="hex", sep="_", values=False) -> list[str]:
    """The header lines (without comment markers) of a file of this table."""
    words, hi = [], sum(4 * f.digits for f in table.fields)
    for f in table.fields:
        lo = hi - 4 * f.digits
        words.append(f"{f.name}=[{lo + f.bits - 1}:{lo}]")
        hi = lo
    lines = [
        f"emul test vectors, file format {FILE_VERSION}: one vector per line"
        + (" (hex codes, for $readmemh)" if kind == "hex" else " (csv)"),
        f"emul {_emul_version()}",
        f"summary: {describe(table.settings)}",
        "fields: " + " ".join(f.spec() for f in table.fields),
    ]
    if kind == "hex":
        joiner = f"'{sep}' between fields" if sep else "no separator"
        lines.append(f"word: {' '.join(words)} (each field zero-extended to whole hex digits; {joiner})")
    lines += [
        f"lines: {len(table)}",
        "settings: " + _dumps(table.settings),
        "writer: " + _dumps({"kind": kind, "sep": sep} if kind == "hex" else {"kind": kind, "values": values}),
    ]
    return lines

def dump(table, fh, kind="hex", *, sep="_", values=False) -> None:
    """Write the whole file (header and lines) to a binary file object."""
    if kind == "hex":
        if sep not in ("_", "", " "):
            raise ValueError(f"sep={sep!r}: must be '_', ' ' or ''")
        fh.write("".join(f"// {line}\n" for line in header(table, "hex", sep)).encode())
        _write_table(fh, table.codes, table.fields, b"", sep.encode())
        return
    if kind != "csv":
        raise ValueError(f"kind={kind!r}: must be 'hex' or 'csv'")
    head = "".join(f"# {line}\n" for line in header(table, "csv", values=values))
    names = [f.name for f in table.fields]
    if values:
        names += [f"{f.name}_value" for f in table.fields if f.fmt is not None]
    fh.write((head + ",".join(names) + "\n").encode())
    if values:
        fh.write(_csv_with_values(table))
    else:
        _write_table(fh, table.codes, table.fields, b"0x", b",")

def _csv_with_values(table) -> bytes:
    cols = [[f"0x{int(c):0{f.digits}x}" for c in table.codes[:, j]] for j, f in enumerate(table.fields)]
    cols += [[_value_text(v) for v in table.values(f.name)] for f in table.fields if f.fmt is not None]
    return "".join(",".join(row) + "\n" for row in zip(*cols)).encode()



def _value_text(v) -> str:
    """A value for a CSV column: floats as repr (which reads back exactly), integers and
    Fractions (dyadic) as exact decimals."""
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, Fraction):
        k = v.denominator.bit_length() - 1  # a power of two
        if k == 0:
            return str(v.numerator)
        digits = str(abs(v.numerator) * 5**k).rjust(k + 1, "0")
        return f"{'-' if v < 0 else ''}{digits[:-k]}.{digits[-k:].rstrip('0')}"
    return repr(float(v))


def write(path, emit) -> Path:
    """Call ``emit(fh)`` on the binary file ``path`` (``"-"``: standard output)."""
    if str(path) == "-":
        import sys

        buffer = getattr(sys.stdout, "buffer", None)
        if buffer is None:  # a text-only stream (a redirected sys.stdout)
            tmp = io.BytesIO()
            emit(tmp)
            sys.stdout.write(tmp.getvalue().decode())
        else:
            sys.stdout.flush()
            emit(buffer)
            buffer.flush()
        return Path("-")
    path = Path(path)
    with open(path, "wb") as fh:
        emit(fh)
    return path


def _emul_version() -> str:
    from .. import __version__

    return __version__


CHUNK_LINES = 1 << 16  # lines per write: a buffer that stays in cache and is faulted in once


NUMPY_MAX_LINES = 1 << 20  # tables up to this many lines are written by NumPy (no kernel to compile)
_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)


def _write_table(fh, codes, fields, prefix: bytes, sep: bytes):
    """Write the data lines of a table to a binary file object, in chunks: by NumPy column
    operations for tables of at most NUMPY_MAX_LINES lines (the Numba kernel's compile cost more
    than the whole write of a cold ``emul vectors`` run), else by the Numba kernel
    (emul/_kernels/hexwrite.py). Both write the same bytes."""
    digits = np.array([f.digits for f in fields], np.int64)
    pre = np.frombuffer(prefix, np.uint8).copy()
    sp = np.frombuffer(sep, np.uint8).copy()
    codes = np.ascontiguousarray(codes, np.uint64)
    n = codes.shape[0]
    line_len = int(digits.sum()) + pre.size * digits.size + sp.size * (digits.size - 1) + 1
    if n <= NUMPY_MAX_LINES:
        for start in range(0, n, CHUNK_LINES):
            fh.write(_lines_numpy(codes[start: start + CHUNK_LINES], digits, pre, sp, line_len).data)
        return
    from .._kernels import hexwrite as HK

    buf = np.empty(min(n, CHUNK_LINES) * line_len, np.uint8)
    for start in range(0, n, CHUNK_LINES):
        part = codes[start: start + CHUNK_LINES]
        HK.write_lines(part, digits, pre, sp, buf)
        fh.write(memoryview(buf)[: part.shape[0] * line_len])


def _lines_numpy(part, digits, pre, sp, line_len) -> np.ndarray:
    """The text of the rows of ``part`` as one uint8 array (the hexwrite kernel's format: per field
    the prefix, ``digits`` lower-case hex digits of the low bits, the separator between fields, a
    newline), one column of digits at a time."""
    out = np.empty((part.shape[0], line_len), np.uint8)
    pos = 0
    for j, d in enumerate(digits.tolist()):
        out[:, pos: pos + pre.size] = pre
        pos += pre.size
        col = part[:, j]
        for k in range(d):
            out[:, pos + k] = _HEX[((col >> np.uint64(4 * (d - 1 - k))) & np.uint64(15)).astype(np.intp)]
        pos += d
        if j + 1 < digits.size:
            out[:, pos: pos + sp.size] = sp
            pos += sp.size
    out[:, pos] = 10
    return out.reshape(-1)


def _table_text(codes, fields, prefix: bytes, sep: bytes) -> bytes:
    out = io.BytesIO()
    _write_table(out, codes, fields, prefix, sep)
    return out.getvalue()

# ============================================================================== reading


def _parse_header(lines, marker):
    from ._table import Field

    meta = {}
    for line in lines:
        body = line[len(marker):].strip()
        key, _, rest = body.partition(": ")
        if key in ("settings", "writer"):
            meta[key] = json.loads(rest)
        elif key == "fields":
            fields = []
            for spec in rest.split():
                name, bits, fmt = spec.split(":", 2)
                fields.append(Field(name, int(bits), None if fmt == "-" else fmt))
            meta["fields"] = tuple(fields)
        elif key == "lines":
            meta["lines"] = int(rest)
    missing = {"settings", "writer", "fields"} - set(meta)
    if missing:
        raise ValueError(f"not an emul vectors file: header lacks {', '.join(sorted(missing))}")
    return meta


def read(path) -> Vectors:
    """Parse a hex or CSV file written by :class:`Vectors` back into a table (codes only)."""
    from ._table import Vectors

    data = Path(path).read_bytes()
    marker = "//" if data.startswith(b"//") else "#" if data.startswith(b"#") else None
    if marker is None:
        raise ValueError(f"{path}: not an emul vectors file (no header comment)")
    head_end, lines = 0, []
    mb = marker.encode()
    while data.startswith(mb, head_end):
        nl = data.index(b"\n", head_end)
        lines.append(data[head_end:nl].decode())
        head_end = nl + 1
    meta = _parse_header(lines, marker)
    fields, writer = meta["fields"], meta["writer"]
    body = data[head_end:]
    if writer["kind"] == "csv":
        nl = body.index(b"\n") + 1 if body else 0
        names = body[:nl].decode().strip().split(",")
        if names[: len(fields)] != [f.name for f in fields]:
            raise ValueError(f"{path}: column names {names} do not match the header's fields")
        body = body[nl:]
        prefix, sep = b"0x", b","
    else:
        prefix, sep = b"", writer.get("sep", "_").encode()
    n_expected = meta.get("lines")
    codes = _parse_fixed(body, fields, prefix, sep, writer.get("values", False))
    if codes is None:
        codes = _parse_loose(body, fields, writer)
    if n_expected is not None and codes.shape[0] != n_expected:
        raise ValueError(f"{path}: {codes.shape[0]} vector lines, header says {n_expected}")
    return Vectors(meta["settings"], fields, codes)


_NIBBLE = np.full(256, 255, np.uint8)
_NIBBLE[np.frombuffer(b"0123456789abcdef", np.uint8)] = np.arange(16)
_NIBBLE[np.frombuffer(b"ABCDEF", np.uint8)] = np.arange(10, 16)


def _parse_fixed(body, fields, prefix, sep, values):
    """Fast path: the writer's fixed-length lines, parsed column-wise with NumPy (no JIT, so a
    testbench's embedded Python reads a file quickly). None when the text is not in that layout."""
    if values:
        return None
    line_len = sum(f.digits for f in fields) + len(prefix) * len(fields) + len(sep) * (len(fields) - 1) + 1
    if len(body) % line_len:
        return None
    n = len(body) // line_len
    text = np.frombuffer(body, np.uint8).reshape(n, line_len)
    if n and not (text[:, -1] == 10).all():
        return None
    out = np.empty((n, len(fields)), np.uint64)
    pos = 0
    pre, sp = np.frombuffer(prefix, np.uint8), np.frombuffer(sep, np.uint8)
    for j, f in enumerate(fields):
        if pre.size and not (text[:, pos: pos + pre.size] == pre).all():
            return None
        pos += len(prefix)
        end = pos + f.digits
        if j + 1 < len(fields) and sp.size and not (text[:, end: end + sp.size] == sp).all():
            return None
        nib = _NIBBLE[text[:, pos: end]]
        if (nib == 255).any():
            return None
        v = np.zeros(n, np.uint64)
        for k in range(f.digits):
            v = (v << np.uint64(4)) | nib[:, k].astype(np.uint64)
        out[:, j] = v
        pos += f.digits + len(sep)
    return out


def _parse_loose(body, fields, writer):
    """Slow path for edited files: any line lengths; fields separated as the writer said."""
    rows = []
    for raw in body.decode().splitlines():
        line = raw.split("//")[0].split("#")[0].strip()
        if not line:
            continue
        if writer["kind"] == "csv":
            parts = line.split(",")[: len(fields)]
        elif writer.get("sep"):
            parts = line.replace(" ", writer["sep"]).split(writer["sep"])
        else:
            parts, pos = [], 0
            for f in fields:
                parts.append(line[pos: pos + f.digits])
                pos += f.digits
        if len(parts) != len(fields):
            raise ValueError(f"line {raw!r}: {len(parts)} fields, expected {len(fields)}")
        rows.append([int(p, 16) for p in parts])
    return np.array(rows, np.uint64).reshape(len(rows), len(fields))


def regenerate(path, out=None) -> Path:
    """Re-create a vectors file from the settings in its header (written to ``out``, default
    ``path`` itself). With the same emul version the bytes are identical."""
    from ._generate import generate

    data = Path(path).read_bytes()
    marker = "//" if data.startswith(b"//") else "#"
    lines = [ln for ln in data.decode(errors="replace").splitlines() if ln.startswith(marker)]
    meta = _parse_header(lines, marker)
    s = dict(meta["settings"])
    vec = generate(s.pop("op"), **s)
    w = meta["writer"]
    if w["kind"] == "hex":
        return vec.to_hex(path if out is None else out, sep=w.get("sep", "_"))
    return vec.to_csv(path if out is None else out, values=w.get("values", False))

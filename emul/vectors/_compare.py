"""Checking a device's output against a vectors file: :func:`compare`.

The expected side is an emul vectors file (or a :class:`~emul.vectors.Vectors` table). The actual
side is what a testbench wrote, one line per vector, in any of these layouts:

- an emul vectors file (with its header): every field is compared;
- lines of hex codes holding the table's result fields (``y``; mac: ``acc``; dot: ``s0 … s{k-1} y``
  or just ``y``; nm: ``mask v0 … i0 …``), or holding every field (whole vectors), separated by
  ``_``, spaces, tabs or commas, each code optionally ``0x``-prefixed, or run together without a
  separator when each field has its whole number of hex digits;
- CSV lines with a first row of field names (any subset of the table's fields, in any order).

Blank lines and ``//`` or ``#`` comments are skipped. A code holding ``x``/``z`` digits (an unknown
from a simulator) never matches.

Field by field, a code matches when it is equal to the expected code, or, with ``nan="any"``, when
both are NaN codes of the field's format (any sign, any payload: what IEEE 754 leaves open).
"""

from __future__ import annotations

import dataclasses
import re
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..formats import ExpFormat, FixedFormat, FloatFormat, format as as_format
from ._codes import _isinf, _isnan, _ord_py, _ord_range, _succ_py, _toward_zero_ord, _value_py
from ._table import Vectors

NAN_POLICIES = ("exact", "any")
CLASSES = ("nan", "inf", "overflow", "zero", "subnormal", "tie", "other")
_HEX = re.compile(r"(?:0[xX])?([0-9a-fA-FxXzZ]+)")
_STRICT_HEX = re.compile(r"(?:0[xX])?[0-9a-fA-F]+")


def result_fields(table: Vectors) -> tuple:
    """The names of a table's result fields (what a device computes): ``y`` (quantize, add, sub,
    mul, fma, block_dot), ``acc`` (mac), ``s0 … s{k-1}`` (when present) and ``y`` (dot), ``mask``,
    ``v…`` and ``i…`` (nm), ``s`` and ``y0 … y{k-1}`` (block_encode: the scale and element codes)."""
    op = table.settings.get("op")
    names = table.names
    if op == "mac":
        return ("acc",)
    if op == "nm":
        return tuple(n for n in names if n == "mask" or re.fullmatch(r"[vi]\d+", n))
    if op == "dot":
        return tuple(n for n in names if re.fullmatch(r"s\d+", n)) + ("y",)
    if op == "block_encode":
        return ("s",) + tuple(n for n in names if re.fullmatch(r"y\d+", n))
    return ("y",)


@dataclasses.dataclass(frozen=True)
class Mismatch:
    """One field of one vector that differs: its line (0-based, counting vectors only), the field,
    the expected and actual codes (``actual`` None for an unknown x/z code)."""

    line: int
    field: str
    expected: int
    actual: int | None


@dataclasses.dataclass(frozen=True, eq=False)
class Comparison:
    """The outcome of :func:`compare`.

    ``lines``: vectors compared; ``fields``: the compared fields; ``mismatched_lines``: indices of
    the vectors with at least one mismatching field; ``per_field``: {field: mismatching vectors};
    ``per_class``: {class: mismatching vectors whose operands or expected result fall in it}
    (classes :data:`CLASSES`: an operand or the expected result is NaN; an operand is infinite,
    zero or subnormal; the expected result is at the end of the range — ±inf, ±max or the
    fixed-point bounds; the exact result is a tie; none of these: "other"; a vector may count in
    several); ``first``: the first ``show``
    mismatches; ``problems``: layout problems (line counts that differ); ``ok``: no mismatch and no
    problem. ``str(comparison)`` is the report the command line prints.
    """

    table: Vectors
    nan: str
    fields: tuple
    lines: int
    mismatched_lines: np.ndarray
    per_field: dict
    per_class: dict
    first: tuple
    problems: tuple

    @property
    def ok(self) -> bool:
        return not self.problems and self.mismatched_lines.size == 0

    @property
    def mismatches(self) -> int:
        """The number of mismatching vectors."""
        return int(self.mismatched_lines.size)

    def __str__(self) -> str:
        return self.report()

    def report(self) -> str:
        """A summary: counts per field and per operand class, then the first mismatches decoded."""
        t = self.table
        out = [f"compared {self.lines} vectors, fields {' '.join(self.fields)}, NaN policy {self.nan!r}: "
               + ("all match" if self.ok else f"{self.mismatches} mismatching vector(s)")]
        out += [f"problem: {p}" for p in self.problems]
        if self.mismatches:
            out.append("mismatches per field: " + ", ".join(f"{f} {n}" for f, n in self.per_field.items() if n))
            out.append("mismatching vectors per class: " + ", ".join(f"{c} {n}" for c, n in self.per_class.items()
                                                                   if n))
            out.append(f"first {len(self.first)}:")
            operands = [f for f in t.names if f not in self.fields and f not in result_fields(t)]
            for m in self.first:
                ops = " ".join(f"{f}={_show(t, f, int(t[f][m.line]))}" for f in operands)
                got = "x" if m.actual is None else _show(t, m.field, m.actual)
                out.append(f"  line {m.line}: {ops} | {m.field}: expected {_show(t, m.field, m.expected)} got {got}")
        return "\n".join(out)


def _show(table, name, code) -> str:
    """A code in hex with its value (format fields)."""
    f = table.field(name)
    text = f"0x{code:0{f.digits}x}"
    if f.fmt is None:
        return text
    fmt = as_format(f.fmt)
    if isinstance(fmt, (FloatFormat, ExpFormat)):
        from ..quantize import decode

        try:
            v = float(decode(np.uint64(code), fmt))
        except ValueError:
            return text + " (invalid)"
        return f"{text} ({v!r})"
    return f"{text} ({_value_py(fmt, _ord_py(code, fmt))})".replace("Fraction", "")


# ------------------------------------------------------------------------------ reading the device's file


def _tokens(line: str) -> list:
    if "," in line:
        parts = [p.strip() for p in line.split(",")]
    else:
        parts = re.split(r"[\s_]+", line.strip())
    return [p for p in parts if p != ""]


def _code(token: str, name: str, lineno: int):
    m = _HEX.fullmatch(token)
    if not m:
        raise ValueError(f"line {lineno}: {token!r} is not a hex code (field {name})")
    digits = m.group(1)
    if re.search(r"[xXzZ]", digits):
        return None
    return int(digits, 16)


def _read_actual(actual, table):
    """(names, codes [n, len(names)] as a list of rows, unknown mask) of the device's output."""
    if isinstance(actual, Vectors):
        return actual.names, actual.codes.astype(object).tolist(), None
    data = Path(actual).read_bytes()
    if data.startswith((b"//", b"#")):
        from ._io import read

        try:
            vec = read(actual)
        except ValueError:
            vec = None
        if vec is not None:
            return vec.names, vec.codes.astype(object).tolist(), None
    lines = []
    for lineno, raw in enumerate(data.decode(errors="replace").splitlines(), 1):
        line = raw.split("//")[0].split("#")[0].strip()
        if line:
            lines.append((lineno, line))
    results, every = result_fields(table), table.names
    names = None
    if lines:
        first = _tokens(lines[0][1])
        # a row of field names: one that cannot be a code (y, s0), or only names that could be
        # codes too (a, acc) when the file has one line more than there are vectors
        if any(t in every and not _STRICT_HEX.fullmatch(t) for t in first) or (
                all(t in every for t in first) and len(lines) == len(table) + 1):
            unknown = [t for t in first if t not in every]
            if unknown:
                raise ValueError(f"{actual}: column {unknown[0]!r} is not a field of the table "
                                 f"(fields: {' '.join(every)})")
            names = tuple(first)
            lines = lines[1:]
    rows = []
    for lineno, line in lines:
        toks = _tokens(line)
        if names is None:
            names = _layout(toks, table, results, every, actual, lineno)
        if len(toks) == 1 and len(names) > 1:  # codes run together, each its whole hex digits
            toks = _split_digits(toks[0], names, table, lineno)
        if len(toks) != len(names):
            raise ValueError(f"{actual}: line {lineno} has {len(toks)} codes, expected {len(names)} "
                             f"({' '.join(names)})")
        rows.append([_code(t, n, lineno) for t, n in zip(toks, names)])
    return names or results, rows, True


def _layout(toks, table, results, every, path, lineno):
    """The fields of a line without a header row: the result fields or every field."""
    if len(toks) == 1:  # one code, or codes run together (each its whole number of hex digits)
        for names in (results, every):
            if len(toks[0].lower().removeprefix("0x")) == sum(table.field(n).digits for n in names):
                return names
        if len(results) == 1:
            return results
    for names in (results, every):
        if len(toks) == len(names):
            return names
    raise ValueError(f"{path}: line {lineno} has {len(toks)} codes; expected the result fields ({' '.join(results)}) "
                     f"or whole vectors ({len(every)} fields), separated by _, spaces or commas")


def _split_digits(token, names, table, lineno):
    token = token.lower().removeprefix("0x")
    out, pos = [], 0
    for n in names:
        d = table.field(n).digits
        out.append(token[pos: pos + d])
        pos += d
    if pos != len(token):
        raise ValueError(f"line {lineno}: {len(token)} hex digits, expected {pos} ({' '.join(names)})")
    return out


# ------------------------------------------------------------------------------ comparing


def compare(expected, actual, *, nan="exact", fields=None, show=10) -> Comparison:
    """Compare a device's output with a vectors file, field by field.

    Args:
      expected: a vectors file written by emul (hex or CSV) or a :class:`Vectors` table.
      actual: the device's output file (layouts in the module docstring) or a :class:`Vectors`.
      nan: ``"exact"`` (codes equal) or ``"any"`` (an expected NaN code matches any NaN code of
        the field's format; a non-NaN expectation still needs the exact code).
      fields: the fields to compare (default: every field the actual side holds).
      show: how many mismatches to keep in ``first`` (and print).

    Returns a :class:`Comparison`; ``.ok`` is True when every compared field of every vector
    matches and both sides have the same number of vectors.

    >>> import emul.vectors as V
    >>> table = V.generate("mul", fmt="e2m1fn", sets="exhaustive")
    >>> V.compare(table, table).ok
    True
    """
    if nan not in NAN_POLICIES:
        raise ValueError(f"nan={nan!r}: must be 'exact' or 'any'")
    show = int(show)
    table = expected if isinstance(expected, Vectors) else _read_expected(expected)
    names, rows, _ = _read_actual(actual, table)
    for n in names:
        table.field(n)  # KeyError naming the fields when the actual side has another one
    chosen = tuple(names) if fields is None else tuple(fields)
    missing = [f for f in chosen if f not in names]
    if missing:
        raise ValueError(f"fields: {missing[0]!r} is not in the actual output (it holds {' '.join(names)})")
    problems = []
    n = min(len(rows), len(table))
    if len(rows) != len(table):
        problems.append(f"the actual output has {len(rows)} vectors, the expected file {len(table)}"
                        + (f"; compared the first {n}" if n else ""))
    bad_any = np.zeros(n, bool)
    per_field, first = {}, []
    for name in chosen:
        j = names.index(name)
        col = [r[j] for r in rows[:n]]
        unknown = np.array([c is None for c in col], bool)
        got = np.array([0 if c is None else c for c in col], np.uint64)
        want = table[name][:n]
        bad = (got != want) | unknown
        f = table.field(name)
        if nan == "any" and f.fmt is not None and bad.any():
            fmt = as_format(f.fmt)
            bad &= ~(_isnan(want, fmt) & _isnan(got, fmt) & ~unknown)
        per_field[name] = int(bad.sum())
        bad_any |= bad
        for i in np.flatnonzero(bad)[: show]:
            first.append(Mismatch(int(i), name, int(want[i]), None if unknown[i] else int(got[i])))
    first.sort(key=lambda m: (m.line, chosen.index(m.field)))
    lines_bad = np.flatnonzero(bad_any)
    return Comparison(table, nan, chosen, n, lines_bad, per_field, _classes(table, lines_bad),
                      tuple(first[:show]), tuple(problems))


def _read_expected(path) -> Vectors:
    from ._io import read

    return read(path)


def _classes(table, lines) -> dict:
    """{class: how many of ``lines`` have an operand or an expected result in it}."""
    counts = dict.fromkeys(CLASSES, 0)
    if lines.size == 0:
        return counts
    results = result_fields(table)
    hit = {c: np.zeros(lines.size, bool) for c in CLASSES}
    for f in table.fields:
        if f.fmt is None:
            continue
        fmt = as_format(f.fmt)
        codes = table[f.name][lines]
        hit["nan"] |= _isnan(codes, fmt)
        if f.name not in results:
            hit["inf"] |= _isinf(codes, fmt)
        elif isinstance(fmt, ExpFormat):  # a scale: its largest code is the end of the range
            hit["overflow"] |= codes == np.uint64(fmt.max_code_magnitude)
            continue
        else:  # an expected result at the end of the range (inf, or a saturated max)
            lo, hi = _ord_range(fmt)
            ords = np.array([_ord_py(c, fmt) for c in codes.tolist()], object)
            hit["overflow"] |= np.array([o in (lo, hi) for o in ords], bool) | _isinf(codes, fmt)
            continue
        if isinstance(fmt, ExpFormat):
            continue  # scale operands: no zero, no subnormals
        if isinstance(fmt, FloatFormat):
            mag = codes & np.uint64((1 << (fmt.bits - 1)) - 1)
            hit["zero"] |= mag == 0
            hit["subnormal"] |= ((mag >> np.uint64(fmt.man_bits)) == 0) & (mag != 0)
        else:
            hit["zero"] |= codes == 0
    hit["tie"] = _ties(table, lines)
    hit["other"] = ~np.any([hit[c] for c in CLASSES if c != "other"], axis=0)
    return {c: int(hit[c].sum()) for c in CLASSES}


_TIE_LIMIT = 100_000


def _ties(table, lines) -> np.ndarray:
    """Whether each line's exact result (before rounding) lies halfway between two neighbours of
    the result format: casts and add/sub/mul/fma with a deterministic rounding (at most
    100,000 lines; others False)."""
    s = table.settings
    op = s.get("op")
    out = np.zeros(lines.size, bool)
    if op not in ("quantize", "add", "sub", "mul", "fma") or s.get("rounding") == "stochastic" or \
            lines.size > _TIE_LIMIT:
        return out
    O = as_format(s["fmt"] if op == "quantize" else s["out_fmt"])
    ops = ["x"] if op == "quantize" else ["a", "b"] + (["c"] if op == "fma" else [])
    fmts = [as_format(table.field(f).fmt) for f in ops]
    special = np.zeros(lines.size, bool)  # NaN or inf operands: no exact value
    for f, F in zip(ops, fmts):
        codes = table[f][lines]
        special |= _isnan(codes, F) | _isinf(codes, F)
    for k, i in enumerate(lines.tolist()):
        if special[k]:
            continue
        codes = [int(table[f][i]) for f in ops]
        v = [_value_py(F, _ord_py(c, F)) for c, F in zip(codes, fmts)]
        exact = {"quantize": lambda: v[0], "add": lambda: v[0] + v[1], "sub": lambda: v[0] - v[1],
                 "mul": lambda: v[0] * v[1], "fma": lambda: v[0] * v[1] + v[2]}[op]()
        out[k] = _is_tie(O, Fraction(exact))
    return out


def _is_tie(O, v: Fraction) -> bool:
    if isinstance(O, FixedFormat):
        scaled = v * Fraction(2) ** O.frac
        return scaled.denominator == 2 and O.min_raw <= scaled <= O.max_raw
    a = abs(v)
    o = _toward_zero_ord(O, a)
    if o >= _ord_range(O)[1]:
        return False
    lo, hi = _value_py(O, o), _value_py(O, _succ_py(O, o))
    return 2 * a == lo + hi

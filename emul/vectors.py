"""Test vectors for hardware verification: operands and emul's expected results, as bit codes.

:func:`generate` builds a :class:`Vectors` table for one operation — ``quantize`` (a cast, any
rounding mode, stochastic rounding with the random bits as an operand), ``add``, ``sub``, ``mul``,
``fma``, ``mac`` (a multiply-accumulate sequence into a given accumulator, checked after every
step) or ``nm`` (an N:M sparsity mask with the compressed values and their index metadata). Every
vector is one row of codes; every code is a bit pattern of its field's format.

Vectors come from up to three sets, in this order: ``"exhaustive"`` (every operand code, for small
formats), ``"corners"`` (zeros of both signs, subnormals, max, ties, overflow by one ulp and by half
an ulp, NaN/inf…) and ``"random"`` (``count`` seeded vectors). The settings that produced a table
are one JSON object, written into every file's header, so :func:`regenerate` re-creates a file
byte for byte from its header alone.

Files (:meth:`Vectors.to_hex`, :meth:`Vectors.to_csv`) hold one vector per line, fields in the
order of :attr:`Vectors.fields`. A hex line is the fields' codes, each as a whole number of hex
digits, separated by ``_`` (which ``$readmemh`` ignores inside a number): the line is one memory
word ``{field0, field1, …}`` in which every field is zero-extended to whole hex digits. The header
comment gives each field's bit range. :func:`read` parses both kinds back.

Expected results come from emul itself: ``encode`` for casts, ``emul.arith`` for add/sub/mul/fma,
``emul.accumulate.dot`` (sequential order) for MAC sequences, ``emul.sparsity.nm_mask`` for N:M.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
import math
from fractions import Fraction
from pathlib import Path

import numpy as np

from . import random as _random
from .formats import FixedFormat, FloatFormat, format as as_format
from .quantize import code_dtype, decode, encode
from .rounding import Overflow, Rounding, as_overflow, as_rounding

__all__ = ["Field", "Vectors", "generate", "read", "regenerate", "canonical", "describe", "corner_codes",
           "all_codes", "OPS", "SETS", "MAX_LINES", "LFSR_DEFAULT"]

OPS = ("quantize", "add", "sub", "mul", "fma", "mac", "nm")
SETS = ("exhaustive", "corners", "random")
MAX_LINES = 1 << 26
FILE_VERSION = 1
LFSR_DEFAULT = {"width": 16, "taps": [16, 14, 13, 11], "seed": 0xACE1, "kind": "fibonacci", "output": "state"}
RANDOM_SOURCES = ("threefry", "lfsr", "all")
_WRAPS = (Overflow.WRAP, Overflow.WRAP_SIGN_MAGNITUDE)


# ============================================================================== the table


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

    # -- text --------------------------------------------------------------------------------
    def header(self, kind="hex", sep="_", values=False) -> list[str]:
        """The header lines (without comment markers) of a file of this table."""
        words, hi = [], sum(4 * f.digits for f in self.fields)
        for f in self.fields:
            lo = hi - 4 * f.digits
            words.append(f"{f.name}=[{lo + f.bits - 1}:{lo}]")
            hi = lo
        lines = [
            f"emul test vectors, file format {FILE_VERSION}: one vector per line"
            + (" (hex codes, for $readmemh)" if kind == "hex" else " (csv)"),
            f"emul {_emul_version()}",
            f"summary: {describe(self.settings)}",
            "fields: " + " ".join(f.spec() for f in self.fields),
        ]
        if kind == "hex":
            joiner = f"'{sep}' between fields" if sep else "no separator"
            lines.append(f"word: {' '.join(words)} (each field zero-extended to whole hex digits; {joiner})")
        lines += [
            f"lines: {len(self)}",
            "settings: " + _dumps(self.settings),
            "writer: " + _dumps({"kind": kind, "sep": sep} if kind == "hex" else {"kind": kind, "values": values}),
        ]
        return lines

    def dump(self, fh, kind="hex", *, sep="_", values=False) -> None:
        """Write the whole file (header and lines) to a binary file object."""
        if kind == "hex":
            if sep not in ("_", "", " "):
                raise ValueError(f"sep={sep!r}: must be '_', ' ' or ''")
            fh.write("".join(f"// {line}\n" for line in self.header("hex", sep)).encode())
            _write_table(fh, self.codes, self.fields, b"", sep.encode())
            return
        if kind != "csv":
            raise ValueError(f"kind={kind!r}: must be 'hex' or 'csv'")
        head = "".join(f"# {line}\n" for line in self.header("csv", values=values))
        names = [f.name for f in self.fields]
        if values:
            names += [f"{f.name}_value" for f in self.fields if f.fmt is not None]
        fh.write((head + ",".join(names) + "\n").encode())
        if values:
            fh.write(self._csv_with_values())
        else:
            _write_table(fh, self.codes, self.fields, b"0x", b",")

    def to_bytes(self, kind="hex", *, sep="_", values=False) -> bytes:
        """The whole file as bytes: ``kind="hex"`` ($readmemh) or ``"csv"``."""
        out = io.BytesIO()
        self.dump(out, kind, sep=sep, values=values)
        return out.getvalue()

    def _csv_with_values(self) -> bytes:
        cols = [[f"0x{int(c):0{f.digits}x}" for c in self.codes[:, j]] for j, f in enumerate(self.fields)]
        cols += [[_value_text(v) for v in self.values(f.name)] for f in self.fields if f.fmt is not None]
        return "".join(",".join(row) + "\n" for row in zip(*cols)).encode()

    def to_hex(self, path, *, sep="_") -> Path:
        """Write a ``$readmemh`` file (see the module docstring for the layout); ``"-"``: stdout."""
        return _write(path, lambda fh: self.dump(fh, "hex", sep=sep))

    def to_csv(self, path, *, values=False) -> Path:
        """Write a CSV file: a commented header, a row of field names, codes as ``0x…``; with
        ``values=True`` also each format field's decoded value (``a_value``, …)."""
        return _write(path, lambda fh: self.dump(fh, "csv", values=values))

    def write(self, path, **kw) -> Path:
        """Write hex or CSV, chosen by the file name (``.csv`` → CSV)."""
        return self.to_csv(path, **kw) if str(path).endswith(".csv") else self.to_hex(path, **kw)


def _wide_values(codes, fmt) -> np.ndarray:
    """Exact values of a fixed-point format that float64 cannot hold: integers, or Fractions."""
    raw = _values(codes, FixedFormat(fmt.bits, 0, signed=fmt.signed))
    if fmt.frac == 0:
        return raw
    return np.array([Fraction(int(r)) / Fraction(2) ** fmt.frac for r in raw.tolist()] or [], dtype=object)


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


def _write(path, emit) -> Path:
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
    from . import __version__

    return __version__


def _dumps(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


CHUNK_LINES = 1 << 16  # lines per write: a buffer that stays in cache and is faulted in once


def _write_table(fh, codes, fields, prefix: bytes, sep: bytes):
    """Write the data lines of a table to a binary file object, in chunks, with the Numba kernel."""
    from ._kernels import hexwrite as HK

    digits = np.array([f.digits for f in fields], np.int64)
    pre = np.frombuffer(prefix, np.uint8).copy()
    sp = np.frombuffer(sep, np.uint8).copy()
    codes = np.ascontiguousarray(codes, np.uint64)
    n = codes.shape[0]
    line_len = int(digits.sum()) + pre.size * digits.size + sp.size * (digits.size - 1) + 1
    buf = np.empty(min(n, CHUNK_LINES) * line_len, np.uint8)
    for start in range(0, n, CHUNK_LINES):
        part = codes[start: start + CHUNK_LINES]
        HK.write_lines(part, digits, pre, sp, buf)
        fh.write(memoryview(buf)[: part.shape[0] * line_len])


def _table_text(codes, fields, prefix: bytes, sep: bytes) -> bytes:
    out = io.BytesIO()
    _write_table(out, codes, fields, prefix, sep)
    return out.getvalue()


def describe(settings) -> str:
    """One line saying what a settings dict generates."""
    s = dict(settings)
    op = s.get("op")
    if op == "quantize":
        what = f"quantize {s['in_fmt']} -> {s['fmt']}"
    elif op in ("add", "sub", "mul"):
        sym = {"add": "+", "sub": "-", "mul": "x"}[op]
        what = f"{op} {s['fmt']} {sym} {s['b_fmt']} -> {s['out_fmt']}"
    elif op == "fma":
        what = f"fma {s['fmt']} x {s['b_fmt']} + {s['c_fmt']} -> {s['out_fmt']}"
    elif op == "mac":
        prod = f" (products rounded to {s['product']})" if s.get("product") else " (exact products)"
        what = f"mac {s['fmt']} x {s['b_fmt']} into {s['acc']}{prod}, {s['k']} steps per sequence"
    elif op == "nm":
        what = f"nm {s['n']}:{s['m']} of {s['fmt']}, ties {s['ties']}"
    else:
        what = str(op)
    parts = [what]
    if "rounding" in s:
        parts.append(f"rounding {s['rounding']}, overflow {s['overflow']}")
    if s.get("rounding") == "stochastic":
        src = s["random_source"]
        lf = f" {_dumps(s['lfsr'])}" if src == "lfsr" else ""
        parts.append(f"SR {s['sr_bits']} bits ({s['sr_method']}) from {src}{lf}")
    if "sets" in s:
        count = f", count {s['count']}" if "random" in s["sets"] else ""
        parts.append(f"sets {'+'.join(s['sets'])}{count}, seed {s['seed']}")
    return "; ".join(parts)


# ============================================================================== settings

_COMMON = {"sets": ["corners", "random"], "count": 1000, "seed": 0}
_ROUND = {"rounding": "nearest_even", "overflow": None, "sr_bits": None, "sr_method": "add",
          "random_source": "threefry", "lfsr": None}
_SPEC = {
    "quantize": {"fmt": None, "in_fmt": "fp32", **_ROUND},
    "add": {"fmt": None, "b_fmt": None, "out_fmt": None, **_ROUND},
    "sub": {"fmt": None, "b_fmt": None, "out_fmt": None, **_ROUND},
    "mul": {"fmt": None, "b_fmt": None, "out_fmt": None, **_ROUND},
    "fma": {"fmt": None, "b_fmt": None, "c_fmt": None, "out_fmt": None, **_ROUND},
    "mac": {"fmt": "int8", "b_fmt": None, "acc": "int12", "product": None, "product_rounding": "nearest_even",
            "rounding": "nearest_even", "overflow": None, "k": 16},
    "nm": {"fmt": "int8", "n": 2, "m": 4, "ties": "low_index"},
}


def _int_setting(value, name, lo, hi=None):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}={value!r}: must be an int")
    value = int(value)
    if value < lo or (hi is not None and value > hi):
        raise ValueError(f"{name}={value}: must be between {lo} and {hi}" if hi is not None
                         else f"{name}={value}: must be at least {lo}")
    return value


def canonical(op, **kw) -> dict:
    """Validate settings and resolve every default: the dict recorded in a file's header."""
    if op not in OPS:
        raise ValueError(f"op={op!r}: must be one of {', '.join(OPS)}")
    spec = {**_COMMON, **_SPEC[op]}
    unknown = sorted(set(kw) - set(spec))
    if unknown:
        raise ValueError(f"{unknown[0]}=: not a setting of op={op!r}; settings are {', '.join(sorted(spec))}")
    s = {**spec, **kw, "op": op}

    sets = s["sets"]
    if isinstance(sets, str):
        sets = [x for x in sets.replace("+", ",").split(",") if x]
    sets = list(sets)
    bad = [x for x in sets if x not in SETS]
    if bad or not sets:
        raise ValueError(f"sets={s['sets']!r}: must be a non-empty list of {', '.join(SETS)}")
    s["sets"] = [x for x in SETS if x in sets]
    s["count"] = _int_setting(s["count"], "count", 0)
    s["seed"] = _int_setting(s["seed"], "seed", 0, 2**32 - 1)

    if s.get("fmt") is None:
        raise ValueError(f"fmt=None: op={op!r} needs the operand format, e.g. fmt='e4m3fn'")
    fmt = as_format(s["fmt"])
    s["fmt"] = fmt.name
    if op == "quantize":
        in_fmt = as_format(s["in_fmt"])
        s["in_fmt"] = in_fmt.name
        out = fmt
        _quantize_plan(in_fmt, out)  # raises when emul cannot take these inputs exactly
    elif op in ("add", "sub", "mul", "fma"):
        s["b_fmt"] = as_format(s["b_fmt"] or fmt).name
        out = as_format(s["out_fmt"] or fmt)
        s["out_fmt"] = out.name
        if op == "fma":
            s["c_fmt"] = as_format(s["c_fmt"] or out).name
    elif op == "mac":
        s["b_fmt"] = as_format(s["b_fmt"] or fmt).name
        out = as_format(s["acc"])
        s["acc"] = out.name
        s["k"] = _int_setting(s["k"], "k", 1, 1 << 20)
        if s["product"] is None:
            s["product_rounding"] = None
        else:
            s["product"] = as_format(s["product"]).name
            s["product_rounding"] = as_rounding(s["product_rounding"]).value
            if s["product_rounding"] == "stochastic":
                raise ValueError("product_rounding='stochastic': not supported in mac vectors")
    else:  # nm
        s["m"] = _int_setting(s["m"], "m", 1, 64)
        s["n"] = _int_setting(s["n"], "n", 1, s["m"])
        if s["ties"] not in ("low_index", "high_index"):
            raise ValueError(f"ties={s['ties']!r}: must be 'low_index' or 'high_index'")
        return s

    # rounding, overflow, stochastic rounding
    mode = as_rounding(s["rounding"])
    s["rounding"] = mode.value
    if s["overflow"] is None:
        s["overflow"] = "ieee" if isinstance(out, FloatFormat) else "saturate"
    s["overflow"] = as_overflow(s["overflow"]).value
    from ._params import resolve

    resolve(out, mode, s["overflow"], s.get("sr_bits") if mode == Rounding.STOCHASTIC else None,
            s.get("sr_method", "add"))  # raises on invalid combinations
    if op == "mac":
        if mode == Rounding.STOCHASTIC:
            raise ValueError("rounding='stochastic': not supported in mac vectors (use quantize/add/fma vectors)")
        return s
    if mode != Rounding.STOCHASTIC:
        for key in ("sr_bits", "lfsr"):
            if s[key] is not None:
                raise ValueError(f"{key}={s[key]!r}: only used with rounding='stochastic'")
        for key in ("sr_bits", "sr_method", "random_source", "lfsr"):
            s.pop(key)
        return s
    src = s["random_source"]
    if src not in RANDOM_SOURCES:
        raise ValueError(f"random_source={src!r}: must be one of {', '.join(RANDOM_SOURCES)}")
    lf = {**LFSR_DEFAULT, **(s["lfsr"] or {})} if src == "lfsr" else None
    if s["sr_bits"] is None:  # emul's default, or all the bits an LFSR state offers
        s["sr_bits"] = min(32, int(lf["width"])) if lf and lf["output"] == "state" else 32
    s["sr_bits"] = _int_setting(s["sr_bits"], "sr_bits", 1, 32)
    if s["sr_method"] not in ("add", "compare"):
        raise ValueError(f"sr_method={s['sr_method']!r}: must be 'add' or 'compare'")
    if src == "lfsr":
        extra = sorted(set(lf) - set(LFSR_DEFAULT))
        if extra:
            raise ValueError(f"lfsr: unknown key {extra[0]!r}; keys are {', '.join(LFSR_DEFAULT)}")
        lf["taps"] = [int(t) for t in lf["taps"]]
        lf = {k: lf[k] for k in LFSR_DEFAULT}
        _random.lfsr(1, r=s["sr_bits"], **lf)  # validates
        s["lfsr"] = lf
    elif s["lfsr"] is not None:
        raise ValueError(f"lfsr={s['lfsr']!r}: only used with random_source='lfsr'")
    else:
        s.pop("lfsr")
    if src == "all" and s["sr_bits"] > 16:
        raise ValueError(f"random_source='all' with sr_bits={s['sr_bits']}: at most 16 bits (2**sr_bits lines per operand)")
    return s


# ============================================================================== codes


def _ord(codes, fmt) -> np.ndarray:
    """Monotone integer of each code (floats: ±magnitude code; fixed point: the signed raw)."""
    c = np.asarray(codes, np.uint64)
    if isinstance(fmt, FloatFormat):
        sign = c >> np.uint64(fmt.bits - 1)
        mag = (c & np.uint64((1 << (fmt.bits - 1)) - 1)).astype(np.int64)
        return np.where(sign != 0, -mag, mag)
    if fmt.signed:
        return (c << np.uint64(64 - fmt.bits)).view(np.int64) >> np.int64(64 - fmt.bits)
    return c.astype(np.int64)


def _ord_range(fmt):
    """(lowest, highest) ordinal of a finite value."""
    if isinstance(fmt, FloatFormat):
        return -fmt.max_code_magnitude, fmt.max_code_magnitude
    return fmt.min_raw, fmt.max_raw


def _from_ord(ords, fmt) -> np.ndarray:
    """Codes of ordinals, clipped to the finite range (nosub: subnormal patterns -> min normal)."""
    lo, hi = _ord_range(fmt)
    o = np.asarray(np.clip(np.asarray(ords, np.int64), lo, hi), np.int64)
    if isinstance(fmt, FloatFormat):
        mag = np.abs(o).astype(np.uint64)
        if not fmt.subnormals:
            mag = np.where((mag != 0) & (mag < np.uint64(1 << fmt.man_bits)), np.uint64(1 << fmt.man_bits), mag)
        sign = np.where(o < 0, np.uint64(1 << (fmt.bits - 1)), np.uint64(0))
        return mag | sign
    return o.view(np.uint64) & np.uint64((1 << fmt.bits) - 1) if fmt.bits < 64 else o.view(np.uint64)


def _succ(fmt, o):
    """Next ordinal on the value grid (nosub: 0 and ±min_normal are neighbours)."""
    o = np.asarray(o, np.int64)
    nxt = o + 1
    if isinstance(fmt, FloatFormat) and not fmt.subnormals:
        mn = 1 << fmt.man_bits
        nxt = np.where(o == 0, mn, np.where(o == -mn, 0, nxt))
    return nxt


def _grid(fmt, o) -> np.ndarray:
    """Values at ordinals, extended past ±max with the last spacing (float64)."""
    o = np.asarray(o, np.int64)
    lo, hi = _ord_range(fmt)
    if isinstance(fmt, FixedFormat):
        return o.astype(np.float64) * fmt.lsb
    inside = decode(_from_ord(o, fmt), fmt)
    top = float(decode(_from_ord(hi, fmt), fmt))
    step = top - float(decode(_from_ord(hi - 1, fmt), fmt))
    with np.errstate(over="ignore", invalid="ignore"):  # both branches are evaluated (fp64: inf)
        out = np.where(o > hi, top + (o - hi) * step, inside)
        return np.where(o < lo, -top - (lo - o) * step, out)


def _valid_mask(codes, fmt) -> np.ndarray:
    c = np.asarray(codes, np.uint64)
    if isinstance(fmt, FloatFormat) and not fmt.subnormals:
        mag = c & np.uint64((1 << (fmt.bits - 1)) - 1)
        return ~(((mag >> np.uint64(fmt.man_bits)) == 0) & (mag != 0))
    return np.ones(c.shape, bool)


# -- exact ordinals and values (Python ints and Fractions), for every width up to 64 bits


def _ord_py(code: int, fmt) -> int:
    """The ordinal of one code (as _ord), as a Python int."""
    code = int(code)
    top = 1 << (fmt.bits - 1)
    if isinstance(fmt, FloatFormat):
        return -(code & (top - 1)) if code & top else code & (top - 1)
    return code - (top << 1) if fmt.signed and code & top else code


def _code_py(o: int, fmt) -> int:
    """The code of an ordinal clipped to the finite range (as _from_ord), as a Python int."""
    lo, hi = _ord_range(fmt)
    o = min(max(o, lo), hi)
    if isinstance(fmt, FloatFormat):
        mag = abs(o)
        if not fmt.subnormals and 0 < mag < 1 << fmt.man_bits:
            mag = 1 << fmt.man_bits
        return mag | (1 << (fmt.bits - 1) if o < 0 else 0)
    return o & ((1 << fmt.bits) - 1)


def _succ_py(fmt, o: int) -> int:
    if isinstance(fmt, FloatFormat) and not fmt.subnormals:
        mn = 1 << fmt.man_bits
        if o == 0:
            return mn
        if o == -mn:
            return 0
    return o + 1


def _pow2(e: int) -> Fraction:
    return Fraction(2) ** e


def _value_py(fmt, o: int) -> Fraction:
    """The exact value at an ordinal, extended past the finite range with the last spacing."""
    if isinstance(fmt, FixedFormat):
        return o * _pow2(-fmt.frac)
    lo, hi = _ord_range(fmt)
    if not lo <= o <= hi:
        top = fmt._magnitude_value(hi)
        step = top - fmt._magnitude_value(hi - 1)
        return top + (o - hi) * step if o > hi else -(top + (lo - o) * step)
    mag = abs(o)
    if not fmt.subnormals and 0 < mag < 1 << fmt.man_bits:
        mag = 1 << fmt.man_bits
    v = fmt._magnitude_value(mag)
    return -v if o < 0 else v


def _toward_zero_ord(fmt, v: Fraction) -> int:
    """The ordinal of the value of fmt nearest to v toward zero; beyond the range, the end."""
    if isinstance(fmt, FixedFormat):
        return min(max(math.trunc(v * _pow2(fmt.frac)), fmt.min_raw), fmt.max_raw)
    a = abs(v)
    m = fmt.man_bits
    if a >= fmt._magnitude_value(fmt.max_code_magnitude):
        mag = fmt.max_code_magnitude
    elif a < _pow2(fmt.emin):
        mag = math.floor(a / _pow2(fmt.emin - m)) if fmt.subnormals else 0
    else:
        e = a.numerator.bit_length() - a.denominator.bit_length()
        if _pow2(e) > a:
            e -= 1
        mag = ((e + fmt.bias) << m) + math.floor(a / _pow2(e - m)) - (1 << m)
    return -mag if v < 0 else mag


def _extremes(fmt):
    """(lowest, highest) finite value, exactly."""
    lo, hi = _ord_range(fmt)
    return _value_py(fmt, lo), _value_py(fmt, hi)


def _fits_float64(fmt) -> bool:
    """Whether every value of fmt is a float64 (ordinals then also fit int64 with room)."""
    return isinstance(fmt, FloatFormat) or fmt.fits_float64


def all_codes(fmt) -> np.ndarray:
    """Every valid code of a format, ascending (uint64)."""
    fmt = as_format(fmt)
    if fmt.bits > 26:
        raise ValueError(f"{fmt.name}: {fmt.bits}-bit codes are too many to enumerate")
    c = np.arange(1 << fmt.bits, dtype=np.uint64)
    return c[_valid_mask(c, fmt)]


def _unique_keep_order(a, axis=None):
    if a.size == 0:
        return a
    if axis is None:
        _, idx = np.unique(a, return_index=True)
    else:
        _, idx = np.unique(a, axis=axis, return_index=True)
    return a[np.sort(idx)]


def corner_codes(fmt) -> np.ndarray:
    """Codes of a format's corner values, both signs: zeros, smallest and largest subnormals,
    smallest normals, 1 and its neighbours, 1.5, max and its neighbour, inf, NaNs (floats); min,
    max, 0, ±1 lsb, ±1.0 and half-range values (fixed point). uint64, no duplicates.

    >>> corner_codes("e2m1fn").tolist()   # ±0, ±0.5, ±1, ±1.5, ±4, ±6
    [0, 8, 1, 9, 2, 10, 3, 11, 6, 14, 7, 15]
    """
    fmt = as_format(fmt)
    if isinstance(fmt, FixedFormat):
        one = 1 << fmt.frac if 0 <= fmt.frac < fmt.bits else None
        raws = [fmt.min_raw, fmt.min_raw + 1, fmt.min_raw // 2, -1, 0, 1, 2, fmt.max_raw // 2,
                fmt.max_raw - 1, fmt.max_raw]
        if one is not None:
            raws += [one, -one, one + 1, one - 1]
        raws = [r for r in raws if fmt.min_raw <= r <= fmt.max_raw]
        mask = (1 << fmt.bits) - 1
        return _unique_keep_order(np.array([r & mask for r in raws], np.uint64))
    m, maxc = fmt.man_bits, fmt.max_code_magnitude
    one = fmt.bias << m
    mags = [0, 1, 2, (1 << m) - 1, 1 << m, (1 << m) + 1, one - 1, one, one + 1]
    if m:
        mags.append(one + (1 << (m - 1)))
    mags += [maxc - 1, maxc]
    mags = [g for g in mags if 0 <= g <= maxc]
    signbit = 1 << (fmt.bits - 1)
    codes = []
    for g in mags:
        codes.append(g)
        if g or fmt.has_negative_zero:
            codes.append(g | signbit)
    all_ones = (1 << (fmt.bits - 1)) - 1
    inf = ((1 << fmt.exp_bits) - 1) << m
    if fmt.specials == "ieee":
        codes += [inf, inf | signbit, inf | (1 << (m - 1)), inf | (1 << (m - 1)) | signbit, inf | 1, all_ones]
    elif fmt.specials == "fn":
        codes += [all_ones, all_ones | signbit]
    elif fmt.specials == "fnuz":
        codes += [signbit]
    c = np.array(codes, np.uint64)
    c = c[_valid_mask(c, fmt)]
    return _unique_keep_order(c)


def _arith_corners(fmt) -> np.ndarray:
    """Corner codes plus operands whose sums/products need rounding (1 + k ulp, 3, 0.75…)."""
    fmt = as_format(fmt)
    base = corner_codes(fmt)
    if isinstance(fmt, FixedFormat):
        return base
    m, one, maxc = fmt.man_bits, fmt.bias << fmt.man_bits, fmt.max_code_magnitude
    extra = [one + 3, one + (1 << m) + (1 << max(m - 1, 0)), one - (1 << max(m - 1, 0)), (1 << m) + 3, maxc - 3]
    extra = [g for g in extra if 0 < g <= maxc]
    signbit = 1 << (fmt.bits - 1)
    extra = np.array(extra + [g | signbit for g in extra], np.uint64)
    extra = extra[_valid_mask(extra, fmt)]
    return _unique_keep_order(np.concatenate([base, extra]))


def _words64(key, n) -> np.ndarray:
    """n uint64 words from Threefry bits (two 32-bit words each)."""
    w = _random.bits(key, 2 * n).astype(np.uint64).reshape(n, 2)
    return (w[:, 0] << np.uint64(32)) | w[:, 1]


def _random_codes(fmt, w) -> np.ndarray:
    """Codes from uint64 words: floats uniform over bit patterns; fixed point a uniform value of a
    random width 1..bits (so small and large magnitudes are both common)."""
    w = np.asarray(w, np.uint64)
    if isinstance(fmt, FloatFormat):
        c = w & np.uint64((1 << fmt.bits) - 1)
        if not fmt.subnormals:
            mag_mask = np.uint64((1 << (fmt.bits - 1)) - 1)
            sub = ((c & mag_mask) >> np.uint64(fmt.man_bits)) == 0
            c = np.where(sub, c & ~np.uint64((1 << fmt.man_bits) - 1), c)
        return c
    width = (w >> np.uint64(58)) % np.uint64(fmt.bits) + np.uint64(1)  # 1..bits
    low = w & np.uint64((1 << 58) - 1) if fmt.bits <= 58 else w
    raw = low & ((np.uint64(1) << width) - np.uint64(1)) if fmt.bits < 64 else low
    if fmt.signed:
        top = np.uint64(1) << (width - np.uint64(1))
        raw = np.where(raw & top, raw | ~((top << np.uint64(1)) - np.uint64(1)), raw)
    return raw & np.uint64((1 << fmt.bits) - 1) if fmt.bits < 64 else raw


def _values(codes, fmt):
    """The exact value of each code for emul's functions: int64 for integers, else float64.

    NaN codes keep their sign (``decode`` returns +NaN for every NaN code), so that operations
    that propagate a NaN operand's sign see it; fnuz formats have one unsigned NaN.
    """
    fmt = as_format(fmt)
    if isinstance(fmt, FixedFormat) and fmt.frac == 0:
        if not fmt.signed and fmt.bits == 64:
            return np.asarray(codes, np.uint64)
        return _ord(codes, fmt)
    c = np.asarray(codes, np.uint64)
    v = decode(c, fmt)
    if isinstance(fmt, FloatFormat) and fmt.has_nan and fmt.specials != "fnuz":
        neg = (c >> np.uint64(fmt.bits - 1)) != 0
        v = np.where(np.isnan(v), np.where(neg, -np.nan, np.nan), v)
    return v


def _isnan(codes, fmt):
    fmt = as_format(fmt)
    if isinstance(fmt, FixedFormat) or not fmt.has_nan:
        return np.zeros(np.shape(codes), bool)
    return np.isnan(decode(np.asarray(codes, np.uint64), fmt))


def _isinf(codes, fmt):
    fmt = as_format(fmt)
    if isinstance(fmt, FixedFormat) or not fmt.has_inf:
        return np.zeros(np.shape(codes), bool)
    return np.isinf(decode(np.asarray(codes, np.uint64), fmt))


def _check_lines(n, what):
    if n > MAX_LINES:
        raise ValueError(f"{what}: {n} vectors exceed MAX_LINES={MAX_LINES}; use sets='corners,random'")


# ============================================================================== expected values


def _sr_kwargs(s, u):
    if s["rounding"] != "stochastic":
        return {}
    return {"random_bits": u, "sr_bits": s["sr_bits"], "sr_method": s["sr_method"]}


def expected_arith(s, codes, u=None) -> np.ndarray:
    """Expected result codes of add/sub/mul/fma vectors (``codes``: one array per operand), from
    ``emul.arith`` (exact result, rounded once)."""
    from . import arith

    op, out = s["op"], as_format(s["out_fmt"])
    fmts = [s["fmt"], s["b_fmt"]] + ([s["c_fmt"]] if op == "fma" else [])
    vals = [_values(c, f) for c, f in zip(codes, fmts)]
    r = getattr(arith, op)(*vals, out, rounding=s["rounding"], overflow=s["overflow"], **_sr_kwargs(s, u))
    return encode(r, out, overflow=s["overflow"])


def _dot():
    try:
        from .accumulate import dot
    except ImportError:  # emul.accumulate is written concurrently; the per-step rule below is its spec
        return None
    return dot


def expected_mac(s, a_codes, b_codes) -> np.ndarray:
    """Expected accumulator codes after every step of MAC sequences (``[n, k]`` operand codes).

    Step j of sequence i holds the sequential dot product of the first j + 1 pairs:
    s = +0, then s = Q_acc(s + p) for each product p (exact, or rounded once to ``product``).
    With ``emul.accumulate`` installed this is ``dot(a[:j+1], b[:j+1], acc, order="sequential")``;
    without it, the same steps as ``emul.arith.fma(a, b, s, acc)`` (exact products) or
    ``emul.arith.add(s, mul(a, b, product), acc)``.
    """
    acc = as_format(s["acc"])
    a = _values(a_codes, s["fmt"])
    b = _values(b_codes, s["b_fmt"])
    n, k = a.shape
    out = np.empty((n, k), np.uint64)
    kw = dict(rounding=s["rounding"], overflow=s["overflow"])
    prod = {} if s["product"] is None else {"product": s["product"], "product_rounding": s["product_rounding"]}
    dot = _dot()
    if dot is not None:
        for j in range(k):
            r = dot(a[:, None, : j + 1], b[:, : j + 1, None], acc, order="sequential", **prod, **kw)
            out[:, j] = encode(np.asarray(r).reshape(n), acc, overflow=s["overflow"])
        return out
    from . import arith

    run = np.zeros(n, np.float64)  # +0
    for j in range(k):
        if s["product"] is None:
            run = np.asarray(arith.fma(a[:, j], b[:, j], run, acc, **kw), np.float64)
        else:
            p = arith.mul(a[:, j], b[:, j], s["product"], s["product_rounding"])
            run = np.asarray(arith.add(run, p, acc, **kw), np.float64)
        out[:, j] = encode(run, acc, overflow=s["overflow"])
    return out


# ============================================================================== generators


def _keys(seed):
    root = _random.key(seed)
    return {name: _random.fold_in(root, i) for i, name in enumerate(("operands", "sr", "extra"))}


def _sr_words(s, n):
    """Random words per line for stochastic rounding (threefry or lfsr sources)."""
    r = s["sr_bits"]
    if s["random_source"] == "lfsr":
        return _random.lfsr(n, r=r, **s["lfsr"]).astype(np.uint64)
    return (_random.bits(_keys(s["seed"])["sr"], n) >> np.uint32(32 - r)).astype(np.uint64)


def _with_sr(s, operand_codes):
    """Attach the SR random words: per line (threefry/lfsr) or every word per operand tuple (all)."""
    if s.get("rounding") != "stochastic":
        return operand_codes, None
    n = operand_codes[0].size
    if s["random_source"] == "all":
        r = 1 << s["sr_bits"]
        _check_lines(n * r, "random_source='all'")
        ops = [np.repeat(c, r) for c in operand_codes]
        return ops, np.tile(np.arange(r, dtype=np.uint64), n)
    return operand_codes, _sr_words(s, n)


def _quantize_inputs(s):
    I, O = as_format(s["in_fmt"]), as_format(s["fmt"])
    parts = []
    if "exhaustive" in s["sets"]:
        _check_lines(1 << I.bits, f"exhaustive {I.name} inputs")
        parts.append(all_codes(I))
    if "corners" in s["sets"]:
        parts.append(_quantize_corners(I, O))
    if "random" in s["sets"] and s["count"]:
        parts.append(_quantize_random(I, O, s["count"], _keys(s["seed"])["operands"]))
    x = np.concatenate(parts) if parts else np.zeros(0, np.uint64)
    ovf = Overflow(s["overflow"])
    bad = np.zeros(x.shape, bool)
    if isinstance(O, FixedFormat) or not O.has_nan:
        bad |= _isnan(x, I)
    if ovf in _WRAPS:
        bad |= _isinf(x, I)
    return x[~bad]


def _in_ord_of(values, I):
    """Input-format ordinals of float64 values, rounded toward zero and clipped to the range
    (formats that fit float64)."""
    v = np.asarray(values, np.float64)
    if isinstance(I, FixedFormat):
        with np.errstate(all="ignore"):
            raw = np.trunc(v / I.lsb)
        return np.clip(np.nan_to_num(raw), I.min_raw, I.max_raw).astype(np.int64)
    return _ord(encode(v, I, "toward_zero", "saturate"), I)


def _quantize_plan(I, O):
    """How emul computes the codes of quantize vectors from inputs of I: ``(raw, target, shift)``.

    Inputs that fit float64 (every float format, fixed point of at most 53 bits) are passed as
    their values (``raw`` False) and rounded to ``target`` = O.  Wider fixed-point inputs with
    fraction bits (``fx<64,10>``) are passed as their raw integers r (exact) and rounded to
    ``target`` = O scaled by 2^frac (values 2^frac times O's: rounding r to it gives the code of
    r 2^-frac rounded to O, in every mode, with every overflow rule).  Where that scaled format
    does not exist (a float target with float64's own exponent range, such as fp64) but every
    |r 2^-frac| lies in O's normal range, the raw integers are rounded to a proxy float with O's
    precision and the codes are re-based to O's exponent (``shift`` = frac).  Otherwise
    ValueError."""
    if not (isinstance(I, FixedFormat) and I.frac != 0 and not I.fits_float64):
        return False, O, None
    f = I.frac
    try:
        if isinstance(O, FixedFormat):
            return True, FixedFormat(O.bits, O.frac - f, signed=O.signed), None
        return True, FloatFormat(O.exp_bits, O.man_bits, bias=O.bias - f, subnormals=O.subnormals,
                                 specials=O.specials), None
    except ValueError as exc:
        reason = str(exc)
    if isinstance(O, FloatFormat) and O.emin <= -f and I.bits - f <= O.emax:
        return True, FloatFormat(8, O.man_bits), f  # |r| in [1, 2^64]: normal there too
    raise ValueError(
        f"in_fmt={I.name}: its values do not fit float64; emul rounds them to {O.name} through the raw "
        f"integers r (value r * 2^-{f}), but {O.name} scaled by 2^{f} does not exist ({reason}) and the "
        f"values reach beyond its normal range")


def _rebase(codes, proxy, O, shift) -> np.ndarray:
    """Codes of the proxy float (normal values or zeros) as codes of O for the values * 2^-shift."""
    c = np.asarray(codes, np.uint64)
    m = np.uint64(O.man_bits)
    e = ((c >> m) & np.uint64((1 << proxy.exp_bits) - 1)).astype(np.int64)
    mag = (((e - proxy.bias - shift + O.bias).astype(np.uint64)) << m) | (c & np.uint64((1 << O.man_bits) - 1))
    sign = (c >> np.uint64(proxy.bits - 1)) << np.uint64(O.bits - 1)
    return np.where(e == 0, np.uint64(0), mag) | sign


def expected_quantize(s, x, u=None) -> np.ndarray:
    """Expected result codes of quantize vectors with input codes ``x``: ``emul.encode`` of the
    exact input values (float64 or exact integers; wide fixed point through its raw integers,
    see ``_quantize_plan``)."""
    I, O = as_format(s["in_fmt"]), as_format(s["fmt"])
    raw, target, shift = _quantize_plan(I, O)
    vals = _values(x, FixedFormat(I.bits, 0, signed=I.signed) if raw else I)
    y = encode(vals, target, s["rounding"], s["overflow"], **_sr_kwargs(s, u))
    return y if shift is None else _rebase(y, target, O, shift).astype(code_dtype(O))


def _precision_ords(I, O) -> set:
    """Target ordinals around the magnitudes where the coarser grid of the two formats starts
    to need rounding: a float target fed fixed-point inputs (lsb 2^-f) first rounds in the
    binade of 2^p lsb (p = its precision: ties 2^24 + 1 and 2^24 + 3 for int -> fp32, 2^11 + 1
    for fp16), so take the start of that binade, of the one below and of two above, with the
    neighbouring target values of both signs; a fixed-point target fed floats has half-lsb ties
    up to 2^man_bits(I) lsb (1023.5 for fp16 -> int)."""
    out = set()
    if isinstance(O, FloatFormat) and isinstance(I, FixedFormat):
        e0 = O.man_bits + 1 - I.frac
        for e in range(e0 - 1, e0 + 3):
            if O.emin <= e <= O.emax:
                o = (e + O.bias) << O.man_bits  # the ordinal of 2^e: 2^e - 1 ulp .. 2^e + 2 ulp
                out |= {sign * (o + d) for d in (-1, 0, 1, 2) for sign in (1, -1)}
    elif isinstance(O, FixedFormat) and isinstance(I, FloatFormat):
        k = 1 << I.man_bits
        lo, hi = _ord_range(O)
        out |= {o for d in (-2, -1, 0, 1) for o in (k + d, -(k + d)) if lo <= o <= hi}
    return out


def _quantize_corners(I, O) -> np.ndarray:
    """Inputs around the target's corners, exactly (Python ints and Fractions, any width):
    every target corner value and its successor, the target's precision boundaries and the
    input's extremes in the target's terms; the points on them, halfway and a quarter and three
    quarters between them, mapped to input codes toward zero, with their two input neighbours;
    then the input format's own corners."""
    co = corner_codes(O)
    finite = co[~(_isnan(co, O) | _isinf(co, O))]
    lo, hi = _ord_range(O)
    T = {_ord_py(c, O) for c in finite.tolist()}
    T |= {_succ_py(O, o) for o in T} | {hi + 1, hi + 2, lo - 1, lo - 2}
    T |= _precision_ords(I, O)
    for v in _extremes(I):
        o = _toward_zero_ord(O, v)
        T |= {o - 1, o, o + 1}
    pts = []
    for o in sorted(T):
        g0, g1 = _value_py(O, o), _value_py(O, _succ_py(O, o))
        d = g1 - g0
        pts += [g0, g0 + d / 2, g0 + d / 4, g0 + 3 * d / 4]
    if isinstance(O, FloatFormat):
        tiny, top = Fraction(O.min_subnormal) / 4, 2 * Fraction(O.max)
        pts += [tiny, -tiny, top, -top]
    base = {_toward_zero_ord(I, p) for p in pts}
    io = sorted({b + k for b in base for k in (-1, 0, 1)})
    c = np.array([_code_py(o, I) for o in io] + corner_codes(I).tolist(), np.uint64)
    return _unique_keep_order(c[_valid_mask(c, I)])


def _random_target_ords(I, O):
    """Two ranges (first, last) of target ordinals for random vectors (the first may be empty:
    last < first): those the inputs can reach (one more at each end), and for a float target
    fed fixed-point inputs without the band of target values below the input's lsb in magnitude
    (their inputs are only 0 and the lsb)."""
    lo, hi = _ord_range(O)
    vlo, vhi = _extremes(I)
    lo = max(lo, _toward_zero_ord(O, vlo) - 1)  # ordinals beyond the input's reach only repeat its ends
    hi = min(hi, _toward_zero_ord(O, vhi) + 1)
    if isinstance(O, FloatFormat) and isinstance(I, FixedFormat):
        small = _toward_zero_ord(O, _pow2(-I.frac))  # the target value at (or just below) one lsb
        if 1 <= small <= hi:
            return (lo, max(lo - 1, -small)), (max(lo, small - 1), hi)
    return (lo, lo - 1), (lo, hi)


def _quantize_random(I, O, count, key) -> np.ndarray:
    """Mostly inputs between two adjacent target values (a uniform target ordinal among those
    the inputs can reach, then a uniform input code between the two), one in eight uniform over
    the input codes.  Exact: float64 arithmetic when both formats fit float64, else Python ints."""
    w = _words64(key, 3 * count).reshape(count, 3)
    (a1, b1), (a2, b2) = _random_target_ords(I, O)
    len1 = b1 - a1 + 1
    span = len1 + b2 - a2 + 1  # up to 2^64
    uniform = _random_codes(I, w[:, 2])  # valid codes (fixed point: every pattern is one)
    if _fits_float64(I) and _fits_float64(O):
        k = (w[:, 1] % np.uint64(span)).astype(np.int64)
        o = np.where(k < len1, a1 + k, a2 + (k - len1))
        a, b = _in_ord_of(_grid(O, o), I), _in_ord_of(_grid(O, _succ(O, o)), I)
        lo_i, hi_i = np.minimum(a, b), np.maximum(a, b)
        width = (hi_i - lo_i + 1).astype(np.uint64)
        near = _from_ord(lo_i + (w[:, 2] % width).astype(np.int64), I)
    else:
        near = np.empty(count, np.uint64)
        for k, (w1, w2) in enumerate(zip(w[:, 1].tolist(), w[:, 2].tolist())):
            o = w1 % span
            o = a1 + o if o < len1 else a2 + (o - len1)
            a = _toward_zero_ord(I, _value_py(O, o))
            b = _toward_zero_ord(I, _value_py(O, _succ_py(O, o)))
            near[k] = _code_py(min(a, b) + w2 % (abs(a - b) + 1), I)
    return np.where((w[:, 0] & np.uint64(7)) == 0, uniform, near)


def _gen_quantize(s):
    I, O = as_format(s["in_fmt"]), as_format(s["fmt"])
    (x,), u = _with_sr(s, [_quantize_inputs(s)])
    y = expected_quantize(s, x, u)
    fields = [Field("x", I.bits, I.name)]
    cols = [x]
    if u is not None:
        fields.append(Field("u", s["sr_bits"]))
        cols.append(u)
    fields.append(Field("y", O.bits, O.name))
    cols.append(y)
    return fields, cols


def _operand_sets(s, fmts, random_fn):
    """Operand code tuples from the sets: exhaustive product, corner product, random."""
    parts = []
    if "exhaustive" in s["sets"]:
        alls = [all_codes(f) for f in fmts]
        _check_lines(math.prod(a.size for a in alls), "exhaustive operands")
        parts.append(_product(alls))
    if "corners" in s["sets"]:
        parts.append(_product([_arith_corners(f) for f in fmts]))
    if "random" in s["sets"] and s["count"]:
        parts.append(random_fn())
    if not parts:
        return [np.zeros(0, np.uint64) for _ in fmts]
    return [np.concatenate([p[i] for p in parts]) for i in range(len(fmts))]


def _product(arrays):
    grids = np.meshgrid(*arrays, indexing="ij")
    return [g.reshape(-1).astype(np.uint64) for g in grids]


def _gen_arith(s):
    op = s["op"]
    names = ["a", "b", "c"][: 3 if op == "fma" else 2]
    fmts = [as_format(s["fmt"]), as_format(s["b_fmt"])] + ([as_format(s["c_fmt"])] if op == "fma" else [])
    out = as_format(s["out_fmt"])

    def rand():
        w = _words64(_keys(s["seed"])["operands"], len(fmts) * s["count"]).reshape(s["count"], len(fmts))
        return [_random_codes(f, w[:, i]) for i, f in enumerate(fmts)]

    ops = _operand_sets(s, fmts, rand)
    # drop operand tuples whose result the output format cannot hold (NaN without NaN; inf under wrap)
    bad = np.zeros(ops[0].shape, bool)
    if isinstance(out, FixedFormat) or not out.has_nan:
        for c, f in zip(ops, fmts):
            bad |= _isnan(c, f)
        if fmts and all(isinstance(f, FloatFormat) for f in fmts) and op != "fma":
            with np.errstate(all="ignore"):
                v = [decode(c, f) for c, f in zip(ops, fmts)]
                r = {"add": np.add, "sub": np.subtract, "mul": np.multiply}[op](*v)
            bad |= np.isnan(r)
        elif op == "fma":
            with np.errstate(all="ignore"):
                v = [decode(c, f) if isinstance(f, FloatFormat) else _values(c, f).astype(np.float64)
                     for c, f in zip(ops, fmts)]
                bad |= np.isnan(v[0] * v[1] + v[2])
    if Overflow(s["overflow"]) in _WRAPS:
        for c, f in zip(ops, fmts):
            bad |= _isinf(c, f)
    ops = [c[~bad] for c in ops]
    ops, u = _with_sr(s, ops)
    y = expected_arith(s, ops, u)
    fields = [Field(nm, f.bits, f.name) for nm, f in zip(names, fmts)]
    cols = list(ops)
    if u is not None:
        fields.append(Field("u", s["sr_bits"]))
        cols.append(u)
    fields.append(Field("y", out.bits, out.name))
    cols.append(y)
    return fields, cols


def _finite_codes(codes, fmt):
    """Non-finite codes replaced by the largest finite value of the same sign."""
    bad = _isnan(codes, fmt) | _isinf(codes, fmt)
    if not bad.any():
        return codes
    lo, hi = _ord_range(fmt)
    neg = (codes >> np.uint64(fmt.bits - 1)) != 0
    return np.where(bad, np.where(neg, _from_ord(lo, fmt), _from_ord(hi, fmt)), codes)


def _gen_mac(s):
    A, B, acc = as_format(s["fmt"]), as_format(s["b_fmt"]), as_format(s["acc"])
    k = s["k"]
    seqs_a, seqs_b = [], []
    if "exhaustive" in s["sets"]:
        raise ValueError("sets='exhaustive': not available for mac vectors (use corners and random)")
    if "corners" in s["sets"]:
        ca, cb = corner_codes(A), corner_codes(B)
        pa, pb = _product([ca, cb])
        seqs_a.append(np.repeat(pa[:, None], k, 1))
        seqs_b.append(np.repeat(pb[:, None], k, 1))
        # up then down, down then up: saturate one way, then leave the bound
        hi_a, lo_a, hi_b = _from_ord(_ord_range(A)[1], A), _from_ord(_ord_range(A)[0], A), _from_ord(_ord_range(B)[1], B)
        half = (k + 1) // 2
        for first, second in ((hi_a, lo_a), (lo_a, hi_a)):
            seqs_a.append(np.array([[first] * half + [second] * (k - half)], np.uint64))
            seqs_b.append(np.full((1, k), hi_b, np.uint64))
    if "random" in s["sets"] and s["count"]:
        n = s["count"]
        w = _words64(_keys(s["seed"])["operands"], 2 * n * k + n).astype(np.uint64)
        scale = w[2 * n * k:]
        wa, wb = w[: n * k].reshape(n, k), w[n * k: 2 * n * k].reshape(n, k)
        ra, rb = _mac_random(A, wa, scale), _mac_random(B, wb, scale)
        seqs_a.append(ra)
        seqs_b.append(rb)
    a = np.concatenate(seqs_a) if seqs_a else np.zeros((0, k), np.uint64)
    b = np.concatenate(seqs_b) if seqs_b else np.zeros((0, k), np.uint64)
    _check_lines(a.size, "mac vectors")
    if isinstance(acc, FixedFormat) or not acc.has_nan:
        keep = ~(_isnan(a, A) | _isnan(b, B)).any(axis=1)
        if Overflow(s["overflow"]) in _WRAPS:
            keep &= ~(_isinf(a, A) | _isinf(b, B)).any(axis=1)
        a, b = a[keep], b[keep]
    y = expected_mac(s, a, b)
    first = np.zeros(a.shape, np.uint64)
    first[:, 0] = 1
    fields = [Field("first", 1), Field("a", A.bits, A.name), Field("b", B.bits, B.name), Field("acc", acc.bits, acc.name)]
    return fields, [first.reshape(-1), a.reshape(-1), b.reshape(-1), y.reshape(-1)]


def _mac_random(fmt, w, scale):
    """Random MAC operands: fixed point with one magnitude width per sequence (so sums drift
    toward the accumulator's bounds at different rates); floats uniform and finite."""
    if isinstance(fmt, FloatFormat):
        return _finite_codes(_random_codes(fmt, w), fmt)
    width = (scale % np.uint64(fmt.bits))[:, None] + np.uint64(1)
    raw = w & ((np.uint64(1) << width) - np.uint64(1))
    if fmt.signed:
        top = np.uint64(1) << (width - np.uint64(1))
        raw = np.where(raw & top, raw | ~((top << np.uint64(1)) - np.uint64(1)), raw)
    return raw & np.uint64((1 << fmt.bits) - 1) if fmt.bits < 64 else raw


def _gen_nm(s):
    F, n, m = as_format(s["fmt"]), s["n"], s["m"]
    blocks = []
    if "exhaustive" in s["sets"]:
        codes = all_codes(F)
        _check_lines(codes.size ** m, f"exhaustive {m}-blocks of {F.name}")
        blocks.append(np.stack(_product([codes] * m), axis=1))
    if "corners" in s["sets"]:
        blocks.append(_nm_corners(F, m))
    if "random" in s["sets"] and s["count"]:
        c = s["count"]
        w = _words64(_keys(s["seed"])["operands"], c * m + 3 * c)
        x = _random_codes(F, w[: c * m]).reshape(c, m)
        pal_w = w[c * m:].reshape(c, 3)
        palette = np.stack([_random_codes(F, pal_w[:, 0]), _random_codes(F, pal_w[:, 1])], axis=1)
        pick = ((pal_w[:, 2][:, None] >> np.arange(m, dtype=np.uint64)) & np.uint64(1)).astype(np.int64)
        tied = np.take_along_axis(palette, pick, axis=1)
        x = np.where(((pal_w[:, 2] >> np.uint64(63)) == 1)[:, None], tied, x)  # half the blocks tie-heavy
        blocks.append(x)
    x = np.concatenate(blocks) if blocks else np.zeros((0, m), np.uint64)
    x = x[_valid_mask(x, F).all(axis=1)]
    from .sparsity import nm_mask

    mask = nm_mask(_values(x, F), n, m, axis=-1, ties=s["ties"]) if x.size else np.zeros(x.shape, bool)
    idx = np.argsort(~mask, axis=1, kind="stable")[:, :n]  # kept indices, ascending
    kept = np.take_along_axis(x, idx, axis=1)
    mask_bits = (mask.astype(np.uint64) << np.arange(m, dtype=np.uint64)).sum(axis=1, dtype=np.uint64)
    ib = max(1, (m - 1).bit_length())
    fields = [Field(f"x{i}", F.bits, F.name) for i in range(m)] + [Field("mask", m)]
    fields += [Field(f"v{i}", F.bits, F.name) for i in range(n)] + [Field(f"i{i}", ib) for i in range(n)]
    cols = [x[:, i] for i in range(m)] + [mask_bits] + [kept[:, i] for i in range(n)]
    cols += [idx[:, i].astype(np.uint64) for i in range(n)]
    return fields, cols


def _nm_corners(F, m) -> np.ndarray:
    """Blocks built from a small palette (ties of equal magnitudes, both zero signs, a larger
    value), all-equal blocks, and each position holding NaN/max/-max among tied values."""
    if isinstance(F, FloatFormat):
        one = F.bias << F.man_bits
        sb = 1 << (F.bits - 1)
        small, big = min(one, F.max_code_magnitude - 1), min(one + (1 << F.man_bits), F.max_code_magnitude)
        palette = [0, small, small | sb, big] + ([sb] if F.has_negative_zero else [])
        specials = [F.max_code_magnitude, F.max_code_magnitude | sb]
        if F.has_nan:
            specials.append(int(corner_codes(F)[_isnan(corner_codes(F), F)][0]))
    else:
        mask = (1 << F.bits) - 1
        palette = [0, 1, (-1) & mask, 2] if F.signed else [0, 1, 2]
        specials = [F.max_raw, F.min_raw & mask]
    p = len(palette)
    while p > 2 and p ** m > 4096:
        p -= 1
    rows = [list(t) for t in itertools.product(palette[:p], repeat=m)] if p ** m <= 4096 else []
    base = palette[1]
    for sp in specials:
        for pos in range(m):
            row = [base] * m
            row[pos] = sp
            rows.append(row)
    return _unique_keep_order(np.array(rows, np.uint64), axis=0)


_GENERATORS = {"quantize": _gen_quantize, "add": _gen_arith, "sub": _gen_arith, "mul": _gen_arith,
               "fma": _gen_arith, "mac": _gen_mac, "nm": _gen_nm}


def generate(op, **settings) -> Vectors:
    """Operands and expected results of ``op`` as a :class:`Vectors` table.

    Settings (all recorded in the file header; defaults in brackets):

    - every op: ``sets`` [``["corners", "random"]``] — any of ``"exhaustive"``, ``"corners"``,
      ``"random"`` (a list, or a string such as ``"corners,random"``); ``count`` [1000] random
      vectors (``mac``: sequences; ``nm``: blocks); ``seed`` [0] (random operands use
      ``emul.random.bits(fold_in(key(seed), 0), …)``; SR words ``fold_in(key(seed), 1)``).
    - ``quantize``: ``fmt`` (target), ``in_fmt`` ["fp32"]. Fields ``x [u] y``. Every fixed-point
      width 1..64 works as ``fmt`` and ``in_fmt``; the expected codes are exact
      (:func:`expected_quantize`).
    - ``add``/``sub``/``mul``: ``fmt`` (operand a), ``b_fmt`` [fmt], ``out_fmt`` [fmt]. Fields ``a b [u] y``.
    - ``fma``: also ``c_fmt`` [out_fmt]; y = a·b + c rounded once. Fields ``a b c [u] y``.
    - the above: ``rounding`` ["nearest_even"], ``overflow`` [the format's default], and for
      ``rounding="stochastic"``: ``sr_bits`` [32], ``sr_method`` ["add"], ``random_source``
      ["threefry"]: ``"threefry"`` (word i of the seed's SR stream, ``>> (32 - sr_bits)``),
      ``"lfsr"`` (word i of ``emul.random.lfsr(n, r=sr_bits, **lfsr)``, ``lfsr`` a dict of
      ``width taps seed kind output``, default :data:`LFSR_DEFAULT`: one LFSR step per vector) or
      ``"all"`` (every operand tuple with every ``sr_bits`` word, ``sr_bits <= 16``).
    - ``mac``: ``fmt`` ["int8"], ``b_fmt`` [fmt], ``acc`` ["int12"], ``product`` [None = exact;
      else the format products are rounded to, by ``product_rounding``], ``rounding``,
      ``overflow`` [acc's default], ``k`` [16] steps per sequence. One line per step: fields
      ``first a b acc`` — ``first`` = 1 starts a sequence from +0, ``acc`` is the accumulator after
      the step (s = Q_acc(s + a·b), one rounding and overflow check per step).
    - ``nm``: ``fmt`` ["int8"], ``n`` [2], ``m`` [4], ``ties`` ["low_index"]. One line per block:
      fields ``x0 … x{m-1} mask v0 … v{n-1} i0 … i{n-1}``: ``mask`` bit i keeps element i
      (``emul.sparsity.nm_mask``), ``v``/``i`` the kept codes and their indices, ascending.

    >>> v = generate("mul", fmt="e4m3fn", out_fmt="fp16", sets="exhaustive")
    >>> len(v), v.names
    (65536, ('a', 'b', 'y'))
    """
    s = canonical(op, **settings)
    fields, cols = _GENERATORS[op](s)
    codes = np.stack([np.asarray(c, np.uint64) for c in cols], axis=1) if cols and cols[0].size else \
        np.zeros((0, len(fields)), np.uint64)
    return Vectors(s, tuple(fields), np.ascontiguousarray(codes))


# ============================================================================== reading


def _parse_header(lines, marker):
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

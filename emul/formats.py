"""Number formats: what each code means.

A format is a frozen value. It says how codes map to real numbers and nothing else; rounding and
overflow are chosen per call (see :mod:`emul.rounding`).

- :class:`FloatFormat` — sign, ``exp_bits`` exponent bits, ``man_bits`` mantissa bits, a bias,
  optional subnormals, and one of four layouts of special values (``specials``).
- :class:`FixedFormat` — a two's complement (or unsigned) integer ``r`` of ``bits`` bits meaning
  ``r * 2**-frac``.
- :class:`ExpFormat` — an unsigned, exponent-only format: OCP MX's block scale ``e8m0``.
- :func:`format` — parse a name (``"e4m3fn"``, ``"bf16"``, ``"e5m6b10-nosub"``, ``"fx<12,4>"``…).
"""

from __future__ import annotations

import dataclasses
import math
import re
from fractions import Fraction

__all__ = ["FloatFormat", "FixedFormat", "ExpFormat", "format", "Format"]

SPECIALS = ("ieee", "fn", "fnuz", "none")
# |frac| bound of FixedFormat: past it, every finite float64 input (2**-1074 ... 2**1024) gives the
# same code as at the bound, so larger values add nothing but exponent arithmetic out of range.
FRAC_LIMIT = 2000


@dataclasses.dataclass(frozen=True)
class FloatFormat:
    """A binary floating-point format.

    Normal codes mean ``(-1)**s * 2**(e - bias) * (1 + f / 2**man_bits)``; codes with ``e == 0``
    mean ``(-1)**s * 2**(1 - bias) * f / 2**man_bits`` (subnormals). ``specials`` chooses which
    codes are not numbers:

    - ``"ieee"``: the all-ones exponent holds ±inf (``f == 0``) and NaNs (``f != 0``).
    - ``"fn"``: no infinities; only ``S.1…1.1…1`` is NaN (OCP E4M3: max 448).
    - ``"fnuz"``: no infinities and no negative zero; the single NaN is code ``10…0``.
    - ``"none"``: every code is a finite number (OCP MX elements).

    ``bias`` defaults to ``2**(exp_bits-1) - 1`` (``2**(exp_bits-1)`` for ``"fnuz"``) and is stored
    resolved. With ``subnormals=False`` codes with ``e == 0, f != 0`` are invalid and values below
    ``min_normal`` round on the grid ``{0, min_normal}``.

    >>> FloatFormat(4, 3, specials="fn").max
    448.0
    >>> FloatFormat(5, 2).name
    'e5m2'
    """

    exp_bits: int
    man_bits: int
    bias: int | None = None
    subnormals: bool = True
    specials: str = "ieee"

    def __post_init__(self):
        for field in ("exp_bits", "man_bits"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{field}={value!r}: must be an int")
        if self.specials not in SPECIALS:
            raise ValueError(f"specials={self.specials!r}: must be one of {', '.join(SPECIALS)}")
        if not isinstance(self.subnormals, bool):
            raise TypeError(f"subnormals={self.subnormals!r}: must be a bool")
        if self.exp_bits < 1:
            raise ValueError(f"exp_bits={self.exp_bits}: must be at least 1")
        if self.man_bits < 0:
            raise ValueError(f"man_bits={self.man_bits}: must be at least 0")
        if self.man_bits > 52:
            raise ValueError(f"man_bits={self.man_bits}: at most 52 (float64 must carry every value exactly)")
        if self.exp_bits > 11:
            raise ValueError(f"exp_bits={self.exp_bits}: at most 11 (float64 must carry every value exactly)")
        if self.bias is None:
            default = 2 ** (self.exp_bits - 1) - (0 if self.specials == "fnuz" else 1)
            object.__setattr__(self, "bias", default)
        elif isinstance(self.bias, bool) or not isinstance(self.bias, int):
            raise TypeError(f"bias={self.bias!r}: must be an int or None")
        if self.specials == "ieee" and (self.exp_bits < 2 or self.man_bits < 1):
            raise ValueError(
                f"specials='ieee' needs exp_bits >= 2 and man_bits >= 1 (got e{self.exp_bits}m{self.man_bits}): "
                "the all-ones exponent must leave finite values and hold both inf and NaN")
        if self.specials == "fn" and self.exp_bits + self.man_bits < 2:
            raise ValueError(f"specials='fn' needs at least 2 exponent+mantissa bits (got e{self.exp_bits}m{self.man_bits})")
        if self.emax > 1023:
            raise ValueError(f"bias={self.bias}: largest exponent {self.emax} exceeds float64's 1023")
        if self.emin - self.man_bits < -1074:
            raise ValueError(f"bias={self.bias}: smallest quantum 2**{self.emin - self.man_bits} is below float64's 2**-1074")
        if self.max_code_magnitude <= 0:
            raise ValueError(f"e{self.exp_bits}m{self.man_bits} with specials={self.specials!r} has no positive finite value")

    # -- derived integers (exact; used by kernels and properties) --------------------------------
    @property
    def bits(self) -> int:
        """Width of a code: sign + exponent + mantissa."""
        return 1 + self.exp_bits + self.man_bits

    @property
    def emin(self) -> int:
        """Exponent of the smallest normal value, ``1 - bias``."""
        return 1 - self.bias

    @property
    def max_code_magnitude(self) -> int:
        """Largest code without the sign bit whose value is finite."""
        all_ones = (1 << (self.exp_bits + self.man_bits)) - 1
        if self.specials == "ieee":
            return all_ones - (1 << self.man_bits)  # top exponent is inf/NaN
        if self.specials == "fn":
            return all_ones - 1
        return all_ones

    @property
    def emax(self) -> int:
        """Exponent of the largest finite value."""
        return max(self.max_code_magnitude >> self.man_bits, 1) - self.bias

    @property
    def has_inf(self) -> bool:
        return self.specials == "ieee"

    @property
    def has_nan(self) -> bool:
        return self.specials != "none"

    @property
    def has_negative_zero(self) -> bool:
        return self.specials != "fnuz"

    def _magnitude_value(self, code: int) -> Fraction:
        e, f = code >> self.man_bits, code & ((1 << self.man_bits) - 1)
        if e == 0:
            return Fraction(f, 1 << self.man_bits) * Fraction(2) ** self.emin
        return (1 + Fraction(f, 1 << self.man_bits)) * Fraction(2) ** (e - self.bias)

    def _value(self, code: int) -> float:
        """The float64 value of one valid code, as ``emul.decode`` gives it (NaN codes give a quiet
        NaN with the code's sign, except fnuz's NaN ``0x80..``, which is +NaN), without compiling the
        decoder: plans need the values of a few special codes before a kernel runs. The value must fit
        float64 (as ``decode`` requires)."""
        code &= (1 << self.bits) - 1
        negative, mag = bool(code >> (self.bits - 1)), code & ((1 << (self.bits - 1)) - 1)
        if mag > self.max_code_magnitude:
            special = math.inf if self.has_inf and mag == ((1 << self.exp_bits) - 1) << self.man_bits else math.nan
            return math.copysign(special, -1.0 if negative else 1.0)
        if self.specials == "fnuz" and negative and mag == 0:
            return math.nan
        v = float(self._magnitude_value(mag))  # exact: the value fits float64
        return -v if negative else v

    # -- public properties -----------------------------------------------------------------------
    @property
    def max(self) -> float:
        """Largest finite value."""
        return float(self._magnitude_value(self.max_code_magnitude))

    @property
    def min_normal(self) -> float:
        """Smallest positive normal value, ``2**(1 - bias)``."""
        return float(Fraction(2) ** self.emin)

    @property
    def min_subnormal(self) -> float:
        """Smallest positive value (``min_normal`` when ``subnormals=False``)."""
        if not self.subnormals or self.man_bits == 0:
            return self.min_normal
        return float(Fraction(2) ** (self.emin - self.man_bits))

    @property
    def eps(self) -> float:
        """``2**-man_bits``: the gap between 1 and the next value, as numpy's finfo."""
        return float(Fraction(1, 1 << self.man_bits))

    @property
    def name(self) -> str:
        """Canonical name; ``format(fmt.name) == fmt``."""
        return _float_name(self)

    def __repr__(self):
        return f"FloatFormat({self.name!r})"


@dataclasses.dataclass(frozen=True)
class FixedFormat:
    """A fixed-point format: raw integer ``r`` of ``bits`` bits (two's complement when
    ``signed``), value ``r * 2**-frac``. ``1 <= bits <= 64`` (signed ``int1`` is {-1, 0}, as
    ap_fixed<1,1>); ``frac`` may be negative or exceed ``bits``, within ``±FRAC_LIMIT`` (2000).

    >>> f = FixedFormat(4, 2)
    >>> f.min, f.max, f.lsb
    (-2.0, 1.75, 0.25)
    """

    bits: int
    frac: int
    signed: bool = True

    def __post_init__(self):
        for field in ("bits", "frac"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{field}={value!r}: must be an int")
        if not isinstance(self.signed, bool):
            raise TypeError(f"signed={self.signed!r}: must be a bool")
        if not 1 <= self.bits <= 64:
            raise ValueError(f"bits={self.bits}: must be between 1 and 64")
        if not -FRAC_LIMIT <= self.frac <= FRAC_LIMIT:
            raise ValueError(
                f"frac={self.frac}: must be between -{FRAC_LIMIT} and {FRAC_LIMIT} (past that every finite "
                "float64 input rounds to a zero or one-lsb code or overflows, exactly as at the bound)")

    @property
    def min_raw(self) -> int:
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def max_raw(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    @property
    def fits_float64(self) -> bool:
        """Whether float64 carries every value exactly (needed by functions returning values)."""
        return self.bits <= 53 and -1074 <= -self.frac and self.bits - self.frac <= 1024

    @property
    def min(self) -> float:
        return float(Fraction(self.min_raw) / Fraction(2) ** self.frac)

    @property
    def max(self) -> float:
        return float(Fraction(self.max_raw) / Fraction(2) ** self.frac)

    @property
    def lsb(self) -> float:
        return float(Fraction(2) ** -self.frac)

    @property
    def name(self) -> str:
        if self.frac == 0:
            return f"{'' if self.signed else 'u'}int{self.bits}"
        return f"{'' if self.signed else 'u'}fx<{self.bits},{self.frac}>"

    def __repr__(self):
        return f"FixedFormat({self.name!r})"


@dataclasses.dataclass(frozen=True)
class ExpFormat:
    """An unsigned, exponent-only format (OCP MX v1.0's E8M0 block scale, docs/blocks.md).

    Code ``c`` in ``[0, 2**exp_bits - 2]`` means ``2**(c - bias)``; the all-ones code is NaN. There
    is no sign, no zero and no infinity. ``bias`` defaults to ``2**(exp_bits-1) - 1``; ``e8m0`` is
    ``ExpFormat(8)``: 2**-127 … 2**127, NaN 0xFF. Rounding to it (:func:`emul.encode`): x <= 0 and
    NaN give the NaN code; below ``2**-bias`` gives code 0 (there is no zero); a tie at
    ``1.5 * 2**k`` follows the mode (the even code, or 2**(k+1) for ``nearest_away``); overflow as for
    any format without inf (``"ieee"``: NaN, or the max where IEEE 754 §7.4 says max).

    >>> e8m0 = ExpFormat(8)
    >>> e8m0.max, e8m0.min_normal, e8m0.name
    (1.7014118346046923e+38, 5.877471754111438e-39, 'e8m0')
    """

    exp_bits: int = 8
    bias: int | None = None

    def __post_init__(self):
        if isinstance(self.exp_bits, bool) or not isinstance(self.exp_bits, int):
            raise TypeError(f"exp_bits={self.exp_bits!r}: must be an int")
        if not 1 <= self.exp_bits <= 11:
            raise ValueError(f"exp_bits={self.exp_bits}: must be between 1 and 11")
        if self.bias is None:
            object.__setattr__(self, "bias", 2 ** (self.exp_bits - 1) - 1)
        elif isinstance(self.bias, bool) or not isinstance(self.bias, int):
            raise TypeError(f"bias={self.bias!r}: must be an int or None")
        if self.emax > 1023 or self.emin < -1074:
            raise ValueError(f"bias={self.bias}: values 2**{self.emin} … 2**{self.emax} exceed float64's range")

    man_bits = 0  # no mantissa: the code's last bit is the exponent's (ties, round-to-odd)
    subnormals = False
    has_inf = False
    has_nan = True
    has_negative_zero = False

    @property
    def bits(self) -> int:
        return self.exp_bits

    @property
    def emin(self) -> int:
        """Exponent of code 0, the smallest value: ``-bias``."""
        return -self.bias

    @property
    def emax(self) -> int:
        """Exponent of the largest value (code ``2**exp_bits - 2``)."""
        return (1 << self.exp_bits) - 2 - self.bias

    @property
    def max_code_magnitude(self) -> int:
        return (1 << self.exp_bits) - 2

    @property
    def nan_code(self) -> int:
        return (1 << self.exp_bits) - 1

    @property
    def max(self) -> float:
        return float(Fraction(2) ** self.emax)

    @property
    def min_normal(self) -> float:
        """The smallest value, ``2**-bias`` (code 0)."""
        return float(Fraction(2) ** self.emin)

    min_subnormal = min_normal

    @property
    def eps(self) -> float:
        return 1.0

    @property
    def name(self) -> str:
        default = 2 ** (self.exp_bits - 1) - 1
        return f"e{self.exp_bits}m0" + ("" if self.bias == default else f"b{self.bias}")

    def __repr__(self):
        return f"ExpFormat({self.name!r})"


Format = FloatFormat | FixedFormat | ExpFormat

# Presets: name -> (exp_bits, man_bits, bias, specials). ``None`` bias means the default.
_PRESETS = {
    "fp64": (11, 52, None, "ieee"),
    "fp32": (8, 23, None, "ieee"),
    "fp16": (5, 10, None, "ieee"),
    "bf16": (8, 7, None, "ieee"),
    "tf32": (8, 10, None, "ieee"),
    "e4m3fn": (4, 3, None, "fn"),
    "e4m3fnuz": (4, 3, None, "fnuz"),
    "e5m2": (5, 2, None, "ieee"),
    "e5m2fnuz": (5, 2, None, "fnuz"),
    "e3m4": (3, 4, None, "ieee"),
    "e4m3b11fnuz": (4, 3, 11, "fnuz"),
    "e2m3fn": (2, 3, None, "none"),
    "e3m2fn": (3, 2, None, "none"),
    "e2m1fn": (2, 1, None, "none"),
}
# Presets whose canonical name is not the generic one.
_PREFERRED = {params: name for name, params in _PRESETS.items()
              if name in ("fp64", "fp32", "fp16", "bf16", "tf32", "e2m3fn", "e3m2fn", "e2m1fn")}

_EXP = re.compile(r"e(\d+)m0(?:b(-?\d+))?")  # unsigned exponent-only (e8m0); e{E}m0fn etc. stay signed
_GENERIC = re.compile(r"e(\d+)m(\d+)(?:b(-?\d+))?(fn|fnuz|fin)?(-nosub)?")
_FIXED = re.compile(r"(u?)fx<\s*(\d+)\s*,\s*(-?\d+)\s*>")
_INT = re.compile(r"(u?)int(\d+)")
_SUFFIX = {None: "ieee", "fn": "fn", "fnuz": "fnuz", "fin": "none"}
_SUFFIX_OF = {"ieee": "", "fn": "fn", "fnuz": "fnuz", "none": "fin"}


def _float_name(fmt: FloatFormat) -> str:
    default_bias = 2 ** (fmt.exp_bits - 1) - (0 if fmt.specials == "fnuz" else 1)
    nosub = "" if fmt.subnormals else "-nosub"
    key = (fmt.exp_bits, fmt.man_bits, None if fmt.bias == default_bias else fmt.bias, fmt.specials)
    if key in _PREFERRED:
        return _PREFERRED[key] + nosub
    bias = "" if fmt.bias == default_bias else f"b{fmt.bias}"
    suffix = _SUFFIX_OF[fmt.specials]
    plain = _PRESETS.get(f"e{fmt.exp_bits}m{fmt.man_bits}{suffix}")
    if not bias and plain is not None and plain[3] != fmt.specials:
        bias = f"b{fmt.bias}"  # the plain name means a preset with other specials (e3m2fn is "none")
    return f"e{fmt.exp_bits}m{fmt.man_bits}{bias}{suffix}{nosub}"


def format(name: str | Format) -> Format:  # noqa: A001 - public name from the spec
    """The format called ``name`` (a format passes through unchanged).

    NumPy and ml_dtypes dtypes name their format too: ``np.float16`` is fp16,
    ``ml_dtypes.bfloat16`` bf16, ``ml_dtypes.float8_e4m3fn`` e4m3fn, ``np.int8`` int8.

    Presets: ``fp64 fp32 fp16 bf16 tf32 e4m3fn e4m3fnuz e5m2 e5m2fnuz e3m4 e4m3b11fnuz e2m3fn
    e3m2fn e2m1fn``. Generic floats: ``e{E}m{M}`` (IEEE specials), then optionally ``b{bias}``,
    then optionally ``fn``, ``fnuz`` or ``fin`` (no specials), then optionally ``-nosub``; a name
    with an explicit ``b{bias}`` always reads generically, and a preset name followed by ``-nosub``
    is that preset without subnormals (``e2m1fn-nosub``: specials ``"none"``, max 6.0). Fixed
    point: ``int{N}``, ``uint{N}``, ``fx<bits,frac>``, ``ufx<bits,frac>``. Unsigned exponent-only
    (:class:`ExpFormat`): ``e8m0``, generically ``e{E}m0[b{bias}]`` (``e{E}m0fn`` etc. stay signed).

    >>> format("e4m3fn").max
    448.0
    >>> format("fx<12,4>")
    FixedFormat('fx<12,4>')
    >>> format("e5m6b10-nosub").name
    'e5m6b10-nosub'
    """
    if isinstance(name, (FloatFormat, FixedFormat, ExpFormat)):
        return name
    if not isinstance(name, str):
        from ._validate import dtype_format_name

        alias = dtype_format_name(name)  # np.float16, ml_dtypes.bfloat16, ml_dtypes.float8_e4m3fn, ...
        if alias is not None:
            return format(alias)
        raise TypeError(f"format: expected a format name, a FloatFormat/FixedFormat or a NumPy/ml_dtypes dtype "
                        f"with a matching format, got {name!r}")
    text = name.strip().lower()
    stem, nosub = (text[:-len("-nosub")], True) if text.endswith("-nosub") else (text, False)
    if stem in _PRESETS:  # a preset keeps its meaning with -nosub (e2m1fn-nosub: specials "none")
        e, m, bias, specials = _PRESETS[stem]
        return FloatFormat(e, m, bias=bias, specials=specials, subnormals=not nosub)
    if match := _EXP.fullmatch(text):
        e, bias = match.groups()
        return ExpFormat(int(e), None if bias is None else int(bias))
    if match := _GENERIC.fullmatch(text):
        e, m, bias, suffix, nosub = match.groups()
        return FloatFormat(int(e), int(m), bias=None if bias is None else int(bias),
                           subnormals=nosub is None, specials=_SUFFIX[suffix])
    if match := _FIXED.fullmatch(text):
        unsigned, bits, frac = match.groups()
        return FixedFormat(int(bits), int(frac), signed=not unsigned)
    if match := _INT.fullmatch(text):
        unsigned, bits = match.groups()
        return FixedFormat(int(bits), 0, signed=not unsigned)
    from ._validate import FORMAT_ALIASES, did_you_mean

    hint = did_you_mean(name, list(_PRESETS) + [p + "-nosub" for p in _PRESETS] + ["e8m0"], FORMAT_ALIASES)
    raise ValueError(
        f"format {name!r}: unknown name{hint}; expected a preset ({', '.join(_PRESETS)}), "
        "e{E}m{M}[b{bias}][fn|fnuz|fin][-nosub], e{E}m0[b{bias}] (unsigned, e8m0), int{N}, uint{N}, fx<bits,frac> or ufx<bits,frac>")

"""Formats for the golden model (docs/formats.md), and what follows from their fields.

The functions here take any object with the right attributes ("duck typing"):
a float format has ``exp_bits, man_bits, bias, subnormals, specials``; a fixed
format has ``bits, frac, signed``. ``Float`` and ``Fixed`` are tiny stand-ins
for emul's own FloatFormat/FixedFormat, for the golden model's own tests.
"""

from dataclasses import dataclass
from fractions import Fraction

SPECIALS = ("ieee", "fn", "fnuz", "none")


@dataclass(frozen=True)
class Float:
    exp_bits: int
    man_bits: int
    bias: int = None
    subnormals: bool = True
    specials: str = "ieee"

    def __post_init__(self):
        if self.specials not in SPECIALS:
            raise ValueError(f"specials={self.specials!r}: must be one of {SPECIALS}")
        if self.exp_bits < 1 or self.man_bits < 0:
            raise ValueError(f"exp_bits={self.exp_bits}, man_bits={self.man_bits}: need exp_bits >= 1, man_bits >= 0")
        if self.specials == "ieee" and (self.exp_bits < 2 or self.man_bits < 1):
            raise ValueError("specials='ieee' needs exp_bits >= 2 and man_bits >= 1")
        if self.bias is None:
            default = 2 ** (self.exp_bits - 1) - (0 if self.specials == "fnuz" else 1)
            object.__setattr__(self, "bias", default)


@dataclass(frozen=True)
class Fixed:
    bits: int
    frac: int
    signed: bool = True

    def __post_init__(self):
        if self.bits < 1:
            raise ValueError(f"bits={self.bits}: must be at least 1")


def is_float(fmt):
    return hasattr(fmt, "exp_bits")


def pow2(e):
    """2^e as an exact Fraction, for any integer e."""
    return Fraction(2) ** e


# ---- float formats -------------------------------------------------------

def float_bits(fmt):
    return 1 + fmt.exp_bits + fmt.man_bits


def exp_all_ones(fmt):
    return 2 ** fmt.exp_bits - 1


def has_inf(fmt):
    return fmt.specials == "ieee"


def has_nan(fmt):
    return fmt.specials != "none"


def has_neg_zero(fmt):
    return fmt.specials != "fnuz"


def emin(fmt):
    """Exponent of the smallest normal: min_normal = 2^emin."""
    return 1 - fmt.bias


def min_normal(fmt):
    return pow2(emin(fmt))


def min_subnormal(fmt):
    if not fmt.subnormals:
        return min_normal(fmt)
    return pow2(emin(fmt) - fmt.man_bits)


def is_nan_code(code, fmt):
    """Whether a code (sign included) is a NaN of the format (§1)."""
    E, M = fmt.exp_bits, fmt.man_bits
    e = (code >> M) & exp_all_ones(fmt)
    f = code & (2 ** M - 1)
    if fmt.specials == "ieee":
        return e == exp_all_ones(fmt) and f != 0
    if fmt.specials == "fn":
        return e == exp_all_ones(fmt) and f == 2 ** M - 1
    if fmt.specials == "fnuz":
        return code == 2 ** (E + M)
    return False


def is_inf_code(code, fmt):
    M = fmt.man_bits
    e = (code >> M) & exp_all_ones(fmt)
    f = code & (2 ** M - 1)
    return fmt.specials == "ieee" and e == exp_all_ones(fmt) and f == 0


def code_magnitude(code, fmt):
    """|value| of a finite code: normal 2^(e-bias)(1 + f/2^M), subnormal 2^(1-bias) f/2^M."""
    M = fmt.man_bits
    e = (code >> M) & exp_all_ones(fmt)
    f = code & (2 ** M - 1)
    if e == 0:
        return pow2(emin(fmt) - M) * f
    return pow2(e - fmt.bias - M) * (2 ** M + f)


def max_code(fmt):
    """The largest positive code that is neither inf nor NaN."""
    top = 2 ** (fmt.exp_bits + fmt.man_bits) - 1
    if fmt.specials == "ieee":
        return (exp_all_ones(fmt) << fmt.man_bits) - 1  # just below +inf
    if fmt.specials == "fn":
        return top - 1  # just below the NaN S.1...1.1...1
    return top


def max_value(fmt):
    return code_magnitude(max_code(fmt), fmt)


# ---- fixed formats -------------------------------------------------------

def fixed_lsb(fmt):
    return pow2(-fmt.frac)


def fixed_raw_range(fmt):
    """(lo, hi): the smallest and largest raw integer."""
    if fmt.signed:
        return -(2 ** (fmt.bits - 1)), 2 ** (fmt.bits - 1) - 1
    return 0, 2 ** fmt.bits - 1


def code_bits(fmt):
    return float_bits(fmt) if is_float(fmt) else fmt.bits

"""Golden model of block-scaled formats (docs/blocks.md): one block at a time, in
int and Fraction. Imports nothing from emul.

A block format is any object with ``element``, ``scale``, ``block`` (k, or None: the whole axis)
and ``tensor_scale`` (bool). Element formats are float or fixed formats as in
:mod:`reference.formats`; a scale format is either a float format or an exponent-only format: an
object with ``exp_bits`` and ``bias`` but no ``specials`` (``Exp`` below, e8m0 = ``Exp(8)``).
Functions take one axis of values (a list): the caller slices the array.
"""

import math
from dataclasses import dataclass
from fractions import Fraction

from . import formats as F
from .arith import dot as arith_dot
from .quantize import decode as decode_code, floor_log2, round_to_code
from .rounding import NEAREST, check_rounding, check_sr, round_integer, round_stochastic
from .values import Exact, parse, public

FP32 = F.Float(8, 23)


@dataclass(frozen=True)
class Exp:
    """Unsigned exponent-only format: code c in [0, 2^E - 2] means 2^(c - bias); 2^E - 1 is NaN."""
    exp_bits: int = 8
    bias: int = None

    def __post_init__(self):
        if self.bias is None:
            object.__setattr__(self, "bias", 2 ** (self.exp_bits - 1) - 1)


def _fraction(v):
    """An int, Fraction or float (numpy's included) as an exact Fraction."""
    return Fraction(v) if isinstance(v, (int, Fraction)) else Fraction(float(v))


def is_exp(fmt):
    return hasattr(fmt, "exp_bits") and not hasattr(fmt, "specials")


# ---- the exponent-only format (e8m0) --------------------------------------

def exp_encode(x, fmt, rounding="nearest_even", overflow=None, *, u=None, sr_bits=32, sr_method="add"):
    """The code of x in an exponent-only format (§9): x <= 0 and NaN -> NaN code; +inf -> NaN, or
    the max under "saturate"; below 2^-bias -> code 0; else 2^e <= x < 2^(e+1) rounds to one of
    the two by the mode (ties and "odd" read the code's last bit), then overflow as a format
    without inf (IEEE 754 §7.4: modes that round down in magnitude give the max, others NaN)."""
    check_rounding(rounding)
    if rounding == "stochastic":
        check_sr(u, sr_bits, sr_method)
    overflow = "ieee" if overflow is None else overflow
    if overflow not in ("ieee", "saturate"):
        raise ValueError(f"overflow={overflow!r}: must be 'ieee' or 'saturate'")
    nan_code = 2 ** fmt.exp_bits - 1
    max_code = nan_code - 1
    v = parse(x)
    if v.kind == "nan" or v.sign == 1 or (v.kind == "num" and v.mag == 0):
        return nan_code
    if v.kind == "inf":
        return max_code if overflow == "saturate" else nan_code
    e = floor_log2(v.mag)
    if e < -fmt.bias:
        return 0
    y = v.mag / F.pow2(e)  # in [1, 2): candidates 1 (code e + bias) and 2 (code e + bias + 1)
    if rounding == "stochastic":
        k = round_stochastic(y, u, sr_bits, sr_method)
    else:
        k = round_integer(y, rounding, lambda c: (e + fmt.bias + c - 1) % 2 == 1)
    code = e + fmt.bias + k - 1
    if code > max_code:
        to_nan = overflow == "ieee" and (rounding in NEAREST or rounding in ("stochastic", "away_from_zero", "up"))
        return nan_code if to_nan else max_code
    return code


def exp_decode(code, fmt):
    if not isinstance(code, int) or not 0 <= code < 2 ** fmt.exp_bits:
        raise ValueError(f"code={code!r}: must be an integer in [0, 2^{fmt.exp_bits})")
    if code == 2 ** fmt.exp_bits - 1:
        return math.nan
    return F.pow2(code - fmt.bias)


# ---- element formats --------------------------------------------------------

def element_max(el):
    if F.is_float(el):
        return F.max_value(el)
    return F.fixed_raw_range(el)[1] * F.fixed_lsb(el)


def element_precision(el):
    """Bits after the leading one of the element format's largest value."""
    if F.is_float(el):
        return el.man_bits
    return F.fixed_raw_range(el)[1].bit_length() - 1


def nan_element_code(el):
    """The canonical positive NaN code, or 0 where the format has none."""
    if not F.is_float(el) or not F.has_nan(el):
        return 0
    M = el.man_bits
    if el.specials == "ieee":
        return (F.exp_all_ones(el) << M) | (1 << (M - 1))
    if el.specials == "fn":
        return 2 ** (el.exp_bits + M) - 1
    return 2 ** (el.exp_bits + M)


def scale_nan_code(sc):
    return 2 ** sc.exp_bits - 1 if is_exp(sc) else nan_element_code(sc)


def ceil_log2(m):
    e = floor_log2(m)
    return e if F.pow2(e) == m else e + 1


def scale_exponent(amax, el, rule):
    """The power-of-two scale exponent of a block with amax > 0 (before clamping)."""
    emax_el = floor_log2(element_max(el))
    if rule == "floor":
        return floor_log2(amax) - emax_el
    if rule == "ceil":
        return ceil_log2(amax) - emax_el
    if rule == "even":  # amax rounded to the element precision, ties away, then floor
        q = F.pow2(floor_log2(amax) - element_precision(el))
        return floor_log2(round_integer(amax / q, "nearest_away") * q) - emax_el
    if rule == "rceil":  # the least e with amax / 2^e <= element max
        return ceil_log2(amax / element_max(el))
    raise ValueError(f"scale_rule={rule!r}")


def element_code(v, el, rounding, u, sr_bits, sr_method):
    return round_to_code(v, el, rounding, "saturate", u, sr_bits, sr_method)


def scaled(v, divisor):
    """The Exact v / divisor (divisor > 0); zeros keep their sign."""
    return Exact("num", v.sign, v.mag / divisor)


# ---- one axis ---------------------------------------------------------------

def tensor_scale(xs, bfmt):
    """s_t = amax over the finite values / (scale max * element max), rounded once to float32
    (nearest even, saturating), at least 2^-149; 1 when that amax is 0."""
    mags = [parse(x).mag for x in xs if parse(x).kind == "num"]
    amax = max(mags, default=Fraction(0))
    if amax == 0:
        return Fraction(1)
    sc_max = element_max(bfmt.scale)
    v = decode_code(round_to_code(parse(amax / (sc_max * element_max(bfmt.element))), FP32, "nearest_even",
                                  "saturate"), FP32)
    return max(Fraction(v), F.pow2(-149))


def te_scales(xs, bfmt):
    """TransformerEngine's (G, s_t): G = fp32(scale max * element max / amax) over the finite
    values (+inf for amax = 0), at most float32's max, 1 where it is 0; s_t = fp32(1 / G)."""
    mags = [parse(x).mag for x in xs if parse(x).kind == "num"]
    amax = max(mags, default=Fraction(0))
    fp32_max = F.max_value(FP32)
    top = element_max(bfmt.scale) * element_max(bfmt.element)
    g = Exact("inf", 0) if amax == 0 else f32(Exact("num", 0, top / amax))
    G = fp32_max if g.kind == "inf" else min(g.mag, fp32_max)  # min(+inf, max) = max
    G = Fraction(1) if G == 0 else G
    return G, f32(Exact("num", 0, 1 / G)).mag


def f32(v):
    """The Exact v rounded once to float32 (nearest even, IEEE overflow), as an Exact."""
    return parse(decode_code(round_to_code(v, FP32, "nearest_even", "ieee"), FP32))


def encode(xs, bfmt, *, rounding="nearest_even", scale_rule="floor", scale_overflow="nan", tail="partial",
           tensor_scale=None, scale_min=0, arithmetic="exact", te_encode_scale=None, u=None, sr_bits=32,
           sr_method="add"):
    """(scale codes, element codes) of one axis of values ``xs`` (u: one SR word per element).
    arithmetic="float32_te" takes TransformerEngine's G as ``te_encode_scale`` and s_t = fp32(1/G)
    as ``tensor_scale`` (see te_scales)."""
    sc = bfmt.scale
    n = len(xs)
    k = bfmt.block if bfmt.block is not None else max(n, 1)
    if tail == "error" and n % k:
        raise ValueError(f"tail='error': length {n} is not a multiple of {k}")
    scales, codes = [], []
    for lo in range(0, n, k):
        block = [parse(x) for x in xs[lo:lo + k]]
        words = [None] * len(block) if u is None else list(u[lo:lo + k])
        special = any(v.kind != "num" for v in block)
        amax = max((v.mag for v in block if v.kind == "num"), default=Fraction(0))
        if is_exp(sc):
            s, c = _pow2_block(block, words, amax, special, bfmt, rounding, scale_rule, scale_overflow, sr_bits,
                               sr_method)
        else:
            s_t = Fraction(1) if not bfmt.tensor_scale else _fraction(tensor_scale)
            s, c = _float_block(block, words, amax, special, bfmt, rounding, s_t, _fraction(scale_min), arithmetic,
                                sr_bits, sr_method, te_encode_scale)
        scales.append(s)
        codes.extend(c)
    return scales, codes


def _pow2_block(block, words, amax, special, bfmt, rounding, rule, scale_overflow, sr_bits, sr_method):
    el, sc = bfmt.element, bfmt.scale
    emin, emax = -sc.bias, 2 ** sc.exp_bits - 2 - sc.bias
    nan_block = special
    e = emin
    if not special and amax > 0:
        e = scale_exponent(amax, el, rule)
        if e < emin:
            e = emin
        elif e > emax:
            if scale_overflow == "saturate":
                e = emax
            else:
                nan_block = True
    if nan_block:
        return scale_nan_code(sc), [nan_element_code(el)] * len(block)
    X = F.pow2(e)
    return e + sc.bias, [element_code(scaled(v, X), el, rounding, w, sr_bits, sr_method)
                         for v, w in zip(block, words)]


def _float_block(block, words, amax, special, bfmt, rounding, s_t, scale_min, arithmetic, sr_bits, sr_method,
                 te_encode_scale=None):
    el, sc = bfmt.element, bfmt.scale
    if special:
        return scale_nan_code(sc), [nan_element_code(el)] * len(block)
    if arithmetic == "exact":
        s_code = round_to_code(Exact("num", 0, amax / (element_max(el) * s_t)), sc, "nearest_even", "saturate")
    else:  # the peers' float32 arithmetic: fp32(fp32(amax / elem_max) / s_t) (TE: * G), then the scale format
        q = f32(Exact("num", 0, amax / element_max(el)))
        if arithmetic == "float32_te":
            q = f32(Exact("num", 0, q.mag * _fraction(te_encode_scale)))
        else:
            q = f32(Exact("num", 0, q.mag / s_t))
        s_code = round_to_code(q, sc, "nearest_even", "saturate")
    S = decode_code(s_code, sc)
    S = Fraction(0) if S == 0 else Fraction(S)
    if S < scale_min:
        s_code = round_to_code(parse(scale_min), sc, "nearest_even", "saturate")
        S = scale_min
    out = []
    for v, w in zip(block, words):
        if S == 0:
            out.append(element_code(Exact("num", v.sign), el, rounding, w, sr_bits, sr_method))
        elif arithmetic == "exact":
            out.append(element_code(scaled(v, S * s_t), el, rounding, w, sr_bits, sr_method))
        else:  # "float32": y = fp32(x * fp32(1 / fp32(S * s_t))); "float32_div": y = fp32(x / fp32(S * s_t))
            d = f32(Exact("num", 0, S * s_t))
            if d.mag == 0:  # the scale product underflows float32: zero elements, as for S = 0
                out.append(element_code(Exact("num", v.sign), el, rounding, w, sr_bits, sr_method))
                continue
            if arithmetic == "float32_div":
                out.append(element_code(f32(Exact("num", v.sign, v.mag / d.mag)), el, rounding, w, sr_bits,
                                        sr_method))
                continue
            recip = f32(Exact("num", 0, 1 / d.mag))
            if recip.kind == "num":
                y = Exact("num", v.sign, v.mag * recip.mag)
            else:  # 1 / d overflowed float32: x * inf
                y = Exact("inf", v.sign) if v.mag else Exact("num", v.sign)
            out.append(element_code(f32(y), el, rounding, w, sr_bits, sr_method))
    return s_code, out


def decode(scales, codes, bfmt, *, tensor_scale=None):
    """Values X * P_i (* s_t) of one axis: Fraction, or float for zeros and NaN. A NaN element gives
    its own NaN (sign kept), else a NaN scale gives its NaN."""
    el, sc = bfmt.element, bfmt.scale
    n = len(codes)
    k = bfmt.block if bfmt.block is not None else max(n, 1)
    if len(scales) != -(-n // k):
        raise ValueError(f"scales: {len(scales)} for {n} codes in blocks of {k}")
    s_t = Fraction(1) if tensor_scale is None else _fraction(tensor_scale)
    out = []
    for i, c in enumerate(codes):
        s = scales[i // k]
        X = exp_decode(s, sc) if is_exp(sc) else decode_code(s, sc)
        P = decode_code(c, el)
        if isinstance(P, float) and math.isnan(P):
            out.append(P)  # the element's NaN, its sign kept (docs/blocks.md)
        elif isinstance(X, float) and math.isnan(X):
            out.append(X)  # else the scale's NaN
        elif isinstance(X, float) and math.isinf(X) or isinstance(P, float) and math.isinf(P):
            out.append(float(X) * float(P))  # an inf code of an ieee format (never encoded): float rules
        else:
            sign = (math.copysign(1.0, X) < 0 if isinstance(X, float) else X < 0) != \
                   (math.copysign(1.0, P) < 0 if isinstance(P, float) else P < 0)
            out.append(public(Exact("num", int(sign), abs(Fraction(X) * Fraction(P) * s_t))))
    return out


def quantize(xs, bfmt, **kwargs):
    scales, codes = encode(xs, bfmt, **kwargs)
    return decode(scales, codes, bfmt, tensor_scale=kwargs.get("tensor_scale") if bfmt.tensor_scale else None)


def block_terms(pa, pb, bfmt_a, bfmt_b, s_ta=None, s_tb=None):
    """The exact terms X_a,j * X_b,j * sum_i P_i Q_i of two encoded axes (pairs (scales, codes))."""
    va = decode(*pa, bfmt_a, tensor_scale=s_ta)
    vb = decode(*pb, bfmt_b, tensor_scale=s_tb)
    n = len(va)
    k = bfmt_a.block if bfmt_a.block is not None else max(n, 1)
    terms = []
    for lo in range(0, n, k):
        pairs = list(zip(va[lo:lo + k], vb[lo:lo + k]))
        if any(isinstance(x, float) and math.isnan(x) for p in pairs for x in p):
            terms.append(math.nan)
        else:
            terms.append(sum((Fraction(x) * Fraction(y) for x, y in pairs), Fraction(0)))
    return terms


def dot(a, b, bfmt_a, bfmt_b=None, *, acc, **kwargs):
    """sum over blocks of the exact block terms, accumulated in acc as reference.arith.dot does
    (one rounding step per block). a, b: raw values, encoded with encode's defaults."""
    bfmt_b = bfmt_a if bfmt_b is None else bfmt_b
    s_ta = tensor_scale(a, bfmt_a) if bfmt_a.tensor_scale else None
    s_tb = tensor_scale(b, bfmt_b) if bfmt_b.tensor_scale else None
    pa = encode(a, bfmt_a, tensor_scale=s_ta)
    pb = encode(b, bfmt_b, tensor_scale=s_tb)
    terms = block_terms(pa, pb, bfmt_a, bfmt_b, s_ta, s_tb)
    return arith_dot(terms, [1] * len(terms), acc, **kwargs)

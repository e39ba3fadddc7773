"""emul.add/sub/mul/div/fma/sqrt: IEEE special cases and zero signs, an independent fp16 model in the
six TestFloat rounding modes, stochastic rounding, wrapping results far out of range, bad input.

The independent IEEE model (``bracket_round``) shares no code with emul: numpy's float16 gives the
two fp16 neighbours of a binary64 approximation of the result, and an exact binary64 residual
(a - c*b for a quotient, a - c*c for a square root, TwoSum for a fused multiply-add; sums and
products of fp16 values are exact in binary64) tells on which side of a neighbour or midpoint c
the exact result lies. Rounding is then a choice between the two neighbours by the mode's rule.
"""

from __future__ import annotations

import math
import zlib
from fractions import Fraction

import numpy as np
import pytest

import emul
import emul.arith as A
import reference

F16 = emul.format("fp16")
TESTFLOAT_MODES = ["nearest_even", "nearest_away", "toward_zero", "down", "up", "odd"]


def bits64(x):
    return np.asarray(x, np.float64).view(np.uint64)


def same_values(got, want):
    """Equal as values, -0.0 vs 0.0 told apart, any NaN equal to any NaN."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    both_nan = np.isnan(got) & np.isnan(want)
    return both_nan | (bits64(got) == bits64(want))


# --- special cases and zero signs, as data ------------------------------------------------------

INF, NAN = math.inf, math.nan
SPECIAL_CASES = [  # op, operands, mode, expected fp16 result
    ("add", (1.0, -1.0), "nearest_even", 0.0),
    ("add", (1.0, -1.0), "up", 0.0),
    ("add", (1.0, -1.0), "toward_zero", 0.0),
    ("add", (1.0, -1.0), "down", -0.0),          # IEEE 754 §6.3: -0 only when rounding down
    ("sub", (2.5, 2.5), "down", -0.0),
    ("add", (-0.0, -0.0), "nearest_even", -0.0),  # x + x keeps x's sign
    ("add", (-0.0, 0.0), "nearest_even", 0.0),
    ("add", (-0.0, 0.0), "down", -0.0),
    ("sub", (-0.0, 0.0), "nearest_even", -0.0),   # x - (-x) keeps x's sign
    ("add", (-2.0**-30, 0.0), "nearest_even", -0.0),  # rounds to zero: keeps the exact value's sign
    ("mul", (-0.0, 3.0), "nearest_even", -0.0),
    ("mul", (-2.0, -0.0), "nearest_even", 0.0),
    ("mul", (-2.0**-20, 2.0**-20), "up", -0.0),
    ("div", (0.0, -3.0), "nearest_even", -0.0),
    ("div", (1.0, 0.0), "nearest_even", INF),
    ("div", (-1.0, 0.0), "nearest_even", -INF),
    ("div", (1.0, -0.0), "toward_zero", -INF),    # an exact infinity: no overflow, so no ±max
    ("div", (3.0, INF), "nearest_even", 0.0),
    ("div", (-3.0, INF), "nearest_even", -0.0),
    ("sqrt", (-0.0,), "nearest_even", -0.0),
    ("sqrt", (INF,), "nearest_even", INF),
    ("fma", (0.0, -1.0, 0.0), "nearest_even", 0.0),   # -0 + +0
    ("fma", (0.0, -1.0, -0.0), "nearest_even", -0.0),
    ("fma", (2.0, 3.0, -6.0), "down", -0.0),
    ("add", (INF, 1.0), "toward_zero", INF),
    ("add", (65504.0, 8.0), "nearest_even", 65504.0),   # below the midpoint 65520
    ("add", (65504.0, 16.0), "nearest_even", INF),      # the midpoint: ties to the even 65536, which overflows
    ("add", (65504.0, 16.0), "nearest_zero", 65504.0),
    ("add", (65504.0, 16.0), "up", INF),
    ("add", (65504.0, 16.0), "toward_zero", 65504.0),
    ("add", (65504.0, 32.0), "nearest_even", INF),       # 65536 overflows
    ("add", (65504.0, 32.0), "toward_zero", 65504.0),     # directed toward zero: ±max
    ("add", (-65504.0, -32.0), "up", -65504.0),
    ("add", (-65504.0, -32.0), "down", -INF),
    ("add", (65504.0, 32.0), "odd", 65504.0),
]


@pytest.mark.parametrize("op,args,mode,want", SPECIAL_CASES)
def test_special_cases_and_zero_signs(op, args, mode, want):
    got = getattr(A, op)(*args, "fp16", mode)
    assert same_values(got, want), (op, args, mode, got, want)


@pytest.mark.parametrize("op,args", [("add", (INF, -INF)), ("sub", (INF, INF)), ("mul", (0.0, INF)),
                                     ("mul", (-INF, 0.0)), ("div", (0.0, 0.0)), ("div", (INF, -INF)),
                                     ("sqrt", (-1.0,)), ("sqrt", (-INF,)), ("fma", (0.0, INF, 1.0)),
                                     ("fma", (INF, 1.0, -INF))])
def test_invalid_operations_give_positive_nan(op, args):
    got = getattr(A, op)(*args, "fp16")
    assert np.isnan(got) and not np.signbit(got)
    code = int(emul.encode(got, "fp16"))
    assert code == 0x7E00  # the canonical quiet NaN


@pytest.mark.parametrize("op,args,sign", [("add", (-NAN, 1.0), 1), ("add", (1.0, -NAN), 1), ("mul", (NAN, -NAN), 0),
                                          ("fma", (1.0, 2.0, -NAN), 1), ("sub", (1.0, -NAN), 1), ("sqrt", (-NAN,), 1),
                                          ("fma", (0.0, INF, -NAN), 1)])
def test_nan_operand_propagates_its_sign(op, args, sign):
    got = getattr(A, op)(*args, "e5m2")
    assert np.isnan(got) and int(np.signbit(got)) == sign
    want = getattr(reference, op)(*args, emul.format("e5m2"))
    assert math.isnan(want) and int(math.copysign(1, want) < 0) == sign


def test_fma_rounds_once():
    a, b = 1.0 + 2.0**-10, 1.0 - 2.0**-10  # a*b = 1 - 2**-20
    assert A.fma(a, b, -1.0, "fp16") == -(2.0**-20)
    assert A.add(A.mul(a, b, "fp16"), -1.0, "fp16") == 0.0


def test_sticky_bit_decides_directed_rounding():
    # 1 + 2**-60: a float64 sum would be exactly 1.0; the exact sum rounds up in mode "up"
    assert A.add(1.0, 2.0**-60, "fp16", "up") == 1.0 + 2.0**-10
    assert A.add(1.0, -(2.0**-60), "fp16", "down") == 1.0 - 2.0**-11
    assert A.add(1.0, -(2.0**-60), "fp16", "toward_zero") == 1.0 - 2.0**-11
    assert A.add(1.0, 2.0**-60, "fp16", "odd") == 1.0 + 2.0**-10
    assert A.add(2.0**60, 1.0, "e5m2", "toward_zero", "saturate") == 57344.0
    third = np.float32(1 / 3)  # the float32 just above 1/3
    assert A.div(1.0, 3.0, "fp32", "up") == third
    assert A.div(1.0, 3.0, "fp32", "down") == np.nextafter(third, np.float32(0))
    assert A.sqrt(2.0, "fp16", "toward_zero") == 1.4140625 and A.sqrt(2.0, "fp16", "up") == 1.4150390625


def test_integer_inputs_are_exact():
    big = np.int64(2**62 + 1)
    assert A.sub(big, np.int64(2**62), "fp32") == 1.0  # int64 -> float64 would lose the 1
    assert A.mul(np.uint64(2**64 - 1), 1, "fp64", "toward_zero") == float(2**64 - 2048)
    assert A.add(np.uint64(2**63), np.int64(-(2**63)), "int8") == 0.0


def test_fixed_point_results_and_saturation():
    assert A.add(1.5, 0.25, "fx<4,2>") == 1.75
    assert A.add(1.5, 0.5, "fx<4,2>") == 1.75                      # saturates (default)
    assert A.add(1.5, 0.5, "fx<4,2>", overflow="wrap") == -2.0
    assert A.add(1.5, 1.0, "fx<4,2>", "down", "wrap_sign_magnitude") == 1.25   # SEMANTICS §8, 2.5
    assert A.mul(0.375, 1.0, "fx<4,2>", "nearest_even") == 0.5
    assert A.div(-1.0, 8.0, "fx<4,2>", "down") == -0.25


@pytest.mark.parametrize("op,args,fmt,mode", [
    ("div", (2.0**200, 3.0), "int12", "nearest_even"),
    ("div", (-(2.0**300), 7.0), "fx<10,3>", "toward_zero"),
    ("sqrt", (2.0**201,), "int12", "nearest_even"),
    ("sqrt", (2.0**401,), "uint9", "up"),
    ("add", (2.0**80, 3.0), "int12", "nearest_even"),
    ("fma", (2.0**600, 2.0**300, -(2.0**-30)), "int8", "up"),
    ("mul", (2.0**500 + 2.0**448, 3.0), "fx<6,-2>", "nearest_even"),
])
@pytest.mark.parametrize("rule", ["wrap", "wrap_sign_magnitude"])
def test_wrapping_far_out_of_range_matches_reference(op, args, fmt, mode, rule):
    fmt = emul.format(fmt)
    if rule == "wrap_sign_magnitude" and not fmt.signed:
        pytest.skip("needs a signed format")
    got = getattr(A, op)(*args, fmt, mode, rule)
    want = getattr(reference, op)(*args, fmt, mode, rule)
    assert Fraction(float(got)) == want


# Roots and quotients far outside a wrapping format's range are redone exactly in Python
# (emul.arith._redo_exact). The root must be scaled to lsb units as sqrt(v) * 2**frac, i.e. the
# radicand by 2**(2*frac); scaling the radicand by 2**frac gave sqrt(2**-frac) times the root
# (issue 14, item 1: sqrt(3 * 2**200) into fx<8,2> with wrap gave 3.75 instead of 7.5). Formats:
# frac positive, zero, negative, above bits, signed and unsigned, 1 to 53 bits.
FAR_FORMATS = ["fx<8,2>", "fx<8,0>", "int16", "fx<8,-3>", "fx<6,9>", "fx<10,13>", "ufx<8,3>", "ufx<5,-2>",
               "uint12", "ufx<12,15>", "fx<1,0>", "fx<20,7>", "fx<53,20>", "ufx<1,-4>"]
FAR_RADICANDS = [3.0 * 2.0**200, 2.0**301, 5.0 * 2.0**151, 2.0**150 * 1.1, 1.7976931348623157e308,  # huge roots
                 7.0 * 2.0**-200, 3.0 * 2.0**-1070, 5e-324, 123.456]                              # tiny, moderate
FAR_RULES = ["wrap", "wrap_sign_magnitude", "saturate", "saturate_zero", "saturate_symmetric"]


def test_sqrt_far_out_of_range_of_a_wrapping_format_issue_example():
    assert A.sqrt(3.0 * 2.0**200, "fx<8,2>", overflow="wrap") == 7.5
    assert A.sqrt(3.0 * 2.0**200, "fx<8,2>", overflow="wrap_sign_magnitude") == 7.5


@pytest.mark.parametrize("fmt", FAR_FORMATS)
def test_sqrt_and_div_far_out_of_range_in_every_fixed_format_match_reference(fmt):
    fmt = emul.format(fmt)
    rules = [r for r in FAR_RULES if fmt.signed or r != "wrap_sign_magnitude"]
    for rule in rules:
        for mode in ("nearest_even", "toward_zero", "up", "down", "odd", "nearest_away"):
            got = A.sqrt(np.array(FAR_RADICANDS), fmt, mode, rule)
            for x, g in zip(FAR_RADICANDS, got):
                assert Fraction(float(g)) == reference.sqrt(x, fmt, mode, rule), (fmt.name, rule, mode, x)
            for a, b in ((2.0**300, 3.0), (-(2.0**300), 3.0), (7.0, -(2.0**-900)), (-1.0, -(3.0 * 2.0**-1074))):
                g = A.div(a, b, fmt, mode, rule)
                assert Fraction(float(g)) == reference.div(a, b, fmt, mode, rule), (fmt.name, rule, mode, a, b)
        for u in (0, 1 << 31, (1 << 32) - 1):
            g = A.sqrt(3.0 * 2.0**200, fmt, "stochastic", rules[0], random_bits=u)
            assert Fraction(float(g)) == reference.sqrt(3.0 * 2.0**200, fmt, "stochastic", rules[0], u=u)


def test_wrapping_far_out_of_range_with_stochastic_rounding():
    fmt = emul.format("int12")
    for op, args in (("div", (2.0**300, 3.0)), ("sqrt", (2.0**301,)), ("sqrt", (3.0 * 2.0**150,))):
        for u in (0, 1 << 20, (1 << 32) - 1, 1234567):
            got = getattr(A, op)(*args, fmt, "stochastic", "wrap", random_bits=u)
            want = getattr(reference, op)(*args, fmt, "stochastic", "wrap", u=u)
            assert Fraction(float(got)) == want, (op, args, u)


# --- stochastic rounding ------------------------------------------------------------------------

def test_sr_word_i_is_element_i_like_quantize():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 5))
    y = rng.standard_normal((4, 5)) * 1e-3
    exact = x + y  # not exact in float64, so compare through the reference instead for a few
    words = rng.integers(0, 2**32, (4, 5), dtype=np.uint64)
    got = A.add(x, y, "bf16", "stochastic", random_bits=words)
    for i in np.ndindex(4, 5):
        want = reference.add(float(x[i]), float(y[i]), emul.format("bf16"), "stochastic", u=int(words[i]))
        assert Fraction(float(got[i])) == want
    # seed= gives the words emul.random.bits(key(seed), shape) >> (32 - r), element i using word i
    r = 13
    by_seed = A.mul(x, 1.0, "e4m3fn", "stochastic", seed=7, sr_bits=r)
    words = np.asarray(emul.random.bits(emul.random.key(7), x.shape)) >> np.uint32(32 - r)
    assert np.array_equal(by_seed, emul.quantize(x, "e4m3fn", "stochastic", random_bits=words, sr_bits=r))
    assert not np.array_equal(exact, got)


def test_sr_is_unbiased_on_average():
    x = np.full(200_000, 1.0)
    y = np.full(200_000, 2.0**-12)  # a quarter of an fp16 ulp above 1
    got = A.add(x, y, "fp16", "stochastic", seed=1)
    assert set(np.unique(got)) == {1.0, 1.0 + 2.0**-10}
    assert abs(np.mean(got == 1.0 + 2.0**-10) - 0.25) < 0.005


# --- shapes, dtypes, bad input ------------------------------------------------------------------

def test_broadcasting_and_dtypes():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.float32([1.5, -2.0, 0.25])
    out = A.mul(a, b, "bf16")
    assert out.dtype == np.float32 and out.shape == (2, 3)
    assert np.array_equal(out, a * b)
    assert A.mul(a, b, "fp64").dtype == np.float64           # fp64 values are not all float32
    assert A.add(a, 1, "bf16").dtype == np.float64           # an integer input
    assert A.add(np.float16(1.0), np.float16(2.0**-11), "fp16") == 1.0
    assert np.isscalar(A.add(1.0, 2.0, "fp16")) and A.add(np.array(1.0), 2.0, "fp16").shape == ()
    assert A.fma(np.ones((2, 1, 3)), np.ones((4, 1)), 0.0, "fp16").shape == (2, 4, 3)
    assert A.sqrt(np.zeros((0, 3)), "fp16").shape == (0, 3)


def test_bad_input():
    with pytest.raises(ValueError, match="broadcast"):
        A.add(np.ones(3), np.ones(4), "fp16")
    with pytest.raises(TypeError, match="dtype"):
        A.add(np.ones(2, complex), 1.0, "fp16")
    with pytest.raises(ValueError, match="NaN"):
        A.add(np.nan, 1.0, "int8")
    with pytest.raises(ValueError, match="NaN"):
        A.sub(INF, INF, "e2m1fn")                 # NaN result, format without NaN
    with pytest.raises(ValueError, match="infinite"):
        A.div(1.0, 0.0, "int8", overflow="wrap")
    assert A.div(1.0, 0.0, "int8") == 127.0        # saturates
    with pytest.raises(ValueError, match="bits <= 53"):
        A.add(1.0, 1.0, "int64")
    with pytest.raises(ValueError, match="only for fixed-point"):
        A.add(1.0, 1.0, "fp16", overflow="wrap")
    with pytest.raises(ValueError, match="stochastic"):
        A.add(1.0, 1.0, "fp16", "stochastic")
    with pytest.raises(ValueError, match="random_bits"):
        A.add(np.ones(3), 1.0, "fp16", "stochastic", random_bits=np.zeros(2, np.uint32))


# --- fp16 in the six TestFloat modes against an independent model ------------------------------

def _f16_neighbours(r):
    """The fp16 values just below and above r (float64 in, float64 out; inf beyond max)."""
    h = r.astype(np.float16)
    with np.errstate(over="ignore"):
        up = np.nextafter(h, np.float16(np.inf)).astype(np.float64)
        down = np.nextafter(h, np.float16(-np.inf)).astype(np.float64)
    return down, up


def bracket_round(v, side, mode):
    """fp16 rounding of an exact value t, given a binary64 approximation v and side(c) = sign(t - c)
    exactly for binary64 c. Independent of emul: numpy float16 supplies the grid."""
    with np.errstate(over="ignore", invalid="ignore"):
        r0 = v.astype(np.float16).astype(np.float64)
    big = 65536.0  # the next grid point above max with an unbounded exponent
    r0 = np.where(np.isinf(r0) & np.isfinite(v), np.sign(v) * big, r0)
    s0 = side(r0)
    down, up = _f16_neighbours(np.clip(r0, -65504.0, 65504.0))
    down = np.where(r0 == big, 65504.0, np.where(r0 == -big, -big, down))
    up = np.where(r0 == -big, -65504.0, np.where(r0 == big, big, up))
    up = np.where(r0 == 65504.0, big, up)
    down = np.where(r0 == -65504.0, -big, down)
    lo = np.where(s0 > 0, r0, down)
    hi = np.where(s0 > 0, up, r0)
    mid = (lo + hi) / 2
    sm = side(mid)
    odd_lo = (np.abs(lo).astype(np.float16).view(np.uint16) & 1).astype(bool) & (np.abs(lo) != big)
    positive = (lo + hi) > 0
    if mode == "nearest_even":
        pick_hi = (sm > 0) | ((sm == 0) & odd_lo)
    elif mode == "nearest_away":
        pick_hi = (sm > 0) | ((sm == 0) & positive)
    elif mode == "toward_zero":
        pick_hi = ~positive
    elif mode == "up":
        pick_hi = np.ones(v.shape, bool)
    elif mode == "down":
        pick_hi = np.zeros(v.shape, bool)
    else:  # odd
        pick_hi = odd_lo == False  # noqa: E712
    out = np.where(s0 == 0, r0, np.where(pick_hi, hi, lo))
    # overflow (IEEE 754 §7.4): beyond max becomes inf, or max for the modes pointing back
    to_max = {"toward_zero": (True, True), "odd": (True, True), "down": (True, False), "up": (False, True)}
    pos_max, neg_max = to_max.get(mode, (False, False))
    out = np.where(out == big, 65504.0 if pos_max else np.inf, out)
    out = np.where(out == -big, -65504.0 if neg_max else -np.inf, out)
    # a result rounded to zero keeps the sign of the exact value (t != 0 here, v has its sign)
    return np.where(out == 0, np.copysign(0.0, v), out)


def _sign(x):
    return np.sign(x).astype(np.int8)


def _f16_operands(n, rng, ties_with=None):
    """fp16 values: uniform over all finite bit patterns (subnormals, zeros, max included)."""
    codes = rng.integers(0, 1 << 16, n).astype(np.uint16)
    codes = np.where((codes & 0x7C00) == 0x7C00, codes & 0x83FF, codes)  # no inf/NaN here
    return codes.view(np.float16).astype(np.float64)


def _tie_partners(a, rng):
    """b such that a + b is an fp16 midpoint or near one: an odd multiple of half a's ulp."""
    e = np.floor(np.log2(np.maximum(np.abs(a), 2.0**-14)))
    half_ulp = 2.0 ** (np.maximum(e, -14) - 11)
    k = rng.integers(-8, 8, a.size) * 2 + 1
    b = (k * half_ulp).astype(np.float16).astype(np.float64)
    return b


def _model(op, a, b, c, mode):
    with np.errstate(all="ignore"):
        if op in ("add", "sub", "mul"):
            t = {"add": a + b, "sub": a - b, "mul": a * b}[op]  # exact in binary64
            out = bracket_round(t, lambda x: _sign(t - x), mode)
            if op != "mul":  # exact zero sums: +0, or -0 in mode down; equal-signed zeros keep the sign
                bb = b if op == "add" else -b
                zero_sign = (np.signbit(a) & np.signbit(bb)) | ((mode == "down") & (np.signbit(a) | np.signbit(bb)))
                out = np.where(t == 0, np.where(zero_sign, -0.0, 0.0), out)
            else:
                out = np.where(t == 0, np.copysign(0.0, t), out)
            return out
        if op == "div":
            q = a / b
            s = np.sign(b)
            out = bracket_round(q, lambda x: _sign((a - x * b) * s), mode)
            return np.where((q == 0) | ~np.isfinite(q), q, out)
        if op == "sqrt":
            r = np.sqrt(a)
            out = bracket_round(r, lambda x: _sign(a - x * x) * (x >= 0) + (x < 0), mode)
            return np.where((a <= 0) | ~np.isfinite(r), r, out)
        # fma: TwoSum(a*b, c) = hi + lo exactly (a*b is exact in binary64)
        p = a * b
        hi = p + c
        bp = hi - p
        lo = (p - (hi - bp)) + (c - bp)
        out = bracket_round(hi, lambda x: np.where(hi != x, _sign(hi - x), _sign(lo)), mode)
        zero_sign = (np.signbit(p) & np.signbit(c)) | ((mode == "down") & (np.signbit(p) | np.signbit(c)))
        return np.where((hi == 0) & (lo == 0), np.where(zero_sign, -0.0, 0.0), out)


def _check_model(op, mode, n, seed):
    rng = np.random.default_rng(seed)
    a = _f16_operands(n, rng)
    b = _f16_operands(n, rng)
    c = _f16_operands(n, rng)
    if op in ("add", "sub"):  # a third of the cases at or next to midpoints
        k = n // 3
        b[:k] = _tie_partners(a[:k], rng)
    if op == "fma":  # products near c's magnitude, so that they cancel or tie
        k = n // 3
        with np.errstate(over="ignore"):
            c[:k] = -(a[:k] * b[:k]).astype(np.float16).astype(np.float64)
    if op == "sqrt":
        a = np.abs(a)
    args = {"sqrt": (a,), "fma": (a, b, c)}.get(op, (a, b))
    got = getattr(A, op)(*args, "fp16", mode)
    want = _model(op, a, b, c, mode)
    ok = same_values(got, want)
    bad = np.flatnonzero(~ok)
    assert bad.size == 0, (op, mode, bad.size, [tuple(x[i] for x in args) for i in bad[:3]], got[bad[:3]], want[bad[:3]])


@pytest.mark.parametrize("mode", TESTFLOAT_MODES)
@pytest.mark.parametrize("op", ["add", "sub", "mul", "div", "sqrt", "fma"])
def test_fp16_testfloat_modes_against_independent_model(op, mode):
    _check_model(op, mode, 100_000, seed=zlib.crc32(f"{op}{mode}".encode()))


@pytest.mark.slow
@pytest.mark.parametrize("mode", TESTFLOAT_MODES)
@pytest.mark.parametrize("op", ["add", "sub", "mul", "div", "sqrt", "fma"])
def test_fp16_testfloat_modes_against_independent_model_large(op, mode):
    for seed in range(10):  # 2 * 10**6 cases per operation and mode
        _check_model(op, mode, 200_000, seed=zlib.crc32(f"{op}{mode}{seed}".encode()))


def test_fp16_nearest_even_against_numpy_float16():
    """numpy's float16 arithmetic (binary32 computation, then one rounding: innocuous double
    rounding since 24 >= 2*11 + 2) is a second, independent RNE oracle."""
    rng = np.random.default_rng(11)
    a = _f16_operands(200_000, rng).astype(np.float16)
    b = _f16_operands(200_000, rng).astype(np.float16)
    with np.errstate(all="ignore"):
        for op, want in (("add", a + b), ("sub", a - b), ("mul", a * b), ("div", a / b)):
            got = getattr(A, op)(a, b, "fp16")
            ok = same_values(got, want.astype(np.float64))
            assert ok.all(), (op, np.flatnonzero(~ok)[:5])
        got = A.sqrt(np.abs(a), "fp16")
        assert same_values(got, np.sqrt(np.abs(a)).astype(np.float64)).all()


def test_model_matches_reference_on_a_sample():
    """The independent model itself agrees with the golden model (a check of the checker)."""
    rng = np.random.default_rng(5)
    for op in ("add", "div", "sqrt", "fma"):
        a, b, c = (_f16_operands(300, rng) for _ in range(3))
        if op == "sqrt":
            a = np.abs(a)
        args = {"sqrt": (a,), "fma": (a, b, c)}.get(op, (a, b))
        for mode in TESTFLOAT_MODES:
            want = _model(op, a, b, c, mode)
            for i in range(300):
                r = getattr(reference, op)(*(float(x[i]) for x in args), F16, mode)
                assert same_values(float(r), want[i]), (op, mode, [float(x[i]) for x in args], r, want[i])


# --- the vectorised kernels (emul/_kernels/fast_arith.py) against the general kernel -------------
# Same operands through both paths (emul.arith._FAST switches the vectorised one off), compared bit
# for bit: every mode, both float overflow rules, SR seeded and with given words, float16/32/64
# operands (float64 ones that are not float32 values go to the general kernel inside the fast
# path), special operands, ties, zero sums, subnormals, the overflow threshold, empty and 0-d.

ALL_MODES = [m.value for m in emul.Rounding]
ARITY = {"add": 2, "sub": 2, "mul": 2, "div": 2, "fma": 3, "sqrt": 1}


def _pattern(x):
    x = np.asarray(x)
    return x.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[x.dtype.itemsize])


def _both(monkeypatch, op, args, fmt, mode, overflow=None, **kw):
    """(fast, general): results, or the error message when a call raises."""
    out = []
    for fast in (True, False):
        monkeypatch.setattr(A, "_FAST", fast)
        try:
            with np.errstate(all="ignore"):
                out.append(getattr(A, op)(*args, fmt, mode, overflow, **kw))
        except ValueError as exc:
            out.append(str(exc))
    return out


def _assert_paths_agree(monkeypatch, op, args, fmt, mode, overflow=None, **kw):
    got, want = _both(monkeypatch, op, args, fmt, mode, overflow, **kw)
    if isinstance(got, str) or isinstance(want, str):
        assert got == want, (op, fmt, mode, overflow, got, want)
        return
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype and got.shape == want.shape
    bad = np.flatnonzero(_pattern(got).reshape(-1) != _pattern(want).reshape(-1))
    if bad.size:
        i = bad[0]
        ops = [np.broadcast_to(a, got.shape).reshape(-1)[i] for a in args]
        raise AssertionError(f"{op} {fmt} {mode} {overflow}: {bad.size} differ, first {ops} -> "
                             f"{got.reshape(-1)[i]!r} vs general {want.reshape(-1)[i]!r}")


def _all_values(fmt_name, dtype):
    """Every value of a small format (NaN and inf included), as dtype."""
    f = emul.format(fmt_name)
    v = np.asarray(emul.decode(np.arange(1 << f.bits, dtype=np.uint64), f), np.float64)
    return v.astype(dtype)


def _pairs(values):
    a, b = np.meshgrid(values, values, indexing="ij")
    return a.reshape(-1), b.reshape(-1)


def _f16_edges(rng, n):
    """fp16 operands: random patterns, and pairs built to hit ties, zero sums and the edges."""
    a = rng.integers(0, 1 << 16, n).astype(np.uint16).view(np.float16)
    b = rng.integers(0, 1 << 16, n).astype(np.uint16).view(np.float16)
    special = np.float16([0.0, -0.0, 1.0, -1.0, 65504.0, -65504.0, 2.0**-24, -(2.0**-24), 2.0**-14,
                          6.1e-5, np.inf, -np.inf, np.nan, 1.0 + 2.0**-10, 2.0**-11, 3.0, 0.75, 16.0, 32.0])
    sa, sb = _pairs(special)
    a = np.concatenate([a, sa, b])     # b paired with -b: exact zero sums
    b = np.concatenate([b, sb, -b])
    return a, b


@pytest.mark.parametrize("op", sorted(ARITY))
def test_fast_path_matches_general_on_every_e4m3fn_pair(monkeypatch, op):
    """Every pair of e4m3fn values (float64 operands) into e4m3fn and bf16: every mode, both
    overflow rules, SR with words and seeded (more formats in the slow test below)."""
    a, b = _pairs(_all_values("e4m3fn", np.float64))
    args = {1: (a,), 2: (a, b), 3: (a, b, b[::-1].copy())}[ARITY[op]]
    for fmt in ("e4m3fn", "bf16"):
        for mode in ALL_MODES:
            for overflow in ("ieee", "saturate"):
                kw = {}
                if mode == "stochastic":
                    kw = dict(random_bits=np.arange(a.size, dtype=np.uint32) % 31, sr_bits=5)
                _assert_paths_agree(monkeypatch, op, args, fmt, mode, overflow, **kw)
        _assert_paths_agree(monkeypatch, op, args, fmt, "stochastic", seed=3, sr_bits=13, sr_method="compare")


@pytest.mark.parametrize("op", ["add", "mul"])
def test_fast_path_float16_operands(monkeypatch, op):
    a, b = _f16_edges(np.random.default_rng(7), 4000)
    for fmt in ("fp16", "e5m2", "e4m3fn"):
        for mode in ALL_MODES:
            kw = dict(seed=2, sr_bits=8) if mode == "stochastic" else {}
            _assert_paths_agree(monkeypatch, op, (a, b), fmt, mode, **kw)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("op", sorted(ARITY))
def test_fast_path_float16_float32_operands_every_op(monkeypatch, op, dtype):
    rng = np.random.default_rng(11)
    a, b = _f16_edges(rng, 20000)
    if dtype == np.float32:  # float32 patterns too: far exponents, float32 subnormals
        w = rng.integers(0, 1 << 32, (2, a.size), dtype=np.uint64).astype(np.uint32).view(np.float32)
        pick = rng.random(a.size) < 0.5
        a = np.where(pick, w[0], a.astype(np.float32))
        b = np.where(pick, w[1], b.astype(np.float32))
    args = {1: (a,), 2: (a, b), 3: (a, b, b[::-1].copy())}[ARITY[op]]
    for fmt in ("fp16", "bf16", "e4m3fn", "e5m2", "e4m3fnuz", "fp32", "e8m3-nosub"):
        for mode in ALL_MODES:
            kw = dict(seed=2, sr_bits=20) if mode == "stochastic" else {}
            for overflow in ("ieee", "saturate"):
                _assert_paths_agree(monkeypatch, op, args, fmt, mode, overflow, **kw)


def test_mixed_float_dtypes_take_one_kernel_dtype(monkeypatch):
    """Operands of mixed float dtypes (a float64 scalar with float32 arrays, float16 with float32)
    are narrowed (an exact scalar) or widened to one dtype: the results are the general kernel's."""
    rng = np.random.default_rng(3)
    a32 = (rng.standard_normal(500) * 4).astype(np.float32)
    a16 = a32.astype(np.float16)
    scalars = [0.5, -0.0, 2.0**-149, 2.0**-24, np.nan, -np.inf, 0.1, 1e-300, 65504.0, 2.0**-1074]
    # (one op and deterministic modes: kernels other tests compile; each new dtype signature of a
    # fast kernel costs ~8 s of CPU on a cold cache)
    for s in scalars:
        for a in (a32, a16):
            _assert_paths_agree(monkeypatch, "add", (a, s), "fp16", "nearest_even")
            _assert_paths_agree(monkeypatch, "add", (s, a), "bf16", "toward_zero")
    _assert_paths_agree(monkeypatch, "add", (a16, a32[::-1].copy()), "bf16", "up")
    # float32 operands with a float64 result are widened: no float32 -> float64 kernel signature
    from emul._kernels import fast_arith

    for sig in fast_arith.add_k.signatures:
        assert not (str(sig[0].dtype) == "uint32" and str(sig[4].dtype) == "uint64"), sig


def test_fast_path_float64_operands_that_are_not_float32_values(monkeypatch):
    """Mixed arrays: float32 values take the vectorised kernel, the others the general one."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal(3000)
    y = x.astype(np.float32).astype(np.float64)
    x[::3] = y[::3]
    x[1::7] = [1e-300, -1e300, 2.0**-140, np.nan, np.inf, 0.0, 5e-324] * (x[1::7].size // 7) + \
        [1e-300] * (x[1::7].size % 7)
    for op in sorted(ARITY):
        args = {1: (np.abs(x),), 2: (x, y[::-1].copy()), 3: (x, y, x[::-1].copy())}[ARITY[op]]
        for mode in ("nearest_even", "toward_zero", "odd"):
            _assert_paths_agree(monkeypatch, op, args, "bf16", mode)
    # a NaN result in a format without NaN: the same error, counting both paths' elements
    got, want = _both(monkeypatch, "add", (np.array([np.nan, 1.1, np.nan]), np.array([1.0, np.nan, 1.0])),
                      "e2m1fn", "nearest_even")
    assert isinstance(got, str) and got == want and got.startswith("3 NaN")


def test_fast_path_zero_sums_overflow_and_subnormals(monkeypatch):
    f16 = np.float16
    cases = [  # (a, b): x + (-x), ±0 + ±0, the overflow threshold, subnormal results
        (f16([1.5, -0.0, 0.0, -0.0, 65504, 65504, 65504, -65504, 2.0**-24, 2.0**-24, 2.0**-14]),
         f16([-1.5, -0.0, -0.0, 0.0, 16, 8, 32, -16, -(2.0**-24), 2.0**-24, -(2.0**-24)]))]
    for a, b in cases:
        for op in ("add", "sub"):
            for fmt in ("fp16", "e5m2", "e4m3fnuz"):
                for mode in ALL_MODES:
                    if mode != "stochastic":
                        _assert_paths_agree(monkeypatch, op, (a, b), fmt, mode)
                        _assert_paths_agree(monkeypatch, op, (a, b), fmt, mode, "saturate")


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_fast_path_empty_and_zero_d(dtype):
    for op in ("add", "mul"):
        assert getattr(A, op)(np.zeros(0, dtype), np.zeros(0, dtype), "fp16").shape == (0,)
        got = getattr(A, op)(np.array(1.5, dtype), np.array(2.0, dtype), "fp16")
        assert isinstance(got, np.ndarray) and got.shape == () and got == {"add": 3.5, "mul": 3.0}[op]
    assert A.add(dtype(1.5), dtype(2.0), "fp16").shape == ()


def test_fast_path_result_does_not_depend_on_thread_count(monkeypatch):
    import numba

    rng = np.random.default_rng(3)
    a, b = _f16_edges(rng, 30000)
    monkeypatch.setattr(A, "PARALLEL_MIN", 64)  # chunks on the thread pool even for this size
    monkeypatch.setattr(A, "_threads_pay", lambda: True)  # (also on a busy machine)
    before = numba.get_num_threads()
    results = []
    try:
        for threads in sorted({1, min(2, numba.config.NUMBA_NUM_THREADS)}):
            numba.set_num_threads(threads)
            with np.errstate(all="ignore"):
                results.append([_pattern(A.add(a, b, "fp16", "toward_zero")),
                                _pattern(A.mul(a, b, "e4m3fn", "stochastic", seed=9, sr_bits=8))])
    finally:
        numba.set_num_threads(before)
    for got in results[1:]:
        for g, w in zip(got, results[0]):
            assert np.array_equal(g, w)

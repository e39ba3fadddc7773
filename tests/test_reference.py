"""The golden model (reference/) against SEMANTICS tables, known format facts and independent oracles."""

import math
import random
import struct
from fractions import Fraction as Fr

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import reference as R

ml_dtypes = pytest.importorskip("ml_dtypes")

FX42 = R.Fixed(4, 2)
UFX42 = R.Fixed(4, 2, signed=False)
E4M3FN = R.Float(4, 3, specials="fn")
E5M2 = R.Float(5, 2)
FP16 = R.Float(5, 10)
FP32 = R.Float(8, 23)
MODES = R.MODES[:-1]  # the deterministic ones
NAN = math.nan
INF = math.inf


def same(a, b):
    """Equal values, telling -0.0 from 0.0 and NaN signs apart."""
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b) and math.copysign(1, a) == math.copysign(1, b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return type(a) is type(b) and a == b


# ---- SEMANTICS §8: ap_fixed tables --------------------------------------------------------

TABLE_ROUNDING_MODES = ["nearest_up", "nearest_zero", "nearest_down", "nearest_away", "nearest_even", "down", "toward_zero"]
TABLE_ROUNDING = [
    (0.125, [0.25, 0, 0, 0.25, 0, 0, 0]),
    (-0.125, [0, 0, -0.25, -0.25, 0, -0.25, 0]),
    (0.375, [0.5, 0.25, 0.25, 0.5, 0.5, 0.25, 0.25]),
    (-0.375, [-0.25, -0.25, -0.5, -0.5, -0.5, -0.5, -0.25]),
    (0.2, [0.25, 0.25, 0.25, 0.25, 0.25, 0, 0]),
    (-0.2, [-0.25, -0.25, -0.25, -0.25, -0.25, -0.25, 0]),
    (1.875, [1.75] * 7),
]


@pytest.mark.parametrize("x, expected", TABLE_ROUNDING)
def test_section8_rounding_table(x, expected):
    got = [R.quantize(x, FX42, mode, "saturate") for mode in TABLE_ROUNDING_MODES]
    assert got == [Fr(e) for e in expected]


# modes the table leaves out, worked by hand: x / lsb = 0.5, -0.5, 0.8, -0.8
@pytest.mark.parametrize("x, up, away, odd", [
    (0.125, 0.25, 0.25, 0.25), (-0.125, 0, -0.25, -0.25),
    (0.2, 0.25, 0.25, 0.25), (-0.2, 0, -0.25, -0.25), (0.3, 0.5, 0.5, 0.25), (1.8, 2.0, 2.0, 1.75),
])
def test_other_modes_on_fx42(x, up, away, odd):
    # 1.8: up/away round to 2.0, then saturate to 1.75
    got = [R.quantize(x, FX42, m) for m in ("up", "away_from_zero", "odd")]
    assert got == [min(Fr(v), Fr(7, 4)) for v in (up, away, odd)]


OVERFLOW_RULES = ["saturate", "saturate_zero", "saturate_symmetric", "wrap", "wrap_sign_magnitude"]
TABLE_OVERFLOW = [
    (2.0, [1.75, 0, 1.75, -2, 1.75]),
    (2.5, [1.75, 0, 1.75, -1.5, 1.25]),
    (3.0, [1.75, 0, 1.75, -1, 0.75]),
    (5.3, [1.75, 0, 1.75, 1.25, -1.5]),
    (-2.0, [-2, -2, -1.75, -2, -2]),
    (-2.5, [-2, 0, -1.75, 1.5, -1.75]),
    (-3.0, [-2, 0, -1.75, 1, -1.25]),
]


@pytest.mark.parametrize("x, expected", TABLE_OVERFLOW)
def test_section8_overflow_table(x, expected):
    got = [R.quantize(x, FX42, "down", rule) for rule in OVERFLOW_RULES]
    assert got == [Fr(e) for e in expected]


@pytest.mark.parametrize("x, rule, expected, code", [
    (1.0, "saturate", 1, 0x4), (3.75, "saturate", 3.75, 0xF), (4.0, "saturate", 3.75, 0xF),
    (-0.25, "saturate", 0, 0), (-100, "saturate", 0, 0),
    (4.0, "saturate_zero", 0, 0), (-0.25, "saturate_zero", 0, 0), (3.5, "saturate_zero", 3.5, 0xE),
    (4.0, "saturate_symmetric", 3.75, 0xF), (-1, "saturate_symmetric", 0, 0),
    (4.25, "wrap", 0.25, 0x1), (-0.25, "wrap", 3.75, 0xF), (-4.0, "wrap", 0, 0),
])
def test_ufx42(x, rule, expected, code):
    assert R.quantize(x, UFX42, "nearest_even", rule) == expected
    assert R.encode(x, UFX42, "nearest_even", rule) == code


def test_fixed_codes_and_ranges():
    assert [R.encode(v, FX42) for v in (-2, -0.25, 0, 0.25, 1.75)] == [0x8, 0xF, 0, 1, 7]
    assert [R.decode(c, FX42) for c in (0x8, 0xF, 0, 7)] == [-2, Fr(-1, 4), 0, Fr(7, 4)]
    assert same(R.quantize(-0.1, FX42), 0.0) and same(R.quantize(-0.0, FX42), 0.0)
    # frac may be negative or exceed bits; encode works for any width
    assert R.quantize(13, R.Fixed(4, -2)) == 12 and R.quantize(100, R.Fixed(4, -2)) == 28
    assert R.quantize(Fr(1, 3), R.Fixed(4, 6)) == Fr(7, 64)  # saturates at 7/64
    assert R.encode(-1, R.Fixed(100, 0)) == 2 ** 100 - 1
    assert R.encode(2 ** 70 + Fr(1, 2), R.Fixed(80, 0, signed=False)) == 2 ** 70  # tie to even
    # infinities take the saturate-family rule
    assert [R.quantize(v, FX42, overflow=o) for v in (INF, -INF) for o in ("saturate", "saturate_zero", "saturate_symmetric")] == \
        [Fr(7, 4), 0, Fr(7, 4), -2, 0, Fr(-7, 4)]
    assert R.quantize(-INF, UFX42) == 0 and R.quantize(INF, UFX42) == Fr(15, 4)


# ---- known format facts -----------------------------------------------------------------

def test_ocp_fp8_facts():
    assert R.quantize(448, E4M3FN) == 448 and R.encode(448, E4M3FN) == 0x7E
    assert R.quantize(464, E4M3FN) == 448          # tie between 448 (even) and 480: to even
    assert R.encode(465, E4M3FN) == 0x7F and R.encode(-465, E4M3FN) == 0xFF  # no inf: NaN
    assert R.quantize(465, E4M3FN, overflow="saturate") == 448
    assert R.encode(INF, E4M3FN) == 0x7F and R.encode(-INF, E4M3FN, overflow="saturate") == 0xFE
    assert R.encode(NAN, E4M3FN) == 0x7F and R.encode(-NAN, E4M3FN) == 0xFF
    assert R.quantize(2.0 ** -9, E4M3FN) == Fr(1, 512) and R.encode(2.0 ** -9, E4M3FN) == 0x01
    assert same(R.quantize(2.0 ** -10, E4M3FN), 0.0)       # tie with 0: to even
    assert same(R.quantize(-2.0 ** -10, E4M3FN), -0.0)
    assert R.quantize(57344, E5M2) == 57344 and R.encode(57344, E5M2) == 0x7B
    assert R.quantize(61439, E5M2) == 57344
    assert same(R.quantize(61440, E5M2), INF) and R.encode(61440, E5M2) == 0x7C
    assert R.encode(NAN, E5M2) == 0x7E and R.encode(-NAN, E5M2) == 0xFE
    assert R.encode(NAN, FP16) == 0x7E00 and R.encode(-NAN, FP16) == 0xFE00
    assert R.encode(-INF, FP16) == 0xFC00 and R.encode(-0.0, FP16) == 0x8000
    fnuz = R.Float(4, 3, specials="fnuz")
    assert fnuz.bias == 8 and R.quantize(240, fnuz) == 240 and R.quantize(1e9, fnuz, overflow="saturate") == 240
    assert R.encode(NAN, fnuz) == 0x80 and R.encode(-NAN, fnuz) == 0x80 and R.encode(INF, fnuz) == 0x80
    assert R.encode(-0.0, fnuz) == 0 and R.encode(-1e-9, fnuz) == 0 and same(R.decode(0, fnuz), 0.0)
    assert R.quantize(15.5, R.Float(3, 4)) == Fr(31, 2) and same(R.quantize(16, R.Float(3, 4)), INF)
    assert R.quantize(240, R.Float(4, 3)) == 240 and same(R.quantize(248, R.Float(4, 3)), INF)
    e2m1 = R.Float(2, 1, specials="none")
    assert [R.decode(c, e2m1) for c in range(8)] == [0, Fr(1, 2), 1, Fr(3, 2), 2, 3, 4, 6]
    assert R.quantize(INF, e2m1) == 6 and R.quantize(-100, e2m1) == -6 and R.quantize(5, e2m1) == 4


@pytest.mark.parametrize("rounding, pos, neg", [
    ("nearest_even", INF, -INF), ("nearest_away", INF, -INF), ("nearest_zero", INF, -INF),
    ("nearest_up", INF, -INF), ("nearest_down", INF, -INF), ("stochastic", INF, -INF),
    ("away_from_zero", INF, -INF), ("up", INF, -65504), ("down", 65504, -INF),
    ("toward_zero", 65504, -65504), ("odd", 65504, -65504),
])
def test_ieee_7_4_overflow(rounding, pos, neg):
    big = 65520  # the fp16 overflow threshold: rounds to 65536 in the nearest modes
    u = 2 ** 32 - 1 if rounding == "stochastic" else None
    assert same(R.quantize(70000, FP16, rounding, u=u), pos if pos == INF else Fr(pos))
    assert same(R.quantize(-70000, FP16, rounding, u=u), neg if neg == -INF else Fr(neg))
    assert R.quantize(big - 1, FP16, "nearest_even") == 65504
    assert R.quantize(70000, FP16, rounding, "saturate", u=u) == 65504
    assert same(R.quantize(INF, FP16, rounding, u=u), INF)  # an infinite input stays infinite


def test_specials_table():
    # (format, input, overflow) -> code
    fn = E4M3FN
    none = R.Float(3, 2, specials="none")
    cases = [
        (E5M2, INF, "ieee", 0x7C), (E5M2, INF, "saturate", 0x7B), (E5M2, -INF, "saturate", 0xFB),
        (E5M2, -NAN, "saturate", 0xFE), (fn, -INF, "ieee", 0xFF), (fn, INF, "saturate", 0x7E),
        (none, INF, "ieee", 0x1F), (none, -INF, "saturate", 0x3F), (none, 1e6, "ieee", 0x1F),
        (FP32, NAN, "ieee", 0x7FC00000),
    ]
    for fmt, x, ov, code in cases:
        assert R.encode(x, fmt, overflow=ov) == code, (fmt, x, ov)


def test_errors():
    none = R.Float(2, 1, specials="none")
    bad = [
        lambda: R.encode(NAN, none), lambda: R.encode(NAN, FX42), lambda: R.encode(INF, FX42, overflow="wrap"),
        lambda: R.encode(INF, FX42, overflow="wrap_sign_magnitude"), lambda: R.encode(1, E5M2, overflow="wrap"),
        lambda: R.encode(1, E5M2, overflow="saturate_zero"), lambda: R.encode(1, FX42, overflow="ieee"),
        lambda: R.encode(1, UFX42, overflow="wrap_sign_magnitude"), lambda: R.encode(1, E5M2, "stochastic"),
        lambda: R.encode(1, E5M2, "stochastic", u=2 ** 32), lambda: R.encode(1, E5M2, "stochastic", u=-1),
        lambda: R.encode(1, E5M2, "stochastic", u=8, sr_bits=3), lambda: R.encode(1, E5M2, "stochastic", u=0, sr_bits=33),
        lambda: R.encode(1, E5M2, "stochastic", u=0, sr_bits=0), lambda: R.encode(1, E5M2, "stochastic", u=0, sr_method="x"),
        lambda: R.encode(1, E5M2, "nearest"), lambda: R.decode(256, E5M2), lambda: R.decode(-1, E5M2),
        lambda: R.decode(16, FX42), lambda: R.decode(1, R.Float(5, 2, subnormals=False)),
        lambda: R.Float(1, 2), lambda: R.Float(3, 0), lambda: R.Float(3, 2, specials="x"),
    ]
    for f in bad:
        with pytest.raises(ValueError):
            f()
    with pytest.raises(TypeError):
        R.encode("1", E5M2)


def test_zero_signs():
    tiny = 2.0 ** -30
    assert same(R.quantize(-tiny, E5M2), -0.0) and R.encode(-tiny, E5M2) == 0x80
    assert same(R.quantize(-tiny, E5M2, "up"), -0.0)          # rounds toward +inf, keeps the sign
    assert same(R.quantize(tiny, E5M2, "down"), 0.0)
    assert R.quantize(-tiny, E5M2, "down") == Fr(-1, 2 ** 16)
    assert same(R.quantize(-tiny, E5M2, "stochastic", u=0), -0.0)
    assert same(R.quantize(-0.0, E5M2, "up"), -0.0) and same(R.quantize(0, E5M2), 0.0)
    assert same(R.quantize(-tiny, R.Float(5, 2, specials="fnuz")), 0.0)


def test_no_subnormals_grid():
    fmt = R.Float(5, 2, subnormals=False)   # min_normal 2^-14; grid {0, 2^-14} below it
    mn = Fr(1, 2 ** 14)
    assert same(R.quantize(mn / 2, fmt), 0.0)                  # tie: 0 counts as even
    assert R.quantize(mn / 2, fmt, "nearest_away") == mn
    assert same(R.quantize(-mn / 2, fmt, "nearest_up"), -0.0)
    assert R.quantize(mn * Fr(3, 4), fmt) == mn
    assert R.quantize(mn / 1000, fmt, "odd") == mn and R.quantize(mn / 1000, fmt, "up") == mn
    assert same(R.quantize(mn / 1000, fmt, "toward_zero"), 0.0)
    assert R.quantize(mn * Fr(5, 4), fmt) == mn * Fr(5, 4)     # normal spacing from min_normal up
    assert R.quantize(mn * Fr(9, 8), fmt) == mn
    # SR measures f on the grid {0, min_normal}: x = min_normal / 4 -> t = 2^r / 4
    ups = sum(R.quantize(mn / 4, fmt, "stochastic", u=u, sr_bits=4) == mn for u in range(16))
    assert ups == 4


# ---- oracles: Python float32, numpy float16, ml_dtypes -----------------------------------

def random_doubles(n, lo_exp, hi_exp, seed):
    """Doubles with random sign, exponent in [lo_exp, hi_exp] and random 52-bit mantissa, plus halfway-ish cases."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        m = rng.getrandbits(52)
        if rng.random() < 0.3:   # force long runs of zeros or ones below the target precision: ties and near-ties
            m = (m >> 40 << 40) | rng.choice([0, 1 << 39, (1 << 39) - 1, (1 << 39) + 1, (1 << 40) - 1])
        x = math.ldexp(1 + m / 2 ** 52, rng.randint(lo_exp, hi_exp))
        out.append(-x if rng.random() < 0.5 else x)
    return out


def test_float64_to_float32_matches_python():
    for x in random_doubles(3000, -155, 130, seed=1) + [2.0 ** -149 * 0.5, 2.0 ** -150 * 1.5, 3.4028235677973366e38]:
        try:
            expected = struct.unpack("<I", struct.pack("<f", x))[0]
        except OverflowError:
            expected = 0x7F800000 | (0x80000000 if x < 0 else 0)
        assert R.encode(x, FP32) == expected, x


def test_float64_to_float16_matches_numpy():
    xs = random_doubles(3000, -28, 17, seed=2)
    with np.errstate(over="ignore"):
        expected = np.array(xs, np.float64).astype(np.float16).view(np.uint16)
    for x, e in zip(xs, expected):
        assert R.encode(x, FP16) == int(e), x


ML_FORMATS = [
    ("float8_e4m3fn", R.Float(4, 3, specials="fn")),
    ("float8_e5m2", R.Float(5, 2)),
    ("float8_e4m3fnuz", R.Float(4, 3, specials="fnuz")),
    ("float8_e5m2fnuz", R.Float(5, 2, specials="fnuz")),
    ("float8_e4m3b11fnuz", R.Float(4, 3, bias=11, specials="fnuz")),
    ("float8_e3m4", R.Float(3, 4)),
    ("float8_e4m3", R.Float(4, 3)),
    ("float4_e2m1fn", R.Float(2, 1, specials="none")),
    ("float6_e2m3fn", R.Float(2, 3, specials="none")),
    ("float6_e3m2fn", R.Float(3, 2, specials="none")),
    ("bfloat16", R.Float(8, 7)),
]


def float32_samples(fmt, n, seed):
    """float32 values spread over the format's range (and a little beyond), plus random bit patterns."""
    rng = random.Random(seed)
    lo = 1 - fmt.bias - fmt.man_bits - 3
    hi = 2 ** fmt.exp_bits - fmt.bias + 1
    xs = []
    for i in range(n):
        if i % 8 == 0:
            bits = rng.getrandbits(32)
        else:
            e = max(-126, min(127, rng.randint(lo, hi))) + 127
            bits = (rng.getrandbits(1) << 31) | (e << 23) | rng.getrandbits(23)
            if i % 3 == 0:   # ties and near-ties at the target precision
                keep = 23 - fmt.man_bits
                bits = (bits >> keep << keep) | rng.choice([1 << (keep - 1), (1 << (keep - 1)) + 1, (1 << (keep - 1)) - 1])
        xs.append(bits)
    return np.array(xs, np.uint32).view(np.float32)


@pytest.mark.parametrize("name, fmt", ML_FORMATS, ids=[n for n, _ in ML_FORMATS])
def test_float32_casts_match_ml_dtypes(name, fmt):
    xs = float32_samples(fmt, 2500, seed=sum(map(ord, name)))
    xs = np.concatenate([xs, np.array([np.inf, -np.inf, np.nan, -np.nan, 0.0, -0.0], np.float32)])
    if fmt.specials == "none":
        xs = xs[~np.isnan(xs)]            # ml_dtypes turns NaN into 0; SEMANTICS makes it an error
    with np.errstate(all="ignore"):
        codes = xs.astype(getattr(ml_dtypes, name)).view(np.uint8 if fmt.exp_bits + fmt.man_bits < 8 else np.uint16)
    for x, c in zip(xs, codes):
        assert R.encode(float(x), fmt) == int(c), (name, float(x), hex(int(c)))


# ---- decode / encode round trips on every code -------------------------------------------

SMALL_FLOATS = [
    R.Float(2, 1), R.Float(3, 2), R.Float(4, 3), R.Float(5, 2), R.Float(4, 3, specials="fn"),
    R.Float(4, 3, specials="fnuz"), R.Float(5, 2, specials="fnuz"), R.Float(2, 1, specials="none"),
    R.Float(3, 2, specials="none"), R.Float(2, 3, specials="none"), R.Float(4, 3, subnormals=False),
    R.Float(3, 2, specials="fn", subnormals=False), R.Float(3, 0, specials="fn"), R.Float(1, 2, specials="none"),
    R.Float(4, 3, bias=11, specials="fnuz"), R.Float(3, 4, bias=-2),
]
SMALL_FIXED = [R.Fixed(4, 2), R.Fixed(4, 2, signed=False), R.Fixed(1, 0), R.Fixed(1, 0, signed=False),
               R.Fixed(5, -3), R.Fixed(3, 7)]


@pytest.mark.parametrize("fmt", SMALL_FLOATS + SMALL_FIXED, ids=repr)
def test_decode_encode_identity_on_all_codes(fmt):
    nbits = 1 + fmt.exp_bits + fmt.man_bits if hasattr(fmt, "exp_bits") else fmt.bits
    for code in range(2 ** nbits):
        try:
            v = R.decode(code, fmt)
        except ValueError:
            assert not fmt.subnormals and (code >> fmt.man_bits) & (2 ** fmt.exp_bits - 1) == 0
            continue
        if isinstance(v, float) and math.isnan(v):
            assert R.encode(v, fmt) == R.encode(math.copysign(NAN, v), fmt)
            continue
        for mode in R.MODES:
            assert R.encode(v, fmt, mode, u=12345) == code, (code, v, mode)
        assert same(R.quantize(v, fmt), v)


def test_nan_codes_decode():
    assert math.isnan(R.decode(0x7D, E5M2)) and R.encode(R.decode(0x7D, E5M2), E5M2) == 0x7E
    assert R.encode(R.decode(0xFF, E5M2), E5M2) == 0xFE
    assert same(R.decode(0xFC, E5M2), -INF)


# ---- rounding-mode relationships -----------------------------------------------------------

FORMATS_FOR_PROPS = [E5M2, E4M3FN, R.Float(4, 3, subnormals=False), R.Float(3, 2, specials="none"),
                     R.Float(5, 2, specials="fnuz"), FX42, UFX42, R.Fixed(6, 3)]
fractions = st.builds(lambda n, d: Fr(n, d), st.integers(-2 ** 20, 2 ** 20), st.integers(1, 2 ** 14))


def as_fraction(v):
    """A finite value as a Fraction (zeros of either sign -> 0)."""
    return Fr(v)


def limits(fmt):
    """(lowest, highest) finite value of a format."""
    if hasattr(fmt, "exp_bits"):
        biggest = R.quantize(10 ** 9, fmt, overflow="saturate")
        return -biggest, biggest
    if fmt.signed:
        return R.decode(2 ** (fmt.bits - 1), fmt), R.decode(2 ** (fmt.bits - 1) - 1, fmt)
    return 0, R.decode(2 ** fmt.bits - 1, fmt)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(FORMATS_FOR_PROPS), fractions)
def test_directed_mode_relations(fmt, x):
    lowest, highest = limits(fmt)
    if not lowest <= x <= highest:
        return
    v = {m: as_fraction(R.quantize(x, fmt, m)) for m in MODES}
    assert v["down"] <= x <= v["up"]
    if v["down"] == x:
        assert all(v[m] == x for m in MODES)
        return
    assert v["down"] < x < v["up"]
    assert {v["toward_zero"], v["away_from_zero"]} == {v["down"], v["up"]}
    assert abs(v["toward_zero"]) < abs(v["away_from_zero"])
    for m in ("nearest_even", "nearest_away", "nearest_zero", "nearest_up", "nearest_down"):
        other = v["down"] if v[m] == v["up"] else v["up"]
        assert v[m] in (v["down"], v["up"]) and abs(v[m] - x) <= abs(other - x)
    is_float = hasattr(fmt, "exp_bits")
    below_min_normal = is_float and not fmt.subnormals and abs(x) < Fr(2) ** (1 - fmt.bias)
    if not below_min_normal:   # without subnormals, odd gives min_normal (an even code) below it
        assert R.encode(x, fmt, "odd") & 1 == 1
    if is_float:               # floats round the magnitude: mirror symmetry
        assert as_fraction(R.quantize(-x, fmt, "down")) == -v["up"]
        assert as_fraction(R.quantize(-x, fmt, "nearest_up")) == -v["nearest_down"]


# ---- stochastic rounding ---------------------------------------------------------------------

def sr_expectation(x, fmt, r, method):
    total = sum(as_fraction(R.quantize(x, fmt, "stochastic", "saturate", u=u, sr_bits=r, sr_method=method))
                for u in range(2 ** r))
    return total / 2 ** r


@settings(max_examples=80, deadline=None)
@given(st.sampled_from([E5M2, R.Float(4, 3, subnormals=False), FX42, UFX42, R.Fixed(8, 3)]),
       st.integers(1, 6), st.sampled_from(["add", "compare"]), st.integers(-2 ** 12, 2 ** 12), st.integers(1, 2 ** 9))
def test_sr_expectation(fmt, r, method, n, d):
    x = Fr(n, d) / (64 if hasattr(fmt, "exp_bits") else 1)
    lowest, highest = limits(fmt)
    if not lowest <= x <= highest:
        return     # saturation is not unbiased
    lo_v, hi_v = as_fraction(R.quantize(x, fmt, "down")), as_fraction(R.quantize(x, fmt, "up"))
    e = sr_expectation(x, fmt, r, method)
    if lo_v == hi_v:
        assert e == x
        return
    ulp = hi_v - lo_v
    f = (x - lo_v) / ulp
    if (f * 2 ** r).denominator == 1:
        assert e == x
    else:
        assert abs(e - x) < ulp / 2 ** r


def test_sr_add_and_compare_words():
    # x = 1 + 5/16 ulp on a grid of 1 (fixed point, lsb 1), r = 4: t = 5
    fmt = R.Fixed(8, 0)
    x = Fr(21, 16)
    add = [int(R.quantize(x, fmt, "stochastic", u=u, sr_bits=4)) for u in range(16)]
    cmp = [int(R.quantize(x, fmt, "stochastic", u=u, sr_bits=4, sr_method="compare")) for u in range(16)]
    assert add == [1] * 11 + [2] * 5          # t + u >= 16 iff u >= 11
    assert cmp == [2] * 5 + [1] * 11          # u < t
    # fixed point measures f from below for negatives: -21/16 = -2 + 11/16, t = 11
    neg = [int(R.quantize(-x, fmt, "stochastic", u=u, sr_bits=4)) for u in range(16)]
    assert neg == [-2] * 5 + [-1] * 11
    # floats round the magnitude: -1.3125 in e5m2-like fine grid keeps the sign, f from |x|
    flt = R.Float(5, 10)
    got = {R.quantize(-1 - Fr(5, 16) / 1024, flt, "stochastic", u=u, sr_bits=4) for u in (10, 11)}
    assert got == {-1, -(1 + Fr(1, 1024))}
    # overflow is decided on the SR-rounded value
    assert same(R.quantize(57344 + 8000, E5M2, "stochastic", u=2 ** 32 - 1), INF)
    assert R.quantize(57344 + 8000, E5M2, "stochastic", u=0) == 57344


# ---- oracle: gfloat's scalar round_float (float64 inputs) -------------------------------------

gfloat = pytest.importorskip("gfloat")

GFLOAT_MODES = {"nearest_even": "TiesToEven", "nearest_away": "TiesToAway", "toward_zero": "TowardZero",
                "up": "TowardPositive", "down": "TowardNegative"}
GFLOAT_FORMATS = [R.Float(4, 3, specials="fn"), R.Float(5, 2), R.Float(4, 3, specials="fnuz"), R.Float(3, 4),
                  R.Float(2, 1, specials="none"), R.Float(3, 2, specials="none"), R.Float(5, 10),
                  R.Float(3, 0, specials="fn"), R.Float(4, 0, specials="none"), R.Float(3, 1, bias=5, specials="fnuz")]


def gfloat_format(fmt):
    return gfloat.FormatInfo(
        "f", 1 + fmt.exp_bits + fmt.man_bits, fmt.man_bits + 1, bias=fmt.bias, is_signed=True,
        domain=gfloat.Domain.Extended if fmt.specials == "ieee" else gfloat.Domain.Finite,
        has_nz=fmt.specials != "fnuz", num_high_nans={"ieee": 2 ** fmt.man_bits - 1, "fn": 1}.get(fmt.specials, 0),
        has_subnormals=True, is_twos_complement=False)


def same_as_float(got, expected):
    """A reference value against a float oracle's (NaN signs not compared)."""
    expected = float(expected)
    if math.isnan(expected):
        return isinstance(got, float) and math.isnan(got)
    return same(got, expected) if expected == 0 or math.isinf(expected) else got == Fr(expected)


@pytest.mark.parametrize("fmt", GFLOAT_FORMATS, ids=repr)
def test_rounding_matches_gfloat(fmt):
    gi = gfloat_format(fmt)
    lo = 1 - fmt.bias - fmt.man_bits - 2
    hi = 2 ** fmt.exp_bits - fmt.bias + 1
    rng = random.Random(7)
    for x in random_doubles(300, lo, hi, seed=3) + [1.5 * 2.0 ** e for e in range(lo, hi)]:
        for mode, g in GFLOAT_MODES.items():
            sat = fmt.specials == "none"
            expected = gfloat.round_float(gi, x, gfloat.RoundMode[g], sat=sat)
            assert same_as_float(R.quantize(x, fmt, mode), expected), (x, mode)
        r = rng.randint(1, 8)
        u = rng.randrange(2 ** r)
        expected = gfloat.round_float(gi, x, gfloat.RoundMode.StochasticFastest, sat=True, srbits=u, srnumbits=r)
        assert same_as_float(R.quantize(x, fmt, "stochastic", "saturate", u=u, sr_bits=r), expected), (x, u, r)


def test_no_mantissa_ties_follow_the_exponent_lsb():
    fmt = R.Float(3, 0, specials="none")          # values 2^(e-3); codes 1..7 have exponent fields 1..7
    assert R.encode(1, fmt) == 3 and R.encode(2, fmt) == 4
    assert R.quantize(1.5, fmt) == 2 and R.quantize(3, fmt) == 2   # to the even exponent field
    assert R.quantize(1.5, fmt, "odd") == 1 and R.quantize(3, fmt, "odd") == 4
    assert same(R.quantize(0.125, fmt), 0.0) and R.quantize(0.125, fmt, "odd") == Fr(1, 4)


def test_numpy_scalar_inputs_are_exact():
    assert R.quantize(np.float32(1.1), FP32) == Fr(float(np.float32(1.1)))
    assert same(R.quantize(np.float16(-0.0), E5M2), -0.0)
    assert R.encode(np.float32(-np.nan), E5M2) == 0xFE and R.encode(np.float64(np.inf), E5M2) == 0x7C
    assert R.encode(np.uint64(2 ** 64 - 1), R.Fixed(64, 0, signed=False)) == 2 ** 64 - 1
    assert R.encode(np.int64(-3), FX42) == 0x8                      # saturates to -2
    assert R.quantize(1.3, R.Fixed(8, 0), "stochastic", u=np.uint32(2 ** 32 - 1)) == 2   # no uint32 overflow
    assert R.decode(np.uint8(0x7E), E4M3FN) == 448

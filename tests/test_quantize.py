"""quantize / encode / decode: oracles, the ap_fixed tables, edge cases, SR and bad input."""

from fractions import Fraction

import numpy as np
import pytest

import emul
from emul import decode, encode, quantize

from conftest import stratified_f32

# --- ml_dtypes: identical codes on a stratified sample of all float32 bit patterns --------------

ML_TYPES = [  # emul name, ml_dtypes type, has NaN
    ("e4m3fn", "float8_e4m3fn", True), ("e4m3fnuz", "float8_e4m3fnuz", True), ("e5m2", "float8_e5m2", True),
    ("e5m2fnuz", "float8_e5m2fnuz", True), ("e3m4", "float8_e3m4", True), ("e4m3", "float8_e4m3", True),
    ("e4m3b11fnuz", "float8_e4m3b11fnuz", True), ("e2m3fn", "float6_e2m3fn", False),
    ("e3m2fn", "float6_e3m2fn", False), ("e2m1fn", "float4_e2m1fn", False), ("bf16", "bfloat16", True),
    ("fp16", None, True),
]


def _oracle_codes(ml_dtypes, dtype_name, x):
    if dtype_name is None:
        with np.errstate(over="ignore"):
            return x.astype(np.float16).view(np.uint16)
    t = getattr(ml_dtypes, dtype_name)
    codes = x.astype(t).view(np.uint8 if np.dtype(t).itemsize == 1 else np.uint16)
    bits = emul.format(dtype_name.split("_")[-1] if dtype_name != "bfloat16" else "bf16").bits
    return codes & np.array((1 << bits) - 1, codes.dtype)  # float6/float4 are stored in a byte


def _compare(ml_dtypes, name, dtype_name, has_nan, x):
    nan = np.isnan(x)
    if has_nan:  # NaN becomes the canonical quiet NaN with the input's sign (numpy's float16 keeps payloads)
        fmt = emul.format(name)
        got = encode(x[nan], name).astype(np.uint64)
        canonical = decode(got, fmt)
        assert np.isnan(canonical).all()
        if fmt.specials != "fnuz":
            np.testing.assert_array_equal(got >> np.uint64(fmt.bits - 1), np.signbit(x[nan]))
        assert np.unique(got & np.uint64((1 << (fmt.bits - 1)) - 1)).size <= 1
    x = x[~nan]
    got = encode(x, name)
    want = _oracle_codes(ml_dtypes, dtype_name, x)
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, (f"{name}: {bad.size} mismatches, e.g. x={x[bad[:5]]!r} "
                           f"emul={got[bad[:5]]} oracle={want[bad[:5]]}")


@pytest.mark.parametrize("name,dtype_name,has_nan", ML_TYPES)
def test_ml_dtypes_sampled(ml_dtypes, name, dtype_name, has_nan):
    _compare(ml_dtypes, name, dtype_name, has_nan, stratified_f32(24, seed=hash(name) % 1000))


@pytest.mark.parametrize("name,dtype_name,has_nan", [t for t in ML_TYPES if t[0] != "bf16"])
def test_ml_dtypes_float64_inputs(ml_dtypes, name, dtype_name, has_nan):
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.standard_normal(1 << 16) * s for s in (1e-6, 1e-3, 1, 10, 1e3, 1e5)])
    # ml_dtypes casts float64 to these types with one rounding, so the codes must agree exactly.
    # Not bf16: ml_dtypes rounds float64 -> float32 -> bfloat16 (double rounding; see
    # test_bf16_from_float64_rounds_once).
    if dtype_name is None:
        with np.errstate(over="ignore"):
            want = x.astype(np.float16).view(np.uint16)
    else:
        t = getattr(ml_dtypes, dtype_name)
        want = x.astype(t).view(np.uint8 if np.dtype(t).itemsize == 1 else np.uint16)
        want &= np.array((1 << emul.format(name).bits) - 1, want.dtype)
    np.testing.assert_array_equal(encode(x, name), want)


@pytest.mark.exhaustive
@pytest.mark.parametrize("name,dtype_name,has_nan", ML_TYPES)
def test_ml_dtypes_exhaustive(ml_dtypes, name, dtype_name, has_nan):
    step = 1 << 26
    for start in range(0, 1 << 32, step):
        x = np.arange(start, start + step, dtype=np.uint64).astype(np.uint32).view(np.float32)
        _compare(ml_dtypes, name, dtype_name, has_nan, x)


def test_bf16_from_float64_rounds_once(ml_dtypes):
    # 0.7480468529370716 lies just below the midpoint 0.748046875 of bf16 neighbours 0.74609375 and
    # 0.75; float32 rounds it onto the midpoint, and ml_dtypes' float64 -> bf16 then ties to even (0.75).
    x = 0.7480468529370716
    assert float(x.__class__(np.float64(x).astype(ml_dtypes.bfloat16))) == 0.75
    assert quantize(x, "bf16") == 0.74609375


def test_ocp_fp8_facts():
    assert list(encode([448, 464, 465, 480, -np.inf, np.inf, np.nan, -np.nan], "e4m3fn")) == \
        [0x7E, 0x7E, 0x7F, 0x7F, 0xFF, 0x7F, 0x7F, 0xFF]
    assert list(encode([57344, 61439, 61440, 1e9, np.nan, -np.nan], "e5m2")) == [0x7B, 0x7B, 0x7C, 0x7C, 0x7E, 0xFE]
    assert list(encode([-0.0, 0.0, np.nan, -1e-9], "e4m3fnuz")) == [0, 0, 0x80, 0]
    assert list(encode([-0.0, np.nan, -np.nan], "fp16")) == [0x8000, 0x7E00, 0xFE00]
    assert list(quantize([7.0, 100.0, np.inf, -np.inf], "e2m1fn")) == [6.0, 6.0, 6.0, -6.0]


# --- SEMANTICS §8: ap_fixed behaviour on fx<4,2> ------------------------------------------------

MODES_TABLE = {  # x: (nearest_up, nearest_zero, nearest_down, nearest_away, nearest_even, down, toward_zero)
    0.125: (0.25, 0, 0, 0.25, 0, 0, 0),
    -0.125: (0, 0, -0.25, -0.25, 0, -0.25, 0),
    0.375: (0.5, 0.25, 0.25, 0.5, 0.5, 0.25, 0.25),
    -0.375: (-0.25, -0.25, -0.5, -0.5, -0.5, -0.5, -0.25),
    0.2: (0.25, 0.25, 0.25, 0.25, 0.25, 0, 0),
    -0.2: (-0.25, -0.25, -0.25, -0.25, -0.25, -0.25, 0),
    1.875: (1.75,) * 7,
}
MODE_NAMES = ("nearest_up", "nearest_zero", "nearest_down", "nearest_away", "nearest_even", "down", "toward_zero")

OVERFLOW_TABLE = {  # x: (saturate, saturate_zero, saturate_symmetric, wrap, wrap_sign_magnitude), rounding down
    2.0: (1.75, 0, 1.75, -2, 1.75), 2.5: (1.75, 0, 1.75, -1.5, 1.25), 3.0: (1.75, 0, 1.75, -1, 0.75),
    5.3: (1.75, 0, 1.75, 1.25, -1.5), -2.0: (-2, -2, -1.75, -2, -2), -2.5: (-2, 0, -1.75, 1.5, -1.75),
    -3.0: (-2, 0, -1.75, 1, -1.25),
}
RULES = ("saturate", "saturate_zero", "saturate_symmetric", "wrap", "wrap_sign_magnitude")


@pytest.mark.parametrize("mode_index", range(len(MODE_NAMES)))
def test_ap_fixed_modes(mode_index):
    xs = list(MODES_TABLE)
    want = [MODES_TABLE[x][mode_index] for x in xs]
    assert list(quantize(xs, "fx<4,2>", MODE_NAMES[mode_index])) == want


@pytest.mark.parametrize("rule_index", range(len(RULES)))
def test_ap_fixed_overflow(rule_index):
    xs = list(OVERFLOW_TABLE)
    want = [OVERFLOW_TABLE[x][rule_index] for x in xs]
    assert list(quantize(xs, "fx<4,2>", "down", RULES[rule_index])) == want


def test_unsigned_fixed():
    f = "ufx<4,2>"  # [0, 3.75], lsb 0.25
    assert list(quantize([-0.125, -0.375, 4.0, 5.3, 3.8], f, "down", "saturate")) == [0, 0, 3.75, 3.75, 3.75]
    assert list(quantize([-0.375, 4.0, 5.3], f, "down", "wrap")) == [3.5, 0, 1.25]
    assert list(quantize([-0.375, 4.0], f, "down", "saturate_zero")) == [0, 0]
    assert list(quantize([-0.125], f, "nearest_up")) == [0]
    assert list(encode([3.75, 1.0], f)) == [15, 4]


def test_fixed_codes_are_twos_complement():
    assert list(encode([-2.0, -0.25, 0, 1.75], "fx<4,2>")) == [0b1000, 0b1111, 0, 0b0111]
    assert list(encode([-1, 127, -128], "int8")) == [0xFF, 0x7F, 0x80]
    assert encode(-1, "int64") == np.uint64(2**64 - 1)
    assert encode(np.uint64(2**64 - 1), "uint64") == np.uint64(2**64 - 1)
    assert encode(np.int64(-2**63), "int64") == np.uint64(2**63)
    assert encode(2.0**70, "int64") == np.uint64(2**63 - 1)
    assert encode(2.0**70, "int64", overflow="wrap") == 0
    assert encode(2.0**63 + 2.0**11, "int64", overflow="wrap") == np.uint64(2**63 + 2**11)


def test_integer_inputs_are_exact():
    # 2**53 + 1 is not a float64; rounding must see the exact integer
    assert encode(np.int64(2**53 + 1), "fx<60,0>") == 2**53 + 1
    assert quantize(np.int64(2**53 + 1), "fp64", "up") == 2.0**53 + 2
    assert quantize(np.int64(2**53 + 1), "fp64", "down") == 2.0**53
    assert quantize(np.uint64(2**64 - 1), "fp32", "toward_zero") == np.float32(2**64 - 2**40)
    assert quantize(np.int8(-7), "e2m1fn") == -6.0
    assert quantize(np.array([True, False]), "int8").tolist() == [1.0, 0.0]


# --- shapes, dtypes, layouts --------------------------------------------------------------------

def test_shapes_and_dtypes():
    assert quantize(np.zeros((0, 3), np.float32), "e4m3fn").shape == (0, 3)
    assert encode(np.zeros((0,)), "e5m2").dtype == np.uint8
    z = quantize(np.array(0.3), "e4m3fn")
    assert isinstance(z, np.ndarray) and z.shape == ()
    assert isinstance(quantize(0.3, "e4m3fn"), np.floating)
    assert quantize(np.float32(0.3), "bf16").dtype == np.float32  # bf16 fits float32
    assert quantize(np.float32(0.3), "e11m52").dtype == np.float64
    assert quantize(np.float32(0.3), "fx<30,10>").dtype == np.float64
    assert quantize(np.float64(0.3), "e4m3fn").dtype == np.float64
    assert encode(1.0, "tf32").dtype == np.uint32 and encode(1.0, "fp64").dtype == np.uint64
    assert encode(1.0, "fx<12,4>").dtype == np.uint16


def test_layout_and_byte_order_do_not_matter():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 48)) * 30
    want = encode(x, "e4m3fn")
    np.testing.assert_array_equal(encode(x.T.copy().T, "e4m3fn"), want)
    np.testing.assert_array_equal(encode(np.asfortranarray(x), "e4m3fn"), want)
    np.testing.assert_array_equal(encode(x[::2, ::3], "e4m3fn"), want[::2, ::3])
    np.testing.assert_array_equal(encode(x.astype(">f8"), "e4m3fn"), want)
    np.testing.assert_array_equal(encode(x.astype(np.float16), "e5m2"), encode(x.astype(np.float16).astype(np.float64), "e5m2"))


def test_float16_input(ml_dtypes):
    x = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    x = x[~np.isnan(x)]
    np.testing.assert_array_equal(encode(x, "e4m3fn"), x.astype(ml_dtypes.float8_e4m3fn).view(np.uint8))


def test_decode_encode_round_trip_all_codes():
    for name in ["e4m3fn", "e4m3fnuz", "e5m2", "e5m2fnuz", "e3m4", "e2m1fn", "e2m3fn", "e3m2fn", "fp16", "bf16",
                 "e4m3b11fnuz", "e3m2fn-nosub", "e5m2-nosub", "fx<8,3>", "ufx<8,3>", "int12", "e1m6fin", "e6m0fnuz"]:
        f = emul.format(name)
        codes = np.arange(1 << f.bits, dtype=np.uint64)
        if isinstance(f, emul.FloatFormat) and not f.subnormals:
            mag = codes & np.uint64((1 << (f.bits - 1)) - 1)
            codes = codes[((mag >> np.uint64(f.man_bits)) != 0) | (mag == 0)]
        values = decode(codes, f)
        nan = np.isnan(values)
        np.testing.assert_array_equal(encode(values[~nan], f), codes[~nan].astype(encode(0.0, f).dtype), err_msg=name)


# --- rounding semantics spot checks -------------------------------------------------------------

def test_directed_modes_and_odd():
    x = [1.0625, -1.0625, 1.125, 1.1875]  # e4m3fn step 0.125 near 1
    assert list(quantize(x, "e4m3fn", "up")) == [1.125, -1.0, 1.125, 1.25]
    assert list(quantize(x, "e4m3fn", "down")) == [1.0, -1.125, 1.125, 1.125]
    assert list(quantize(x, "e4m3fn", "toward_zero")) == [1.0, -1.0, 1.125, 1.125]
    assert list(quantize(x, "e4m3fn", "away_from_zero")) == [1.125, -1.125, 1.125, 1.25]
    assert list(quantize(x, "e4m3fn", "odd")) == [1.125, -1.125, 1.125, 1.125]
    assert list(quantize([1.0625, 1.1875], "e4m3fn", "nearest_even")) == [1.0, 1.25]


def test_ieee_overflow_rule():
    big = [1e6, -1e6]
    assert list(quantize(big, "e5m2", "toward_zero")) == [57344, -57344]
    assert list(quantize(big, "e5m2", "up")) == [np.inf, -57344]
    assert list(quantize(big, "e5m2", "down")) == [57344, -np.inf]
    assert list(quantize(big, "e5m2", "odd")) == [57344, -57344]
    assert list(quantize(big, "e5m2", "nearest_zero")) == [np.inf, -np.inf]
    assert list(quantize(big, "e5m2", overflow="saturate")) == [57344, -57344]
    assert list(quantize([np.inf, -np.inf], "e5m2", overflow="saturate")) == [57344, -57344]
    assert list(encode(big, "e4m3fn", "up")) == [0x7F, 0xFE]  # inf -> NaN in a format without inf


def test_subnormals_off():
    f = "e4m3fn-nosub"  # min_normal 2**-6, grid {0, 2**-6} below it
    m = 2.0**-6
    assert list(quantize([m / 2, m * 0.51, m * 0.49, -m / 2], f)) == [0, m, 0, -0.0]
    assert list(quantize([m / 2, m / 4], f, "nearest_away")) == [m, 0]
    assert list(quantize([m / 4, -m / 4], f, "odd")) == [m, -m]
    assert list(quantize([m / 4], f, "up")) == [m]
    with pytest.raises(ValueError, match="not a code"):
        decode(1, f)


def test_zero_signs():
    assert np.signbit(quantize(-1e-30, "e4m3fn"))
    assert np.signbit(quantize(-0.0, "bf16"))
    assert not np.signbit(quantize(-1e-30, "e4m3fnuz"))
    assert not np.signbit(quantize(-0.1, "int8"))
    assert quantize(-1e-30, "e4m3fn", "down") == -2.0**-9


# --- stochastic rounding ------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16, np.int64])
@pytest.mark.parametrize("size", [1000, 70000])  # serial and parallel kernels
def test_sr_seed_uses_threefry_words(dtype, size):
    x = (np.linspace(-3, 3, size) * (7 if dtype == np.int64 else 1)).astype(dtype).reshape(10, -1)
    for r in (1, 8, 32):
        words = emul.random.bits(emul.random.key(7), x.shape) >> np.uint32(32 - r)
        a = quantize(x, "e4m3fn", "stochastic", seed=7, sr_bits=r)
        b = quantize(x, "e4m3fn", "stochastic", random_bits=words, sr_bits=r)
        c = quantize(x, "e4m3fn", "stochastic", key=emul.random.key(7), sr_bits=r)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


def test_sr_add_and_compare():
    # 1 + 3/16 in e4m3fn: q = 1, f = 3/16 of the 0.125 step... use exact fractions of the quantum
    x = 1.0 + 0.125 * 0.75  # f = 0.75, r = 2 -> t = 3
    ups_add = [quantize(x, "e4m3fn", "stochastic", random_bits=u, sr_bits=2) for u in range(4)]
    ups_cmp = [quantize(x, "e4m3fn", "stochastic", random_bits=u, sr_bits=2, sr_method="compare") for u in range(4)]
    assert ups_add == [1.0, 1.125, 1.125, 1.125]  # t + u >= 4 for u >= 1
    assert ups_cmp == [1.125, 1.125, 1.125, 1.0]  # u < 3


def test_sr_fixed_point_rounds_the_signed_value():
    # -0.3 in int8: floor = -1, f = 0.7; r = 4 -> t = floor(0.7 * 16) = 11: toward +inf (to 0) iff t + u >= 16
    got = [float(quantize(-0.3, "int8", "stochastic", random_bits=u, sr_bits=4)) for u in range(16)]
    assert got == [-1.0] * 5 + [0.0] * 11


@pytest.mark.parametrize("fmt", ["e4m3fn", "e5m2-nosub", "fx<6,2>", "ufx<6,3>", "e2m1fn"])
@pytest.mark.parametrize("method", ["add", "compare"])
def test_sr_unbiased_by_enumeration(fmt, method):
    """E over all 2**r words equals x exactly when f * 2**r is an integer; |bias| < 2**-r ulp otherwise."""
    rng = np.random.default_rng(3)
    f = emul.format(fmt)
    for r in (1, 3, 8):
        u = np.arange(1 << r)
        for _ in range(20):
            code = int(rng.integers(0, (1 << (f.bits - 1)) - 2)) if isinstance(f, emul.FloatFormat) else int(rng.integers(1, (1 << f.bits) - 2))
            try:
                lo, hi = float(decode(code, f)), float(decode(code + 1, f))
            except ValueError:  # a subnormal pattern of a format without subnormals
                continue
            if not (np.isfinite(lo) and np.isfinite(hi)) or hi <= lo:
                continue
            for k in sorted({0, 1, 3 % (1 << r), (1 << r) - 1}):  # f * 2**r integral
                x = lo + (hi - lo) * k / (1 << r)
                vals = quantize(np.full(u.size, x), f, "stochastic", random_bits=u, sr_bits=r, sr_method=method)
                assert sum(map(Fraction, vals.tolist())) / u.size == Fraction(x)
            x = lo + (hi - lo) * 0.3141592653589793
            vals = quantize(np.full(u.size, x), f, "stochastic", random_bits=u, sr_bits=r, sr_method=method)
            bias = sum(map(Fraction, vals.tolist())) / u.size - Fraction(x)
            assert abs(bias) < Fraction(hi - lo) / (1 << r)


# --- bad input ----------------------------------------------------------------------------------

@pytest.mark.parametrize("call,exc,match", [
    (lambda: quantize(1.0, "e4m3fn", "nearest"), ValueError, "rounding='nearest'"),
    (lambda: quantize(1.0, "e4m3fn", overflow="clip"), ValueError, "overflow='clip'"),
    (lambda: quantize(1.0, "e4m3fn", overflow="wrap"), ValueError, "only for fixed-point"),
    (lambda: quantize(1.0, "int8", overflow="ieee"), ValueError, "no infinity"),
    (lambda: quantize(1.0, "uint8", overflow="wrap_sign_magnitude"), ValueError, "signed"),
    (lambda: quantize(1.0, "e4m3fn", "stochastic"), ValueError, "needs exactly one"),
    (lambda: quantize(1.0, "e4m3fn", "stochastic", seed=1, random_bits=0), ValueError, "exactly one"),
    (lambda: quantize(1.0, "e4m3fn", "stochastic", random_bits=256, sr_bits=8), ValueError, "random_bits: value 256"),
    (lambda: quantize(1.0, "e4m3fn", "stochastic", random_bits=-1, sr_bits=8), ValueError, "random_bits: value -1"),
    (lambda: quantize(np.ones(3), "e4m3fn", "stochastic", random_bits=[1, 2], sr_bits=8), ValueError, "broadcast"),
    (lambda: quantize(1.0, "e4m3fn", "stochastic", random_bits=0.5), TypeError, "random_bits: dtype"),
    (lambda: quantize(1.0, "e4m3fn", "stochastic", random_bits=0, sr_bits=33), ValueError, "sr_bits=33"),
    (lambda: quantize(1.0, "e4m3fn", "stochastic", random_bits=0, sr_bits=0), ValueError, "sr_bits=0"),
    (lambda: quantize(1.0, "e4m3fn", "stochastic", random_bits=0, sr_method="xor"), ValueError, "sr_method"),
    (lambda: quantize(1.0, "e4m3fn", sr_bits=8), ValueError, "sr_bits=8"),
    (lambda: quantize(1.0, "e4m3fn", seed=3), ValueError, "seed: only used"),
    (lambda: quantize(np.array([1 + 2j]), "e4m3fn"), TypeError, "complex"),
    (lambda: quantize(np.array(["a"]), "e4m3fn"), TypeError, "not numeric"),
    (lambda: quantize(np.array([1.0], object), "e4m3fn"), TypeError, "object"),
    (lambda: quantize(np.array([1.0], np.longdouble), "e4m3fn"), TypeError, "float"),
    (lambda: quantize([1.0, np.nan], "e2m1fn"), ValueError, "NaN"),
    (lambda: quantize([np.nan], "int8"), ValueError, "NaN"),
    (lambda: quantize([np.inf], "int8", overflow="wrap"), ValueError, "infinite"),
    (lambda: quantize(1.0, "fx<60,0>"), ValueError, "float64"),
    (lambda: quantize(1.0, "e12m3"), ValueError, "exp_bits=12"),
    (lambda: decode(256, "e4m3fn"), ValueError, "0x100"),
    (lambda: decode(-1, "e4m3fn"), ValueError, "negative"),
    (lambda: decode(1.0, "e4m3fn"), TypeError, "integer"),
])
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_inf_into_fixed_saturates():
    assert list(quantize([np.inf, -np.inf], "fx<4,2>")) == [1.75, -2.0]
    assert list(quantize([np.inf, -np.inf], "fx<4,2>", overflow="saturate_symmetric")) == [1.75, -1.75]
    assert list(quantize([np.inf, -np.inf], "fx<4,2>", overflow="saturate_zero")) == [0, 0]


# --- validation does not depend on call history (a fresh process checks like a warm one) -------

_WARM_UP = dict(sr_bits=4, rounding="stochastic", seed=0)


@pytest.mark.parametrize("bad,exc", [
    (dict(sr_bits=4.0), TypeError), (dict(sr_bits=True), TypeError), (dict(sr_bits=np.float32(4)), TypeError),
    (dict(sr_bits=1.0), TypeError), (dict(sr_bits="4"), TypeError),
])
@pytest.mark.parametrize("op", [
    lambda **kw: quantize([1.03], "e4m3fn", **kw), lambda **kw: encode([1.03], "fx<8,4>", **kw),
    lambda **kw: emul.add([1.0], [0.03], "e4m3fn", **kw), lambda **kw: emul.dot([1.0, 2.0], [0.5, 0.25], "e5m6", **kw),
])
def test_sr_bits_checked_on_every_call(op, bad, exc):
    """sr_bits=4.0 and True hash like 4 and 1; after a valid call with those, they must still fail."""
    for warm in (None, 4, 1):
        if warm is not None:
            op(**{**_WARM_UP, "sr_bits": warm})
        with pytest.raises(exc, match="sr_bits"):
            op(**{**_WARM_UP, **bad})


@pytest.mark.parametrize("rounding", ["nearest_even", "down", "stochastic"])
@pytest.mark.parametrize("method", ["compar", "ADD", "", None, ("add",)])
def test_sr_method_checked_in_every_mode(rounding, method):
    sr = dict(seed=0) if rounding == "stochastic" else {}
    for fmt in ("e4m3fn", "int8"):
        for _ in range(2):  # the second call hits the argument cache
            with pytest.raises(ValueError, match="sr_method"):
                quantize([1.03], fmt, rounding, sr_method=method, **sr)
    with pytest.raises(ValueError, match="sr_method"):
        emul.matmul(np.ones((2, 2)), np.ones((2, 2)), "e5m6", rounding=rounding, sr_method=method, **sr)


# --- one-bit fixed point (ap_fixed<1,1> is {-1, 0}, ap_ufixed<1,1> is {0, 1}) -------------------

def test_one_bit_fixed_against_reference():
    import reference as R

    xs = [v / 4 for v in range(-14, 15)] + [-0.0, 1e-30, -1e-30, 1e300, -1e300]
    for signed in (True, False):
        for frac in (0, 1, -1, 3):
            fmt = emul.FixedFormat(1, frac, signed=signed)
            rf = R.Fixed(1, frac, signed)
            rules = ["saturate", "saturate_zero", "saturate_symmetric", "wrap"] + (["wrap_sign_magnitude"] if signed else [])
            for rule in rules:
                for mode in R.MODES[:-1]:
                    got = encode(np.array(xs), fmt, mode, rule)
                    want = [R.encode(x, rf, mode, rule) for x in xs]
                    assert got.tolist() == want, (fmt.name, rule, mode)
    assert emul.format("int1") == emul.FixedFormat(1, 0) and emul.format("int1").name == "int1"
    assert (emul.format("int1").min, emul.format("int1").max) == (-1.0, 0.0)
    assert decode([0, 1], "int1").tolist() == [0.0, -1.0]

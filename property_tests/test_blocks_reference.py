"""emul.blocks and e8m0 against the golden model (reference/blocks.py), bit for bit, over random
block formats, scale rules, overflow settings, rounding modes (SR included) and edge-weighted
blocks: ties, subnormals, zeros, -0, max, inf, NaN, amax at powers of two, scale under- and
overflow, short tails. Longer sweeps: ``-m slow``."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import emul
import emul.blocks as B
import reference.blocks as R

MODES = [m.value for m in emul.Rounding]
ELEMENTS = ["e4m3fn", "e5m2", "e2m3fn", "e3m2fn", "e2m1fn", "fx<8,6>", "e4m3fnuz", "e3m4", "int4", "ufx<4,2>",
            "e2m1fn-nosub", "e5m2fnuz", "fx<6,3>", "e3m1fin"]
POW2_SCALES = ["e8m0", "e8m0", "e4m0", "e3m0", "e5m0b20", "e3m0b-2", "e2m0b-6"]
FLOAT_SCALES = ["e4m3fn", "e5m2", "e4m3fnuz", "e3m2fn"]
MANTISSAS = [0.0, 1.0, 1.5, 1.25, 1.75, 1.125, 1.0625, 1.1875, 3.0, 0.5, 0.75, 0.375, 0.625, 6.0, 7.0, 5.0, 2.5,
             448.0, 464.0, 480.0, 960.0, 57344.0, 61440.0, 1.9999, 127 / 64, 255 / 128]
FAST = settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
SLOW = settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))


@st.composite
def block_formats(draw, float_scale=None):
    el = draw(st.sampled_from(ELEMENTS))
    use_float = draw(st.booleans()) if float_scale is None else float_scale
    sc = draw(st.sampled_from(FLOAT_SCALES if use_float else POW2_SCALES))
    block = draw(st.one_of(st.integers(1, 6), st.none(), st.just(32) if False else st.integers(1, 4)))
    tensor = use_float and draw(st.booleans())
    try:
        return B.BlockFormat(el, sc, block, tensor)
    except ValueError:
        assume(False)


@st.composite
def values(draw, shape):
    """Blocks of values m * 2**(base + offset) with edge mantissas, signs, specials."""
    n = int(np.prod(shape))
    base = draw(st.one_of(st.integers(-20, 20), st.sampled_from([-160, -140, -130, -127, 120, 127, 130, 200, -1070])))
    out = []
    for _ in range(n):
        kind = draw(st.integers(0, 30))
        if kind == 0:
            out.append(draw(st.sampled_from([math.nan, math.inf, -math.inf])))
            continue
        if kind == 1:
            out.append(draw(st.sampled_from([5e-324, 2.0 ** -1022, 1.7976931348623157e308])))
            continue
        if kind <= 4:
            m = draw(st.floats(0, 2, allow_nan=False))
        else:
            m = draw(st.sampled_from(MANTISSAS))
        e = base + draw(st.integers(-12, 3))
        v = math.ldexp(m, max(min(e, 1000), -1074)) if m else 0.0
        out.append(-v if draw(st.booleans()) else v)
    return np.array(out, np.float64).reshape(shape)


def same_codes(a, b):
    return np.array_equal(np.asarray(a, np.int64), np.asarray(b, np.int64))


def same_values(got, want, nan_sign=True):
    """float64 values equal to the reference's (Fraction, or float for zeros and NaN), -0 and NaN
    included (the NaN's sign too unless ``nan_sign`` is False)."""
    for g, w in zip(np.ravel(got), want):
        w = float(w)
        if math.isnan(w):
            if not math.isnan(g) or (nan_sign and math.copysign(1, g) != math.copysign(1, w)):
                return False
        elif g != w or math.copysign(1, g) != math.copysign(1, w):
            return False
    return True


# -- e8m0 -----------------------------------------------------------------------------------------

@st.composite
def exp_inputs(draw):
    k = draw(st.integers(-140, 140))
    m = draw(st.sampled_from([1.0, 1.5, 1.25, 1.75, 1.0000001, 1.4999999, 1.5000001, 1.9999999]))
    v = draw(st.one_of(st.just(math.ldexp(m, k)), st.floats(allow_nan=True, allow_infinity=True),
                       st.sampled_from([0.0, -0.0, -1.0, 2.0 ** -127, 2.0 ** -128, 2.0 ** 127, 1.5 * 2.0 ** 127,
                                        2.0 ** 128, 2.0 ** -200, math.nan, math.inf, -math.inf])))
    return v


def _check_exp(xs, fmt_name, mode, overflow, r, words):
    fmt = emul.format(fmt_name)
    ref_fmt = R.Exp(fmt.exp_bits, fmt.bias)
    kw = dict(random_bits=np.array(words, np.uint32), sr_bits=r) if mode == "stochastic" else {}
    got = emul.encode(np.array(xs), fmt, mode, overflow, **kw)
    want = [R.exp_encode(x, ref_fmt, mode, overflow, u=w if mode == "stochastic" else None, sr_bits=r)
            for x, w in zip(xs, words)]
    assert same_codes(got, want), (xs, list(got), want)


@FAST
@given(st.lists(exp_inputs(), min_size=1, max_size=12), st.sampled_from(["e8m0", "e8m0", "e4m0", "e3m0b-3"]),
       st.sampled_from(MODES), st.sampled_from([None, "ieee", "saturate"]), st.integers(1, 32), st.data())
def test_exp_encode_matches_reference(xs, fmt, mode, overflow, r, data):
    words = [data.draw(st.integers(0, 2 ** r - 1)) for _ in xs]
    _check_exp(xs, fmt, mode, overflow, r, words)


@pytest.mark.slow
@SLOW
@given(st.lists(exp_inputs(), min_size=1, max_size=12), st.sampled_from(["e8m0", "e4m0", "e3m0b-3", "e6m0b40"]),
       st.sampled_from(MODES), st.sampled_from([None, "ieee", "saturate"]), st.integers(1, 32), st.data())
def test_exp_encode_matches_reference_slow(xs, fmt, mode, overflow, r, data):
    words = [data.draw(st.integers(0, 2 ** r - 1)) for _ in xs]
    _check_exp(xs, fmt, mode, overflow, r, words)


def test_e8m0_decode_every_code():
    codes = np.arange(256, dtype=np.uint8)
    got = emul.decode(codes, "e8m0")
    want = [R.exp_decode(int(c), R.Exp(8)) for c in codes]
    assert same_values(got, want)


# -- block encode / decode / quantize --------------------------------------------------------------

NAN_HEAVY = [0x7F, 0xFF, 0x7E, 0xFE, 0x7C, 0xFC, 0x00, 0x80, 0x3C, 0xBC]  # e5m2: NaNs, infs, ±0, ±1


@FAST
@given(st.integers(1, 5), st.integers(1, 40), st.data())
def test_decode_nan_signs_match_reference(k, n, data):
    """decode of random codes heavy in NaNs of both signs (elements e5m2, scales e4m3fn NaN 0x7F/0xFF,
    ±1, 2**-9): the reference's values and NaN signs (the element's NaN, else the scale's)."""
    bfmt = B.format(f"e5m2/e4m3fn/{k}")
    codes = data.draw(st.lists(st.sampled_from(NAN_HEAVY), min_size=n, max_size=n))
    nb = -(-n // k)
    scales = data.draw(st.lists(st.sampled_from([0x7F, 0xFF, 0x38, 0xB8, 0x01]), min_size=nb, max_size=nb))
    got = B.decode(np.array(scales, np.uint8), np.array(codes, np.uint8), bfmt)
    with np.errstate(invalid="ignore"):
        want = R.decode(scales, codes, bfmt)
    assert same_values(got, want), (scales, codes, got, want)

def _reference_rows(x, axis):
    """The 1-D lanes along axis, with their index tuples into x (C order of the other axes)."""
    m = np.moveaxis(x, axis, -1)
    return m.reshape(-1, m.shape[-1])


def _check_blocks(bfmt, x, axis, mode, rule, sovf, r, words, scale_min, arithmetic):
    kw = {}
    if bfmt.power_of_two:
        kw.update(scale_rule=rule, scale_overflow=sovf)
    else:
        kw.update(scale_min=scale_min, arithmetic=arithmetic)
    st_val = G = None
    if arithmetic == "float32_te":  # TransformerEngine: G and s_t come from x
        st_val = B.tensor_scale(x, bfmt, "float32_te")
        G, want_st = R.te_scales([float(v) for v in x.ravel()], bfmt)
        assert float(st_val) == want_st
    elif bfmt.tensor_scale:
        st_val = B.tensor_scale(x, bfmt)
        assert R.tensor_scale([float(v) for v in x.ravel()], bfmt) == float(st_val)
        kw["tensor_scale"] = st_val
    sr = dict(random_bits=words, sr_bits=r) if mode == "stochastic" else {}
    try:
        scales, codes = B.encode(x, bfmt, axis, rounding=mode, **kw, **sr)
    except ValueError as exc:  # a float scale format without NaN and a NaN/inf block
        assert "has no NaN" in str(exc) and not bfmt.scale.has_nan
        return
    lanes = _reference_rows(x, axis)
    ulanes = _reference_rows(words, axis) if mode == "stochastic" else None
    slanes = _reference_rows(scales, axis)
    clanes = _reference_rows(codes, axis)
    rkw = dict(rounding=mode, sr_bits=r if mode == "stochastic" else 32)
    if bfmt.power_of_two:
        rkw.update(scale_rule=rule or "floor", scale_overflow=sovf or "nan")
    else:
        rkw.update(scale_min=scale_min or 0, arithmetic=arithmetic, tensor_scale=st_val, te_encode_scale=G)
    q = None
    if x.dtype == np.float64:  # quantize: float64 in, float64 out
        q = _reference_rows(B.quantize(x, bfmt, axis, rounding=mode, **kw, **sr), axis)
    for i, lane in enumerate(lanes):
        u = [int(w) for w in ulanes[i]] if ulanes is not None else None
        want_s, want_c = R.encode([v.item() for v in lane], bfmt, u=u, **rkw)
        assert same_codes(slanes[i], want_s), (lane, list(slanes[i]), want_s)
        assert same_codes(clanes[i], want_c), (lane, list(clanes[i]), want_c)
        got_v = _reference_rows(B.decode(scales, codes, bfmt, axis, tensor_scale=st_val), axis)[i]
        want_v = R.decode(want_s, want_c, bfmt, tensor_scale=st_val)
        assert same_values(got_v, want_v)
        if q is not None:
            assert same_values(q[i], want_v)


@st.composite
def block_cases(draw, float_scale=None):
    bfmt = draw(block_formats(float_scale))
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 13)))
    x = draw(values(shape))
    dtype = draw(st.sampled_from([np.float64, np.float64, np.float32, np.float16]))
    with np.errstate(all="ignore"):
        x = x.astype(dtype)
    axis = draw(st.sampled_from([0, 1, -1]))
    mode = draw(st.sampled_from(MODES))
    rule = draw(st.sampled_from([None, "floor", "ceil", "even", "rceil"]))
    sovf = draw(st.sampled_from([None, "nan", "saturate"]))
    r = draw(st.integers(1, 32))
    words = np.array([draw(st.integers(0, 2 ** r - 1)) for _ in range(x.size)], np.uint32).reshape(shape)
    scale_min = None
    arithmetic = "exact"
    if not bfmt.power_of_two:
        sc = bfmt.scale
        scale_min = draw(st.sampled_from([None, 0.0, sc.min_subnormal, 8 * sc.min_subnormal, sc.min_normal]))
        if dtype == np.float32 and mode != "stochastic":
            arithmetic = draw(st.sampled_from(["exact", "float32", "float32_div"]
                                              + (["float32_te"] * 2 if bfmt.tensor_scale else [])))
    return bfmt, x, axis, mode, rule, sovf, r, words, scale_min, arithmetic


@FAST
@given(block_cases(float_scale=False))
def test_pow2_blocks_match_reference(case):
    _check_blocks(*case)


@FAST
@given(block_cases(float_scale=True))
def test_float_scale_blocks_match_reference(case):
    _check_blocks(*case)


@pytest.mark.slow
@SLOW
@given(block_cases())
def test_blocks_match_reference_slow(case):
    _check_blocks(*case)


@FAST
@given(st.sampled_from(list(B.PRESETS)), st.integers(1, 70), st.data())
def test_presets_match_reference(name, n, data):
    bfmt = B.format(name)
    x = data.draw(values((n,)))
    mode = data.draw(st.sampled_from(MODES))
    words = np.array([data.draw(st.integers(0, 2 ** 32 - 1)) for _ in range(n)], np.uint32)
    _check_blocks(bfmt, x, 0, mode, data.draw(st.sampled_from(["floor", "rceil"])), None, 32, words, None,
                  "exact")


def test_quantize_is_decode_of_encode():
    x = np.random.default_rng(5).standard_normal((3, 40))
    for name in B.PRESETS:
        bfmt = B.format(name)
        st_val = B.tensor_scale(x, bfmt) if bfmt.tensor_scale else None
        s, c = B.encode(x, bfmt)
        np.testing.assert_array_equal(B.quantize(x, bfmt), B.decode(s, c, bfmt, tensor_scale=st_val))


def test_seeded_sr_uses_word_i_for_element_i():
    x = np.random.default_rng(6).standard_normal((4, 33)).astype(np.float32)
    words = emul.random.bits(emul.random.key(9), x.shape)
    for axis in (0, 1):
        a = B.encode(x, "mxfp4", axis, rounding="stochastic", seed=9)
        b = B.encode(x, "mxfp4", axis, rounding="stochastic", random_bits=words)
        assert all(np.array_equal(p, q) for p, q in zip(a, b))


# -- dot / matmul ---------------------------------------------------------------------------------

@FAST
@given(st.sampled_from(["mxfp8_e4m3", "mxfp4", "mxint8", "mxfp6_e3m2", "nvfp4", "e2m1fn/e8m0/axis",
                        "e4m3fn/e8m0/4"]),
       st.integers(1, 40), st.sampled_from(["fp32", "bf16", "e5m6", "fx<16,4>"]),
       st.sampled_from(["sequential", "pairwise", "chunked"]), st.data())
def test_dot_matches_reference(name, n, acc, order, data):
    bfmt = B.format(name)
    a = data.draw(values((n,)))
    b = data.draw(values((n,)))
    if bfmt.tensor_scale:  # two-level scaling needs finite data (NaN blocks: a NaN-free scale format)
        a, b = np.nan_to_num(a, posinf=1.0, neginf=-1.0), np.nan_to_num(b, posinf=2.0, neginf=-2.0)
    acc_fmt = emul.format(acc)
    chunk = 2 if order == "chunked" else None
    kw = dict(order=order, chunk=chunk)
    ref_args = ([v.item() for v in a], [v.item() for v in b], bfmt)
    try:
        got = B.dot(a, b, bfmt, acc=acc_fmt, **kw)
    except ValueError as exc:
        assert "has no NaN" in str(exc)  # a NaN block into a fixed-point accumulator: both refuse
        with pytest.raises(ValueError):
            R.dot(*ref_args, acc=acc_fmt, **kw)
        return
    want = R.dot(*ref_args, acc=acc_fmt, overflow=None, **kw)
    assert same_values([float(got)], [want], nan_sign=False), (got, want)


def test_matmul_matches_reference_rows():
    rng = np.random.default_rng(3)
    A = rng.standard_normal((3, 70)) * 2.0 ** rng.integers(-8, 8, (3, 70))
    Bm = rng.standard_normal((70, 4))
    for name in ("mxfp8_e4m3", "mxfp4", "mxint8"):
        bfmt = B.format(name)
        got = B.matmul(A, Bm, bfmt, acc="bf16", order="pairwise")
        for i in range(3):
            for j in range(4):
                want = R.dot(list(A[i]), list(Bm[:, j]), bfmt, acc=emul.format("bf16"), order="pairwise")
                assert same_values([got[i, j]], [want])


def test_matmul_stochastic_words():
    rng = np.random.default_rng(4)
    A = rng.standard_normal((2, 64))
    Bm = rng.standard_normal((64, 3))
    words = rng.integers(0, 2 ** 32, (2, 3, 2), dtype=np.uint32)
    got = B.matmul(A, Bm, "mxfp8_e4m3", acc="e5m2", rounding="stochastic", random_bits=words)
    for i in range(2):
        for j in range(3):
            want = R.dot(list(A[i]), list(Bm[:, j]), B.format("mxfp8_e4m3"), acc=emul.format("e5m2"),
                         rounding="stochastic", u=[int(w) for w in words[i, j]])
            assert same_values([got[i, j]], [want])

"""The float32 fast path (emul/_kernels/fast_f32.py) against the general kernel, bit for bit.

The general kernel (``round_serial``, the oracle) and the fast kernels get the same float32 bit
patterns: every code value of the format, every midpoint between neighbours (exact ties), their
float32 neighbours (tie ± 1 ulp, max + half ulp, min_subnormal / 2 …), float32 specials and
subnormals, and random bit patterns. Each input also runs in a block of identical copies, so the
short formula (whole blocks without rare elements) and the full one both see every input.

Stochastic rounding is checked the same way, with words chosen at each input's decision boundary
(``t + u = 2**r`` for ``"add"``, ``u = t`` for ``"compare"``, t computed here in float64), for
``random_bits=`` against ``round_serial`` and for ``seed=``/``key=`` against ``round_seeded``.
"""

import numba
import numpy as np
import pytest

import emul
from emul import encode, quantize
from emul._kernels import fast_f32 as F
from emul._kernels import round as K
from emul._kernels import threefry as T
from emul._kernels.intrinsics import threefry_word
from emul._params import kernel_params
from emul.quantize import _fast_f32, _ro, code_dtype, exact_float64
from emul.rounding import MODE_BITS, Overflow, Rounding

FORMATS = [
    "e4m3fn", "e4m3fnuz", "e5m2", "e5m2fnuz", "e3m4", "e4m3", "e4m3b11fnuz", "bf16", "fp16", "tf32", "fp32",
    "e2m1fn", "e2m3fn", "e3m2fn",                                   # no NaN: NaN inputs raise
    "e4m3fn-nosub", "e5m2-nosub", "e8m7-nosub", "e2m1fin-nosub",     # grid {0, min_normal}
    "e6m9", "e7m1", "e3m0fin", "e8m0fn", "e2m0fnuz", "e5m6b10-nosub",
    "e4m3b-2", "e3m2b-140fin",  # min_normal above float32's range: every float32 is "subnormal"
    "e9m3b100", "e10m21b100",   # emax > 127: codes only (values fall back to float64)
]
MODES = list(MODE_BITS)  # every deterministic mode
OVERFLOWS = [Overflow.IEEE, Overflow.SATURATE]


def _f32(bits):
    return np.asarray(bits, np.uint32).view(np.float32)


def _specials():
    bits = [0, 1, 2, 3, 0x7FFFF, 0x400000, 0x7FFFFF, 0x800000, 0x800001, 0x7F7FFFFF, 0x7F800000,
            0x7F800001, 0x7FC00000, 0x7FFFFFFF, 0x7FA00000, 0x3F800000, 0x3F000000, 0x00C00000]
    return np.array(bits, np.uint32)


def _edge_inputs(fmt, rng):
    """Float32 patterns of both signs around every code value and midpoint of fmt (sampled above
    12 bits), plus float32 specials and subnormals."""
    n_mag = 1 << (fmt.bits - 1)
    if fmt.bits <= 12:
        mags = np.arange(n_mag, dtype=np.uint64)
    else:
        m1 = 1 << fmt.man_bits
        ends = np.r_[0:256, n_mag - 256:n_mag, max(m1 - 128, 0):m1 + 128]
        mags = np.unique(np.r_[ends, rng.integers(0, n_mag, 1500)]).astype(np.uint64)
        mags = mags[mags < n_mag]
    if not fmt.subnormals:
        mags = mags[(mags >> np.uint64(fmt.man_bits) != 0) | (mags == 0)]
    values = emul.decode(mags, fmt)
    values = np.unique(values[np.isfinite(values)])
    mids = (values[:-1] + values[1:]) / 2  # exact in float64
    # Nearest float32 patterns (clipped to the float32 range), then their neighbours.
    with np.errstate(over="ignore"):
        centres = np.abs(np.r_[values, mids, values[-1] * 2, values[0] + values[1] / 4]).astype(np.float32)
    base = centres.view(np.uint32).astype(np.int64)
    near = (base[:, None] + np.arange(-2, 3)).reshape(-1)
    mag = np.unique(np.clip(near, 0, 0x7F800000)).astype(np.uint32)
    sub = rng.integers(0, 1 << 23, 64, dtype=np.uint64).astype(np.uint32)
    mag = np.r_[mag, _specials(), sub]
    return np.r_[mag, mag | np.uint32(0x80000000)]


def _round_serial(x, u, P, out):
    """The general kernel on float64 x into out (float64 values or uint64 codes), its input
    read-only as emul.quantize passes it (one compiled signature)."""
    bits = _ro(np.ascontiguousarray(x, np.float64).view(np.uint64))
    return K.round_serial(bits, K.IN_FLOAT64, u, P, out.view(np.uint64), out.dtype.kind == "f")


def _round_seeded(x, k0, k1, first, P, out):
    """The general kernel's seeded SR on float64 x into out (float64 values or uint64 codes)."""
    bits = _ro(np.ascontiguousarray(x, np.float64).view(np.uint64))
    return K.round_seeded(bits, K.IN_FLOAT64, k0, k1, first, P, out.view(np.uint64), out.dtype.kind == "f")


def _oracle(x, P, out_dtype):
    """(result, number of NaNs rejected) of the general kernel, called as emul's general path does."""
    out = np.empty(x.size, np.float64 if np.dtype(out_dtype).kind == "f" else np.uint64)
    with np.errstate(invalid="ignore"):  # signalling NaNs
        wide = x.astype(np.float64)
    nan_bad, _ = _round_serial(wide, np.zeros(1, np.uint32), P, out)
    return out.astype(out_dtype), nan_bad


def _check(fmt, mode, ovf, x, n_copied):
    """emul's result (the fast path) equals the general kernel's on x, and on blocks of copies of
    each of the first n_copied elements of x."""
    P = kernel_params(fmt, mode, ovf, 0, False)
    f32 = np.dtype(np.float32)
    fits = fmt.emax <= 127  # else quantize returns float64, by the general path
    assert _fast_f32(fmt, mode, f32, code_dtype(fmt)) and (_fast_f32(fmt, mode, f32, f32) or not fits)
    calls = [(encode, _oracle(x, P, code_dtype(fmt)))] + ([(quantize, _oracle(x, P, f32))] if fits else [])
    nan = np.isnan(x)
    for call, (want, nan_bad) in calls:
        if nan_bad:  # a format without NaN: NaN inputs raise, with their count
            with pytest.raises(ValueError, match=f"{nan_bad} NaN value"):
                call(x, fmt, mode, ovf)
            assert nan_bad == nan.sum()
            inputs, want, n = x[~nan], want[~nan], int((~nan[:n_copied]).sum())
        else:
            inputs, n = x, n_copied
        cases = ((inputs, want), (np.repeat(inputs[:n], F.BLOCK), np.repeat(want[:n], F.BLOCK)))
        for xs, expected in cases:
            got = call(xs, fmt, mode, ovf)
            assert got.dtype == expected.dtype
            g = got.view(got.dtype.str.replace("f", "u"))  # compare float32 results bit for bit
            e = expected.view(g.dtype)
            bad = np.flatnonzero(g != e)
            assert bad.size == 0, (f"{call.__name__} {fmt.name} {mode.value} {ovf.value}: {bad.size} "
                                   f"mismatches, e.g. x bits {xs[bad[:4]].view(np.uint32)}: "
                                   f"got {g[bad[:4]]}, want {e[bad[:4]]}")


@pytest.mark.parametrize("name", FORMATS)
def test_fast_path_equals_general_kernel(name):
    fmt = emul.format(name)
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    edges = _f32(_edge_inputs(fmt, rng))
    for mode in MODES:
        for ovf in OVERFLOWS:
            rand = _f32(rng.integers(0, 1 << 32, 1 << 14, dtype=np.uint64))
            rand_sorted = _f32(np.sort(rng.integers(0, 1 << 31, 1 << 14, dtype=np.uint64)))  # homogeneous blocks
            _check(fmt, mode, ovf, np.concatenate([edges, rand, rand_sorted]), edges.size)


def test_domain():
    """Which calls take the fast path: float32 in, deterministic modes, emin >= -126, man_bits <= 23."""
    f32 = np.dtype(np.float32)
    assert _fast_f32(emul.format("e4m3fn"), Rounding.STOCHASTIC, f32, np.dtype(np.uint8))
    assert _fast_f32(emul.format("e4m3fn"), Rounding.STOCHASTIC, f32, f32)
    assert not _fast_f32(emul.format("e4m3fn"), Rounding.NEAREST_EVEN, np.dtype(np.float64), np.dtype(np.uint8))
    assert not _fast_f32(emul.FloatFormat(8, 7, specials="fnuz"),  # emin = -127
                         Rounding.NEAREST_EVEN, f32, np.dtype(np.uint16))
    assert not _fast_f32(emul.format("fp64"), Rounding.NEAREST_EVEN, f32, np.dtype(np.uint64))
    assert _fast_f32(emul.format("e2m1fn"), Rounding.UP, f32, np.dtype(np.uint8))


def test_small_and_odd_sizes_match_ml_dtypes(ml_dtypes):
    """Sizes around the block length (tails), and ml_dtypes' round-to-nearest-even values."""
    rng = np.random.default_rng(7)
    for n in (0, 1, F.BLOCK - 1, F.BLOCK, F.BLOCK + 1, 3 * F.BLOCK + 17, 100_003):
        x = (rng.standard_normal(n) * 10).astype(np.float32)
        x[: n // 50] = rng.standard_normal(n // 50).astype(np.float32) * 1e-3  # subnormal in e4m3fn
        want = x.astype(ml_dtypes.float8_e4m3fn)
        np.testing.assert_array_equal(encode(x, "e4m3fn"), want.view(np.uint8))
        np.testing.assert_array_equal(quantize(x, "e4m3fn").view(np.uint32), want.astype(np.float32).view(np.uint32))
    assert encode(np.float32(-0.0), "e4m3fn") == 0x80 and encode(np.float32(-0.0), "e4m3fnuz") == 0


@pytest.mark.parametrize("name,dtype_name", [
    ("e4m3fn", "float8_e4m3fn"), ("e4m3fnuz", "float8_e4m3fnuz"), ("e5m2", "float8_e5m2"),
    ("e5m2fnuz", "float8_e5m2fnuz"), ("e3m4", "float8_e3m4"), ("e4m3", "float8_e4m3"),
    ("e4m3b11fnuz", "float8_e4m3b11fnuz"), ("bf16", "bfloat16"), ("e2m3fn", "float6_e2m3fn"),
    ("e3m2fn", "float6_e3m2fn"), ("e2m1fn", "float4_e2m1fn")])
def test_values_match_ml_dtypes(ml_dtypes, name, dtype_name):
    """quantize(x) == x.astype(ml type).astype(float32) on edge and random inputs (NaN: both NaN)."""
    fmt = emul.format(name)
    rng = np.random.default_rng(3)
    x = _f32(np.r_[_edge_inputs(fmt, rng), rng.integers(0, 1 << 32, 1 << 18, dtype=np.uint64).astype(np.uint32)])
    if not fmt.has_nan:
        x = x[~np.isnan(x)]
    with np.errstate(invalid="ignore"):
        want = x.astype(getattr(ml_dtypes, dtype_name)).astype(np.float32)
    got = quantize(x, name)
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan)
    np.testing.assert_array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32))


# -- stochastic rounding ---------------------------------------------------------------------------

SR_BITS = [1, 2, 7, 8, 23, 24, 31, 32]
SR_FORMATS = FORMATS + ["e8m22", "e8m23-nosub"]  # shift 1 above min_normal (t = f << 31 at r = 32)
SR_METHODS = ["add", "compare"]


def _sr_t(x, fmt, r):
    """t = floor(f * 2**r) for the fraction f of |x| below the format's quantum (0 if not finite):
    SR rounds up iff t + u >= 2**r ("add") or u < t ("compare"). Exact in float64."""
    with np.errstate(invalid="ignore"):  # signalling NaNs
        a = np.abs(x.astype(np.float64))
    ok = np.isfinite(a) & (a > 0)
    a = np.where(ok, a, 1.0)
    e = np.frexp(a)[1] - 1  # a in [2**e, 2**(e + 1))
    normal = e >= fmt.emin
    qe = np.where(normal, e - fmt.man_bits, fmt.emin - fmt.man_bits if fmt.subnormals else fmt.emin)
    scaled = np.ldexp(a, -qe)
    t = np.floor(np.ldexp(scaled - np.floor(scaled), r)).astype(np.int64)
    return np.where(ok, t, 0)


def _sr_words(t, r, method, rng, k):
    """k words per input (k x len(t), word j of input i at [j, i]): both sides of each input's
    boundary, the extremes 0 and 2**r - 1, and random words."""
    top = (1 << r) - 1
    edge = (1 << r) - t if method == "add" else t  # the smallest word that rounds up (add) / down
    cols = [edge, edge - 1, np.zeros_like(t), np.full_like(t, top)]
    cols += [rng.integers(0, top + 1, t.size, dtype=np.int64) for _ in range(k - len(cols))]
    return np.clip(np.stack(cols[:k]), 0, top).astype(np.uint32)


def _sr_oracle(x, words, P, out_dtype):
    out = np.empty(x.size, np.float64 if np.dtype(out_dtype).kind == "f" else np.uint64)
    with np.errstate(invalid="ignore"):
        wide = x.astype(np.float64)
    _round_serial(wide, words, P, out)
    return out.astype(out_dtype)


def _assert_same(got, want, what):
    assert got.dtype == want.dtype, what
    g = got.view(got.dtype.str.replace("f", "u"))
    e = want.view(g.dtype)
    bad = np.flatnonzero(g != e)
    assert bad.size == 0, f"{what}: {bad.size} mismatches at {bad[:4]}: got {g[bad[:4]]}, want {e[bad[:4]]}"


def _sr_calls(fmt):
    fits = fmt.emax <= 127  # else quantize returns float64, by the general path
    f32 = np.dtype(np.float32)
    return [(encode, code_dtype(fmt))] + ([(quantize, f32)] if fits else [])


@pytest.mark.parametrize("name", SR_FORMATS)
def test_sr_random_bits_equal_general_kernel(name):
    """random_bits=: every edge input with words on both sides of its SR boundary (full formula),
    random patterns with random words, and blocks of copies of edge inputs (short formula)."""
    fmt = emul.format(name)
    rng = np.random.default_rng(abs(hash(name)) % 2**32 + 1)
    edges = _f32(_edge_inputs(fmt, rng))
    if not fmt.has_nan:
        edges = edges[~np.isnan(edges)]
    for i, (method, r) in enumerate((m, r) for m in SR_METHODS for r in SR_BITS):
        ovf = OVERFLOWS[(i + (method == "add")) % 2]  # both rules with every method
        P = kernel_params(fmt, Rounding.STOCHASTIC, ovf, r, method == "compare")
        rand = _f32(rng.integers(0, 1 << 32, 1 << 12, dtype=np.uint64))
        if not fmt.has_nan:
            rand = rand[~np.isnan(rand)]
        picks = rng.choice(edges.size, min(edges.size, 96), replace=False)
        t_edges, t_picks = _sr_t(edges, fmt, r), _sr_t(edges[picks], fmt, r)
        x = np.concatenate([np.tile(edges, 4), rand, np.repeat(edges[picks], F.BLOCK)])
        u = np.concatenate([_sr_words(t_edges, r, method, rng, 4).reshape(-1),
                            rng.integers(0, 1 << r, rand.size, dtype=np.uint64).astype(np.uint32),
                            _sr_words(t_picks, r, method, rng, F.BLOCK).T.reshape(-1)])
        for call, dt in _sr_calls(fmt):
            got = call(x, fmt, "stochastic", ovf, random_bits=u, sr_bits=r, sr_method=method)
            _assert_same(got, _sr_oracle(x, u, P, dt), f"{call.__name__} {fmt.name} {method} r={r} {ovf.value}")


SEEDED_FORMATS = ["e4m3fn", "e5m2", "e4m3fnuz", "bf16", "fp16", "fp32", "e2m1fn", "e4m3fn-nosub",
                  "e3m0fin", "e4m3b-2", "e3m2b-140fin", "e10m21b100"]


@pytest.mark.parametrize("name", SEEDED_FORMATS)
def test_sr_seeded_equals_general_kernel(name):
    """seed=/key=: threefry words drawn in the fast kernel equal round_seeded's, at sizes around
    the block length (tails) and on data with rare elements."""
    fmt = emul.format(name)
    rng = np.random.default_rng(11)
    edges = _f32(_edge_inputs(fmt, rng))
    if not fmt.has_nan:
        edges = edges[~np.isnan(edges)]
    normal = (rng.standard_normal(5 * F.BLOCK + 17) * 10).astype(np.float32)
    inputs = [edges, normal, normal[:1], normal[:F.BLOCK - 1], normal[:F.BLOCK], normal[:F.BLOCK + 1]]
    for method in SR_METHODS:
        for r in (1, 8, 32):
            P = kernel_params(fmt, Rounding.STOCHASTIC, Overflow.IEEE, r, method == "compare")
            for j, x in enumerate(inputs):
                seed = 1000 * r + j
                k = emul.random.key(seed)
                for call, dt in _sr_calls(fmt):
                    out = np.empty(x.size, np.float64 if dt.kind == "f" else np.uint64)
                    _round_seeded(exact_float64(x), np.uint32(k[0]), np.uint32(k[1]), 0, P, out)
                    want = out.astype(dt)
                    what = f"{call.__name__} {fmt.name} {method} r={r} n={x.size}"
                    got = call(x, fmt, "stochastic", seed=seed, sr_bits=r, sr_method=method)
                    _assert_same(got, want, what)
                    if j == 0:  # key= and a 2-d shape: the same words (C order)
                        got = call(x[: x.size // 2 * 2].reshape(2, -1), fmt, "stochastic", key=k, sr_bits=r,
                                   sr_method=method)
                        _assert_same(got.reshape(-1), want[: x.size // 2 * 2], what + " key=")


def test_sr_nan_inputs_raise_without_nan():
    x = np.array([1.0, np.nan, -np.nan, 2.5], np.float32)
    for kw in ({"seed": 3}, {"random_bits": np.zeros(4, np.uint32)}):
        with pytest.raises(ValueError, match="2 NaN value"):
            encode(x, "e2m1fn", "stochastic", sr_bits=8, **kw)


def test_inline_threefry_equals_threefry_kernel():
    """intrinsics.threefry_word (32-bit lanes) == threefry.threefry2x32, counters with high words;
    and the block draw of the seeded kernels at a start beyond 2**32."""
    rng = np.random.default_rng(5)
    draw = numba.njit(lambda k0, k1, hi, lo: threefry_word(k0, k1, hi, lo))
    ref = numba.njit(lambda k0, k1, hi, lo: T.threefry2x32(k0, k1, hi, lo))
    for k0, k1, hi, lo in rng.integers(0, 1 << 32, (64, 4), dtype=np.uint64).astype(np.uint32):
        y0, y1 = ref(k0, k1, hi, lo)
        assert draw(k0, k1, hi, lo) == y0 ^ y1
    from emul._kernels.draw import draw as block_draw

    start = 3 * 2**32 + 5 * F.BLOCK
    buf = np.empty(F.BLOCK, np.uint32)
    block_draw(buf, np.uint32(7), np.uint32(9), start, F.BLOCK, 0)  # shift 0: 32 SR bits
    want = [np.bitwise_xor(*ref(np.uint32(7), np.uint32(9), np.uint32(start >> 32), np.uint32((start + j) % 2**32)))
            for j in range(F.BLOCK)]
    np.testing.assert_array_equal(buf, np.array(want, np.uint32))


# -- float64 inputs (emul/_kernels/fast_f64.py) ------------------------------------------------------

F64_FORMATS = ["e4m3fn", "e4m3fnuz", "e5m2", "bf16", "fp16", "fp32", "fp64", "e2m1fn", "e4m3fn-nosub",
               "e3m0fin", "e8m0fn", "e10m21b100", "e4m3b-2"]


def _f64_edges(fmt, rng):
    """float64 patterns around fmt's code values and midpoints (±2 ulp), float64 specials,
    subnormals and random patterns, both signs."""
    n_mag = 1 << (fmt.bits - 1)
    mags = np.arange(n_mag, dtype=np.uint64) if fmt.bits <= 10 else \
        np.unique(np.r_[0:128, n_mag - 128:n_mag, rng.integers(0, n_mag, 600)]).astype(np.uint64)
    if not fmt.subnormals:
        mags = mags[(mags >> np.uint64(fmt.man_bits) != 0) | (mags == 0)]
    values = emul.decode(mags, fmt)
    values = np.unique(values[np.isfinite(values)])
    mids = (values[:-1] + values[1:]) / 2  # exact unless fmt has 53-bit significands (then close)
    with np.errstate(over="ignore"):
        centres = np.abs(np.r_[values, mids, values[-1] * 2, values[0] + values[1] / 4, values[-1] * (1 + 2.0**-52)])
    base = centres.view(np.uint64).astype(np.int64)
    near = np.clip((base[:, None] + np.arange(-2, 3)).reshape(-1), 0, 0x7FF0000000000000)
    specials = np.array([0, 1, 2, 0xFFFFFFFFFFFFF, 0x10000000000000, 0x7FEFFFFFFFFFFFFF, 0x7FF0000000000000,
                         0x7FF0000000000001, 0x7FF8000000000000, 0x3FF0000000000000], np.int64)
    rand = rng.integers(0, 1 << 63, 512, dtype=np.uint64).astype(np.int64)
    mag = np.unique(np.r_[near, specials, rand]).astype(np.uint64)
    return np.r_[mag, mag | np.uint64(1 << 63)].view(np.float64)


def _general(x, P, out_dtype, u=None):
    out = np.empty(x.size, np.float64 if np.dtype(out_dtype).kind == "f" else np.uint64)
    nan_bad, _ = _round_serial(x, np.zeros(1, np.uint32) if u is None else u, P, out)
    return out.astype(out_dtype), nan_bad


def _compare_calls(x, fmt, mode, ovf, P, extra=None, u=None):
    """encode and quantize of float64 x (fast path) == the general kernel, bit for bit; NaN inputs
    of a format without NaN raise with their count."""
    kw = extra or {}
    for call, dt in ((encode, code_dtype(fmt)), (quantize, np.dtype(np.float64))):
        want, nan_bad = _general(x, P, dt, u)
        xs, w = x, want
        if nan_bad:
            with pytest.raises(ValueError, match=f"{nan_bad} NaN value"):
                call(x, fmt, mode, ovf, **kw)
            keep = ~np.isnan(x)
            xs, w = x[keep], want[keep]
            if u is not None:
                kw = dict(kw, random_bits=u[keep])
        _assert_same(call(xs, fmt, mode, ovf, **kw), w, f"{call.__name__} {fmt.name} {mode} {ovf}")


@pytest.mark.parametrize("name", F64_FORMATS)
def test_f64_fast_path_equals_general_kernel(name):
    """float64 -> float formats, every deterministic mode, ieee and saturate: edges, edges in
    blocks of copies (short formula), random patterns and random normals."""
    fmt = emul.format(name)
    from emul._kernels import fast_f64
    from emul.quantize import _plan

    assert _plan(fmt, "nearest_even", None, None, "add", np.dtype(np.float64), True)[0] == "f64"
    rng = np.random.default_rng(abs(hash(name)) % 2**32 + 3)
    edges = _f64_edges(fmt, rng)
    picks = edges[rng.choice(edges.size, 40, replace=False)]
    x = np.r_[edges, np.repeat(picks, fast_f64.BLOCK), rng.standard_normal(3000) * fmt.max / 4]
    for mode in MODES:
        for ovf in OVERFLOWS:
            _compare_calls(x, fmt, mode, ovf, kernel_params(fmt, mode, ovf, 0, False))


@pytest.mark.parametrize("name", ["e4m3fn", "bf16", "fp16", "e2m1fn", "fp32", "e4m3fn-nosub"])
def test_f64_sr_equals_general_kernel(name):
    """float64 SR: random_bits on both sides of each edge input's boundary (rare and short
    formulas), and seed= against round_seeded (sizes around the block length)."""
    from emul._kernels import fast_f64

    fmt = emul.format(name)
    rng = np.random.default_rng(19)
    edges = _f64_edges(fmt, rng)
    edges = edges[np.isfinite(edges)]
    for method in SR_METHODS:
        for r in (1, 8, 32):
            P = kernel_params(fmt, Rounding.STOCHASTIC, Overflow.IEEE, r, method == "compare")
            t = _sr_t(edges, fmt, r)
            x = np.r_[np.tile(edges, 4), np.repeat(edges[:64], fast_f64.BLOCK)]
            u = np.r_[_sr_words(t, r, method, rng, 4).reshape(-1), _sr_words(t[:64], r, method, rng, fast_f64.BLOCK).T.reshape(-1)]
            _compare_calls(x, fmt, "stochastic", "ieee", P, dict(random_bits=u, sr_bits=r, sr_method=method), u)
            for n in (1, fast_f64.BLOCK + 1, 700):
                xs = rng.standard_normal(n) * 8
                k = emul.random.key(n + r)
                for call, dt in ((encode, code_dtype(fmt)), (quantize, np.dtype(np.float64))):
                    out = np.empty(n, np.float64 if dt.kind == "f" else np.uint64)
                    _round_seeded(xs, np.uint32(k[0]), np.uint32(k[1]), 0, P, out)
                    got = call(xs, fmt, "stochastic", key=k, sr_bits=r, sr_method=method)
                    _assert_same(got, out.astype(dt), f"seeded {call.__name__} {name} {method} r={r} n={n}")


def test_f64_where_ml_dtypes_double_rounds(ml_dtypes):
    """A float64 just above an e4m3fn midpoint: float64 -> float32 rounds it onto the midpoint and
    a float32 -> e4m3fn tie then goes to even (down); emul rounds once (up)."""
    x = np.array([1.0625 + 2.0**-40, -(1.0625 + 2.0**-40)])  # between 1.0 and 1.125, just above the tie
    assert list(encode(x, "e4m3fn")) == [0x39, 0xB9]
    assert list(quantize(x, "e4m3fn")) == [1.125, -1.125]
    assert list(x.astype(np.float32).astype(ml_dtypes.float8_e4m3fn).view(np.uint8)) == [0x38, 0xB8]


# -- float16 inputs: widened to float32 from their bits ---------------------------------------------

@pytest.mark.parametrize("name", ["e4m3fn", "e5m2", "e2m1fn", "fx<8,4>", "int8", "bf16", "fp64", "e3m2fn"])
def test_every_float16_input_equals_general_kernel(name):
    fmt = emul.format(name)
    x = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    for mode in (Rounding.NEAREST_EVEN, Rounding.DOWN, Rounding.NEAREST_AWAY):
        ovf = Overflow.SATURATE
        P = kernel_params(fmt, mode, ovf, 0, False)
        calls = [(encode, code_dtype(fmt))] + ([(quantize, np.dtype(np.float64))] if fmt.bits <= 53 else [])
        for call, dt in calls:
            want, nan_bad = _general(exact_float64(x), P, dt)
            keep = ~np.isnan(x) if nan_bad else np.ones(x.size, bool)
            _assert_same(call(x[keep], fmt, mode, ovf), want[keep], f"{call.__name__} {name} {mode.value}")


# -- fixed-point targets from float32 (emul/_kernels/fast_fixed.py) ----------------------------------

FIXED_FORMATS = ["fx<8,4>", "int8", "fx<16,8>", "uint8", "ufx<12,3>", "int1", "int2", "fx<31,0>", "ufx<31,5>",
                 "fx<4,-3>", "fx<10,126>", "fx<20,30>", "fx<6,-140>"]
FIXED_RULES = [Overflow.SATURATE, Overflow.SATURATE_ZERO, Overflow.SATURATE_SYMMETRIC, Overflow.WRAP,
               Overflow.WRAP_SIGN_MAGNITUDE]


def _fixed_edges(fmt, rng):
    """float32 patterns around every code value and midpoint (±2 ulp; sampled above 10 bits),
    around the range ends, float32 specials, subnormals and random patterns, both signs."""
    lo, hi = fmt.min_raw, fmt.max_raw
    raws = np.arange(lo, hi + 1) if fmt.bits <= 10 else np.r_[lo:lo + 64, -64:64, hi - 64:hi + 1,
                                                              rng.integers(lo, hi, 500)]
    raws = np.r_[raws, lo - 1, hi + 1, 2 * hi, 4 * hi + 3, 1000 * hi].astype(np.float64)
    vals = np.ldexp(np.r_[raws, raws + 0.5, raws - 0.5, raws + 0.25], -fmt.frac)
    with np.errstate(over="ignore"):
        centres = np.abs(vals).astype(np.float32)
    base = centres.view(np.uint32).astype(np.int64)
    near = np.clip((base[:, None] + np.arange(-2, 3)).reshape(-1), 0, 0x7F800000)
    rand = rng.integers(0, 1 << 31, 1024, dtype=np.uint64).astype(np.int64)
    mag = np.unique(np.r_[near, _specials().astype(np.int64), rand]).astype(np.uint32)
    return _f32(np.r_[mag, mag | np.uint32(1 << 31)])


@pytest.mark.parametrize("name", FIXED_FORMATS)
def test_fixed_fast_path_equals_general_kernel(name):
    """float32 -> fixed point, every deterministic mode and overflow rule; NaN (and inf under
    the wrap rules) raise with their counts."""
    from emul.quantize import _plan

    fmt = emul.format(name)
    assert _plan(fmt, "nearest_even", None, None, "add", np.dtype(np.float32), True)[0] == "fixed"
    rng = np.random.default_rng(abs(hash(name)) % 2**32 + 5)
    x = _fixed_edges(fmt, rng)
    for mode in MODES:
        for ovf in FIXED_RULES:
            if ovf == Overflow.WRAP_SIGN_MAGNITUDE and not fmt.signed:
                continue
            P = kernel_params(fmt, mode, ovf, 0, False)
            out = np.empty(x.size, np.uint64)
            nan_bad, inf_bad = _round_serial(x.astype(np.float64), np.zeros(1, np.uint32), P, out)
            assert nan_bad
            with pytest.raises(ValueError, match=f"{nan_bad} NaN value"):
                encode(x, fmt, mode, ovf)
            keep = ~np.isnan(x)
            if inf_bad:
                with pytest.raises(ValueError, match=f"{inf_bad} infinite value"):
                    encode(x[keep], fmt, mode, ovf)
                keep &= ~np.isinf(x)
            _assert_same(encode(x[keep], fmt, mode, ovf), out[keep].astype(code_dtype(fmt)),
                         f"encode {name} {mode.value} {ovf.value}")


# -- threads, sizes, 0-d ------------------------------------------------------------------------------

def test_results_do_not_depend_on_thread_count(monkeypatch):
    """Large inputs run as slices on the thread pool, each slice told its first element's index:
    1 and 2 threads (forced on a small input) give the bits of one call, for every fast route,
    seeded SR (words drawn per element index) and random_bits (sliced with the elements) included.
    Compiles nothing the default run lacks."""
    import sys

    Q = sys.modules["emul.quantize"]

    rng = np.random.default_rng(23)
    n = 2 * Q.SLICE_ALIGN + 77  # two slices on two threads, the second starting at 2**17
    x64 = rng.standard_normal(n) * 20
    x64[::97] = rng.standard_normal(x64[::97].size) * 1e-5  # rare elements
    x32 = x64.astype(np.float32)
    words = rng.integers(0, 256, n).astype(np.uint32)
    calls = [lambda: encode(x32, "e4m3fn"), lambda: quantize(x32, "bf16", "toward_zero"),
             lambda: encode(x32, "e5m2", "stochastic", seed=4, sr_bits=8),
             lambda: quantize(x32, "e5m2", "stochastic", sr_bits=8, random_bits=words),
             lambda: encode(x64, "e4m3fn"), lambda: quantize(x64, "fp16", "up"),
             lambda: encode(x64, "e4m3fn", "stochastic", seed=5, sr_bits=8),
             lambda: encode(x64, "e4m3fn", "stochastic", sr_bits=8, random_bits=words),
             lambda: encode(x32, "fx<8,4>", "down", "wrap"), lambda: encode(x32, "fx<16,8>")]
    serial = [c() for c in calls]  # one slice (below the thread threshold)
    monkeypatch.setattr(Q, "FAST_PARALLEL_MIN", 0)
    monkeypatch.setattr(Q, "_threads_pay", lambda: True)
    before = numba.get_num_threads()
    try:
        for threads in sorted({1, min(2, numba.config.NUMBA_NUM_THREADS)}):
            numba.set_num_threads(threads)
            for c, want in zip(calls, serial):
                _assert_same(c(), want, f"{threads} threads")
    finally:
        numba.set_num_threads(before)


@pytest.mark.parametrize("x", [np.float64(2.3), np.float32(-0.7), np.float16(3.1)])
def test_zero_d_and_empty(x):
    for fmt in ("e4m3fn", "fx<8,4>"):
        for call in (encode, quantize):
            got = call(np.asarray(x), fmt)
            assert got.shape == () and isinstance(got, np.ndarray)
            want = call(np.asarray([x]), fmt)[0]
            assert got.view(got.dtype.str.replace("f", "u")) == np.asarray(want).view(got.dtype.str.replace("f", "u"))
            assert np.isscalar(call(x, fmt)) or call(x, fmt).shape == ()
            assert call(np.empty((0, 3), x.dtype), fmt).shape == (0, 3)

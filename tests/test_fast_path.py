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
from emul.quantize import _fast_f32, code_dtype
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


def _oracle(x, P, out_dtype):
    """(result, number of NaNs rejected) of the general kernel, called as emul's general path does."""
    out = np.empty(x.size, np.float64 if np.dtype(out_dtype).kind == "f" else np.uint64)
    with np.errstate(invalid="ignore"):  # signalling NaNs
        wide = x.astype(np.float64)
    nan_bad, _ = K.round_serial(wide, np.zeros(1, np.uint32), P, out)
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
    K.round_serial(wide, words, P, out)
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
                    K.round_seeded(x, np.uint32(k[0]), np.uint32(k[1]), P, out)
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
    P = kernel_params(emul.format("e4m3fn"), Rounding.STOCHASTIC, Overflow.IEEE, 32, False)
    k = tuple(F.constants(P, emul.format("e4m3fn")))
    start = 3 * 2**32 + 5 * F.BLOCK
    buf = np.empty(F.BLOCK, np.uint32)
    F._draw(buf, k, np.uint32(7), np.uint32(9), start, F.BLOCK)
    want = [np.bitwise_xor(*ref(np.uint32(7), np.uint32(9), np.uint32(start >> 32), np.uint32((start + j) % 2**32)))
            for j in range(F.BLOCK)]
    np.testing.assert_array_equal(buf, np.array(want, np.uint32))

"""emul_jax.sparsity against emul.sparsity, bit for bit (uint32/uint16 views, never
assert_array_equal, which equates +0/-0 and NaNs): top-n masks, MVUE (exact and approx, same key),
transposable masks (greedy; optimal 2:4 against an exact brute force), eagerly, under jit, vmap and
grad, plus the integer soft-float against NumPy's IEEE arithmetic.

Inputs are adversarial on purpose: subnormals (XLA's CPU flushes them in float arithmetic and
compares), ties, +-0, NaN/inf, magnitudes from 2^-149 to 3.4e38 in one block, blocks that need
capping and the overflow guards."""

import itertools
from fractions import Fraction

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = jax.numpy
ml_dtypes = pytest.importorskip("ml_dtypes")

import emul.random as er  # noqa: E402
import emul.sparsity as sp  # noqa: E402
import emul_jax.sparsity as js  # noqa: E402


def _uint_view(a):
    a = np.asarray(a)
    return a.view({1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize])


def assert_bits_equal(got, want):
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    assert got.shape == want.shape, (got.shape, want.shape)
    g, w = _uint_view(got), _uint_view(want)
    bad = np.argwhere(g != w)
    assert bad.size == 0, f"{len(bad)} elements differ, first at {tuple(bad[0])}: {got[tuple(bad[0])]!r} vs {want[tuple(bad[0])]!r}"


def adversarial_f32(rng, nb, m):
    """(nb, m) float32 blocks, each from one of eight classes (plus 1% non-finite blocks)."""
    out = np.empty((nb, m), np.uint32)
    kind = rng.integers(0, 8, nb)
    for c in range(8):
        sel = kind == c
        k = int(sel.sum())
        sign = rng.integers(0, 2, (k, m)).astype(np.uint32) << 31
        if c == 0:  # random finite bit patterns
            b = rng.integers(0, 0x7F800000, (k, m)).astype(np.uint32) | sign
        elif c == 1:  # subnormals and +-0
            b = (rng.integers(0, 1 << 23, (k, m)).astype(np.uint32) >> rng.integers(0, 23, (k, m)).astype(np.uint32)) | sign
        elif c == 2:  # any exponent, short mantissas: huge dynamic range inside a block
            e = rng.integers(0, 255, (k, m)).astype(np.uint32)
            f = rng.integers(0, 1 << 23, (k, m)).astype(np.uint32) & ~np.uint32((1 << int(rng.integers(0, 23))) - 1)
            b = (e << 23) | f | sign
        elif c == 3:  # small integers: ties and exact capping decisions
            b = rng.integers(-4, 5, (k, m)).astype(np.float32).view(np.uint32)
        elif c == 4:  # near the float32 maximum (overflow guards) next to tiny values
            b = (np.float32(3.4e38) * rng.random((k, m)).astype(np.float32)).view(np.uint32)
            b[:, : m // 2] = rng.integers(0, 1 << 10, (k, m // 2)).astype(np.uint32)
        elif c == 5:  # ordinary gradients with zeros
            v = rng.standard_normal((k, m)).astype(np.float32)
            v[rng.random((k, m)) < 0.3] = 0
            b = v.view(np.uint32)
        elif c == 6:  # around the normal/subnormal boundary
            b = (0x00800000 + rng.integers(-1000, 1000, (k, m))).astype(np.uint32)
            b[rng.random((k, m)) < 0.2] = 0
        else:  # one dominant element (capped) at any scale
            v = rng.random((k, m)).astype(np.float32)
            v[:, int(rng.integers(0, m))] = 10 * m
            b = (v * np.float32(2.0) ** rng.integers(-140, 100, (k, 1)).astype(np.float32)).view(np.uint32)
        out[sel] = b
    bad = rng.random(nb) < 0.01
    out[bad, 0] = rng.choice(np.array([0x7F800000, 0xFF800000, 0x7FC00000, 0x7F800001], np.uint32), int(bad.sum()))
    return out.view(np.float32)


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(20240608)


# ----------------------------------------------------------------------------- integer soft-float


@pytest.mark.parametrize("fmt,npdt", [(js.F32, np.float32), (js.F16, np.float16)], ids=["f32", "f16"])
@pytest.mark.parametrize("op", ["add", "mul", "div"])
def test_soft_float_matches_numpy_ieee(fmt, npdt, op, rng):
    """The integer +, x, / on non-negative bit patterns equal NumPy's IEEE arithmetic (which
    keeps subnormals), special values included."""
    n = 1 << 14
    top = 1 << (fmt.ebits + fmt.mbits)
    a = rng.integers(0, top, n).astype(np.uint32)
    b = rng.integers(0, top, n).astype(np.uint32)
    a[: n // 4] >>= rng.integers(fmt.ebits, fmt.ebits + fmt.mbits, n // 4).astype(np.uint32)  # subnormal
    b[n // 4: n // 2] >>= rng.integers(fmt.ebits, fmt.ebits + fmt.mbits, n // 4).astype(np.uint32)
    for arr in (a, b):
        special = rng.random(n) < 0.03
        arr[special] = rng.choice(np.array([0, fmt.inf, fmt.qnan, 1, fmt.maxbits], np.uint32), int(special.sum()))
    fn = {"add": js._add, "mul": js._mul, "div": js._div}[op]
    got = np.asarray(jax.jit(lambda x, y: fn(x, y, fmt))(a, b))
    ut = np.uint32 if npdt == np.float32 else np.uint16
    fa, fb = a.astype(ut).view(npdt), b.astype(ut).view(npdt)
    with np.errstate(all="ignore"):
        want = {"add": fa + fb, "mul": fa * fb, "div": fa / fb}[op]
    nan = np.isnan(want)
    assert np.all(got[nan] == fmt.qnan)
    np.testing.assert_array_equal(got[~nan], want[~nan].view(ut).astype(np.uint32))


# ----------------------------------------------------------------------------- top-n masks

NM_TABLE = [  # block, n, ties, expected kept (as the core's own table)
    ((1, -4, 3, 2), 2, "low_index", (0, 1, 1, 0)),
    ((0, 0, 0, 0), 2, "high_index", (0, 0, 1, 1)),
    ((5, -5, 5, 1), 2, "high_index", (0, 1, 1, 0)),
    ((-0.0, 0.0, 1, 0), 2, "low_index", (1, 0, 1, 0)),
    ((np.nan, 1e30, np.inf, 2), 2, "low_index", (1, 0, 1, 0)),
    (tuple(np.array([1, 3, 2, 0]) * 2.0**-149), 2, "low_index", (0, 1, 1, 0)),  # subnormals: XLA flushes them
    ((-1e-45, 1e-45, -0.0, 1e-45), 1, "high_index", (0, 0, 0, 1)),
]


@pytest.mark.parametrize("block,n,ties,expected", NM_TABLE)
def test_nm_mask_table(block, n, ties, expected):
    x = np.array(block, np.float32)
    got = js.nm_mask(x, n, 4 if len(block) == 4 else len(block), ties=ties)
    np.testing.assert_array_equal(np.asarray(got), np.array(expected, bool))
    assert_bits_equal(js.nm_prune(x, n, len(block), ties=ties), sp.nm_prune(x, n, len(block), ties=ties))


def test_nm_mask_and_prune_match_core(rng):
    """Every dtype, both tie rules, m up to 32 (the sorting path), axis 0 and -1, eagerly and jitted."""
    bits = adversarial_f32(rng, 96, 32).view(np.uint32)
    bits[:16, ::2] = bits[:16, 1::2]  # ties
    xf = bits.view(np.float32)
    with np.errstate(all="ignore"):
        arrays = [xf, xf.astype(np.float16), xf.astype(ml_dtypes.bfloat16), xf.astype(ml_dtypes.float8_e4m3fn),
                  (bits & 0xFF).astype(np.uint8).view(ml_dtypes.float8_e4m3fnuz), bits.view(np.int32),
                  (bits % 7).astype(np.int8) - 3, (bits % 5).astype(np.uint16), (bits % 2).astype(bool)]
    configs = [(arrays[0], n, m, ties, -1) for n, m in [(2, 4), (4, 8), (5, 32)] for ties in ("low_index", "high_index")]
    configs += [(arrays[0], 2, 4, "low_index", 0), (arrays[0], 5, 32, "high_index", 0)]
    configs += [(x, 2, 4, ties, -1) for x in arrays[1:] for ties in ("low_index", "high_index")]
    for x, n, m, ties, axis in configs:
        assert_bits_equal(js.nm_mask(x, n, m, axis=axis, ties=ties), sp.nm_mask(x, n, m, axis=axis, ties=ties))
        assert_bits_equal(js.nm_prune(x, n, m, axis=axis, ties=ties), sp.nm_prune(x, n, m, axis=axis, ties=ties))
    f = jax.jit(lambda v: (js.nm_mask(v, 2, 4, ties="high_index"), js.nm_prune(v, 2, 4)))
    m_, p_ = f(xf)
    assert_bits_equal(m_, sp.nm_mask(xf, 2, 4, ties="high_index"))
    assert_bits_equal(p_, sp.nm_prune(xf, 2, 4))


def test_nm_prune_gradient_is_the_mask_and_vmap(rng):
    x = rng.standard_normal((3, 4, 8)).astype(np.float32)
    c = rng.standard_normal((4, 8)).astype(np.float32)
    g = jax.grad(lambda v: jnp.sum(js.nm_prune(v, 2, 4) * c))(x[0])
    np.testing.assert_array_equal(np.asarray(g), np.where(sp.nm_mask(x[0], 2, 4), c, 0))
    got = jax.vmap(lambda v: js.nm_prune(v, 2, 4, axis=0))(x)
    assert_bits_equal(got, np.stack([sp.nm_prune(v, 2, 4, axis=0) for v in x]))


# ----------------------------------------------------------------------------- MVUE

MVUE_SHAPE = (512, 16)  # one shape for every n:m below, so each configuration compiles once


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8), pytest.param(1, 2, marks=pytest.mark.slow),
                                 pytest.param(5, 16, marks=pytest.mark.slow), pytest.param(3, 4, marks=pytest.mark.slow)])
def test_mvue_exact_matches_core(n, m, rng):
    x = adversarial_f32(rng, MVUE_SHAPE[0] * MVUE_SHAPE[1] // m, m).reshape(MVUE_SHAPE)
    for seed in (0, 1):
        assert_bits_equal(js.mvue(x, n, m, key=jax.random.key(seed)), sp.mvue(x, n, m, seed=seed))


def test_mvue_approx_matches_core(rng):
    x = adversarial_f32(rng, MVUE_SHAPE[0] * 4, 4).reshape(MVUE_SHAPE)
    # one dominant element next to subnormals: 1 (/) R_first overflows to inf
    x[:40, :4] = np.array([1, 1e-45, 1e-45, 0], np.float32)
    x[40:80, :4] = np.array([-3e30, 4e-45, 0, 1e-44], np.float32)
    for seed in (0, 1):
        assert_bits_equal(js.mvue(x, 2, 4, key=jax.random.key(seed), method="approx"),
                          sp.mvue(x, 2, 4, seed=seed, method="approx"))


@pytest.mark.parametrize("dtype,method", [(np.float16, "approx"), (ml_dtypes.bfloat16, "exact"),
                                          pytest.param(np.float16, "exact", marks=pytest.mark.slow),
                                          pytest.param(ml_dtypes.bfloat16, "approx", marks=pytest.mark.slow)],
                         ids=["float16-approx", "bfloat16-exact", "float16-exact", "bfloat16-approx"])
def test_mvue_narrow_dtypes_match_core(dtype, method, rng):
    """float16/bfloat16: the core rounds every operation to the input dtype; so does emul_jax."""
    bits = rng.integers(0, 1 << 16, MVUE_SHAPE).astype(np.uint16)
    bits[rng.random(bits.shape) < 0.2] = 0
    bits[rng.random(MVUE_SHAPE[0]) < 0.3] &= 0x83FF if dtype == np.float16 else 0x807F  # subnormals
    x = bits.view(dtype)
    x[:8, :4] = np.array([0, 4.89e-06, 4.23e-06, -2.88e-05], dtype)  # float16: 1 (/) R_first overflows
    assert_bits_equal(js.mvue(x, 2, 4, key=jax.random.key(3), method=method), sp.mvue(x, 2, 4, seed=3, method=method))


def test_mvue_keys_jit_vmap_and_compile_once(rng):
    x = adversarial_f32(rng, 512 * 4, 4).reshape(MVUE_SHAPE)
    want = sp.mvue(x, 2, 4, seed=7)
    assert_bits_equal(js.mvue(x, 2, 4, seed=7), want)
    assert_bits_equal(js.mvue(x, 2, 4, key=er.key(7)), want)  # raw uint32[2] key
    assert_bits_equal(js.mvue(x, 2, 4, key=jax.random.key_data(jax.random.key(7))), want)
    # under jit and vmap, one key per batch element = one core call per element
    f = jax.jit(jax.vmap(lambda v, k: js.mvue(v, 2, 4, key=k)))
    xs = np.stack([x, x[::-1]])
    keys = jax.random.split(jax.random.key(5), 2)
    assert_bits_equal(f(xs, keys), np.stack([sp.mvue(xs[i], 2, 4, key=np.asarray(jax.random.key_data(keys[i])))
                                             for i in range(2)]))
    keys = jax.random.split(jax.random.key(6), 2)
    assert_bits_equal(f(xs[::-1], keys), np.stack([sp.mvue(xs[1 - i], 2, 4, key=np.asarray(jax.random.key_data(keys[i])))
                                                   for i in range(2)]))
    assert f._cache_size() == 1  # new data and new keys: no recompilation
    c = rng.standard_normal(MVUE_SHAPE).astype(np.float32)
    g = jax.grad(lambda v: jnp.sum(js.mvue(v, 2, 4, key=jax.random.key(1)) * c))(x)
    np.testing.assert_array_equal(np.asarray(g), c)  # straight-through identity


@pytest.mark.slow
def test_mvue_jit_approx_and_axis(rng):
    x = adversarial_f32(rng, 512 * 4, 4).reshape(MVUE_SHAPE)
    fa = jax.jit(lambda v, k: js.mvue(v, 2, 4, key=k, method="approx"))
    assert_bits_equal(fa(x, jax.random.key(7)), sp.mvue(x, 2, 4, seed=7, method="approx"))
    xt = np.ascontiguousarray(x.T)  # blocks along axis 0
    assert_bits_equal(js.mvue(xt, 2, 4, axis=0, key=jax.random.key(2)), sp.mvue(xt, 2, 4, axis=0, seed=2))


def fast_class_f32(rng, nb):
    """(nb, 4) float32 blocks that the float32 exact 2:4 fast path computes itself (no soft-float
    block): gradients with zeros at any scale, small integers (ties, exact capping decisions),
    a dominant element, the class's exponent bounds hit exactly, blocks with at most 2 non-zeros
    (subnormals allowed there) and non-finite blocks."""
    out = np.empty((nb, 4), np.float32)
    kind = rng.integers(0, 8, nb)
    for c in range(8):
        sel = kind == c
        k = int(sel.sum())
        if c == 0:
            v = rng.standard_normal((k, 4)) * 2.0 ** rng.integers(-100, 100, (k, 1))
            v[rng.random((k, 4)) < 0.3] = 0
        elif c == 1:
            v = rng.integers(-4, 5, (k, 4)).astype(np.float64)
        elif c == 2:
            v = rng.random((k, 4)) * rng.choice([-1, 1], (k, 4))
            v[np.arange(k), rng.integers(0, 4, k)] = rng.choice([3.0, 10.0, 2.0**20], k)
        elif c == 3:  # lowest exponent field 12 next to the widest allowed spread (field 128)
            v = np.stack([2.0**-115 * (1 + rng.random(k)), 2.0**1 * (1 + rng.random(k)),
                          2.0**-115 * np.ones(k), rng.random(k)], 1)
        elif c == 4:  # highest exponent field 243 (2^116), spread 116 below it
            v = np.stack([2.0**116 * (1 + rng.random(k)), 2.0**0 * np.ones(k), 2.0**116 * np.ones(k),
                          2.0**116 * (2 - 2.0**-23) * np.ones(k)], 1)
        elif c == 5:  # at most 2 non-zeros, subnormals included
            v = np.zeros((k, 4))
            v[:, 0] = rng.integers(1, 1 << 20, k) * 2.0**-149
            v[:, 3] = rng.standard_normal(k) * 1e38
        elif c == 6:  # equal magnitudes, one ulp apart
            v = 1 + rng.integers(0, 3, (k, 4)) * 2.0**-23
            v *= rng.choice([-1, 1], (k, 4))
        else:  # non-finite, with subnormals elsewhere in the block
            v = rng.integers(0, 1 << 20, (k, 4)) * 2.0**-149
            v[:, int(rng.integers(0, 4))] = rng.choice([np.inf, -np.inf, np.nan], k)
        out[sel] = v.astype(np.float32)
    return out


def test_random_words_equal_jax_random_bits():
    """emul_jax.quantize.random_words (the words of every SR and MVUE draw) is jax.random.bits."""
    from emul_jax.quantize import random_words
    for shape in [(), (1,), (3, 5)]:
        ours = jax.jit(lambda k, shape=shape: random_words(k, shape))
        theirs = jax.jit(lambda k, shape=shape: jax.random.bits(k, shape, jnp.uint32))
        for seed in (0, 2**32 - 1):
            key = jax.random.fold_in(jax.random.key(seed), 11)
            assert_bits_equal(ours(key), theirs(key))
    assert random_words(jax.random.key(0), (0, 2)).shape == (0, 2)
    keys = jax.random.split(jax.random.key(1), 3)
    assert_bits_equal(jax.jit(jax.vmap(lambda k: random_words(k, (4, 6))))(keys),
                      np.stack([er.bits(np.asarray(jax.random.key_data(k)), (4, 6)) for k in keys]))


def test_fast_division_is_correctly_rounded(rng):
    """The fast path's integer-corrected division equals IEEE float32 division (NumPy) on normal
    operands with quotients in [2^-119, 2]: random, exact quotients, binade edges."""
    n = 1 << 14
    r = (rng.random(n) + 1) * 2.0 ** rng.integers(-100, 100, n)
    q = np.where(rng.random(n) < 0.5, rng.random(n) * 2.0 ** -rng.integers(0, 119, n),
                 1 + rng.integers(-4, 5, n) * 2.0**-24)
    y = (r * q).astype(np.float32)
    r = r.astype(np.float32)
    y[: n // 8] = r[: n // 8] * rng.integers(1, 3, n // 8).astype(np.float32)  # 1 and 2 exactly
    y[n // 8: n // 4] = np.nextafter(r[n // 8: n // 4], np.float32(0))
    ok = (y > 0) & (y / r <= 2) & (y / r >= 2.0**-119) & (y >= 2.0**-126)
    y, r = y[ok], r[ok]
    want = (y / r).view(np.uint32)
    assert_bits_equal(jax.jit(js._div_rne_normal)(y.view(np.uint32), r.view(np.uint32)), want)

    def skewed(yb, rb, f):  # a reciprocal estimate off by f (an inexact division, e.g. on a GPU)
        mr, inv = js._divisor(rb)
        return js._div_rne_normal(yb, rb, (mr, inv * np.float32(f)))

    for f in (1 + 2.0**-21, 1 - 2.0**-21):
        assert_bits_equal(jax.jit(skewed, static_argnums=2)(y.view(np.uint32), r.view(np.uint32), f), want)


def test_mvue24_fast_codes_match_core_on_fast_blocks(rng):
    """Adversarial blocks: every block the fast path claims (not marked soft) has the core's
    bits; the others are marked soft (and a tensor holding one takes the soft path)."""
    x = np.concatenate([adversarial_f32(rng, 2048, 4), fast_class_f32(rng, 2048)])
    bits = x.view(np.uint32)
    for seed in (0, 1):
        words = er.bits(er.key(seed), (len(x),))
        code, v = jax.jit(lambda b, w: js._mvue24_f32_codes(list(b.T), w))(bits, words)
        code, v = np.asarray(code), np.asarray(v)
        got = np.stack([np.asarray(js._decode24(bits[:, i], i, code, v)) for i in range(4)], 1)
        want = sp.mvue(x, 2, 4, seed=seed).view(np.uint32)
        fast = (code & js._SOFT_BLOCK) == 0
        assert 0.2 < fast[:2048].mean() < 0.95 and fast[2048:].all()
        np.testing.assert_array_equal(got[fast], want[fast])


def test_mvue24_fast_path_matches_core(rng):
    """Tensors of fast-path blocks only (the soft path is not run), in both layouts: blocks along
    a major axis (jit + vmap) and along the last axis (eager)."""
    x = np.ascontiguousarray(fast_class_f32(rng, 768).reshape(16, 48, 4).transpose(0, 2, 1).reshape(64, 3, 16))
    keys = jax.random.split(jax.random.key(9), 2)
    xs = np.stack([x, -x])
    got = jax.jit(jax.vmap(lambda v, k: js.mvue(v, 2, 4, axis=0, key=k)))(xs, keys)
    assert_bits_equal(got, np.stack([sp.mvue(xs[i], 2, 4, axis=0, key=np.asarray(jax.random.key_data(keys[i])))
                                     for i in range(2)]))
    y = fast_class_f32(rng, 80).reshape(40, 8)
    assert_bits_equal(js.mvue(y, 2, 4, key=jax.random.key(4)), sp.mvue(y, 2, 4, seed=4))


def test_mvue_bad_arguments_like_core():
    x = np.ones((2, 4), np.float32)
    k = jax.random.key(0)
    for kwargs, exc in [(dict(n=3, m=2), ValueError), (dict(n=2, m=3), ValueError),
                        (dict(n=1, m=4, method="approx"), ValueError), (dict(n=2, m=4, method="fast"), ValueError),
                        (dict(n=2, m=4, axis=2), ValueError), (dict(n=2.0, m=4), TypeError)]:
        with pytest.raises(exc):
            sp.mvue(x, seed=0, **kwargs)
        with pytest.raises(exc):
            js.mvue(x, key=k, **kwargs)
    with pytest.raises(ValueError, match="key, seed"):
        js.mvue(x, 2, 4)
    with pytest.raises(TypeError, match="jax_enable_x64"):
        js.mvue(np.ones((2, 4), np.int32), 2, 4, key=k)


# ----------------------------------------------------------------------------- transposable masks

_PAIRS = list(itertools.combinations(range(4), 2))
_CANDS = sorted(
    tuple(sorted(i * 4 + c for i, p in enumerate(rows) for c in _PAIRS[p]))
    for rows in itertools.product(range(6), repeat=4)
    if all(sum(c in _PAIRS[p] for p in rows) == 2 for c in range(4))
)


def brute_optimal_24(tile):
    """Exact optimum of one 4x4 tile (Python integers: |w| * 2^149), first in lexicographic order."""
    mags = [int(abs(Fraction(float(v))) * 2**149) for v in tile]
    best = max(_CANDS, key=lambda c: (sum(mags[k] for k in c), [-k for k in c]))
    out = np.zeros(16, bool)
    out[list(best)] = True
    return out


def adversarial_tiles(rng, nt):
    t = np.empty((nt, 16))
    for i in range(nt):
        k = i % 6
        if k == 0:
            v = rng.standard_normal(16)
        elif k == 1:
            v = rng.integers(0, 4, 16).astype(float)  # many ties
        elif k == 2:
            v = 1 + rng.integers(0, 4, 16) * 2.0**-23  # ties broken by single ulps ...
            v[rng.integers(0, 16)] = 2.0**-140  # ... next to a subnormal
        elif k == 3:
            v = 2.0 ** rng.integers(-149, 125, 16).astype(float) * rng.integers(1, 8, 16)  # full range
        elif k == 4:
            v = rng.integers(0, 1 << 23, 16) * 2.0**-149  # subnormals only
        else:  # equal huge values; the subnormals decide
            v = np.where(rng.random(16) < 0.5, 3e38, 2e38)
            v[rng.integers(0, 16, 4)] = 1e-45 * rng.integers(1, 5, 4)
        t[i] = v * rng.choice([-1, 1], 16)
    return t.astype(np.float32)


def test_optimal_24_is_the_exact_optimum(rng):
    """Against a brute force in Python integers.  The first call has tiles spanning > 84 bits
    (10 limbs), the second only ordinary tiles (3 limbs): the same compiled program."""
    nt = 600
    tiles = adversarial_tiles(rng, nt)
    w = tiles.reshape(nt, 4, 4).transpose(1, 0, 2).reshape(4, 4 * nt)  # gemm: tile i = columns 4i..4i+3
    want = np.stack([brute_optimal_24(t) for t in tiles])
    got = np.asarray(js.transposable_mask(w, 2, 4)).reshape(4, nt, 4).transpose(1, 0, 2).reshape(nt, 16)
    np.testing.assert_array_equal(got, want)
    w2 = rng.standard_normal(w.shape).astype(np.float32)
    assert_bits_equal(js.transposable_mask(w2, 2, 4), sp.transposable_mask(w2, 2, 4))


def test_papers_b3_anchors():
    """PAPERS.md B.3: the suboptimal-greedy and the under-fill 4x4 tiles."""
    w = np.array([[22, 28, 3, 17], [1, 20, 6, 7], [21, 12, 27, 4], [19, 16, 26, 13]], np.float32)
    greedy = {(0, 0), (0, 1), (1, 1), (1, 3), (2, 0), (2, 2), (3, 2), (3, 3)}
    optimal = {(0, 1), (0, 3), (1, 1), (1, 3), (2, 0), (2, 2), (3, 0), (3, 2)}
    assert {tuple(i) for i in np.argwhere(np.asarray(js.transposable_mask(w, 2, 4, method="greedy")))} == greedy
    assert {tuple(i) for i in np.argwhere(np.asarray(js.transposable_mask(w, 2, 4)))} == optimal
    u = np.array([[19, 2, 18, 3], [9, 17, 16, 29], [27, 10, 8, 13], [25, 14, 24, 28]], np.float32)
    under = {(0, 2), (1, 1), (1, 3), (2, 0), (2, 1), (3, 0), (3, 3)}
    assert {tuple(i) for i in np.argwhere(np.asarray(js.transposable_mask(u, 2, 4, method="greedy")))} == under


@pytest.mark.parametrize("n,m,layout,shape", [
    (2, 4, "gemm", (64, 64)), (4, 8, "gemm", (16, 24)), (1, 4, "nchw", (3, 5, 7)), (4, 8, "nhwc", (4, 3, 3, 3)),
    pytest.param(2, 4, "gemm", (6, 10), marks=pytest.mark.slow), pytest.param(2, 4, "nhwc", (5, 2, 3), marks=pytest.mark.slow),
])
def test_greedy_matches_core(n, m, layout, shape, rng):
    w = adversarial_f32(rng, int(np.prod(shape)), 1).reshape(shape)
    w[~np.isfinite(w)] = 0
    w.reshape(-1)[: w.size // 3] = np.round(w.reshape(-1)[: w.size // 3])  # ties
    assert_bits_equal(js.transposable_mask(w, n, m, method="greedy", layout=layout),
                      sp.transposable_mask(w, n, m, method="greedy", layout=layout))


@pytest.mark.parametrize("layout,shape,dtype", [
    ("gemm", (6, 10), np.float32),
    pytest.param("nhwc", (4, 3, 3, 3), np.float32, marks=pytest.mark.slow),
    pytest.param("nchw", (3, 5, 7), np.float32, marks=pytest.mark.slow),
    pytest.param("gemm", (16, 16), np.int32, marks=pytest.mark.slow),
    pytest.param("gemm", (16, 16), ml_dtypes.bfloat16, marks=pytest.mark.slow)])
def test_optimal_24_layouts_match_core(layout, shape, dtype, rng):
    w = rng.standard_normal(shape).astype(dtype)
    assert_bits_equal(js.transposable_mask(w, 2, 4, layout=layout), sp.transposable_mask(w, 2, 4, layout=layout))


def test_transposable_dtypes_jit_vmap_and_host_path(rng):
    w = rng.standard_normal((3, 16, 16)).astype(np.float32)
    for x, method in ((w[0].astype(np.float16), "greedy"), (np.round(w[0] * 3).astype(np.int32), "greedy")):
        assert_bits_equal(js.transposable_mask(x, 2, 4, method=method), sp.transposable_mask(x, 2, 4, method=method))
    got = jax.jit(jax.vmap(lambda v: js.transposable_mask(v, 2, 4)))(w)
    assert_bits_equal(got, np.stack([sp.transposable_mask(v, 2, 4) for v in w]))
    # optimal 4:8 is a host call to the core (pure_callback), under jit and vmap too
    host = jax.jit(jax.vmap(lambda v: js.transposable_mask(v, 4, 8)))(w)
    assert_bits_equal(host, np.stack([sp.transposable_mask(v, 4, 8) for v in w]))
    assert_bits_equal(js.transposable_mask(w[0], 4, 4), np.ones((16, 16), bool))


def test_transposable_bad_arguments_like_core():
    w = np.ones((4, 4), np.float32)
    for args, kwargs, exc in [((3, 2), {}, ValueError), ((2, 4), dict(method="best"), ValueError),
                              ((2, 4), dict(layout="nhcw"), ValueError),
                              ((2, 4), dict(reference_early_stop=True), ValueError)]:
        with pytest.raises(exc):
            sp.transposable_mask(w, *args, **kwargs)
        with pytest.raises(exc):
            js.transposable_mask(w, *args, **kwargs)
    with pytest.raises(ValueError, match="layout='gemm' needs a 2-D weight"):
        js.transposable_mask(np.ones((2, 4, 4), np.float32), 2, 4)
    bad = w.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"non-finite value nan at index \(1, 2\)"):
        js.transposable_mask(bad, 2, 4)

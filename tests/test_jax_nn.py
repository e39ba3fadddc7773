"""emul_jax.nn (Flax NNX) and emul_jax.optim (optax): adapters, Range Batch-Norm, transposable-mask
schedules, gradient quantization and the single-rounding apply_updates.

Runs with ``jax_debug_key_reuse`` on. Bit comparisons are of uint32 views (never
``assert_array_equal``, which equates +0/-0 and NaNs). Models are tiny and every jitted
configuration compiles once.
"""

import subprocess
import sys

import numpy as np
import pytest

jax = pytest.importorskip("jax")
pytest.importorskip("flax")
optax = pytest.importorskip("optax")
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

import emul  # noqa: E402
import emul.random as er  # noqa: E402
import emul.sparsity as esp  # noqa: E402
import emul_jax  # noqa: E402
from emul_jax import nn as enn  # noqa: E402
from emul_jax import optim as eopt  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _key_reuse_checks():
    old = jax.config.jax_debug_key_reuse
    jax.config.update("jax_debug_key_reuse", True)
    yield
    jax.config.update("jax_debug_key_reuse", old)


def _bits(a):
    a = np.asarray(a)
    return a.view({2: np.uint16, 4: np.uint32}[a.dtype.itemsize])


def assert_bits_equal(got, want):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape and got.dtype == want.dtype, (got.shape, got.dtype, want.shape, want.dtype)
    bad = np.flatnonzero(_bits(got).ravel() != _bits(want).ravel())
    assert bad.size == 0, (f"{bad.size} of {got.size} differ, first at {bad[0]}: "
                           f"{got.ravel()[bad[0]]!r} vs {want.ravel()[bad[0]]!r}")


def _kd(key):
    return np.asarray(jax.random.key_data(key))


# ------------------------------------------------------------------------------ packaging


def test_emul_jax_imports_without_flax_and_optax():
    code = ("import sys; sys.modules['flax'] = None; sys.modules['optax'] = None\n"
            "import emul_jax\n"
            "assert 'emul_jax.nn' not in sys.modules and 'emul_jax.optim' not in sys.modules\n"
            "try:\n    import emul_jax.nn\nexcept ImportError:\n    pass\nelse:\n    raise SystemExit('nn imported')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


# ------------------------------------------------------------------------------ Range Batch-Norm


def _expected_range(n):
    """E[max - min] of n standard normals, by quadrature: 2 * integral of x n phi(x) Phi(x)^(n-1)."""
    from scipy.special import ndtr

    x = np.linspace(-10.0, 10.0, 200001)
    phi = np.exp(-x * x / 2) / np.sqrt(2 * np.pi)
    return 2.0 * np.trapezoid(x * n * phi * ndtr(x) ** (n - 1), x)


def _range_bn_reference(x_nhwc, constant, chunks=16, eps=1e-5):
    """The authors' code on the NCHW tensor: transpose(0,1).reshape(C, 16, -1), in float64."""
    x = np.transpose(np.asarray(x_nhwc, np.float64), (0, 3, 1, 2))
    c = x.shape[1]
    y = np.transpose(x, (1, 0, 2, 3)).reshape(c, chunks, -1)
    n = y.shape[-1]
    fix = 1 / np.sqrt(2 * np.log(n))
    if constant == "authors":
        fix *= 0.5 * 0.35 * (1 + np.sqrt(np.pi * np.log(4)))
    mu = y.reshape(c, -1).mean(-1)
    s = (y.max(-1).mean(-1) - y.min(-1).mean(-1)) * fix
    out = (x - mu[None, :, None, None]) / (s[None, :, None, None] + eps)
    return np.transpose(out, (0, 2, 3, 1)), mu, s


def test_range_bn_constants():
    assert round(enn.range_bn_constant(64, "paper"), 6) == 0.346734
    assert round(enn.range_bn_constant(64, "authors"), 6) == 0.187309
    assert round(enn.range_bn_constant(1024, "paper"), 6) == 0.268579
    assert round(enn.range_bn_constant(1024, "authors"), 6) == 0.145089
    with pytest.raises(ValueError, match="at least 2"):
        enn.range_bn_constant(1)


@pytest.mark.parametrize("constant", ["paper", "authors"])
def test_range_bn_matches_the_authors_formula(constant):
    rng = np.random.default_rng(1)
    # chunk maxima differ by position, so a wrong flattening order or chunking would show
    x = (rng.standard_normal((4, 4, 8, 3)) * np.arange(1, 5)[:, None, None, None]).astype(np.float32)
    bn = enn.RangeBatchNorm(3, constant=constant, rngs=nnx.Rngs(0))
    want, mu, s = _range_bn_reference(x, constant)
    np.testing.assert_allclose(np.asarray(bn(x)), want, rtol=2e-5, atol=2e-5)
    gmu, gs = bn.batch_statistics(jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(gmu), mu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(gs), s, rtol=1e-5)


def test_range_bn_approximates_batch_norm_on_gaussians():
    """On N(m, sigma^2) inputs RangeBN(x) = BN(x) * sigma_batch / (range * scale_fix); the expected
    range of n normals is d_n sigma, so the ratio is 1 / (d_n * scale_fix(n)) -- the documented
    constant: 0.600 ('paper': C(n) * range overestimates sigma by d_n / sqrt(2 ln n) = 1.67) and 1.111
    ('authors': 0.540208 C(n) * range = 0.90 sigma) at n = 128 (d_128 = 5.189). Tolerance: 3% on the mean over 16
    channels (the chunk-averaged range has about 3% relative spread per channel), 12% per channel."""
    rng = np.random.default_rng(2)
    c, n = 16, 128
    x = (rng.standard_normal((32, 8, 8, c)) * rng.uniform(0.5, 3.0, c) + rng.uniform(-2, 2, c)).astype(np.float32)
    bn = nnx.BatchNorm(c, use_running_average=False, momentum=0.9, rngs=nnx.Rngs(0))
    ref = np.asarray(bn(x)).reshape(-1, c)
    d_n = _expected_range(n)
    for constant in ("paper", "authors"):
        rbn = enn.RangeBatchNorm(c, constant=constant, rngs=nnx.Rngs(0))
        out = np.asarray(rbn(x)).reshape(-1, c)
        ratio = (out * ref).sum(0) / (ref * ref).sum(0)  # out = ratio * BN(x) per channel
        np.testing.assert_allclose(out, ref * ratio, atol=1e-3 * np.abs(ref).max())
        predicted = 1.0 / (d_n * enn.range_bn_constant(n, constant))
        assert abs(ratio.mean() / predicted - 1) < 0.03, (constant, ratio.mean(), predicted)
        assert np.all(np.abs(ratio / predicted - 1) < 0.12), (constant, ratio, predicted)
    assert abs(d_n - 5.189) < 1e-3
    assert abs(1.0 / (d_n * enn.range_bn_constant(n, "paper")) - 0.600) < 1e-3
    assert abs(1.0 / (d_n * enn.range_bn_constant(n, "authors")) - 1.111) < 1e-3


def test_range_bn_gradients_are_finite():
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.standard_normal((8, 4, 4, 5)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((8, 4, 4, 5)), jnp.float32)
    for kw in ({}, {"constant": "authors"}, {"quantize_fmt": "e4m3fn"}):
        bn = enn.RangeBatchNorm(5, rngs=nnx.Rngs(0), **kw)
        loss = lambda m, x: jnp.sum(m(x) * w)  # noqa: E731
        gm, gx = nnx.grad(loss, argnums=(0, 1))(bn, x)
        for g in (gx, gm.scale[...], gm.bias[...]):
            assert np.isfinite(np.asarray(g)).all() and np.abs(np.asarray(g)).max() > 0
        assert "mean" not in nnx.state(gm, nnx.Param)


def test_range_bn_running_statistics_and_eval():
    rng = np.random.default_rng(4)
    xs = [jnp.asarray(rng.standard_normal((16, 2, 2, 3)) * 2 + 1, jnp.float32) for _ in range(2)]
    for ema, momentum in (("flax", 0.1), ("pytorch", 0.1), ("flax", 0.99)):
        bn = enn.RangeBatchNorm(3, momentum=momentum, ema=ema, rngs=nnx.Rngs(0))
        mean, scale = np.zeros(3, np.float32), np.ones(3, np.float32)
        for x in xs:
            mu, s = (np.asarray(v) for v in bn.batch_statistics(x))
            bn(x)
            w_old = momentum if ema == "flax" else 1 - momentum
            mean, scale = w_old * mean + (1 - w_old) * mu, w_old * scale + (1 - w_old) * s
            np.testing.assert_allclose(np.asarray(bn.mean[...]), mean, rtol=1e-6, atol=1e-7)
            np.testing.assert_allclose(np.asarray(bn.scale_stat[...]), scale, rtol=1e-6)
        assert isinstance(bn.mean, nnx.BatchStat) and isinstance(bn.scale_stat, nnx.BatchStat)
        bn.eval()
        stored = np.asarray(bn.mean[...])
        out = np.asarray(bn(xs[0]))
        np.testing.assert_allclose(out, (np.asarray(xs[0]) - mean) / (scale + 1e-5), rtol=1e-5, atol=1e-5)
        assert_bits_equal(bn.mean[...], stored)  # eval: no update
    # the authors' default: 0.1 of the old value, 0.9 of the new
    bn = enn.RangeBatchNorm(3, rngs=nnx.Rngs(0))
    mu, _ = bn.batch_statistics(xs[0])
    bn(xs[0])
    np.testing.assert_allclose(np.asarray(bn.mean[...]), 0.9 * np.asarray(mu), rtol=1e-6)


def test_range_bn_input_checks():
    bn = enn.RangeBatchNorm(3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="multiple of chunks"):
        bn(jnp.ones((10, 3)))
    with pytest.raises(ValueError, match="at least 2"):
        bn(jnp.ones((16, 3)))
    with pytest.raises(ValueError, match="channels-last"):
        bn(jnp.ones((32, 4)))
    with pytest.raises(ValueError, match="float format .* or an integer format"):
        enn.RangeBatchNorm(3, quantize_fmt="fx<8,4>", rngs=nnx.Rngs(0))


def test_range_bn_quantized_inputs_and_affine():
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.standard_normal((32, 3)) * 3, jnp.float32)
    bn = enn.RangeBatchNorm(3, quantize_fmt="e4m3fn", rngs=nnx.Rngs(0))
    bn.scale[...] = jnp.array([1.1, 0.9, 1.3], jnp.float32)
    xq = emul_jax.quantize(x, "e4m3fn")
    mu, s = bn.batch_statistics(xq)
    sq = emul_jax.quantize(s, "e4m3fn")
    want = (xq - mu) / (sq + 1e-5) * emul_jax.quantize(bn.scale[...], "e4m3fn")
    np.testing.assert_allclose(np.asarray(bn(x)), np.asarray(want), rtol=1e-6, atol=1e-6)


def _gemmlowp_replay(x, lo, hi, fmt):
    """paper [C]'s asymmetric quantizer in NumPy float32 with emul's rounding (no subnormals occur)."""
    f = emul.format(fmt)
    f32 = np.float32
    rng = f32(hi - lo)
    s, r = f32(rng / f32(f.max - f.min)), f32(f32(f.max - f.min) / rng)
    y = f32((x - lo) * r) + f32(f.min)
    q = emul.quantize(y.astype(f32), fmt, overflow="saturate").astype(f32) - f32(f.min)
    return (q * s + lo).astype(f32)


def test_range_bn_integer_input_and_affine_quantization():
    """quantize_fmt="uint8": the input on paper [C]'s per-tensor grid over the mean per-sample
    [min, max] (kept as a running statistic for eval), scale/bias/s over their own [min, max]; bit for
    bit a NumPy replay with emul's rounding; gradients straight through; int8 gives the same grid."""
    rng = np.random.default_rng(7)
    x = np.asarray(rng.standard_normal((32, 2, 3)) * 2 + 1, np.float32)
    bn = enn.RangeBatchNorm(3, quantize_fmt="uint8", rngs=nnx.Rngs(0))
    bn.scale[...] = jnp.array([1.1, 0.9, 1.3], jnp.float32)
    bn.bias[...] = jnp.array([0.1, -0.2, 0.05], jnp.float32)
    def mean(v):  # pairwise float32 sum, then one division (by 32: exact)
        while len(v) > 1:
            v = (v[0::2] + v[1::2]).astype(np.float32)
        return np.float32(v[0] / np.float32(32))

    lo, hi = mean(x.reshape(32, -1).min(axis=1)), mean(x.reshape(32, -1).max(axis=1))
    assert [np.float32(v) for v in enn._per_sample_range(jnp.asarray(x))] == [lo, hi]
    xq = _gemmlowp_replay(x, lo, hi, "uint8")
    u8 = emul.format("uint8")
    assert np.array_equal(np.asarray(enn._gemmlowp(jnp.asarray(x), lo, hi, u8)).view(np.uint32), xq.view(np.uint32))
    assert len(np.unique(xq)) <= 256 and xq.min() >= lo - 1e-6 and xq.max() <= hi + 1e-6
    mu, s = bn.batch_statistics(jnp.asarray(xq))
    tq = [_gemmlowp_replay(np.asarray(v), np.min(v), np.max(v), "uint8") for v in (s, bn.scale[...], bn.bias[...])]
    want = (xq - np.asarray(mu)) / (tq[0] + np.float32(1e-5)) * tq[1] + tq[2]
    got = bn(jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(bn.input_range[...]), 0.9 * np.array([lo, hi]), rtol=1e-5)
    i8 = enn.RangeBatchNorm(3, quantize_fmt="int8", rngs=nnx.Rngs(0))
    i8.scale[...], i8.bias[...] = bn.scale[...], bn.bias[...]
    np.testing.assert_allclose(np.asarray(i8(jnp.asarray(x))), np.asarray(got), rtol=1e-6, atol=1e-6)
    ev = bn(jnp.asarray(x), use_running_average=True)  # the running range, not this batch's
    assert np.isfinite(np.asarray(ev)).all()
    dx = nnx.grad(lambda m, x: jnp.sum(m(x) ** 2), argnums=1)(bn, jnp.asarray(x))
    assert np.isfinite(np.asarray(dx)).all() and float(jnp.abs(dx).sum()) > 0


def test_range_bn_sr_output_gradient():
    """grad_fmt: training call t rounds dL/dy into e5m2 by SR with fold_in(K, t) of the module's own
    stream, then the float32 backward runs: the input gradient equals that of a plain RangeBatchNorm
    given the rounded cotangent, bit for bit, and the rounding is emul's."""
    rng = np.random.default_rng(6)
    x = jnp.asarray(rng.standard_normal((32, 3)), jnp.float32)
    c = jnp.asarray(rng.standard_normal((32, 3)) * 0.1, jnp.float32)
    bn = enn.RangeBatchNorm(3, grad_fmt="e5m2", rngs=nnx.Rngs(0, emul=5))
    plain = enn.RangeBatchNorm(3, rngs=nnx.Rngs(0))
    k0 = jax.random.fold_in(bn.grad_rngs.key[...], 0)

    def dx(m, ct):
        return nnx.grad(lambda m, x: jnp.sum(m(x) * ct), argnums=1)(m, x)

    got = dx(bn, c)
    assert int(bn.grad_rngs.count[...]) == 1
    qc = emul.quantize(np.asarray(c), "e5m2", "stochastic", key=_kd(k0))
    assert_bits_equal(got, dx(plain, jnp.asarray(qc)))
    assert not np.array_equal(_bits(got), _bits(dx(plain, c)))
    with pytest.raises(ValueError):
        enn.RangeBatchNorm(3, grad_fmt="e5m2", grad_rounding="bogus", rngs=nnx.Rngs(0))


# ------------------------------------------------------------------------------ transposable masks


def _blocks_ok(mask, n, m, axis):
    """Every block of m consecutive entries along ``axis`` keeps at most n."""
    a = np.moveaxis(np.asarray(mask), axis, -1)
    return bool((a.reshape(*a.shape[:-1], -1, m).sum(-1) <= n).all())


def test_transposable_mask_is_nm_both_ways():
    rng = np.random.default_rng(6)
    k_lin = rng.standard_normal((16, 8)).astype(np.float32)  # nnx.Linear kernel (in, out)
    mk = np.asarray(enn.transposable_kernel_mask(k_lin, 2, 4))
    assert _blocks_ok(mk, 2, 4, 0) and _blocks_ok(mk, 2, 4, 1) and mk.sum() > 0.4 * mk.size
    want = esp.transposable_mask(k_lin.T, 2, 4, method="greedy", layout="gemm").T
    np.testing.assert_array_equal(mk, want)
    k_conv = rng.standard_normal((3, 3, 8, 12)).astype(np.float32)  # nnx.Conv kernel HWIO
    mc = np.asarray(enn.transposable_kernel_mask(k_conv, 2, 4))
    assert _blocks_ok(mc, 2, 4, 2) and _blocks_ok(mc, 2, 4, 3)  # along in and along out, per tap
    oihw = np.transpose(k_conv, (3, 2, 0, 1))
    for layout in ("nchw", "nhwc"):
        got = np.asarray(enn.transposable_kernel_mask(k_conv, 2, 4, layout=layout))
        want = np.transpose(esp.transposable_mask(oihw, 2, 4, "greedy", layout), (2, 3, 1, 0))
        np.testing.assert_array_equal(got, want)


def test_transposable_schedule_recomputes_every_k_steps():
    rng = np.random.default_rng(7)
    ws = [jnp.asarray(rng.standard_normal((8, 8)), jnp.float32) for _ in range(8)]
    sched = enn.TransposableMask(ws[0], 2, 4, every=3)
    np.testing.assert_array_equal(np.asarray(sched.mask[...]), np.asarray(enn.transposable_kernel_mask(ws[0], 2, 4)))
    traces = []

    @nnx.jit
    def forward(s, w):
        traces.append(1)
        return s(w)

    prev = np.asarray(sched.mask[...])
    for t, w in enumerate(ws[1:], start=1):
        out = np.asarray(forward(sched, w))
        mask = np.asarray(sched.mask[...])
        assert int(sched.step[...]) == t
        if t % 3 == 0:
            np.testing.assert_array_equal(mask, np.asarray(enn.transposable_kernel_mask(w, 2, 4)))
            assert (mask != prev).any()
        else:
            np.testing.assert_array_equal(mask, prev)
        np.testing.assert_array_equal(out, np.where(mask, np.asarray(w), 0))  # this forward uses it
        prev = mask
    assert len(traces) == 1
    frozen = nnx.view(sched, deterministic=True)
    np.testing.assert_array_equal(np.asarray(frozen(ws[1])), np.where(prev, np.asarray(ws[1]), 0))
    sched.eval()
    forward(sched, ws[1])
    assert int(sched.step[...]) == len(ws) - 1  # eval / view: nothing counted, the stored mask


def test_transposable_mask_gradient_is_straight_through():
    rng = np.random.default_rng(8)
    w = jnp.asarray(rng.standard_normal((8, 8)), jnp.float32)
    c = jnp.asarray(rng.standard_normal((8, 8)), jnp.float32)
    sched = enn.TransposableMask(w, 2, 4, every=2)
    g = nnx.grad(lambda w, s: jnp.sum(s(w) * c), argnums=0)(w, sched)
    assert_bits_equal(g, c)  # pruned positions included: the dense weight gets the full gradient


# ------------------------------------------------------------------------------ optax


def test_apply_updates_rounds_once_bit_for_bit_with_the_core():
    rng = np.random.default_rng(9)
    key = jax.random.key(11)
    params = {"a": emul.quantize(rng.standard_normal((6, 5)).astype(np.float32), "bf16").astype(np.float32),
              "b": None,
              "c": emul.quantize(rng.standard_normal(7).astype(np.float32), "bf16").astype(np.float32)}
    updates = {"a": (rng.standard_normal((6, 5)) * 1e-3).astype(np.float32), "b": None,
               "c": (rng.standard_normal(7) * 1e-3).astype(np.float32)}
    got = jax.jit(lambda p, u, k: eopt.apply_updates(p, u, "bf16", key=k))(params, updates, key)
    assert got["b"] is None
    for i, name in enumerate(("a", "c")):
        want = emul.add(params[name], updates[name], "bf16", "stochastic", key=er.fold_in(_kd(key), i))
        assert_bits_equal(got[name], want.astype(np.float32))
    # deterministic mode: no key; bf16 leaves come back as bf16, bit-exact
    pb = {"w": jnp.asarray(params["a"], jnp.bfloat16)}
    out = eopt.apply_updates(pb, {"w": updates["a"]}, "bf16", rounding="nearest_even")
    assert out["w"].dtype == jnp.bfloat16
    want = emul.add(params["a"], updates["a"], "bf16").astype(np.float32)
    assert_bits_equal(np.asarray(out["w"], np.float32), want)
    with pytest.raises(ValueError, match="needs key"):
        eopt.apply_updates(params, updates, "bf16")
    with pytest.raises(ValueError, match="second rounding"):
        eopt.apply_updates(pb, {"w": updates["a"]}, "fp16", rounding="nearest_even")


def test_optax_apply_updates_double_rounds():
    # nearest-even: the float32 sum 1 + 2**-8 is a bf16 tie (rounded to even, 1.0); the exact sum is above it
    p, u = jnp.array([1.0]), jnp.array([2.0**-8 + 2.0**-30])
    once = eopt.apply_updates(p, u, "bf16", rounding="nearest_even")
    twice = emul_jax.quantize(optax.apply_updates(p, u), "bf16")
    assert float(once[0]) == 1 + 2.0**-7 and float(twice[0]) == 1.0
    # stochastic, same key, same words: u = j * 2**-15 - 2**-25 sits just below the SR grid point
    # j (8 SR bits at 1.0 in bf16); float32 rounds p + u up onto it, which moves the decision for
    # the word w = 256 - j. Every element is built so that it differs.
    key = jax.random.key(3)
    words = np.asarray(jax.random.bits(jax.random.fold_in(key, 0), (64,), jnp.uint32)) >> 24
    words = np.where(words == 0, 1, words)  # j = 256 - w must be in 1..255; w = 0 never differs
    j = 256 - words.astype(np.int64)
    u = (j * 2.0**-15 - 2.0**-25).astype(np.float32)
    p = np.ones(64, np.float32)
    assert (np.float32(1) + u == np.float32(1) + np.float32(j * 2.0**-15)).all()  # float32 rounds up
    once = np.asarray(eopt.apply_updates(p, u, "bf16", key=key, sr_bits=8))
    twice = np.asarray(emul_jax.quantize(optax.apply_updates(jnp.asarray(p), jnp.asarray(u)), "bf16", "stochastic",
                                         key=jax.random.fold_in(key, 0), sr_bits=8))
    w0 = np.asarray(jax.random.bits(jax.random.fold_in(key, 0), (64,), jnp.uint32)) >> 24
    differs = w0 != 0
    assert differs.sum() > 50
    assert (once[differs] == 1.0).all() and (twice[differs] == 1 + 2.0**-7).all()
    assert_bits_equal(once, emul.add(p, u, "bf16", "stochastic", key=er.fold_in(_kd(key), 0), sr_bits=8)
                      .astype(np.float32))


def test_quantize_gradients_uses_the_documented_keys():
    rng = np.random.default_rng(10)
    key = jax.random.key(5)
    grads = {"w": jnp.asarray(rng.standard_normal((4, 6)) * 1e-2, jnp.float32),
             "b": jnp.asarray(rng.standard_normal(6) * 1e-2, jnp.float32)}
    tx = eopt.quantize_gradients("e5m2", key=key)
    state = tx.init(grads)
    step = jax.jit(tx.update)
    leaves = jax.tree.leaves(grads)
    for t in range(2):
        out, state = step(grads, state)
        assert int(state.count) == t + 1
        for i, (g, q) in enumerate(zip(leaves, jax.tree.leaves(out))):
            k = jax.random.fold_in(jax.random.fold_in(key, t), i)
            assert_bits_equal(q, emul_jax.quantize(g, "e5m2", "stochastic", key=k))
            core_key = er.fold_in(er.fold_in(_kd(key), t), i)
            assert_bits_equal(q, emul.quantize(np.asarray(g), "e5m2", "stochastic", key=core_key))
    # in a chain, deterministic, bf16 leaves keep their dtype
    tx = optax.chain(eopt.quantize_gradients("bf16", "nearest_even"), optax.sgd(1.0))
    g16 = {"w": jnp.asarray(grads["w"], jnp.bfloat16)}
    upd, _ = tx.update(g16, tx.init(g16), g16)
    assert upd["w"].dtype == jnp.bfloat16
    with pytest.raises(ValueError, match="needs key"):
        eopt.quantize_gradients("e5m2")
    with pytest.raises(ValueError, match="only used"):
        eopt.quantize_gradients("e5m2", "nearest_even", key=key)


# ------------------------------------------------------------------------------ NNX adapters


def _callback_primitives(jaxpr_text):
    return [w for w in ("pure_callback", "io_callback", "debug_callback", "callback") if w in jaxpr_text]


def test_callback_detection_sees_nested_callbacks():
    """The negative control of the 'no host callbacks' checks: a callback two levels deep shows."""
    def f(x):
        inner = jax.jit(lambda v: jax.pure_callback(np.sin, jax.ShapeDtypeStruct((), jnp.float32), v))
        return jax.lax.cond(x > 0, inner, lambda v: v, x)

    assert _callback_primitives(str(jax.make_jaxpr(f)(jnp.float32(1.0))))


def test_adapter_keys_and_arguments(monkeypatch):
    """The adapter passes one key per call, fold_in(forked layer key, t), and Flax's arguments."""
    seen = []

    def fake_dot_general(lhs, rhs, dimension_numbers, cfg, *, key, precision=None, preferred_element_type=None,
                         out_sharding=None):
        seen.append((cfg, _kd(key), precision, preferred_element_type, out_sharding))
        return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                                   preferred_element_type=preferred_element_type)

    def fake_conv(lhs, rhs, window_strides, padding, *, cfg, key, **kw):
        seen.append((cfg, _kd(key), kw["precision"], kw["preferred_element_type"], kw["out_sharding"]))
        kw.pop("out_sharding")
        return jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding, **kw)

    monkeypatch.setattr(emul_jax, "dot_general", fake_dot_general, raising=False)
    monkeypatch.setattr(emul_jax, "conv_general_dilated", fake_conv, raising=False)
    rngs = nnx.Rngs(0, emul=7)
    stream_key = jax.random.key(7)
    lin = nnx.Linear(4, 3, dot_general=enn.dot_general_for("cfgA", rngs),
                     preferred_element_type=jnp.float32, precision=jax.lax.Precision.HIGHEST, rngs=rngs)
    conv = enn.QConv(2, 3, (3, 3), "cfgB", rngs=rngs)
    layer_keys = [jax.random.fold_in(stream_key, c) for c in (0, 1)]  # the forks, in construction order
    x = jnp.ones((2, 4))
    lin(x)
    lin(x)
    conv(jnp.ones((1, 5, 5, 2)))
    assert [s[0] for s in seen] == ["cfgA", "cfgA", "cfgB"]
    for (_, k, *_), (layer, t) in zip(seen, ((0, 0), (0, 1), (1, 0))):
        np.testing.assert_array_equal(k, _kd(jax.random.fold_in(layer_keys[layer], t)))
        np.testing.assert_array_equal(k, er.fold_in(er.fold_in(er.key(7), layer), t))  # NumPy replay
    assert seen[0][2] == jax.lax.Precision.HIGHEST and seen[0][3] == jnp.float32
    assert seen[2][3] is None
    # swapping into an existing model: same kinds of adapters, parameters untouched
    model = nnx.Sequential(nnx.Linear(4, 4, rngs=nnx.Rngs(1)), nnx.Linear(4, 2, rngs=nnx.Rngs(2)))
    before = jax.tree.map(np.asarray, nnx.state(model, nnx.Param))
    enn.quantize_model(model, "cfgC", rngs=nnx.Rngs(emul=3), only=lambda path, m: m.out_features != 2)
    assert isinstance(model.layers[0].dot_general, enn.DotGeneral)
    assert model.layers[1].dot_general is jax.lax.dot_general  # excluded by only=
    after = jax.tree.map(np.asarray, nnx.state(model, nnx.Param))
    jax.tree.map(np.testing.assert_array_equal, before, after)
    seen.clear()
    model(x)
    assert [s[0] for s in seen] == ["cfgC"]


# ------------------------------------------------------------------------------ training


class _MLP(nnx.Module):
    def __init__(self, rngs):
        self.l1 = nnx.Linear(8, 16, rngs=rngs)
        self.bn = enn.RangeBatchNorm(16, rngs=rngs)
        self.l2 = nnx.Linear(16, 4, rngs=rngs)

    def __call__(self, x):
        return self.l2(jax.nn.relu(self.bn(self.l1(x))))


def _data():
    rng = np.random.default_rng(12)
    x = rng.standard_normal((64, 8)).astype(np.float32)
    y = np.tanh(x @ rng.standard_normal((8, 4)).astype(np.float32))
    return jnp.asarray(x), jnp.asarray(y)


def _train(model, opt, steps, x, y):
    """Train ``steps`` steps under nnx.jit; (losses, traces, jaxpr text of one step)."""
    traces = []

    def body(model, opt, x, y):
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
        opt.update(model, grads)
        return loss

    @nnx.jit
    def step(model, opt, x, y):
        traces.append(1)
        return body(model, opt, x, y)

    graphdef, state = nnx.split((model, opt))

    def pure(state, x, y):
        m, o = nnx.merge(graphdef, state)
        return body(m, o, x, y), nnx.state((m, o))

    text = str(jax.make_jaxpr(pure)(state, x, y))
    losses = [float(step(model, opt, x, y)) for _ in range(steps)]
    return losses, len(traces), text


def test_mlp_trains_with_masks_range_bn_and_low_precision_weights():
    """Plain GEMMs (cfg=None) with transposable 2:4 schedules, RangeBN, bf16 weights with SR updates."""
    x, y = _data()
    model = _MLP(nnx.Rngs(0))
    for layer in (model.l1, model.l2):
        layer.kernel[...] = emul_jax.quantize(layer.kernel[...], "bf16")
    enn.sparsify_model(model, 2, 4, every=2, only=lambda path, m: m is model.l1)
    opt = enn.LowPrecisionOptimizer(model, optax.adam(0.02), wrt=nnx.Param, param_fmt="bf16",
                                    rngs=nnx.Rngs(emul=4))
    losses, traces, text = _train(model, opt, 8, x, y)
    assert np.isfinite(losses).all() and losses[-1] < 0.8 * losses[0], losses
    assert traces == 1 and not _callback_primitives(text)
    mask = model.l1.dot_general.mask
    assert int(mask.step[...]) == 8 and _blocks_ok(mask.mask[...], 2, 4, 0) and _blocks_ok(mask.mask[...], 2, 4, 1)
    for leaf in jax.tree.leaves(nnx.state(model, nnx.Param)):  # the stored weights are bf16 values
        assert_bits_equal(leaf, emul_jax.quantize(leaf, "bf16"))
    assert int(opt.step[...]) == 8 and int(opt.rngs.count[...]) == 8


def test_low_precision_optimizer_keys():
    """update t rounds leaf i with fold_in(fold_in(own, t), i), own = the fork of rngs['emul']."""
    model = nnx.Linear(3, 2, rngs=nnx.Rngs(1))
    model.kernel[...] = emul_jax.quantize(model.kernel[...], "bf16")
    opt = enn.LowPrecisionOptimizer(model, optax.sgd(0.01), wrt=nnx.Param, param_fmt="bf16",
                                    rngs=nnx.Rngs(emul=9))
    own = jax.random.fold_in(jax.random.key(9), 0)
    for t in range(2):
        before = jax.tree.map(np.asarray, nnx.state(model, nnx.Param))
        grads = nnx.grad(lambda m: jnp.sum(m(jnp.ones((1, 3))) ** 2))(model)
        updates = opt.update(model, grads)
        p_leaves, u_leaves = jax.tree.leaves(before), jax.tree.leaves(updates)
        for i, (p, u, q) in enumerate(zip(p_leaves, u_leaves, jax.tree.leaves(nnx.state(model, nnx.Param)))):
            core_key = er.fold_in(_kd(jax.random.fold_in(own, t)), i)
            assert_bits_equal(q, emul.add(p, np.asarray(u), "bf16", "stochastic", key=core_key).astype(np.float32))


def test_fp32_adapters_equal_the_plain_layers():
    """With fp32() the adapters (Linear and a strided, grouped Conv) give the plain layers' outputs
    and gradients; a deterministic config draws no key."""
    cfg = emul_jax.ops.fp32()
    rngs = nnx.Rngs(0, emul=1)
    conv = enn.QConv(4, 6, (3, 3), cfg, strides=(2, 1), padding="SAME", feature_group_count=2, rngs=rngs)
    lin = enn.QLinear(6, 3, cfg, rngs=rngs)
    plain_conv = nnx.Conv(4, 6, (3, 3), strides=(2, 1), padding="SAME", feature_group_count=2, rngs=nnx.Rngs(0))
    plain_lin = nnx.Linear(6, 3, rngs=nnx.Rngs(0))
    nnx.update(plain_conv, nnx.state(conv, nnx.Param))
    nnx.update(plain_lin, nnx.state(lin, nnx.Param))
    x = jnp.asarray(np.random.default_rng(13).standard_normal((2, 7, 5, 4)), jnp.float32)
    hi = jax.default_matmul_precision("highest")

    def loss(c, l, x):
        return jnp.sum(l(c(x)) ** 2)

    with hi:
        got = nnx.value_and_grad(loss, argnums=(0, 1, 2))(conv, lin, x)
        want = nnx.value_and_grad(loss, argnums=(0, 1, 2))(plain_conv, plain_lin, x)
    np.testing.assert_allclose(np.asarray(got[0]), np.asarray(want[0]), rtol=1e-5)
    g_got = jax.tree.leaves(nnx.state(got[1][0], nnx.Param)) + jax.tree.leaves(nnx.state(got[1][1], nnx.Param))
    g_want = jax.tree.leaves(nnx.state(want[1][0], nnx.Param)) + jax.tree.leaves(nnx.state(want[1][1], nnx.Param))
    for a, b in zip(g_got + [got[1][2]], g_want + [want[1][2]]):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
    assert int(conv.conv_general_dilated.rngs.count[...]) == 0  # fp32() needs no key


def test_mlp_with_emulated_adapters_trains():
    """An existing NNX MLP, quantized in place with w8a8g8 (8-bit weights/activations, 8-bit SR
    input gradients, bf16 weight gradients): nnx.jit + nnx.Optimizer(wrt=nnx.Param) + optax.adam,
    one key per layer call, one trace, no host callbacks, the loss falls."""
    x, y = _data()
    model = _MLP(nnx.Rngs(0))
    enn.quantize_model(model, emul_jax.ops.w8a8g8(), rngs=nnx.Rngs(emul=2))
    opt = nnx.Optimizer(model, optax.adam(0.02), wrt=nnx.Param)
    losses, traces, text = _train(model, opt, 6, x, y)
    assert np.isfinite(losses).all() and losses[-1] < 0.8 * losses[0], losses
    assert traces == 1 and not _callback_primitives(text)
    assert "shift_right_logical" in text  # the text includes the bodies of the nested emulated ops
    for layer in (model.l1, model.l2):
        assert int(layer.dot_general.rngs.count[...]) == 6  # one key per forward call
    assert int(model.bn.mean[...].shape[0]) == 16 and np.isfinite(np.asarray(model.bn.scale_stat[...])).all()

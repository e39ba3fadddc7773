"""emul_jax.ops: quantized dot_general / conv_general_dilated with custom VJPs.

What is shown here:

- configs are frozen, hashable values (equal after normalising names), validated with named errors;
- with fp32 formats and no masks the custom VJPs give the bits of ``jax.vjp`` of the plain lax ops
  (dense with batch/transposed dimensions; conv with strides, padding, dilations, feature and
  batch groups, other layouts, 1-D);
- the emulated-accumulator GEMMs of a convolution (im2col forward, transposed-convolution dX,
  correlation dW) have the geometry of the lax ops (a float32 accumulator agrees to rounding), and
  the forward equals ``emul.conv2d`` bit for bit;
- the 8-bit SR output gradient and MVUE gradients are unbiased: over many keys their mean falls
  within 6 standard errors of the float32 gradient at every element; top-n gradients do not;
- the STE variants of the accumulator on a hand-worked example (swamping, saturation); the
  pairwise order's STE against a NumPy replay of the tree; a convolution's STE equals the
  dot_general STE of its explicit im2col GEMM bit for bit;
- batch groups with emulated accumulators: the lax geometry, and the forward equals emul.conv2d
  per group bit for bit;
- one jit compilation across steps; keys checked with ``jax_debug_key_reuse``;
- a replay: forward and backward of a small dense layer (SR, absmax scaling, MVUE, e4m7 chunked and
  sequential accumulators with SR) reproduced in NumPy with ``emul`` from the same keys, bit for bit;
  slow: one whole training step of a 2-layer MLP (every GEMM on e4m7 chunked accumulators, optax
  SGD, weights stored in bf16 by SR) replayed the same way up to the updated weights.
"""

from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import emul
import emul_jax
from emul_jax import ops
from emul_jax.ops import Accumulator, DotConfig, GemmSpec, Operand, Sparsity

DN = (((1,), (0,)), ((), ()))


@pytest.fixture(autouse=True)
def _key_reuse():
    with jax.debug_key_reuse(True):
        yield


def bits(x):
    return np.asarray(x, np.float32).view(np.uint32)


def assert_bits(got, want):
    g, w = bits(got), bits(want)
    assert g.shape == w.shape, (g.shape, w.shape)
    bad = np.flatnonzero(g.reshape(-1) != w.reshape(-1))
    assert bad.size == 0, (f"{bad.size} of {g.size} differ; first at {bad[0]}: "
                           f"got {g.reshape(-1)[bad[0]]:#010x}, want {w.reshape(-1)[bad[0]]:#010x}")


def normal(seed, shape, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


F32 = np.float32


def ftz(v):
    """NumPy float32 with subnormals flushed to zeros of their sign (the quantizers' arithmetic)."""
    v = np.asarray(v, F32)
    return np.where(np.abs(v) < F32(2.0**-126), np.copysign(F32(0), v), v).astype(F32)


def np_scale(rng, qrange):
    """(s, r) = (range / qrange, qrange / range), each rounded once and flushed; 1 for a zero range."""
    s, r = ftz(emul.div(rng, F32(qrange), "fp32")), ftz(emul.div(F32(qrange), rng, "fp32"))
    zero = (s == 0) | np.isinf(r)
    return np.where(zero, F32(1), s).astype(F32), np.where(zero, F32(1), r).astype(F32)


def np_absmax(v, axis, fmt, **kw):
    """The absmax quantizer in NumPy: (q, s) with q = Q(x * r)."""
    v = ftz(v)
    s, r = np_scale(np.max(np.abs(v), axis=axis, keepdims=True), emul.format(fmt).max)
    return emul.quantize(ftz(v * r), fmt, **kw), s


# -- configs ------------------------------------------------------------------------------------------

def test_configs_are_frozen_hashable_values():
    a = Operand(format="e4m3fn", rounding="stochastic", scale="absmax")
    b = Operand(format=emul.format("e4m3fn"), rounding=emul.Rounding.STOCHASTIC, scale="absmax")
    assert a == b and hash(a) == hash(b)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.rounding = "nearest_even"
    assert ops.recipe("w8a8g8+mvue24") == ops.mvue24(ops.w8a8g8())
    assert len({ops.recipe(r) for r in ops.RECIPES}) == len(ops.RECIPES)
    assert not ops.fp32().needs_key and not ops.w8a8().needs_key
    assert ops.w8a8g8().needs_key and ops.mvue12().needs_key
    with pytest.raises(TypeError):
        Operand("e4m3fn")  # keyword-only


@pytest.mark.parametrize("make, match", [
    (lambda: Operand(format="e4m3fn", scale="range"), "scale='range'"),
    (lambda: Operand(scale="absmax"), "needs a format"),
    (lambda: Operand(format="fp64"), "fit float32"),
    (lambda: Operand(format="e4m3fn", overflow="wrap"), "Operand"),
    (lambda: Sparsity(n=3, m=2), "n=3"),
    (lambda: Sparsity(n=1, m=4, method="mvue", mvue_method="approx"), "approx"),
    (lambda: Accumulator(format="e4m7", order="chunked"), "chunk"),
    (lambda: Accumulator(format="e4m7", chunk=4), "chunk/outer"),
    (lambda: GemmSpec(product="e4m3fn"), "accumulator"),
    (lambda: DotConfig(fwd=GemmSpec(lhs="fwd")), "fwd.lhs='fwd'"),
    (lambda: DotConfig(transposable=True), "transposable"),
    (lambda: DotConfig(bifurcation=False, dlhs=GemmSpec(lhs=Operand(format="int8"))), "bifurcation=False"),
    (lambda: ops.recipe("w8a8+fp32"), "must come first"),
    (lambda: ops.recipe("int4"), "unknown part 'int4'"),
])
def test_config_errors(make, match):
    with pytest.raises((ValueError, NotImplementedError), match=match):
        make()


def test_call_errors():
    x, w = jnp.ones((4, 8)), jnp.ones((8, 4))
    with pytest.raises(ValueError, match="key=None"):
        ops.dot_general(x, w, DN, ops.w8a8g8())
    with pytest.raises(TypeError, match="DotConfig"):
        ops.dot_general(x, w, DN, None)
    with pytest.raises(TypeError, match="float"):
        ops.dot_general(jnp.ones((4, 8), jnp.int32), w, DN, ops.fp32())
    with pytest.raises(TypeError):
        ops.dot_general(x, jnp.ones((7, 4)), DN, ops.fp32())


# -- fp32 equals the plain lax ops and their VJPs, bit for bit ---------------------------------------

def _vjp_bits(f, g, args, seed):
    """Both under jit (XLA's summation order depends on how a dot is compiled, so eager and jitted
    float32 dots may differ in the last bit; compiled alike, they agree)."""
    run = lambda h: jax.jit(lambda a, b, ct: (lambda y, v: (y,) + v(ct))(*jax.vjp(h, a, b)))  # noqa: E731
    ct = normal(seed, jax.eval_shape(g, *args).shape)
    for a, b in zip(run(f)(*args, ct), run(g)(*args, ct)):
        assert_bits(a, b)


@pytest.mark.parametrize("ls, rs, dn", [
    ((6, 8), (8, 5), DN),
    ((8, 6), (5, 8), (((0,), (1,)), ((), ()))),                      # both contracting dims transposed
    ((3, 4, 8), (3, 8, 5), (((2,), (1,)), ((0,), (0,)))),             # a batch dimension
    ((2, 4, 3, 8), (3, 4, 5), (((1, 2), (1, 0)), ((), ()))),          # two contracting dims, reordered
    ((2, 3, 4), (4,), (((2,), (0,)), ((), ()))),                      # matrix-vector
])
def test_fp32_dot_general_equals_lax_vjp(ls, rs, dn):
    x, w = normal(1, ls), normal(2, rs)
    plain = lambda a, b: lax.dot_general(a, b, dn, precision=lax.Precision.HIGHEST)  # noqa: E731
    ours = lambda a, b: emul_jax.dot_general(a, b, dn, ops.fp32())  # noqa: E731
    _vjp_bits(ours, plain, (x, w), 3)


CONVS = [  # lhs shape, rhs shape, strides, padding, lhs_dil, rhs_dil, dimension numbers, fgc, bgc
    ((2, 4, 7, 6), (6, 4, 3, 3), (2, 1), ((1, 2), (0, 1)), None, (1, 2), None, 1, 1),
    ((2, 7, 7, 4), (3, 3, 2, 6), (2, 2), "SAME", None, None, ("NHWC", "HWIO", "NHWC"), 2, 1),
    ((2, 4, 5, 5), (4, 4, 2, 3), (1, 1), ((1, 1), (2, 0)), (2, 1), None, None, 1, 1),
    ((4, 2, 5, 5), (6, 2, 3, 3), (1, 2), "VALID", None, None, None, 1, 2),
    ((2, 9, 4), (3, 4, 5), (2,), "SAME", None, (2,), ("NWC", "WIO", "NWC"), 1, 1),
]


@pytest.mark.parametrize("case", range(len(CONVS)))
def test_fp32_conv_equals_lax_vjp(case):
    ls, rs, st, pad, ld, rd, dn, fgc, bgc = CONVS[case]
    x, w = normal(10 + case, ls), normal(20 + case, rs)
    kw = dict(lhs_dilation=ld, rhs_dilation=rd, dimension_numbers=dn, feature_group_count=fgc, batch_group_count=bgc)
    plain = lambda a, b: lax.conv_general_dilated(a, b, st, pad, precision=lax.Precision.HIGHEST, **kw)  # noqa: E731
    ours = lambda a, b: emul_jax.conv_general_dilated(a, b, st, pad, cfg=ops.fp32(), **kw)  # noqa: E731
    _vjp_bits(ours, plain, (x, w), 30 + case)


# -- emulated-accumulator convolutions: geometry, and the core's conv2d ------------------------------

WIDE = DotConfig(fwd=GemmSpec(accumulator=Accumulator(format="fp32")),
                 dlhs=GemmSpec(accumulator=Accumulator(format="fp32")),
                 drhs=GemmSpec(accumulator=Accumulator(format="fp32")))


@pytest.mark.parametrize("case", [0, 1, 3, pytest.param(2, marks=pytest.mark.slow),
                                  pytest.param(4, marks=pytest.mark.slow)])
def test_emulated_conv_has_the_lax_geometry(case):
    ls, rs, st, pad, ld, rd, dn, fgc, bgc = CONVS[case]
    x, w = normal(40 + case, ls), normal(50 + case, rs)
    kw = dict(lhs_dilation=ld, rhs_dilation=rd, dimension_numbers=dn, feature_group_count=fgc, batch_group_count=bgc)
    plain = lambda a, b: lax.conv_general_dilated(a, b, st, pad, precision=lax.Precision.HIGHEST, **kw)  # noqa: E731
    ours = lambda a, b: emul_jax.conv_general_dilated(a, b, st, pad, cfg=WIDE, **kw)  # noqa: E731
    y1, vjp1 = jax.vjp(ours, x, w)
    y2, vjp2 = jax.vjp(plain, x, w)
    ct = normal(60 + case, y2.shape)
    np.testing.assert_allclose(y1, y2, rtol=1e-5, atol=1e-5)
    for a, b in zip(vjp1(ct), vjp2(ct)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_emulated_conv_forward_equals_core_conv2d():
    x = emul.quantize(normal(70, (2, 3, 6, 5)), "e4m3fn")
    w = emul.quantize(normal(71, (4, 3, 3, 2)), "e4m3fn")
    acc = Accumulator(format="e4m7", order="chunked", chunk=5, rounding="stochastic", sr_bits=12)
    cfg = DotConfig(fwd=GemmSpec(accumulator=acc))
    key = jax.random.key(5)
    y = emul_jax.conv_general_dilated(x, w, (2, 1), ((1, 1), (0, 1)), cfg=cfg, key=key)
    kd = emul.random.fold_in(emul.random.fold_in(jax.random.key_data(key), ops.FWD), ops.ACC)
    # emul.conv2d pads symmetrically: pad the input by hand for this asymmetric case
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (0, 1)))
    want = emul.conv2d(xp, w, "e4m7", stride=(2, 1), order="chunked", chunk=5, rounding="stochastic", sr_bits=12,
                       key=kd)
    assert_bits(y, want)



@pytest.mark.parametrize("backward", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_emulated_conv_batch_groups_equal_core(backward):
    """batch_group_count=2 with e4m7 chunked SR accumulators: output features 3g … 3g+2 are
    emul.conv2d of samples 2g, 2g+1 with those filters, each output element with its own words of
    the call's stream; (slow) dW of group g is emul.matmul of G[:, 3g:3g+3] with those samples'
    im2col columns over (sample, position), sample outermost."""
    x = emul.quantize(normal(75, (4, 2, 5, 5)), "e4m3fn")
    w = emul.quantize(normal(76, (6, 2, 3, 3)), "e4m3fn")
    ct = emul.quantize(normal(77, (2, 6, 5, 3)), "e4m3fn")
    acc = Accumulator(format="e4m7", order="chunked", chunk=5, rounding="stochastic", sr_bits=12)
    cfg = DotConfig(fwd=GemmSpec(accumulator=acc), drhs=GemmSpec(accumulator=acc if backward else None))
    f = lambda a, b: emul_jax.conv_general_dilated(a, b, (1, 2), ((1, 1), (1, 1)), batch_group_count=2,  # noqa: E731
                                                   cfg=cfg, key=jax.random.key(12))
    y, _, dw = _vjp_jit(f, x, w, ct) if backward else (jax.jit(f)(x, w), None, None)
    kd = np.asarray(jax.random.key_data(jax.random.key(12)))
    sk = lambda g: emul.random.fold_in(emul.random.fold_in(kd, g), ops.ACC)  # noqa: E731
    kw = dict(order="chunked", chunk=5, rounding="stochastic", sr_bits=12)
    u = emul.random.bits(sk(ops.FWD), (2, 6, 5, 3, emul.accumulate.sr_steps(18, "chunked", 5))) >> np.uint32(20)
    want = [emul.conv2d(x[2 * g:2 * g + 2], w[3 * g:3 * g + 3], "e4m7", stride=(1, 2), padding=1,
                        random_bits=u[:, 3 * g:3 * g + 3], **kw) for g in range(2)]
    assert_bits(y, np.concatenate(want, axis=1))
    if not backward:
        return
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    cols = np.stack([xp[:, :, i:i + 5, j:j + 5:2] for i in range(3) for j in range(3)], axis=2).reshape(4, 18, 15)
    t = emul.accumulate.sr_steps(30, "chunked", 5)
    u = emul.random.bits(sk(ops.DRHS), (6, 18, t)) >> np.uint32(20)
    for g in range(2):
        a = ct[:, 3 * g:3 * g + 3].reshape(2, 3, 15).transpose(1, 0, 2).reshape(3, 30)
        b = cols[2 * g:2 * g + 2].transpose(0, 2, 1).reshape(30, 18)
        got = np.asarray(dw)[3 * g:3 * g + 3].reshape(3, 18)
        assert_bits(got, emul.matmul(a, b, "e4m7", random_bits=u[3 * g:3 * g + 3], **kw))


@pytest.mark.slow
def test_batch_group_ste_is_the_feature_group_ste():
    """batch_group_count=2 (NHWC) with a recursive-STE pairwise accumulator: forward and VJP equal
    bit for bit those of the convolution of the batch reshaped into 2 feature groups (x')."""
    x, w = normal(78, (4, 5, 5, 2), 4.0), normal(79, (3, 3, 2, 6))
    dn, st, pad = ("NHWC", "HWIO", "NHWC"), (1, 2), ((1, 1), (0, 1))
    cfg = DotConfig(fwd=GemmSpec(accumulator=Accumulator(format="e4m3", overflow="saturate", order="pairwise",
                                                         ste="recursive")))
    kind = ops._conv_kind(x.shape, w.shape, st, pad, None, None, dn, 1, 2)
    f = lambda a, b: emul_jax.conv_general_dilated(a, b, st, pad, dimension_numbers=dn,  # noqa: E731
                                                   batch_group_count=2, cfg=cfg)
    g = lambda a, b: emul_jax.conv_general_dilated(kind.to_features(a), b, st, pad,  # noqa: E731
                                                   dimension_numbers=("NCHW", "HWIO", "NHWC"), feature_group_count=2,
                                                   cfg=cfg)
    ct = normal(80, (2, 5, 2, 6))
    for a, b in zip(_vjp_jit(f, x, w, ct), _vjp_jit(g, x, w, ct)):
        assert_bits(a, b)

# -- unbiasedness: SR and MVUE gradients over many keys ----------------------------------------------

N_KEYS = 2000
Z = 6.0  # standard errors: P(|N(0,1)| > 6) = 2e-9 per element


def _grads(cfg, x, w, ct, keys):
    def one(k):
        _, vjp = jax.vjp(lambda a, b: emul_jax.dot_general(a, b, DN, cfg, key=k), x, w)
        return vjp(ct)
    return jax.jit(jax.vmap(one))(keys)


def _grad(cfg, x, w, ct, key=None):
    return jax.jit(lambda a, b, c: jax.vjp(lambda a, b: emul_jax.dot_general(a, b, DN, cfg, key=key), a, b)[1](c))(
        x, w, ct)


def _outside(samples, truth):
    """Per element: whether |mean - truth| exceeds Z standard errors (the sample standard deviation
    over sqrt(#keys)) plus atol = 1e-6 of the largest |truth| (the float32 roundings of the range
    arithmetic, a few ulps). Also returns the standard errors."""
    s = np.asarray(samples, np.float64)
    truth = np.asarray(truth, np.float64)
    se = s.std(0, ddof=1) / np.sqrt(s.shape[0])
    return np.abs(s.mean(0) - truth) > Z * se + 1e-6 * np.abs(truth).max(), se


@pytest.fixture(scope="module")
def layer():
    x = normal(80, (16, 12))
    w = normal(81, (12, 8), 0.3)
    ct = normal(82, (16, 8), 1e-3)  # neural gradients are small: the ranges must follow them
    return x, w, ct


def test_sr_output_gradient_is_unbiased(layer):
    """dX from the 8-bit SR output gradient (w8a8g8) vs dX from the float32 one with the same
    quantized weights (w8a8): the mean over the keys within Z standard errors at every element."""
    x, w, ct = layer
    dx, _ = _grads(ops.w8a8g8(), x, w, ct, jax.random.split(jax.random.key(1), N_KEYS))
    truth, _ = _grad(ops.w8a8(), x, w, ct)
    bad, se = _outside(dx, truth)
    assert se.min() > 0 and not bad.any()


def _mvue_case(cfg, layer, seed, truth_cfg=ops.fp32()):
    x, w, ct = layer
    dx, dw = _grads(cfg, x, w, ct, jax.random.split(jax.random.key(seed), N_KEYS))
    tx, tw = _grad(truth_cfg, x, w, ct)
    if not cfg.dlhs.lhs.stochastic:  # dX untouched (a vmapped dot sums in its own order)
        np.testing.assert_allclose(dx[0], tx, rtol=1e-5, atol=1e-9)
    bad, se = _outside(dw, tw)
    assert not bad.any()
    # sparse where it should be: n of every m output-gradient rows, per column
    sp = cfg.drhs.rhs.sparsity
    axes = ops._Dot(x.shape, w.shape, (1,), (0,), (), ()).axes(ops.DRHS, 1)
    g, _ = ops._prepare(jnp.asarray(ct), cfg.drhs.rhs, axes, None, lambda: jax.random.key(3))
    assert (np.count_nonzero(np.asarray(g).reshape(16 // sp.m, sp.m, 8), axis=1) <= sp.n).all()
    return tw, se


def test_mvue_weight_gradient_is_unbiased_and_topn_is_not(layer):
    """MVUE 2:4 on the weight-gradient GEMM's output gradient: unbiased (as above). Top-2-of-4
    there (deterministic): its error exceeds Z of MVUE's standard errors at most elements."""
    tw, se = _mvue_case(ops.mvue24(), layer, 2)
    _, dw_top = _grad(ops.topk24_grad(), *layer)
    far = np.abs(np.asarray(dw_top, np.float64) - np.asarray(tw, np.float64)) > Z * se
    assert far.mean() > 0.5


@pytest.mark.slow
@pytest.mark.parametrize("cfg, truth", [(ops.mvue12(), ops.fp32()), (ops.mvue24(method="approx"), ops.fp32()),
                                        (ops.mvue24(ops.w8a8g8(grad_w=None)), ops.w8a8())],
                         ids=["1:2", "2:4-approx", "w8a8g8+2:4"])
def test_mvue_variants_are_unbiased(layer, cfg, truth):
    _mvue_case(cfg, layer, 3, truth)


# -- the STE variants of the accumulator, on a worked example -----------------------------------------

def test_accumulator_ste_variants():
    """x·w = 64 + 1 + 224 in e4m3 (IEEE, max 240, saturating), sequential: step 1 swamps the 1
    (64 + 1 -> 64), step 2 saturates (288 -> 240)."""
    x = jnp.array([[64.0, 1.0, 224.0]])
    w = jnp.ones((3, 1))
    want = {"identity": [1, 1, 1], "immediate": [1, 0, 0], "recursive": [0, 0, 0]}
    for ste, factors in want.items():
        acc = Accumulator(format="e4m3", overflow="saturate", ste=ste)
        cfg = DotConfig(fwd=GemmSpec(accumulator=acc))
        y, vjp = jax.vjp(lambda a, b: emul_jax.dot_general(a, b, DN, cfg), x, w)
        assert float(y[0, 0]) == 240.0
        dx, dw = vjp(jnp.ones((1, 1)))
        np.testing.assert_array_equal(dx, [factors])
        np.testing.assert_array_equal(dw[:, 0], np.asarray(x[0]) * factors)


@pytest.mark.slow
def test_recursive_ste_chunked_and_sr_runs():
    x, w = normal(90, (4, 12)), normal(91, (12, 3))
    acc = Accumulator(format="e4m7", order="chunked", chunk=4, rounding="stochastic", ste="recursive")
    cfg = DotConfig(fwd=GemmSpec(accumulator=acc))
    key = jax.random.key(6)
    y, vjp = jax.vjp(lambda a, b: emul_jax.dot_general(a, b, DN, cfg, key=key), x, w)
    dx, dw = vjp(jnp.ones(y.shape))
    # e4m7 holds these sums without overflow or swamping of whole products: close to identity STE
    np.testing.assert_allclose(dx, np.ones((4, 3)) @ w.T, rtol=0.05, atol=0.05)
    assert np.isfinite(dw).all()


def _np_tree_weights(x, w, fmt, ste, words, **kw):
    """The pairwise STE replayed in NumPy for one output x · w (x, w: (K,)): d S / d p_k (K,).
    The tree as docs/accumulators.md defines it (pairs (2i, 2i+1) level by level, an odd last node
    passing up, then the step adding the root to +0), step t rounding with words[t] by the golden
    model (``reference``; no compiled kernel); e4m3fn operands keep every exact sum exact in
    float64."""
    import reference

    fmt = emul.format(fmt)
    big = float(fmt.max)
    q = lambda v, t: float(reference.quantize(float(v), fmt, u=int(words[t]), **kw))  # noqa: E731
    wt = np.ones(len(x))
    nodes = [(float(a) * float(b), [k], True) for k, (a, b) in enumerate(zip(x, w))]
    t = 0
    while len(nodes) > 1:
        pairs = []
        for i in range(0, len(nodes) - 1, 2):
            pairs.append(_np_tree_step(nodes[i], nodes[i + 1], t, q, big, wt, ste))
            t += 1
        nodes = pairs + nodes[len(nodes) - len(nodes) % 2:]
    _np_tree_step((0.0, [], False), nodes[0], t, q, big, wt, ste)
    return wt


def _np_tree_step(a, b, t, q, big, wt, ste):
    """One step n = Q(a + b) with word t; multiplies the weights of a's and b's products by their
    factors (immediate: only for an operand that is a product itself). Returns the node."""
    s = a[0] + b[0]
    new = q(s, t)
    over = not np.isfinite(new) or abs(float(np.float32(s))) > big
    for (v, ks, leaf), other in ((a, b), (b, a)):
        f = 0.0 if over or (v != 0 and new == q(other[0], t)) else 1.0
        if ste == "recursive" or leaf:
            wt[ks] *= f
    return (new, a[1] + b[1], False)


def _vjp_jit(f, x, w, ct):
    """(y, dx, dw) of f at (x, w) with cotangent ct, in one jax.jit (one compilation)."""
    return jax.jit(lambda a, b, c: (lambda y, v: (y,) + v(c))(*jax.vjp(f, a, b)))(x, w, ct)


@pytest.mark.parametrize("ste", ["recursive", pytest.param("immediate", marks=pytest.mark.slow)])
def test_pairwise_ste_replays_in_numpy(ste):
    """Pairwise order (K = 5: an odd node passing up), e4m3 saturating SR accumulator: the STE
    weights equal a NumPy replay of the tree bit for bit, and so do the gradients (exact sums)."""
    x = emul.quantize(normal(120, (2, 5), 6.0), "e4m3fn")
    w = emul.quantize(normal(121, (5, 3), 4.0), "e4m3fn")
    acc = Accumulator(format="e4m3", overflow="saturate", rounding="stochastic", sr_bits=5, order="pairwise", ste=ste)
    cfg = DotConfig(fwd=GemmSpec(accumulator=acc))
    f = lambda a, b: emul_jax.dot_general(a, b, DN, cfg, key=jax.random.key(8))  # noqa: E731
    y, dx, dw = _vjp_jit(f, x, w, np.ones((2, 3), F32))
    kd = emul.random.fold_in(emul.random.fold_in(np.asarray(jax.random.key_data(jax.random.key(8))), ops.FWD),
                             ops.ACC)
    words = emul.random.bits(kd, (2, 3, 5)) >> np.uint32(27)
    kw = dict(rounding="stochastic", sr_bits=5, overflow="saturate")
    want = np.stack([[_np_tree_weights(x[m], w[:, n], "e4m3", ste, words[m, n], **kw) for n in range(3)]
                     for m in range(2)])
    assert 0 < want.sum() < want.size  # some products cut, some not
    assert_bits(dx, np.einsum("mnk,kn->mk", want.astype(np.float64), w).astype(F32))
    assert_bits(dw, np.einsum("mnk,mk->kn", want.astype(np.float64), x).astype(F32))
    assert np.isfinite(np.asarray(y)).all()


CONV_STE = {  # the accumulator of the conv-vs-im2col test, by order
    "pairwise": dict(order="pairwise", ste="recursive"),
    "chunked": dict(order="chunked", chunk=5, rounding="stochastic", sr_bits=6, ste="recursive"),
    "sequential": dict(order="sequential", ste="immediate"),
}


@pytest.mark.parametrize("order", ["pairwise", pytest.param("chunked", marks=pytest.mark.slow),
                                   pytest.param("sequential", marks=pytest.mark.slow)])
def test_conv_ste_equals_dot_ste_on_im2col(order):
    """conv_general_dilated (strides, asymmetric padding, kernel dilation, 2 feature groups) with a
    non-identity STE e4m3 saturating accumulator: forward and VJP equal, bit for bit, those of
    dot_general on the explicit im2col GEMM (weights broadcast over the samples, batched over
    (sample, group)), whose columns are lax.conv_general_dilated_patches'."""
    x, w = normal(130, (2, 4, 6, 5), 4.0), normal(131, (4, 2, 3, 2))
    st, pad, rd, fgc = (2, 1), ((1, 0), (1, 1)), (1, 2), 2
    acc = Accumulator(format="e4m3", overflow="saturate", **CONV_STE[order])
    cfg = DotConfig(fwd=GemmSpec(accumulator=acc))
    key = (lambda: jax.random.key(9)) if acc.stochastic else (lambda: None)  # noqa: E731
    conv = lambda a, b: emul_jax.conv_general_dilated(a, b, st, pad, rhs_dilation=rd,  # noqa: E731
                                                      feature_group_count=fgc, cfg=cfg, key=key())
    dot, wf, xf, yf, y_from = ops._conv_kind(x.shape, w.shape, st, pad, None, rd, None, fgc, 1).im2col_gemm()
    ref = lambda a, b: y_from(emul_jax.dot_general(wf(b), xf(a), dot.dn, cfg, key=key()))  # noqa: E731
    patches = lax.conv_general_dilated_patches(x, (3, 2), st, pad, rhs_dilation=rd, precision=lax.Precision.HIGHEST)
    assert_bits(xf(x).reshape(2, 24, -1), patches.reshape(2, 24, -1))
    ct = normal(132, (2, 4, 3, 5))
    got, want = jax.jit(lambda a, b, c: (_vjp_jit(conv, a, b, c), _vjp_jit(ref, a, b, c)))(x, w, ct)
    for g, r in zip(got, want):
        assert_bits(g, r)
    # the estimator is not the identity here: saturation and swamping cut some products
    _, vjp_id = jax.vjp(lambda a, b: lax.conv_general_dilated(a, b, st, pad, rhs_dilation=rd, feature_group_count=fgc,
                                                              precision=lax.Precision.HIGHEST), x, w)
    assert not np.allclose(vjp_id(ct)[1], got[2], rtol=1e-3, atol=1e-3)


# -- transposable weights and bifurcation -------------------------------------------------------------

def test_transposable_weights_make_the_backward_gemm_sparse():
    x, w = normal(100, (4, 8)), normal(101, (8, 8))
    cfg = ops.tnm24()
    y, vjp = jax.vjp(lambda a, b: emul_jax.dot_general(a, b, DN, cfg), x, w)
    mask = np.asarray(emul_jax.sparsity.transposable_mask(jnp.asarray(w).T, 2, 4, method="greedy")).T
    assert (mask.reshape(2, 4, 8).sum(1) <= 2).all() and (mask.reshape(8, 2, 4).sum(2) <= 2).all()
    wm = np.where(mask, w, 0).astype(np.float32)
    assert_bits(y, lax.dot_general(x, wm, DN, precision=lax.Precision.HIGHEST))
    ct = normal(102, y.shape)
    dx, dw = vjp(ct)
    assert_bits(dx, np.asarray(lax.dot_general(ct, wm, (((1,), (1,)), ((), ())), precision=lax.Precision.HIGHEST)))
    assert_bits(dw, np.asarray(lax.dot_general(x, ct, (((0,), (0,)), ((), ())), precision=lax.Precision.HIGHEST)))


def test_without_bifurcation_both_gemms_share_one_rounding():
    """Both backward GEMMs see the same SR draw (the dlhs stream). Small integer operands and an
    int8 gradient keep every XLA sum exact, so the bits can be compared."""
    rng = np.random.default_rng(110)
    x, w = rng.integers(-3, 4, (4, 8)).astype(np.float32), rng.integers(-3, 4, (8, 3)).astype(np.float32)
    g8 = Operand(format="int8", rounding="stochastic", scale="absmax")
    cfg = DotConfig(dlhs=GemmSpec(lhs=g8), drhs=GemmSpec(rhs=g8), bifurcation=False)
    key = jax.random.key(7)
    ct = normal(112, (4, 3), 1e-2)
    dx, dw = _grad(cfg, x, w, ct, key)
    kd = emul.random.fold_in(emul.random.fold_in(np.asarray(jax.random.key_data(key)), ops.DLHS), ops.GRAD)
    q, s = np_absmax(ct, None, "int8", rounding="stochastic", key=kd)
    assert_bits(dx, ftz((q @ w.T) * s))
    assert_bits(dw, ftz((x.T @ q) * s))


# -- jit: one trace across steps ----------------------------------------------------------------------

def test_jit_traces_once_across_steps():
    cfg = ops.mvue24(DotConfig(dlhs=GemmSpec(lhs=Operand(format="e5m2", rounding="stochastic", scale="absmax"))))
    x, w = normal(120, (8, 12)), normal(121, (12, 4))

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(w, x, key):
        loss = lambda w: (emul_jax.dot_general(x, w, DN, cfg, key=key) ** 2).mean()  # noqa: E731
        return w - 0.1 * jax.grad(loss)(w)

    key = jax.random.key(8)
    for i in range(4):
        w = step(w, normal(122 + i, x.shape), jax.random.fold_in(key, i))
    assert np.isfinite(np.asarray(w)).all()


# -- replay in NumPy with emul ------------------------------------------------------------------------

def test_replay_dense_layer_in_numpy():
    """Forward and backward of x (8, 12) · w (12, 4) with absmax-scaled e4m3fn operands, an e5m2 SR
    output gradient for dX, an MVUE 2:4 bf16 output gradient for dW, and e4m7 accumulators
    (chunked SR forward, sequential dX, chunked dW): emul reproduces every bit from the same key."""
    e4m3 = lambda g: Operand(format="e4m3fn", scale="absmax", granularity=g)  # noqa: E731
    cfg = DotConfig(
        fwd=GemmSpec(lhs=e4m3("channel"), rhs=e4m3("channel"),
                     accumulator=Accumulator(format="e4m7", order="chunked", chunk=4, rounding="stochastic",
                                             sr_bits=10)),
        dlhs=GemmSpec(lhs=Operand(format="e5m2", rounding="stochastic", scale="absmax", overflow="saturate"),
                      rhs="fwd", accumulator=Accumulator(format="e4m7")),
        drhs=GemmSpec(lhs="fwd", rhs=Operand(format="bf16", sparsity=Sparsity(n=2, m=4, method="mvue")),
                      accumulator=Accumulator(format="e4m7", order="chunked", chunk=4)))
    x, w, ct = normal(130, (8, 12)), normal(131, (12, 4), 0.3), normal(132, (8, 4), 1e-2)
    key = jax.random.key(9)
    y, (dx, dw) = jax.jit(lambda a, b, k, c: (lambda y, v: (y, v(c)))(
        *jax.vjp(lambda a, b: emul_jax.dot_general(a, b, DN, cfg, key=k), a, b)))(x, w, key, ct)

    kd = np.asarray(jax.random.key_data(key))
    sk = lambda g, r: emul.random.fold_in(emul.random.fold_in(kd, g), r)  # noqa: E731
    qx, sx = np_absmax(x, 1, "e4m3fn")                 # per sample (row)
    qw, sw = np_absmax(w, 0, "e4m3fn")                 # per output channel (column)
    acc = emul.matmul(qx, qw, "e4m7", order="chunked", chunk=4, rounding="stochastic", sr_bits=10, key=sk(0, 3))
    assert_bits(y, ftz(acc * ftz(sx * sw)))
    # dX: the SR gradient (one scale, factored out) times the forward weight (its per-column
    # scales run along dX's reduction, so they are folded into the values)
    qg, sg = np_absmax(ct, None, "e5m2", rounding="stochastic", overflow="saturate", key=sk(1, 2))
    wf = ftz(qw * sw)
    assert_bits(dx, ftz(emul.matmul(qg, wf.T, "e4m7") * sg))
    # dW: the forward activation (per-row scales folded) times the MVUE 2:4 gradient (blocks along
    # the batch, dW's reduction axis) rounded to bf16
    g2 = emul.quantize(emul.sparsity.mvue(ct, 2, 4, axis=0, key=sk(2, 6)), "bf16")
    xf = ftz(qx * sx)
    assert_bits(dw, emul.matmul(xf.T, g2, "e4m7", order="chunked", chunk=4))


@pytest.mark.slow
def test_replay_mlp_training_step_in_numpy():
    """One training step of a 2-layer MLP, x (8, 12) -> w1 (12, 8) -> relu -> w2 (8, 4), loss
    sum(y * c): every GEMM (2 forward, dX of layer 2, dW of both) accumulates in e4m7 chunked (SR
    forward and weight-gradient accumulators; the values stay within e4m7's range), e4m3fn
    operands, an e5m2 SR input gradient, bf16 weight-gradient operands; optax SGD (lr 1/8) and emul_jax.optim.apply_updates storing
    the weights in bf16 with SR. NumPy with emul, from the same key (layer l: fold_in(key, l);
    update: fold_in(key, 2)), gives the updated weights bit for bit."""
    optax = pytest.importorskip("optax")
    from emul_jax import optim

    e4m3 = Operand(format="e4m3fn")
    chunked = dict(format="e4m7", order="chunked", chunk=4)
    cfg = DotConfig(
        fwd=GemmSpec(lhs=e4m3, rhs=e4m3, accumulator=Accumulator(**chunked, rounding="stochastic", sr_bits=10)),
        dlhs=GemmSpec(lhs=Operand(format="e5m2", rounding="stochastic", overflow="saturate"), rhs="fwd",
                      accumulator=Accumulator(**chunked)),
        drhs=GemmSpec(lhs="fwd", rhs=Operand(format="bf16"),
                      accumulator=Accumulator(**chunked, rounding="stochastic", sr_bits=8)))
    x, c = normal(150, (8, 12)), normal(151, (8, 4), 0.5)
    params = {"w1": normal(152, (12, 8), 0.3), "w2": normal(153, (8, 4), 0.3)}
    tx = optax.sgd(0.125)
    relu = lambda v: jnp.where(v > 0, v, jnp.float32(0))  # noqa: E731  (+0 below zero, select gradient)

    @jax.jit
    def step(params, x, c, key):
        def loss(p):
            h = relu(emul_jax.dot_general(x, p["w1"], DN, cfg, key=jax.random.fold_in(key, 0)))
            return jnp.sum(emul_jax.dot_general(h, p["w2"], DN, cfg, key=jax.random.fold_in(key, 1)) * c)
        grads = jax.grad(loss)(params)
        updates, _ = tx.update(grads, tx.init(params), params)
        return grads, updates, optim.apply_updates(params, updates, "bf16", key=jax.random.fold_in(key, 2))

    key = jax.random.key(10)
    grads, updates, new = step(params, x, c, key)

    kd = np.asarray(jax.random.key_data(key))
    k1, k2, ku = (emul.random.fold_in(kd, i) for i in range(3))
    sk = lambda k, g, r: emul.random.fold_in(emul.random.fold_in(k, g), r)  # noqa: E731
    acc_sr = lambda a, b, k, r: emul.matmul(a, b, "e4m7", order="chunked", chunk=4, rounding="stochastic",  # noqa: E731
                                            sr_bits=r, key=k)
    w1, w2 = params["w1"], params["w2"]
    q8 = lambda v: emul.quantize(v, "e4m3fn")  # noqa: E731
    # forward (the key streams of ops.stream_key: GEMM FWD=0, role ACC=3)
    qx, qw1, qw2 = q8(x), q8(w1), q8(w2)
    y1 = acc_sr(qx, qw1, sk(k1, 0, 3), 10)
    assert np.isfinite(y1).all() and (y1 > 0).any() and (y1 < 0).any()
    h = np.where(y1 > 0, y1, F32(0)).astype(F32)
    qh = q8(h)
    # backward of layer 2: dH from the e5m2 SR output gradient (DLHS=1, GRAD=2) and the forward
    # weight, dW2 from the forward activation and the bf16 output gradient (DRHS=2, ACC=3)
    qg = emul.quantize(c, "e5m2", "stochastic", overflow="saturate", key=sk(k2, 1, 2))
    dh = emul.matmul(qg, qw2.T, "e4m7", order="chunked", chunk=4)
    dw2 = acc_sr(qh.T, emul.quantize(c, "bf16"), sk(k2, 2, 3), 8)
    # relu, then dW1 (layer 1's dX is not needed)
    g1 = np.where(y1 > 0, dh, F32(0)).astype(F32)
    dw1 = acc_sr(qx.T, emul.quantize(g1, "bf16"), sk(k1, 2, 3), 8)
    assert np.isfinite(dw1).all() and np.isfinite(dw2).all() and (dw1 != 0).mean() > 0.5
    assert_bits(grads["w1"], dw1)
    assert_bits(grads["w2"], dw2)
    # SGD: -lr * g, a power-of-two scaling (exact: no update is a subnormal), then one SR rounding
    # of the exact sum into bf16 per weight (leaf i: fold_in(update key, i))
    for i, (name, w, g) in enumerate((("w1", w1, dw1), ("w2", w2, dw2))):
        u = (g * F32(-0.125)).astype(F32)
        assert not ((u != 0) & (np.abs(u) < F32(2.0**-126))).any()
        assert_bits(updates[name], u)
        want = emul.add(w, u, "bf16", "stochastic", key=emul.random.fold_in(ku, i))
        assert_bits(new[name], want)
        assert (bits(new[name]) != bits(w)).mean() > 0.5  # the step changed the weights


def test_minmax_and_sample_mean_replay():
    """The §C.1 asymmetric uint8 quantizer with the §C.2 activation range (batch mean of the
    per-sample min/max), replayed with emul's float32 operations."""
    cfg = ops.w8a8()
    x, w = normal(140, (6, 8)), normal(141, (8, 3))
    y = emul_jax.dot_general(x, w, DN, cfg)

    def uint8(v, lo, hi):
        s, r = np_scale(ftz(hi - lo), 255)
        q = emul.quantize(ftz(ftz(v - lo) * r), "uint8")
        return ftz(ftz(q * s) + lo)

    def mean(v):  # pairwise float32 sum (flushed), one division
        n = v.size
        while v.size > 1:
            k = v.size // 2
            v = np.concatenate([ftz(v[0:2 * k:2] + v[1:2 * k:2]), v[2 * k:]])
        return ftz(emul.div(v[0], F32(n), "fp32"))

    xh = uint8(x, mean(x.min(1)), mean(x.max(1)))
    wh = uint8(w, w.min(), w.max())
    assert_bits(y, lax.dot_general(xh, wh, DN, precision=lax.Precision.HIGHEST))


def _layout_case(cfg, ls, rs, dn, ls2, rs2, dn2, to2_l, to2_r, seed, scale=1.0):
    """The same layer in two layouts (to2_*: maps operands of layout 1 to layout 2) gives the same bits."""
    rng = np.random.default_rng(seed)
    x, w = normal(seed, ls, scale), normal(seed + 1, rs, scale)
    def run(dims):
        return jax.jit(lambda a, b, c: (lambda y, v: (y,) + v(c))(
            *jax.vjp(lambda a, b: emul_jax.dot_general(a, b, dims, cfg), a, b)))

    ct = rng.standard_normal(jax.eval_shape(lambda a, b: lax.dot_general(a, b, dn), x, w).shape).astype(np.float32)
    y1, dx1, dw1 = run(dn)(x, w, ct)
    y2, dx2, dw2 = run(dn2)(to2_l(x), to2_r(w), ct)
    assert_bits(y1, y2)
    assert_bits(to2_l(dx1), dx2)
    assert_bits(to2_r(dw1), dw2)


INT8 = Operand(format="int8", scale="absmax", granularity="channel")


def test_layout_does_not_change_bits():
    """Transposed and batched layouts: the same bits forward and backward (the canonical GEMMs and
    the gradients' way back to the operands' layouts). int8 values keep the XLA sums exact; the
    slow variants add per-channel scales and emulated accumulators."""
    i8 = Operand(format="int8")
    cfg = DotConfig(fwd=GemmSpec(lhs=i8, rhs=i8), dlhs=GemmSpec(lhs=i8, rhs="fwd"), drhs=GemmSpec(lhs="fwd", rhs=i8))
    # (B, M, K) · (B, K, N)  vs  (K, B, M) · (N, B, K)
    to2 = lambda a: jnp.transpose(a, (2, 0, 1))  # noqa: E731
    _layout_case(cfg, (3, 5, 6), (3, 6, 4), (((2,), (1,)), ((0,), (0,))), (6, 3, 5), (4, 3, 6),
                 (((0,), (2,)), ((1,), (1,))), to2, to2, 150, scale=20.0)


@pytest.mark.slow
def test_layout_does_not_change_bits_more():
    to2 = lambda a: jnp.transpose(a, (2, 0, 1))  # noqa: E731
    cfg = DotConfig(fwd=GemmSpec(lhs=INT8, rhs=INT8), dlhs=GemmSpec(lhs=INT8, rhs="fwd"),
                    drhs=GemmSpec(lhs="fwd", rhs=INT8))
    _layout_case(cfg, (5, 6), (6, 4), DN, (6, 5), (4, 6), (((0,), (1,)), ((), ())),
                 lambda a: a.T, lambda b: b.T, 160)
    _layout_case(cfg, (3, 5, 6), (3, 6, 4), (((2,), (1,)), ((0,), (0,))), (5, 6, 3), (6, 4, 3),
                 (((1,), (0,)), ((2,), (2,))), lambda a: jnp.moveaxis(a, 0, -1), lambda b: jnp.moveaxis(b, 0, -1), 165)
    _layout_case(cfg, (3, 5, 6), (3, 6, 4), (((2,), (1,)), ((0,), (0,))), (6, 3, 5), (4, 3, 6),
                 (((0,), (2,)), ((1,), (1,))), to2, to2, 168)


@pytest.mark.slow
def test_layout_does_not_change_bits_emulated():
    op = Operand(format="e4m3fn", scale="absmax", granularity="channel")
    cfg = DotConfig(fwd=GemmSpec(lhs=op, rhs=op, accumulator=Accumulator(format="e4m7", order="chunked", chunk=3)),
                    dlhs=GemmSpec(lhs=op, rhs="fwd", accumulator=Accumulator(format="e4m7")),
                    drhs=GemmSpec(lhs="fwd", rhs=op, accumulator=Accumulator(format="e4m7")))
    _layout_case(cfg, (5, 6), (6, 4), DN, (6, 5), (4, 6), (((0,), (1,)), ((), ())),
                 lambda a: a.T, lambda b: b.T, 170)


# -- convolutions: where scales, N:M blocks and samples are taken ---------------------------------------

def test_conv_axes_table():
    """NHWC x HWIO -> NHWC: per GEMM and operand, the N:M axis (innermost reduction), the
    'channel' axis (first axis surviving in the output) and the sample axis."""
    kind = emul_jax.ops._Conv((4, 6, 6, 8), (3, 3, 8, 16), (4, 6, 6, 16), (1, 1), ((1, 1), (1, 1)), (1, 1), (1, 1),
                              (0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2), 1, 1)
    table = {(ops.FWD, 0): (3, 0, 0), (ops.FWD, 1): (2, 3, None),        # X: C / N / N;  W: I / O
             (ops.DLHS, 0): (3, 0, 0), (ops.DLHS, 1): (3, 2, None),      # G: O / N / N;  W: O / I
             (ops.DRHS, 0): (0, 3, 0), (ops.DRHS, 1): (0, 3, 0)}         # X: N / C / N;  G: N / O / N
    for (gemm, side), (nm, chan, sample) in table.items():
        assert kind.axes(gemm, side) == ops._Axes(nm, chan, sample), (gemm, side)


@pytest.mark.slow
def test_conv_with_8bit_mvue_and_transposable_weights():
    """w8a8g8 + MVUE 2:4 gradients + transposable 2:4 weights on an NHWC convolution: the forward
    is the XLA convolution of the prepared operands, the weight mask is 2:4 both ways at every tap,
    the weight-gradient GEMM's output gradient is 2:4 along the batch, the gradients are finite."""
    cfg = ops.tnm24(ops.mvue24(ops.w8a8g8()))
    x, w = normal(180, (4, 6, 6, 8)), normal(181, (3, 3, 8, 8), 0.2)
    key = jax.random.key(10)
    dn = ("NHWC", "HWIO", "NHWC")
    run = jax.jit(lambda a, b, c: (lambda y, v: (y,) + v(c))(*jax.vjp(
        lambda a, b: emul_jax.conv_general_dilated(a, b, (1, 1), "SAME", dimension_numbers=dn, cfg=cfg, key=key),
        a, b)))
    ct = normal(182, (4, 6, 6, 8), 1e-3)
    y, dx, dw = run(x, w, ct)
    kind = emul_jax.ops._Conv(x.shape, w.shape, y.shape, (1, 1), ((1, 1), (1, 1)), (1, 1), (1, 1),
                              (0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2), 1, 1)
    mask = kind.transposable_mask(jnp.asarray(w), 2, 4, "greedy")
    m = np.asarray(mask)                                        # (kh, kw, I, O)
    assert (m.reshape(3, 3, 2, 4, 8).sum(3) <= 2).all() and (m.reshape(3, 3, 8, 2, 4).sum(4) <= 2).all()
    xh, _ = ops._prepare(jnp.asarray(x), cfg.fwd.lhs, kind.axes(ops.FWD, 0), None, None)
    wh, _ = ops._prepare(jnp.asarray(w), dataclasses.replace(cfg.fwd.rhs, sparsity=None), kind.axes(ops.FWD, 1),
                         None, None, mask)
    want = jax.jit(lambda a, b: lax.conv_general_dilated(a, b, (1, 1), "SAME", dimension_numbers=dn,
                                                         precision=lax.Precision.HIGHEST))(xh, wh)
    assert_bits(y, want)
    g, _ = ops._prepare(jnp.asarray(ct), cfg.drhs.rhs, kind.axes(ops.DRHS, 1), None,
                        lambda: ops.stream_key(key, ops.DRHS, ops.SPARSE_GRAD))
    assert (np.count_nonzero(np.asarray(g).reshape(1, 4, 6, 6, 8), axis=1) <= 2).all()
    assert np.isfinite(np.asarray(dx)).all() and np.isfinite(np.asarray(dw)).all()
    assert dx.shape == x.shape and dw.shape == w.shape


@pytest.mark.slow
def test_emulated_conv_backward_replays_in_numpy():
    """All three GEMMs of a stride-1 NCHW convolution with e4m7 chunked SR accumulators: the
    forward is emul.conv2d, dX the conv2d of G with the flipped kernel (I and O swapped), dW the
    matmul of G with X's im2col columns over (sample, position) — bit for bit from the same key."""
    x = emul.quantize(normal(190, (2, 3, 5, 5)), "e4m3fn")
    w = emul.quantize(normal(191, (4, 3, 3, 3)), "e4m3fn")
    ct = emul.quantize(normal(192, (2, 4, 5, 5)), "e4m3fn")
    acc = Accumulator(format="e4m7", order="chunked", chunk=4, rounding="stochastic", sr_bits=8)
    cfg = DotConfig(fwd=GemmSpec(accumulator=acc), dlhs=GemmSpec(accumulator=acc), drhs=GemmSpec(accumulator=acc))
    key = jax.random.key(11)
    y, dx, dw = jax.jit(lambda a, b, c: (lambda y, v: (y,) + v(c))(*jax.vjp(
        lambda a, b: emul_jax.conv_general_dilated(a, b, (1, 1), ((1, 1), (1, 1)), cfg=cfg, key=key), a, b)))(x, w, ct)
    kd = np.asarray(jax.random.key_data(key))
    sk = lambda g: emul.random.fold_in(emul.random.fold_in(kd, g), ops.ACC)  # noqa: E731
    kw = dict(order="chunked", chunk=4, rounding="stochastic", sr_bits=8)
    assert_bits(y, emul.conv2d(x, w, "e4m7", padding=1, key=sk(ops.FWD), **kw))
    wt = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
    assert_bits(dx, emul.conv2d(ct, wt, "e4m7", padding=1, key=sk(ops.DLHS), **kw))
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    cols = np.stack([xp[:, :, i:i + 5, j:j + 5] for i in range(3) for j in range(3)], axis=2).reshape(2, 27, 25)
    a = ct.reshape(2, 4, 25).transpose(1, 0, 2).reshape(4, 50)
    b = cols.transpose(0, 2, 1).reshape(50, 27)
    assert_bits(dw, emul.matmul(a, b, "e4m7", key=sk(ops.DRHS), **kw).reshape(4, 3, 3, 3))


def test_mx_operands_are_the_cores_blocks():
    """The ``mx`` recipe: each forward operand in MXFP8 blocks of 32 along its reduction axis, as
    emul.blocks.quantize; with an emulated fp32 accumulator the product equals emul.matmul bit for bit."""
    from emul import blocks

    rng = np.random.default_rng(5)
    x = (rng.standard_normal((3, 70)) * 8).astype(np.float32)  # 70 = two blocks and a tail of 6
    w = (rng.standard_normal((70, 5)) / 4).astype(np.float32)
    acc = ops.Accumulator(format="fp32", order="sequential")
    cfg = dataclasses.replace(ops.recipe("mx"), fwd=dataclasses.replace(ops.recipe("mx").fwd, accumulator=acc))
    y = jax.jit(lambda x, w: ops.dot_general(x, w, (((1,), (0,)), ((), ())), cfg))(x, w)
    xq = blocks.quantize(x, "mxfp8_e4m3", axis=1).astype(np.float32)
    wq = blocks.quantize(w, "mxfp8_e4m3", axis=0).astype(np.float32)
    want = emul.matmul(xq, wq, "fp32", order="sequential").astype(np.float32)
    assert (np.asarray(y).view(np.uint32) == want.view(np.uint32)).all()
    with pytest.raises(ValueError, match="carries its own scales"):
        ops.Operand(format="mxfp8_e4m3", scale="absmax")

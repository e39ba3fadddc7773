"""Post-training quantization of a trained network (``emul ptq``; AdaQuant [E] and data-free calibration [F], docs/references.md).

A trained model (:func:`emul_jax.train.load_model`) is turned into a *folded* network: every
conv/dense layer followed by a BatchNorm gets the BN folded into its weights and bias
(:func:`fold_bn`). Every layer then gets the §E.1 quantizer on its input activation (per tensor) and
on its weight (per output channel); the quantized forward rounds onto the format's grid with
:func:`emul_jax.quantize` (bit-exact), the convolution/dot of the dequantized values runs in float32 at
``Precision.HIGHEST``. The steps, composable and each a pure function of (folded net, parameters,
calibration images):

* :func:`init_params` — naive quantization: weight ranges from per-channel min/max, activation ranges
  from the calibration set (per-sample min/max averaged over the samples, min <= 0 <= max).
* :func:`adaquant` — §E.2: per layer, on cached float32 inputs/outputs (``mode="parallel"``) or on
  inputs from the partly quantized network (``"sequential"``), Adam over the weights, the bias and
  both quantizers' (range, zero point) in four groups.
* :func:`solve_bit_allocation` / :func:`layer_sensitivity` — §E.3: per-layer bit widths from an
  integer program solved exactly by ``scipy.optimize.milp`` (HiGHS branch and bound).
* :func:`bn_tune` — §E.4: re-normalizes each BN-folded layer's quantized output to the float model's
  per-channel mean β and standard deviation |γ| on the calibration batch.
* :func:`bias_tune` — §E.5: SGD on the biases (all but the classifier's) against the float32 logits.
* :func:`synthesize` — §F: calibration images optimized so the statistics at every BN input match its
  running mean / variance.
* :func:`run` — the "light" and "advanced" pipelines, a record (JSON), :func:`table`, :func:`plot`.

docs/ptq.md is the user's guide, with a recorded result table.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax import lax

from emul.blocks import BlockFormat, format as _block_format
from emul.formats import FixedFormat, FloatFormat, format as _parse_format

from ._report import cli, machine, write
from .blocks import _check_format as _check_jax_block, quantize as _block_quantize
from .quantize import _quantize_unchecked

__all__ = [
    "quantizer_format", "fake_quant", "LayerInfo", "Folded", "fold_bn", "forward", "trace", "init_params",
    "adaquant", "bn_tune", "bias_tune", "layer_sensitivity", "solve_bit_allocation", "synthesize",
    "bn_input_stats", "stats_loss", "calibration_set", "evaluate", "run", "table", "plot", "main",
    "PIPELINES", "STATS_LOSSES", "R_MIN", "R_MAX", "ADAQUANT_LR", "RECORD_SCHEMA", "block_quant", "is_block",
    "storage_bits", "WEIGHT_GRANULARITY",
]

_HI = lax.Precision.HIGHEST
R_MIN, R_MAX = 1e-6, 1e5
"""The learned range is clamped to [R_MIN, R_MAX] on every forward (§E.1)."""
PIPELINES = ("light", "advanced")
STATS_LOSSES = ("kl", "sym", "mse", "l1")


# ------------------------------------------------------------------------------ the §E.1 quantizer

def quantizer_format(fmt):
    """The format object of a quantizer: an integer fixed-point format (``uint4``, ``int8``, ``uint<b>``,
    ``fx<b,0>``: frac 0, asymmetric with a zero point), a float format whose values fit float32
    (``e2m1fn``, ``e4m3fn``, ...: symmetric) or a block format with power-of-two (e8m0) scales and a
    fixed block size (``mxfp8_e4m3``, ``mxfp4``, ``mxint8``, ``e2m1fn/e8m0/16``, ...: its own scales,
    blocks along the GEMM's reduction axis, :func:`block_quant`). Anything else: ValueError naming
    the format."""
    if isinstance(fmt, str):
        try:
            f = _parse_format(fmt)
        except (ValueError, TypeError) as e:
            try:
                f = _block_format(fmt)
            except (ValueError, TypeError):
                raise ValueError(f"unknown format {fmt!r}: {e}; or a block format (mxfp8_e4m3, mxfp4, "
                                 "mxint8, ..., element/e8m0/k)") from None
    else:
        f = fmt
    if isinstance(f, BlockFormat):
        return _check_block(f)
    if isinstance(f, FixedFormat):
        if f.frac != 0:
            raise ValueError(f"format {f.name}: the AdaQuant quantizer needs an integer grid (frac 0), "
                             f"e.g. uint4, int8")
        if f.bits > 24:
            raise ValueError(f"format {f.name}: at most 24 bits (its integers must be float32 values)")
        return f
    if isinstance(f, FloatFormat):
        if f.exp_bits > 8 or f.man_bits > 23:
            raise ValueError(f"format {f.name}: its values do not fit float32")
        return f
    raise ValueError(f"format {fmt!r}: expected an integer format (uint4, int8, ...) or a float format "
                     "(e2m1fn, e4m3fn, ...)")


def _check_block(f):
    """A block format PTQ can use: what :mod:`emul_jax.blocks` mirrors (e8m0 scales, so no NVFP4) with a
    fixed block size k."""
    try:
        _check_jax_block(f)
    except ValueError as e:
        raise ValueError(f"format {f.name}: {e}") from None
    if f.block is None:
        raise ValueError(f"format {f.name}: PTQ needs a fixed block size k (element/e8m0/k), not one scale per axis")
    return f


def is_block(fmt) -> bool:
    """Whether ``fmt`` (a :func:`quantizer_format` result) is a block format."""
    return isinstance(fmt, BlockFormat)


def storage_bits(fmt) -> float:
    """Bits stored per element: the format's width; a block format adds its scale's bits over the block
    size k (mxfp4: 4 + 8/32 = 4.25; mxfp8_e4m3: 8.25). The integer program's sizes use it."""
    fmt = quantizer_format(fmt)
    if is_block(fmt):
        return fmt.element.bits + fmt.scale.bits / fmt.block
    return float(fmt.bits)


def _div(a, b):
    """a / b, correctly rounded float32: the divisor is broadcast to the full shape behind an
    optimization barrier, so XLA cannot rewrite the division as a multiplication by 1/b (docs/jax.md)."""
    shape = jnp.broadcast_shapes(jnp.shape(a), jnp.shape(b))
    return jnp.broadcast_to(a, shape) / lax.optimization_barrier(jnp.broadcast_to(b, shape))


def _ste(y, q):
    """Forward q, gradient of y (straight through)."""
    return y + lax.stop_gradient(q - y)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _round_to(y, fmt):
    """y rounded to ``fmt`` (nearest even, :func:`emul_jax.quantize`), exactly (the sign of a zero
    kept); the derivative is the identity (STE)."""
    return _quantize_unchecked(y, fmt)


@_round_to.defjvp
def _round_to_jvp(fmt, primals, tangents):
    return _round_to(primals[0], fmt), tangents[0]


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def _block_round(x, fmt, axis):
    """x through :func:`emul_jax.blocks.quantize` (blocks of k along ``axis``); the derivative is the
    identity (STE)."""
    return _block_quantize(x, fmt, axis=axis)


@_block_round.defjvp
def _block_round_jvp(fmt, axis, primals, tangents):
    return _block_round(primals[0], fmt, axis), tangents[0]


def block_quant(x, fmt, axis: int = -1):
    """A block format's quantizer (float32 in and out): :func:`emul_jax.blocks.quantize` with blocks of
    k along ``axis`` — each block's e8m0 scale 2^e from its amax (the floor rule, ``e = floor(log2
    amax) − emax_element``), elements x/2^e rounded to nearest even and saturating, a short last
    block (axis length not a multiple of k) scaled on its own — bit for bit what
    :func:`emul.blocks.quantize` computes. Nothing to learn (the scales follow the values); the
    gradient is the identity (straight through)."""
    fmt = quantizer_format(fmt)
    if not is_block(fmt):
        raise ValueError(f"block_quant: {fmt.name} is not a block format")
    return _block_round(jnp.asarray(x, jnp.float32), fmt, axis)


def fake_quant(x, rng, zero, fmt, axis: int = -1):
    """The §E.1 quantizer: x quantized and dequantized (float32), straight-through gradients.

    ``rng`` (the range R) and ``zero`` (Z, the real value mapped to the grid's bottom) broadcast
    against ``x`` (scalars: per tensor; shape (C,) against a last axis of size C: per output channel).
    R is clamped to [1e-6, 1e5]. Integer formats (grid qmin..qmax, n = qmax − qmin), in float32:

    * zp = clamp(round(qmin − (Z·n)/R), qmin, qmax)   — the integer (hardware) zero point
    * q = round(clamp((x·n)/R + zp, qmin, qmax))        — rounded by :func:`emul_jax.quantize`
    * x̂ = (q − zp)·(R/n)

    round is half to even; every ``/`` is a correctly rounded float32 division. So x̂ = q·s + Z' with
    s = R/n and Z' = (qmin − zp)·s − qmin·s as in §E.1 (the products x·n and Z·n are taken before
    dividing by R, which makes the §E.1 anchor exact: 4 bit, R = 2, Z = −1 gives zp = round(7.5) = 8).
    Float formats are symmetric (Z unused): with M = the format's max, A = R/2,
    q = quantize(clamp((x·M)/A, −M, M), fmt) (nearest even), x̂ = q·(A/M).

    Gradients: round is the identity (STE), clamp passes zero outside [qmin, qmax]; R and Z get the
    gradients of the formulas above.

    A block format (``mxfp4``, ...) ignores R and Z: :func:`block_quant` along ``axis`` (the GEMM's
    reduction axis; ``axis`` is used by block formats only).
    """
    fmt = quantizer_format(fmt)
    if is_block(fmt):
        return block_quant(x, fmt, axis)
    x = jnp.asarray(x, jnp.float32)
    rng = jnp.clip(jnp.asarray(rng, jnp.float32), R_MIN, R_MAX)
    zero = jnp.asarray(zero, jnp.float32)
    if isinstance(fmt, FloatFormat):
        m = float(fmt.max)
        amax = rng * 0.5
        y = jnp.clip(_div(x * m, amax), -m, m)
        q = _round_to(y, fmt)
        return q * _div(amax, jnp.float32(m))
    qmin, qmax = float(fmt.min), float(fmt.max)
    n = qmax - qmin
    z0 = qmin - _div(zero * n, rng)
    zp = jnp.clip(_ste(z0, jnp.round(lax.stop_gradient(z0))), qmin, qmax)
    y = jnp.clip(_div(x * n, rng) + zp, qmin, qmax)
    q = _round_to(y, fmt)
    return (q - zp) * _div(rng, jnp.float32(n))


def _init_range(lo, hi, fmt):
    """(R, Z) from a minimum and maximum (already min <= 0 <= max): R = max − min (0 -> 1), Z = min;
    float formats: R = 2·max(|min|, |max|) (0 -> 1), Z = −R/2; block formats (unused): R = 1, Z = 0."""
    if is_block(fmt):
        return np.ones(np.shape(lo), np.float32), np.zeros(np.shape(lo), np.float32)
    if isinstance(fmt, FloatFormat):
        r = 2 * np.maximum(-lo, hi)
        r = np.where(r == 0, 1.0, r).astype(np.float32)
        return r, (-r / 2).astype(np.float32)
    r = (hi - lo).astype(np.float32)
    return np.where(r == 0, 1.0, r).astype(np.float32), lo.astype(np.float32)


# ------------------------------------------------------------------------------ the folded network

@dataclasses.dataclass(frozen=True)
class LayerInfo:
    """One conv/dense layer: ``kind`` ``"conv"`` (NHWC, HWIO kernel, SAME padding) or ``"dense"``,
    ``strides``, ``relu`` (its output goes through a ReLU, possibly after a BN), ``bn`` (the name of
    the BatchNorm that followed it in the trained model, or None)."""

    name: str
    kind: str
    strides: tuple = (1, 1)
    relu: bool = False
    bn: str | None = None


@dataclasses.dataclass(frozen=True)
class Folded:
    """A trained built-in model (mlp, cnn, resnet) as plain arrays: ``params[name]`` = {"w", "b"} with
    the BN folded in; ``raw[name]`` the unfolded weights; ``bn[name]`` = {"gamma", "beta", "mean",
    "var", "eps"} of the BN after layer ``name`` (empty for a model without BN)."""

    model: str
    layers: tuple
    params: dict
    raw: dict
    bn: dict
    graph: str = ""

    @property
    def names(self):
        return tuple(i.name for i in self.layers)

    @property
    def static(self):
        return (self.graph or self.model, self.layers)


def _layout(model: str, net):
    """[(layer path, bn path or None, relu)] in execution order."""
    if model == "mlp":
        return [("fc1", "bn1", True), ("head", None, False)]
    if model == "cnn":
        return [("c1", "b1", True), ("c2", "b2", True), ("c3", "b3", True), ("head", None, False)]
    if model == "resnet":
        out = [("stem", "bs", True)]
        for i, blk in enumerate(net.blocks):
            out += [(f"blocks.{i}.c1", f"blocks.{i}.b1", True), (f"blocks.{i}.c2", f"blocks.{i}.b2", False)]
            if blk.proj is not None:
                out.append((f"blocks.{i}.proj", f"blocks.{i}.bp", False))
        return out + [("head", None, False)]
    raise ValueError(f"model {model!r}: PTQ knows the built-in models mlp, cnn, resnet")


def _get(net, path):
    m = net
    for p in path.split("."):
        m = m[int(p)] if p.isdigit() else getattr(m, p)
    return m


def fold_bn(net, model: str) -> Folded:
    """Fold every BatchNorm into the conv/dense before it (§E.2 ``absorb_bn``), from its running
    statistics: k = γ/√(var + eps), W ← W·k (per output channel), b ← (b − mean)·k + β (float32).
    The folded float32 network computes what ``net`` computes in eval mode."""
    layers, params, raw, bns = [], {}, {}, {}
    for name, bn_name, relu in _layout(model, net):
        mod = _get(net, name)
        w = np.asarray(mod.kernel[...], np.float32)
        b = np.zeros(w.shape[-1], np.float32) if mod.bias is None else np.asarray(mod.bias[...], np.float32)
        if isinstance(mod, nnx.Conv):
            if mod.padding != "SAME" or any(d != 1 for d in np.atleast_1d(mod.kernel_dilation or 1)):
                raise ValueError(f"layer {name}: only SAME padding without dilation is supported")
            s = mod.strides
            strides = (s, s) if isinstance(s, int) else tuple(s)
            info = LayerInfo(name, "conv", strides, relu, bn_name)
        else:
            info = LayerInfo(name, "dense", (), relu, bn_name)
        raw[name] = {"w": w, "b": b}
        if bn_name is not None:
            bn = _get(net, bn_name)
            if not isinstance(bn, nnx.BatchNorm):
                raise ValueError(f"layer {bn_name}: {type(bn).__name__} cannot be folded (only nnx.BatchNorm; "
                                 "a Range Batch-Norm model is not supported)")
            g, beta = np.asarray(bn.scale[...], np.float32), np.asarray(bn.bias[...], np.float32)
            mean, var = np.asarray(bn.mean[...], np.float32), np.asarray(bn.var[...], np.float32)
            eps = np.float32(bn.epsilon)
            k = (g / np.sqrt(var + eps)).astype(np.float32)
            w, b = (w * k).astype(np.float32), ((b - mean) * k + beta).astype(np.float32)
            bns[name] = {"gamma": g, "beta": beta, "mean": mean, "var": var, "eps": float(eps)}
        params[name] = {"w": w, "b": b}
        layers.append(info)
    graph = model
    if model == "cnn":  # the classifier's input: global average pooling (64) or 4x4 adaptive pooling (1024)
        c = params["c3"]["w"].shape[-1]
        fan_in = params["head"]["w"].shape[0]
        if fan_in not in (c, 16 * c):
            raise ValueError(f"model cnn: a classifier of {fan_in} inputs fits neither pooling (global: {c}, "
                             f"4x4: {16 * c})")
        graph = "cnn-pool4" if fan_in == 16 * c else "cnn-mean"
    return Folded(model, tuple(layers), params, raw, bns, graph)


def _pool(x):
    return nnx.max_pool(x, (2, 2), (2, 2), padding="SAME")


def _pool4(x):
    """Adaptive average pooling to 4x4 as emul_jax.train's CNN computes it (``jax.image.resize``,
    linear with antialiasing), flattened."""
    x = jax.image.resize(x, (x.shape[0], 4, 4, x.shape[3]), "linear", antialias=True)
    return x.reshape(x.shape[0], -1)


def _graph(model, L, x, names):
    r = jax.nn.relu
    if model == "mlp":
        return L("head", r(L("fc1", x.reshape(x.shape[0], -1))))
    if model.startswith("cnn"):
        x = _pool(r(L("c1", x)))
        x = _pool(r(L("c2", x)))
        x = r(L("c3", x))
        return L("head", _pool4(x) if model == "cnn-pool4" else x.mean(axis=(1, 2)))
    x = r(L("stem", x))
    i = 0
    while f"blocks.{i}.c1" in names:
        p = f"blocks.{i}."
        y = L(p + "c2", r(L(p + "c1", x)))
        x = r(y + (L(p + "proj", x) if p + "proj" in names else x))
        i += 1
    return L("head", x.mean(axis=(1, 2)))


def _op(info, w, b, x):
    if info.kind == "conv":
        y = lax.conv_general_dilated(x, w, info.strides, "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                     precision=_HI)
    else:
        y = jnp.dot(x, w, precision=_HI)
    return y + b


def _layer(info, p, x, fmts):
    """One layer: input activation and weight through the §E.1 quantizer (``fmts`` = (weight format,
    activation format), or None for float32), then the float32 conv/dot plus the (float32) bias.
    Block formats quantize along the GEMM's reduction axis: the activation's channels (its last axis),
    the conv kernel's input channels (HWIO axis 2), the dense kernel's rows (axis 0) — as an
    :class:`emul_jax.ops.Operand` with that format does."""
    if fmts is None:
        return _op(info, p["w"], p["b"], x)
    wf, af = fmts
    xq = fake_quant(x, p["ar"], p["az"], af, axis=-1)  # NHWC / (N, K): the reduction axis is the last
    wq = fake_quant(p["w"], p["wr"], p["wz"], wf, axis=2 if info.kind == "conv" else 0)  # HWIO: I; (K, N): K
    return _op(info, wq, p["b"], xq)


def _run_graph(static, params, x, policy, record=None):
    model, layers = static
    infos = {i.name: i for i in layers}
    pol = dict(zip([i.name for i in layers], policy))

    def L(name, h):
        y = _layer(infos[name], params[name], h, pol[name])
        if record is not None:
            record[name] = (h, y)
        return y

    return _graph(model, L, x, tuple(infos))


@functools.partial(jax.jit, static_argnums=(0, 3))
def _forward(static, params, x, policy):
    return _run_graph(static, params, x, policy)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _trace(static, params, x, policy):
    rec = {}
    out = _run_graph(static, params, x, policy, rec)
    return out, rec


def _policy(folded, policy):
    if policy is None:
        return (None,) * len(folded.layers)
    if isinstance(policy, dict):
        policy = tuple(policy.get(n) for n in folded.names)
    return tuple(None if p is None else (quantizer_format(p[0]), quantizer_format(p[1])) for p in policy)


def _jparams(params):
    return jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)


def forward(folded: Folded, x, params=None, policy=None):
    """Logits of the folded network (jitted). ``params``: per layer {"w", "b"} (default the folded
    float32 ones) plus {"wr", "wz", "ar", "az"} for quantized layers; ``policy``: per layer (weight
    format, activation format) or None (float32), as a tuple in layer order or a dict by name."""
    params = folded.params if params is None else params
    return _forward(folded.static, _jparams(params), jnp.asarray(x, jnp.float32), _policy(folded, policy))


def trace(folded: Folded, x, params=None, policy=None):
    """(logits, {layer: (its input, its output)}) — the output before any BN (folded) / ReLU."""
    params = folded.params if params is None else params
    return _trace(folded.static, _jparams(params), jnp.asarray(x, jnp.float32), _policy(folded, policy))


def evaluate(folded, x, y, params=None, policy=None, *, batch: int = 500) -> float:
    """Top-1 accuracy."""
    correct = 0
    for i in range(0, len(y), batch):
        correct += int((np.asarray(forward(folded, x[i:i + batch], params, policy)).argmax(-1)
                        == y[i:i + batch]).sum())
    return correct / len(y)


# ------------------------------------------------------------------------------ naive quantization

WEIGHT_GRANULARITY = ("channel", "tensor")


def init_params(folded: Folded, x_calib, wfmt, afmt, params=None, *, weights: str = "channel") -> dict:
    """Naive quantizer parameters (§E.1), every layer: weights per output channel (``weights="channel"``,
    the paper's) or per tensor (``"tensor"``): min over the channel (tensor) clamped to <= 0, max to
    >= 0, R = max − min, a zero range -> 1, Z = min; activations per tensor from the float32 forward on
    ``x_calib``: each sample's min and max of the layer input, averaged over the samples, then
    min <= 0 <= max enforced. Float formats: symmetric ranges (:func:`fake_quant`). Block formats
    have no range (R = 1, Z = 0 are stored and unused). Returns {layer: {"w", "b", "wr", "wz", "ar",
    "az"}} (numpy float32; "wr"/"wz" of shape (C,) per channel, () per tensor)."""
    wfmt, afmt = quantizer_format(wfmt), quantizer_format(afmt)
    if weights not in WEIGHT_GRANULARITY:
        raise ValueError(f"weights={weights!r}: must be one of {', '.join(WEIGHT_GRANULARITY)}")
    params = folded.params if params is None else params
    _, rec = trace(folded, x_calib, params)
    out = {}
    for info in folded.layers:
        p = {k: np.asarray(v, np.float32) for k, v in params[info.name].items() if k in ("w", "b")}
        w = p["w"].reshape(-1, p["w"].shape[-1])
        if weights == "tensor":
            w = w.reshape(-1, 1)
        p["wr"], p["wz"] = _init_range(np.minimum(w.min(0), 0), np.maximum(w.max(0), 0), wfmt)
        if weights == "tensor":
            p["wr"], p["wz"] = p["wr"].reshape(()), p["wz"].reshape(())
        h = np.asarray(rec[info.name][0]).reshape(len(x_calib), -1)
        lo = np.float32(min(h.min(1).mean(), 0.0))
        hi = np.float32(max(h.max(1).mean(), 0.0))
        ar, az = _init_range(np.array(lo), np.array(hi), afmt)
        p["ar"], p["az"] = ar.reshape(()), az.reshape(())
        out[info.name] = p
    return out


def _uniform(folded, wfmt, afmt):
    return tuple((quantizer_format(wfmt), quantizer_format(afmt)) for _ in folded.layers)


# ------------------------------------------------------------------------------ AdaQuant (§E.2)

ADAQUANT_LR = {"w": 1e-5, "b": 1e-3, "act": 1e-1, "wq": 1e-3}
"""Adam learning rates of §E.2's groups: weights, bias, activation quantizer (range, zero point),
weight quantizer (range, zero point)."""
_GROUP = {"w": "w", "b": "b", "ar": "act", "az": "act", "wr": "wq", "wz": "wq"}


@functools.partial(jax.jit, static_argnums=(0, 1, 5))
def _adaquant_scan(info, fmts, p, xs, ys, lr, idx):
    lr = dict(lr)
    opt = optax.multi_transform({g: optax.adam(v) for g, v in lr.items()}, {k: _GROUP[k] for k in p})

    def loss_fn(q, xb, yb):
        out = _layer(info, q, xb, fmts)
        if info.relu:
            out, yb = jax.nn.relu(out), jax.nn.relu(yb)
        return jnp.mean((out - yb) ** 2)

    def step(carry, ix):
        q, s = carry
        loss, g = jax.value_and_grad(loss_fn)(q, xs[ix], ys[ix])
        u, s = opt.update(g, s, q)
        return (optax.apply_updates(q, u), s), loss

    (p, _), losses = lax.scan(step, (p, opt.init(p)), idx)
    return p, losses


@functools.partial(jax.jit, static_argnums=(0, 1))
def _layer_mse(info, fmts, p, xs, ys):
    out = _layer(info, p, xs, fmts)
    if info.relu:
        out, ys = jax.nn.relu(out), jax.nn.relu(ys)
    return jnp.mean((out - ys) ** 2)


def adaquant(folded: Folded, qparams: dict, x_calib, wfmt, afmt, *, iters: int = 1000, batch: int = 50,
             mode: str = "parallel", lr: dict | None = None, seed: int = 0, eval_size: int = 200,
             progress: bool = False):
    """AdaQuant (§E.2), layer by layer in execution order; returns (new parameters, report).

    Each layer minimises ‖f(layer_q(X)) − f(Y)‖² (mean over elements; f = ReLU when the layer's output
    goes through one, else the identity) over its weight, bias and both quantizers' (R, Z), with Adam
    in the groups of :data:`ADAQUANT_LR` (``lr`` overrides some), ``iters`` steps of ``batch`` cached
    samples drawn at random (one permutation of the samples per step, numpy seed ``seed``). Y is the
    float32 output of the layer (cached once). X: the float32 input (cached once; ``mode="parallel"``)
    or the input from the network whose earlier layers are already quantized with their AdaQuant
    parameters (re-cached per layer; ``"sequential"``). The report holds each layer's MSE before
    and after on a fixed random subset of ``eval_size`` samples.
    """
    if mode not in ("parallel", "sequential"):
        raise ValueError(f"mode={mode!r}: must be 'parallel' or 'sequential'")
    for what, v in (("iters", iters), ("batch", batch)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{what}={v!r}: must be a positive integer")
    fmts = (quantizer_format(wfmt), quantizer_format(afmt))
    rates = dict(ADAQUANT_LR)
    for k, v in (lr or {}).items():
        if k not in rates:
            raise ValueError(f"lr: unknown group {k!r}; groups: {', '.join(rates)}")
        rates[k] = float(v)
    x_calib = jnp.asarray(x_calib, jnp.float32)
    n = x_calib.shape[0]
    b = min(batch, n)
    _, fp = trace(folded, x_calib)
    rng = np.random.default_rng(seed)
    ev = np.sort(rng.permutation(n)[:min(eval_size, n)])
    out = {k: dict(v) for k, v in qparams.items()}
    report = []
    names = folded.names
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(names), desc=f"AdaQuant ({mode})", unit="layer", dynamic_ncols=True)
    for li, info in enumerate(folded.layers):
        xs, ys = fp[info.name]
        if mode == "sequential" and li:
            pol = tuple(fmts if j < li else None for j in range(len(names)))
            _, cur = trace(folded, x_calib, out, pol)
            xs = cur[info.name][0]
        idx = jnp.asarray(np.stack([rng.permutation(n)[:b] for _ in range(iters)]), jnp.int32)
        p = _jparams({k: out[info.name][k] for k in ("w", "b", "wr", "wz", "ar", "az")})
        before = float(_layer_mse(info, fmts, p, xs[ev], ys[ev]))
        p, losses = _adaquant_scan(info, fmts, p, xs, ys, tuple(sorted(rates.items())), idx)
        after = float(_layer_mse(info, fmts, p, xs[ev], ys[ev]))
        out[info.name] = {k: np.asarray(v) for k, v in p.items()}
        report.append({"layer": info.name, "mse_before": before, "mse_after": after,
                       "loss_first": float(losses[0]), "loss_last": float(losses[-1])})
        if bar is not None:
            bar.update(1)
            bar.set_postfix(layer=info.name, mse=f"{before:.3g}->{after:.3g}")
    if bar is not None:
        bar.close()
    return out, report


# ------------------------------------------------------------------------------ BN tuning (§E.4)

def _require_bn(folded, what):
    if not folded.bn:
        raise ValueError(f"{what}: the model has no BatchNorm layer (it needs the BN statistics of the "
                         "trained model)")


def bn_tune(folded: Folded, qparams: dict, x_calib, policy, *, momentum: float = 1.0, passes: int = 1) -> dict:
    """BN tuning (§E.4), layer by layer in execution order, for every quantized layer that had a BN:
    a BN with running mean β, running variance γ² and weight √(γ² + eps), bias β is re-inserted after
    it; ``passes`` training-mode passes over ``x_calib`` (one batch) update its running statistics
    with ``momentum`` m (PyTorch's convention: running ← (1 − m)·running + m·batch statistic); then it
    is folded back. In training mode every BN normalizes with the batch's own statistics, so a
    layer's batch statistics — the per-channel mean μ_q and (biased, over N·H·W) variance σ_q² of its
    quantized output — are those of the network whose earlier layers are fully re-normalized, and
    each pass sees the same ones: the running statistics end at
    μ_r = β + f·(μ_q − β), σ_r² = γ² + f·(σ_q² − γ²), f = 1 − (1 − m)^passes (m = 1, the default:
    μ_r = μ_q, σ_r² = σ_q²). The fold: k = √(γ² + eps)/√(σ_r² + eps), W ← W·k, b ← (b − μ_r)·k + β,
    and the weight quantizer's range and zero point ← ·k (a per-tensor weight quantizer: ·max k, so
    that with Z <= 0 <= Z + R its grid still spans every rescaled channel's old one). With m = 1 each
    channel's output then has mean β and standard deviation √(γ² + eps)·σ_q/√(σ_q² + eps) ≈ |γ| on
    the calibration batch (up to the weight's re-rounding). PyTorch updates the running variance
    with the unbiased batch variance (a factor n/(n − 1), n = N·H·W); here it is the biased one."""
    _require_bn(folded, "bn_tune")
    if not (isinstance(momentum, (int, float)) and 0 < momentum <= 1):
        raise ValueError(f"momentum={momentum!r}: must be in (0, 1]")
    if isinstance(passes, bool) or not isinstance(passes, int) or passes < 1:
        raise ValueError(f"passes={passes!r}: must be a positive integer")
    frac = 1.0 - (1.0 - float(momentum)) ** passes
    pol = _policy(folded, policy)
    full = {k: dict(v) for k, v in qparams.items()}  # every BN at its batch statistics (training mode)
    out = {k: dict(v) for k, v in qparams.items()} if frac != 1.0 else full
    x_calib = jnp.asarray(x_calib, jnp.float32)

    def fold(p, k, mu, beta):
        p["w"] = (p["w"] * k).astype(np.float32)
        p["b"] = ((p["b"] - mu) * k + beta).astype(np.float32)
        kq = k if np.ndim(p["wr"]) else k.max()  # a per-tensor weight range grows to cover every channel
        p["wr"] = (p["wr"] * kq).astype(np.float32)
        p["wz"] = (p["wz"] * kq).astype(np.float32)

    for li, info in enumerate(folded.layers):
        if info.name not in folded.bn or pol[li] is None:
            continue
        _, rec = trace(folded, x_calib, full, pol)
        y = np.asarray(rec[info.name][1], np.float64).reshape(-1, folded.bn[info.name]["beta"].shape[0])
        mu, var = y.mean(0), y.var(0)
        bn = folded.bn[info.name]
        g2 = bn["gamma"].astype(np.float64) ** 2
        num = np.sqrt(g2 + bn["eps"])
        if frac != 1.0:
            beta = bn["beta"].astype(np.float64)
            rm, rv = beta + frac * (mu - beta), g2 + frac * (var - g2)
            fold(out[info.name], num / np.sqrt(rv + bn["eps"]), rm, bn["beta"])
        fold(full[info.name], num / np.sqrt(var + bn["eps"]), mu, bn["beta"])
    return out


# ------------------------------------------------------------------------------ bias tuning (§E.5)

@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _bias_scan(static, policy, trainable, params, xs, targets, lr, idx):
    opt = optax.sgd(lr)
    biases = {n: params[n]["b"] for n in trainable}

    def loss_fn(bs, xb, tb):
        full = {n: (dict(p, b=bs[n]) if n in bs else p) for n, p in params.items()}
        z = _run_graph(static, full, xb, policy)
        p = jax.nn.softmax(tb)
        return jnp.mean(p * (jax.nn.log_softmax(tb) - jax.nn.log_softmax(z)))

    def step(carry, ix):
        bs, s = carry
        loss, g = jax.value_and_grad(loss_fn)(bs, xs[ix], targets[ix])
        u, s = opt.update(g, s, bs)
        return (optax.apply_updates(bs, u), s), loss

    (biases, _), losses = lax.scan(step, (biases, opt.init(biases)), idx)
    return biases, losses


def bias_tune(folded: Folded, qparams: dict, x_calib, policy, *, steps: int = 600, batch: int = 50,
              lr: float = 0.1, seed: int = 0):
    """Bias tuning (§E.5): SGD (lr ``lr``, no momentum) on the biases of every layer but the classifier
    (``head``), ``steps`` steps of ``batch`` calibration images (one permutation per step, numpy seed
    ``seed``), loss KL(softmax(e) ‖ softmax(z_q)) averaged over every element (PyTorch's
    ``KLDivLoss(reduction='mean')``), e = the float32 network's logits of the same image (with one
    image per class these are the paper's per-class stored logits). Returns (parameters, losses)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps={steps!r}: must be a positive integer")
    x = jnp.asarray(x_calib, jnp.float32)
    targets = forward(folded, x)
    n = x.shape[0]
    rng = np.random.default_rng(seed)
    idx = jnp.asarray(np.stack([rng.permutation(n)[:min(batch, n)] for _ in range(steps)]), jnp.int32)
    trainable = tuple(nm for nm in folded.names if nm != "head")
    biases, losses = _bias_scan(folded.static, _policy(folded, policy), trainable, _jparams(qparams), x, targets,
                                jnp.float32(lr), idx)
    out = {k: dict(v) for k, v in qparams.items()}
    for nm, b in biases.items():
        out[nm]["b"] = np.asarray(b)
    return out, np.asarray(losses)


# ------------------------------------------------------------------------------ integer program (§E.3)

def solve_bit_allocation(delta_loss, sizes, bits, D: float):
    """The §E.3 integer program, solved exactly by ``scipy.optimize.milp``: choose one bit width per
    layer (``bits[k]``; binary I[l, k], Σ_k I[l, k] = 1) minimising Σ I[l, k]·delta_loss[l, k] subject
    to the weight bits Σ I[l, k]·sizes[l]·bits[k] <= D · 32 · Σ sizes (D: the model size as a fraction
    of float32). Returns the chosen index into ``bits`` per layer (int array). An infeasible D (below
    the all-narrowest model's fraction) raises ValueError naming the smallest feasible D."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    dl = np.asarray(delta_loss, np.float64)
    sizes = np.asarray(sizes, np.float64)
    bits = np.asarray(bits, np.float64)
    if dl.ndim != 2 or dl.shape != (len(sizes), len(bits)):
        raise ValueError(f"delta_loss: expected shape ({len(sizes)}, {len(bits)}), got {dl.shape}")
    if not np.isfinite(dl).all():
        raise ValueError("delta_loss: must be finite")
    if not (isinstance(D, (int, float)) and np.isfinite(D) and D > 0):
        raise ValueError(f"size D={D!r}: must be a positive number (a fraction of the float32 model size)")
    total = 32.0 * sizes.sum()
    smallest = float((sizes * bits.min()).sum() / total)
    if D * total < (sizes * bits.min()).sum() * (1 - 1e-12):
        raise ValueError(f"size D={D:g}: infeasible; even every layer at {bits.min():g} bits needs "
                         f"D >= {smallest:.6g}")
    L, K = dl.shape
    c = dl.ravel()
    one = np.zeros((L, L * K))
    for l in range(L):
        one[l, l * K:(l + 1) * K] = 1
    size_row = (sizes[:, None] * bits[None, :]).ravel()[None, :]
    cons = [LinearConstraint(one, 1, 1), LinearConstraint(size_row, -np.inf, D * total)]
    res = milp(c, constraints=cons, integrality=np.ones(L * K), bounds=Bounds(0, 1))
    if res.status != 0 or res.x is None:
        raise ValueError(f"size D={D:g}: the integer program has no solution ({res.message})")
    return np.round(res.x).reshape(L, K).argmax(1)


def _brute_force(delta_loss, sizes, bits, D):
    """Exhaustive search over every assignment (for tests): (best objective, choice)."""
    dl, sizes = np.asarray(delta_loss), np.asarray(sizes)
    best = (np.inf, None)
    for ch in itertools.product(range(len(bits)), repeat=len(sizes)):
        if sum(sizes[l] * bits[k] for l, k in enumerate(ch)) <= D * 32 * sizes.sum():
            v = sum(dl[l, k] for l, k in enumerate(ch))
            if v < best[0]:
                best = (v, np.array(ch))
    return best


def _ce(logits, y):
    return float(optax.softmax_cross_entropy_with_integer_labels(jnp.asarray(logits), jnp.asarray(y)).mean())


def layer_sensitivity(folded: Folded, params_by_fmt: dict, fmts, x_calib, y_calib):
    """ΔL[l, k] of §E.3: the calibration cross-entropy of the network with every layer at ``fmts[0]``
    (the base, e.g. 8 bit) except layer l at ``fmts[k]``, minus that of the all-base network, at least
    1e-6 (k = 0: 0). ``fmts``: (weight format, activation format) pairs; ``params_by_fmt[k]`` the layer
    parameters for ``fmts[k]`` (naive or AdaQuant). Returns (ΔL array (layers, len(fmts)), base loss)."""
    x = jnp.asarray(x_calib, jnp.float32)
    names = folded.names

    def params_for(choice):
        return {n: params_by_fmt[k][n] for n, k in zip(names, choice)}

    def loss(choice):
        return _ce(forward(folded, x, params_for(choice), tuple(fmts[k] for k in choice)), y_calib)

    base = loss([0] * len(names))
    dl = np.zeros((len(names), len(fmts)))
    for l in range(len(names)):
        for k in range(1, len(fmts)):
            ch = [0] * len(names)
            ch[l] = k
            dl[l, k] = max(loss(ch) - base, 1e-6)
    return dl, base


# ------------------------------------------------------------------------------ data-free (§F)

def bn_input_stats(folded: Folded, x):
    """{BN layer: (mean, variance)} per channel of each BN's input (the unfolded conv output) over the
    batch x (N, H, W): the variance is the biased (population) one, mean((z − mean)²)."""
    _require_bn(folded, "bn_input_stats")
    return _bn_stats(folded.static, _bn_consts(folded), folded.raw, jnp.asarray(x, jnp.float32))


def _bn_consts(folded):
    return {n: {k: (jnp.asarray(v, jnp.float32) if k != "eps" else float(v)) for k, v in d.items()}
            for n, d in folded.bn.items()}


def _bn_forward(static, bns, raw, x):
    model, layers = static
    infos = {i.name: i for i in layers}
    stats = {}

    def L(name, h):
        info = infos[name]
        z = _op(info, raw[name]["w"], raw[name]["b"], h)
        if name in bns:
            bn = bns[name]
            axes = tuple(range(z.ndim - 1))
            mu = z.mean(axes)
            stats[name] = (mu, jnp.mean((z - mu) ** 2, axes))
            z = (z - bn["mean"]) / jnp.sqrt(bn["var"] + bn["eps"]) * bn["gamma"] + bn["beta"]
        return z

    return _graph(model, L, x, tuple(infos)), stats


@functools.partial(jax.jit, static_argnums=(0,))
def _bn_stats(static, bns, raw, x):
    return _bn_forward(static, bns, raw, x)[1]


def stats_loss(stats, bns, kind: str = "sym", eps: float = 1e-5):
    """§F's loss: the mean over BN layers of the mean over channels of a divergence between the batch
    statistics (μ, σ²) and the running ones (μ̂, σ̂²): ``"kl"`` KL(N(μ, σ²) ‖ N(μ̂, σ̂²)) =
    ½(−1 + ln(σ̂²/σ²) + (σ² + (μ − μ̂)²)/σ̂²) with both variances clamped at >= ``eps``; ``"sym"``
    ½(KL(p‖q) + KL(q‖p)); ``"mse"`` (μ − μ̂)² + (σ² − σ̂²)²; ``"l1"`` |μ − μ̂| + |σ² − σ̂²|."""
    if kind not in STATS_LOSSES:
        raise ValueError(f"loss={kind!r}: must be one of {', '.join(STATS_LOSSES)}")

    def kl(m1, v1, m2, v2):
        return 0.5 * (-1 + jnp.log(v2 / v1) + (v1 + (m1 - m2) ** 2) / v2)

    terms = []
    for name, (mu, var) in stats.items():
        mh, vh = bns[name]["mean"], bns[name]["var"]
        if kind in ("kl", "sym"):
            v1, v2 = jnp.maximum(var, eps), jnp.maximum(vh, eps)
            d = kl(mu, v1, mh, v2)
            if kind == "sym":
                d = 0.5 * (d + kl(mh, v2, mu, v1))
        elif kind == "mse":
            d = (mu - mh) ** 2 + (var - vh) ** 2
        else:
            d = jnp.abs(mu - mh) + jnp.abs(var - vh)
        terms.append(d.mean())
    return jnp.mean(jnp.stack(terms))


@functools.partial(jax.jit, static_argnums=(0, 4, 5, 6, 7))
def _synth_scan(static, bns, raw, x0, kind, steps, lr, eps):
    opt = optax.adam(lr)

    def loss_fn(x):
        return stats_loss(_bn_forward(static, bns, raw, x)[1], bns, kind, eps)

    def step(carry, _):
        x, s = carry
        loss, g = jax.value_and_grad(loss_fn)(x)
        u, s = opt.update(g, s, x)
        return (optax.apply_updates(x, u), s), loss

    (x, _), losses = lax.scan(step, (x0, opt.init(x0)), None, length=steps)
    return x, losses


def synthesize(folded: Folded, n: int, image_shape, *, loss: str = "sym", steps: int = 500, lr: float = 0.1,
               seed: int = 0, eps: float = 1e-5, chunk: int = 100, progress: bool = False):
    """Data-free calibration images (§F): ``n`` images of ``image_shape`` (H, W, C), initialised i.i.d.
    N(0, 1) (numpy seed ``seed``), optimised with Adam (``lr``) for ``steps`` steps, the network frozen
    (BN in eval mode), to minimise :func:`stats_loss` (``loss``) between each BN input's batch
    statistics over the ``n`` images (biased variance) and its running mean / variance. Returns
    (images float32, loss per step)."""
    _require_bn(folded, "synthesize (data-free calibration)")
    if loss not in STATS_LOSSES:
        raise ValueError(f"loss={loss!r}: must be one of {', '.join(STATS_LOSSES)}")
    for what, v in (("n", n), ("steps", steps)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{what}={v!r}: must be a positive integer")
    x = jnp.asarray(np.random.default_rng(seed).standard_normal((n, *image_shape)), jnp.float32)
    bns, raw = _bn_consts(folded), _jparams(folded.raw)
    losses = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc=f"synthetic data ({loss})", unit="step", dynamic_ncols=True)
    done = 0
    while done < steps:
        k = min(chunk, steps - done)
        x, ls = _synth_scan(folded.static, bns, raw, x, loss, k, float(lr), float(eps))
        losses.extend(np.asarray(ls).tolist())
        done += k
        if bar is not None:
            bar.update(k)
            bar.set_postfix(loss=f"{losses[-1]:.4g}")
    if bar is not None:
        bar.close()
    return np.asarray(x), np.asarray(losses)


# ------------------------------------------------------------------------------ the pipelines

def calibration_set(x, y, per_class: int, *, seed: int = 0):
    """``per_class`` images of every class drawn at random (numpy seed ``seed``) from (x, y)."""
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise ValueError(f"calib={per_class!r}: must be a positive integer (images per class) or 'synthetic'")
    rng = np.random.default_rng(seed)
    idx = []
    for c in np.unique(y):
        where = np.flatnonzero(y == c)
        if len(where) < per_class:
            raise ValueError(f"calib={per_class}: class {c} has only {len(where)} training images")
        idx.extend(rng.choice(where, per_class, replace=False))
    idx = np.sort(np.array(idx))
    return x[idx], y[idx]


def run(folded: Folded, calib_x, calib_y, test_x, test_y, *, wfmt="uint4", afmt="uint4", high=("uint8", "uint8"),
        pipeline: str = "advanced", sizes=(), adaquant_iters: int = 1000, adaquant_mode: str = "parallel",
        bias_steps: int = 600, bn_tuning: bool = True, bias_tuning: bool = True, seed: int = 0,
        weights: str = "channel", bn_momentum: float = 1.0, bn_passes: int = 1, sigma: float | None = None,
        progress: bool = False, log=None) -> dict:
    """A pipeline (§E.0) from the folded float32 network; returns the record (JSON-ready).

    Uniform low precision (``wfmt``/``afmt``): float32, naive, [advanced: + AdaQuant], + BN tuning
    (``bn_momentum``, ``bn_passes``: :func:`bn_tune`), + bias tuning — each step's test accuracy.
    Then, per size D in ``sizes``: the §E.3 bit allocation between ``high`` — one (weight, activation)
    format pair, the base, or a list of pairs, the first the base — and the low formats (ΔL from the
    naive (light) or AdaQuant (advanced) parameters of each precision), + BN tuning, + bias tuning.
    ``sigma`` (§E.3's ``--sigma``): every ΔL[l, k] (k not the base) of the program for each D is
    multiplied by 1 + sigma·ξ, ξ ~ N(0, 1) drawn afresh per D (numpy seed ``seed``), to explore other
    allocations; the ΔL used is recorded per D. ``calib_y``: labels for the ΔL cross-entropy (for
    synthetic data, the float32 network's predictions). ``weights``: the weight quantizers' granularity
    (:func:`init_params`), for both precisions. The integer program counts
    :func:`storage_bits` per weight."""
    if pipeline not in PIPELINES:
        raise ValueError(f"pipeline={pipeline!r}: must be one of {', '.join(PIPELINES)}")
    if bn_tuning:
        _require_bn(folded, "BN tuning")
    low = (quantizer_format(wfmt), quantizer_format(afmt))
    if isinstance(high[0], (str, FixedFormat, FloatFormat, BlockFormat)):
        high = [high]
    highs = [(quantizer_format(h[0]), quantizer_format(h[1])) for h in high]
    if not highs:
        raise ValueError("high: at least one (weight, activation) format pair")
    hi = highs[0]
    if sigma is not None and not (np.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma={sigma!r}: must be a non-negative number")
    tune = functools.partial(bn_tune, momentum=bn_momentum, passes=bn_passes)
    t0 = time.perf_counter()
    say = log or (lambda s: None)
    steps = []

    def acc(name, params=None, policy=None, **extra):
        a = evaluate(folded, test_x, test_y, params, policy)
        steps.append(dict(step=name, accuracy=a, **extra))
        say(f"{name:<40} {100 * a:6.2f}%")
        return a

    acc("float32 (BN folded)")
    lowpol = (low,) * len(folded.layers)

    def prepare(fmts):
        p = init_params(folded, calib_x, fmts[0], fmts[1], weights=weights)
        rep = None
        if pipeline == "advanced":
            p, rep = adaquant(folded, p, calib_x, fmts[0], fmts[1], iters=adaquant_iters, mode=adaquant_mode,
                              seed=seed, progress=progress)
        return p, rep

    per_tensor = " per tensor" if weights == "tensor" and not is_block(low[0]) else ""
    name = f"W {low[0].name}{per_tensor} / A {low[1].name}"
    naive = init_params(folded, calib_x, *low, weights=weights)
    acc(f"naive {name}", naive, lowpol)
    p, ada_report = naive, None
    if pipeline == "advanced":
        p, ada_report = adaquant(folded, naive, calib_x, *low, iters=adaquant_iters, mode=adaquant_mode, seed=seed,
                                 progress=progress)
        acc(f"+ AdaQuant ({adaquant_mode})", p, lowpol)
    calibrated_low = p
    if bn_tuning:
        p = tune(folded, p, calib_x, lowpol)
        acc("+ BN tuning", p, lowpol)
    if bias_tuning:
        p, _ = bias_tune(folded, p, calib_x, lowpol, steps=bias_steps, seed=seed)
        acc("+ bias tuning", p, lowpol)

    ip = []
    if sizes:
        fmts = [*highs, low]
        by = [prepare(h)[0] for h in highs] + [calibrated_low]
        dl, base = layer_sensitivity(folded, by, fmts, calib_x, calib_y)
        nsz = np.array([folded.params[n]["w"].size for n in folded.names], np.float64)
        bits = [storage_bits(f[0]) for f in fmts]
        noise = np.random.default_rng(seed)
        for D in sizes:
            dl_used = dl
            if sigma is not None:
                dl_used = dl * (1 + sigma * noise.standard_normal(dl.shape))
                dl_used[:, 0] = 0.0
            choice = solve_bit_allocation(dl_used, nsz, bits, float(D))
            pol = tuple(fmts[k] for k in choice)
            q = {n: by[k][n] for n, k in zip(folded.names, choice)}
            used = float((nsz * np.array([bits[k] for k in choice])).sum() / (32 * nsz.sum()))
            row = {"D": float(D), "size": used,
                   "low_layers": [n for n, k in zip(folded.names, choice) if k == len(fmts) - 1],
                   "formats": [fmts[k][0].name for k in choice]}
            if sigma is not None:
                row["delta_loss_used"] = dl_used.tolist()
            row["accuracy"] = evaluate(folded, test_x, test_y, q, pol)
            if bn_tuning:
                q = tune(folded, q, calib_x, pol)
                row["accuracy_bn"] = evaluate(folded, test_x, test_y, q, pol)
            if bias_tuning:
                q, _ = bias_tune(folded, q, calib_x, pol, steps=bias_steps, seed=seed)
                row["accuracy_bias"] = evaluate(folded, test_x, test_y, q, pol)
            final = row.get("accuracy_bias", row.get("accuracy_bn", row["accuracy"]))
            say(f"IP D={D:<6g} size {used:.4f} ({len(row['low_layers'])} layers at {low[0].name}) "
                f"{100 * row['accuracy']:6.2f}% -> after tuning {100 * final:6.2f}%")
            ip.append(row)
        ip_meta = {"delta_loss": dl.tolist(), "base_loss": base, "layers": list(folded.names),
                   "weights": nsz.tolist(), "bits": bits, "formats": [[f[0].name, f[1].name] for f in fmts],
                   "sigma": sigma}
    else:
        ip_meta = None
    record = {"pipeline": pipeline, "weights": low[0].name, "activations": low[1].name, "weight_ranges": weights,
              "high": [hi[0].name, hi[1].name], "bn_tuning": {"momentum": bn_momentum, "passes": bn_passes},
              "steps": steps, "adaquant": ada_report, "ip": ip,
              "ip_inputs": ip_meta, "wall_s": time.perf_counter() - t0}
    return record


# ------------------------------------------------------------------------------ report

RECORD_SCHEMA = "emul.ptq/1"


def table(record: dict) -> str:
    """The record as text: accuracy after each step of the pipeline, then one row per size D."""
    r = record["result"]
    lines = [f"{record['model_file']} ({record['dataset']}, {record['model']}), pipeline {r['pipeline']}, "
             f"calibration {record['calibration']}, seed {record['seed']}",
             f"{'step':<44} {'test accuracy %':>15}"]
    for s in r["steps"]:
        lines.append(f"{s['step']:<44} {100 * s['accuracy']:15.2f}")
    if r["ip"]:
        names = [f[0] for f in r["ip_inputs"]["formats"]]
        sigma = r["ip_inputs"].get("sigma")
        lines += ["", f"integer program ({' / '.join(names)} per layer; D = weight bits / float32 bits"
                      + (f"; ΔL noise sigma {sigma:g}" if sigma is not None else "") + ")",
                  f"{'D':>6} {'size':>7} {'layers per format':>24} {'quantized %':>12} {'+BN tuning %':>13} "
                  f"{'+bias tuning %':>15}"]
        for row in r["ip"]:
            bn = f"{100 * row['accuracy_bn']:.2f}" if "accuracy_bn" in row else "-"
            bias = f"{100 * row['accuracy_bias']:.2f}" if "accuracy_bias" in row else "-"
            count = " ".join(f"{n}:{row['formats'].count(n)}" for n in names)
            lines.append(f"{row['D']:6.3f} {row['size']:7.4f} {count:>24} "
                         f"{100 * row['accuracy']:12.2f} {bn:>13} {bias:>15}")
    return "\n".join(lines)


def plot(record: dict, path) -> Path:
    """PNG: accuracy per pipeline step, and accuracy vs compression D (integer program)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = record["result"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.6))
    ax = axes[0]
    names = [s["step"] for s in r["steps"]]
    accs = [100 * s["accuracy"] for s in r["steps"]]
    ax.bar(range(len(names)), accs, color="C0")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(max(0, min(accs) - 5), 100.5)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{r['pipeline']} pipeline, {r['weights']}/{r['activations']}")
    ax = axes[1]
    if r["ip"]:
        ds = [row["D"] for row in r["ip"]]
        for key, label in (("accuracy", "quantized"), ("accuracy_bn", "+ BN tuning"),
                           ("accuracy_bias", "+ bias tuning")):
            if key in r["ip"][0]:
                ax.plot(ds, [100 * row[key] for row in r["ip"]], "o-", label=label)
        ax.axhline(accs[0], color="k", lw=0.8, ls="--", label="float32")
        ax.set_xlabel("compression D (weight bits / float32 bits)")
        ax.set_ylabel("test accuracy (%)")
        ax.legend(fontsize=8)
        ax.set_title(f"bit allocation ({' / '.join(f[0] for f in r['ip_inputs']['formats'])} per layer)")
    else:
        ax.text(0.5, 0.5, "no --size given", ha="center", va="center")
        ax.set_axis_off()
    fig.suptitle(f"emul ptq: {record['dataset']} {record['model']}")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------ the command line

def build_parser():
    import argparse

    p = argparse.ArgumentParser(
        prog="emul ptq",
        description="Post-training quantization of a model saved by `emul train --save` (AdaQuant, integer "
                    "programming bit allocation, BN and bias tuning, data-free calibration); prints a table "
                    "and writes a JSON record and a PNG (docs/ptq.md).")
    p.add_argument("model", help="a .npz saved by `emul train --save`")
    p.add_argument("--bits", type=int, default=4, help="low precision: uint<bits> weights and activations "
                                                       "(default %(default)s)")
    p.add_argument("--w-format", default=None, help="weight format instead of uint<bits> (e.g. int4, e2m1fn, "
                                                    "mxfp4, mxfp8_e4m3)")
    p.add_argument("--a-format", default=None, help="activation format instead of uint<bits>")
    p.add_argument("--w-ranges", default="channel", help="weight quantizer ranges: channel (per output channel, "
                                                         "the paper's) or tensor (default %(default)s)")
    p.add_argument("--high-bits", default="8", help="the integer program's other precision(s): uint<b> weights "
                                                   "and activations; comma-separated for several, the first the "
                                                   "base (default 8)")
    p.add_argument("--high-format", default=None, help="instead of --high-bits: the other format(s), comma-separated, "
                                                       "the first the base (e.g. mxfp8_e4m3 or e4m3fn,e3m2fn)")
    p.add_argument("--sigma", type=float, default=None, help="integer program: multiply each ΔL by 1 + sigma·N(0,1), "
                                                             "drawn per D (§E.3)")
    p.add_argument("--calib", default="1", help="N (training images per class) or 'synthetic' (default 1)")
    p.add_argument("--synthetic-n", type=int, default=None, help="synthetic images (default 10 per class)")
    p.add_argument("--synthetic-steps", type=int, default=500)
    p.add_argument("--synthetic-lr", type=float, default=0.1)
    p.add_argument("--synthetic-loss", default="sym", help=f"one of {', '.join(STATS_LOSSES)}")
    p.add_argument("--pipeline", default="advanced", help="light or advanced (default %(default)s)")
    p.add_argument("--size", default="", help="comma-separated sizes D for the integer program "
                                               "(fractions of the float32 model size, e.g. 0.14,0.18,0.22)")
    p.add_argument("--iters", type=int, default=1000, help="AdaQuant iterations per layer (default 1000)")
    p.add_argument("--mode", default="parallel", help="AdaQuant: parallel or sequential")
    p.add_argument("--bias-steps", type=int, default=600, help="bias-tuning SGD steps (default 600)")
    p.add_argument("--bn-momentum", type=float, default=1.0, help="BN tuning: running-statistics momentum "
                                                                  "(default 1: the calibration batch's statistics)")
    p.add_argument("--bn-passes", type=int, default=1, help="BN tuning: training-mode passes (default 1)")
    p.add_argument("--no-bn-tuning", action="store_true")
    p.add_argument("--no-bias-tuning", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--test-limit", type=int, default=None, help="evaluate on the first N test images only")
    p.add_argument("--out", default="results/ptq", help="directory for the JSON record and the PNG")
    p.add_argument("--no-progress", action="store_true")
    return p


def _slug(name: str) -> str:
    """A format name as a file-name part: runs of characters other than letters, digits, '.', '-' -> '-'."""
    import re

    return re.sub(r"[^A-Za-z0-9.\-]+", "-", name).strip("-")


def run_cli(args, argv) -> int:
    """``emul ptq`` after parsing: every option checked before the model is loaded."""
    if args.pipeline not in PIPELINES:
        raise ValueError(f"--pipeline {args.pipeline!r}: must be one of {', '.join(PIPELINES)}")
    if args.mode not in ("parallel", "sequential"):
        raise ValueError(f"--mode {args.mode!r}: must be parallel or sequential")
    if args.synthetic_loss not in STATS_LOSSES:
        raise ValueError(f"--synthetic-loss {args.synthetic_loss!r}: must be one of {', '.join(STATS_LOSSES)}")
    try:
        high_bits = [int(b) for b in args.high_bits.split(",")]
    except ValueError:
        raise ValueError(f"--high-bits {args.high_bits!r}: integers, comma-separated") from None
    if not 2 <= args.bits <= 16 or not all(2 <= b <= 16 for b in high_bits):
        raise ValueError(f"--bits {args.bits} / --high-bits {args.high_bits}: must be between 2 and 16")
    if not 0 < args.bn_momentum <= 1:
        raise ValueError(f"--bn-momentum {args.bn_momentum:g}: must be in (0, 1]")
    if args.bn_passes < 1:
        raise ValueError(f"--bn-passes {args.bn_passes}: must be a positive integer")
    if args.sigma is not None and not (np.isfinite(args.sigma) and args.sigma >= 0):
        raise ValueError(f"--sigma {args.sigma:g}: must be a non-negative number")
    if args.w_ranges not in WEIGHT_GRANULARITY:
        raise ValueError(f"--w-ranges {args.w_ranges!r}: must be one of {', '.join(WEIGHT_GRANULARITY)}")
    wfmt = quantizer_format(args.w_format or f"uint{args.bits}")
    afmt = quantizer_format(args.a_format or f"uint{args.bits}")
    names = args.high_format.split(",") if args.high_format else [f"uint{b}" for b in high_bits]
    highs = [(quantizer_format(n.strip()),) * 2 for n in names]
    if args.calib == "synthetic":
        per_class = None
    else:
        try:
            per_class = int(args.calib)
        except ValueError:
            raise ValueError(f"--calib {args.calib!r}: must be a positive integer (images per class) or "
                             "'synthetic'") from None
        if per_class < 1:
            raise ValueError(f"--calib {per_class}: must be a positive integer (images per class) or 'synthetic'")
    sizes = []
    for s in (t.strip() for t in args.size.split(",")):
        if not s:
            continue
        try:
            D = float(s)
        except ValueError:
            raise ValueError(f"--size {s!r}: not a number") from None
        if not D > 0:
            raise ValueError(f"--size {s}: must be positive")
        if D < storage_bits(wfmt) / 32 - 1e-12:
            raise ValueError(f"--size {D:g}: infeasible; even every layer at {storage_bits(wfmt):g} bits needs D >= "
                             f"{storage_bits(wfmt) / 32:g}")
        sizes.append(D)
    if sizes and any(storage_bits(h[0]) <= storage_bits(wfmt) for h in highs):
        raise ValueError(f"--high-bits/--high-format {', '.join(h[0].name for h in highs)}: each must take more bits "
                         f"than the low weight format's {storage_bits(wfmt):g}")
    path = Path(args.model)
    if not path.is_file():
        raise ValueError(f"model {str(path)!r}: no such file (save one with `emul train --save`)")
    from .train import load_dataset, load_model

    net, meta = load_model(path)
    folded = fold_bn(net, meta["model"])
    if (per_class is None or not args.no_bn_tuning) and not folded.bn:
        raise ValueError(f"{path}: the model has no BatchNorm layer; BN tuning and synthetic calibration need one")
    ds = load_dataset(meta["dataset"])
    test_x, test_y = ds.x_test, ds.y_test
    if args.test_limit:
        test_x, test_y = test_x[:args.test_limit], test_y[:args.test_limit]
    progress = not args.no_progress
    synth = None
    if per_class is None:
        n = args.synthetic_n or 10 * meta["classes"]
        cx, losses = synthesize(folded, n, tuple(meta["image_shape"]), loss=args.synthetic_loss,
                                steps=args.synthetic_steps, lr=args.synthetic_lr, seed=args.seed, progress=progress)
        cy = np.asarray(forward(folded, cx)).argmax(-1)
        synth = {"n": n, "loss": args.synthetic_loss, "steps": args.synthetic_steps, "lr": args.synthetic_lr,
                 "loss_first": float(losses[0]), "loss_last": float(losses[-1])}
        calib = f"{n} synthetic images ({args.synthetic_loss}, {args.synthetic_steps} steps)"
    else:
        cx, cy = calibration_set(ds.x_train, ds.y_train, per_class, seed=args.seed)
        calib = f"{per_class} training image(s) per class ({len(cy)})"
    result = run(folded, cx, cy, test_x, test_y, wfmt=wfmt, afmt=afmt, high=highs, pipeline=args.pipeline,
                 sizes=sizes, adaquant_iters=args.iters, adaquant_mode=args.mode, bias_steps=args.bias_steps,
                 bn_tuning=not args.no_bn_tuning, bias_tuning=not args.no_bias_tuning, seed=args.seed,
                 weights=args.w_ranges, bn_momentum=args.bn_momentum, bn_passes=args.bn_passes, sigma=args.sigma,
                 progress=progress, log=(lambda s: print(s, file=sys.stderr)) if progress else None)
    record = {"schema": RECORD_SCHEMA, "command": "emul ptq " + " ".join(argv), "model_file": str(path),
              "model": meta["model"], "dataset": meta["dataset"], "calibration": calib, "synthetic": synth,
              "seed": args.seed, "test_images": len(test_y), "machine": machine(), "result": result}
    stem = "_".join(["ptq", meta["dataset"], meta["model"], args.pipeline, "synthetic" if per_class is None else "real",
                     _slug(wfmt.name) + ("-pt" if args.w_ranges == "tensor" and not is_block(wfmt) else ""),
                     _slug(afmt.name)])
    return write(record, args.out, stem, table, plot)


def main(argv=None) -> int:
    """``emul ptq ...``; bad input exits with status 2 and a message."""
    return cli("emul ptq", build_parser, run_cli, argv)


if __name__ == "__main__":
    sys.exit(main())

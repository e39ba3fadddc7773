"""Flax NNX side of emulated training: injected GEMMs, Range Batch-Norm, transposable-mask schedules.

Imports flax (the ``emul[nn]`` extra); ``import emul_jax`` does not import this module. Papers
are cited as in ``docs/references.md``.

* :class:`DotGeneral` / :class:`ConvGeneralDilated` -- small ``nnx.Module`` adapters with the
  signatures of ``lax.dot_general`` / ``lax.conv_general_dilated`` (``precision``,
  ``preferred_element_type``, ``out_sharding`` accepted), for ``nnx.Linear(dot_general=...)`` and
  ``nnx.Conv(conv_general_dilated=...)``. Each runs :func:`emul_jax.dot_general` /
  :func:`emul_jax.conv_general_dilated` with its config and **one key per call**, drawn from its
  own ``nnx.RngStream``; ``cfg=None`` runs the plain ``lax`` op (useful with a mask schedule alone).
* :class:`QLinear` / :class:`QConv`, :func:`quantize_model` (swap the ops of an existing model in
  place) and :func:`sparsify_model` (attach transposable-mask schedules).
* :class:`RangeBatchNorm` -- Range Batch-Norm ([C], as the authors' code computes it) with running statistics.
* :class:`TransposableMask` -- a transposable n:m weight mask recomputed every ``every`` training
  forwards (the dynamic transposable training of [B]), gradients straight through to the dense weight.
* :class:`LowPrecisionOptimizer` -- ``nnx.Optimizer`` whose parameter update is rounded once into
  a storage format by :func:`emul_jax.optim.apply_updates`.

**Keys.** An adapter built with ``rngs`` takes ``rngs[stream].fork()`` (stream ``"emul"`` by
default; ``nnx.Rngs`` falls back to ``"default"`` when there is no such stream): a stream of its own
whose key is ``fold_in(S.key, c)`` for the parent stream ``S`` at its count ``c`` then. Call ``t`` of
the adapter (t = 0, 1, ..., the stream's ``count``) passes ``key = fold_in(layer_key, t)`` to the
op, which splits it per GEMM and role (:func:`emul_jax.ops.stream_key`). A config that draws no
random bits (``cfg.needs_key`` false: no stochastic rounding, no MVUE) gets ``key=None`` and
leaves the stream's count alone. The stream is NNX state (``RngKey``/``RngCount``), so it
travels through ``nnx.jit``/``nnx.grad``, is not a parameter (``wrt=nnx.Param`` leaves it alone),
and a NumPy replay reproduces every key with :func:`emul.random.fold_in`. Nothing is global.

>>> import jax.numpy as jnp
>>> from flax import nnx
>>> rngs = nnx.Rngs(0, emul=1)
>>> bn = RangeBatchNorm(3, rngs=rngs)
>>> bn(jnp.arange(96.0).reshape(32, 3)).shape
(32, 3)
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

from emul.formats import FixedFormat, FloatFormat, format as _format

from .quantize import quantize as _quantize
from .sparsity import transposable_mask as _transposable_mask

__all__ = [
    "DotGeneral", "ConvGeneralDilated", "dot_general_for", "conv_general_dilated_for",
    "QLinear", "QConv", "quantize_model", "sparsify_model",
    "RangeBatchNorm", "range_bn_constant",
    "TransposableMask", "MaskState", "MaskStep", "transposable_kernel_mask",
    "LowPrecisionOptimizer",
]


# ------------------------------------------------------------------------------ keys


def _own_stream(rngs, stream, what):
    """A forked RngStream for one adapter: its own key, count 0."""
    if isinstance(rngs, nnx.RngStream):
        return rngs.fork()
    if isinstance(rngs, nnx.Rngs):
        try:
            return rngs[stream].fork()
        except KeyError:
            raise KeyError(f"{what}: nnx.Rngs has no stream {stream!r} and no 'default' stream; "
                           f"create it with nnx.Rngs(..., {stream}=seed)") from None
    raise TypeError(f"{what}: rngs must be an nnx.Rngs or nnx.RngStream, got {type(rngs).__name__}")


def _draw(adapter):
    """The key of this call: the adapter's next stream key, or None when its config draws no random bits."""
    return adapter.rngs() if getattr(adapter.cfg, "needs_key", True) else None


def _ops():
    """emul_jax's GEMM entry points (imported when first used, so this module loads on its own)."""
    import emul_jax

    return emul_jax


# ------------------------------------------------------------------------------ GEMM adapters


class DotGeneral(nnx.Module):
    """``lax.dot_general``-compatible callable running :func:`emul_jax.dot_general` with ``cfg``.

    ``DotGeneral(cfg, rngs=rngs)`` drops into ``nnx.Linear(..., dot_general=...)``,
    ``nnx.LinearGeneral`` and ``nnx.Einsum``-free code that calls a ``dot_general``. Each call
    draws one key from the adapter's own stream (module docstring) and passes ``precision``,
    ``preferred_element_type`` and ``out_sharding`` through. ``cfg=None``: ``lax.dot_general``
    itself (no key drawn; ``rngs`` may be omitted). ``mask``: an optional
    :class:`TransposableMask` applied to ``rhs`` (the kernel) before the op.
    """

    def __init__(self, cfg=None, *, rngs: nnx.Rngs | nnx.RngStream | None = None, stream: str = "emul",
                 mask: "TransposableMask | None" = None):
        self.cfg = cfg
        if cfg is not None and rngs is None:
            raise ValueError("DotGeneral: a config needs rngs= (one key per call comes from it)")
        self.rngs = _own_stream(rngs, stream, "DotGeneral") if cfg is not None else nnx.data(None)
        self.mask = nnx.data(mask)

    def __call__(self, lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None, *,
                 out_sharding=None):
        if self.mask is not None:
            rhs = self.mask(rhs)
        if self.cfg is None:
            return lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                                   preferred_element_type=preferred_element_type, out_sharding=out_sharding)
        return _ops().dot_general(lhs, rhs, dimension_numbers, self.cfg, key=_draw(self), precision=precision,
                                  preferred_element_type=preferred_element_type, out_sharding=out_sharding)


class ConvGeneralDilated(nnx.Module):
    """``lax.conv_general_dilated``-compatible callable running :func:`emul_jax.conv_general_dilated`.

    For ``nnx.Conv(..., conv_general_dilated=ConvGeneralDilated(cfg, rngs=rngs))``. Keys, ``cfg=None``
    and ``mask`` as :class:`DotGeneral` (the mask sees the kernel as NNX stores it,
    ``(*spatial, in // groups, out)``).
    """

    def __init__(self, cfg=None, *, rngs: nnx.Rngs | nnx.RngStream | None = None, stream: str = "emul",
                 mask: "TransposableMask | None" = None):
        self.cfg = cfg
        if cfg is not None and rngs is None:
            raise ValueError("ConvGeneralDilated: a config needs rngs= (one key per call comes from it)")
        self.rngs = _own_stream(rngs, stream, "ConvGeneralDilated") if cfg is not None else nnx.data(None)
        self.mask = nnx.data(mask)

    def __call__(self, lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                 dimension_numbers=None, feature_group_count=1, batch_group_count=1, precision=None,
                 preferred_element_type=None, *, out_sharding=None):
        if self.mask is not None:
            rhs = self.mask(rhs)
        kw = dict(lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                  feature_group_count=feature_group_count, batch_group_count=batch_group_count,
                  precision=precision, preferred_element_type=preferred_element_type, out_sharding=out_sharding)
        if self.cfg is None:
            return lax.conv_general_dilated(lhs, rhs, window_strides, padding, **kw)
        return _ops().conv_general_dilated(lhs, rhs, window_strides, padding, cfg=self.cfg, key=_draw(self), **kw)


def dot_general_for(cfg, rngs=None, *, stream: str = "emul", mask=None) -> DotGeneral:
    """``DotGeneral(cfg, rngs=rngs, stream=stream, mask=mask)``: the ``dot_general=`` of an NNX layer."""
    return DotGeneral(cfg, rngs=rngs, stream=stream, mask=mask)


def conv_general_dilated_for(cfg, rngs=None, *, stream: str = "emul", mask=None) -> ConvGeneralDilated:
    """``ConvGeneralDilated(cfg, ...)``: the ``conv_general_dilated=`` of an ``nnx.Conv``."""
    return ConvGeneralDilated(cfg, rngs=rngs, stream=stream, mask=mask)


class QLinear(nnx.Linear):
    """``nnx.Linear`` whose GEMMs run emulated with ``cfg`` (keys from ``rngs[stream]``, forked).

    Same arguments as ``nnx.Linear`` plus ``cfg`` (third) and ``stream``."""

    def __init__(self, in_features: int, out_features: int, cfg, *, rngs: nnx.Rngs, stream: str = "emul",
                 **kwargs):
        super().__init__(in_features, out_features, dot_general=DotGeneral(cfg, rngs=rngs, stream=stream),
                         rngs=rngs, **kwargs)


class QConv(nnx.Conv):
    """``nnx.Conv`` whose convolution runs emulated with ``cfg`` (``kernel_size`` etc. as ``nnx.Conv``)."""

    def __init__(self, in_features: int, out_features: int, kernel_size, cfg, *, rngs: nnx.Rngs,
                 stream: str = "emul", **kwargs):
        super().__init__(in_features, out_features, kernel_size,
                         conv_general_dilated=ConvGeneralDilated(cfg, rngs=rngs, stream=stream),
                         rngs=rngs, **kwargs)


_LINEAR_TYPES = (nnx.Linear, nnx.LinearGeneral)


def _targets(model, only):
    for path, module in nnx.iter_modules(model):
        if isinstance(module, (*_LINEAR_TYPES, nnx.Conv)) and (only is None or only(path, module)):
            yield path, module


def quantize_model(model, cfg, *, rngs: nnx.Rngs, conv_cfg=None, stream: str = "emul", only=None):
    """Swap emulated GEMMs into every ``nnx.Linear``/``nnx.LinearGeneral``/``nnx.Conv`` of ``model``, in place.

    ``cfg`` goes to the linear layers, ``conv_cfg`` (default ``cfg``) to the convolutions; each layer
    gets its own adapter, hence its own key stream forked from ``rngs[stream]`` in the order of
    ``nnx.iter_modules``. ``only(path, module) -> bool`` restricts the layers (e.g. keep the first
    and last in fp32). A mask already attached by :func:`sparsify_model` is kept. Returns ``model``.
    Parameters are untouched: an existing (trained) model keeps its weights.
    """
    conv_cfg = cfg if conv_cfg is None else conv_cfg
    for _, module in list(_targets(model, only)):
        if isinstance(module, nnx.Conv):
            old = module.conv_general_dilated
            mask = old.mask if isinstance(old, ConvGeneralDilated) else None
            module.conv_general_dilated = nnx.data(ConvGeneralDilated(conv_cfg, rngs=rngs, stream=stream, mask=mask))
        else:
            old = module.dot_general
            mask = old.mask if isinstance(old, DotGeneral) else None
            module.dot_general = nnx.data(DotGeneral(cfg, rngs=rngs, stream=stream, mask=mask))
    return model


def sparsify_model(model, n: int = 2, m: int = 4, *, every: int = 40, layout: str = "gemm", initial="greedy",
                   only=None):
    """Attach a :class:`TransposableMask` schedule to the kernel of every ``nnx.Linear``/``nnx.Conv``.

    Each initial mask is computed from the layer's current kernel (``initial``: ``"greedy"`` or
    ``"optimal"``, see :class:`TransposableMask`). Layers whose op is not yet an adapter get a plain
    (``cfg=None``) one; emulated adapters keep their config and key stream. ``only`` as in
    :func:`quantize_model` (the dynamic training of [B] keeps the classifier dense). Returns ``model``.
    """
    for _, module in list(_targets(model, only)):
        if isinstance(module, nnx.LinearGeneral):
            raise TypeError("sparsify_model: nnx.LinearGeneral kernels are not supported (use nnx.Linear)")
        mask = TransposableMask(module.kernel[...], n, m, every=every, layout=layout, initial=initial)
        if isinstance(module, nnx.Conv):
            old = module.conv_general_dilated
            if isinstance(old, ConvGeneralDilated):
                old.mask = nnx.data(mask)
            else:
                module.conv_general_dilated = nnx.data(ConvGeneralDilated(None, mask=mask))
        else:
            old = module.dot_general
            if isinstance(old, DotGeneral):
                old.mask = nnx.data(mask)
            else:
                module.dot_general = nnx.data(DotGeneral(None, mask=mask))
    return model


# ------------------------------------------------------------------------------ Range Batch-Norm

_CONSTANTS = ("paper", "authors")
_EMA = ("flax", "pytorch")
_AUTHORS_FACTOR = 0.5 * 0.35 * (1.0 + math.sqrt(math.pi * math.log(4.0)))  # 0.540208...


def range_bn_constant(n: int, constant: str = "paper") -> float:
    """``scale_fix`` for chunks of ``n`` values: ``"paper"`` C(n) = 1/sqrt(2 ln n); ``"authors"``
    0.175 (1 + sqrt(pi ln 4)) / sqrt(2 ln n) = 0.540208 C(n) (the authors' code). n >= 2.

    >>> round(range_bn_constant(64, "paper"), 6), round(range_bn_constant(64, "authors"), 6)
    (0.346734, 0.187309)
    """
    if constant not in _CONSTANTS:
        raise ValueError(f"constant={constant!r}: must be one of {', '.join(map(repr, _CONSTANTS))}")
    if n < 2:
        raise ValueError(f"n={n}: Range-BN chunks need at least 2 values (ln 1 = 0)")
    c = 1.0 / math.sqrt(2.0 * math.log(n))
    return c if constant == "paper" else _AUTHORS_FACTOR * c


def _q(x, fmt):
    return x if fmt is None else _quantize(x, fmt)  # nearest-even, straight-through gradient


@jax.custom_vjp
def _straight_through(x, xq):
    """xq, with the gradient passed to x unchanged (the identity STE of paper [C]'s quantizer)."""
    return xq


_straight_through.defvjp(lambda x, xq: (xq, None), lambda _, g: (g, jnp.zeros_like(g)))


def _per_sample_range(x):
    """(lo, hi) float32 scalars: each sample's (first axis) min and max, averaged over the samples
    -- the activation range of paper [C]'s QuantMeasure (emul_jax.ops granularity "sample_mean")."""
    from .ops import _minmax, _stats, Operand

    lo, hi = _stats(x, Operand(format="int8", scale="minmax", granularity="sample_mean"), None, 0, _minmax)
    return lo.reshape(()), hi.reshape(())


def _gemmlowp(x, lo, hi, fmt):
    """x mapped onto the integer grid of ``fmt`` over [lo, hi] and back (paper [C]'s asymmetric
    quantizer, emul_jax.ops ``scale="minmax"`` with the range given): s = R / (qmax - qmin),
    r = 1 / s (each rounded once to float32; s = r = 1 for a zero range), q = round((x - lo) r + qmin)
    to nearest even and clamped (the format's saturation), x̂ = (q - qmin) s + lo, every step a float32
    operation with subnormals flushed; gradient straight through to x."""
    from .ops import _ftz, _scale

    lo, hi = _ftz(jnp.asarray(lo, jnp.float32)), _ftz(jnp.asarray(hi, jnp.float32))
    qmin, qmax = fmt.min, fmt.max
    s, r = _scale(_ftz(hi - lo), qmax - qmin)
    y = _ftz(_ftz(_ftz(x) - lo) * r)
    if qmin:
        y = _ftz(y + np.float32(qmin))
    q = _quantize(y, fmt, overflow="saturate")
    if qmin:
        q = _ftz(q - np.float32(qmin))
    return _straight_through(x, _ftz(_ftz(q * s) + lo))


def _tensor_q(x, fmt):
    """A parameter or statistic quantized as paper [C]'s code does: float formats unscaled, integer
    formats over the tensor's own [min, max]."""
    if fmt is None or isinstance(fmt, FloatFormat):
        return _q(x, fmt)
    v = lax.stop_gradient(x)
    return _gemmlowp(x, jnp.min(v), jnp.max(v), fmt)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _round_grad(fmt, rounding, y, key):
    """y itself; its cotangent rounded once into ``fmt`` by ``rounding`` (SR words from ``key``,
    word i for element i, as emul_jax.quantize)."""
    return y


def _round_grad_fwd(fmt, rounding, y, key):
    return y, key


def _round_grad_bwd(fmt, rounding, key, g):
    from .quantize import _quantize_unchecked

    return _quantize_unchecked(jnp.asarray(g, jnp.float32), fmt, rounding, key=key), None


_round_grad.defvjp(_round_grad_fwd, _round_grad_bwd)


class RangeBatchNorm(nnx.Module):
    """Range Batch-Norm over the last axis (channels-last), as the code of [C] computes it.

    Training (``use_running_average=False``), per channel: the values in the order of the other
    axes flattened (batch, h, w) are cut into ``chunks`` contiguous chunks of ``n`` values;
    ``range = mean_k max(chunk_k) - mean_k min(chunk_k)``, ``mu = mean`` of all values,
    ``s = range * scale_fix(n)`` (:func:`range_bn_constant`, ``constant="paper"`` by default,
    ``"authors"`` for the code's 0.540208 factor), and ``out = (x - mu) / (s + epsilon) * scale + bias``.
    The element count per channel must be a multiple of ``chunks`` with ``n >= 2``. Gradients are
    autodiff's: through ``mu`` and to each chunk's arg-max/arg-min elements.

    Running statistics (``nnx.BatchStat``, so ``nnx.Optimizer(wrt=nnx.Param)`` leaves them alone):
    ``mean`` (of ``mu``, starts at 0) and ``scale_stat`` (of ``s``, not inverted, starts at 1), updated
    in every training call. ``ema="flax"`` (default): ``stat <- momentum * stat + (1 - momentum) * batch``
    -- Flax's BatchNorm convention; with the default ``momentum=0.1`` it is the authors' code
    (0.1 of the old value, 0.9 of the new). ``ema="pytorch"``: ``stat <- (1 - momentum) * stat +
    momentum * batch``. Eval (``use_running_average=True``, or ``model.eval()``) normalises with them.

    ``quantize_fmt`` (optional) quantizes the input, ``scale``, ``bias`` and the per-channel ``s``
    (straight-through gradients); the statistics themselves are float32 XLA arithmetic, not emulated.

    * a float format (e.g. ``"e4m3fn"``): each is rounded to it unscaled, nearest even;
    * an integer format (``frac == 0``: ``"uint8"`` as the authors' code, ``"int8"``, ``"fx<6,0>"``):
      paper [C]'s asymmetric quantizer (:func:`emul_jax.ops` ``scale="minmax"``; nearest even,
      saturating), per tensor. The input's range [lo, hi] in training is each sample's (first axis)
      min and max averaged over the samples, as the code's ``QuantMeasure``; it is kept as a running
      statistic ``input_range`` (``nnx.BatchStat``, (lo, hi), starts at (0, 0), same ``momentum`` and
      ``ema``) which eval uses. ``scale``, ``bias`` and ``s`` each use their own [min, max].

    ``grad_fmt`` (optional): in training calls the output gradient dL/dy is rounded once into this
    format (unscaled; ``grad_rounding``, stochastic by default) before the normalisation's backward
    runs, as :func:`emul_jax.quantize` rounds it: training call ``t`` (t = 0, 1, ...) of the module
    uses ``key = fold_in(K, t)`` from a stream of its own (``rngs[stream].fork()``, key ``K``, as
    the GEMM adapters; module docstring), word i for element i of dL/dy, so a NumPy replay is
    ``emul.quantize(g, grad_fmt, "stochastic", key=emul.random.fold_in(K, t))``.
    """

    def __init__(self, num_features: int, *, constant: str = "paper", chunks: int = 16, momentum: float = 0.1,
                 ema: str = "flax", epsilon: float = 1e-5, use_running_average: bool = False,
                 use_scale: bool = True, use_bias: bool = True, quantize_fmt=None,
                 scale_init=nnx.initializers.ones_init(), bias_init=nnx.initializers.zeros_init(),
                 rngs: nnx.Rngs, grad_fmt=None, grad_rounding: str = "stochastic", stream: str = "emul"):
        if constant not in _CONSTANTS:
            raise ValueError(f"constant={constant!r}: must be one of {', '.join(map(repr, _CONSTANTS))}")
        if ema not in _EMA:
            raise ValueError(f"ema={ema!r}: must be one of {', '.join(map(repr, _EMA))}")
        if not isinstance(chunks, int) or chunks < 1:
            raise ValueError(f"chunks={chunks!r}: must be a positive integer")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum={momentum}: must be in [0, 1]")
        if quantize_fmt is not None:
            f = _format(quantize_fmt) if isinstance(quantize_fmt, str) else quantize_fmt
            if not (isinstance(f, FloatFormat) or (isinstance(f, FixedFormat) and f.frac == 0)):
                raise ValueError(f"quantize_fmt={quantize_fmt!r}: a float format (values rounded unscaled) or an "
                                 "integer format such as 'uint8' (per-tensor min-max scaling) is needed")
            quantize_fmt = f
        self.grad_fmt = self.grad_rounding = None
        self.grad_rngs = nnx.data(None)
        if grad_fmt is not None:
            from .quantize import _spec

            sp = _spec(grad_fmt, grad_rounding, None, None, "add", "RangeBatchNorm grad_fmt")
            self.grad_fmt, self.grad_rounding = sp.fmt, grad_rounding
            if sp.stochastic:
                self.grad_rngs = _own_stream(rngs, stream, "RangeBatchNorm")
        shape = (num_features,)
        self.mean = nnx.BatchStat(jnp.zeros(shape, jnp.float32))
        self.scale_stat = nnx.BatchStat(jnp.ones(shape, jnp.float32))
        self.input_range = (nnx.BatchStat(jnp.zeros((2,), jnp.float32)) if isinstance(quantize_fmt, FixedFormat)
                            else nnx.data(None))
        self.scale = nnx.Param(scale_init(rngs.params(), shape, jnp.float32)) if use_scale else nnx.data(None)
        self.bias = nnx.Param(bias_init(rngs.params(), shape, jnp.float32)) if use_bias else nnx.data(None)
        self.num_features = num_features
        self.constant = constant
        self.chunks = chunks
        self.momentum = momentum
        self.ema = ema
        self.epsilon = epsilon
        self.use_running_average = use_running_average
        self.quantize_fmt = quantize_fmt

    def batch_statistics(self, x):
        """(mu, s) of a training batch: per-channel mean and range * scale_fix (see the class)."""
        c = self.num_features
        if x.ndim < 2 or x.shape[-1] != c:
            raise ValueError(f"RangeBatchNorm: expected (..., {c}) channels-last input, got shape {x.shape}")
        rows = math.prod(x.shape[:-1])
        if rows % self.chunks:
            raise ValueError(f"RangeBatchNorm: {rows} values per channel are not a multiple of chunks={self.chunks}")
        n = rows // self.chunks
        fix = range_bn_constant(n, self.constant)  # raises for n < 2
        xc = x.reshape(self.chunks, n, c)
        rng = jnp.mean(jnp.max(xc, axis=1), axis=0) - jnp.mean(jnp.min(xc, axis=1), axis=0)
        mu = jnp.mean(x.reshape(rows, c), axis=0)
        return mu, rng * jnp.float32(fix)

    def __call__(self, x, use_running_average: bool | None = None):
        use_ra = self.use_running_average if use_running_average is None else use_running_average
        m = jnp.float32(self.momentum)
        w_old, w_new = (m, 1 - m) if self.ema == "flax" else (1 - m, m)
        x = jnp.asarray(x, jnp.float32)
        if self.input_range is None:
            x = _q(x, self.quantize_fmt)
        else:
            if use_ra:
                lo, hi = self.input_range[0], self.input_range[1]
            else:
                lo, hi = _per_sample_range(lax.stop_gradient(x))
                self.input_range[...] = w_old * self.input_range[...] + w_new * jnp.stack([lo, hi])
            x = _gemmlowp(x, lo, hi, self.quantize_fmt)
        if use_ra:
            mu, s = self.mean[...], self.scale_stat[...]
        else:
            mu, s = self.batch_statistics(x)
            self.mean[...] = lax.stop_gradient(w_old * self.mean[...] + w_new * mu)
            self.scale_stat[...] = lax.stop_gradient(w_old * self.scale_stat[...] + w_new * s)
        s = _tensor_q(s, self.quantize_fmt)
        y = (x - mu) / (s + jnp.float32(self.epsilon))
        if self.scale is not None:
            y = y * _tensor_q(self.scale[...], self.quantize_fmt)
        if self.bias is not None:
            y = y + _tensor_q(self.bias[...], self.quantize_fmt)
        if self.grad_fmt is not None and not use_ra:
            key = self.grad_rngs() if self.grad_rngs is not None else None
            y = _round_grad(self.grad_fmt, self.grad_rounding, y, key)
        return y

    def set_view(self, use_running_average: bool | None = None):
        """For ``nnx.view``: choose batch or running statistics."""
        if use_running_average is not None:
            self.use_running_average = use_running_average


# ------------------------------------------------------------------------------ transposable masks

_LAYOUTS = ("gemm", "nchw", "nhwc")
_INITIAL = ("greedy", "optimal")


class MaskState(nnx.Variable):
    """A weight mask (bool), NNX state that is not a parameter."""


class MaskStep(nnx.Variable):
    """A counter of training forwards (uint32), NNX state that is not a parameter."""


def transposable_kernel_mask(kernel, n: int, m: int, *, method: str = "greedy", layout: str = "gemm"):
    """The transposable n:m mask of an NNX kernel, in the kernel's own shape.

    ``kernel`` is ``(in, out)`` (``nnx.Linear``) or ``(*spatial, in, out)`` (``nnx.Conv``, HWIO). The
    mask is :func:`emul_jax.sparsity.transposable_mask` of the weight as the core reads it:

    * ``"gemm"``: the ``(out, in)`` matrix (a conv: one per spatial tap), m x m tiles -- each block
      of m along ``in`` (the forward reduction) and along ``out`` (the input-gradient reduction)
      keeps at most n;
    * ``"nchw"``: the ``(out, in, *spatial)`` weight flattened, m*m consecutive values per tile (the
      reference's dynamic training of [B]);
    * ``"nhwc"``: ``(out, in, *spatial)`` read per output as ``(*spatial, in)`` (the reference's static
      pruning).
    """
    if layout not in _LAYOUTS:
        raise ValueError(f"layout={layout!r}: must be one of {', '.join(map(repr, _LAYOUTS))}")
    k = jnp.asarray(kernel)
    if k.ndim < 2:
        raise ValueError(f"kernel: shape {k.shape}; expected (in, out) or (*spatial, in, out)")
    perm = (k.ndim - 1, k.ndim - 2, *range(k.ndim - 2))  # -> (out, in, *spatial)
    inv = tuple(int(i) for i in np.argsort(perm))
    if layout == "gemm":
        taps = jnp.transpose(k.reshape(-1, *k.shape[-2:]), (0, 2, 1))  # (T, out, in)
        one = lambda w: _transposable_mask(w, n, m, method, "gemm")  # noqa: E731
        mask = one(taps[0])[None] if taps.shape[0] == 1 else jax.vmap(one)(taps)
        return jnp.transpose(mask, (0, 2, 1)).reshape(k.shape)
    return jnp.transpose(_transposable_mask(jnp.transpose(k, perm), n, m, method, layout), inv)


@jax.custom_vjp
def _masked(w, mask):
    return jnp.where(mask, w, jnp.zeros((), w.dtype))


def _masked_fwd(w, mask):
    return _masked(w, mask), None


def _masked_bwd(_, g):
    return g, None  # straight through to the dense weight; a bool mask has no cotangent


_masked.defvjp(_masked_fwd, _masked_bwd)


class TransposableMask(nnx.Module):
    """A transposable n:m mask schedule for one kernel (dynamic training, [B]), as NNX state.

    ``TransposableMask(kernel, n, m, every=k)`` holds ``mask`` (:class:`MaskState`, the kernel's shape)
    and ``step`` (:class:`MaskStep`, training forwards so far). Calling it on the kernel ``w``
    returns ``w * mask`` with the gradient passed **straight through to the dense w** (no
    SR-STE term). In training (``deterministic=False``) each call first does ``step += 1`` and, when
    ``step % every == 0``, recomputes the mask from the current ``|w|`` with the greedy
    (:func:`transposable_kernel_mask`, ``method="greedy"``), as the reference: with ``every=40`` the
    mask changes at forwards 40, 80, ... and the forward that recomputes already uses it. The
    initial mask is ``initial``: ``"greedy"``/``"optimal"`` of ``kernel`` (``"optimal"`` is pure
    JAX for 2:4; the reference loads an optimal mask), or a bool array. ``deterministic=True``
    (``model.eval()``): the stored mask, nothing counted.

    The recomputation is a ``lax.cond`` inside the compiled step: no retracing, no host callback.
    """

    def __init__(self, kernel, n: int = 2, m: int = 4, *, every: int = 40, layout: str = "gemm",
                 initial="greedy", deterministic: bool = False):
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ValueError(f"every={every!r}: must be a positive integer")
        kernel = jnp.asarray(kernel)
        if isinstance(initial, str):
            if initial not in _INITIAL:
                raise ValueError(f"initial={initial!r}: must be 'greedy', 'optimal' or a bool array")
            mask0 = transposable_kernel_mask(kernel, n, m, method=initial, layout=layout)
        else:
            mask0 = jnp.asarray(initial, bool)
            if mask0.shape != kernel.shape:
                raise ValueError(f"initial: mask shape {mask0.shape} differs from the kernel's {kernel.shape}")
        self.mask = MaskState(mask0)
        self.step = MaskStep(jnp.zeros((), jnp.uint32))
        self.n, self.m, self.every, self.layout = n, m, every, layout
        self.deterministic = deterministic

    def __call__(self, w, deterministic: bool | None = None):
        det = self.deterministic if deterministic is None else deterministic
        if w.shape != self.mask.shape:
            raise ValueError(f"TransposableMask: kernel shape {w.shape} differs from the mask's {self.mask.shape}")
        if not det:
            step = self.step[...] + jnp.uint32(1)
            self.step[...] = step
            wd = lax.stop_gradient(w)
            self.mask[...] = lax.cond(
                step % jnp.uint32(self.every) == 0,
                lambda: transposable_kernel_mask(wd, self.n, self.m, layout=self.layout),
                lambda: self.mask[...],
            )
        return _masked(w, self.mask[...])

    def set_view(self, deterministic: bool | None = None):
        """For ``nnx.view``: ``deterministic=True`` uses the stored mask and counts nothing."""
        if deterministic is not None:
            self.deterministic = deterministic


# ------------------------------------------------------------------------------ optimizer


class LowPrecisionOptimizer(nnx.Optimizer):
    """``nnx.Optimizer`` storing the parameters in ``param_fmt``: each update is ``p + u`` rounded once.

    ``update(model, grads)`` runs ``tx`` as ``nnx.Optimizer`` does, then
    :func:`emul_jax.optim.apply_updates` (``rounding``, default stochastic) instead of
    ``optax.apply_updates`` (which rounds the float32 sum and would need a second rounding). For
    stochastic rounding one key per update comes from ``rngs[stream].fork()`` (call ``t`` uses
    ``fold_in(own_key, t)``, then ``fold_in(., leaf)`` per parameter leaf in ``nnx.state`` order).
    The parameters should already be values of ``param_fmt`` (round them once at the start, e.g.
    with :func:`emul_jax.quantize`).
    """

    def __init__(self, model, tx, *, wrt, param_fmt, rounding: str = "stochastic", overflow=None,
                 sr_bits=None, rngs: nnx.Rngs | nnx.RngStream | None = None, stream: str = "emul"):
        super().__init__(model, tx, wrt=wrt)
        self.param_fmt = _format(param_fmt) if isinstance(param_fmt, str) else param_fmt
        self.rounding = rounding
        self.overflow = overflow
        self.sr_bits = sr_bits
        sr = str(getattr(rounding, "value", rounding)) == "stochastic"
        if sr and rngs is None:
            raise ValueError("LowPrecisionOptimizer: rounding='stochastic' needs rngs=")
        self.rngs = _own_stream(rngs, stream, "LowPrecisionOptimizer") if sr else nnx.data(None)

    def update(self, model, grads, /, **kwargs):
        from .optim import apply_updates

        param_arrays = nnx.as_pure(nnx.state(model, self.wrt, graph=self.graph))
        grad_arrays = nnx.as_pure(nnx.state(grads, self.wrt, graph=self.graph))
        opt_state_arrays = nnx.as_pure(self.opt_state)
        updates, new_opt_state = self.tx.update(grad_arrays, opt_state_arrays, param_arrays,
                                                **nnx.as_pure(kwargs))
        key = self.rngs() if self.rngs is not None else None
        new_params = apply_updates(param_arrays, updates, self.param_fmt, key=key, rounding=self.rounding,
                                   overflow=self.overflow, sr_bits=self.sr_bits)
        nnx.update(model, new_params)
        nnx.update(self.opt_state, nnx.state(new_opt_state, graph=self.graph))
        self.step[...] += 1
        return updates

"""Quantized training GEMMs: ``dot_general`` and ``conv_general_dilated`` as ``jax.custom_vjp`` s.

A layer ``Y = X · W`` runs three GEMMs (AQT's split; paper [A], docs/references.md):

============  ==========================  =====================  ==================
GEMM          computes                    ``lhs`` operand        ``rhs`` operand
============  ==========================  =====================  ==================
``fwd``       Y = X · W                   X (activations)        W (weights)
``dlhs``      dX = G · Wᵀ                 G (output gradient)    W
``drhs``      dW = Xᵀ · G                 X                      G
============  ==========================  =====================  ==================

:class:`DotConfig` holds one :class:`GemmSpec` per GEMM; a GEMM spec holds one :class:`Operand`
spec per operand (format, rounding — stochastic included —, scaling, N:M sparsity) and the
accumulation (``accumulator=None``: an XLA dot at ``Precision.HIGHEST``; or an emulated
:class:`Accumulator`, summed by :mod:`emul_jax.accumulate` in a defined order). Configs are frozen,
hashable and keyword-only, hold no keys and no arrays, and close over ``jax.jit`` statically.

Randomness comes from one ``key`` argument per call, split by ``fold_in`` with documented
constants (:func:`stream_key`): ``fold_in(fold_in(key, GEMM), ROLE)``, GEMM ``FWD=0``,
``DLHS=1``, ``DRHS=2``; ROLE ``LHS=0``, ``RHS=1``, ``GRAD=2`` (the operand's stochastic rounding),
``ACC=3`` (the accumulator's stochastic rounding), ``SPARSE_LHS=4``, ``SPARSE_RHS=5``,
``SPARSE_GRAD=6`` (MVUE uniforms). Each stream feeds exactly one emul_jax call in the core's
layout (SR: word i for element i of the operand in C order; MVUE: word b for block b; accumulator:
words ``j*T … j*T+T-1`` for output j), so a NumPy replay with ``emul`` and ``emul.random.fold_in``
reproduces a step bit for bit. ``docs/training.md`` ("Training ops") is the user's guide.

>>> import jax, jax.numpy as jnp
>>> x = jnp.arange(6.0).reshape(2, 3); w = jnp.ones((3, 2))
>>> dot_general(x, w, (((1,), (0,)), ((), ())), fp32())
Array([[ 3.,  3.],
       [12., 12.]], dtype=float32)
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from emul.formats import FixedFormat, FloatFormat, format as _parse_format
from emul.quantize import _fits_float32
from emul.rounding import Overflow, Rounding

from . import _exact as _E
from . import _round as R
from . import sparsity as _sparsity
from ._bits import ABS, EXP, HIDDEN, SIGN, f32_bits, f32_from_bits, u32
from .accumulate import _Exact as _AccExact, _config as _acc_config, _matmul as _acc_matmul_impl, \
    _tree_schedule, sr_steps as _sr_steps
from .arith import add as _add, div as _div, fma as _fma, mul as _mul
from .quantize import _as_key, _quantize_unchecked as _quantize, _sr_words

__all__ = [
    "Sparsity", "Operand", "Accumulator", "GemmSpec", "DotConfig",
    "dot_general", "conv_general_dilated", "stream_key",
    "FWD", "DLHS", "DRHS", "LHS", "RHS", "GRAD", "ACC", "SPARSE_LHS", "SPARSE_RHS", "SPARSE_GRAD",
    "fp32", "w8a8", "w8a8g8", "mvue12", "mvue24", "topk24_grad", "tnm24", "tnm48", "acc12",
    "RECIPES", "recipe",
]

# -- key streams ----------------------------------------------------------------------------------

FWD, DLHS, DRHS = 0, 1, 2                  # fold_in(key, GEMM)
LHS, RHS, GRAD, ACC = 0, 1, 2, 3           # fold_in(gemm key, ROLE): SR of an operand / the accumulator
SPARSE_LHS, SPARSE_RHS, SPARSE_GRAD = 4, 5, 6  # fold_in(gemm key, ...): MVUE uniforms of an operand

_GEMMS = ("fwd", "dlhs", "drhs")
_F32 = jnp.float32
_HI = lax.Precision.HIGHEST


def stream_key(key, gemm: int, role: int):
    """``fold_in(fold_in(key, gemm), role)``: the key of one random stream of one call.

    ``emul.random.fold_in(emul.random.fold_in(jax.random.key_data(key), gemm), role)`` is the same
    key in NumPy (a replay of a step).
    """
    return jax.random.fold_in(jax.random.fold_in(_as_key(key), gemm), role)


# -- configuration --------------------------------------------------------------------------------

_SPARSE_METHODS = ("topn", "mvue")
_MVUE_METHODS = ("exact", "approx")
_TIES = ("low_index", "high_index")
_SCALES = ("none", "absmax", "minmax")
_GRANULARITIES = ("tensor", "channel", "sample_mean")
_ORDERS = ("sequential", "pairwise", "chunked")
_STES = ("identity", "immediate", "recursive")
_T_METHODS = ("greedy", "optimal")
REUSE = "fwd"  # dlhs.rhs / drhs.lhs: the forward GEMM's operand as it was quantized


def _choice(value, name, choices):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name}={value!r}: must be one of {', '.join(map(repr, choices))}")
    return value


def _int(value, name, lo=None):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}={value!r}: expected an integer")
    if lo is not None and value < lo:
        raise ValueError(f"{name}={value}: must be at least {lo}")
    return int(value)


def _fmt(value, name):
    """A format object (from a name or a format) whose values are float32 values."""
    try:
        fmt = _parse_format(value) if isinstance(value, str) else value
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
    if not isinstance(fmt, (FloatFormat, FixedFormat)):
        raise TypeError(f"{name}={value!r}: expected a format or its name")
    if not _fits_float32(fmt):
        raise ValueError(f"{name}={fmt.name}: its values do not fit float32 (emul_jax computes in 32-bit lanes)")
    return fmt


def _block_format(value):
    """The :class:`emul.blocks.BlockFormat` that ``value`` names (a preset such as ``"mxfp8_e4m3"``,
    a generic ``element/scale/k`` name or a BlockFormat), else None."""
    from emul.blocks import BlockFormat, format as block_format

    if isinstance(value, BlockFormat):
        return value
    if isinstance(value, str):
        try:
            return block_format(value)
        except (ValueError, TypeError):
            return None
    return None


def _rounding_args(obj, name):
    """Normalise and validate (format, rounding, overflow, sr_bits, sr_method) of obj in place."""
    rounding = Rounding(obj.rounding).value if isinstance(obj.rounding, (str, Rounding)) else obj.rounding
    overflow = None if obj.overflow is None else Overflow(obj.overflow).value
    object.__setattr__(obj, "rounding", rounding)
    object.__setattr__(obj, "overflow", overflow)
    if obj.sr_bits is not None:
        object.__setattr__(obj, "sr_bits", _int(obj.sr_bits, f"{name}.sr_bits"))
    try:
        R.spec(obj.format, rounding, overflow, obj.sr_bits, obj.sr_method)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Sparsity:
    """N:M sparsity of one operand: keep ``n`` of every ``m`` consecutive elements along ``axis``.

    ``method="topn"``: the ``n`` largest magnitudes (:func:`emul_jax.sparsity.nm_prune`, ties by
    ``ties``) — for weights and activations. ``method="mvue"``: the unbiased minimum-variance
    estimate (:func:`emul_jax.sparsity.mvue`, ``mvue_method`` ``"exact"`` or ``"approx"`` (2:4)) —
    for gradients (paper [A]). ``axis=None``: the innermost reduction axis of the GEMM the
    operand enters (``docs/training.md`` lists it per GEMM and operand); an int: that axis of the
    operand's own layout.
    """

    n: int
    m: int
    method: str = "topn"
    mvue_method: str = "exact"
    ties: str = "low_index"
    axis: int | None = None

    def __post_init__(self):
        m = _int(self.m, "m", 1)
        n = _int(self.n, "n", 1)
        if n > m:
            raise ValueError(f"n={n}: must be between 1 and m={m}")
        object.__setattr__(self, "n", n)
        object.__setattr__(self, "m", m)
        _choice(self.method, "method", _SPARSE_METHODS)
        _choice(self.mvue_method, "mvue_method", _MVUE_METHODS)
        _choice(self.ties, "ties", _TIES)
        if self.method == "mvue" and self.mvue_method == "approx" and (n, m) != (2, 4):
            raise ValueError(f"mvue_method='approx': only defined for 2:4, got n={n}, m={m}")
        if self.axis is not None:
            object.__setattr__(self, "axis", _int(self.axis, "axis"))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Operand:
    """How one GEMM operand is made low precision (applied in this order):

    1. ``sparsity`` (optional :class:`Sparsity`) on the float32 operand;
    2. ``scale`` — the range that maps the operand onto the format (paper [C]):
       ``"none"`` (the values themselves are rounded to ``format``); ``"absmax"`` (symmetric:
       s = amax / format.max, r = format.max / amax, q = Q(x·r); the GEMM multiplies q and its
       result is multiplied by s); ``"minmax"`` (asymmetric, GEMMLOWP: with R = max − min,
       s = R / (qmax − qmin), r = (qmax − qmin) / R, q = Q((x − min)·r + qmin), and
       x̂ = (q − qmin)·s + min enters the GEMM; qmin, qmax: the format's range, ±max for floats).
       s and r are each rounded once to float32 (emul_jax.div: XLA's divisions are not
       correctly rounded everywhere); a zero range gives s = r = 1. Every other step is a float32
       operation (IEEE, rounded to nearest even) with subnormal operands and results flushed to
       zeros of their sign on every backend (``docs/training.md``: why, and the NumPy replay).
       ``granularity``: ``"tensor"`` (one range), ``"channel"`` (one per index of the operand's
       first axis that survives in the GEMM's output: output channels of a weight, samples of
       an activation or of the gradient in the input-gradient GEMM, output channels of the
       gradient in the weight-gradient GEMM), ``"sample_mean"`` (paper [C]'s activation range:
       each sample's min/max (or amax), averaged over the samples: a pairwise float32 sum, then
       one division by their number).
    3. the rounding of the (scaled) values to ``format`` by ``rounding`` / ``overflow`` /
       ``sr_bits`` / ``sr_method`` (as :func:`emul_jax.quantize`; ``"stochastic"`` draws one word
       per element from the operand's key stream).

    ``format=None`` (the default) leaves the values float32 (sparsity still applies). A block format
    (``"mxfp8_e4m3"``, any OCP MX preset or ``element/e8m0/k``, docs/blocks.md) quantizes blocks of k
    consecutive elements along the operand's reduction axis in this GEMM with their shared power-of-two
    scale (:func:`emul_jax.blocks.quantize`, the preset's scale rule, elements saturating; ``rounding``
    and SR as above); ``scale`` must then be ``"none"``.
    """

    format: Any = None
    rounding: str = "nearest_even"
    overflow: str | None = None
    sr_bits: int | None = None
    sr_method: str = "add"
    scale: str = "none"
    granularity: str = "tensor"
    sparsity: Sparsity | None = None

    def __post_init__(self):
        _choice(self.scale, "scale", _SCALES)
        _choice(self.granularity, "granularity", _GRANULARITIES)
        if self.sparsity is not None and not isinstance(self.sparsity, Sparsity):
            raise TypeError(f"sparsity={self.sparsity!r}: expected a Sparsity or None")
        if self.format is None:
            if self.scale != "none":
                raise ValueError(f"scale={self.scale!r}: needs a format (format=None keeps float32 values)")
            if self.rounding != "nearest_even" or self.overflow is not None or self.sr_bits is not None:
                raise ValueError("rounding/overflow/sr_bits: only used with a format "
                                 "(format=None keeps float32 values)")
            return
        block = _block_format(self.format)
        if block is not None:
            if self.scale != "none":
                raise ValueError(f"format={block.name}: a block format carries its own scales; use scale='none'")
            if self.overflow is not None:
                raise ValueError(f"format={block.name}: elements saturate (docs/blocks.md); leave overflow=None")
            object.__setattr__(self, "format", block)
            _rounding_args(dataclasses.replace(self, format=block.element), "Operand")
            return
        object.__setattr__(self, "format", _fmt(self.format, "format"))
        _rounding_args(self, "Operand")

    @property
    def stochastic(self) -> bool:
        return self.format is not None and self.rounding == "stochastic"

    @property
    def identity(self) -> bool:
        """Whether the operand enters the GEMM unchanged (float32, dense)."""
        return self.format is None and self.sparsity is None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Accumulator:
    """An emulated accumulator (:func:`emul_jax.accumulate.matmul`, docs/accumulators.md): every
    addition rounded once to ``format`` by ``rounding``/``overflow`` (SR words from the GEMM's
    ``ACC`` stream), in ``order`` (``"sequential"``, ``"pairwise"``, ``"chunked"`` with ``chunk``
    and ``outer``). The reduction index runs over the contracting dimensions in the order of the
    dimension numbers (convolutions: input channel outermost, then the kernel taps in C order).

    ``ste`` (paper [D]), the gradient d S / d p_k of the forward's result S with respect to each
    product p_k, built from factors in {0, 1} of the accumulation steps. A step computes
    n = Q(x + y) (Q: the accumulator's rounding, with that step's SR word); the factor of its
    operand x is 0 where x ≠ 0 and n equals Q(0 + y) (x was swamped: the step gives what y alone
    gives, the same word), or where the step overflowed (n is not finite, or the float32-rounded
    exact x + y exceeds the format's max); else 1 (the factor of y: the same with x and y
    swapped). Equal values compare equal (+0 = −0).

    - ``"identity"``: d S / d p_k = 1.
    - ``"immediate"``: the factor of p_k at the step that adds it (sequential: the running sum
      plus p_k, so 0 where the sum is unchanged or the step overflowed; pairwise: the tree node
      whose operand p_k is — for one product, the step adding it to +0); chunked: that factor in
      p_k's chunk times the factor of the chunk's sum at the outer step that adds it.
    - ``"recursive"``: the product of the factors along p_k's path to S: the immediate factor
      times, for every later step that takes the partial sum holding p_k as an operand, that
      operand's factor (sequential: every later step's running-sum factor; chunked: the later
      steps of p_k's chunk, then the outer step adding that chunk's sum and every later outer
      step; pairwise: each tree node above p_k, by the side its subtree enters, then the final
      step adding the root to +0). So a later swamping of the partial sum, or an overflow
      anywhere on the path, cuts the gradient of everything below it.

    They apply to ``dot_general`` and ``conv_general_dilated`` (the conv's im2col GEMM) in
    every order. Non-identity estimators make the backward a masked contraction in float32
    (d lhs = Σ_n W·G·rhs, d rhs = Σ_m W·G·lhs with W the (…, M, N, K) weights; the backward
    GEMMs must then use ``accumulator=None``).
    """

    format: Any
    rounding: str = "nearest_even"
    overflow: str | None = None
    sr_bits: int | None = None
    sr_method: str = "add"
    order: str = "sequential"
    chunk: int | None = None
    outer: Any = None
    ste: str = "identity"

    def __post_init__(self):
        object.__setattr__(self, "format", _fmt(self.format, "Accumulator.format"))
        _rounding_args(self, "Accumulator")
        _choice(self.order, "order", _ORDERS)
        _choice(self.ste, "ste", _STES)
        if self.order == "chunked":
            if self.chunk is None:
                raise ValueError("chunk=None: order='chunked' needs a positive integer chunk")
            object.__setattr__(self, "chunk", _int(self.chunk, "chunk", 1))
        elif self.chunk is not None or self.outer is not None:
            raise ValueError(f"chunk/outer: only used with order='chunked' (got order={self.order!r})")
        if self.outer is not None:
            outer = _fmt(self.outer, "Accumulator.outer")
            try:
                R.spec(outer, self.rounding, self.overflow, self.sr_bits, self.sr_method)
            except ValueError as exc:
                raise ValueError(f"Accumulator.outer: {exc}") from None
            object.__setattr__(self, "outer", outer)

    @property
    def stochastic(self) -> bool:
        return self.rounding == "stochastic"


@dataclasses.dataclass(frozen=True, kw_only=True)
class GemmSpec:
    """One GEMM: its two operands and its accumulation.

    ``lhs``/``rhs``: an :class:`Operand` (default: float32, dense), or ``"fwd"`` for the weight of
    the ``dlhs`` GEMM / the activation of the ``drhs`` GEMM: the forward GEMM's operand exactly as
    it was quantized (no second rounding, no second random draw — what autograd through a
    quantized forward computes). ``accumulator=None``: ``lax.dot_general`` /
    ``lax.conv_general_dilated`` at ``Precision.HIGHEST`` on the float32 operand values (exact
    products; XLA's summation order). An :class:`Accumulator`: the emulated sum; then ``product``
    (a format) rounds each product once by ``product_rounding`` first (default exact products).
    """

    lhs: Any = Operand()
    rhs: Any = Operand()
    accumulator: Accumulator | None = None
    product: Any = None
    product_rounding: str = "nearest_even"

    def __post_init__(self):
        for side in ("lhs", "rhs"):
            v = getattr(self, side)
            if v is None:
                object.__setattr__(self, side, Operand())
            elif not (isinstance(v, Operand) or v == REUSE):
                raise TypeError(f"{side}={v!r}: expected an Operand or 'fwd'")
        if self.accumulator is not None and not isinstance(self.accumulator, Accumulator):
            raise TypeError(f"accumulator={self.accumulator!r}: expected an Accumulator or None")
        pr = Rounding(self.product_rounding).value
        object.__setattr__(self, "product_rounding", pr)
        if self.product is not None:
            if self.accumulator is None:
                raise ValueError("product: rounding each product needs an emulated accumulator "
                                 "(accumulator=None is an XLA dot with exact products)")
            if pr == "stochastic":
                raise ValueError("product_rounding='stochastic': products take a deterministic mode")
            object.__setattr__(self, "product", _fmt(self.product, "product"))


@dataclasses.dataclass(frozen=True, kw_only=True)
class DotConfig:
    """The three GEMMs of a quantized layer (``fwd``, ``dlhs``, ``drhs``; see the module table).

    ``bifurcation`` (paper [C]): True — each backward GEMM rounds the float32 output
    gradient by its own spec from its own key stream (e.g. an 8-bit SR copy for the input
    gradient, a 16-bit one for the weight gradient); False — the output gradient is rounded once,
    by ``dlhs.lhs`` from the ``dlhs`` stream, and that one tensor feeds both GEMMs
    (``drhs.rhs`` must then equal ``dlhs.lhs``).

    ``transposable``: the weight's N:M mask (``fwd.rhs.sparsity``, method ``"topn"``) is a
    transposable mask (:func:`emul_jax.sparsity.transposable_mask`, ``transposable_method``
    ``"greedy"`` or ``"optimal"`` (2:4)), N:M along both the forward reduction and the output
    features, so the input-gradient GEMM is N:M too; it is recomputed at every call from the
    current weight, and the backward uses the masked weight.
    """

    fwd: GemmSpec = GemmSpec()
    dlhs: GemmSpec = GemmSpec()
    drhs: GemmSpec = GemmSpec()
    bifurcation: bool = True
    transposable: bool = False
    transposable_method: str = "greedy"

    def __post_init__(self):
        for name in _GEMMS:
            if not isinstance(getattr(self, name), GemmSpec):
                raise TypeError(f"{name}={getattr(self, name)!r}: expected a GemmSpec")
        for where, v in (("fwd.lhs", self.fwd.lhs), ("fwd.rhs", self.fwd.rhs),
                         ("dlhs.lhs", self.dlhs.lhs), ("drhs.rhs", self.drhs.rhs)):
            if v == REUSE:
                raise ValueError(f"{where}='fwd': only dlhs.rhs (the weight) and drhs.lhs (the activation) "
                                 "can reuse the forward operand")
        if not isinstance(self.bifurcation, bool) or not isinstance(self.transposable, bool):
            raise TypeError("bifurcation, transposable: expected bools")
        _choice(self.transposable_method, "transposable_method", _T_METHODS)
        if not self.bifurcation and self.drhs.rhs != self.dlhs.lhs:
            raise ValueError("bifurcation=False: the output gradient is rounded once (by dlhs.lhs) for both "
                             "backward GEMMs, so drhs.rhs must equal dlhs.lhs")
        if self.transposable:
            sp = self.fwd.rhs.sparsity
            if sp is None or sp.method != "topn":
                raise ValueError("transposable=True: needs fwd.rhs.sparsity with method='topn' (its n:m)")
            if sp.axis is not None:
                raise ValueError("transposable=True: the mask's axes are the GEMM's; leave fwd.rhs.sparsity.axis None")
            if isinstance(self.dlhs.rhs, Operand) and self.dlhs.rhs.sparsity is not None:
                raise ValueError("transposable=True: dlhs uses the transposable mask; dlhs.rhs.sparsity must be None")
        acc = self.fwd.accumulator
        if acc is not None and acc.ste != "identity":
            if self.dlhs.accumulator is not None or self.drhs.accumulator is not None:
                raise ValueError(f"fwd.accumulator.ste={acc.ste!r}: the backward is a masked float32 contraction; "
                                 "dlhs/drhs must use accumulator=None")

    @property
    def needs_key(self) -> bool:
        """Whether a call draws random bits (SR anywhere, or MVUE)."""
        for g in (self.fwd, self.dlhs, self.drhs):
            for o in (g.lhs, g.rhs):
                mvue = isinstance(o, Operand) and o.sparsity is not None and o.sparsity.method == "mvue"
                if mvue or (isinstance(o, Operand) and o.stochastic):
                    return True
            if g.accumulator is not None and g.accumulator.stochastic:
                return True
        return False


# -- presets (the ``emul train`` recipes of issue 10) ---------------------------------------------

def _u8(granularity, rounding="nearest_even"):
    """Paper [C]: the 8-bit GEMMLOWP-style asymmetric [min, max] quantizer (uint8, 0…255)."""
    return Operand(format="uint8", scale="minmax", granularity=granularity, rounding=rounding)


def fp32() -> DotConfig:
    """Every GEMM in float32 at ``Precision.HIGHEST`` (equals the plain lax ops and their VJPs)."""
    return DotConfig()


def w8a8(*, per_channel: bool = False) -> DotConfig:
    """8-bit weights and activations (paper [C]): activations uint8 over the batch-mean of
    the per-sample [min, max] (``"sample_mean"``), weights uint8 over their [min, max] per tensor
    (or per output channel), both round-to-nearest-even; the backward GEMMs use these same
    quantized tensors (``"fwd"``) and the float32 output gradient."""
    fwd = GemmSpec(lhs=_u8("sample_mean"), rhs=_u8("channel" if per_channel else "tensor"))
    return DotConfig(fwd=fwd, dlhs=GemmSpec(rhs=REUSE), drhs=GemmSpec(lhs=REUSE))


def w8a8g8(*, per_channel: bool = False, grad_w: Any = "bf16") -> DotConfig:
    """:func:`w8a8` plus 8-bit gradients with bifurcation (paper [C]): the input
    gradient from the output gradient rounded stochastically to uint8 over its [min, max]; the
    weight gradient from a 16-bit copy (``grad_w``, default bf16; None keeps float32 as the
    authors' code does)."""
    base = w8a8(per_channel=per_channel)
    gw = Operand() if grad_w is None else Operand(format=grad_w)
    return dataclasses.replace(base, dlhs=GemmSpec(lhs=_u8("tensor", "stochastic"), rhs=REUSE),
                               drhs=GemmSpec(lhs=REUSE, rhs=gw), bifurcation=True)


def mx(*, element: str = "mxfp8_e4m3") -> DotConfig:
    """MXFP8 forward (OCP MX, docs/blocks.md): activations and weights quantized in blocks of 32
    along the forward GEMM's reduction axis, each block with its e8m0 power-of-two scale (floor rule),
    elements rounded nearest-even and saturating; the backward GEMMs reuse those quantized operands
    with the float32 output gradient."""
    fwd = GemmSpec(lhs=Operand(format=element), rhs=Operand(format=element))
    return DotConfig(fwd=fwd, dlhs=GemmSpec(rhs=REUSE), drhs=GemmSpec(lhs=REUSE))


def _grad_sparsity(base, sparsity, name):
    base = fp32() if base is None else base
    if not base.bifurcation:
        raise ValueError(f"{name}: the sparse gradient belongs to the weight-gradient GEMM; needs bifurcation=True")
    rhs = base.drhs.rhs
    drhs = dataclasses.replace(base.drhs, rhs=dataclasses.replace(rhs, sparsity=sparsity))
    return dataclasses.replace(base, drhs=drhs)


def mvue12(base: DotConfig | None = None) -> DotConfig:
    """``base`` (default :func:`fp32`) with the output gradient of the weight-gradient GEMM made
    1:2 sparse by MVUE along that GEMM's reduction axis (paper [A])."""
    return _grad_sparsity(base, Sparsity(n=1, m=2, method="mvue"), "mvue12")


def mvue24(base: DotConfig | None = None, *, method: str = "exact") -> DotConfig:
    """As :func:`mvue12` with 2:4 (``method="exact"``, §A.4, or ``"approx"``, §A.5)."""
    return _grad_sparsity(base, Sparsity(n=2, m=4, method="mvue", mvue_method=method), "mvue24")


def topk24_grad(base: DotConfig | None = None) -> DotConfig:
    """The failure mode of paper [A]: the weight-gradient GEMM's output gradient pruned to
    its top 2 of 4 magnitudes (biased)."""
    return _grad_sparsity(base, Sparsity(n=2, m=4, method="topn"), "topk24_grad")


def _tnm(base, n, m, method):
    base = fp32() if base is None else base
    fwd = dataclasses.replace(base.fwd, rhs=dataclasses.replace(base.fwd.rhs, sparsity=Sparsity(n=n, m=m)))
    return dataclasses.replace(base, fwd=fwd, transposable=True, transposable_method=method)


def tnm24(base: DotConfig | None = None, *, method: str = "greedy") -> DotConfig:
    """``base`` with transposable 2:4 weights (paper [B]), the mask recomputed each call."""
    return _tnm(base, 2, 4, method)


def tnm48(base: DotConfig | None = None, *, method: str = "greedy") -> DotConfig:
    """``base`` with transposable 4:8 weights (paper [B])."""
    return _tnm(base, 4, 8, method)


def acc12(base: DotConfig | None = None, *, format: Any = "e4m7", chunk: int = 16, rounding: str = "toward_zero",
          ste: str = "identity", backward: bool = False) -> DotConfig:
    """``base`` with 12-bit floating-point accumulators (paper [D]): e4m7, chunked (``chunk``
    products per chunk, chunk sums added in e4m7 too), rounded ``toward_zero`` (the reviewers'
    "floor"), saturating; exact products. Forward GEMM only unless ``backward=True``."""
    base = fp32() if base is None else base
    acc = Accumulator(format=format, rounding=rounding, overflow="saturate", order="chunked", chunk=chunk, ste=ste)
    out = dataclasses.replace(base, fwd=dataclasses.replace(base.fwd, accumulator=acc))
    if backward:
        bacc = dataclasses.replace(acc, ste="identity")
        out = dataclasses.replace(out, dlhs=dataclasses.replace(out.dlhs, accumulator=bacc),
                                  drhs=dataclasses.replace(out.drhs, accumulator=bacc))
    return out


_BASES = {"fp32": fp32, "w8a8": w8a8, "w8a8g8": w8a8g8, "mx": mx}
_MODIFIERS = {"mvue12": mvue12, "mvue24": mvue24, "topk24-grad": topk24_grad, "tnm24": tnm24, "tnm48": tnm48,
              "acc12": acc12}
RECIPES = tuple(_BASES) + tuple(_MODIFIERS)


def recipe(name: str) -> DotConfig:
    """The config of an ``emul train`` recipe, combinable with ``+`` (at most one of ``fp32``,
    ``w8a8``, ``w8a8g8``, ``mx``, then modifiers in order): ``recipe("w8a8g8+mvue24")``.

    >>> recipe("w8a8g8+mvue24") == mvue24(w8a8g8())
    True
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"recipe {name!r}: expected names from {', '.join(RECIPES)} joined by '+'")
    parts = name.split("+")
    cfg = None
    for i, part in enumerate(parts):
        if part in _BASES:
            if i:
                raise ValueError(f"recipe {name!r}: {part!r} is a base recipe and must come first")
            cfg = _BASES[part]()
        elif part in _MODIFIERS:
            cfg = _MODIFIERS[part](cfg)
        else:
            raise ValueError(f"recipe {name!r}: unknown part {part!r}; known: {', '.join(RECIPES)}")
    return cfg


# -- statistics and the operand quantizer -----------------------------------------------------------
# Ranges are read from float32 bit patterns (exact; XLA CPU flushes subnormals in float compares).
# The per-range quotients (the scale s, its reciprocal r, sample means) are correctly rounded
# float32 divisions of emul_jax.arith (XLA rewrites divisions by constants, and GPU division is
# not correctly rounded by default). The per-element arithmetic is plain IEEE
# float32 (subtract, multiply, add; never a division: XLA rewrites x / c as x * (1/c)) with every
# operand and result whose magnitude is below 2**-126 flushed to a zero of its sign, explicitly, on
# every backend (XLA CPU flushes them anyway, GPUs do not): so the bits are defined, backend
# independent, and a NumPy replay (float32 operations plus the same flush) reproduces them. A
# product never feeds an addition directly (the flush, a select, sits between), so FMA contraction
# cannot change a result.

def _ftz(x):
    """x with subnormals replaced by a zero of their sign (a bit-level select, no arithmetic)."""
    b = f32_bits(x)
    return jnp.where((b & u32(ABS)) < u32(HIDDEN), f32_from_bits(b & u32(SIGN)), x)


def _absmax(x, axes):
    """(amax,): the greatest magnitude of ``x`` flushed (exact, on bit patterns: a NaN's pattern
    exceeds every other)."""
    b = f32_bits(x) & u32(ABS)
    return (_ftz(f32_from_bits(jnp.max(b, axis=axes, keepdims=True))),)


def _minmax(x, axes):
    """(lo, hi): the least and greatest element of ``x`` flushed (:func:`_ftz`), zeros as +0, both
    the canonical quiet NaN where a NaN takes part. Float reductions (vectorised; 5x faster on CPU
    than reducing order keys): min/max select an element and propagate NaN, and flushing after
    the reduction gives the flushed reduction's value — a subnormal compared as zero (XLA CPU's
    DAZ) or not can only be the result where the flushed result is a zero, and the zero's sign is
    dropped."""
    lo = f32_bits(_ftz(jnp.min(x, axis=axes, keepdims=True)))
    hi = f32_bits(_ftz(jnp.max(x, axis=axes, keepdims=True)))
    nan = ((lo & u32(ABS)) > u32(EXP)) | ((hi & u32(ABS)) > u32(EXP))
    fix = lambda v: jnp.where(nan, u32(R.F32_NAN), jnp.where(v == u32(SIGN), u32(0), v))  # noqa: E731
    return f32_from_bits(fix(lo)), f32_from_bits(fix(hi))


def _pairwise_sum(v):
    """A pairwise float32 sum of a 1-D vector: elements 2i and 2i+1 added level by level, an odd
    last one passing up unchanged, each sum rounded to nearest even and flushed."""
    while v.shape[0] > 1:
        k = v.shape[0] // 2
        pair = _ftz(v[0:2 * k:2] + v[1:2 * k:2])
        v = jnp.concatenate([pair, v[2 * k:]]) if v.shape[0] % 2 else pair
    return v[0]


def _others(nd, axis):
    return tuple(a for a in range(nd) if a != axis)


def _stats(x, op: Operand, chan_axis, sample_axis, fn):
    """fn(x, axes) per op.granularity as a tuple of keepdims arrays (broadcastable to x).
    ``"sample_mean"``: the per-sample values averaged over the samples, a pairwise float32 sum
    divided by their number (one rounding; one emul_jax.div for all of them)."""
    nd = x.ndim
    if op.granularity == "channel" and chan_axis is not None:
        return fn(x, _others(nd, chan_axis))
    if op.granularity == "sample_mean":
        if sample_axis is None:
            raise ValueError("granularity='sample_mean': this operand has no sample axis (a weight); "
                             "use 'tensor' or 'channel'")
        per = fn(x, _others(nd, sample_axis))
        sums = jnp.stack([_pairwise_sum(p.reshape(-1)) for p in per])
        n = np.float32(x.shape[sample_axis])
        return tuple(m.reshape((1,) * nd) for m in _ftz(_div(sums, n, "fp32")))
    return fn(x, tuple(range(nd)))


def _scale(rng, qrange):
    """(s, r): s = rng / qrange and r = qrange / rng, each rounded once to float32 (one
    emul_jax.div for both) and flushed; s = r = 1 where either flushes to zero (a zero range)."""
    q = np.float32(qrange)
    both = _ftz(_div(jnp.stack([rng, jnp.broadcast_to(q, rng.shape)]),
                     jnp.stack([jnp.broadcast_to(q, rng.shape), rng]), "fp32"))
    s, r = both[0], both[1]
    zero = ((f32_bits(s) & u32(ABS)) == u32(0)) | ((f32_bits(r) & u32(ABS)) >= u32(EXP))
    return jnp.where(zero, jnp.float32(1), s), jnp.where(zero, jnp.float32(1), r)


@dataclasses.dataclass(frozen=True)
class _Axes:
    """Where an operand's N:M blocks run, which axis 'channel' means, and which is the sample axis."""

    nm: int | None
    chan: int | None
    sample: int | None


def _prepare(x, op: Operand, ax: _Axes, round_key, sparse_key, mask=None):
    """(v, s): the float32 values the GEMM multiplies and None or a float32 scale broadcastable to
    ``x`` (the operand stands for v·s). ``round_key``/``sparse_key`` are thunks giving the keys."""
    x = lax.convert_element_type(x, _F32)
    if mask is not None:
        x = lax.select(mask, x, jnp.zeros(x.shape, _F32))
    sp = op.sparsity
    if sp is not None:
        axis = ax.nm if sp.axis is None else sp.axis
        if axis is None:
            raise ValueError("sparsity: this operand has no reduction axis in this GEMM; give Sparsity(axis=...)")
        if sp.method == "topn":
            x = _sparsity.nm_prune(x, sp.n, sp.m, axis=axis, ties=sp.ties)
        else:
            x = _sparsity.mvue(x, sp.n, sp.m, axis=axis, key=sparse_key(), method=sp.mvue_method)
    if op.format is None:
        return x, None
    fmt = op.format
    kw = dict(rounding=op.rounding, overflow=op.overflow, sr_bits=op.sr_bits, sr_method=op.sr_method)
    if op.stochastic:
        kw["key"] = round_key()
    if not isinstance(fmt, (FloatFormat, FixedFormat)):  # a block format: blocks along the reduction axis
        if ax.nm is None:
            raise ValueError(f"format={fmt.name}: this operand has no reduction axis in this GEMM")
        from .blocks import quantize as _block_quantize

        del kw["overflow"]
        return _block_quantize(x, fmt, axis=ax.nm, **kw), None
    if op.scale == "none":
        return _quantize(x, fmt, **kw), None
    x = _ftz(x)
    if op.scale == "absmax":
        (amax,) = _stats(x, op, ax.chan, ax.sample, _absmax)
        s, r = _scale(amax, fmt.max)
        return _quantize(_ftz(x * r), fmt, **kw), s
    # minmax: the GEMMLOWP quantizer of paper [C]
    lo, hi = _stats(x, op, ax.chan, ax.sample, _minmax)
    lo = _ftz(lo)
    qmin, qmax = (-fmt.max, fmt.max) if isinstance(fmt, FloatFormat) else (fmt.min, fmt.max)
    s, r = _scale(_ftz(hi - lo), qmax - qmin)
    y = _ftz(_ftz(x - lo) * r)
    if qmin:
        y = _ftz(y + np.float32(qmin))
    q = _quantize(y, fmt, **kw)
    if qmin:
        q = _ftz(q - np.float32(qmin))
    return _ftz(_ftz(q * s) + lo), None


# -- the GEMMs ----------------------------------------------------------------------------------------

def _inverse(perm):
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return tuple(inv)


def _acc_matmul(a, b, spec: GemmSpec, key):
    acc = spec.accumulator
    return _acc_matmul_impl(a, b, acc.format, spec.product, spec.product_rounding, acc.rounding, acc.overflow,
                            acc.order, acc.chunk, acc.outer, None, key() if acc.stochastic else None, None,
                            acc.sr_bits, acc.sr_method, check=False)


@dataclasses.dataclass(frozen=True)
class _Dot:
    """The geometry of one dot_general (static)."""

    lhs_shape: tuple
    rhs_shape: tuple
    lc: tuple
    rc: tuple
    lb: tuple
    rb: tuple

    @property
    def lf(self):
        return tuple(d for d in range(len(self.lhs_shape)) if d not in self.lc + self.lb)

    @property
    def rf(self):
        return tuple(d for d in range(len(self.rhs_shape)) if d not in self.rc + self.rb)

    @property
    def dn(self):
        return ((self.lc, self.rc), (self.lb, self.rb))

    @property
    def out_shape(self):
        take = lambda shape, dims: tuple(shape[d] for d in dims)  # noqa: E731
        return take(self.lhs_shape, self.lb) + take(self.lhs_shape, self.lf) + take(self.rhs_shape, self.rf)

    def result_shape(self, gemm):
        return (self.out_shape, self.lhs_shape, self.rhs_shape)[gemm]

    def out_map(self, gemm, side):
        """For each axis of the operand (side 0 = lhs of that GEMM, 1 = rhs): the output axis it
        becomes, or None where the GEMM reduces it."""
        nb, nlf = len(self.lb), len(self.lf)
        lb, lf, lc, rb, rf, rc = self.lb, self.lf, self.lc, self.rb, self.rf, self.rc
        if gemm == FWD:
            if side == 0:
                return tuple(lb.index(a) if a in lb else nb + lf.index(a) if a in lf else None
                             for a in range(len(self.lhs_shape)))
            return tuple(rb.index(a) if a in rb else nb + nlf + rf.index(a) if a in rf else None
                         for a in range(len(self.rhs_shape)))
        if gemm == DLHS:
            if side == 0:  # G
                return tuple(lb[i] if i < nb else lf[i - nb] if i < nb + nlf else None
                             for i in range(len(self.out_shape)))
            return tuple(lb[rb.index(a)] if a in rb else lc[rc.index(a)] if a in rc else None
                         for a in range(len(self.rhs_shape)))
        if side == 0:  # drhs, X
            return tuple(rb[lb.index(a)] if a in lb else rc[lc.index(a)] if a in lc else None
                         for a in range(len(self.lhs_shape)))
        return tuple(rb[i] if i < nb else None if i < nb + nlf else rf[i - nb - nlf]
                     for i in range(len(self.out_shape)))

    def axes(self, gemm, side):
        nb, nlf, nrf = len(self.lb), len(self.lf), len(self.rf)
        omap = self.out_map(gemm, side)
        batch = {(FWD, 0): self.lb, (FWD, 1): self.rb, (DLHS, 0): tuple(range(nb)), (DLHS, 1): self.rb,
                 (DRHS, 0): self.lb, (DRHS, 1): tuple(range(nb))}[gemm, side]
        mapped = [a for a, o in enumerate(omap) if o is not None]
        chan = next((a for a in mapped if a not in batch), mapped[0] if mapped else None)
        if (gemm, side) == (FWD, 0):
            nm = self.lc[-1] if self.lc else None
        elif (gemm, side) == (FWD, 1):
            nm = self.rc[-1] if self.rc else None
        elif (gemm, side) == (DLHS, 0):
            nm = nb + nlf + nrf - 1 if nrf else None
        elif (gemm, side) == (DLHS, 1):
            nm = self.rf[-1] if nrf else None
        elif (gemm, side) == (DRHS, 0):
            nm = self.lf[-1] if nlf else None
        else:
            nm = nb + nlf - 1 if nlf else None
        is_x = (gemm, side) in ((FWD, 0), (DRHS, 0))
        is_g = (gemm, side) in ((DLHS, 0), (DRHS, 1))
        if is_x:
            cand = [a for a in range(len(self.lhs_shape)) if a not in self.lc]
            sample = cand[0] if cand else None
        else:
            sample = 0 if is_g and self.out_shape else None
        return _Axes(nm, chan, sample)

    # XLA at HIGHEST precision; the two transposes are what jax.vjp of lax.dot_general computes
    def _xla_fwd(self, a, b):
        return lax.dot_general(a, b, self.dn, precision=_HI, preferred_element_type=_F32)

    def xla(self, gemm, a, b):
        if gemm == FWD:
            return self._xla_fwd(a, b)
        if gemm == DLHS:
            return jax.linear_transpose(lambda l: self._xla_fwd(l, b), jax.ShapeDtypeStruct(self.lhs_shape, _F32))(a)[0]
        return jax.linear_transpose(lambda r: self._xla_fwd(a, r), jax.ShapeDtypeStruct(self.rhs_shape, _F32))(b)[0]

    # the canonical batched matmul (B, M, K) @ (B, K, N): reduction over the flattened contracting
    # dims (fwd), the rhs-free dims (dlhs) or the lhs-free dims (drhs), each in dimension order
    def canonical(self, gemm, a, b):
        sz = lambda shape, dims: int(np.prod([shape[d] for d in dims], dtype=np.int64))  # noqa: E731
        L, Rs = self.lhs_shape, self.rhs_shape
        B, M, K, N = sz(L, self.lb), sz(L, self.lf), sz(L, self.lc), sz(Rs, self.rf)
        if gemm == FWD:
            return (jnp.transpose(a, self.lb + self.lf + self.lc).reshape(B, M, K),
                    jnp.transpose(b, self.rb + self.rc + self.rf).reshape(B, K, N))
        if gemm == DLHS:
            return a.reshape(B, M, N), jnp.transpose(b, self.rb + self.rf + self.rc).reshape(B, N, K)
        return jnp.transpose(a, self.lb + self.lc + self.lf).reshape(B, K, M), b.reshape(B, M, N)

    def uncanonical(self, gemm, y):
        L, Rs = self.lhs_shape, self.rhs_shape
        if gemm == FWD:
            return y.reshape(self.out_shape)
        if gemm == DLHS:
            perm = self.lb + self.lf + self.lc
            return jnp.transpose(y.reshape(tuple(L[d] for d in perm)), _inverse(perm))
        perm = self.rb + self.rc + self.rf
        return jnp.transpose(y.reshape(tuple(Rs[d] for d in perm)), _inverse(perm))

    def emulated(self, gemm, a, b, spec, key):
        return self.uncanonical(gemm, _acc_matmul(*self.canonical(gemm, a, b), spec, key))

    def transposable_mask(self, w, n, m, method):
        sz = lambda dims: int(np.prod([self.rhs_shape[d] for d in dims], dtype=np.int64))  # noqa: E731
        perm = self.rb + self.rc + self.rf
        wc = jnp.transpose(w, perm).reshape(sz(self.rb), sz(self.rc), sz(self.rf))
        mk = jax.vmap(lambda t: _sparsity.transposable_mask(t.T, n, m, method=method, layout="gemm").T)(wc)
        return jnp.transpose(mk.reshape(tuple(self.rhs_shape[d] for d in perm)), _inverse(perm))


def _im2col(x, kshape, strides, pads, lhs_dil, rhs_dil):
    """(cols (N, C*T, P), output spatial shape) of x (N, C, *spatial): x dilated by ``lhs_dil`` and
    padded (lax.pad: exact, +0 fill; negative pads crop), then one strided slice per kernel tap (C
    order over the taps, dilated by ``rhs_dil``). Reduction index c*T + t: channel outermost, as
    :func:`emul.conv2d`."""
    cfg = [(0, 0, 0), (0, 0, 0)] + [(lo, hi, d - 1) for (lo, hi), d in zip(pads, lhs_dil)]
    xp = lax.pad(x, jnp.float32(0), cfg)
    n, c = x.shape[:2]
    sp = xp.shape[2:]
    out = tuple(max(0, (p - ((k - 1) * r + 1)) // s + 1) for p, k, r, s in zip(sp, kshape, rhs_dil, strides))
    taps = []
    for t in itertools.product(*(range(k) for k in kshape)):
        start = tuple(ti * r for ti, r in zip(t, rhs_dil))
        limit = tuple(st + (o - 1) * s + 1 if o else st for st, o, s in zip(start, out, strides))
        taps.append(lax.slice(xp, (0, 0) + start, (n, c) + limit, (1, 1) + tuple(strides)))
    cols = jnp.stack(taps, axis=2)
    return cols.reshape(n, c * len(taps), int(np.prod(out, dtype=np.int64))), out


def _emul_conv(x, w, strides, pads, lhs_dil, rhs_dil, fgc, spec, key):
    """x (N, C, *s) conv w (O, C/fgc, *k) with the emulated accumulator -> (N, O, *out)."""
    n = x.shape[0]
    o, cg = w.shape[:2]
    kshape = w.shape[2:]
    cols, out = _im2col(x, kshape, strides, pads, lhs_dil, rhs_dil)
    kk = cg * int(np.prod(kshape, dtype=np.int64))
    cols = cols.reshape(n, fgc, kk, cols.shape[-1])
    wm = w.reshape(1, fgc, o // fgc, kk)
    y = _acc_matmul(wm, cols, spec, key)                       # (N, fgc, O/fgc, P)
    return y.reshape((n, o) + out)


@dataclasses.dataclass(frozen=True)
class _Conv:
    """The geometry of one conv_general_dilated (static; pads as (lo, hi) pairs)."""

    lhs_shape: tuple
    rhs_shape: tuple
    out_shape: tuple
    strides: tuple
    pads: tuple
    lhs_dil: tuple
    rhs_dil: tuple
    lhs_spec: tuple
    rhs_spec: tuple
    out_spec: tuple
    fgc: int
    bgc: int

    def result_shape(self, gemm):
        return (self.out_shape, self.lhs_shape, self.rhs_shape)[gemm]

    def out_map(self, gemm, side):
        ls, rs, os_ = self.lhs_spec, self.rhs_spec, self.out_spec
        one = self.bgc == 1
        if gemm == FWD:
            nd, pairs = (len(self.lhs_shape), {ls[0]: os_[0] if one else None}) if side == 0 else \
                        (len(self.rhs_shape), {rs[0]: os_[1]})
        elif gemm == DLHS:
            nd, pairs = (len(self.out_shape), {os_[0]: ls[0] if one else None}) if side == 0 else \
                        (len(self.rhs_shape), {rs[1]: ls[1] if one and self.fgc == 1 else None})
        else:
            nd, pairs = (len(self.lhs_shape), {ls[1]: rs[1] if self.fgc == 1 else None}) if side == 0 else \
                        (len(self.out_shape), {os_[1]: rs[0]})
        return tuple(pairs.get(a) for a in range(nd))

    def axes(self, gemm, side):
        ls, rs, os_ = self.lhs_spec, self.rhs_spec, self.out_spec
        nm = {(FWD, 0): ls[1], (FWD, 1): rs[1], (DLHS, 0): os_[1], (DLHS, 1): rs[0],
              (DRHS, 0): ls[0], (DRHS, 1): os_[0]}[gemm, side]
        mapped = [a for a, o in enumerate(self.out_map(gemm, side)) if o is not None]
        sample = {(FWD, 0): ls[0], (DRHS, 0): ls[0], (DLHS, 0): os_[0], (DRHS, 1): os_[0]}.get((gemm, side))
        return _Axes(nm, mapped[0] if mapped else None, sample)

    def _xla_fwd(self, a, b):
        return lax.conv_general_dilated(a, b, self.strides, self.pads, self.lhs_dil, self.rhs_dil,
                                        lax.ConvDimensionNumbers(self.lhs_spec, self.rhs_spec, self.out_spec),
                                        self.fgc, self.bgc, precision=_HI, preferred_element_type=_F32)

    def xla(self, gemm, a, b):
        if gemm == FWD:
            return self._xla_fwd(a, b)
        if gemm == DLHS:
            return jax.linear_transpose(lambda l: self._xla_fwd(l, b), jax.ShapeDtypeStruct(self.lhs_shape, _F32))(a)[0]
        return jax.linear_transpose(lambda r: self._xla_fwd(a, r), jax.ShapeDtypeStruct(self.rhs_shape, _F32))(b)[0]

    def _vjp_lhs_pads(self):
        ls, rs, os_ = self.lhs_spec, self.rhs_spec, self.out_spec
        pads = []
        for i, (lo, _) in enumerate(self.pads):
            d_in = (self.lhs_shape[ls[2 + i]] - 1) * self.lhs_dil[i] + 1
            d_k = (self.rhs_shape[rs[2 + i]] - 1) * self.rhs_dil[i] + 1
            d_out = (self.out_shape[os_[2 + i]] - 1) * self.strides[i] + 1
            before = d_k - lo - 1
            pads.append((before, d_in + d_k - 1 - d_out - before))
        return tuple(pads)

    # batch groups: lax splits the lhs batch into bgc groups of consecutive samples (group g: samples
    # g*N/bgc ... (g+1)*N/bgc - 1) and gives group g the output features g*O/bgc ... (g+1)*O/bgc - 1.
    # That is the convolution, with bgc feature groups, of x' (N/bgc, bgc*C, ...): x'[n, g*C + c] =
    # x[g*N/bgc + n, c] (the batch reshaped into the feature dimension).

    def feature_groups(self):
        """This convolution (``bgc > 1``, ``fgc == 1``) as the convolution of :meth:`to_features`'
        x' with ``bgc`` feature groups (lhs in N, C, spatial order)."""
        ls = self.lhs_spec
        n, c = self.lhs_shape[ls[0]], self.lhs_shape[ls[1]]
        shape = (n // self.bgc, c * self.bgc) + tuple(self.lhs_shape[d] for d in ls[2:])
        return dataclasses.replace(self, lhs_shape=shape, lhs_spec=tuple(range(len(shape))), fgc=self.bgc, bgc=1)

    def to_features(self, x):
        """x (lhs layout) -> x' (N/bgc, bgc*C, *spatial)."""
        xt = jnp.transpose(x, self.lhs_spec)
        n, c = xt.shape[:2]
        g = self.bgc
        return xt.reshape((g, n // g, c) + xt.shape[2:]).swapaxes(0, 1).reshape((n // g, g * c) + xt.shape[2:])

    def from_features(self, xf):
        """The inverse of :meth:`to_features` (a gradient w.r.t. x' -> one w.r.t. x, lhs layout)."""
        g = self.bgc
        n, gc = xf.shape[:2]
        xt = xf.reshape((n, g, gc // g) + xf.shape[2:]).swapaxes(0, 1).reshape((n * g, gc // g) + xf.shape[2:])
        return jnp.transpose(xt, _inverse(self.lhs_spec))

    def emulated(self, gemm, a, b, spec, key):
        if self.bgc != 1:
            fg = self.feature_groups()
            if gemm == FWD:
                return fg.emulated(FWD, self.to_features(a), b, spec, key)
            if gemm == DLHS:
                return self.from_features(fg.emulated(DLHS, a, b, spec, key))
            return fg.emulated(DRHS, self.to_features(a), b, spec, key)
        ls, rs, os_ = self.lhs_spec, self.rhs_spec, self.out_spec
        nsp = len(self.strides)
        if gemm == FWD:
            y = _emul_conv(jnp.transpose(a, ls), jnp.transpose(b, rs), self.strides, self.pads, self.lhs_dil,
                           self.rhs_dil, self.fgc, spec, key)
            return jnp.transpose(y, _inverse(os_))
        if gemm == DLHS:  # dX = conv(G dilated by the strides, the flipped kernel with I and O swapped)
            w = jnp.transpose(b, rs)
            o, cg = w.shape[:2]
            k = w.shape[2:]
            wt = w.reshape((self.fgc, o // self.fgc, cg) + k).swapaxes(1, 2).reshape((self.fgc * cg, o // self.fgc) + k)
            wt = lax.rev(wt, tuple(range(2, 2 + nsp)))
            y = _emul_conv(jnp.transpose(a, os_), wt, self.lhs_dil, self._vjp_lhs_pads(), self.strides, self.rhs_dil,
                           self.fgc, spec, key)
            return jnp.transpose(y, _inverse(ls))
        # drhs: dW[o, c*T + t] = sum over (n, p) of G[n, o, p] * cols[n, c*T + t, p]; n outermost
        x = jnp.transpose(a, ls)
        kshape = tuple(self.rhs_shape[d] for d in rs[2:])
        cols, _ = _im2col(x, kshape, self.strides, self.pads, self.lhs_dil, self.rhs_dil)
        n, ckt, p = cols.shape
        g = jnp.transpose(b, os_)
        o = g.shape[1]
        f = self.fgc
        gm = g.reshape(n, f, o // f, p).transpose(1, 2, 0, 3).reshape(f, o // f, n * p)
        cm = cols.reshape(n, f, ckt // f, p).transpose(1, 0, 3, 2).reshape(f, n * p, ckt // f)
        dw = _acc_matmul(gm, cm, spec, key).reshape((o, ckt // (f * int(np.prod(kshape, dtype=np.int64)))) + kshape)
        return jnp.transpose(dw, _inverse(rs))

    def im2col_gemm(self):
        """(dot, wf, xf, yf, y_from): the forward GEMM (``bgc == 1``) as a dot_general ``dot``
        (a :class:`_Dot`) of wf(w) (N, fgc, O/fgc, C/fgc*T: the weight matrix of each group,
        broadcast over the samples) and xf(x) (N, fgc, C/fgc*T, P: the im2col columns), batch
        dims (N, fgc), contracting C/fgc*T (input channel outermost, then the taps in C order);
        yf maps an output-layout array to the dot's output (N, fgc, O/fgc, P), y_from back. The
        dot's canonical GEMM, its output order and its SR words are the emulated forward's."""
        ls, rs, os_ = self.lhs_spec, self.rhs_spec, self.out_spec
        n, o, f = self.lhs_shape[ls[0]], self.rhs_shape[rs[0]], self.fgc
        kshape = tuple(self.rhs_shape[d] for d in rs[2:])
        kk = self.rhs_shape[rs[1]] * int(np.prod(kshape, dtype=np.int64))
        out = tuple(self.out_shape[d] for d in os_[2:])
        p = int(np.prod(out, dtype=np.int64))

        def wf(w):
            return jnp.broadcast_to(jnp.transpose(w, rs).reshape(1, f, o // f, kk), (n, f, o // f, kk))

        def xf(x):
            cols, _ = _im2col(jnp.transpose(x, ls), kshape, self.strides, self.pads, self.lhs_dil, self.rhs_dil)
            return cols.reshape(n, f, kk, p)

        def yf(y):
            return jnp.transpose(y, os_).reshape(n, f, o // f, p)

        def y_from(y):
            return jnp.transpose(y.reshape((n, o) + out), _inverse(os_))

        dot = _Dot((n, f, o // f, kk), (n, f, kk, p), (3,), (2,), (0, 1), (0, 1))
        return dot, wf, xf, yf, y_from

    def ste(self, spec, va, vb, g_dx, g_dw, x_full, w_full, acc_key):
        """(dX, dW) under a non-identity accumulator STE: the dot_general STE of the forward's
        im2col GEMM (:meth:`im2col_gemm`), its gradients mapped back through the (linear) maps
        wf and xf; batch groups through :meth:`feature_groups`."""
        if self.bgc != 1:
            fg = self.feature_groups()
            dx, dw = fg.ste(spec, self.to_features(va), vb, g_dx, g_dw, self.to_features(x_full), w_full, acc_key)
            return self.from_features(dx), dw
        dot, wf, xf, yf, _ = self.im2col_gemm()
        dwm, dcols = _ste_grads(dot, spec, wf(vb), xf(va), yf(g_dw), yf(g_dx), wf(w_full), xf(x_full), acc_key)
        (dw,) = jax.vjp(wf, w_full)[1](dwm)
        (dx,) = jax.vjp(xf, x_full)[1](dcols)
        return dx, dw

    def transposable_mask(self, w, n, m, method):
        rs = self.rhs_spec
        wo = jnp.transpose(w, rs)
        o, i = wo.shape[:2]
        k = wo.shape[2:]
        taps = jnp.moveaxis(wo.reshape(o, i, -1), -1, 0)
        mk = jax.vmap(lambda t: _sparsity.transposable_mask(t, n, m, method=method, layout="gemm"))(taps)
        return jnp.transpose(jnp.moveaxis(mk, 0, -1).reshape((o, i) + k), _inverse(rs))


# -- scales: factored out of the GEMM, or folded into the operand -----------------------------------

def _split_scale(vs, omap, out_nd):
    """(v, s_out): the scale moved onto the output (broadcastable) when it varies only along axes
    the GEMM keeps; folded into the values (v·s, one float32 rounding) when it varies along a
    reduced axis."""
    v, s = vs
    if s is None:
        return v, None
    varying = [a for a in range(s.ndim) if s.shape[a] != 1]
    if any(omap[a] is None for a in varying):
        return _ftz(v * s), None
    order = sorted(range(len(varying)), key=lambda i: omap[varying[i]])
    t = jnp.transpose(s.reshape([s.shape[a] for a in varying]), order)
    shape = [1] * out_nd
    for a in varying:
        shape[omap[a]] = s.shape[a]
    return v, t.reshape(shape)


def _gemm(kind, gemm, spec: GemmSpec, a, b, acc_key):
    """The GEMM ``gemm`` of prepared operands a = (v, s), b = (v, s)."""
    out_nd = len(kind.result_shape(gemm))
    va, sa = _split_scale(a, kind.out_map(gemm, 0), out_nd)
    vb, sb = _split_scale(b, kind.out_map(gemm, 1), out_nd)
    if spec.accumulator is None:
        y = kind.xla(gemm, va, vb)
    else:
        y = kind.emulated(gemm, va, vb, spec, acc_key)
    if sa is not None and sb is not None:
        y = _ftz(y * _ftz(sa * sb))
    elif sa is not None or sb is not None:
        y = _ftz(y * (sa if sb is None else sb))
    return y


class _Streams:
    """Keys of one call, derived on demand (each stream is used by exactly one rounding)."""

    def __init__(self, key):
        self.key = key

    def __call__(self, gemm, role, what):
        def get():
            if self.key is None:
                raise ValueError(f"key=None, but {what} draws random bits; pass key= (a jax.random.key)")
            return stream_key(self.key, gemm, role)
        return get


def _operands_fwd(kind, cfg, lhs, rhs, keys):
    f = cfg.fwd
    mask = None
    if cfg.transposable:
        sp = f.rhs.sparsity
        mask = kind.transposable_mask(rhs, sp.n, sp.m, cfg.transposable_method)
        f_rhs = dataclasses.replace(f.rhs, sparsity=None)
    else:
        f_rhs = f.rhs
    a = _prepare(lhs, f.lhs, kind.axes(FWD, 0), keys(FWD, LHS, "fwd.lhs"), keys(FWD, SPARSE_LHS, "fwd.lhs"))
    b = _prepare(rhs, f_rhs, kind.axes(FWD, 1), keys(FWD, RHS, "fwd.rhs"), keys(FWD, SPARSE_RHS, "fwd.rhs"), mask)
    return a, b, mask


def _qop_impl(kind, cfg, lhs, rhs, key):
    keys = _Streams(key)
    a, b, mask = _operands_fwd(kind, cfg, lhs, rhs, keys)
    y = _gemm(kind, FWD, cfg.fwd, a, b, keys(FWD, ACC, "fwd.accumulator"))
    res = (a, b, None if cfg.drhs.lhs == REUSE else lhs, None if cfg.dlhs.rhs == REUSE else rhs, mask, key)
    return y, res


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _qop(kind, cfg, lhs, rhs, key):
    return _qop_impl(kind, cfg, lhs, rhs, key)[0]


def _qop_fwd(kind, cfg, lhs, rhs, key):
    return _qop_impl(kind, cfg, lhs, rhs, key)


def _qop_bwd(kind, cfg, res, g):
    a, b, lhs, rhs, mask, key = res
    keys = _Streams(key)
    g = lax.convert_element_type(g, _F32)
    gd = _prepare(g, cfg.dlhs.lhs, kind.axes(DLHS, 0), keys(DLHS, GRAD, "dlhs.lhs"),
                  keys(DLHS, SPARSE_GRAD, "dlhs.lhs"))
    if cfg.bifurcation:
        gr = _prepare(g, cfg.drhs.rhs, kind.axes(DRHS, 1), keys(DRHS, GRAD, "drhs.rhs"),
                      keys(DRHS, SPARSE_GRAD, "drhs.rhs"))
    else:
        gr = gd
    if cfg.dlhs.rhs == REUSE:
        wd = b
    else:
        wd = _prepare(rhs, cfg.dlhs.rhs, kind.axes(DLHS, 1), keys(DLHS, RHS, "dlhs.rhs"),
                      keys(DLHS, SPARSE_RHS, "dlhs.rhs"), mask)
    if cfg.drhs.lhs == REUSE:
        xr = a
    else:
        xr = _prepare(lhs, cfg.drhs.lhs, kind.axes(DRHS, 0), keys(DRHS, LHS, "drhs.lhs"),
                      keys(DRHS, SPARSE_LHS, "drhs.lhs"))
    acc = cfg.fwd.accumulator
    if acc is not None and acc.ste != "identity":
        dl, dr = _ste_backward(kind, cfg, a, b, gd, wd, xr, gr, keys(FWD, ACC, "fwd.accumulator"))
    else:
        dl = _gemm(kind, DLHS, cfg.dlhs, gd, wd, keys(DLHS, ACC, "dlhs.accumulator"))
        dr = _gemm(kind, DRHS, cfg.drhs, xr, gr, keys(DRHS, ACC, "drhs.accumulator"))
    return dl, dr, None


_qop.defvjp(_qop_fwd, _qop_bwd)
_qop_jit = jax.jit(_qop, static_argnums=(0, 1))


# -- non-identity straight-through estimators of the forward accumulation (paper [D]) -------------------

def _nonzero(x):
    return (f32_bits(x) & u32(ABS)) != u32(0)


def _same_value(x, y):
    bx, by = f32_bits(x), f32_bits(y)
    return (bx == by) | (((bx | by) & u32(ABS)) == u32(0))


def _step(s, term, fmt, acc: Accumulator, spec: GemmSpec, uk, recursive):
    """One accumulation step s' = Q(s + t); ``term`` is (l, r) (a product) or (c, None) (a chunk
    sum). Returns (s', f, o): f = 0 where t was swamped or the step overflowed; o = 0 where the
    running sum was swamped or the step overflowed (recursive only; else 1)."""
    kw = dict(rounding=acc.rounding, overflow=acc.overflow, sr_bits=acc.sr_bits, sr_method=acc.sr_method,
              random_bits=uk)
    l, r = term
    zero = jnp.zeros(s.shape, _F32)
    if r is None or spec.product is not None:
        t = l if r is None else _mul(l, r, spec.product, spec.product_rounding)
        new, wide = _add(s, t, fmt, **kw), _add(s, t, "fp32")
        t_nz = _nonzero(t)
        alone = _add(zero, t, fmt, **kw) if recursive else None
    else:
        new, wide = _fma(l, r, s, fmt, **kw), _fma(l, r, s, "fp32")
        t_nz = _nonzero(l) & _nonzero(r)
        alone = _fma(l, r, zero, fmt, **kw) if recursive else None
    big = np.float32(fmt.max).view(np.uint32)
    over = ((f32_bits(new) & u32(ABS)) >= u32(EXP)) | ((f32_bits(wide) & u32(ABS)) > u32(int(big)))
    f = ~((t_nz & _same_value(new, s)) | over)
    o = ~((_nonzero(s) & _same_value(new, alone)) | over) if recursive else jnp.ones(s.shape, bool)
    return new, f, o


def _after(o, axis):
    """Exclusive reverse cumulative product along ``axis``: prod of o[j] for j > i."""
    inc = jnp.flip(jnp.cumprod(jnp.flip(o, axis), axis=axis), axis)
    pad = jnp.ones_like(lax.slice_in_dim(inc, 0, 1, axis=axis))
    return jnp.concatenate([lax.slice_in_dim(inc, 1, inc.shape[axis], axis=axis), pad], axis=axis)


def _step_weights(A, Bm, spec: GemmSpec, key):
    """d S / d p_k for every output and step: (B, M, N, K) float32, for the accumulation of
    A (B, M, K) @ Bm (B, K, N) replayed step by step with the forward's random words."""
    acc = spec.accumulator
    recursive = acc.ste == "recursive"
    nb, m, k = A.shape
    n = Bm.shape[-1]
    if k == 0 or nb * m * n == 0:
        return jnp.zeros((nb, m, n, k), _F32)
    if acc.order == "pairwise":
        return _tree_weights(A, Bm, spec, key)
    T = _sr_steps(k, acc.order, acc.chunk)
    shape = (nb, m, n)
    u = None
    if acc.stochastic:
        r = acc.sr_bits or 32
        u = jax.random.bits(key(), shape + (T,), jnp.uint32)
        u = u >> u32(32 - r) if r < 32 else u
    ls = jnp.moveaxis(A, -1, 0)[:, :, :, None]       # (K, B, M, 1)
    rs = jnp.moveaxis(Bm, 1, 0)[:, :, None, :]       # (K, B, 1, N)
    fmt = acc.format
    if acc.order == "sequential":
        uk = None if u is None else jnp.moveaxis(u, -1, 0)

        def body(s, xs):
            l, r, w = xs
            new, f, o = _step(s, (l, r), fmt, acc, spec, w, recursive)
            return new, (f, o)

        _, (f, o) = lax.scan(body, jnp.zeros(shape, _F32), (ls, rs, uk))
        f, o = f.astype(_F32), o.astype(_F32)
        wts = f * _after(o, 0)
    else:
        c = acc.chunk
        nch = -(-k // c)
        pad = nch * c - k
        lp = jnp.concatenate([ls, jnp.zeros((pad,) + ls.shape[1:], _F32)]) if pad else ls
        rp = jnp.concatenate([rs, jnp.zeros((pad,) + rs.shape[1:], _F32)]) if pad else rs
        first = jnp.asarray(np.arange(nch * c) % c == 0)
        valid = jnp.asarray(np.arange(nch * c) < k)
        ui = uo = None
        if u is not None:
            ui = jnp.moveaxis(u[..., :k], -1, 0)
            if pad:
                ui = jnp.concatenate([ui, jnp.zeros((pad,) + shape, jnp.uint32)])
            uo = jnp.moveaxis(u[..., k:], -1, 0)

        def inner(s, xs):
            l, r, w, fst, ok = xs
            s = jnp.where(fst, jnp.float32(0), s)
            new, f, o = _step(s, (l, r), fmt, acc, spec, w, recursive)
            new = jnp.where(ok, new, s)
            return new, (new, f & ok, o | ~ok)

        _, (sums, f, o) = lax.scan(inner, jnp.zeros(shape, _F32), (lp, rp, ui, first, valid))
        sums = sums.reshape((nch, c) + shape)[:, -1]  # each chunk's sum (padded steps keep it)
        f = f.astype(_F32).reshape((nch, c) + shape)
        o = o.astype(_F32).reshape((nch, c) + shape)
        ofmt = acc.outer if acc.outer is not None else fmt

        def outer(s, xs):
            cs, w = xs
            new, f2, o2 = _step(s, (cs, None), ofmt, acc, spec, w, recursive)
            return new, (f2, o2)

        _, (fo, oo) = lax.scan(outer, jnp.zeros(shape, _F32), (sums, uo))
        d = fo.astype(_F32) * _after(oo.astype(_F32), 0)          # (nch, B, M, N)
        wts = (f * _after(o, 1) * d[:, None]).reshape((nch * c,) + shape)[:k]
    return jnp.moveaxis(wts, 0, -1)


def _tree_paths(k: int, immediate: bool):
    """For each product of the pairwise order's K steps (:func:`emul_jax.accumulate._tree_schedule`:
    T = K steps, row t adds x + y): the steps on its path to the result, as indices into the
    stacked factors (fx, fy, 1) — ``side * T + t`` for the side (x 0, y 1) by which it (or the node
    holding it) enters step t, padded with ``2 * T`` (the factor 1). ``immediate``: the first step
    only. A static (K, D) int32 table."""
    sched = _tree_schedule(k)
    T = len(sched)
    enters = {}                                   # ("p", product) / ("n", slot) -> (step, side)
    for t, (px, ix, py, iy, _) in enumerate(sched):
        enters[("p" if px else "n", int(ix))] = (t, 0)
        enters[("p" if py else "n", int(iy))] = (t, 1)
    paths = []
    for j in range(k):
        t, side = enters[("p", j)]
        path = [side * T + t]
        while not immediate and t != T - 1:
            t, side = enters[("n", int(sched[t, 4]))]
            path.append(side * T + t)
        paths.append(path)
    d = max(len(p) for p in paths)
    return np.array([p + [2 * T] * (d - len(p)) for p in paths], np.int32)


def _tree_factors(A, Bm, spec: GemmSpec, key):
    """(fx, fy), bool (T, B, M, N): the factor of each step's x and y operand in the pairwise
    accumulation of A (B, M, K) @ Bm (B, K, N), replayed step by step (the forward's exact sums,
    roundings and SR words: :class:`emul_jax.accumulate._Exact`, the lane the pairwise order runs
    on). Step t computes n = Q(x + y) with word u_t; the factor of x is 0 where x != 0 and
    n == Q(0 + y) (x swamped: the step gives what y alone gives, same word), or where the step
    overflowed (n not finite, or the float32-rounded exact x + y exceeds the format's max); else 1
    (y: the same with x and y swapped). Equal values compare equal (+0 == -0)."""
    acc = spec.accumulator
    cfg = _acc_config(acc.format, spec.product, spec.product_rounding, acc.rounding, acc.overflow, "pairwise",
                      None, None, acc.sr_bits, acc.sr_method)
    lane = _AccExact(cfg)
    sp, sp32 = cfg.acc, R.spec("fp32")
    nb, m, k = A.shape
    shape = (nb, m, Bm.shape[-1])
    u, _ = _sr_words(sp, shape + (k,), key() if acc.stochastic else None, None)
    uk = None if u is None else jnp.moveaxis(u, -1, 0)
    operands = lane.operands(A, Bm)
    zero = _E.code_parts(sp, jnp.zeros(shape, jnp.uint32))
    big = u32(int(np.float32(acc.format.max).view(np.uint32)))

    def term(is_prod, idx, buf):
        opk = jax.tree_util.tree_map(lambda x: lax.dynamic_index_in_dim(x, jnp.minimum(idx, k - 1), keepdims=False),
                                     operands)
        p, _ = lane.product(opk)
        c = lane.state(sp, lax.dynamic_index_in_dim(buf, idx, keepdims=False))
        return _E.Parts(*(jnp.where(is_prod != 0, a, b) for a, b in zip(p, c)))

    def nonzero(x):
        return (x.kind != u32(_E.FINITE)) | (x.hi != u32(0)) | (x.lo != u32(0)) | x.sticky

    def same(bx, by):
        return (bx == by) | (((bx | by) & u32(ABS)) == u32(0))

    def body(buf, inp):
        row, w = inp
        x, y = term(row[0], row[1], buf), term(row[2], row[3], buf)
        new, _ = lane.add(sp, x, y, w)
        vals = [R.code_to_f32_bits(sp, c) for c in (new, lane.add(sp, zero, x, w)[0], lane.add(sp, zero, y, w)[0])]
        wide = R.code_to_f32_bits(sp32, lane.add(sp32, x, y, None)[0])
        over = ((vals[0] & u32(ABS)) >= u32(EXP)) | ((wide & u32(ABS)) > big)
        fx = ~((nonzero(x) & same(vals[0], vals[2])) | over)
        fy = ~((nonzero(y) & same(vals[0], vals[1])) | over)
        return lax.dynamic_update_index_in_dim(buf, new, row[4], 0), (fx, fy)

    buf = jnp.zeros((k + 1,) + shape, jnp.uint32)      # slot k: init, +0
    _, (fx, fy) = lax.scan(body, buf, (jnp.asarray(_tree_schedule(k)), uk))
    return fx, fy


def _tree_weights(A, Bm, spec: GemmSpec, key):
    """d S / d p_k of the pairwise order (B, M, N, K): the product over the steps of the path of
    product k (:func:`_tree_paths`) of the factor by which it (or its node) enters that step
    (:func:`_tree_factors`); ``"immediate"``: the first step's factor only."""
    fx, fy = _tree_factors(A, Bm, spec, key)
    f = jnp.concatenate([fx, fy, jnp.ones((1,) + fx.shape[1:], bool)]).astype(_F32)
    paths = _tree_paths(A.shape[-1], spec.accumulator.ste == "immediate")
    wts = jnp.take(f, paths[:, 0], axis=0)
    for d in range(1, paths.shape[1]):
        wts = wts * jnp.take(f, paths[:, d], axis=0)
    return jnp.moveaxis(wts, 0, -1)


def _ste_grads(kind, spec: GemmSpec, va, vb, g_l, g_r, l_full, r_full, acc_key):
    """(d lhs, d rhs) of the dot_general ``kind`` (a :class:`_Dot`) whose forward accumulated
    va · vb under ``spec``: d lhs[m, k] = sum over n of W[m, n, k] · g_l[m, n] · r_full[k, n] and
    d rhs[k, n] = sum over m of W[m, n, k] · g_r[m, n] · l_full[m, k] (per batch, in the canonical
    layout; float32 einsums at HIGHEST), W = d S / d p_k of :func:`_step_weights`."""
    A, Bm = kind.canonical(FWD, va, vb)
    wts = _step_weights(A, Bm, spec, acc_key)
    nb, m, _ = A.shape
    n = Bm.shape[-1]
    x1, w1 = kind.canonical(FWD, l_full, r_full)
    g1, g2 = g_l.reshape(nb, m, n), g_r.reshape(nb, m, n)
    dl = jnp.einsum("bmnk,bmn,bkn->bmk", wts, g1, w1, precision=_HI)
    dr = jnp.einsum("bmnk,bmn,bmk->bkn", wts, g2, x1, precision=_HI)
    return kind.uncanonical(DLHS, dl), kind.uncanonical(DRHS, dr)


def _ste_backward(kind, cfg, a, b, gd, wd, xr, gr, acc_key):
    """(d lhs, d rhs) under ``cfg.fwd.accumulator.ste`` "immediate"/"recursive": the forward
    GEMM's values (scales factored out as the forward did) replayed for the weights, the output
    gradients ``gd`` (for d lhs) / ``gr`` (for d rhs) and the backward operands ``wd``/``xr`` with
    their scales folded in."""
    out_nd = len(kind.out_shape)
    va, _ = _split_scale(a, kind.out_map(FWD, 0), out_nd)
    vb, _ = _split_scale(b, kind.out_map(FWD, 1), out_nd)

    def full(vs):
        v, s = vs
        return v if s is None else _ftz(v * s)

    if isinstance(kind, _Conv):
        return kind.ste(cfg.fwd, va, vb, full(gd), full(gr), full(xr), full(wd), acc_key)
    return _ste_grads(kind, cfg.fwd, va, vb, full(gd), full(gr), full(xr), full(wd), acc_key)


# -- public functions ---------------------------------------------------------------------------------

def _float_operand(x, name):
    x = x if isinstance(x, (jax.Array, jax.core.Tracer)) else jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name}: dtype {x.dtype} is not a float dtype (float32, bfloat16, float16)")
    if np.dtype(x.dtype).itemsize > 4:
        raise TypeError(f"{name}: dtype {x.dtype}: emul_jax computes in float32 (jax_enable_x64 is not supported)")
    return x


def _check_cfg(cfg):
    if not isinstance(cfg, DotConfig):
        raise TypeError(f"cfg={cfg!r}: expected a DotConfig (e.g. emul_jax.ops.fp32(), w8a8g8(), recipe('...'))")


def _call(kind, cfg, lhs, rhs, key, preferred_element_type, out_sharding):
    if key is None and cfg.needs_key:
        raise ValueError("key=None, but cfg draws random bits (stochastic rounding or MVUE); pass key= "
                         "(one jax.random.key per call)")
    k = None if key is None else _as_key(key)
    y = _qop_jit(kind, cfg, lax.convert_element_type(lhs, _F32), lax.convert_element_type(rhs, _F32), k)
    dtype = jnp.result_type(lhs.dtype, rhs.dtype) if preferred_element_type is None else preferred_element_type
    y = y.astype(dtype)
    if out_sharding is not None:
        y = jax.sharding.reshard(y, out_sharding)
    return y


def dot_general(lhs, rhs, dimension_numbers, cfg: DotConfig, *, key=None, precision=None,
                preferred_element_type=None, out_sharding=None):
    """``lax.dot_general`` whose three GEMMs follow ``cfg`` (a :class:`DotConfig`), as a
    ``jax.custom_vjp``.

    Forward: the operands prepared by ``cfg.fwd`` (sparsity, scaling, rounding), multiplied at
    ``Precision.HIGHEST`` or accumulated by ``cfg.fwd.accumulator``; scales of ``"absmax"``
    operands multiply the result. Backward: the output gradient prepared by ``cfg.dlhs.lhs``
    (and ``cfg.drhs.rhs`` under bifurcation), the gradients w.r.t. ``lhs`` and ``rhs`` computed
    by the ``dlhs`` and ``drhs`` GEMMs; quantizers and masks are straight-through (dense
    gradients). ``key`` (a ``jax.random.key``; needed when ``cfg.needs_key``) gets no gradient.

    Operands are computed in float32 (bfloat16/float16 are widened exactly); the result has
    ``preferred_element_type`` or the operands' result type. ``precision`` is accepted for
    Flax's sake and ignored: ``cfg`` decides the arithmetic. ``out_sharding``: the result is
    resharded to it.
    """
    del precision
    _check_cfg(cfg)
    lhs = _float_operand(lhs, "lhs")
    rhs = _float_operand(rhs, "rhs")
    try:
        (lc, rc), (lb, rb) = dimension_numbers
        norm = lambda dims, nd: tuple(int(d) % nd if nd else int(d) for d in dims)  # noqa: E731
        lc, lb = norm(lc, lhs.ndim), norm(lb, lhs.ndim)
        rc, rb = norm(rc, rhs.ndim), norm(rb, rhs.ndim)
    except (TypeError, ValueError):
        raise ValueError(f"dimension_numbers={dimension_numbers!r}: expected ((lhs_contracting, rhs_contracting), "
                         "(lhs_batch, rhs_batch))") from None
    jax.eval_shape(lambda a, b: lax.dot_general(a, b, ((lc, rc), (lb, rb))),
                   jax.ShapeDtypeStruct(lhs.shape, _F32), jax.ShapeDtypeStruct(rhs.shape, _F32))
    kind = _Dot(tuple(lhs.shape), tuple(rhs.shape), lc, rc, lb, rb)
    return _call(kind, cfg, lhs, rhs, key, preferred_element_type, out_sharding)


def _conv_kind(lhs_shape, rhs_shape, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
               feature_group_count, batch_group_count) -> _Conv:
    """The static geometry of a conv_general_dilated call (lax's arguments; shapes validated by lax)."""
    nsp = len(lhs_shape) - 2
    if nsp < 0 or len(rhs_shape) != len(lhs_shape):
        raise ValueError(f"conv_general_dilated: lhs and rhs need the same rank >= 2, got {tuple(lhs_shape)} "
                         f"and {tuple(rhs_shape)}")
    strides = tuple(int(s) for s in window_strides)
    lhs_dil = (1,) * nsp if lhs_dilation is None else tuple(int(d) for d in lhs_dilation)
    rhs_dil = (1,) * nsp if rhs_dilation is None else tuple(int(d) for d in rhs_dilation)
    dn = lax.conv_dimension_numbers(lhs_shape, rhs_shape, dimension_numbers)
    if isinstance(padding, str):
        if any(d != 1 for d in lhs_dil):
            raise ValueError("padding: string padding with lhs_dilation is not supported (as lax); give (lo, hi) pairs")
        kshape = [rhs_shape[d] for d in dn.rhs_spec[2:]]
        eff = [(k - 1) * r + 1 for k, r in zip(kshape, rhs_dil)]
        pads = lax.padtype_to_pads([lhs_shape[d] for d in dn.lhs_spec[2:]], eff, strides, padding)
    else:
        pads = padding
    pads = tuple((int(lo), int(hi)) for lo, hi in pads)
    out = jax.eval_shape(
        lambda a, b: lax.conv_general_dilated(a, b, strides, pads, lhs_dil, rhs_dil, dn, feature_group_count,
                                              batch_group_count),
        jax.ShapeDtypeStruct(lhs_shape, _F32), jax.ShapeDtypeStruct(rhs_shape, _F32))
    return _Conv(tuple(lhs_shape), tuple(rhs_shape), tuple(out.shape), strides, pads, lhs_dil, rhs_dil,
                 tuple(dn.lhs_spec), tuple(dn.rhs_spec), tuple(dn.out_spec), int(feature_group_count),
                 int(batch_group_count))


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, batch_group_count=1, cfg: DotConfig = None, *,
                         key=None, precision=None, preferred_element_type=None, out_sharding=None):
    """``lax.conv_general_dilated`` whose three GEMMs follow ``cfg``, as a ``jax.custom_vjp``
    (same arguments as lax, plus ``cfg`` and ``key``; see :func:`dot_general`).

    The GEMMs of a convolution: forward Y = conv(X, W); ``dlhs`` dX = the transposed convolution
    of G with W; ``drhs`` dW = the correlation of X with G. With ``accumulator=None`` each is the
    XLA convolution at ``Precision.HIGHEST`` (the backward ones are what ``jax.vjp`` of
    ``lax.conv_general_dilated`` computes). With an emulated accumulator they are matmuls through
    :func:`emul_jax.accumulate.matmul`: forward over im2col columns (reduction: input channel
    outermost, then the kernel taps in C order, as :func:`emul.conv2d`); dX as the convolution of
    G (dilated by the strides) with the flipped kernel, reduction over output channels then taps;
    dW over (sample, output position), sample outermost. Padding and dilation holes contribute +0
    products like any other step. ``batch_group_count`` g > 1: lax's groups are g runs of N/g
    consecutive samples, group i feeding output features i·O/g … (i+1)·O/g − 1; the three GEMMs
    are those of the equivalent convolution with g feature groups of x' (N/g, g·C, …),
    x'[n, i·C + c] = x[i·N/g + n, c] (so dW sums over the N/g samples of a group, sample
    outermost). A non-identity accumulator STE (``"immediate"``, ``"recursive"``) gives the
    gradients the dot_general STE gives for the forward's im2col GEMM (the weight matrix of each
    group broadcast over the samples, times the im2col columns, batched over (sample, group)),
    mapped back to X and W by the transposes of im2col and of the broadcast.
    """
    del precision
    _check_cfg(cfg)
    lhs = _float_operand(lhs, "lhs")
    rhs = _float_operand(rhs, "rhs")
    kind = _conv_kind(lhs.shape, rhs.shape, window_strides, padding, lhs_dilation, rhs_dilation,
                      dimension_numbers, feature_group_count, batch_group_count)
    return _call(kind, cfg, lhs, rhs, key, preferred_element_type, out_sharding)

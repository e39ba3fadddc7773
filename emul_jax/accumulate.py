"""dot, matmul, conv2d with an emulated low-precision accumulator, in pure JAX, bit for bit as emul.

Same names, arguments and semantics as :mod:`emul.accumulate` (``docs/accumulators.md``):
products exact (or rounded once to ``product``), then summed in the accumulator format ``acc`` with
one rounding and one overflow check per addition, in the order ``order`` says (``"sequential"``,
``"pairwise"``, ``"chunked"`` with ``chunk`` and ``outer``), from ``init`` or +0. Stochastic
rounding: output element j (C order) uses the words ``j*T … j*T+T-1`` in the order of its T rounding
steps — ``key=jax.random.key(s)`` draws ``jax.random.bits(key, out.shape + (T,), uint32)``, the
same words as the core's ``seed=s``.

An accumulator is never an XLA ``dot`` (whose summation order is unspecified) nor float arithmetic
(XLA CPU flushes float32 subnormals and contracts ``a*b + c``): every step forms the exact sum of
the running value and the new term with integer operations on ``uint32``/``int32`` lanes and rounds
it once with emul_jax's one rounding primitive (:func:`emul_jax._round.round_parts`). The K steps
run as a ``lax.scan``, vectorised over all outputs (pairwise: one vectorised step per tree level).

Three ways to form the exact sum, which give the same bits:

- the general path: :mod:`emul_jax._exact` — exact products (``mul_parts``) and exact sums
  (``add_parts``) of multi-word magnitudes; any operands, any format, every order;
- the integer fast path, for sequential and chunked orders into accumulators whose range is
  narrow enough (e4m7 and smaller floats under nearest rounding, fixed point up to about 24 bits):
  every value is an ``int32`` on one fixed grid ``2**g`` below the accumulator's finest quantum,
  terms finer than the grid are rounded to odd on it (their low bits OR-ed into the last one), and
  terms far beyond the range are clamped (saturating and float formats) or reduced modulo
  ``2**(bits+1)`` lsb keeping their sign (wrapping formats). Rounding to odd at two bits below the
  quantum (one for directed modes, ``sr_bits + 1`` for SR) changes neither the rounding decision
  nor zero-ness nor the sign of a sum with a value on the accumulator's grid — the classic
  round-to-odd argument — so the primitive rounds the grid value to the same code. Products are
  formed as one float32 multiply, which is exact only for operands whose significands together
  have at most 24 bits and whose products stay normal: a data-dependent check (``_fast_ok``, on bit
  patterns) chooses the path at run time with ``lax.cond`` (under ``vmap`` with batched operands,
  both paths run and a select picks);
- the exact-product lane, for the sequential order without ``product=`` into the same
  accumulators (:class:`_XGrid`): when every product of the call is an exact multiple of a fixed
  grid ``2**g`` (floats: ``g = emax - 27``, the finest grid whose sums fit int32 — e4m3fn × e4m3fn
  products, multiples of 2**-18, into e4m7's 2**-20; fixed point: the lsb), checked once per call
  on the operands' bit patterns (:func:`_exact_ok`), terms are exact int32 grid values and the
  running sum stays one: a fixed-point step is an add and a clamp (or the saturate rule's values,
  or a wrap), a float step rounds the exact sum with the primitive's on-grid entry
  :func:`emul_jax._round.round_grid`, an overflow to inf/NaN parks the sum at ``±big`` (absorbing)
  and the sign of a zero rides in bit 0 (free: every running sum is a multiple of the format's
  finest quantum, two or more grid units). About 30 lane operations per MAC for e4m7 (the
  round-to-odd path: 85), 16 for int12. The run-time choice is one ``lax.switch`` over the lanes.

Gradients are straight-through: the derivative of the plain float32 matmul (d out = da·b + a·db,
``+ d init``), computed with ``precision=HIGHEST``; the roundings count as the identity.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import checkify

from emul._kernels import slots as K
from emul.accumulate import _Config as _CoreConfig, _pair, sr_steps
from emul.quantize import _fits_float32
from emul.rounding import Rounding

from . import _exact as E
from . import _round as R
from ._bits import (ABS, EXP, FRAC, HIDDEN, I32, U32, as_i32, as_u32, bit_length, f32_bits, f32_from_bits, i32,
                    low_bits_nonzero, shl, shr, u32)
from .quantize import _input, _is_traced, _round as _quantize_codes, _sr_words

__all__ = ["dot", "matmul", "conv2d", "sr_steps"]

FINITE, INF, NAN = E.FINITE, E.INF, E.NAN
# Error flags per output element, as the core's kernel (the first error of an element counts).
ACC_NAN, ACC_INF, PROD_NAN, PROD_INF = 1, 2, 3, 4


# -- configuration --------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Grid:
    """The integer fast path of one format: values are int32 multiples of ``2**g``; a term of
    magnitude ``2**cap`` grid units or more is clamped to ``2**cap`` (``wrap`` False) or reduced to
    ``(|v| mod 2**cap) + 2**cap`` with its sign (``wrap``: ``2**cap`` is ``2**(bits+1)`` lsb)."""

    g: int
    cap: int
    wrap: bool


def _grid_for(sp: R.RoundSpec) -> _Grid | None:
    """The fast path's grid for this format and mode, or None when a sum may exceed int32."""
    P = sp.P
    # round to odd this many bits below the finest quantum: nearest modes need 2 (a tie stays
    # distinguishable from its neighbours), directed ones 1, SR sr_bits + 1 (t = floor(f * 2**r))
    jam = sp.sr_bits + 1 if sp.stochastic else (2 if sp.mode_bits[0] else 1)
    if sp.is_float:
        g = P[K.EMIN] - P[K.M] - jam              # the finest quantum is 2**(emin - man_bits)
        cap = P[K.EMAX] + 2 - g                   # |term| >= 2**(emax+2): the sum overflows anyway
        span = cap + 1                            # |acc| < 2**(emax+1) = 2**(cap-1): |sum| < 2**(cap+1)
        wrap = False
        # the sums go to R.round_f32 as float32 patterns, rounded to odd at 24 bits: that needs
        # jam spare bits below the format's quantum (23 - man_bits of them) and every value, down
        # to 2**g, a normal float32
        if not R.fast_f32(sp) or 23 - P[K.M] < jam or g < -126:
            return None
        span += 1  # the float32 conversion of a sum (see _FastFloat.add) needs |sum| < 2**30
    else:
        g = -P[K.FRAC] - jam
        cap = sp.bits + 1 + jam                   # 2**(bits+1) lsb: beyond every fixed range
        wrap = P[K.RULE] in (K.RULE_WRAP, K.RULE_WRAP_SM)
        span = cap + 2 if wrap else cap + 1       # |acc| < 2**(cap-1); reduced terms < 2**(cap+1)
    if span > 31:
        return None
    return _Grid(g, cap, wrap)


@dataclasses.dataclass(frozen=True)
class _XGrid:
    """The exact-product lane of one accumulator: every product of the call is an exact multiple
    of ``2**g`` (checked at run time: :func:`_exact_ok`), so terms are exact int32 grid values
    (floats: clamped to ``±2**clamp`` first, in float32, which keeps the result: such a term
    overflows the sum either way; fixed point, ``clamp == -1``: none, the check bounds the products)
    and the running sum is an int32 grid value too — no round to odd, no conversion per step.

    Floats: the sum goes to :func:`emul_jax._round.round_grid`; an overflow to a finite value
    continues from it, one to inf/NaN parks the sum at ``±big`` (absorbing: ``big - clamp`` still
    overflows, ``big + 2**clamp < 2**31``), decoded at the end as ``ovf_bits``. Fixed point (the grid is
    the lsb: sums need no rounding at all): out-of-range sums become ``vpos``/``vneg`` (a clamp
    when those are the range's ends) or wrap modulo ``2**bits``."""

    g: int
    clamp: int                       # log2 of the product clamp, or -1 for none
    big: int = 0                     # floats: the parked magnitude of an inf/NaN running sum
    ovf: tuple = ()                  # floats: (pos, neg) magnitude after an overflow (finite, or big)
    ovf_bits: tuple = ()             # floats: (pos, neg) float32 patterns of a parked sum
    lo: int = 0                      # fixed: the signed range [lo, hi] and what lies beyond it
    hi: int = 0
    vneg: int = 0
    vpos: int = 0
    wrap: bool = False


def _xgrid_for(sp: R.RoundSpec) -> _XGrid | None:
    """The exact-product lane of this accumulator, or None where it does not apply."""
    P = sp.P
    if sp.is_float:
        m, emax = P[K.M], P[K.EMAX]
        g = emax - 27                 # |sum| < 2**(emax+1) + 2**(emax+2) + parked 2**(emax+3) < 2**31
        if m < 1 or g >= P[K.EMIN] - m or sp.qe_sub < -126:  # >= : bit 0 of a running sum is free
            return None
        big = 1 << (emax + 3 - g)
        ovf, ovf_bits = [], []
        for pos, neg_slot, sign in ((K.OVF_POS, K.INF_POS, 0), (K.OVF_NEG, K.INF_NEG, 1)):
            code = P[pos] & sp.mask
            vb = R._value_bits(sp, code)
            a = vb & ABS
            if a < EXP:               # a finite overflow value: the sum continues from it
                v = float(np.uint32(a).view(np.float32)) * 2.0 ** -g
                ovf.append(int(v))
            else:                     # inf or NaN: the core's later steps keep its special code
                special = (P[neg_slot] & sp.mask) if a == EXP else (sp.nan_codes or (None, None))[sign]
                if special is None or R._value_bits(sp, special) != vb:
                    return None
                ovf.append(big)
            ovf_bits.append(vb)
        return _XGrid(g, emax + 2 - g, big, tuple(ovf), tuple(ovf_bits))
    rule, bits = P[K.RULE], sp.bits
    if rule == K.RULE_WRAP_SM or bits > 24:
        return None
    signed = bool(P[K.SIGNED])

    def val(code):
        code &= sp.mask
        return code - (1 << bits) if signed and code >> (bits - 1) else code

    hi, lo = P[K.MAXRAW], -P[K.NEGMAG]
    vpos, vneg = val(P[K.INF_POS]), val(P[K.INF_NEG])
    if rule == K.RULE_SAT_SYM and signed:  # the most negative code is never produced
        if vneg != -hi:
            return None
        lo = -hi
    wrap = rule == K.RULE_WRAP
    # no product clamp: _exact_ok requires |products| < 2**30 lsb (exact in int32, and with
    # |running sum| < 2**24 no int32 overflow); larger ones take the round-to-odd path
    return _XGrid(-P[K.FRAC], -1, lo=lo, hi=hi, vneg=vneg, vpos=vpos, wrap=wrap)


@dataclasses.dataclass(frozen=True)
class _Cfg:
    """Everything static about a call (hashable: the jit cache key)."""

    order: str
    chunk: int
    acc: R.RoundSpec
    outer: R.RoundSpec
    product: R.RoundSpec | None
    grids: tuple | None   # (grid of acc, grid of outer) when the integer fast path may run
    xgrid: "_XGrid | None" = None  # the exact-product lane (sequential, no product rounding)

    @property
    def final(self) -> R.RoundSpec:
        return self.outer if self.order == "chunked" else self.acc


def _spec(fmt, mode, ovf, r, compare, what) -> R.RoundSpec:
    try:
        sp = R.spec(fmt, mode, ovf, r or None, "compare" if compare else "add")
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None
    if not _fits_float32(sp.fmt):
        raise ValueError(f"{what}: values of {sp.fmt.name} do not fit float32 exactly; emul_jax computes in "
                         "32-bit lanes and returns float32 (jax_enable_x64 is not supported): use emul (the "
                         "NumPy core) for this format")
    return sp


def _config(acc, product, product_rounding, rounding, overflow, order, chunk, outer, sr_bits, sr_method) -> _Cfg:
    # the core validates every argument and words every error; then the 32-bit limits of emul_jax
    core = _CoreConfig(acc, product, product_rounding, rounding, overflow, order, chunk, outer, sr_bits, sr_method)
    sp_acc = _spec(core.acc, core.mode, core.ovf, core.r, core.compare, "acc")
    sp_out = sp_acc
    if order == "chunked" and core.outer is not core.acc:
        sp_out = _spec(core.outer, core.mode, core.outer_ovf, core.r, core.compare, "outer")
    sp_prod = None
    if core.product is not None:
        sp_prod = _spec(core.product, core.product_mode, core.product_ovf, 0, False, "product")
    grids = None
    if order in ("sequential", "chunked"):
        ga, go = _grid_for(sp_acc), _grid_for(sp_out)
        if ga is not None and go is not None and sp_acc.is_float == sp_out.is_float:
            grids = (ga, go)
    xgrid = _xgrid_for(sp_acc) if order == "sequential" and sp_prod is None else None
    return _Cfg(order, core.chunk, sp_acc, sp_out, sp_prod, grids, xgrid)


def _is_down(sp: R.RoundSpec) -> bool:
    return sp.rounding == Rounding.DOWN


def _wrap_frac(sp: R.RoundSpec):
    if not sp.is_float and sp.P[K.RULE] in (K.RULE_WRAP, K.RULE_WRAP_SM):
        return sp.P[K.FRAC]
    return None


# -- shared step pieces ---------------------------------------------------------------------------

def _first(flag, *new):
    """The first nonzero of flag, new[0], new[1], … (elementwise): an element keeps its first error.
    A flag may be None: statically no error (so the flag carry of a scan stays loop-invariant)."""
    fs = [f for f in (flag,) + new if f is not None]
    if not fs:
        return None
    out = fs[-1]
    for f in reversed(fs[:-1]):
        out = jnp.where(f != 0, f, out)
    return out


def _first_along(flags, axis=0):
    """The first nonzero flag along ``axis`` (0 where there is none)."""
    if flags is None:
        return None
    idx = jnp.argmax(flags != 0, axis=axis)
    return jnp.take_along_axis(flags, jnp.expand_dims(idx, axis), axis=axis).squeeze(axis)


def _special_sum(xk, xs, yk, ys):
    """(kind, sign) of x + y when either is not finite (the core's sum_exact: x's NaN first, then
    y's, inf - inf is +NaN, else the infinity). A kind None is statically finite."""
    if yk is None:
        return xk, xs
    if xk is None:
        return yk, ys
    xn, yn = xk == u32(NAN), yk == u32(NAN)
    xi, yi = xk == u32(INF), yk == u32(INF)
    clash = xi & yi & (xs != ys)
    kind = jnp.where(xn | yn | clash, u32(NAN), jnp.where(xi | yi, u32(INF), u32(FINITE)))
    sign = jnp.where(xn, xs, jnp.where(yn, ys, jnp.where(clash, u32(0), jnp.where(xi, xs, ys))))
    return kind, sign


def _finish(sp, kind, sign, code, flag_nan, flag_inf):
    """Codes of results of this kind: the rounded ``code`` where finite, the special code (as the
    core's special_code) elsewhere; and the error flag of results the format cannot take (None
    when there can be none: the kind is statically finite, or the format takes NaN and inf)."""
    if kind is None:
        return code, None
    special = kind != u32(FINITE)
    is_nan = kind == u32(NAN)
    out = jnp.where(special, R.special_code(sp, sign, is_nan), code)
    flag = None
    if sp.nan_codes is None:
        flag = jnp.where(is_nan, i32(flag_nan), i32(0))
    if _wrap_frac(sp) is not None:
        flag = jnp.where(kind == u32(INF), i32(flag_inf), i32(0) if flag is None else flag)
    return out, flag


def _zero_sign(sp, xs, ys):
    """Sign of an exact zero sum of operands with signs xs, ys (uint32 0/1; IEEE 754 §6.3): the
    common sign when they agree, else + (- when rounding down)."""
    return (xs | ys) if _is_down(sp) else (xs & ys)


# -- the general path: exact parts (emul_jax._exact) --------------------------------------------

def _bcast_parts(p: E.Parts, shape) -> E.Parts:
    return E.Parts(*(jnp.broadcast_to(v, shape) for v in p))


class _Exact:
    """Steps on :class:`emul_jax._exact.Parts`: exact products and sums, rounded by the primitive."""

    def __init__(self, cfg: _Cfg):
        self.cfg = cfg

    def operands(self, a, b):
        """Per-k operand data: (K, nb, M) and (K, nb, N) Parts (float32 or integer operands)."""
        pa = E.operand_parts(jnp.moveaxis(a, -1, 0))
        pb = E.operand_parts(jnp.moveaxis(b, -2, 0))
        return pa, pb

    def product(self, opk):
        """(term, flag) of the products a[:, i, k] * b[:, k, j] for all (batch, i, j)."""
        pa, pb = opk
        shape = pa.sign.shape + pb.sign.shape[-1:]
        x = _bcast_parts(E.Parts(*(v[..., :, None] for v in pa)), shape)
        y = _bcast_parts(E.Parts(*(v[..., None, :] for v in pb)), shape)
        p = E.mul_parts(x, y)
        sp = self.cfg.product
        if sp is None:
            return p, None
        code = R.round_parts(sp, p.sign, p.hi, p.lo, p.e, None, None)
        code, flag = _finish(sp, p.kind, p.sign, code, PROD_NAN, PROD_INF)
        return E.code_parts(sp, code), flag

    def init_state(self, sp, codes):
        return codes

    def values(self, sp, state):
        return R.code_to_f32_bits(sp, state)

    def state(self, sp, code):
        return E.code_parts(sp, code)

    def convert(self, sp_src, sp_dst, code):
        return E.code_parts(sp_src, code)

    def add(self, sp, x: E.Parts, y: E.Parts, u):
        """(code, flag): x + y rounded once to sp (the core's ``step``)."""
        s = E.add_parts(x, y, down=_is_down(sp), wrap_frac=_wrap_frac(sp))
        code = R.round_parts(sp, s.sign, s.hi, s.lo, s.e, s.sticky, u)
        return _finish(sp, s.kind, s.sign, code, ACC_NAN, ACC_INF)


# -- the integer fast path ------------------------------------------------------------------------

class _GTerm(NamedTuple):
    """A term on a grid: kind (uint32, or None: statically finite), sign (uint32; the sign of a
    zero too), v (int32, signed, in units of 2**g, rounded to odd and clamped/reduced as _Grid
    says) and, for the running sum of a float accumulator, bits (its float32 value pattern)."""

    kind: jax.Array | None
    sign: jax.Array
    v: jax.Array
    bits: jax.Array | None = None


def _grid_magnitude(G: _Grid, mag, sh):
    """Magnitude ``mag * 2**sh`` (uint32 below 2**24, sh int32) in grid units: rounded to odd,
    then clamped or reduced (int32, nonnegative)."""
    left = shl(mag, sh)                               # mod 2**32: enough for the reduction
    right = shr(mag, -sh)
    inexact = (sh < 0) & low_bits_nonzero(None, mag, -sh)
    v = jnp.where(sh >= 0, left, right)
    big = (mag != u32(0)) & (bit_length(None, mag) - 1 + sh >= G.cap)
    top = u32(1 << G.cap)
    if G.wrap:
        v = jnp.where(big, (v & u32((1 << G.cap) - 1)) | top, v) | as_u32(inexact)
    else:
        v = jnp.where(big, top, v | as_u32(inexact))
    return as_i32(v)


def _signed(sign, v):
    return jnp.where(sign != u32(0), -v, v)


def _parts_term(G: _Grid, p: E.Parts) -> _GTerm:
    """An exact one-word Parts (a decoded code or value) as a term on the grid G."""
    return _GTerm(p.kind, p.sign, _signed(p.sign, _grid_magnitude(G, p.lo, p.e - i32(G.g))))


class _FastBase:
    """Steps on int32 grid values (see the module docstring); products from one float32 multiply,
    exact because :func:`_fast_ok` held."""

    def __init__(self, cfg: _Cfg):
        self.cfg = cfg
        self.grid = {cfg.acc: cfg.grids[0], cfg.outer: cfg.grids[1]}

    def operands(self, a_bits, b_bits):
        """(K, nb, M) float32 and (K, nb, N) float32 scaled by 2**-g (exact: _fast_ok)."""
        g = self.cfg.grids[0].g
        a = f32_from_bits(jnp.moveaxis(a_bits, -1, 0))
        b = f32_from_bits(jnp.moveaxis(b_bits, -2, 0)) * np.float32(2.0 ** -g)
        return a, b

    def product(self, opk):
        a, b = opk
        q = a[..., :, None] * b[..., None, :]          # exact: a normal float32 (or ±0, ±inf)
        G = self.grid[self.cfg.acc]
        sign = f32_bits(q) >> u32(31)
        sp = self.cfg.product
        if sp is not None:  # round the exact product q * 2**g once, then place it on the grid
            qb = f32_bits(q) & u32(ABS)
            mag = jnp.where(qb == u32(0), u32(0), (qb & u32(FRAC)) | u32(HIDDEN))
            e = as_i32(qb >> u32(23)) - i32(150 - G.g)
            code = R.round_parts(sp, sign, None, mag, e, None, None)
            return _parts_term(G, E.code_parts(sp, code)), None
        # |q| truncated to an integer (exact: below 2**30, clamped or bounded by _fast_ok), then
        # rounded to odd: the magnitude's last bit OR-ed with "inexact"
        aq = jnp.abs(q)
        if not G.wrap:
            aq = jnp.minimum(aq, np.float32(2.0 ** G.cap))
        m = lax.convert_element_type(aq, I32)
        inexact = lax.convert_element_type(m, jnp.float32) != aq
        if G.wrap:  # reduce modulo 2**cap, keeping the sign and a magnitude above the sum's range
            m = jnp.where(m >= i32(1 << G.cap), (m & i32((1 << G.cap) - 1)) | i32(1 << G.cap), m)
        m = m | lax.convert_element_type(inexact, I32)
        return _GTerm(None, sign, jnp.where(sign != u32(0), -m, m)), None

    def _sum(self, sp, x, y):
        """(sign, magnitude) of the exact grid sum x.v + y.v (|sum| < 2**31: _grid_for)."""
        S = x.v + y.v
        neg = S < 0
        mag = as_u32(jnp.where(neg, -S, S))
        sign = as_u32(neg)
        if sp.is_float and sp.P[K.NEGZERO]:
            sign = jnp.where(S == 0, _zero_sign(sp, x.sign, y.sign), sign)
        return sign, mag


class _FastFixed(_FastBase):
    """Fixed-point accumulators: the running sum is its code; steps round with R.round_parts."""

    def init_state(self, sp, codes):
        return codes

    def values(self, sp, state):
        return R.code_to_f32_bits(sp, state)

    def state(self, sp, code):
        G = self.grid[sp]
        bits = sp.bits
        raw = as_i32(code << u32(32 - bits))
        raw = raw >> i32(32 - bits) if sp.P[K.SIGNED] else as_i32(code)
        return _GTerm(None, as_u32(raw < 0), raw << i32(-sp.P[K.FRAC] - G.g))

    def convert(self, sp_src, sp_dst, code):
        """A running sum of sp_src (a chunk sum) as a term on sp_dst's grid."""
        return _parts_term(self.grid[sp_dst], E.code_parts(sp_src, code))

    def add(self, sp, x: _GTerm, y: _GTerm, u):
        sign, mag = self._sum(sp, x, y)
        code = R.round_parts(sp, sign, None, mag, np.int32(self.grid[sp].g), None, u)
        kind, ssign = _special_sum(x.kind, x.sign, y.kind, y.sign)
        return _finish(sp, kind, ssign, code, ACC_NAN, ACC_INF)


class _FastFloat(_FastBase):
    """Float accumulators: the running sum is its float32 value pattern; the exact grid sum goes
    to the primitive's float32 entry :func:`emul_jax._round.round_f32` (``values=True``) rounded to
    odd at 24 bits, which keeps the result (23 - man_bits >= the guard bits: _grid_for)."""

    def init_state(self, sp, codes):
        return R.code_to_f32_bits(sp, codes)

    def values(self, sp, state):
        return state

    def state(self, sp, vb):
        G = self.grid[sp]
        a = vb & u32(ABS)
        kind = jnp.where(a > u32(EXP), u32(NAN), jnp.where(a == u32(EXP), u32(INF), u32(FINITE)))
        # exact: every value of the format is a normal float32 on the grid, below 2**30 units
        v = lax.convert_element_type(f32_from_bits(vb) * np.float32(2.0 ** -G.g), I32)
        return _GTerm(kind, vb >> u32(31), v, vb)

    def convert(self, sp_src, sp_dst, vb):
        return _parts_term(self.grid[sp_dst], E.f32_parts(vb))

    def add(self, sp, x: _GTerm, y: _GTerm, u):
        G = self.grid[sp]
        sign, mag = self._sum(sp, x, y)
        # the float32 pattern of mag * 2**g rounded to odd at 24 bits: the conversion rounds to
        # nearest; when that was inexact and gave an even significand, the odd neighbour on the
        # exact value's side is the one (of two consecutive floats, exactly one is odd)
        mi = as_i32(mag)                                           # < 2**30 (_grid_for)
        f = lax.convert_element_type(mi, jnp.float32)
        fb = f32_bits(f)
        back = lax.convert_element_type(f, I32)                    # exact: f <= 2**30
        fix = (back != mi) & ((fb & u32(1)) == u32(0))
        fb = jnp.where(fix, fb + jnp.where(back > mi, u32(0xFFFFFFFF), u32(1)), fb)
        # times 2**g: exact, every nonzero result is a normal float32 (_grid_for), 0 stays +0
        fb = f32_bits(f32_from_bits(fb) * np.float32(2.0 ** G.g))
        new = R.round_f32(sp, fb | (sign << u32(31)), u, values=True)
        if y.kind is None:  # an inf/NaN running sum stays what it is (the core's special_code of it)
            return jnp.where(x.kind != u32(FINITE), x.bits, new), None
        kind, ssign = _special_sum(x.kind, x.sign, y.kind, y.sign)
        special, flag = _finish(sp, kind, ssign, jnp.zeros_like(new), ACC_NAN, ACC_INF)
        return jnp.where(kind != u32(FINITE), R.code_to_f32_bits(sp, special), new), flag


class _ExactBase:
    """The exact-product lane (:class:`_XGrid`): products a·b·2**-g from one float32 multiply are
    integers (:func:`_exact_ok`), clamped in float32 (exact: a power of two) and converted."""

    def __init__(self, cfg: _Cfg):
        self.cfg = cfg
        self.X = cfg.xgrid

    def operands(self, a_bits, b_bits):
        a = f32_from_bits(jnp.moveaxis(a_bits, -1, 0))
        b = f32_from_bits(jnp.moveaxis(b_bits, -2, 0)) * np.float32(2.0 ** -self.X.g)
        return a, b

    def _term(self, q):
        if self.X.clamp >= 0:
            c = np.float32(2.0 ** self.X.clamp)
            q = jnp.minimum(jnp.maximum(q, -c), c)
        return lax.convert_element_type(q, I32)

    def state(self, sp, st):
        return st


class _ExactFixed(_ExactBase):
    """Fixed point on its lsb grid: the step is an int32 add, then a clamp (or the saturate rule's
    values) or a wrap — no rounding (the sum is exact)."""

    def product(self, opk):
        a, b = opk
        return self._term(a[..., :, None] * b[..., None, :]), None

    def init_state(self, sp, codes):
        bits = sp.bits
        if sp.P[K.SIGNED]:
            return as_i32(codes << u32(32 - bits)) >> i32(32 - bits)
        return as_i32(codes)

    def values(self, sp, st):
        return R.code_to_f32_bits(sp, as_u32(st) & u32(sp.mask))

    def add(self, sp, x, y, u):
        X = self.X
        S = x + y
        if X.wrap:
            if sp.P[K.SIGNED]:
                sh = i32(32 - sp.bits)
                return (S << sh) >> sh, None
            return S & i32(sp.mask), None
        if (X.vneg, X.vpos) == (X.lo, X.hi):
            return jnp.minimum(jnp.maximum(S, i32(X.lo)), i32(X.hi)), None
        return jnp.where(S > i32(X.hi), i32(X.vpos), jnp.where(S < i32(X.lo), i32(X.vneg), S)), None


class _ExactFloat(_ExactBase):
    """Float accumulators: the running sum is one int32 ``w``: its grid value (a multiple of the
    format's finest quantum, ``2**D`` units with ``D >= 1``: bit 0 is free) with the sign of a zero
    in bit 0 — one carry, so the scan's body stays one fusion. Each step rounds the exact sum with
    :func:`emul_jax._round.round_grid`."""

    def product(self, opk):
        a, b = opk
        q = a[..., :, None] * b[..., None, :]          # an exact integer (or ±0)
        return (self._term(q), f32_bits(q) >> u32(31)), None

    def init_state(self, sp, codes):
        vb = R.code_to_f32_bits(sp, codes)             # finite (_exact_ok): a normal float32 or ±0
        v = lax.convert_element_type(f32_from_bits(vb) * np.float32(2.0 ** -self.X.g), I32)
        return v | as_i32(vb >> u32(31))

    def values(self, sp, w):
        X = self.X
        zs = as_u32(w & i32(1))
        v = w & i32(-2)
        mag = jnp.abs(v)
        fb = f32_bits(lax.convert_element_type(mag, jnp.float32)) + u32(X.g << 23)  # exact: few bits
        fb = jnp.where(mag == i32(0), u32(0), fb)
        sign = jnp.where(v == i32(0), zs, as_u32(v < i32(0)))
        parked = jnp.where(sign != u32(0), u32(X.ovf_bits[1]), u32(X.ovf_bits[0]))
        return jnp.where(mag >= i32(X.big), parked, fb | (sign << u32(31)))

    def add(self, sp, w, y, u):
        X = self.X
        t, ts = y
        S = (w & i32(-2)) + t
        neg = S < i32(0)
        sign = as_u32(neg)
        r, over = R.round_grid(sp, as_u32(jnp.abs(S)), sign, X.g, u)
        op, on = X.ovf
        ovf = i32(op) if op == on else jnp.where(neg, i32(on), i32(op))
        r = jnp.where(over, ovf, as_i32(r))
        new = jnp.where(neg, -r, r)
        if sp.P[K.NEGZERO]:  # bit 0: the sign of a zero result (x's bit 0 is the sign of a nonzero x too)
            if _is_down(sp):
                new = new | as_i32(jnp.where(S == i32(0), (as_u32(w) | ts) & u32(1), sign))
            else:  # an exact zero is -0 iff both terms are negative (or -0); then S <= 0, and S < 0
                # sets the bit anyway, so no test of S == 0 is needed
                new = new | as_i32((as_u32(w) & ts) | sign)
        return new, None


def _operand_stats(bits):
    """(all finite and normal-or-zero, max significand width, min and max exponent, min exponent
    of the last set bit) over the nonzero elements of float32 patterns (scalars)."""
    a = bits & u32(ABS)
    ef = a >> u32(23)
    nz = a != u32(0)
    ok = jnp.all(~nz | ((ef >= u32(1)) & (ef <= u32(254))))
    mant = (a & u32(FRAC)) | u32(HIDDEN)
    low = mant & (u32(0) - mant)
    tz = as_i32(lax.population_count(low - u32(1)))
    width = i32(24) - tz
    top = as_i32(ef) - i32(127)
    w = jnp.max(jnp.where(nz, width, i32(0)), initial=0)
    tmin = jnp.min(jnp.where(nz, top, i32(1000)), initial=1000)
    tmax = jnp.max(jnp.where(nz, top, i32(-1000)), initial=-1000)
    lmin = jnp.min(jnp.where(nz, top - i32(23) + tz, i32(1000)), initial=1000)
    return ok, w, tmin, tmax, lmin


def _exact_ok(cfg: _Cfg, a_bits, b_bits, init=None):
    """Whether the exact-product lane holds for these operands: finite normal (or zero) operands,
    products exact in float32 (significand widths summing to at most 24), every product a multiple
    of 2**g (the exponents of the operands' last set bits), b·2**-g a normal float32, products
    finite (fixed point, which has no clamp: below 2**30, exact in int32), and a finite init (floats)."""
    X = cfg.xgrid
    g = X.g
    oka, wa, amin, amax, la = _operand_stats(a_bits)
    okb, wb, bmin, bmax, lb = _operand_stats(b_bits)
    ok = oka & okb & (wa + wb <= 24) & (la + lb >= g)
    ok = ok & (bmin - g >= -126) & (bmax - g <= 127)
    ok = ok & (amax + bmax + 2 - g <= (30 if X.clamp < 0 else 127))
    if init is not None and cfg.acc.is_float:
        ok = ok & jnp.all((R.code_to_f32_bits(cfg.acc, init) & u32(EXP)) != u32(EXP))
    return ok


def _fast_ok(cfg: _Cfg, a_bits, b_bits):
    """Whether every product a·b·2**-g is an exact normal float32 (or ±0) within the fast path's
    bounds: operands finite and normal (XLA CPU flushes subnormal float32 inputs), significand
    widths summing to at most 24, exponents in range. Computed on bit patterns (a scalar bool)."""
    g = cfg.grids[0].g

    def scan(bits):
        a = bits & u32(ABS)
        ef = a >> u32(23)
        nz = a != u32(0)
        ok = jnp.all(~nz | ((ef >= u32(1)) & (ef <= u32(254))))
        mant = (a & u32(FRAC)) | u32(HIDDEN)
        low = mant & (u32(0) - mant)
        width = i32(24) - as_i32(lax.population_count(low - u32(1)))
        top = as_i32(ef) - i32(127)
        w = jnp.max(jnp.where(nz, width, i32(0)), initial=0)
        tmin = jnp.min(jnp.where(nz, top, i32(1000)), initial=1000)
        tmax = jnp.max(jnp.where(nz, top, i32(-1000)), initial=-1000)
        return ok, w, tmin, tmax

    oka, wa, amin, amax = scan(a_bits)
    okb, wb, bmin, bmax = scan(b_bits)
    ok = oka & okb & (wa + wb <= 24)
    ok = ok & (bmin - g >= -126) & (bmax - g <= 127)      # b * 2**-g is a normal float32
    ok = ok & (amin + bmin - g >= -126)                   # so is every nonzero product
    if cfg.grids[0].wrap:
        ok = ok & (amax + bmax + 2 - g <= 30)             # |q| < 2**30: exact in int32
    elif cfg.product is not None:
        ok = ok & (amax + bmax + 2 - g <= 127)            # q is finite: its exact value is known
    return ok


# -- the orders -----------------------------------------------------------------------------------

def _sequential(lane, sp, ops, init, u, flag0):
    """s = Q(s + p_k), k = 0 … K-1. ops: per-k operand data (leading axis K); u: (K, …) or None."""
    def body(carry, inp):
        code, flag = carry
        opk, uk = inp
        y, pflag = lane.product(opk)
        new, aflag = lane.add(sp, lane.state(sp, code), y, uk)
        return (new, _first(flag, pflag, aflag)), None

    (code, flag), _ = lax.scan(body, (init, flag0), (ops, u))
    return code, flag


def _chunked(lane, cfg, ops, K_, init, u, shape):
    """Chunks of ``chunk`` products summed in acc from +0 (all chunks at once, one scan over the
    position in the chunk), then the chunk sums summed in outer from init."""
    C = cfg.chunk
    nch = -(-K_ // C)
    pad = nch * C - K_

    def arrange(x):  # (K, …) -> (C, nch, …), the padding (a short last chunk) never applied
        x = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1))
        return jnp.swapaxes(x.reshape((nch, C) + x.shape[1:]), 0, 1)

    ops_c = jax.tree_util.tree_map(arrange, ops)
    u_in = None if u is None else arrange(u[:K_])
    active = np.arange(nch * C).reshape(nch, C).T < K_            # (C, nch), static
    zeros = jnp.zeros((nch,) + shape, U32)
    bshape = (nch,) + (1,) * len(shape)

    def inner(carry, inp):
        code, flag = carry
        opk, uk, act = inp
        y, pflag = lane.product(opk)
        new, aflag = lane.add(cfg.acc, lane.state(cfg.acc, code), y, uk)
        act = act.reshape(bshape)
        return (jnp.where(act, new, code), jnp.where(act, _first(flag, pflag, aflag), flag)), None

    (sums, iflags), _ = lax.scan(inner, (zeros, jnp.zeros((nch,) + shape, I32)), (ops_c, u_in, jnp.asarray(active)))

    def outer(carry, inp):
        code, flag = carry
        sk, fk, uk = inp
        new, oflag = lane.add(cfg.outer, lane.state(cfg.outer, code), lane.convert(cfg.acc, cfg.outer, sk), uk)
        return (new, _first(flag, fk, oflag)), None

    u_out = None if u is None else u[K_:]
    (code, flag), _ = lax.scan(outer, (init, jnp.zeros(shape, I32)), (sums, iflags, u_out))
    return code, flag


def _tree_schedule(K_: int):
    """The pairwise order's K steps as a static table, in the order they execute (and take their
    SR words): level by level, pairs (2i, 2i+1) left to right, an odd last node passing up, then
    the step adding init. Row t = (x is a product?, x index, y is a product?, y index, out slot):
    a product index is k; a node index is a slot of the step buffer (slot K_ holds init)."""
    nodes = [(1, k) for k in range(K_)]
    rows = []
    slot = 0
    while len(nodes) > 1:
        nxt = []
        for i in range(0, len(nodes) - 1, 2):
            (px, ix), (py, iy) = nodes[i], nodes[i + 1]
            rows.append((px, ix, py, iy, slot))
            nxt.append((0, slot))
            slot += 1
        if len(nodes) % 2:
            nxt.append(nodes[-1])
        nodes = nxt
    py, iy = nodes[0]
    rows.append((0, K_, py, iy, slot))
    return np.array(rows, np.int32)


def _pairwise(lane, cfg, ops, K_, init, u, shape):
    """The adder tree, then s = Q(init + root), as ONE scan over the K steps of
    :func:`_tree_schedule`: each step reads its two terms (a product, computed from the operands of
    index k, or a node, the code in a buffer slot) and writes its code to the buffer — one compiled
    adder for every level, the work of K vectorised steps. The core checks every product before the
    first tree step, so product errors (possible only with ``product=``) come first."""
    sp = cfg.acc
    sched = _tree_schedule(K_)
    buf = jnp.zeros((K_ + 1,) + shape, U32).at[K_].set(init)

    def term(is_prod, idx, buf):
        opk = jax.tree_util.tree_map(lambda x: lax.dynamic_index_in_dim(x, idx, keepdims=False), ops)
        p, _ = lane.product(opk)
        c = lane.state(sp, lax.dynamic_index_in_dim(buf, idx, keepdims=False))
        return E.Parts(*(jnp.where(is_prod != 0, a, b) for a, b in zip(p, c)))

    def body(carry, inp):
        buf, flag = carry
        row, uk = inp
        x = term(row[0], jnp.minimum(row[1], K_), buf)
        y = term(row[2], jnp.minimum(row[3], K_), buf)
        code, f = lane.add(sp, x, y, uk)
        buf = lax.dynamic_update_index_in_dim(buf, code, row[4], 0)
        return (buf, _first(flag, f)), None

    (buf, flag), _ = lax.scan(body, (buf, jnp.zeros(shape, I32)), (jnp.asarray(sched), u))
    code = buf[int(sched[-1, 4])]
    if cfg.product is not None:
        def prods(pf, opk):
            _, f = lane.product(opk)
            return _first(pf, f), None
        pflag, _ = lax.scan(prods, jnp.zeros(shape, I32), ops)
        flag = _first(pflag, flag)
    return code, flag


# -- one call -------------------------------------------------------------------------------------

def _f32_bits_exact(x):
    """float32 bit patterns of an operand whose values are all float32 (float32/16/bf16, small
    integers): widened exactly with integer operations."""
    dt = np.dtype(x.dtype)
    if dt == np.float32:
        return f32_bits(x)
    if dt == np.float16:
        from ._bits import f16_to_f32_bits
        return f16_to_f32_bits(lax.bitcast_convert_type(x, jnp.uint16))
    if dt == np.dtype(jnp.bfloat16):
        from ._bits import bf16_to_f32_bits
        return bf16_to_f32_bits(lax.bitcast_convert_type(x, jnp.uint16))
    return f32_bits(lax.convert_element_type(x, jnp.float32))  # integers below 2**24: exact


def _fast_dtype(dt) -> bool:
    dt = np.dtype(dt)
    return dt.kind == "f" or dt == np.dtype(jnp.bfloat16) or dt.itemsize <= 2 or dt == np.bool_


def _compute(cfg: _Cfg, a, b, init, u, ubad, fast_allowed=True):
    """(float32 values, int32 flags) of shape (nb, M, N) for a (nb, M, K), b (nb, K, N).
    ``fast_allowed``: True (the fastest lane that applies, chosen at run time: the exact-product
    lane, else the round-to-odd fast path, else the general path), False (the general path only),
    "odd" (alias "only": the round-to-odd fast path) or "exact" (the exact-product lane), each
    without its run-time check (the caller vouches for it)."""
    nb, M, K_ = a.shape
    N = b.shape[-1]
    shape = (nb, M, N)
    init = jnp.zeros(shape, U32) if init is None else jnp.broadcast_to(init, shape)
    u_k = None if u is None else jnp.moveaxis(u, -1, 0)        # (T, nb, M, N): step t of every output
    sp = cfg.final

    def run(lane, ops):
        s0 = lane.init_state(sp, init)
        if cfg.order == "sequential":
            out, flag = _sequential(lane, cfg.acc, ops, s0, u_k, jnp.zeros(shape, I32))
        elif cfg.order == "chunked":
            out, flag = _chunked(lane, cfg, ops, K_, s0, u_k, shape)
        else:
            out, flag = _pairwise(lane, cfg, ops, K_, s0, u_k, shape)
        return lane.values(sp, out), flag

    def general(a, b):
        lane = _Exact(cfg)
        return run(lane, lane.operands(a, b))

    dt_ok = _fast_dtype(a.dtype) and _fast_dtype(b.dtype)
    odd = cfg.grids is not None and dt_ok and fast_allowed in (True, "odd", "only")
    exact = cfg.xgrid is not None and dt_ok and fast_allowed in (True, "exact")
    if odd or exact:
        a_bits, b_bits = _f32_bits_exact(a), _f32_bits_exact(b)

    def fast_path(a, b):
        lane = _FastFloat(cfg) if cfg.acc.is_float else _FastFixed(cfg)
        return run(lane, lane.operands(a_bits, b_bits))

    def exact_path(a, b):
        lane = _ExactFloat(cfg) if cfg.acc.is_float else _ExactFixed(cfg)
        return run(lane, lane.operands(a_bits, b_bits))

    # fast_allowed "odd" ("only") / "exact": that lane alone, without its run-time check (the
    # caller vouches for it: tests, bench/jax_accumulate.py counting a lane's operations)
    if fast_allowed in ("odd", "only") and odd:
        bits, flag = fast_path(a, b)
    elif fast_allowed == "exact" and exact:
        bits, flag = exact_path(a, b)
    elif odd or exact:
        branches, idx = [general], i32(0)
        if odd:
            branches.append(fast_path)
            idx = jnp.where(_fast_ok(cfg, a_bits, b_bits), i32(len(branches) - 1), idx)
        if exact:
            branches.append(exact_path)
            idx = jnp.where(_exact_ok(cfg, a_bits, b_bits, init), i32(len(branches) - 1), idx)
        bits, flag = lax.switch(idx, branches, a, b)
    else:
        bits, flag = general(a, b)
    bad = flag != 0
    if ubad is not None:
        bad = bad | jnp.any(ubad.reshape(shape + (-1,)), axis=-1)
    bits = jnp.where(bad, u32(R.F32_NAN), bits)
    return f32_from_bits(bits), flag


_compute_jit = jax.jit(_compute, static_argnums=(0, 6))


# -- gradients ------------------------------------------------------------------------------------

@jax.custom_jvp
def _attach_grad(y, a, b, init):
    """``y`` (the emulated product), differentiated as the plain float32 ``matmul(a, b) + init``."""
    return y


@_attach_grad.defjvp
def _attach_grad_jvp(primals, tangents):
    y, a, b, init = primals
    _, ta, tb, ti = tangents
    out = jnp.zeros(y.shape, jnp.float32)

    def f32(x):
        return lax.convert_element_type(x, jnp.float32)

    def live(t):
        return t is not None and t.dtype != jax.dtypes.float0

    hi = lax.Precision.HIGHEST
    if live(ta):
        out = out + jnp.matmul(f32(ta), f32(b), precision=hi).reshape(y.shape)
    if live(tb):
        out = out + jnp.matmul(f32(a), f32(tb), precision=hi).reshape(y.shape)
    if init is not None and live(ti):
        out = out + jnp.broadcast_to(f32(ti), y.shape)
    return y, out


# -- public functions -----------------------------------------------------------------------------

_MESSAGES = {
    ACC_NAN: "{n} output(s) met a NaN (a NaN input, 0 * inf or inf - inf) in the accumulation, but the "
             "accumulator format has no NaN",
    ACC_INF: "{n} output(s) met an infinity in the accumulation, which overflow='wrap' cannot map into the "
             "accumulator; use a saturate rule",
    PROD_NAN: "{n} output(s) have a NaN product, but product={p} has no NaN",
    PROD_INF: "{n} output(s) have an infinite product that product={p} cannot take",
}


def _init_codes(cfg: _Cfg, init, out_shape):
    """(codes of the final format broadcast to out_shape, mask of values it cannot hold) or (None, None)."""
    if init is None:
        return None, None
    x = lax.stop_gradient(_input(init, "init"))
    try:
        x = jnp.broadcast_to(x, out_shape)
    except ValueError:
        raise ValueError(f"init: shape {tuple(np.shape(x))} does not broadcast to the output shape "
                         f"{out_shape}") from None
    sp = cfg.final
    enc = R.spec(sp.fmt)  # nearest_even with the format's default overflow rule, as the core encodes init
    codes, bad = _init_jit(enc, x)
    if not _is_traced(codes):
        badn = np.asarray(bad)
        if badn.any():
            v = np.asarray(x).reshape(-1)[np.flatnonzero(badn.reshape(-1))[0]]
            kind_f = np.dtype(x.dtype).kind == "f" or x.dtype == jnp.bfloat16
            if kind_f and np.isnan(float(v)):
                raise ValueError(f"init: NaN is not representable in {sp.fmt.name}")
            val = float(v) if kind_f else int(v)
            raise ValueError(f"init: {val!r} is not representable in the accumulator format {sp.fmt.name}")
    else:
        checkify.debug_check(~jnp.any(bad), f"init: value(s) not representable in {sp.fmt.name}")
    return codes, bad


@functools.partial(jax.jit, static_argnums=(0,))
def _init_jit(enc, x):
    codes = lax.convert_element_type(_quantize_codes(enc, x, None, None, False), U32)
    back = R.code_to_f32_bits(enc, codes)
    dt = np.dtype(x.dtype)
    if dt.kind == "f" or dt == np.dtype(jnp.bfloat16):
        xb = _f32_bits_exact(x)
        same = (back == xb) | (((back | xb) & u32(ABS)) == u32(0))
        same = same | (((back & u32(ABS)) > u32(EXP)) & ((xb & u32(ABS)) > u32(EXP)))
    else:  # integers: the code's value must be the integer itself (float32 holds both exactly)
        xf = lax.convert_element_type(x, jnp.float32)
        exact = lax.convert_element_type(xf, x.dtype) == x
        if dt.itemsize >= 4:
            exact = exact & (jnp.abs(lax.convert_element_type(x, jnp.float32)) <= np.float32(2 ** 24))
        same = exact & (back == f32_bits(xf))
        same = same | ((x == 0) & ((back & u32(ABS)) == u32(0)))
    return codes, ~same


def _matmul(a, b, acc, product, product_rounding, rounding, overflow, order, chunk, outer, init, key, random_bits,
            sr_bits, sr_method, fast=True, check=True):
    """``check=False`` (emul_jax.ops' training GEMMs): no checkify reports under jit (the same
    values; a traced ``checkify.debug_check`` gives the jitted caller an effect, which costs every
    call of it a slow Python dispatch)."""
    cfg = _config(acc, product, product_rounding, rounding, overflow, order, chunk, outer, sr_bits, sr_method)
    a = _input(a, "a")
    b = _input(b, "b")
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: operands must have at least one dimension (got shapes {a.shape} and {b.shape})")
    squeeze_m, squeeze_n = a.ndim == 1, b.ndim == 1
    a2 = a[None, :] if squeeze_m else a
    b2 = b[:, None] if squeeze_n else b
    M, Ka = a2.shape[-2:]
    Kb, N = b2.shape[-2:]
    if Ka != Kb:
        raise ValueError(f"matmul: a has {Ka} columns but b has {Kb} rows (shapes {a.shape} and {b.shape})")
    try:
        batch = tuple(np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2]))
    except ValueError:
        raise ValueError(f"matmul: batch dimensions of {a.shape} and {b.shape} do not broadcast") from None
    out_shape = batch + ((M,) if not squeeze_m else ()) + ((N,) if not squeeze_n else ())
    nb = int(np.prod(batch, dtype=np.int64))
    T = sr_steps(Ka, cfg.order, cfg.chunk)
    u, ubad = _sr_words(cfg.acc, out_shape + (T,), key, random_bits)
    init_codes, _ = _init_codes(cfg, init, out_shape)
    if Ka == 0 or nb * M * N == 0:  # no steps: init (or +0), like np.matmul's empty sum
        if init_codes is None or nb * M * N == 0:
            y = jnp.zeros(out_shape, jnp.float32)
        else:
            y = f32_from_bits(R.code_to_f32_bits(cfg.final, init_codes))
        return _attach_grad(y, a, b, None if init is None else _input(init, "init"))
    a3 = jnp.broadcast_to(a2, batch + (M, Ka)).reshape(nb, M, Ka)
    b3 = jnp.broadcast_to(b2, batch + (Ka, N)).reshape(nb, Ka, N)
    ic = None if init_codes is None else init_codes.reshape(nb, M, N)
    uu = None if u is None else u.reshape(nb, M, N, T)
    ub = None if ubad is None else ubad.reshape(nb, M, N, T)
    y, flags = _compute_jit(cfg, lax.stop_gradient(a3), lax.stop_gradient(b3), ic, uu, ub, fast)
    y = y.reshape(out_shape)
    if check or not _is_traced(flags):
        _check_flags(cfg, flags)
    if ubad is not None and check:
        checkify.debug_check(~jnp.any(ubad), f"random_bits: value(s) outside [0, 2**{cfg.acc.sr_bits}) "
                                              f"for sr_bits={cfg.acc.sr_bits}")
    return _attach_grad(y, a, b, None if init is None else _input(init, "init"))


def _check_flags(cfg, flags):
    pname = None if cfg.product is None else cfg.product.fmt.name
    if _is_traced(flags):
        checkify.debug_check(jnp.all(flags == 0), "accumulation: output(s) met a NaN or infinity the accumulator "
                                                  "(or product) format cannot take")
        return
    f = np.asarray(flags).reshape(-1)
    nz = np.flatnonzero(f)
    if nz.size:
        raise ValueError(_MESSAGES[int(f[nz[0]])].format(n=nz.size, p=pname))


_ARGS_DOC = """
    Args:
      a, b: float32 (bit-exact parity with the core on float32), float16/bfloat16 (widened exactly)
        or integers of at most 32 bits (exact values); shapes as for np.matmul. Concrete
        float64/int64 values are accepted when each is exactly a float32 / fits 32 bits.
      acc: the accumulator format (a format or a name), whose values fit float32; wider formats
        (fp64, fixed point over 24 bits) raise ValueError (jax_enable_x64 is not supported).
      product: round each product once to this format (default: exact products).
      product_rounding: the mode for ``product`` (deterministic; the format's default overflow).
      rounding, overflow: the accumulator's mode and overflow rule, at every step (static).
      order: ``"sequential"``, ``"pairwise"`` or ``"chunked"`` (with ``chunk`` and optional ``outer``).
      init: starting value(s), broadcast to the output; must be representable in the accumulator
        (``outer`` for chunked): ValueError eagerly, ``checkify`` under ``jit``.
      key: a JAX key (or two uint32 words): SR words ``jax.random.bits(key, out.shape + (T,), uint32)
        >> (32 - sr_bits)``, T = :func:`sr_steps` — ``key=jax.random.key(s)`` is the core's ``seed=s``.
      random_bits, sr_bits, sr_method: as the core; ``random_bits`` broadcasts to ``out.shape + (T,)``.

    Returns float32 values. An output that meets a NaN or infinity its format cannot take raises
    ValueError as in the core; under ``jit`` it is NaN (and ``checkify`` reports it).
"""


def matmul(a, b, acc, *, product=None, product_rounding="nearest_even", rounding="nearest_even", overflow=None,
           order="sequential", chunk=None, outer=None, init=None, key=None, random_bits=None, sr_bits=None,
           sr_method="add"):
    """Matrix product with every accumulation step rounded to ``acc`` (shapes as np.matmul).
    {args}
    >>> import jax.numpy as jnp
    >>> a = jnp.array([[1.0] * 64 + [-1.0] * 64])
    >>> b = jnp.ones((128, 1))
    >>> matmul(a, b, "fx<7,0>")        # saturates at 63 on the way up, then 63 - 64
    Array([[-1.]], dtype=float32)
    >>> matmul(a, b, "fx<7,0>", overflow="wrap")
    Array([[0.]], dtype=float32)
    """
    return _matmul(a, b, acc, product, product_rounding, rounding, overflow, order, chunk, outer, init, key,
                   random_bits, sr_bits, sr_method)


def dot(a, b, acc, *, product=None, product_rounding="nearest_even", rounding="nearest_even", overflow=None,
        order="sequential", chunk=None, outer=None, init=None, key=None, random_bits=None, sr_bits=None,
        sr_method="add"):
    """Dot product accumulated in ``acc``: the same function as :func:`matmul` (1-D · 1-D gives a
    0-d result).
    {args}
    >>> import jax.numpy as jnp
    >>> ones = jnp.ones(1000)
    >>> dot(ones, ones, "bf16")   # 256 + 1 rounds back to 256 in bf16 (8 bits)
    Array(256., dtype=float32)
    >>> dot(ones, ones, "bf16", order="pairwise")
    Array(1000., dtype=float32)
    """
    return _matmul(a, b, acc, product, product_rounding, rounding, overflow, order, chunk, outer, init, key,
                   random_bits, sr_bits, sr_method)


def _im2col(x, kh, kw, stride, padding):
    """(cols (N, C*kh*kw, Ho*Wo), Ho, Wo): reduction index c*kh*kw + i*kw + j, as the core."""
    sh, sw = stride
    ph, pw = padding
    n, c, h, w = x.shape
    ho = (h + 2 * ph - kh) // sh + 1
    wo = (w + 2 * pw - kw) // sw + 1
    if ho <= 0 or wo <= 0:
        raise ValueError(f"conv2d: kernel {kh}x{kw} is larger than the padded input {h + 2 * ph}x{w + 2 * pw}")
    xp = jnp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else x
    taps = [xp[:, :, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw] for i in range(kh) for j in range(kw)]
    cols = jnp.stack(taps, axis=2)                        # (n, c, kh*kw, ho, wo)
    return cols.reshape(n, c * kh * kw, ho * wo), ho, wo


def conv2d(x, w, acc, *, stride=1, padding=0, product=None, product_rounding="nearest_even", rounding="nearest_even",
           overflow=None, order="sequential", chunk=None, outer=None, init=None, key=None, random_bits=None,
           sr_bits=None, sr_method="add"):
    """2-D convolution (cross-correlation) of x (N, C, H, W) with w (O, C, kh, kw), defined as the
    matmul of its im2col: output (n, o, y, x) sums over k = c*kh*kw + i*kw + j (channel outermost,
    then kernel row, then kernel column); zero padding contributes +0 products like any other step.
    ``init`` broadcasts to (N, O, Ho, Wo); SR words: output element j (C order over (N, O, Ho, Wo))
    uses j*T … j*T+T-1. Other arguments as :func:`matmul`.

    >>> import jax.numpy as jnp
    >>> x = jnp.arange(16.0).reshape(1, 1, 4, 4)
    >>> conv2d(x, jnp.ones((1, 1, 2, 2)), "fp16", stride=2)
    Array([[[[10., 18.],
             [42., 50.]]]], dtype=float32)
    """
    cfg = _config(acc, product, product_rounding, rounding, overflow, order, chunk, outer, sr_bits, sr_method)
    xa = _input(x, "x")
    wa = _input(w, "w")
    if xa.ndim != 4 or wa.ndim != 4:
        raise ValueError(f"conv2d: x must be (N, C, H, W) and w (O, C, kh, kw); got shapes {xa.shape} and {wa.shape}")
    if xa.shape[1] != wa.shape[1]:
        raise ValueError(f"conv2d: x has {xa.shape[1]} channels but w expects {wa.shape[1]}")
    stride = _pair(stride, "stride")
    padding = _pair(padding, "padding")
    if min(stride) < 1:
        raise ValueError(f"stride={stride}: must be at least 1")
    if min(padding) < 0:
        raise ValueError(f"padding={padding}: must be at least 0")
    o, c, kh, kw = wa.shape
    cols, ho, wo = _im2col(xa, kh, kw, stride, padding)
    n = xa.shape[0]
    wmat = wa.reshape(o, c * kh * kw)
    if init is not None:
        iv = _input(init, "init")
        try:
            iv = jnp.broadcast_to(iv, (n, o, ho, wo))
        except ValueError:
            raise ValueError(f"init: shape {tuple(iv.shape)} does not broadcast to the output shape "
                             f"{(n, o, ho, wo)}") from None
        init = iv.reshape(n, o, ho * wo)
    if random_bits is not None:
        full = (n, o, ho, wo, sr_steps(c * kh * kw, cfg.order, cfg.chunk))
        traced = isinstance(random_bits, (jax.Array, jax.core.Tracer))
        rb = random_bits if traced else np.asarray(random_bits)
        try:
            rb = jnp.broadcast_to(rb, full) if traced else np.broadcast_to(rb, full)
        except ValueError:
            raise ValueError(f"random_bits: shape {tuple(np.shape(rb))} does not broadcast to {full}") from None
        random_bits = rb.reshape(n, o, ho * wo, full[-1])
    out = _matmul(wmat, cols, acc, product, product_rounding, rounding, overflow, order, chunk, outer, init, key,
                  random_bits, sr_bits, sr_method)
    return out.reshape(n, o, ho, wo)


for _f in (matmul, dot):
    _f.__doc__ = _f.__doc__.replace("{args}", _ARGS_DOC)
del _f

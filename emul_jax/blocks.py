"""Block-scaled formats in JAX: ``encode``, ``decode``, ``quantize`` bit for bit as :mod:`emul.blocks`.

Power-of-two (exponent-only, e8m0) scales — the OCP MX presets and generic ``{element}/e8m0/{k}``
formats — on float32 inputs (float16/bfloat16 widened exactly), every scale rule, scale overflow
setting, tail and element rounding mode (SR with ``key=`` or ``random_bits=``, word i for element
i of x in C order, as the core). docs/blocks.md gives the semantics. The scale comes from the
block's exact amax in integer operations; x / 2**e is built as float32 bits (exact; a nonzero
quotient below float32's grid becomes the smallest subnormal of its sign, which every element format
with quantum >= 2**-90 rounds as the exact value in every mode), then rounded by
:func:`emul_jax.encode` with ``overflow="saturate"``. ``decode`` returns float32 values built from
bits; a value that float32 cannot hold exactly raises ValueError eagerly (use emul, which returns
float64) and is NaN under ``jit``.

Float scale formats (NVFP4: e4m3fn block scales, a float32 tensor scale s_t, block 16) are mirrored
by :func:`encode` (and :func:`tensor_scale`) with the exact arithmetic: s_b = amax / (element max *
s_t) and every element x_i / (s_b * s_t) are integer long divisions (64 quotient bits and a sticky
bit, 32-bit words), each rounded once by emul_jax's rounding primitives — the core's quotients,
rounded the same way, in every element mode (SR included), with ``scale_min`` and a given or
computed s_t. The peers' float32 arithmetic (``arithmetic="float32"``, ``"float32_div"``,
``"float32_te"``) is mirrored as the core's float32 operations in the core's order, each computed
exactly in integers and rounded once to float32 (see :func:`encode`). ``decode`` and
``quantize`` of float-scale formats return float64 values (element times scale times s_t needs up to
2 + 4 + 24 = 30 significant bits for NVFP4, more than a float32 holds) and so need
``jax_enable_x64`` (ValueError without it); see :func:`decode`.

Exponent-only formats (e8m0) as plain formats: :func:`exp_encode`, :func:`exp_decode`,
:func:`exp_quantize` behind ``emul_jax.encode/decode/quantize(x, "e8m0")``, bit for bit as
``emul.encode(x, "e8m0")`` (every mode and overflow rule, SR, float and 32-bit integer inputs).
"""

from __future__ import annotations

import functools
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from emul.blocks import (ARITHMETIC, SCALE_OVERFLOW, SCALE_RULES, TAILS, _element_emax, _element_precision, _nan_element_code,
                         _quantum_exp)
from emul.blocks import format as block_format
from emul.formats import ExpFormat, FixedFormat, FloatFormat

from . import _round as R
from .quantize import _input, _spec, _sr_words, decode as _core_decode, encode as _core_encode
from ._bits import ABS, EXP, SIGN, U32, clz, f32_bits, f32_from_bits, shl, shr, u32

__all__ = ["encode", "decode", "quantize", "tensor_scale"]

I32 = jnp.int32


def _check_float_scale_format(bfmt):
    """Float scales (NVFP4): the long divisions need the divisors (scale or element-max significand
    times s_t's 24-bit significand) below 2**31, and both formats the JAX rounding primitives take."""
    el, sc = bfmt.element, bfmt.scale
    t_bits = 24  # s_t's significand (1.0 without a tensor scale: 2**23)
    mmax, _ = _odd_sig(Fraction(el.max))
    if sc.man_bits + 1 + t_bits > 31 or mmax.bit_length() + t_bits > 31 or el.bits > 32 or sc.bits > 32:
        raise ValueError(f"{bfmt.name}: the scale or element significands are too wide for emul_jax.blocks' 32-bit "
                         "division; use emul.blocks")
    if isinstance(el, FixedFormat) and not el.fits_float64:
        raise ValueError(f"{bfmt.name}: element {el.name} is outside what emul_jax.blocks handles; use emul.blocks")
    return bfmt


def _odd_sig(v: Fraction):
    """(m, e): v = m * 2**e with m odd (v > 0)."""
    n, d, e = v.numerator, v.denominator, 0
    while n % 2 == 0:
        n //= 2
        e += 1
    while d % 2 == 0:
        d //= 2
        e -= 1
    return n, e


def _check_format(bfmt, *, float_scales=False):
    bfmt = block_format(bfmt)
    el, sc = bfmt.element, bfmt.scale
    if isinstance(sc, FloatFormat):
        if not float_scales:
            raise ValueError(f"{bfmt.name}: emul_jax.blocks decodes (and quantizes) e8m0 (power-of-two) scales only; "
                             "float scale values times the element values are not float32 values in general — "
                             "use emul.blocks (float64)")
        return _check_float_scale_format(bfmt)
    if not isinstance(sc, ExpFormat) or sc.exp_bits != 8 or sc.bias != 127:
        raise ValueError(f"{bfmt.name}: emul_jax.blocks mirrors e8m0 (power-of-two) and float scales only; "
                         "use emul.blocks")
    if isinstance(el, FloatFormat) and not (el.man_bits <= 23 and el.emin >= -126 and el.emax <= 100
                                            and _quantum_exp(el) >= -90):
        raise ValueError(f"{bfmt.name}: element {el.name} is outside what emul_jax.blocks handles; use emul.blocks")
    if isinstance(el, FixedFormat) and not (el.bits <= 24 and -90 <= -el.frac and el.max_raw.bit_length() - el.frac <= 100):
        raise ValueError(f"{bfmt.name}: element {el.name} is outside what emul_jax.blocks handles; use emul.blocks")
    return bfmt


def _sig24(a):
    """(exponent, 24-bit significand with the leading bit at 23) of nonzero float32 magnitudes a."""
    ef = (a >> u32(23)).astype(I32)
    top = 31 - clz(a)  # for subnormals (ef == 0)
    sub_sig = lax.shift_left(a, jnp.clip(23 - top, 0, 31).astype(U32))
    sig = jnp.where(ef == 0, sub_sig, (a & u32(0x7FFFFF)) | u32(0x800000))
    xe = jnp.where(ef == 0, top - 149, ef - 127)
    return xe, sig


def _scaled(b, e):
    """float32 bits of (float32 b) / 2**e, exact, or the smallest subnormal of its sign below
    float32's grid (see the module docstring). e: int32, broadcast against b."""
    s = b & u32(SIGN)
    a = b & u32(ABS)
    ef = (a >> u32(23)).astype(I32)
    sig = jnp.where(ef == 0, a, (a & u32(0x7FFFFF)) | u32(0x800000))
    lsb = jnp.where(ef == 0, -149, ef - 150)
    top = 31 - clz(jnp.where(sig == 0, u32(1), sig))
    v = lsb + top - e
    frac = lax.shift_left(sig, jnp.clip(23 - top, 0, 31).astype(U32)) & u32(0x7FFFFF)
    normal = s | (lax.shift_left(jnp.clip(v + 127, 0, 255).astype(U32), u32(23))) | frac
    low_bit = sig & (~sig + u32(1))
    tz = 31 - clz(jnp.where(low_bit == 0, u32(1), low_bit))
    low = lsb + tz - e
    odd = lax.shift_right_logical(sig, jnp.clip(tz, 0, 31).astype(U32))
    sub = s | lax.shift_left(odd, jnp.clip(low + 149, 0, 31).astype(U32))
    out = jnp.where(v >= -126, normal, jnp.where(low >= -149, sub, s | u32(1)))
    return jnp.where(a == 0, b, out)


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _scales_and_scaled(xb, bfmt, rule, sovf, k):
    """(scale codes uint8 (R, nb), scaled float32 bits (R, nb * k)) of float32 bits xb (R, nb * k)."""
    el = bfmt.element
    R_, n = xb.shape
    nb = n // k
    blocks = xb.reshape(R_, nb, k)
    amax = jnp.max(blocks & u32(ABS), axis=-1)
    special = amax >= u32(0x7F800000)
    zero = amax == u32(0)
    xe, sig = _sig24(jnp.where(zero | special, u32(0x3F800000), amax))
    emax_el = _element_emax(el)
    prec = _element_precision(el)
    mx = Fraction(el.max) / Fraction(2) ** emax_el  # in [1, 2): its 24-bit significand
    sig_max = int(mx * 2 ** 23)
    if rule == "floor":
        e = xe - emax_el
    elif rule == "ceil":
        e = xe - emax_el + (sig != u32(0x800000)).astype(I32)
    elif rule == "even":
        carry = (sig + u32(1 << (22 - prec))) >= u32(1 << 24) if prec <= 22 else jnp.zeros(sig.shape, bool)
        e = xe - emax_el + carry.astype(I32)
    else:
        e = xe - emax_el + (sig > u32(sig_max)).astype(I32)
    e = jnp.where(zero, -127, jnp.maximum(e, -127))
    over = e > 127
    nan_block = special | (over & (sovf == "nan"))
    e = jnp.minimum(e, 127)
    codes = jnp.where(nan_block, u32(255), (e + 127).astype(U32)).astype(jnp.uint8)
    y = _scaled(blocks, e[..., None])
    nan_bits = u32(0x7FC00000 if (isinstance(el, FloatFormat) and el.has_nan) else 0)
    y = jnp.where(nan_block[..., None], nan_bits, y)
    return codes, y.reshape(R_, n)


def _code_bytes(fmt) -> int:
    return 1 if fmt.bits <= 8 else 2 if fmt.bits <= 16 else 4


def _f32_input(x):
    xa = _input(x, "x", kinds=("f",))
    dt = np.dtype(xa.dtype)
    if dt.kind != "f":
        raise TypeError(f"x: dtype {dt} is not a float dtype; emul_jax.blocks takes float32/float16/bfloat16")
    return xa.astype(jnp.float32)  # float16/bfloat16 widen exactly


def encode(x, bfmt, axis=-1, *, rounding="nearest_even", scale_rule=None, scale_overflow=None, tail="partial",
           tensor_scale=None, scale_min=None, arithmetic="exact", global_scale=None, key=None, random_bits=None,
           sr_bits=None, sr_method="add"):
    """``(scales, codes)`` as :func:`emul.blocks.encode` (float inputs).

    Power-of-two scales: every scale rule and overflow setting. Float scales (NVFP4): ``scale_min``,
    ``tensor_scale`` (default: computed from x as :func:`emul.blocks.tensor_scale`, in the graph)
    and every ``arithmetic``. ``"exact"``: every quotient is an integer long division rounded once
    by emul_jax's rounding primitives, so the codes equal the core's. The peers' float32 variants
    (``"float32"``, ``"float32_div"``, ``"float32_te"`` with ``global_scale``; float32 x only) do
    the core's float32 operations in the core's order, each one computed exactly in integers and
    rounded to float32 (nearest even, subnormals kept, overflow to inf) by the same primitives — so
    XLA's flush-to-zero, x / c → x * (1 / c) rewrites and FMA contraction cannot change a result.

    >>> import jax.numpy as jnp
    >>> s, c = encode(jnp.array([960.0, 1.0]), "mxfp8_e4m3")
    >>> s, c
    (Array([128], dtype=uint8), Array([126,  48], dtype=uint8))
    >>> encode(jnp.array([6.0, 3.0, 0.25, -1.0]), "nvfp4", tensor_scale=1.0)   # scale 1.0 (e4m3 0x38)
    (Array([56], dtype=uint8), Array([ 7,  5,  0, 10], dtype=uint8))
    """
    bfmt = _check_format(bfmt, float_scales=True)
    if isinstance(bfmt.scale, FloatFormat):
        for name, v in (("scale_rule", scale_rule), ("scale_overflow", scale_overflow)):
            if v is not None:
                raise ValueError(f"{name}=: only for power-of-two (e8m0) scales; {bfmt.scale.name} scales round "
                                 "amax / element max once (nearest_even, saturating)")
        if not isinstance(arithmetic, str) or arithmetic not in ARITHMETIC:
            raise ValueError(f"arithmetic={arithmetic!r}: must be one of {', '.join(ARITHMETIC)}")
        if tensor_scale is not None and not bfmt.tensor_scale:
            raise ValueError(f"tensor_scale=: {bfmt.name} has no tensor scale")
        if global_scale is not None and arithmetic != "float32_te":
            raise ValueError("global_scale=: only with arithmetic='float32_te' (TransformerEngine's G)")
        if arithmetic == "float32_te" and (not bfmt.tensor_scale or tensor_scale is not None):
            raise ValueError("arithmetic='float32_te': TransformerEngine's two-level scaling computes the "
                             "tensor scale from x; a format with a tensor scale and no tensor_scale= needed "
                             "(global_scale= gives its G)")
        if not isinstance(tail, str) or tail not in TAILS:
            raise ValueError(f"tail={tail!r}: must be one of {', '.join(TAILS)}")
        return _encode_float_scales(x, bfmt, axis, rounding, tail, tensor_scale, scale_min, key, random_bits,
                                    sr_bits, sr_method, arithmetic, global_scale)
    for name, v in (("tensor_scale", tensor_scale), ("scale_min", scale_min)):
        if v is not None:
            raise ValueError(f"{name}=: only for float scale formats, not {bfmt.scale.name}")
    if arithmetic != "exact":
        raise ValueError(f"arithmetic={arithmetic!r}: power-of-two scales are always exact")
    rule = "floor" if scale_rule is None else scale_rule
    sovf = "nan" if scale_overflow is None else scale_overflow
    for name, v, choices in (("scale_rule", rule, SCALE_RULES), ("scale_overflow", sovf, SCALE_OVERFLOW),
                             ("tail", tail, TAILS)):
        if not isinstance(v, str) or v not in choices:
            raise ValueError(f"{name}={v!r}: must be one of {', '.join(choices)}")
    xa = _f32_input(x)
    if xa.ndim == 0:
        raise ValueError("x: a 0-d array has no axis to block; pass at least one dimension")
    if not -xa.ndim <= axis < xa.ndim:
        raise ValueError(f"axis={axis}: out of range for an array with {xa.ndim} dimension(s)")
    ax = axis % xa.ndim
    L = xa.shape[ax]
    k = bfmt.block if bfmt.block is not None else max(L, 1)
    if tail == "error" and L % k:
        raise ValueError(f"tail='error': the axis length {L} is not a multiple of the block size {k}")
    nb = -(-L // k)
    sp = _spec(bfmt.element, rounding, "saturate", sr_bits, sr_method, "encode")
    u, _ = _sr_words(sp, xa.shape, key, random_bits)  # word i for element i of x (C order)
    moved = jnp.moveaxis(xa, ax, -1)
    if xa.size == 0:
        scales = jnp.zeros(moved.shape[:-1] + (nb,), jnp.uint8)
        codes = jnp.zeros(moved.shape, np.dtype(f"uint{8 * _code_bytes(bfmt.element)}"))
        return jnp.moveaxis(scales, -1, ax), jnp.moveaxis(codes, -1, ax)
    rows = moved.reshape(-1, L)
    pad = nb * k - L
    xb = jnp.pad(f32_bits(rows), ((0, 0), (0, pad)))
    scodes, y = _scales_and_scaled(xb, bfmt, rule, sovf, k)
    y = y[:, :L]
    kw = {}
    if u is not None:
        kw = dict(random_bits=jnp.moveaxis(u, ax, -1).reshape(y.shape), sr_bits=sp.sr_bits, sr_method=sr_method)
    codes = _core_encode(f32_from_bits(y), bfmt.element, rounding, "saturate", **kw)
    codes = jnp.moveaxis(codes.reshape(moved.shape), -1, ax)
    scales = jnp.moveaxis(scodes.reshape(moved.shape[:-1] + (nb,)), -1, ax)
    return scales, codes


# -- float scales (NVFP4): exact quotients by integer long division ----------------------------------

def _quotient(n, d):
    """``(hi, lo, sticky, a)`` with ``n / d = (Q + eps) * 2**(-63 - a)``, ``Q = hi * 2**32 + lo`` the
    64-bit quotient (leading bit at 63 or 62), ``sticky`` whether eps > 0; uint32 ``n < 2**31`` and
    ``0 < d < 2**31`` (``n == 0`` gives Q = 0). Restoring division, one quotient bit per step: both
    operands are first brought to the same bit length, so n'/d' is in (1/2, 2) and every
    remainder stays below 2**31."""
    a = (32 - clz(d)) - (32 - clz(jnp.where(n == u32(0), d, n)))
    nn = shl(n, jnp.maximum(a, 0))
    dd = shl(d, jnp.maximum(-a, 0))

    def step(_, c):
        r, hi, lo = c
        bit = r >= dd
        r = jnp.where(bit, r - dd, r)
        hi = shl(hi, 1) | shr(lo, 31)
        lo = shl(lo, 1) | bit.astype(U32)
        return shl(r, 1), hi, lo

    z = jnp.zeros_like(nn)
    r, hi, lo = lax.fori_loop(0, 64, step, (nn, z, z))
    return hi, lo, r != u32(0), a


def _round_quotient(sp, sign, n, d, e, u=None):
    """The code (uint32) of ``(-1)**sign * n / d * 2**e`` rounded once by the spec ``sp``."""
    hi, lo, sticky, a = _quotient(n, d)
    return R.round_parts(sp, sign, hi, lo, e - 63 - a, sticky, u)


@functools.partial(jax.jit, static_argnums=(1,))
def _tensor_scale_bits(xb, bfmt):
    """float32 bits of :func:`emul.blocks.tensor_scale` of float32 bits xb (exact: finite amax /
    (scale max * element max) rounded once to float32, nearest even; 1.0 for amax 0; at least
    2**-149)."""
    a = xb & u32(ABS)
    amax = jnp.max(jnp.where(a < u32(EXP), a, u32(0)))
    m, me = _odd_sig(Fraction(bfmt.scale.max) * Fraction(bfmt.element.max))
    xe, sig = _sig24(jnp.where(amax == u32(0), u32(0x3F800000), amax))
    t = _round_quotient(_F32_SPEC(), u32(0), sig, u32(m), xe - 23 - me)
    t = jnp.maximum(t, u32(1))
    return jnp.where(amax == u32(0), u32(0x3F800000), t)


@functools.lru_cache(maxsize=None)
def _F32_SPEC():
    return R.spec(FloatFormat(8, 23), "nearest_even", "saturate", None, "add")


def _code_parts(sb, sc):
    """(significand, exponent) of the codes ``sb`` of the float format ``sc`` (no special codes):
    the value is significand * 2**exponent."""
    m = sc.man_bits
    ef = shr(sb, m).astype(I32)
    f = sb & u32((1 << m) - 1)
    return jnp.where(ef == 0, f, f | u32(1 << m)), jnp.where(ef == 0, sc.emin - m, ef - sc.bias - m)


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5, 6, 7))
def _float_scale_blocks(xb, tb, bfmt, k, esp, ssp, smin, snan, u=None):
    """(scale codes (R, nb), element codes (R, nb * k)) of float32 bits xb with a float scale format;
    tb: s_t's float32 bits (a 0-d uint32)."""
    el, sc = bfmt.element, bfmt.scale
    R_, n = xb.shape
    nb = n // k
    blocks = xb.reshape(R_, nb, k)
    mag = blocks & u32(ABS)
    amax = jnp.max(mag, axis=-1)
    special = amax >= u32(EXP)
    te, tsig = _sig24(tb)
    mmax, me = _odd_sig(Fraction(el.max))
    axe, asig = _sig24(jnp.where((amax == u32(0)) | special, u32(0x3F800000), amax))
    sb = _round_quotient(ssp, u32(0), asig, u32(mmax) * tsig, (axe - 23) - me - (te - 23))
    sb = jnp.where(amax == u32(0), u32(0), sb)
    sb = jnp.maximum(sb, u32(smin))
    ms, es = _code_parts(sb, sc)
    xe, xsig = _sig24(jnp.where(mag == u32(0), u32(0x3F800000), mag))
    xsig = jnp.where(mag == u32(0), u32(0), xsig)
    d = (ms * tsig)[..., None]
    zero_scale = (ms == u32(0))[..., None]
    sign = shr(blocks, 31)
    uu = None if u is None else u.reshape(R_, nb, k)
    codes = _round_quotient(esp, sign, jnp.where(zero_scale, u32(0), xsig), jnp.where(zero_scale, u32(1), d),
                            (xe - 23) - es[..., None] - (te - 23), uu)
    enan = _nan_element_code(el)
    codes = jnp.where(special[..., None], u32(enan), codes)
    scales = jnp.where(special, u32(snan), sb)
    return scales, codes.reshape(R_, n)


# -- the peers' float32 arithmetic (arithmetic="float32", "float32_div", "float32_te") --------------
#
# Each float32 operation of emul.blocks._encode_float32 is computed exactly in integers and rounded
# once to float32 (nearest even, subnormals kept, overflow to inf: IEEE binary32) by round_float, so
# the bits equal NumPy's float32 operations whatever XLA does to float arithmetic.

@functools.lru_cache(maxsize=None)
def _F32_IEEE():
    return R.spec(FloatFormat(8, 23), "nearest_even", None, None, "add")


def _parts32(b):
    """(zero, inf, exponent, 24-bit significand) of float32 magnitude bits b (finite or inf);
    value = sig * 2**(exponent - 23). Zeros and infs get a dummy significand 2**23."""
    zero = b == u32(0)
    inf = b >= u32(EXP)
    e, sig = _sig24(jnp.where(zero | inf, u32(0x3F800000), b))
    return zero, inf, e, sig


def _mul24(a, b):
    """(hi, lo): the exact 48-bit product of uint32 values a, b < 2**24 as two 32-bit words."""
    ah, al = shr(a, 12), a & u32(0xFFF)
    bh, bl = shr(b, 12), b & u32(0xFFF)
    low = al * bl
    mid = ah * bl + al * bh                      # < 2**25
    high = ah * bh                               # < 2**24
    mid_lo, mid_hi = shl(mid & u32(0xFFFFF), 12), shr(mid, 20)
    high_lo, high_hi = shl(high & u32(0xFF), 24), shr(high, 8)
    s1 = low + mid_lo
    s2 = s1 + high_lo
    carry = (s1 < low).astype(U32) + (s2 < s1).astype(U32)
    return mid_hi + high_hi + carry, s2


def _fmul32(sign, a, b):
    """float32 bits of fp32(±a * b), a and b float32 magnitude bits (finite or inf; never 0 * inf)."""
    za, ia, ea, ma = _parts32(a)
    zb, ib, eb, mb = _parts32(b)
    hi, lo = _mul24(ma, mb)
    r = R.round_float(_F32_IEEE(), sign, hi, lo, ea + eb - 46)
    r = jnp.where(za | zb, shl(sign, 31), r)
    return jnp.where(ia | ib, shl(sign, 31) | u32(EXP), r)


def _fdiv32(sign, a, b, sp=None):
    """float32 bits of fp32(±a / b), a and b float32 magnitude bits (a finite; b finite nonzero or
    inf: the callers mask b = 0). ``sp``: another float32 rounding spec (saturating)."""
    za, _, ea, ma = _parts32(a)
    zb, ib, eb, mb = _parts32(b)
    r = _round_quotient(sp or _F32_IEEE(), sign, ma, mb, ea - eb)
    return jnp.where(za | ib, shl(sign, 31), r)


def _recip32(gb):
    """float32 bits of fp32(1 / g), g positive finite float32 bits."""
    return _fdiv32(u32(0), jnp.asarray(u32(0x3F800000)), jnp.asarray(gb, U32))


@functools.partial(jax.jit, static_argnums=(1,))
def _te_global_bits(xb, bfmt):
    """float32 bits of TransformerEngine's G = fp32(fp32(scale max * element max) / amax) over the
    finite values, at most float32's max (also for amax = 0), as emul.blocks._te_global_encode_scale."""
    a = xb & u32(ABS)
    amax = jnp.max(jnp.where(a < u32(EXP), a, u32(0)))
    c = f32_bits(jnp.float32(np.float32(np.float32(bfmt.scale.max) * np.float32(bfmt.element.max))))
    g = _fdiv32(u32(0), c, jnp.where(amax == u32(0), u32(0x3F800000), amax), _F32_SPEC())
    g = jnp.where(amax == u32(0), u32(0x7F7FFFFF), g)
    return jnp.where(g == u32(0), u32(0x3F800000), g)


@functools.partial(jax.jit, static_argnums=(3, 4, 5, 6, 7))
def _float32_blocks(xb, tb, gb, bfmt, k, smin, snan, divide):
    """(scale codes (R, nb), float32 bits of the scaled elements (R, nb * k), NaN-block element mask)
    of float32 bits xb, as emul.blocks._encode_float32: s = fp32(amax / elem_max), then fp32(s / s_t)
    (or fp32(s * G) with gb), the scale code (nearest_even, saturating, at least smin), prod =
    fp32(scale * s_t), then fp32(x * fp32(1 / prod)) or (divide) fp32(x / prod); zero elements where
    prod or x is 0."""
    el, sc = bfmt.element, bfmt.scale
    R_, n = xb.shape
    nb = n // k
    blocks = xb.reshape(R_, nb, k)
    mag = blocks & u32(ABS)
    special = jnp.any(mag >= u32(EXP), axis=-1)
    amax = jnp.where(special, u32(0), jnp.max(mag, axis=-1))
    emax_bits = f32_bits(jnp.float32(np.float32(el.max)))
    s32 = _fdiv32(u32(0), amax, jnp.broadcast_to(emax_bits, amax.shape))
    if gb is None:
        s32 = _fdiv32(u32(0), s32, jnp.broadcast_to(tb, s32.shape))
    else:
        s32 = _fmul32(u32(0), s32, jnp.broadcast_to(gb, s32.shape))
    s32 = jnp.where(special, u32(0), s32)
    sb = _core_encode(f32_from_bits(s32), sc, "nearest_even", "saturate").astype(U32)
    sb = jnp.maximum(sb, u32(smin))
    ms, es = _code_parts(sb, sc)
    te, tsig = _sig24(tb)
    # prod = fp32(scale * s_t): ms * tsig < 2**28 is exact in uint32
    prod = R.round_float(_F32_IEEE(), u32(0), None, ms * tsig, es + te - 23)
    prod = jnp.where(ms == u32(0), u32(0), prod)
    sign = shr(blocks, 31)
    pb = jnp.broadcast_to(jnp.where(prod == u32(0), u32(0x3F800000), prod)[..., None], mag.shape)
    if divide:
        y = _fdiv32(sign, mag, pb)
    else:
        recip = _recip32(jnp.where(prod == u32(0), u32(0x3F800000), prod))
        y = _fmul32(sign, mag, jnp.broadcast_to(recip[..., None], mag.shape))
    zero = (prod == u32(0))[..., None] | special[..., None] | (mag == u32(0))
    y = jnp.where(zero, shl(sign, 31), y)
    scales = jnp.where(special, u32(snan), sb)
    spec_el = jnp.broadcast_to(special[..., None], mag.shape)
    return scales, y.reshape(R_, n), spec_el.reshape(R_, n)


def _encode_float_scales(x, bfmt, axis, rounding, tail, tensor_scale, scale_min, key, random_bits, sr_bits,
                         sr_method, arithmetic="exact", global_scale=None):
    from emul.blocks import _check_global_scale, _check_tensor_scale, _scale_min_code, _scale_nan_code

    el, sc = bfmt.element, bfmt.scale
    if arithmetic != "exact":
        xin = _input(x, "x", kinds=("f",))
        if np.dtype(xin.dtype) != np.float32:
            raise TypeError(f"arithmetic={arithmetic!r}: x must be float32 (the peers' input)")
    xa = _f32_input(x)
    if xa.ndim == 0:
        raise ValueError("x: a 0-d array has no axis to block; pass at least one dimension")
    if not -xa.ndim <= axis < xa.ndim:
        raise ValueError(f"axis={axis}: out of range for an array with {xa.ndim} dimension(s)")
    ax = axis % xa.ndim
    L = xa.shape[ax]
    k = bfmt.block if bfmt.block is not None else max(L, 1)
    if tail == "error" and L % k:
        raise ValueError(f"tail='error': the axis length {L} is not a multiple of the block size {k}")
    nb = -(-L // k)
    smin = _scale_min_code(sc, scale_min)
    snan = _scale_nan_code(sc)
    esp = _spec(el, rounding, "saturate", sr_bits, sr_method, "encode")
    ssp = R.spec(sc, "nearest_even", "saturate", None, "add")
    u, _ = _sr_words(esp, xa.shape, key, random_bits)
    moved = jnp.moveaxis(xa, ax, -1)
    sdt = np.dtype(f"uint{8 * _code_bytes(sc)}")
    cdt = np.dtype(f"uint{8 * _code_bytes(el)}")
    if xa.size == 0:
        return (jnp.moveaxis(jnp.zeros(moved.shape[:-1] + (nb,), sdt), -1, ax),
                jnp.moveaxis(jnp.zeros(moved.shape, cdt), -1, ax))
    xbits = f32_bits(xa)
    if snan < 0 and not isinstance(xbits, jax.core.Tracer) and bool(jnp.any((xbits & u32(ABS)) >= u32(EXP))):
        raise ValueError(f"x: NaN or inf in a block, but the scale format {sc.name} has no NaN")
    gb = None
    if arithmetic == "float32_te":
        if global_scale is None:
            gb = _te_global_bits(xbits, bfmt)
        else:
            if not isinstance(global_scale, jax.core.Tracer):
                global_scale = _check_global_scale(np.asarray(global_scale))
            gb = f32_bits(jnp.asarray(global_scale, jnp.float32))
        tb = _recip32(gb)
    elif not bfmt.tensor_scale:
        tb = u32(0x3F800000)
    elif tensor_scale is None:
        tb = _tensor_scale_bits(xbits, bfmt)
    else:
        if not isinstance(tensor_scale, jax.core.Tracer):
            tensor_scale = np.float32(_check_tensor_scale(np.asarray(tensor_scale)))
        tb = f32_bits(jnp.asarray(tensor_scale, jnp.float32))
    rows = f32_bits(moved).reshape(-1, L)
    pad = nb * k - L
    xb = jnp.pad(rows, ((0, 0), (0, pad)))
    ub = None
    if u is not None:
        ub = jnp.pad(jnp.moveaxis(u, ax, -1).reshape(rows.shape), ((0, 0), (0, pad)))
    if arithmetic != "exact":
        scodes, y, spec_el = _float32_blocks(xb, jnp.asarray(tb, U32), None if gb is None else jnp.asarray(gb, U32),
                                             bfmt, k, smin, max(snan, 0), arithmetic == "float32_div")
        kw = {} if ub is None else dict(random_bits=ub[:, :L], sr_bits=esp.sr_bits, sr_method=sr_method)
        codes = _core_encode(f32_from_bits(y[:, :L]), el, rounding, "saturate", **kw)
        codes = jnp.where(spec_el[:, :L], jnp.asarray(_nan_element_code(el), codes.dtype), codes)
    else:
        scodes, codes = _float_scale_blocks(xb, jnp.asarray(tb, U32), bfmt, k, esp, ssp, smin, max(snan, 0), ub)
    codes = codes[:, :L].astype(cdt)
    codes = jnp.moveaxis(codes.reshape(moved.shape), -1, ax)
    scales = jnp.moveaxis(scodes.astype(sdt).reshape(moved.shape[:-1] + (nb,)), -1, ax)
    return scales, codes


def tensor_scale(x, bfmt, arithmetic="exact"):
    """:func:`emul.blocks.tensor_scale` of float32 x, as a float32 0-d array: the exact s_t, or with
    ``arithmetic="float32_te"`` TransformerEngine's fp32(1 / G), G = fp32(2688 / amax).

    >>> import jax.numpy as jnp
    >>> tensor_scale(jnp.array([2688.0, -1.0]), "nvfp4")
    Array(1., dtype=float32)
    """
    bfmt = _check_format(bfmt, float_scales=True)
    if not bfmt.tensor_scale:
        raise ValueError(f"{bfmt.name}: has no tensor scale")
    if not isinstance(arithmetic, str) or arithmetic not in ARITHMETIC:
        raise ValueError(f"arithmetic={arithmetic!r}: must be one of {', '.join(ARITHMETIC)}")
    if arithmetic == "float32_te":
        xin = _input(x, "x", kinds=("f",))
        if np.dtype(xin.dtype) != np.float32:
            raise TypeError("arithmetic='float32_te': x must be float32 (the peers' input)")
        return f32_from_bits(_recip32(_te_global_bits(f32_bits(xin), bfmt)))
    return f32_from_bits(_tensor_scale_bits(f32_bits(_f32_input(x)), bfmt))


def decode(scales, codes, bfmt, axis=-1, *, tensor_scale=None):
    """The values X * P_i (* s_t) of encoded blocks, bit for bit as :func:`emul.blocks.decode`.

    Power-of-two (e8m0) scales: float32 values built from bits (exact); a value float32 cannot hold
    raises ValueError eagerly (use emul, which returns float64) and is NaN under ``jit``.

    Float scales (NVFP4 and other FloatFormat scales): float64 values, so ``jax_enable_x64`` must be
    on (``jax.config.update("jax_enable_x64", True)`` or ``with jax.enable_x64(True):``; ValueError
    otherwise). ``tensor_scale`` (s_t, a positive finite float32 value) is required for formats with
    a tensor scale and refused otherwise, as in the core. Each value is computed exactly in integers:
    the odd significands of P, X and s_t (at most p_el, p_sc and 24 bits) are multiplied in uint64
    and the float64 pattern is built from the product and the summed exponents. That product is
    exact in binary64, and so are the core's two float64 products X * s_t and P * (X * s_t):
    :class:`emul.blocks.BlockFormat` admits only formats with p_el + p_sc + p_t <= 53 whose values
    lie in float64's normal range (NVFP4: 2 + 4 + 24 = 30 bits, magnitudes 2**-159 … 6 * 448 *
    float32 max < 2**139), so neither product rounds, overflows or is subnormal, and both give the
    exact value. Zeros keep the sign P's sign xor X's (s_t > 0). NaN and inf follow the core's
    float64 products: a NaN element gives its own NaN, else a NaN scale its NaN (signed as its
    code), inf times a nonzero finite value a signed inf, inf times 0 the NaN that float64 0 * inf
    gives on this machine. (Where an element NaN meets a scale NaN of the other sign — generic
    formats; NVFP4's e2m1 has no NaN — NumPy's multiply returns either operand's NaN by the
    element's position in its loop, so the core's NaN sign is not fixed there.) Codes or scales outside their format raise ValueError eagerly and decode
    to NaN under ``jit``, as does a traced s_t that is not positive and finite. Element and scale
    formats of at most 16 bits (NVFP4: 4 and 8).

    >>> import jax.numpy as jnp
    >>> decode(jnp.array([128], jnp.uint8), jnp.array([126, 48], jnp.uint8), "mxfp8_e4m3")
    Array([896.,   1.], dtype=float32)
    """
    bfmt = block_format(bfmt)
    if isinstance(bfmt.scale, FloatFormat):
        return _decode_float_scales(scales, codes, bfmt, axis, tensor_scale)
    bfmt = _check_format(bfmt)
    if tensor_scale is not None:
        raise ValueError(f"tensor_scale=: {bfmt.name} has no tensor scale")
    c = jnp.asarray(codes)
    s = jnp.asarray(scales)
    c, s, ax, k, L = _check_shapes(c, s, bfmt, axis)
    P = _core_decode(c, bfmt.element)
    if not isinstance(s, jax.core.Tracer) and s.size and (int(jnp.min(s)) < 0 or int(jnp.max(s)) > 255):
        raise ValueError(f"scales: codes must be in [0, 256) for e8m0 (got {int(jnp.min(s))} … {int(jnp.max(s))})")
    out, exact = _decode_jit(P, s, ax, k, L)
    if not isinstance(out, jax.core.Tracer) and out.size and not bool(jnp.all(exact)):
        raise ValueError(f"decode: some values of {bfmt.name} here are not float32 values; use emul.blocks "
                         "(float64)")
    return out


def _check_shapes(c, s, bfmt, axis):
    """(codes, scales, axis, k, L) validated as the core validates them."""
    if c.ndim == 0:
        raise ValueError("codes: a 0-d array has no axis to block")
    if not -c.ndim <= axis < c.ndim:
        raise ValueError(f"axis={axis}: out of range for an array with {c.ndim} dimension(s)")
    ax = axis % c.ndim
    L = c.shape[ax]
    k = bfmt.block if bfmt.block is not None else max(L, 1)
    nb = -(-L // k)
    want = c.shape[:ax] + (nb,) + c.shape[ax + 1:]
    if s.shape != want:
        raise ValueError(f"scales: shape {s.shape}, but codes of shape {c.shape} in blocks of {k} along axis {ax} "
                         f"need scales of shape {want}")
    for name, arr in (("codes", c), ("scales", s)):
        if np.dtype(arr.dtype).kind not in "iu":
            raise TypeError(f"{name}: dtype {arr.dtype} is not an integer dtype")
    return c, s, ax, k, L


_X64_FIX = ('turn it on with jax.config.update("jax_enable_x64", True) or inside `with jax.enable_x64(True):` '
            '(jax.experimental.enable_x64() in older JAX)')


def _require_x64(bfmt):
    if not jax.config.jax_enable_x64:
        raise ValueError(f"{bfmt.name}: float-scale decode/quantize return float64 values (element x scale x "
                         f"tensor scale needs up to ~30 significant bits, more than float32 holds), which needs "
                         f"jax_enable_x64: {_X64_FIX}; or use emul.blocks")


@functools.lru_cache(maxsize=None)
def _f64_tables(fmt):
    """Per code of a format of at most 16 bits, as the core decodes it: (float64 patterns, odd
    significands m, exponents e, invalid mask); v = ±m * 2**e for finite nonzero v, m = 0 else."""
    from emul.blocks import _decode_table

    vals, bad = _decode_table(fmt)
    bits = vals.view(np.uint64).copy()
    use = np.isfinite(vals) & (vals != 0) & ~bad
    fr, ex = np.frexp(np.where(use, np.abs(vals), 1.0))   # |v| = fr * 2**ex, fr in [0.5, 1)
    sig = (fr * 2.0 ** 53).astype(np.uint64)               # exact: 53 bits
    low = sig & (~sig + np.uint64(1))                      # the lowest set bit (a power of two)
    tz = np.frexp(low.astype(np.float64))[1] - 1
    m = np.where(use, sig >> tz.astype(np.uint64), 0).astype(np.uint64)
    e = np.where(use, ex - 53 + tz, 0).astype(np.int32)
    return bits, m, e, bad


def _default_nan64() -> int:
    """The float64 pattern of 0 * inf in NumPy's multiply on this machine (x86-64: 0xFFF8…)."""
    with np.errstate(invalid="ignore"):
        return int((np.array([np.inf]) * np.array([0.0])).view(np.uint64)[0])


def _decode_float_scales(scales, codes, bfmt, axis, tensor_scale):
    from emul.blocks import _check_tensor_scale

    _require_x64(bfmt)
    el, sc = bfmt.element, bfmt.scale
    if el.bits > 16 or sc.bits > 16:
        raise ValueError(f"{bfmt.name}: emul_jax.blocks decodes float-scale formats with element and scale codes of "
                         "at most 16 bits; use emul.blocks")
    if bfmt.tensor_scale:
        if tensor_scale is None:
            raise ValueError(f"tensor_scale=: {bfmt.name} needs the tensor scale s_t the data was encoded with")
        if not isinstance(tensor_scale, jax.core.Tracer):
            tensor_scale = np.float32(_check_tensor_scale(np.asarray(tensor_scale)))
        tb = f32_bits(jnp.asarray(tensor_scale, jnp.float32))
    elif tensor_scale is not None:
        raise ValueError(f"tensor_scale=: {bfmt.name} has no tensor scale")
    else:
        tb = u32(0x3F800000)
    c, s, ax, k, L = _check_shapes(jnp.asarray(codes), jnp.asarray(scales), bfmt, axis)
    if not isinstance(c, jax.core.Tracer) and not isinstance(s, jax.core.Tracer):
        for name, arr, fmt in (("codes", c, el), ("scales", s, sc)):
            a = np.asarray(arr).reshape(-1).astype(np.int64)
            bad = (a < 0) | (a >= 1 << fmt.bits)
            bad[~bad] = _f64_tables(fmt)[3][a[~bad]]
            if bad.any():
                raise ValueError(f"{name}: {int(a[bad][0]):#x} is not a code of {fmt.name} "
                                 f"(codes are {fmt.bits}-bit patterns)")
    return _float_decode_jit(c, s, jnp.asarray(tb, U32), bfmt, ax, k, L)


def _u64(c: int):
    return np.uint64(c)


@functools.partial(jax.jit, static_argnums=(3, 4, 5, 6))
def _float_decode_jit(c, s, tb, bfmt, ax, k, L):
    """float64 values (exact, built from integer products) of float-scale blocks; see :func:`decode`."""
    el, sc = bfmt.element, bfmt.scale
    sc_e = jnp.repeat(s.astype(I32), k, axis=ax)
    sc_e = lax.slice_in_dim(sc_e, 0, L, axis=ax)
    ci = c.astype(I32)
    ok = (ci >= 0) & (ci < (1 << el.bits)) & (sc_e >= 0) & (sc_e < (1 << sc.bits))
    ci = jnp.clip(ci, 0, (1 << el.bits) - 1)
    si = jnp.clip(sc_e, 0, (1 << sc.bits) - 1)
    pb, pm, pe, pbad = (jnp.asarray(t)[ci] for t in _f64_tables(el))
    xb, xm, xe, xbad = (jnp.asarray(t)[si] for t in _f64_tables(sc))
    ok = ok & ~pbad & ~xbad
    mag, inf_bits = _u64((1 << 63) - 1), _u64(0x7FF0000000000000)
    sign = (pb ^ xb) & _u64(1 << 63)
    fin_p, fin_x = (pb & mag) < inf_bits, (xb & mag) < inf_bits
    nan_p, nan_x = (pb & mag) > inf_bits, (xb & mag) > inf_bits
    zero_p, zero_x = (pb & mag) == _u64(0), (xb & mag) == _u64(0)
    # the exact product m * 2**E (m < 2**53: BlockFormat's precision bound; E in float64's normal range)
    m = pm * xm
    E = pe + xe
    if bfmt.tensor_scale:  # s_t: a positive finite float32 (24-bit significand); anything else -> NaN
        t_ok = (tb >= u32(1)) & (tb < u32(EXP))
        te, tsig = _sig24(jnp.where(t_ok, tb, u32(0x3F800000)))
        m = m * tsig.astype(jnp.uint64)
        E = E + (te - 23)
        ok = ok & t_ok
    lead = 63 - lax.clz(jnp.where(m == _u64(0), _u64(1), m)).astype(I32)
    frac = lax.shift_left(m, (52 - lead).astype(jnp.uint64)) & _u64((1 << 52) - 1)
    out = sign | lax.shift_left((E + lead + 1023).astype(jnp.uint64), _u64(52)) | frac
    out = jnp.where(zero_p | zero_x, sign, out)
    out = jnp.where(~fin_p | ~fin_x, sign | inf_bits, out)  # inf times a nonzero value
    out = jnp.where((~fin_p & zero_x) | (zero_p & ~fin_x), _u64(_default_nan64()), out)
    out = jnp.where(nan_x, xb, out)
    out = jnp.where(nan_p, pb, out)
    out = jnp.where(ok, out, _u64(0x7FF8000000000000))
    return lax.bitcast_convert_type(out, jnp.float64)


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _decode_jit(P, s, ax, k, L):
    sc = jnp.repeat(s.astype(I32), k, axis=ax)
    sc = lax.slice_in_dim(sc, 0, L, axis=ax)
    e = sc - 127
    pb = f32_bits(P)
    a = pb & u32(ABS)
    nan = (sc == 255) | (a > u32(0x7F800000))
    vals = _scaled(pb, -e)
    # exact iff the scaled value is a float32: no overflow, no sentinel below the grid
    ef = (a >> u32(23)).astype(I32)
    _, sig = _sig24(jnp.where(a == 0, u32(0x3F800000), a))
    lsb = jnp.where(ef == 0, -149, ef - 150)
    low_bit = sig & (~sig + u32(1))
    tz = 31 - clz(jnp.where(low_bit == 0, u32(1), low_bit))
    vtop = jnp.where(ef == 0, 31 - clz(jnp.where(a == 0, u32(1), a)) - 149, ef - 127) + e
    inf = a == u32(0x7F800000)  # an inf code of an IEEE element (never encoded): inf * 2**e
    exact = (a == 0) | nan | inf | ((vtop <= 127) & (lsb + tz + e >= -149))
    vals = jnp.where(inf, pb, vals)
    vals = jnp.where(nan, u32(0x7FC00000), jnp.where(exact, vals, u32(0x7FC00000)))
    return f32_from_bits(vals), exact


def quantize(x, bfmt, axis=-1, **kwargs):
    """``decode(*encode(x, ...))`` (see :func:`emul.blocks.quantize`): float32 values for
    power-of-two scales; float64 values for float scales (as ``emul.blocks.quantize(x, ...,
    dtype=np.float64)``; ``jax_enable_x64`` needed), decoded with the ``tensor_scale=`` given or
    the one :func:`tensor_scale` computes from x, as :func:`encode` uses.

    >>> import jax.numpy as jnp
    >>> quantize(jnp.array([960.0, 1.0]), "mxfp8_e4m3")
    Array([896.,   1.], dtype=float32)
    """
    bfmt = _check_format(bfmt, float_scales=True)
    if not isinstance(bfmt.scale, FloatFormat):
        scales, codes = encode(x, bfmt, axis, **kwargs)
        return decode(scales, codes, bfmt, axis)
    _require_x64(bfmt)
    st = None
    if bfmt.tensor_scale:
        st = kwargs.pop("tensor_scale", None)
        if kwargs.get("arithmetic") == "float32_te":
            scales, codes = encode(x, bfmt, axis, tensor_scale=st, **kwargs)
            g = kwargs.get("global_scale")
            if g is None:
                st = tensor_scale(x, bfmt, "float32_te")
            else:
                if not isinstance(g, jax.core.Tracer):
                    from emul.blocks import _check_global_scale

                    g = _check_global_scale(np.asarray(g))
                st = f32_from_bits(_recip32(f32_bits(jnp.asarray(g, jnp.float32))))
            return decode(scales, codes, bfmt, axis, tensor_scale=st)
        if st is None:
            st = tensor_scale(x, bfmt)
    scales, codes = encode(x, bfmt, axis, tensor_scale=st, **kwargs)
    return decode(scales, codes, bfmt, axis, tensor_scale=st)


# -- exponent-only formats (e8m0) as plain formats: emul_jax.encode / decode / quantize -------------

def exp_spec(fmt, rounding="nearest_even", overflow=None, sr_bits=None, sr_method="add"):
    """The RoundSpec of an exponent-only format (validated as the core validates it), or None when
    ``fmt`` is not one. Its values 2**(c - bias) must be float32 values (e8m0: 2**-127 … 2**127)."""
    from emul._params import resolve
    from emul.formats import format as as_format

    try:
        f = as_format(fmt)
    except (TypeError, ValueError):
        return None
    if not isinstance(f, ExpFormat):
        return None
    f, mode, ovf, r, compare = resolve(f, rounding, overflow, sr_bits, sr_method, exp_ok=True)
    if -f.bias < -149 or (1 << f.exp_bits) - 2 - f.bias > 127:
        raise ValueError(f"{f.name}: values 2**{-f.bias} … 2**{(1 << f.exp_bits) - 2 - f.bias} are not all float32 "
                         "values; use emul (the NumPy core)")
    return R.RoundSpec(f, mode, ovf, r, compare)


def _exp_overflow_nan(sp) -> bool:
    """Whether a value rounding above the largest code gives NaN (IEEE 754 §7.4 for a format without
    inf: the modes that do not round toward zero in magnitude), else the largest code."""
    from emul.rounding import Overflow, Rounding

    if sp.overflow != Overflow.IEEE:
        return False
    return sp.rounding.value.startswith("nearest") or sp.rounding in (
        Rounding.STOCHASTIC, Rounding.AWAY_FROM_ZERO, Rounding.UP)


@functools.partial(jax.jit, static_argnums=(0,))
def _exp_codes(sp, x, u, ubad):
    """Codes (uint32) of x in the exponent-only format of sp: x <= 0 and NaN -> the NaN code; +inf
    -> NaN (the max under overflow='saturate'); x below 2**-bias -> code 0; else 2**e <= x <
    2**(e+1) rounds to code e + bias or e + bias + 1 by the mode (the fraction x / 2**e - 1 in F;
    ties and 'odd' read the code's last bit), then the overflow rule."""
    from .quantize import _parts

    f = sp.fmt
    nan_code, max_code = (1 << f.exp_bits) - 1, (1 << f.exp_bits) - 2
    b, kind = _parts(x)
    if kind == "f":
        a = b & u32(ABS)
        neg = (b >> u32(31)) == u32(1)
        ef = a >> u32(23)
        mag = jnp.where(ef == u32(0), a, (a & u32(0x7FFFFF)) | u32(0x800000))
        e0 = lax.convert_element_type(jnp.maximum(ef, u32(1)), I32) - np.int32(150)
        nan = a > u32(EXP)
        inf = a == u32(EXP)
    else:
        v = lax.convert_element_type(x, I32) if kind == "i" else None
        neg = (v < 0) if kind == "i" else jnp.zeros(b.shape, bool)
        mag = jnp.where(neg, u32(0), b if kind == "u" else lax.convert_element_type(v, U32))
        e0 = jnp.zeros(b.shape, I32)
        nan = inf = jnp.zeros(b.shape, bool)
    lead = np.int32(31) - lax.convert_element_type(clz(mag), I32)  # the leading one's position
    e = lead + e0
    F = shl(shl(mag, np.int32(31) - lead), np.int32(1))  # the bits below the leading one, at the top
    c0 = e + np.int32(f.bias)
    lsb = lax.convert_element_type(c0 & np.int32(1), U32)
    inc = R.increment(sp, lsb, F, None, jnp.zeros(b.shape, U32), u)
    code = c0 + lax.convert_element_type(inc, I32)
    over = code > np.int32(max_code)
    code = jnp.where(over, np.int32(nan_code if _exp_overflow_nan(sp) else max_code), code)
    code = jnp.where(c0 < 0, np.int32(0), code)  # below 2**-bias: the smallest code (there is no zero)
    code = lax.convert_element_type(code, U32)
    bad = neg | (mag == u32(0)) | nan
    if ubad is not None:
        bad = bad | ubad
    code = jnp.where(inf & ~neg, u32(max_code if sp.overflow.value == "saturate" else nan_code), code)
    return jnp.where(bad & ~(inf & ~neg), u32(nan_code), code)


def _exp_value_bits(sp, c):
    """float32 patterns of codes c (uint32; valid ones): 2**(c - bias), the NaN code -> NaN."""
    k = lax.convert_element_type(c, I32) - np.int32(sp.fmt.bias)
    normal = shl(lax.convert_element_type(k + np.int32(127), U32), np.int32(23))
    sub = shl(u32(1), k + np.int32(149))
    bits = jnp.where(k >= np.int32(-126), normal, sub)
    return jnp.where(c == u32((1 << sp.fmt.exp_bits) - 1), u32(R.F32_NAN), bits)


@functools.partial(jax.jit, static_argnums=(0,))
def _exp_decode_jit(sp, codes):
    c = lax.convert_element_type(codes, U32)
    ok = c < u32(1 << sp.fmt.exp_bits)
    if np.dtype(codes.dtype).kind == "i":
        ok = ok & (codes >= 0)
    return f32_from_bits(jnp.where(ok, _exp_value_bits(sp, c), u32(R.F32_NAN))), ok


def exp_encode(x, sp, key=None, random_bits=None):
    """``emul_jax.encode`` of an exponent-only format (uint8 codes for e8m0)."""
    xa = _input(x)
    u, ubad = _sr_words(sp, xa.shape, key, random_bits)
    out = _exp_codes(sp, xa, u, ubad)
    return lax.convert_element_type(out, jnp.uint8 if sp.fmt.bits <= 8 else jnp.uint16)


def exp_decode(codes, sp):
    """``emul_jax.decode`` of an exponent-only format: float32 values 2**(c - bias), NaN for the NaN
    code; a code outside [0, 2**exp_bits) raises ValueError eagerly (NaN under jit)."""
    from .quantize import _is_traced

    c = _input(codes, "codes", kinds=("i",))
    if np.dtype(c.dtype).kind not in "iub":
        raise TypeError(f"codes: dtype {c.dtype} is not an integer dtype")
    out, ok = _exp_decode_jit(sp, c)
    if not _is_traced(c) and c.size and not bool(jnp.all(ok)):
        bad = int(np.asarray(c)[~np.asarray(ok)].flat[0])
        raise ValueError(f"codes: {bad:#x} is not a code of {sp.fmt.name} (codes are 0 … {(1 << sp.fmt.bits) - 1:#x})")
    return out


def exp_quantize(x, sp, key=None, random_bits=None, ste="identity"):
    """``emul_jax.quantize`` of an exponent-only format: the float32 values of :func:`exp_encode`;
    gradient ``"identity"`` or ``"none"`` (``"clipped"`` has no range to clip to here)."""
    if ste not in ("identity", "none"):
        raise ValueError(f"ste={ste!r}: {sp.fmt.name} (exponent-only) takes 'identity' or 'none'")
    xa = _input(x)
    u, ubad = _sr_words(sp, xa.shape, key, random_bits)
    return _exp_quantize_ste(sp, ste, xa, u, ubad)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _exp_quantize_ste(sp, ste, x, u, ubad):
    return f32_from_bits(_exp_value_bits(sp, _exp_codes(sp, x, u, ubad)))


@_exp_quantize_ste.defjvp
def _exp_quantize_ste_jvp(sp, ste, primals, tangents):
    x, u, ubad = primals
    out = _exp_quantize_ste(sp, ste, x, u, ubad)
    dx = tangents[0]
    if ste == "none" or not jnp.issubdtype(x.dtype, jnp.floating):
        return out, jnp.zeros_like(out)
    return out, lax.convert_element_type(dx, jnp.float32)

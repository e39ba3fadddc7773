"""Block-scaled formats in JAX: ``encode``, ``decode``, ``quantize`` bit for bit as :mod:`emul.blocks`.

Power-of-two (exponent-only, e8m0) scales — the OCP MX presets and generic ``{element}/e8m0/{k}``
formats — on float32 inputs (float16/bfloat16 widened exactly), every scale rule, scale overflow
setting, tail and element rounding mode (SR with ``key=`` or ``random_bits=``, word i for element
i of x in C order, as the core). docs/blocks.md gives the semantics. The scale comes from the
block's exact amax in integer operations; x / 2**e is built as float32 bits (exact; a nonzero
quotient below float32's grid becomes the smallest subnormal of its sign, which every element format
with quantum >= 2**-90 rounds as the exact value in every mode), then rounded by
:func:`emul_jax.encode` with ``overflow="saturate"``. Float scale formats (NVFP4) are not mirrored:
ValueError. ``decode`` returns float32 values built from bits; a value that float32 cannot hold
exactly raises ValueError eagerly (use emul, which returns float64) and is NaN under ``jit``.
"""

from __future__ import annotations

import functools
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from emul.blocks import SCALE_OVERFLOW, SCALE_RULES, TAILS, _element_emax, _element_precision, _quantum_exp
from emul.blocks import format as block_format
from emul.formats import ExpFormat, FixedFormat, FloatFormat

from .quantize import _input, _spec, _sr_words, decode as _core_decode, encode as _core_encode
from ._bits import ABS, SIGN, U32, clz, f32_bits, f32_from_bits, u32

__all__ = ["encode", "decode", "quantize"]

I32 = jnp.int32


def _check_format(bfmt):
    bfmt = block_format(bfmt)
    el, sc = bfmt.element, bfmt.scale
    if not isinstance(sc, ExpFormat) or sc.exp_bits != 8 or sc.bias != 127:
        raise ValueError(f"{bfmt.name}: emul_jax.blocks mirrors e8m0 (power-of-two) scales only; use emul.blocks")
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
           key=None, random_bits=None, sr_bits=None, sr_method="add"):
    """``(scales, codes)`` as :func:`emul.blocks.encode` (power-of-two scales, float inputs).

    >>> import jax.numpy as jnp
    >>> s, c = encode(jnp.array([960.0, 1.0]), "mxfp8_e4m3")
    >>> s, c
    (Array([128], dtype=uint8), Array([126,  48], dtype=uint8))
    """
    bfmt = _check_format(bfmt)
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


def decode(scales, codes, bfmt, axis=-1):
    """float32 values X * P_i, built from bits (exact); see the module docstring.

    >>> import jax.numpy as jnp
    >>> decode(jnp.array([128], jnp.uint8), jnp.array([126, 48], jnp.uint8), "mxfp8_e4m3")
    Array([896.,   1.], dtype=float32)
    """
    bfmt = _check_format(bfmt)
    c = jnp.asarray(codes)
    s = jnp.asarray(scales)
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
    P = _core_decode(c, bfmt.element)
    if np.dtype(s.dtype).kind not in "iu":
        raise TypeError(f"scales: dtype {s.dtype} is not an integer dtype")
    if not isinstance(s, jax.core.Tracer) and s.size and (int(jnp.min(s)) < 0 or int(jnp.max(s)) > 255):
        raise ValueError(f"scales: codes must be in [0, 256) for e8m0 (got {int(jnp.min(s))} … {int(jnp.max(s))})")
    out, exact = _decode_jit(P, s, ax, k, L)
    if not isinstance(out, jax.core.Tracer) and out.size and not bool(jnp.all(exact)):
        raise ValueError(f"decode: some values of {bfmt.name} here are not float32 values; use emul.blocks "
                         "(float64)")
    return out


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
    """``decode(*encode(x, ...))`` as float32 (see :func:`emul.blocks.quantize`).

    >>> import jax.numpy as jnp
    >>> quantize(jnp.array([960.0, 1.0]), "mxfp8_e4m3")
    Array([896.,   1.], dtype=float32)
    """
    scales, codes = encode(x, bfmt, axis, **kwargs)
    return decode(scales, codes, bfmt, axis)

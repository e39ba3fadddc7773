"""quantize, encode, decode in JAX: the exact value of each input rounded once, bit for bit as emul.

Same names, arguments and semantics as :mod:`emul.quantize` (see ``docs/rounding.md``), with JAX's
conventions: ``key=`` is a JAX key (words from ``jax.random.bits``, the core's layout), values come
back as float32, formats and modes are static (each configuration compiles once), and ``quantize``
is differentiable with a straight-through estimator (``ste=``). ``docs/jax.md`` states the parity
guarantee, what happens under ``jit`` to inputs the core would reject, and the estimators.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import checkify

from emul._kernels import slots as K
from emul.formats import FixedFormat, FloatFormat
from emul.quantize import _fits_float32
from emul.rounding import Rounding

from . import _round as R
from ._bits import (ABS, EXP, SIGN, U32, bf16_to_f32_bits, f16_to_f32_bits, f32_bits, f32_from_bits, u32)

__all__ = ["quantize", "encode", "decode"]

STE = ("identity", "clipped", "none")
_INT_DTYPES = tuple(np.dtype(t) for t in (np.int8, np.int16, np.int32, np.uint8, np.uint16, np.uint32, np.bool_))
_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float16), np.dtype(jnp.bfloat16))


# -- arguments ------------------------------------------------------------------------------------

def _spec(fmt, rounding, overflow, sr_bits, sr_method, what):
    sp = R.spec(fmt, rounding, overflow, sr_bits, sr_method)
    if what != "encode":
        _check_fits_float32(sp.fmt, what)
    elif sp.is_float and not _fits_float32(sp.fmt):
        _check_fits_float32(sp.fmt, what)
    return sp


def _exp_spec(fmt, rounding="nearest_even", overflow=None, sr_bits=None, sr_method="add"):
    """The spec of an exponent-only format (e8m0: emul_jax/blocks.py rounds it), else None."""
    from emul.formats import ExpFormat

    if isinstance(fmt, ExpFormat) or (isinstance(fmt, str) and "m0" in fmt.lower()):
        from .blocks import exp_spec

        return exp_spec(fmt, rounding, overflow, sr_bits, sr_method)
    return None


def _check_fits_float32(fmt, what):
    if _fits_float32(fmt):
        return
    if isinstance(fmt, FixedFormat):
        raise ValueError(f"{what}: values of {fmt.name} do not fit float32 exactly (bits <= 24 needed); "
                         "emul_jax returns float32 (jax_enable_x64 is not supported): use encode")
    raise ValueError(f"{what}: values of {fmt.name} do not fit float32 exactly (man_bits <= 23 and "
                     "exponents within float32's, subnormals included, needed); emul_jax works on float32 "
                     "(jax_enable_x64 is not supported): use emul (the NumPy core) for this format")


def _is_traced(a) -> bool:
    return isinstance(a, jax.core.Tracer)


def _input(x, name="x", kinds=("f", "i")):
    """x as a JAX array of a dtype emul_jax reads exactly: float32, float16, bfloat16, or an integer
    of at most 32 bits (bool as 0/1). Concrete float64/int64 inputs (NumPy arrays, Python scalars)
    are accepted only when every value is exactly a float32 / a 32-bit integer: emul_jax never
    rounds an input before rounding it to the format."""
    if isinstance(x, (jax.Array, jax.core.Tracer)):
        dt = np.dtype(x.dtype)
        if dt in _FLOAT_DTYPES or dt in _INT_DTYPES:
            return x
        raise TypeError(_dtype_message(name, dt))
    try:
        a = np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name}: cannot be read as a numeric array ({exc})") from None
    dt = a.dtype
    if dt in _FLOAT_DTYPES or dt in _INT_DTYPES:
        return jnp.asarray(a)
    if dt.kind == "f" and dt.itemsize == 8 and "f" in kinds:
        with np.errstate(over="ignore", invalid="ignore"):
            narrow = a.astype(np.float32)
        same = (narrow.astype(np.float64) == a) | (np.isnan(a) & np.isnan(narrow))
        if not same.all():
            bad = a[~same].flat[0]
            raise ValueError(f"{name}: float64 value {bad!r} is not a float32; emul_jax reads float32 exactly "
                             "(x64 off) and never rounds an input twice — pass float32 values "
                             "(np.float32 / jnp.asarray(x, jnp.float32)) or use emul for float64")
        return jnp.asarray(narrow)
    if dt.kind in "iu" and dt.itemsize == 8:
        if a.size == 0:
            return jnp.asarray(a.astype(np.int32))
        lo, hi = int(a.min()), int(a.max())
        if lo >= -(1 << 31) and hi < 1 << 31:
            return jnp.asarray(a.astype(np.int32))
        if lo >= 0 and hi < 1 << 32:
            return jnp.asarray(a.astype(np.uint32))
        raise ValueError(f"{name}: integer value {lo if lo < -(1 << 31) else hi} does not fit 32 bits; "
                         "emul_jax works in 32-bit lanes (jax_enable_x64 is not supported): use emul")
    raise TypeError(_dtype_message(name, dt))


def _dtype_message(name, dt):
    wide = (" (64-bit dtypes need jax_enable_x64, which emul_jax does not support)"
            if dt.itemsize == 8 and dt.kind in "fiu" else "")
    return (f"{name}: dtype {dt} is not supported{wide}; expected float32, float16, bfloat16 or an "
            "integer dtype of at most 32 bits")


def _parts(x):
    """(b, kind): float inputs as float32 bit patterns (kind "f"), integers as int32/uint32 (kind
    "i" or "u")."""
    dt = np.dtype(x.dtype)
    if dt == np.float32:
        return f32_bits(x), "f"
    if dt == np.float16:
        return f16_to_f32_bits(lax.bitcast_convert_type(x, jnp.uint16)), "f"
    if dt == np.dtype(jnp.bfloat16):
        return bf16_to_f32_bits(lax.bitcast_convert_type(x, jnp.uint16)), "f"
    if dt.kind == "u" or dt == np.bool_:
        return lax.convert_element_type(x, U32), "u"
    return lax.convert_element_type(x, jnp.int32), "i"


def _sr_words(sp, shape, key, random_bits):
    """(u, ubad): the SR words for a result of ``shape`` (uint32, ``>> (32 - r)`` already applied)
    and, for traced ``random_bits``, a bool mask of words outside [0, 2**r) (else None)."""
    given = [name for name, v in (("key", key), ("random_bits", random_bits)) if v is not None]
    if not sp.stochastic:
        if given:
            raise ValueError(f"{given[0]}: only used with rounding='stochastic' (got {sp.rounding.value!r})")
        return None, None
    if len(given) != 1:
        raise ValueError("rounding='stochastic' needs exactly one of key= or random_bits= "
                         f"(got {', '.join(given) if given else 'none'})")
    r = sp.sr_bits
    if key is not None:
        words = random_words(_as_key(key), shape)
        return (words >> u32(32 - r) if r < 32 else words), None
    rb = random_bits
    if not isinstance(rb, (jax.Array, jax.core.Tracer)):
        rb = np.asarray(rb)
    dt = np.dtype(rb.dtype)
    if dt.kind not in "iu":
        raise TypeError(f"random_bits: dtype {dt} is not an integer dtype")
    try:
        target = jnp.broadcast_shapes(np.shape(rb), shape)
    except ValueError:
        target = None
    if target != tuple(shape):
        raise ValueError(f"random_bits: shape {np.shape(rb)} does not broadcast to the result shape {tuple(shape)}")
    if not _is_traced(rb):
        a = np.asarray(rb)
        if a.size:
            lo, hi = int(a.min()), int(a.max())
            if lo < 0 or hi >= 1 << r:
                bad = lo if lo < 0 else hi
                raise ValueError(f"random_bits: value {bad} is outside [0, 2**{r}) for sr_bits={r}")
        return jnp.broadcast_to(jnp.asarray(a.astype(np.uint32)), shape), None
    if dt.itemsize > 4:
        raise TypeError(_dtype_message("random_bits", dt))
    ubad = jnp.zeros(np.shape(rb), bool)
    if dt.kind == "i":
        ubad = ubad | (rb < 0)
    if r < 8 * dt.itemsize - (dt.kind == "i"):
        ubad = ubad | (rb > (1 << r) - 1)
    u = lax.convert_element_type(rb, U32)
    return jnp.broadcast_to(u, shape), jnp.broadcast_to(ubad, shape)


_THREEFRY_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def random_words(key, shape):
    """``jax.random.bits(key, shape, uint32)`` (a typed threefry2x32 key), the same words.

    Word i (C order) is ``y0 ^ y1`` of ``(y0, y1) = threefry2x32(key, (0, i))``, which is what
    ``jax.random.bits`` gives with ``jax_threefry_partitionable`` on (JAX's default, and the layout
    of :func:`emul.random.bits`). Written out here as 20 rounds of uint32 add/rotate/xor that
    XLA fuses into one loop: 3-4x faster on CPU than ``jax.random.bits``. With the flag off, or
    for 2**32 words or more, this calls ``jax.random.bits`` itself."""
    shape = tuple(int(d) for d in shape)
    size = int(np.prod(shape, dtype=np.int64))
    if not jax.config.jax_threefry_partitionable or size >= 1 << 32:
        return jax.random.bits(key, shape, jnp.uint32)
    kd = jax.random.key_data(key)
    ks = (kd[0], kd[1], kd[0] ^ kd[1] ^ u32(0x1BD11BDA))
    x0 = jnp.full((size,), ks[0], U32)  # the high counter word, 0, plus the key
    x1 = lax.iota(U32, size) + ks[1]
    for i in range(5):
        for rot in _THREEFRY_ROTATIONS[i % 2]:
            x0 = x0 + x1
            x1 = x0 ^ ((x1 << u32(rot)) | (x1 >> u32(32 - rot)))
        x0 = x0 + ks[(i + 1) % 3]
        x1 = x1 + ks[(i + 2) % 3] + u32(i + 1)
    return (x0 ^ x1).reshape(shape)


def _as_key(key):
    """A typed threefry key from ``key``: a typed key (``jax.random.key``) or two uint32 words."""
    if isinstance(key, (jax.Array, jax.core.Tracer)) and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        impl = str(jax.random.key_impl(key))
        if impl != "threefry2x32":
            raise ValueError(f"key: JAX key with impl {impl!r}; only 'threefry2x32' is supported")
        if key.shape != ():
            raise ValueError(f"key: expected one key, got a key array of shape {key.shape}")
        return key
    if not isinstance(key, (jax.Array, jax.core.Tracer)):
        a = np.asarray(key)
        if a.dtype.kind not in "iu":
            raise TypeError(f"key: expected 2 uint32 words or a JAX key, got dtype {a.dtype}")
        if a.shape != (2,):
            hint = " (use jax.random.key(seed) for an integer seed)" if a.ndim == 0 else ""
            raise ValueError(f"key: expected 2 uint32 words, got shape {a.shape}{hint}")
        if a.dtype != np.uint32 and not ((a >= 0).all() and (a <= 0xFFFFFFFF).all()):
            raise ValueError(f"key: words must be in [0, 2**32), got {a.tolist()}")
        key = jnp.asarray(a.astype(np.uint32))
    if np.dtype(key.dtype).kind not in "iu" or key.shape != (2,):
        raise ValueError(f"key: expected 2 uint32 words or a JAX key, got {key.dtype}{list(key.shape)}")
    return jax.random.wrap_key_data(lax.convert_element_type(key, U32), impl="threefry2x32")


# -- the computation (jitted per configuration) ---------------------------------------------------

def _round(sp, x, u, ubad, values):
    """Codes (uint32) or float32 patterns of x rounded by sp; invalid elements as docs/jax.md says."""
    b, kind = _parts(x)
    if kind == "f":
        if R.fast_f32(sp):
            out = R.round_f32(sp, b, u, values=values)
            sign = b >> u32(31)
        else:
            a = b & u32(ABS)
            sign = b >> u32(31)
            ef = a >> u32(23)
            mant = jnp.where(ef == u32(0), a, (a & u32(0x7FFFFF)) | u32(0x800000))
            e = lax.convert_element_type(jnp.maximum(ef, u32(1)), jnp.int32) - np.int32(150)
            if R.fast_fixed_f32(sp):
                code = R.round_fixed_f32(sp, sign, mant, e)(u)
            else:
                code = R.round_parts(sp, sign, None, mant, e, None, u)
            code = jnp.where(a >= u32(EXP), R.special_code(sp, sign, a > u32(EXP)), code)
            out = R.code_to_f32_bits(sp, code) if values else code
            if values:  # what NaN/inf the format cannot take become: NaN with the input's sign
                bad = _bad_specials(sp, b)
                if bad is not None:
                    out = jnp.where(bad, u32(R.F32_NAN) | (sign << u32(31)), out)
    else:
        if kind == "i":
            sign = lax.convert_element_type(x < 0, U32) if np.dtype(x.dtype).kind == "i" else jnp.zeros(x.shape, U32)
            v = lax.convert_element_type(x, jnp.int32)
            mag = jnp.where(v < 0, u32(0) - lax.convert_element_type(v, U32), lax.convert_element_type(v, U32))
        else:
            sign, mag = jnp.zeros(b.shape, U32), b
        code = R.round_parts(sp, sign, None, mag, jnp.zeros(b.shape, jnp.int32), None, u)
        out = R.code_to_f32_bits(sp, code) if values else code
    if ubad is not None:
        bad_out = u32(R.F32_NAN) | (sign << u32(31)) if values else R.bad_code(sp, sign)
        out = jnp.where(ubad, bad_out, out)
    if values:
        return f32_from_bits(out)
    return lax.convert_element_type(out, _code_dtype(sp.fmt))


def _bad_specials(sp, b):
    """Mask of float inputs the format cannot take (NaN without NaN codes, ±inf under wrap), or None."""
    a = b & u32(ABS)
    bad = None
    if sp.nan_codes is None:
        bad = a > u32(EXP)
    if not sp.is_float and sp.P[K.RULE] in (K.RULE_WRAP, K.RULE_WRAP_SM):
        inf = a == u32(EXP)
        bad = inf if bad is None else bad | inf
    return bad


@functools.partial(jax.jit, static_argnums=(0, 4))
def _round_jit(sp, x, u, ubad, values):
    return _round(sp, x, u, ubad, values)


@functools.partial(jax.jit, static_argnums=(0,))
def _count_bad(sp, x):
    """(#NaN the format cannot take, #inf the rule cannot take) of float inputs."""
    b, _ = _parts(x)
    a = b & u32(ABS)
    n_nan = jnp.sum(a > u32(EXP)) if sp.nan_codes is None else jnp.int32(0)
    wrap = not sp.is_float and sp.P[K.RULE] in (K.RULE_WRAP, K.RULE_WRAP_SM)
    n_inf = jnp.sum(a == u32(EXP)) if wrap else jnp.int32(0)
    return n_nan, n_inf


def _check_inputs(sp, x, ubad):
    """Eagerly: the core's ValueErrors. Traced: checkify.debug_check (reported under
    ``checkify.checkify``; a no-op otherwise) — the elements themselves follow docs/jax.md."""
    floating = np.dtype(x.dtype).kind != "i" and np.dtype(x.dtype) not in _INT_DTYPES
    wrap = not sp.is_float and sp.P[K.RULE] in (K.RULE_WRAP, K.RULE_WRAP_SM)
    if floating and (sp.nan_codes is None or wrap):
        n_nan, n_inf = _count_bad(sp, x)
        if not _is_traced(x):
            if int(n_nan):
                raise ValueError(f"x: {int(n_nan)} NaN value(s), but {sp.fmt.name} has no NaN, and no overflow rule "
                                 "maps NaN (overflow= decides infinities and out-of-range values only: 'saturate' "
                                 "clamps ±inf); clean the input first, e.g. np.nan_to_num(x, nan=0.0), or use a "
                                 "format with NaN")
            if int(n_inf):
                raise ValueError(f"x: {int(n_inf)} infinite value(s), which overflow={sp.overflow.value!r} "
                                 f"cannot map into {sp.fmt.name}; use a saturate rule")
        else:
            checkify.debug_check(n_nan == 0, f"x: NaN value(s), but {sp.fmt.name} has no NaN")
            checkify.debug_check(n_inf == 0, f"x: infinite value(s), which overflow={sp.overflow.value!r} "
                                             f"cannot map into {sp.fmt.name}")
    if ubad is not None:
        checkify.debug_check(~jnp.any(ubad), f"random_bits: value(s) outside [0, 2**{sp.sr_bits}) "
                                              f"for sr_bits={sp.sr_bits}")


def _code_dtype(fmt):
    return np.uint8 if fmt.bits <= 8 else np.uint16 if fmt.bits <= 16 else np.uint32


# -- gradients ----------------------------------------------------------------------------------

@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _quantize_ste(sp, ste, x, u, ubad):
    return _round_jit(sp, x, u, ubad, True)


@_quantize_ste.defjvp
def _quantize_ste_jvp(sp, ste, primals, tangents):
    x, u, ubad = primals
    tx = tangents[0]
    y = _quantize_ste(sp, ste, x, u, ubad)
    if ste == "none" or tx.dtype == jax.dtypes.float0:
        return y, jnp.zeros(y.shape, jnp.float32)
    tx = lax.convert_element_type(tx, jnp.float32)
    if ste == "identity":
        return y, tx
    return y, jnp.where(_in_range(sp, x), tx, jnp.float32(0))


def _in_range(sp, x):
    """Whether each float input lies in [min, max] of the format (exactly, on bit patterns;
    floats: [-max, max]; NaN: False)."""
    b, _ = _parts(x)
    fmt = sp.fmt
    lo, hi = (-fmt.max, fmt.max) if isinstance(fmt, FloatFormat) else (fmt.min, fmt.max)
    key = _order_key(b)
    lo_k, hi_k = (int(_order_key(np.float32(v).view(np.uint32))) for v in (lo, hi))
    return ((b & u32(ABS)) <= u32(EXP)) & (key >= u32(lo_k)) & (key <= u32(hi_k))


def _order_key(b):
    """A uint32 that orders float32 patterns by value (-0 and +0 equal; NaN not ordered)."""
    if isinstance(b, np.uint32):
        b = int(b)
        b = 0 if b == SIGN else b
        return np.uint32((~b & 0xFFFFFFFF) if b & SIGN else b | SIGN)
    b = jnp.where(b == u32(SIGN), u32(0), b)
    return jnp.where(b >= u32(SIGN), ~b, b | u32(SIGN))


# -- public functions ---------------------------------------------------------------------------

def quantize(x, fmt, rounding="nearest_even", overflow=None, *, key=None, random_bits=None, sr_bits=None,
             sr_method="add", ste="identity"):
    """Round every element of ``x`` once to ``fmt``; the rounded values as float32.

    Args:
      x: float32 (bit-exact parity with ``emul.quantize``), float16/bfloat16 (widened exactly), or
        integers of at most 32 bits (their exact values). Concrete float64/int64 values (NumPy,
        Python scalars) are accepted when each is exactly a float32 / fits 32 bits.
      fmt: a format or its name; every value must be a float32 (else ValueError; use :func:`encode`).
      rounding, overflow, sr_bits, sr_method: as :func:`emul.quantize` (static).
      key: a JAX key (``jax.random.key(s)``) or two uint32 words: SR words
        ``jax.random.bits(key, x.shape, uint32) >> (32 - sr_bits)``, word i for element i (C order)
        — ``key=jax.random.key(s)`` gives ``emul.quantize(..., seed=s)`` bit for bit.
      random_bits: integers in [0, 2**sr_bits) broadcastable to ``x.shape`` (the other SR source).
      ste: the gradient: ``"identity"`` (d/dx = 1), ``"clipped"`` (1 where -max <= x <= max — fixed
        point: min <= x <= max — else 0), ``"none"`` (0). Static.

    >>> import jax.numpy as jnp
    >>> quantize(jnp.array([1.1, 464.0, 465.0]), "e4m3fn")
    Array([  1.125, 448.   ,     nan], dtype=float32)
    """
    if (esp := _exp_spec(fmt, rounding, overflow, sr_bits, sr_method)) is not None:
        from .blocks import exp_quantize

        return exp_quantize(x, esp, key, random_bits, ste)
    sp = _spec(fmt, rounding, overflow, sr_bits, sr_method, "quantize")
    if ste not in STE:
        raise ValueError(f"ste={ste!r}: must be one of {', '.join(map(repr, STE))}")
    xa = _input(x)
    u, ubad = _sr_words(sp, xa.shape, key, random_bits)
    _check_inputs(sp, xa, ubad)
    return _quantize_ste(sp, ste, xa, u, ubad)


def _quantize_unchecked(x, fmt, rounding="nearest_even", overflow=None, *, key=None, sr_bits=None,
                        sr_method="add"):
    """:func:`quantize` (identity STE, ``key=`` words) without the checkify reports of traced
    inputs: the same values. For emul_jax.ops' training quantizers, called under ``jit``: a traced
    ``checkify.debug_check`` gives the jitted caller an effect, and every call of a jitted function
    with an effect takes JAX's slow Python dispatch (tens of microseconds to a millisecond per
    training step). Eager calls still raise the core's ValueErrors."""
    sp = _spec(fmt, rounding, overflow, sr_bits, sr_method, "quantize")
    xa = _input(x)
    u, ubad = _sr_words(sp, xa.shape, key, None)
    if not _is_traced(xa):
        _check_inputs(sp, xa, ubad)
    return _quantize_ste(sp, "identity", xa, u, ubad)


def encode(x, fmt, rounding="nearest_even", overflow=None, *, key=None, random_bits=None, sr_bits=None,
           sr_method="add"):
    """Like :func:`quantize`, but the codes: uint8/uint16/uint32, the smallest holding ``fmt.bits``
    (fixed point: the two's complement pattern; any fixed format of at most 32 bits).

    >>> import jax.numpy as jnp
    >>> encode(jnp.array([448.0, -0.0, jnp.nan]), "e4m3fn")
    Array([126, 128, 127], dtype=uint8)
    """
    if (esp := _exp_spec(fmt, rounding, overflow, sr_bits, sr_method)) is not None:  # e8m0
        from .blocks import exp_encode

        return exp_encode(x, esp, key, random_bits)
    sp = _spec(fmt, rounding, overflow, sr_bits, sr_method, "encode")
    xa = _input(x)
    u, ubad = _sr_words(sp, xa.shape, key, random_bits)
    _check_inputs(sp, xa, ubad)
    return _round_jit(sp, xa, u, ubad, False)


@functools.partial(jax.jit, static_argnums=(0,))
def _decode_jit(sp, codes):
    c = lax.convert_element_type(codes, U32)
    ok = R.code_valid(sp, c)
    if np.dtype(codes.dtype).kind == "i":
        ok = ok & (codes >= 0)
    out = jnp.where(ok, R.code_to_f32_bits(sp, c), u32(R.F32_NAN))
    return f32_from_bits(out), ok


def decode(codes, fmt):
    """The float32 value of every code (built from bits; subnormal float32 results are exact).

    A code outside ``[0, 2**fmt.bits)`` or invalid for the format raises ValueError eagerly; under
    ``jit`` it decodes to NaN (and ``checkify`` reports it).

    >>> import jax.numpy as jnp
    >>> decode(jnp.array([0x7e, 0x80, 0x7f], jnp.uint8), "e4m3fn")
    Array([448.,  -0.,  nan], dtype=float32)
    """
    if (esp := _exp_spec(fmt)) is not None:
        from .blocks import exp_decode

        return exp_decode(codes, esp)
    sp = _spec(fmt, "nearest_even", None, None, "add", "decode")
    c = _input(codes, "codes", kinds=("i",))
    if np.dtype(c.dtype).kind not in "iub":
        raise TypeError(f"codes: dtype {c.dtype} is not an integer dtype")
    out, ok = _decode_jit(sp, c)
    if not _is_traced(c):
        if c.size and not bool(jnp.all(ok)):
            flat_ok = np.asarray(ok).reshape(-1)
            first = int(np.asarray(c).reshape(-1)[~flat_ok][0])
            if first < 0:
                raise ValueError(f"codes: negative code {first}; codes are unsigned {sp.bits}-bit patterns")
            rule = "" if getattr(sp.fmt, "subnormals", True) else ", and without subnormals e == 0 needs f == 0"
            raise ValueError(f"codes: {first:#x} is not a code of {sp.fmt.name} "
                             f"(codes are {sp.bits}-bit patterns{rule})")
    else:
        checkify.debug_check(jnp.all(ok), f"codes: invalid code(s) for {sp.fmt.name}")
    return out

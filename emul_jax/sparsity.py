"""N:M sparsity in pure JAX, bit for bit equal to :mod:`emul.sparsity` (docs/sparsity.md, docs/jax.md).

Same names, arguments and semantics as the core; ``n``, ``m``, ``axis``, ``ties``, ``method`` and
``layout`` are static (``jax.jit`` compiles once per configuration), arrays may be traced.

* :func:`nm_mask` / :func:`nm_prune` -- top-n magnitudes per block of ``m``.
* :func:`mvue` -- minimum-variance unbiased n:m estimate (``"exact"``, any n <= m; ``"approx"``,
  2:4), with the core's word-per-block layout: ``key=jax.random.key(s)`` gives the bits of
  ``emul.sparsity.mvue(x, ..., seed=s)``.
* :func:`transposable_mask` -- ``"greedy"`` for every n:m and ``"optimal"`` for 2:4 in JAX;
  ``"optimal"`` for other n:m is a host call to the core (``jax.pure_callback``).

How the bits are kept equal to the core's (docs/jax.md).  XLA's float arithmetic cannot be
trusted to round like the core: on CPU it flushes float32 subnormals to zero in arithmetic and in
comparisons, it contracts ``a*b+c`` into an FMA, it rewrites ``x/c`` into ``x*(1/c)``, and GPU
float32 division is not IEEE by default.  So the general path performs **no float arithmetic and
no float comparison at all**: every value is handled as its ``uint32`` bit pattern, magnitudes are
compared as unsigned integers (for non-negative non-NaN floats the bit pattern is monotone in the
value), and the float operations the core's MVUE performs (``+``, ``*``, ``/`` on non-negative
values, each rounded to nearest-even in the core's working format, subnormals and overflow
included) are computed exactly in integer arithmetic by the ``_add`` / ``_mul`` / ``_div``
helpers below (a small soft-float: align-and-add with a sticky bit, a 24x24-bit product from
12-bit limbs, a bit-serial long division).  The results therefore do not depend on the backend,
on XLA flags, on FTZ/DAZ modes or on operation fusion: by construction CPU, GPU and TPU give
the same bits (the parity suite has run on CPU only so far).
The comparisons ``u + j < C`` with ``u = word / 2**32`` are exact integer comparisons, and the
scores of the optimal transposable 2:4 masks are exact multi-word integer sums.

One fast path (float32, ``method="exact"``, 2:4: the MVUE of neural gradients in training) runs
as the core's own fast path does: for blocks whose every intermediate value is provably a normal
number or zero it adds and compares in hardware float32 (exact IEEE results there on every
backend: flush-to-zero cannot act, and no product feeds an addition), and its divisions are
correctly rounded from exact integer remainders (a float quotient is only the first estimate).
Any other block sends the whole call down the general path (``lax.cond``; under ``vmap`` both
run); the results are the same bits either way.

Supported dtypes: ``nm_mask``/``nm_prune`` take every real float and integer dtype (magnitudes
compared exactly, float8 included); ``transposable_mask`` float32, float16, bfloat16 and integers
up to 32 bits; ``mvue`` float32, float16 and bfloat16, each computed in its own format as the core
does (integer inputs, which the core computes in float64, are refused with a TypeError).
"""

from __future__ import annotations

import functools
import itertools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from emul.sparsity import _as_int, _check_choice, _check_nm

from .quantize import _as_key, random_words

__all__ = ["nm_mask", "nm_prune", "mvue", "transposable_mask"]

_TIES = ("low_index", "high_index")
_MVUE_METHODS = ("exact", "approx")
_T_METHODS = ("optimal", "greedy")
_LAYOUTS = ("gemm", "nchw", "nhwc")

_U32 = jnp.uint32
_I32 = jnp.int32
_DIV_UNROLL = 7  # long-division steps per loop iteration (compile time vs run time)


# ----------------------------------------------------------------------------- validation
# (the core's own checks, so the messages are the core's)


def _as_jax(x, name):
    try:
        a = jnp.asarray(x)
    except Exception as exc:
        raise TypeError(f"{name}: cannot be read as a numeric array ({exc})") from None
    if not (jnp.issubdtype(a.dtype, jnp.floating) or jnp.issubdtype(a.dtype, jnp.integer)
            or a.dtype == jnp.bool_):
        raise TypeError(f"{name}: dtype {a.dtype} is not supported (expected a real float or integer dtype)")
    return a


def _check_axis(shape, axis, m, name):
    if len(shape) == 0:
        raise ValueError(f"{name}: a 0-d array has no axis {axis}; blocks need at least 1 dimension")
    ax = _as_int(axis, "axis")
    if not -len(shape) <= ax < len(shape):
        raise ValueError(f"axis={axis}: out of range for {name} with {len(shape)} dimension(s)")
    ax %= len(shape)
    if shape[ax] % m:
        raise ValueError(
            f"m={m}: does not divide the length {shape[ax]} of axis {axis} of {name} (shape {tuple(shape)})"
        )
    return ax


def _to_blocks(a, m, ax):
    moved = jnp.moveaxis(a, ax, -1)
    return moved.reshape(-1, m), moved.shape


def _from_blocks(blocks, moved_shape, ax):
    return jnp.moveaxis(blocks.reshape(moved_shape), -1, ax)


# ----------------------------------------------------------------------------- bit patterns


class _Fmt(NamedTuple):
    """A binary float format held in the low bits of a uint32 (sign bit at 1 + ebits + mbits)."""

    ebits: int
    mbits: int

    @property
    def bias(self):
        return (1 << (self.ebits - 1)) - 1

    @property
    def sign(self):
        return 1 << (self.ebits + self.mbits)

    @property
    def inf(self):
        return ((1 << self.ebits) - 1) << self.mbits

    @property
    def maxbits(self):
        return self.inf - 1

    @property
    def qnan(self):
        return self.inf | (1 << (self.mbits - 1))

    def pow2(self, k):
        """Bit pattern (Python int) of 2^k, k within the format's range (subnormals included)."""
        emin = 1 - self.bias
        if k >= emin:
            assert k <= self.bias
            return (k + self.bias) << self.mbits
        assert k >= emin - self.mbits
        return 1 << (self.mbits - (emin - k))


F32 = _Fmt(8, 23)
F16 = _Fmt(5, 10)
BF16 = _Fmt(8, 7)
_FMT_OF = {jnp.dtype(jnp.float32): F32, jnp.dtype(jnp.float16): F16, jnp.dtype(jnp.bfloat16): BF16}
_UINT_OF = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint64}


def _bits32(x):
    """x (float32/float16/bfloat16) as uint32 bit patterns (16-bit formats in the low half)."""
    u = lax.bitcast_convert_type(x, _UINT_OF[x.dtype.itemsize])
    return u.astype(_U32)


def _from_bits32(b, dtype):
    return lax.bitcast_convert_type(b.astype(_UINT_OF[jnp.dtype(dtype).itemsize]), dtype)


def _u(v):
    return jnp.asarray(v, _U32)


def _shl(x, s):
    """x << s for uint32 x and int32 s in [0, 31]."""
    return lax.shift_left(x, s.astype(_U32))


def _shr(x, s):
    """x >> s (logical) for uint32 x and int32 s in [0, 31]."""
    return lax.shift_right_logical(x, s.astype(_U32))


def _clz(x):
    return lax.clz(x).astype(_I32)


# ----------------------------------------------------------------------------- soft-float
# Non-negative values of format f as uint32 bit patterns (sign bit clear).  Each operation returns
# the IEEE result rounded to nearest-even in f (subnormals kept, overflow to +inf): the exact value
# is formed as (integer M) * 2^E (+ a sticky bit for what lies below M) and rounded once.


def _unpack(b, f):
    """(mant, exp) with value = mant * 2^exp; mant < 2^(mbits+1).  +inf reads as 2^(emax+1), which
    makes every sum/product involving it overflow to +inf, as in IEEE."""
    ef = _shr(b, jnp.asarray(f.mbits, _I32)).astype(_I32)
    frac = b & ((1 << f.mbits) - 1)
    mant = jnp.where(ef == 0, frac, frac | (1 << f.mbits))
    exp = jnp.maximum(ef, 1) - (f.bias + f.mbits)
    return mant, exp


def _normalize(mant, exp, f):
    """Shift a non-zero mant left so that its top bit is at position mbits (zero stays zero)."""
    lz = jnp.where(mant == 0, 0, jnp.maximum(_clz(mant) - (31 - f.mbits), 0))
    return _shl(mant, lz), exp - lz


def _round(M, E, sticky, f):
    """Bits of RNE_f((M + s) * 2^E), M uint32 < 2^31, s in (0, 1) if sticky else 0.

    Callers guarantee that M has at least mbits + 3 significant bits whenever sticky is set."""
    p = 31 - _clz(M)  # top bit position (-1 for M == 0)
    emin = 1 - f.bias
    s = jnp.maximum(p - f.mbits, emin - f.mbits - E)  # right shift to the result's precision
    q_left = _shl(M, jnp.clip(-s, 0, 31))
    sr = jnp.clip(s, 1, 32)
    src = jnp.minimum(sr, 31)
    q_right = jnp.where(sr >= 32, _u(0), _shr(M, src))
    rem = M - _shl(q_right, src)
    half = _shl(_u(1), sr - 1)
    up = (rem > half) | ((rem == half) & (sticky | ((q_right & 1) == 1)))
    q = jnp.where(s <= 0, q_left, q_right + up.astype(_U32))
    bf = E + s + (f.mbits + f.bias - 1)  # biased exponent - 1 (q carries the hidden bit)
    emaxf = (1 << f.ebits) - 1
    bits = _shl(jnp.clip(bf, 0, emaxf).astype(_U32), jnp.asarray(f.mbits, _I32)) + q
    bits = jnp.where((bf >= emaxf) | (bits >= f.inf), _u(f.inf), bits)
    bits = jnp.where(M == 0, _u(0), bits)
    return _materialise(_token(bits), bits)


# IEEE special values (operands are magnitudes: +0, finite, +inf or NaN).  Every NaN these
# operations create is the invalid-operation NaN (0 x inf, 0/0, inf/inf); they are represented
# by the quiet NaN f.qnan here and given the sign of the x86 default NaN at the output (see
# _mvue_approx_blocks).  NaN operands give f.qnan.


def _special(res, f, nan, inf, zero=None):
    """res with NaN / +inf / +0 forced where the masks say so (NaN first, then inf, then 0)."""
    if zero is not None:
        res = jnp.where(zero, _u(0), res)
    res = jnp.where(inf, _u(f.inf), res)
    return jnp.where(nan, _u(f.qnan), res)


@functools.partial(jax.jit, static_argnums=2, inline=True)
def _add(a, b, f):
    """a (+) b for non-negative bit patterns."""
    ma, ea = _unpack(a, f)
    mb, eb = _unpack(b, f)
    swap = eb > ea
    ma, mb = jnp.where(swap, mb, ma), jnp.where(swap, ma, mb)
    ea, eb = jnp.where(swap, eb, ea), jnp.where(swap, ea, eb)
    d = jnp.minimum(ea - eb, 31)
    big = ma << 3
    small = mb << 3
    lost = (small & (_shl(_u(1), d) - 1)) != 0
    M = (big + _shr(small, d)) | lost.astype(_U32)  # the lost bits jammed into the last bit
    out = _round(M, ea - 3, False, f)
    return _special(out, f, (a > f.inf) | (b > f.inf), (a == f.inf) | (b == f.inf))


@functools.partial(jax.jit, static_argnums=2, inline=True)
def _mul(a, b, f):
    """a (x) b for non-negative bit patterns."""
    ma, ea = _normalize(*_unpack(a, f), f)
    mb, eb = _normalize(*_unpack(b, f), f)
    if 2 * (f.mbits + 1) <= 31:
        M, E, sticky = ma * mb, ea + eb, jnp.zeros(ma.shape, bool)
    else:  # 24 x 24 bits from 12-bit limbs: P = hi 2^24 + mid 2^12 + lo
        a1, a0 = ma >> 12, ma & 0xFFF
        b1, b0 = mb >> 12, mb & 0xFFF
        hi, mid, lo = a1 * b1, a1 * b0 + a0 * b1, a0 * b0
        low = lo + ((mid & 0xFFF) << 12)
        plo = low & 0xFFFFFF
        phi = hi + (mid >> 12) + (low >> 24)  # P = phi 2^24 + plo, P in [2^46, 2^48)
        M = (phi << 7) | (plo >> 17)
        E = ea + eb + 17
        sticky = (plo & 0x1FFFF) != 0
    out = _round(M, E, sticky, f)
    zero = (a == 0) | (b == 0)
    inf = (a == f.inf) | (b == f.inf)
    return _special(out, f, (a > f.inf) | (b > f.inf) | (zero & inf), inf, zero)


@functools.partial(jax.jit, static_argnums=2, inline=True)
def _div(a, b, f):
    """a (/) b for non-negative bit patterns (x/0 = +inf, 0/0 and inf/inf NaN)."""
    ma, ea = _normalize(*_unpack(a, f), f)
    mb, eb = _normalize(*_unpack(b, f), f)
    mb = jnp.where(b == 0, _u(1 << f.mbits), mb)  # any divisor: the result is replaced below
    k = f.mbits + 4  # quotient bits after the point: Q = floor(ma 2^k / mb) in [2^(k-1), 2^(k+1))

    def step(_, st):  # one quotient bit per step (rem < 2 mb < 2^(mbits+2))
        q, rem = st
        ge = rem >= mb
        return (q << 1) | ge.astype(_U32), jnp.where(ge, rem - mb, rem) << 1

    shape = jnp.broadcast_shapes(ma.shape, mb.shape)
    q, rem = lax.fori_loop(0, k + 1, step, (jnp.zeros(shape, _U32), jnp.broadcast_to(ma, shape)),
                           unroll=_DIV_UNROLL)
    out = _round(q, ea - eb - k, rem != 0, f)
    nan = (a > f.inf) | (b > f.inf) | ((a == 0) & (b == 0)) | ((a == f.inf) & (b == f.inf))
    return _special(out, f, nan, (a == f.inf) | (b == 0), (a == 0) | (b == f.inf))


def _scale2(a, k, f):
    """a (x) 2^k (k an int or an int32 array), rounded."""
    mant, exp = _unpack(a, f)
    out = _round(mant, exp + k, False, f)
    return _special(out, f, a > f.inf, a == f.inf)


def _from_int(t, f):
    """The value of the int32 array t >= 0 in format f (rounded)."""
    return _round(t.astype(_U32), jnp.zeros(t.shape, _I32), False, f)


def _convert(b, src, dst):
    """Bits of format src (sign included) rounded to format dst (RNE, overflow to inf, NaN -> NaN)."""
    sign = (b & _u(src.sign)) != 0
    mag = b & (src.sign - 1)
    mant, exp = _unpack(jnp.minimum(mag, _u(src.maxbits)), src)
    dmag = _round(mant, exp + 0, False, dst)
    dmag = jnp.where(mag == src.inf, _u(dst.inf), dmag)
    dmag = jnp.where(mag > src.inf, _u(dst.qnan), dmag)
    return dmag | jnp.where(sign, _u(dst.sign), _u(0))


def _count_below(word, c, t, f):
    """#{j in [0, t) : u + j < C} exactly, u = word / 2^32, C >= 0 the value of bits c
    (+inf: t; NaN: 0, as a comparison with NaN is false)."""
    mant, exp = _unpack(c, f)
    sh = -exp  # C = mant / 2^sh
    whole = jnp.where(sh <= 0, _shl(mant, jnp.clip(-sh, 0, 31)),
                      jnp.where(sh >= 32, _u(0), _shr(mant, jnp.clip(sh, 0, 31))))
    frac = jnp.where(sh <= 0, _u(0),
                     jnp.where(sh >= 32, mant, mant & (_shl(_u(1), jnp.clip(sh, 0, 31)) - 1)))
    # ceil(frac 2^(32 - sh)): the fraction of C scaled to the 2^-32 grid of u (< 2^32)
    up = jnp.clip(32 - sh, 0, 31)
    down = jnp.clip(sh - 32, 0, 31)
    fs_exact = _shl(frac, up)
    fs_ceil = jnp.where(sh - 32 >= 32, (frac != 0).astype(_U32),
                        _shr(frac, down) + ((frac & (_shl(_u(1), down) - 1)) != 0).astype(_U32))
    fs = jnp.where(sh <= 32, fs_exact, fs_ceil)
    cnt = jnp.minimum(whole.astype(_I32) + (word < fs).astype(_I32), t)
    return jnp.where(c > f.inf, 0, jnp.where(c == f.inf, t, cnt))


def _le_u(c, word, f):
    """[C <= u] exactly, u = word / 2^32 (false for C = +inf and for NaN)."""
    return (1 - _count_below(word, c, 1, f)) * (c < f.inf)


def _ltr_sum(a, f):
    """Left-to-right sum over axis 0 of non-negative bits a (row 0 as it is)."""
    if a.shape[0] <= 8:
        acc = a[0]
        for i in range(1, a.shape[0]):
            acc = _add(acc, a[i], f)
        return acc
    tok = _token(a)
    return lax.fori_loop(1, a.shape[0], lambda i, acc: _add(acc, _materialise(tok, a[i]), f), a[0])


def _ltr_prefix(a, f):
    """Left-to-right running sums over axis 0 of non-negative bits a (row 0 as it is; +0 (+) x
    is x, so the scan starts from +0).  A scan: one adder in the program, and its stacked
    output is materialised (XLA's CPU code for fused concatenations is slow)."""

    tok = _token(a)

    def step(acc, row):
        acc = _add(acc, _materialise(tok, row), f)  # the row copied out (see _optimal24_scores)
        return acc, acc

    return lax.scan(step, jnp.zeros(a.shape[1:], _U32), a)[1]


def _materialise(token, *arrays):
    """The arrays, unchanged, written to memory before their consumers run (performance only).

    XLA's CPU fusion inlines cheap element-wise producers into every consumer, so a long chain
    of integer operations that feeds a broadcast (a per-block value used by all m elements) or
    several consumers is recomputed for each of them, compounding at every level.  A while
    loop whose trip count XLA cannot prove (``token`` is 0 at run time, ``clz(w) - 32 <= 0``,
    and the body is never executed) makes the arrays loop outputs, so they are computed once.
    (``lax.optimization_barrier`` is dropped by the CPU pipeline before fusion.)"""
    out = lax.while_loop(lambda c: c[0] < token, lambda c: (c[0] + 1, tuple(~v for v in c[1])),
                         (jnp.int32(0), tuple(arrays)))[1]
    return out if len(arrays) > 1 else out[0]


def _token(w):
    """A traced int32 scalar that is 0 at run time (see _materialise); w: a non-empty uint32 array."""
    return jnp.minimum(_clz(w.reshape(-1)[0]) - 32, 0)


def _pick(rows, i):
    """rows[i[b], b] for (k, B) rows and (B,) indices, as a chain of selects."""
    out = rows[0]
    for r in range(1, rows.shape[0]):
        out = jnp.where(i == r, rows[r], out)
    return out


# ----------------------------------------------------------------------------- top-n masks


def _magnitude_key(x):
    """Unsigned integer keys whose order is the order of |x| (NaN above +inf, all NaNs equal)."""
    dt = x.dtype
    if jnp.issubdtype(dt, jnp.floating):
        ut = _UINT_OF[dt.itemsize]
        b = lax.bitcast_convert_type(x, ut)
        top = 1 << (8 * dt.itemsize - 1)
        mag = b & ut(top - 1)
        # x != x is false for every number and true for every NaN, flushing or not (float8
        # formats such as e4m3fn have no inf and finite values with an all-ones exponent)
        return jnp.where(jnp.isnan(x), ut(top), mag)
    if dt == jnp.bool_:
        return x.astype(jnp.uint8)
    if jnp.issubdtype(dt, jnp.unsignedinteger):
        return x
    ut = _UINT_OF[dt.itemsize]
    u = x.astype(ut)
    return jnp.where(x < 0, ut(0) - u, u)  # two's complement magnitude, exact for INT_MIN


def _ranks_desc(key, low_index):
    """Rank of every element of each row (last axis) in the order (key desc, index asc/desc)."""
    m = key.shape[-1]
    idx = lax.broadcasted_iota(_I32, key.shape, key.ndim - 1)
    if m <= 16:  # pairwise: j beats i
        kj, ki = key[..., :, None], key[..., None, :]
        ij = jnp.arange(m)
        later = (ij[:, None] < ij[None, :]) if low_index else (ij[:, None] > ij[None, :])
        beats = (kj > ki) | ((kj == ki) & later)
        return beats.sum(axis=-2, dtype=_I32)
    inv = ~key
    tie = idx if low_index else (m - 1) - idx
    _, _, order = lax.sort((inv, tie, idx), dimension=key.ndim - 1, num_keys=2)
    _, ranks = lax.sort((order, idx), dimension=key.ndim - 1, num_keys=1)
    return ranks


@functools.partial(jax.jit, static_argnames=("n", "m", "ax", "high"))
def _nm_mask_impl(x, n, m, ax, high):
    blocks, moved = _to_blocks(x, m, ax)
    keep = _ranks_desc(_magnitude_key(blocks), not high) < n
    return _from_blocks(keep, moved, ax)


def nm_mask(x, n, m, axis=-1, ties="low_index"):
    """Boolean mask keeping the ``n`` largest magnitudes of every block of ``m`` along ``axis``.

    As :func:`emul.sparsity.nm_mask`: ranking by |x| descending, equal magnitudes by index
    (``"low_index"``: lower index wins; ``"high_index"``: higher index wins), NaN above every
    number and NaNs among themselves by index, -0 == +0, exactly ``n`` kept per block.
    Magnitudes are compared as unsigned integers (float bit patterns without the sign bit,
    two's-complement magnitudes for integers), so subnormals are not flushed.  Works under
    ``jit``/``vmap``; not differentiable (boolean output).
    """
    n, m = _check_nm(n, m)
    ties = _check_choice(ties, "ties", _TIES)
    a = _as_jax(x, "x")
    ax = _check_axis(a.shape, axis, m, "x")
    return _nm_mask_impl(a, n=n, m=m, ax=ax, high=ties == "high_index")


def _zero_where_not(mask, x):
    """x where mask, +0 elsewhere, as a bit-level select (floats never pass through XLA arithmetic)."""
    if jnp.issubdtype(x.dtype, jnp.floating):
        ut = _UINT_OF[x.dtype.itemsize]
        b = lax.bitcast_convert_type(x, ut)
        return lax.bitcast_convert_type(jnp.where(mask, b, ut(0)), x.dtype)
    return jnp.where(mask, x, jnp.zeros((), x.dtype))


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2, 3, 4))
def _nm_prune_st(x, n, m, ax, high):
    return _zero_where_not(_nm_mask_impl(x, n=n, m=m, ax=ax, high=high), x)


@_nm_prune_st.defjvp
def _nm_prune_jvp(n, m, ax, high, primals, tangents):
    (x,), (tx,) = primals, tangents
    mask = _nm_mask_impl(x, n=n, m=m, ax=ax, high=high)
    return _zero_where_not(mask, x), jnp.where(mask, tx, jnp.zeros((), tx.dtype))


def nm_prune(x, n, m, axis=-1, ties="low_index"):
    """``x`` with all but the ``n`` largest magnitudes of every block set to +0 (same dtype).

    As :func:`emul.sparsity.nm_prune` (pruned entries are +0, never x*0).  Gradient: the mask
    (d nm_prune / dx = diag(mask); the mask itself is treated as a constant).
    """
    n, m = _check_nm(n, m)
    ties = _check_choice(ties, "ties", _TIES)
    a = _as_jax(x, "x")
    ax = _check_axis(a.shape, axis, m, "x")
    return _nm_prune_st(a, n, m, ax, ties == "high_index")


# ----------------------------------------------------------------------------- MVUE

# Working format W of the core's mvue for each input dtype: every operation is rounded to W
# (float16 and bfloat16 included; emul.sparsity.mvue's docstring).
_MVUE_FORMATS = {jnp.dtype(jnp.float32): F32, jnp.dtype(jnp.float16): F16, jnp.dtype(jnp.bfloat16): BF16}


def _approx_tiny_exp(f):
    """E of method="approx": blocks with S < 2^-E are scaled by 2^E (float16: 15, else 64)."""
    return 15 if f == F16 else 64


# Block data is laid out (m, B): element i of every block is row i, so that every soft-float
# operation runs over long contiguous rows (XLA's CPU code for arrays whose minor dimension is
# the block length m is several times slower).


def _mvue_exact_blocks(xb, words, n, cf):
    """xb: (m, B) bit patterns in format cf (sign included); words: (B,) uint32.  See the
    docstring of emul.sparsity.mvue, method="exact", for the operation sequence mirrored here."""
    m, nb = xb.shape
    tok = _token(words)
    sgn = xb & _u(cf.sign)
    a = xb & (cf.sign - 1)
    finite = jnp.all(a <= cf.maxbits, axis=0)
    nzm = a != 0
    nz = nzm.sum(axis=0, dtype=_I32)
    idx = jnp.arange(m, dtype=_I32)[:, None]
    # 1. overflow guard: R0 = a_0 (+) ... (+) a_{m-1}; if n (x) R0 overflows, a_i (x)= 2^-q
    r0 = _ltr_sum(a, cf)
    q = (n * m - 1).bit_length()
    scaled = ~(_mul(_from_int(jnp.full((nb,), n, _I32), cf), r0, cf) <= cf.maxbits)
    a, scaled = _materialise(tok, jnp.where(scaled[None, :], _scale2(a, -q, cf), a), scaled)

    # 2. water-filling: cap the largest uncapped element while t (x) a_max >= R
    def step(state):
        capped, ncap, done = state
        au = jnp.where(capped, _u(0), a)
        r = _ltr_sum(au, cf)  # adding +0 for a capped element changes nothing
        t = n - ncap
        amax = jnp.max(au, axis=0)
        imax = jnp.min(jnp.where(au == amax[None, :], idx, m), axis=0)  # lowest index among equals
        cap = ~done & (t > 1) & (_mul(_from_int(t, cf), amax, cf) >= r)
        capped = capped | (cap[None, :] & (idx == imax[None, :]))
        return capped, ncap + cap.astype(_I32), done | ~cap

    state = (jnp.zeros((m, nb), bool), jnp.zeros((nb,), _I32), jnp.zeros((nb,), bool))
    if n - 1 <= 1:
        for _ in range(n - 1):
            state = step(state)
    else:
        state = lax.fori_loop(0, n - 1, lambda _, st: step(st), state)
    capped, ncap = _materialise(tok, state[0], state[1])
    # running sums D of the uncapped non-zero elements; their total is R (zeros add nothing)
    elig = ~capped & (a != 0)
    d = _ltr_prefix(jnp.where(elig, a, _u(0)), cf)
    r = d[-1]
    t = n - ncap
    tf = _from_int(t, cf)
    # 3. kept value of a sampled element: R (/) t, times 2^q if scaled
    v = _div(r, tf, cf)
    v = jnp.where(scaled, _scale2(v, q, cf), v)
    last = jnp.max(jnp.where(elig, idx, -1), axis=0)
    v, tf, t, r, last = _materialise(tok, v, tf, t, r, last)
    # 4. systematic sampling: element i covers [C_prev, C_i), C_i = (t (x) D_i) (/) R, the last
    # one ends at t; it is kept iff a point u + j lies in it, i.e. iff the number of points
    # below C_i exceeds the number below every earlier end (the sweep pointer advances)
    c = _div(_mul(tf[None, :], d, cf), r[None, :], cf)
    c = jnp.where(idx == last[None, :], tf[None, :], c)
    cnt = jnp.where(elig, _count_below(words[None, :], c, t[None, :], cf), 0)
    before = jnp.pad(lax.cummax(cnt, axis=0)[:-1], ((1, 0), (0, 0)))
    sel = elig & (cnt > before)
    out = jnp.where(capped, xb, jnp.where(sel, v[None, :] | sgn, _u(0)))
    out = jnp.where((nz <= n)[None, :], jnp.where(nzm, xb, _u(0)), out)
    return jnp.where(finite[None, :], out, _u(cf.qnan))


def _mvue_approx_blocks(xb, w0, w1, cf):
    """xb: (4, B) bit patterns in format cf; w0, w1: (B,) words 2b and 2b+1.  See the docstring
    of emul.sparsity.mvue, method="approx", for the operation sequence mirrored here."""
    tok = _token(w0)
    a = xb & (cf.sign - 1)
    finite = jnp.all(a <= cf.maxbits, axis=0)
    nzm = a != 0
    nz = nzm.sum(axis=0, dtype=_I32)
    j4 = jnp.arange(4, dtype=_I32)[:, None]
    # S, with the exact power-of-two rescalings when it overflows or is below 2^-64
    s = _ltr_sum(a, cf)
    over = s > cf.maxbits
    tiny = s < cf.pow2(-_approx_tiny_exp(cf))
    e = _approx_tiny_exp(cf)
    a = _materialise(tok, _scale2(a, jnp.where(over, -2, jnp.where(tiny, e, 0))[None, :], cf))
    s = _ltr_sum(a, cf)
    # R_j = the left-to-right sum of the a_k, k != j (row j)
    rv = _add(_add(jnp.where(j4 == 0, a[1], a[0]), jnp.where(j4 <= 1, a[2], a[1]), cf),
              jnp.where(j4 <= 2, a[3], a[2]), cf)
    one = jnp.full(s.shape, cf.pow2(0), _U32)
    inv = _div(one, s, cf)
    rv, inv = _materialise(tok, rv, inv)

    def le_u(c, w):  # [C <= u]
        return _le_u(c, w, cf)

    # first draw: the number of C_0..C_2 <= u0, C_k = (a_0 (+) ... (+) a_k) (x) inv, capped at
    # the last non-zero index
    d1 = _add(a[0], a[1], cf)
    d2 = _add(d1, a[2], cf)
    j3 = j4[:3]
    dd = jnp.where(j3 == 0, a[0], jnp.where(j3 == 1, d1, d2))
    first = le_u(_mul(dd, inv[None, :], cf), w0[None, :]).sum(axis=0, dtype=_I32)
    last = jnp.where(a[3] != 0, 3, 2)
    first = _materialise(tok, first - (first > last).astype(_I32))
    # second draw over the other three in index order, with 1 (/) R_first
    i0 = jnp.where(first == 0, 1, 0)
    i1 = jnp.where(first >= 2, 1, 2)
    i2 = jnp.where(first == 3, 2, 3)
    b0, b1, b2 = _pick(a, i0), _pick(a, i1), _pick(a, i2)
    last2 = jnp.where(b2 != 0, 2, 1)
    invf = _div(one, _pick(rv, first), cf)
    j2 = j4[:2]
    ee = jnp.where(j2 == 0, b0, _add(b0, b1, cf))
    k = le_u(_mul(ee, invf[None, :], cf), w1[None, :]).sum(axis=0, dtype=_I32)
    k = k - (k > last2).astype(_I32)
    second = k + (k >= first).astype(_I32)
    tv = _mul(a, inv[None, :], cf)
    second, tv = _materialise(tok, second, tv)
    # pi_i = t_i (+) sum over j != i in index order of t_j (x) (a_i (/) R_j), t_j = a_j (x) inv,
    # for i = first (row 0) and second (row 1) at once
    sel = jnp.where(j2 == 0, first, second)  # (2, B)
    ai = jnp.where(j2 == 0, _pick(a, first), _pick(a, second))
    terms = _mul(tv[None], _div(ai[:, None], rv[None], cf), cf)  # (2, 4, B)
    terms = _materialise(tok, jnp.where(sel[:, None] == j4[None], _u(0), terms))
    pi = jnp.where(j2 == 0, _pick(tv, first), _pick(tv, second))
    for j in range(4):
        pi = _add(pi, terms[:, j], cf)
    xs = jnp.where(j2 == 0, _pick(xb, first), _pick(xb, second))
    qv = _div(xs & (cf.sign - 1), _materialise(tok, pi), cf)
    # x (/) pi with the sign of x; a NaN created on the way (float16: 1 (/) R_first can
    # overflow, then 0 (x) inf) propagates as the core's does on x86-64: the default NaN,
    # sign bit set
    qv = jnp.where(qv > cf.inf, _u(cf.sign | cf.qnan), qv | (xs & _u(cf.sign)))
    out = jnp.where(j4 == first[None, :], qv[0][None, :],
                    jnp.where(j4 == second[None, :], qv[1][None, :], _u(0)))
    out = jnp.where((nz <= 2)[None, :], jnp.where(nzm, xb, _u(0)), out)
    return jnp.where(finite[None, :], out, _u(cf.qnan))


def _as_key_data(key, seed):
    """uint32[2] key data from key= (typed threefry key or raw uint32[2]) or seed= (int)."""
    if key is None and seed is None:
        raise ValueError("key, seed: give one of them (a JAX key or an integer seed)")
    if key is not None and seed is not None:
        raise ValueError("key, seed: give only one of them")
    if seed is not None:
        seed = _as_int(seed, "seed")
        return jnp.array([0, seed & 0xFFFFFFFF], dtype=_U32)
    return jax.random.key_data(_as_key(key))


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4, 5))
def _mvue_st(x, kd, n, m, ax, method):
    return _mvue_impl(x, kd, n=n, m=m, ax=ax, method=method)


@_mvue_st.defjvp
def _mvue_jvp(n, m, ax, method, primals, tangents):
    x, kd = primals
    tx, _ = tangents
    return _mvue_impl(x, kd, n=n, m=m, ax=ax, method=method), tx


# ----------------------------------------------------------------------------- MVUE 2:4, float32: fast path
# The exact 2:4 estimate of a float32 block whose arithmetic provably stays normal, computed with
# hardware float32 additions in the core's order (exact IEEE results on every backend: operands
# and results are normal numbers or zeros, so flush-to-zero cannot act, and no product feeds an
# addition, so FMA contraction cannot either) and correctly rounded divisions built from integer
# remainders (a float32 quotient serves only as an estimate, so neither XLA's rewriting of x / c
# nor a GPU's approximate division can change a bit).  Blocks outside that class take the
# integer soft-float path above, through a lax.cond that runs it only when some block needs it.
#
# The class (biased exponent fields lo <= hi of a block's non-zero magnitudes):
# lo >= 12, lo - hi >= -116, hi <= 243.  Then every non-zero a_i lies in [2^-115, 2^117), every
# left-to-right sum of them in [2^-115, 2^119), 2 a_max and 2 D in [2^-114, 2^120]: all normal,
# and n (x) R0 < 2^120 never triggers the overflow guard (so there is no 2^-3 scaling);
# v = R or R/2 >= 2^-116 is exact; C = (t D) (/) R lies in [2^(lo-hi-3), 2] >= 2^-119.
_F24_LO, _F24_SPREAD, _F24_HI = 12, -116, 243
_FRAC, _HIDDEN, _ABS, _SIGN = 0x7FFFFF, 0x800000, 0x7FFFFFFF, 0x80000000


def _f32(b):
    return lax.bitcast_convert_type(b, jnp.float32)


def _b32(v):
    return lax.bitcast_convert_type(v, _U32)


def _divisor(rb):
    """(Mr, 1 / Mr estimated) of the bit patterns rb of normal divisors, for _div_rne_normal."""
    mr = (rb & _FRAC) | _HIDDEN
    return mr, np.float32(1) / mr.astype(jnp.float32)


def _div_rne_normal(yb, rb, divisor=None):
    """Bits of y (/) r (float32, rounded to nearest even) for bit patterns of normal y, r > 0
    whose quotient is a normal number <= 2 (no overflow or underflow to handle); ``divisor``:
    _divisor(rb), shared by several quotients with the same r.

    Q = floor(My 2^25 / Mr) in [2^24, 2^26) from the 24-bit significands: a float32 estimate
    (from any 1 / Mr within 2^-21 relative: XLA's and a GPU's division are), its remainder
    My 2^25 - Q Mr computed exactly in wrapping 32-bit integers (the true remainder is below
    2^30 in magnitude), one more estimated correction (off by at most one) and a final +-1 step
    leave 0 <= rem < Mr exactly; then Q is rounded with rem as the sticky part."""
    mr, inv = _divisor(rb) if divisor is None else divisor
    my = (yb & _FRAC) | _HIDDEN
    q = (my.astype(jnp.float32) * (inv * np.float32(2.0**25))).astype(_I32)
    rem = lax.bitcast_convert_type((my << _u(25)) - q.astype(_U32) * mr, _I32)
    mri = mr.astype(_I32)
    corr = jnp.floor(rem.astype(jnp.float32) * inv).astype(_I32)
    q, rem = q + corr, rem - corr * mri
    neg = rem < 0
    q, rem = jnp.where(neg, q - 1, q), jnp.where(neg, rem + mri, rem)
    over = rem >= mri
    q, rem = jnp.where(over, q + 1, q), jnp.where(over, rem - mri, rem)
    qu = q.astype(_U32)
    big = qu >= _u(1 << 25)
    sh = jnp.where(big, _u(2), _u(1))
    keep = lax.shift_right_logical(qu, sh)
    low = qu & (lax.shift_left(_u(1), sh) - 1)
    half = lax.shift_left(_u(1), sh - 1)
    up = (low > half) | ((low == half) & ((rem != 0) | ((keep & 1) == 1)))
    eb = (yb >> _u(23)).astype(_I32) - (rb >> _u(23)).astype(_I32) + 126 + big.astype(_I32)
    return (eb.astype(_U32) << _u(23)) + (keep - _HIDDEN) + up.astype(_U32)


def _points_below(w, c, two):
    """(#{j in [0, 1 + two) : u + j < C}) with u = w / 2^32 exactly, for bits c of a normal C in
    (0, 2] (int32)."""
    ec = (c >> _u(23)).astype(_I32)
    mc = (c & _FRAC) | _HIDDEN
    s = ec - 118  # C 2^32 = mc 2^s
    k = jnp.clip(-s, 0, 24).astype(_U32)
    ceil_c = jnp.where(s >= 0, lax.shift_left(mc, jnp.clip(s, 0, 8).astype(_U32)),
                       lax.shift_right_logical(mc + (lax.shift_left(_u(1), k) - 1), k))
    first = (ec >= 127) | (w < ceil_c)  # C >= 1, or u < C < 1
    second = two & ((ec >= 128) | ((ec == 127) & (w < ((mc - _HIDDEN) << _u(9)))))
    return first.astype(_I32) + second.astype(_I32)


# per-block code of the fast path: bit i (i < 4) element i is kept with the value v, bit 4 + i
# element i is returned as it is, _NAN_BLOCK all NaN, _SOFT_BLOCK the soft path decides
_NAN_BLOCK, _SOFT_BLOCK = 1 << 8, 1 << 9


def _mvue24_f32_codes(xs, w):
    """(code, v) per block of float32 blocks (x0, x1, x2, x3) (uint32 bit patterns, any common
    shape) with words w: the core's exact 2:4 MVUE as a code (above) and the kept magnitude v,
    exact for every block that is non-finite, has at most 2 non-zeros or lies in the class
    above; the others are marked _SOFT_BLOCK."""
    a = [x & _u(_ABS) for x in xs]
    ex = [(ai >> _u(23)).astype(_I32) for ai in a]
    hi = jnp.maximum(jnp.maximum(ex[0], ex[1]), jnp.maximum(ex[2], ex[3]))
    exl = [jnp.where(ai == 0, 255, e) for ai, e in zip(a, ex)]
    lo = jnp.minimum(jnp.minimum(exl[0], exl[1]), jnp.minimum(exl[2], exl[3]))
    nzm = [(ai != 0).astype(_U32) for ai in a]
    finite = hi < 255
    trivial = (nzm[0] + nzm[1] + nzm[2] + nzm[3]) <= 2
    fast = (lo >= _F24_LO) & (lo - hi >= _F24_SPREAD) & (hi <= _F24_HI)
    f = [_f32(ai) for ai in a]
    r = ((f[0] + f[1]) + f[2]) + f[3]
    am, im = a[0], jnp.zeros(a[0].shape, _U32)
    for i in range(1, 4):  # the largest, lowest index among equals (magnitudes compare as integers)
        gt = a[i] > am
        am, im = jnp.where(gt, a[i], am), jnp.where(gt, _u(i), im)
    amf = _f32(am)
    capped = amf + amf >= r
    zero = jnp.zeros(r.shape, jnp.float32)
    e = [jnp.where(capped & (im == i), zero, f[i]) for i in range(4)]
    d1 = e[0] + e[1]
    d2 = d1 + e[2]
    rr = d2 + e[3]  # = r when nothing is capped (the same additions)
    two = ~capped
    v = _b32(jnp.where(capped, rr, rr * np.float32(0.5)))
    eb = [_b32(ei) for ei in e]
    last = jnp.where(eb[3] != 0, 3, jnp.where(eb[2] != 0, 2, jnp.where(eb[1] != 0, 1, 0)))
    rb = _b32(rr)
    den = _divisor(rb)
    t_end = 1 + two.astype(_I32)
    prev = jnp.zeros(r.shape, _I32)
    code = jnp.where(capped, lax.shift_left(_u(16), im), _u(0))
    for i, d in enumerate((e[0], d1, d2)):
        c = _div_rne_normal(_b32(jnp.where(two, d + d, d)), rb, den)
        cnt = jnp.where(_b32(d) == 0, 0, _points_below(w, c, two))
        t = jnp.where(last <= i, t_end, cnt)
        code = code | ((t > prev).astype(_U32) << _u(i))
        prev = t
    code = code | ((t_end > prev).astype(_U32) << _u(3))
    code = jnp.where(capped, code & ~lax.shift_left(_u(1), im), code)
    code = jnp.where(trivial, (nzm[0] << 4) | (nzm[1] << 5) | (nzm[2] << 6) | (nzm[3] << 7), code)
    code = jnp.where(finite, code, _u(_NAN_BLOCK))
    code = jnp.where(finite & ~trivial & ~fast, _u(_SOFT_BLOCK), code)
    return code, v


def _decode24(x, i, code, v):
    """Output bits of element i (a Python int or an int array) of blocks with these codes."""
    as_is = (lax.shift_right_logical(code, _u(4) + i) & 1) == 1
    kept = (lax.shift_right_logical(code, _u(0) + i) & 1) == 1
    out = jnp.where(as_is, x, jnp.where(kept, v | (x & _u(_SIGN)), _u(0)))
    return jnp.where((code & _NAN_BLOCK) != 0, _u(F32.qnan), out)


def _mvue24_f32(x, words, ax):
    """The exact 2:4 MVUE of float32 x along axis ax with the core's words (block order): the
    fast path, and the soft path (for every block) when some block needs it."""
    shape = x.shape
    k = shape[ax] // 4
    pre = int(np.prod(shape[:ax], dtype=np.int64))
    post = int(np.prod(shape[ax + 1:], dtype=np.int64))
    if post >= 8:  # blocks run along a major axis: (pre, k, 4, post), no transpose of the data
        xv = _bits32(x).reshape(pre, k, 4, post)
        wv = words.reshape(pre, post, k).transpose(0, 2, 1)  # word of block (p, j, q): (p post + q) k + j
        rows = [xv[:, :, i, :] for i in range(4)]  # (a transposed (4, B) copy is 7x slower to read)

        def soft_in():
            return xv.transpose(2, 0, 1, 3).reshape(4, -1), wv.reshape(-1)

        def back(o):
            return o.reshape(4, pre, k, post).transpose(1, 2, 0, 3).reshape(shape)

        def fast_out(code, v):
            i = lax.broadcasted_iota(_U32, (pre, k, 4, post), 2)
            b = (pre, k, 1, post)
            return _decode24(xv, i, code.reshape(b), v.reshape(b)).reshape(shape)
    else:  # blocks along the minor axes: (4, B) rows, as the soft path
        blocks, moved = _to_blocks(_bits32(x), 4, ax)
        rows, wv = blocks.T, words

        def soft_in():
            return rows, wv

        def back(o):
            return _from_blocks(o.T, moved, ax)

        def fast_out(code, v):
            return back(jnp.stack([_decode24(rows[i], i, code, v) for i in range(4)]))
    code, v = _mvue24_f32_codes([rows[i] for i in range(4)], wv)
    code, v = _materialise(_token(words), code, v)

    def soft():
        xb, ws = _materialise(_token(words), *soft_in())
        return back(_mvue_exact_blocks(xb, ws, 2, F32))

    out = lax.cond(jnp.any((code & _SOFT_BLOCK) != 0), soft, lambda: fast_out(code, v))
    return _from_bits32(out, x.dtype)


@functools.partial(jax.jit, static_argnames=("n", "m", "ax", "method"))
def _mvue_impl(x, kd, n, m, ax, method):
    nb = x.size // m
    k = jax.random.wrap_key_data(kd, impl="threefry2x32")
    words = random_words(k, ((1 if method == "exact" else 2) * nb,))
    if method == "exact" and (n, m) == (2, 4) and x.dtype == jnp.float32 and nb:
        return _mvue24_f32(x, words, ax)
    return _mvue_soft(x, words, n, m, ax, method)


def _mvue_soft(x, words, n, m, ax, method):
    """The integer soft-float MVUE (every block), words in block order (approx: 2 per block)."""
    cf = _MVUE_FORMATS[x.dtype]
    blocks, moved = _to_blocks(x, m, ax)
    nb = blocks.shape[0]
    xb = _bits32(blocks).T  # (m, B)
    if method == "exact":
        xb, words = _materialise(_token(words), xb, words)
        out = _mvue_exact_blocks(xb, words, n, cf)
    else:
        words = words.reshape(nb, 2).T  # (2, B): words 2b, 2b+1
        xb, words = _materialise(_token(words), xb, words)
        out = _mvue_approx_blocks(xb, words[0], words[1], cf)
    return _from_blocks(_from_bits32(out.T, x.dtype), moved, ax)


def mvue(x, n, m, axis=-1, *, seed=None, key=None, method="exact"):
    """Unbiased n:m-sparse random estimate of ``x`` with minimum total variance, as the core.

    Bit for bit :func:`emul.sparsity.mvue` (``key=jax.random.key(s)``, a raw ``uint32[2]`` key,
    or ``seed=s``, an int; one of them): block b (C order) uses word b of
    ``jax.random.bits(key, (B,), uint32)`` (``method="approx"``: words 2b and 2b+1 of
    ``bits(key, (2B,))``); every float operation of the core's algorithm (its docstring lists
    them in order) is reproduced exactly, with integer arithmetic on the bit patterns or (float32
    exact 2:4 blocks whose values provably stay normal) hardware additions and integer-corrected
    divisions, so XLA's FTZ, FMA contraction and division rewriting cannot change a bit, on any
    backend.
    ``method="exact"``: any n <= m; ``"approx"``: 2:4 only.

    dtypes: float32, float16 and bfloat16, each computed in its own format, every operation
    rounded to it (the core's working dtype W).  NaN/inf blocks give all-NaN; blocks with at
    most n non-zeros are returned as they are (zeros as +0).

    Gradient: straight-through identity, d mvue(x)/dx := I.  MVUE is unbiased, E[mvue(x)] = x,
    so the identity is the exact gradient of the expectation; in training (paper [A], docs/references.md) mvue
    sparsifies the neural gradient inside a backward pass, where it is applied, not
    differentiated.  Use it under ``vmap`` with one key per batch element to reproduce one core
    call per element; a single key shared across a vmapped batch gives each element the words
    of its own block numbering (not the numbering of the stacked array).
    """
    n, m = _check_nm(n, m)
    method = _check_choice(method, "method", _MVUE_METHODS)
    if method == "approx" and (n, m) != (2, 4):
        raise ValueError(f"method='approx': only defined for 2:4, got n={n}, m={m}")
    kd = _as_key_data(key, seed)
    a = _as_jax(x, "x")
    if a.dtype not in _MVUE_FORMATS:
        raise TypeError(
            f"x: dtype {a.dtype} is not supported by emul_jax.sparsity.mvue (float32, float16, "
            "bfloat16; the core computes integer inputs in float64, which needs jax_enable_x64 and "
            "is not mirrored)"
        )
    ax = _check_axis(a.shape, axis, m, "x")
    return _mvue_st(a, kd, n, m, ax, method)


# ----------------------------------------------------------------------------- transposable masks


def _cand24():
    """The 90 transposable 4x4 2:4 tiles, sorted by their sorted flat kept-index list:
    (row-pair ids (90, 4), masks (90, 16))."""
    pairs = list(itertools.combinations(range(4), 2))
    tiles = []
    for rows in itertools.product(range(6), repeat=4):
        cols = [0] * 4
        for p in rows:
            for c in pairs[p]:
                cols[c] += 1
        if all(c == 2 for c in cols):
            flat = tuple(i * 4 + c for i, p in enumerate(rows) for c in pairs[p])
            tiles.append((flat, rows))
    tiles.sort()
    ids = np.array([rows for _, rows in tiles], dtype=np.int32)
    masks = np.zeros((len(tiles), 16), dtype=bool)
    for q, (flat, _) in enumerate(tiles):
        masks[q, list(flat)] = True
    return ids, masks


_CAND_IDS, _CAND_MASKS = _cand24()
_PAIRS = list(itertools.combinations(range(4), 2))


def _weight_repr(w):
    """(key, mant, sh): a uint32 magnitude key ordered like |w| (NaN above inf), and the exact
    magnitude |w| = mant * 2^sh (float16/bfloat16 read exactly as float32)."""
    dt = w.dtype
    if jnp.issubdtype(dt, jnp.floating):
        if dt not in _FMT_OF:
            raise TypeError(f"w: dtype {dt} is not supported by emul_jax.sparsity.transposable_mask "
                            "(float32, float16, bfloat16 or integers up to 32 bits)")
        b = _bits32(w)
        fmt = _FMT_OF[dt]
        mag = b & (fmt.sign - 1)
        if fmt != F32:
            mag = _convert(mag, fmt, F32)
        key = jnp.where(mag > F32.inf, _u(F32.inf + 1), mag)
        mant, sh = _unpack(jnp.minimum(mag, _u(F32.inf)), F32)
        return key, mant, sh
    if dt.itemsize > 4:
        raise TypeError(f"w: dtype {dt} is not supported by emul_jax.sparsity.transposable_mask")
    key = _magnitude_key(w).astype(_U32)
    return key, key, jnp.zeros(w.shape, _I32)


# Tiles are laid out (m*m, T): element k (row-major) of every tile is row k, so that the
# per-tile work runs over long contiguous rows.


def _tiles(arr, m, layout, shape):
    """(m*m, T) tiles (row-major inside a tile) of a per-element array, zero-padded as the core."""
    mm = m * m
    if layout == "gemm":
        rows, cols = shape
        rp, cp = -(-rows // m) * m, -(-cols // m) * m
        g = jnp.pad(arr, ((0, rp - rows), (0, cp - cols)))
        return g.reshape(rp // m, m, cp // m, m).transpose(1, 3, 0, 2).reshape(mm, -1)
    if layout == "nchw":
        flat = arr.reshape(-1)
        return jnp.pad(flat, (0, -(-flat.size // mm) * mm - flat.size)).reshape(-1, mm).T
    moved = jnp.moveaxis(arr, 1, -1)
    k = int(np.prod(moved.shape[1:]))
    rowsv = moved.reshape(shape[0], k)
    return jnp.pad(rowsv, ((0, 0), (0, -(-k // mm) * mm - k))).reshape(-1, mm).T


def _untile(t, m, layout, shape):
    """Inverse of _tiles, clipping the padding."""
    mm = m * m
    if layout == "gemm":
        rows, cols = shape
        rp, cp = -(-rows // m) * m, -(-cols // m) * m
        g = t.reshape(m, m, rp // m, cp // m).transpose(2, 0, 3, 1).reshape(rp, cp)
        return g[:rows, :cols]
    t = t.T
    if layout == "nchw":
        size = int(np.prod(shape))
        return t.reshape(-1)[:size].reshape(shape)
    moved_shape = (shape[0],) + tuple(shape[2:]) + (shape[1],)
    k = int(np.prod(moved_shape[1:]))
    res = t.reshape(shape[0], -1)[:, :k].reshape(moved_shape)
    return jnp.moveaxis(res, -1, 1)


def _greedy_tiles(key, n, m):
    """Full greedy per tile ((m*m, T) keys): visit by (-|w|, flat index), keep an element while
    its row and its column hold fewer than n.  The visiting step of every element is its rank,
    counted pairwise (XLA's CPU sort of many short segments is slow)."""
    mm, nt = key.shape
    e = jnp.arange(mm)[:, None]

    def count(l, rank):  # element l precedes element e: larger key, or equal key and l < e
        kl = lax.dynamic_index_in_dim(key, l, 0, keepdims=True)
        return rank + ((kl > key) | ((kl == key) & (l < e))).astype(_I32)

    rank = lax.fori_loop(0, mm, count, jnp.zeros(key.shape, _I32))  # (mm, T): visiting step

    def body(k, st):
        rc, cc, kept = st
        room = ((rc[:, None, :] < n) & (cc[None, :, :] < n)).reshape(mm, nt)
        ok = (rank == k) & room
        okt = ok.reshape(m, m, nt)
        rc = rc + jnp.sum(okt, axis=1, dtype=_I32)
        cc = cc + jnp.sum(okt, axis=0, dtype=_I32)
        return rc, cc, kept | ok

    st = (jnp.zeros((m, nt), _I32), jnp.zeros((m, nt), _I32), jnp.zeros((mm, nt), bool))
    return lax.fori_loop(0, mm, body, st)[2]


_LIMB = 29  # bits per limb: a sum of 8 limbs < 2^32


def _limbs(mant, sh, nlimbs):
    """Per-tile fixed point: (nlimbs, 16, T) limbs of mant * 2^(sh - base), base = the tile's
    lowest set bit, and whether nlimbs suffice for every tile (sums of 8 included)."""
    nzm = mant != 0
    low = sh + (31 - _clz(mant & (_u(0) - mant)))  # position of the lowest set bit
    top = sh + (31 - _clz(mant))
    base = jnp.min(jnp.where(nzm, low, jnp.iinfo(jnp.int32).max), axis=0, keepdims=True)
    base = jnp.where(jnp.any(nzm, axis=0, keepdims=True), base, 0)
    span = jnp.max(jnp.where(nzm, top - base + 1, 0), axis=0)
    fits = jnp.all(span + 3 <= nlimbs * _LIMB)
    off = jnp.where(nzm, sh - base, 0)
    r = off[None] - _LIMB * jnp.arange(nlimbs, dtype=_I32)[:, None, None]  # bit offset in limb k
    mask = _u((1 << _LIMB) - 1)
    left = jnp.where(r < _LIMB, _shl(mant[None], jnp.clip(r, 0, 31)) & mask, _u(0))
    right = jnp.where(-r < 32, _shr(mant[None], jnp.clip(-r, 0, 31)) & mask, _u(0))
    return jnp.where(r >= 0, left, right), fits


def _shift_down(a):
    """a[k - 1] at row k (0 at row 0), along axis 0."""
    return jnp.pad(a[:-1], ((1, 0),) + ((0, 0),) * (a.ndim - 1))


def _canonical(s):
    """Carry-propagated 29-bit limbs of the (L, T) limb-wise sums s (each < 2^32; the value fits
    L limbs).  Carries by look-ahead (no chain from limb to limb, which XLA would inline and
    re-evaluate)."""
    mask = _u((1 << _LIMB) - 1)
    k = jnp.arange(s.shape[0], dtype=_I32)[:, None]
    s1 = (s & mask) + _shift_down(s >> _LIMB)  # < 2^29 + 8: carries out of a limb are now 0 or 1
    g = (s1 >> _LIMB) != 0  # generates a carry
    r1 = s1 & mask
    notp = r1 != mask  # does not propagate an incoming carry (g implies notp)
    last_g = _shift_down(lax.cummax(jnp.where(g, k, -1), axis=0) + 1) - 1
    last_notp = _shift_down(lax.cummax(jnp.where(notp, k, -1), axis=0) + 1) - 1
    cin = (last_g >= 0) & (last_g == last_notp)
    return (r1 + cin.astype(_U32)) & mask


def _lex_greater(a, b):
    """a > b for (L, T) canonical limbs (most significant limb last), per column."""
    k = jnp.arange(a.shape[0], dtype=_I32)[:, None]
    top = jnp.max(jnp.where(a != b, k, -1), axis=0)
    return jnp.any((k == top[None, :]) & (a > b), axis=0)


def _optimal24_scores(limbs):
    """Index (T,) of the first of the 90 sorted candidates with the maximal exact kept sum;
    limbs: (L, 16, T)."""
    nl, _, nt = limbs.shape
    lt = limbs.reshape(nl, 4, 4, nt)
    # row-pair sums (limb-wise, no carries: < 2^30): (4 rows, 6 pairs, L, T)
    ps = jnp.stack([jnp.stack([lt[:, i, a] + lt[:, i, b] for a, b in _PAIRS]) for i in range(4)])
    tok = _token(limbs)
    ps = _materialise(tok, ps)
    cand = jnp.asarray(_CAND_IDS)

    def body(q, st):
        best, bestq = st

        def row_pair(i):  # ps[i, cand[q, i]], copied out (a dynamic slice fused into the
            # element-wise code below would stop XLA from vectorising it)
            return _materialise(tok, lax.dynamic_slice(ps, (i, cand[q, i], 0, 0), (1, 1, nl, nt))[0, 0])

        s = _canonical(row_pair(0) + row_pair(1) + row_pair(2) + row_pair(3))
        gt = _lex_greater(s, best)
        return jnp.where(gt[None, :], s, best), jnp.where(gt, q, bestq)

    # best starts at 0 with candidate 0; only strictly larger sums replace it, so the first
    # candidate of maximal sum wins
    init = (jnp.zeros((nl, nt), _U32), jnp.zeros((nt,), _I32))
    return lax.fori_loop(0, len(_CAND_IDS), body, init)[1]


def _optimal24_tiles(mant, sh, full_limbs):
    """Optimal transposable 2:4 masks of (16, T) tiles, exact: per tile the limbs hold every
    magnitude as an integer multiple of the tile's lowest set bit; 3 limbs (87 bits) whenever the
    spread of every tile allows, else enough limbs for the whole float32 range."""

    def with_limbs(nl):
        limbs, _ = _limbs(mant, sh, nl)
        return _optimal24_scores(limbs)

    if full_limbs <= 3:
        best = with_limbs(full_limbs)
    else:
        _, fits3 = _limbs(mant, sh, 3)
        best = lax.cond(fits3, lambda: with_limbs(3), lambda: with_limbs(full_limbs))
    return jnp.asarray(_CAND_MASKS.T)[:, best]


@functools.partial(jax.jit, static_argnames=("n", "m", "method", "layout"))
def _transposable_impl(w, n, m, method, layout):
    shape = w.shape
    key, mant, sh = _weight_repr(w)
    kt = _tiles(key, m, layout, shape)
    if n == m:
        kept = jnp.ones(kt.shape, bool)
    elif method == "greedy":
        kept = _greedy_tiles(kt, n, m)
    else:
        full = 3 if jnp.issubdtype(w.dtype, jnp.integer) or w.dtype == jnp.bool_ else 10
        kept = _optimal24_tiles(_tiles(mant, m, layout, shape), _tiles(sh, m, layout, shape), full)
    return _untile(kept, m, layout, shape)


def _concrete(a):
    """a as a NumPy array, or None when it is traced."""
    try:
        return np.asarray(a)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def _host_transposable(w, n, m, method, layout, reference_early_stop):
    """The core's transposable_mask run on the host through jax.pure_callback."""
    import emul.sparsity as core

    def cb(wv):
        wv = np.asarray(wv)
        if wv.dtype == jnp.bfloat16:
            wv = wv.astype(np.float32)
        return np.asarray(core.transposable_mask(wv, n, m, method=method, layout=layout,
                                                 reference_early_stop=reference_early_stop),
                          dtype=np.bool_)

    return jax.pure_callback(cb, jax.ShapeDtypeStruct(w.shape, jnp.bool_), w,
                             vmap_method="sequential")


def transposable_mask(w, n, m, method="optimal", layout="gemm", reference_early_stop=False):
    """Mask (bool, shape of ``w``) in which every m x m tile keeps at most ``n`` per row and column.

    Semantics, tiles, layouts and padding as :func:`emul.sparsity.transposable_mask`
    (docs/sparsity.md):

    * ``method="greedy"`` (any n:m, pure JAX): visit the elements of each tile by
      (-|w|, flat index) and keep one while its row and its column hold fewer than ``n``.
      Magnitudes are compared as unsigned integers.
    * ``method="optimal"``, 2:4 (pure JAX): each tile scores the 90 transposable 4x4 masks
      exactly -- every |w| is an integer multiple of the tile's lowest set bit, held in 29-bit
      limbs (3 limbs when every tile's magnitudes span at most 84 bits, else 10 limbs, enough
      for the whole float32 range including subnormals), sums are exact and compared
      lexicographically limb by limb -- and keeps the first candidate (in the order of sorted
      flat kept-index lists) with the maximal sum: maximum kept sum of |w| with exactly 2 per
      row and column, ties to the lexicographically smallest kept-index list.
    * ``method="optimal"``, other n:m (n < m), and ``reference_early_stop=True``: **a host call
      to the core** through ``jax.pure_callback`` (works under ``jit`` and, one call per batch
      element, under ``vmap``; the weight travels to the host and back, and runs wherever the
      core runs).  ``n == m`` keeps everything, in JAX.

    Non-finite weights: the core raises ValueError; so does this function when ``w`` is concrete.
    Under ``jit`` it cannot raise: NaN/inf then rank above every finite magnitude (greedy) or count
    as 2^128 (optimal), which the core never produces.  dtypes: float32/16, bfloat16 and integers
    up to 32 bits in JAX.  Not differentiable (boolean output).
    """
    n, m = _check_nm(n, m)
    method = _check_choice(method, "method", _T_METHODS)
    layout = _check_choice(layout, "layout", _LAYOUTS)
    if not isinstance(reference_early_stop, (bool, np.bool_)):
        raise TypeError(f"reference_early_stop={reference_early_stop!r}: expected a bool")
    if reference_early_stop and method != "greedy":
        raise ValueError("reference_early_stop=True: only valid with method='greedy'")
    if method == "optimal" and m > 32:
        raise ValueError(f"m={m}: method='optimal' supports m up to 32 (its integer costs must not overflow)")
    a = _as_jax(w, "w")
    shape = a.shape
    if layout == "gemm" and a.ndim != 2:
        raise ValueError(
            f"w: has shape {shape}; layout='gemm' needs a 2-D weight (rows = outputs, "
            "columns = reduction); use layout='nchw' or 'nhwc' for other shapes"
        )
    if layout == "nchw" and a.ndim == 0:
        raise ValueError("w: a 0-d array has no tiles; layout='nchw' needs at least 1 dimension")
    if layout == "nhwc" and a.ndim < 2:
        raise ValueError(f"w: has shape {shape}; layout='nhwc' needs at least 2 dimensions (Co, Ci, ...)")
    concrete = _concrete(a) if jnp.issubdtype(a.dtype, jnp.floating) and a.size else None
    if concrete is not None:
        finite = np.isfinite(concrete.astype(np.float32))
        if not finite.all():
            bad = tuple(int(i) for i in np.argwhere(~finite)[0])
            raise ValueError(
                f"w: non-finite value {concrete[bad]} at index {bad}; transposable masks need finite weights"
            )
    if a.size == 0:
        return jnp.zeros(shape, bool)
    if reference_early_stop or (method == "optimal" and (n, m) != (2, 4) and n != m):
        return _host_transposable(a, n, m, method, layout, bool(reference_early_stop))
    return _transposable_impl(a, n=n, m=m, method=method, layout=layout)

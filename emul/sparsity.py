"""N:M sparsity: top-n masks, minimum-variance unbiased (MVUE) gradient masks, transposable masks.

Blocks are ``m`` consecutive elements along ``axis`` (default -1, the GEMM reduction axis),
numbered in C order over the remaining index space (docs/sparsity.md).

* :func:`nm_mask` / :func:`nm_prune` -- keep the ``n`` largest magnitudes of every block
  (deterministic, MSE-optimal; right for weights and activations, biased for gradients).
* :func:`mvue` -- an unbiased n:m-sparse random estimate of ``x`` with the minimum total variance
  (``method="exact"``), or the approximate 2:4 sampler used in practice (``method="approx"``).
  :func:`mvue_distribution` lists every outcome of one block with its exact probability.
* :func:`transposable_mask` -- masks in which every m x m tile keeps at most ``n`` per row and
  per column (so both W and W^T are n:m), optimal or greedy.
* :func:`mask_diversity` / :func:`mask_diversity_paper` -- the number of masks per block/tile.

Importing this module compiles nothing and imports neither JAX nor SciPy (numba itself may
import the top of SciPy when it is installed).
"""

from __future__ import annotations

import itertools
import math
import operator
from decimal import Decimal
from fractions import Fraction

import numpy as np

from . import random as _random
from ._threads import run_slices
from ._validate import ml_dtypes_kind


def _kernels():
    """The Numba kernels, imported on first use so that ``import emul`` stays light."""
    from ._kernels import sparsity

    return sparsity


# below this many elements a kernel runs on one thread (waking threads costs more than it saves);
# an optimal transposable tile costs far more per element than a block of the other kernels
_PARALLEL_MIN = 1 << 15
_PARALLEL_MIN_OPTIMAL = 1 << 12


def _run(kernel, args, count, elements, parallel_min=_PARALLEL_MIN):
    """``kernel(*args, lo, hi)`` over the blocks/tiles [0, count) (``elements`` elements in all):
    one call below ``parallel_min`` elements, else one slice per Numba thread on the thread pool
    (the kernels are serial and release the GIL).  Every block/tile depends only on its own data
    and words (indexed by its global number), so the split never changes a result."""
    import numba

    if count:
        threads = min(numba.get_num_threads(), max(1, elements // parallel_min))
        run_slices(lambda lo, hi: kernel(*args, lo, hi), count, threads)


def _writeable(a):
    """a, C-contiguous and writeable (a copy when it is read-only): Numba compiles a read-only
    array as another type, and so another kernel signature."""
    return np.require(a, requirements=["C", "W"])


__all__ = [
    "nm_mask",
    "nm_prune",
    "mvue",
    "mvue_distribution",
    "transposable_mask",
    "mask_diversity",
    "mask_diversity_paper",
]

_TIES = ("low_index", "high_index")
_MVUE_METHODS = ("exact", "approx")
_T_METHODS = ("optimal", "greedy")
_LAYOUTS = ("gemm", "nchw", "nhwc")


# ----------------------------------------------------------------------------- validation


def _as_int(v, name):
    if isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{name}={v!r}: expected an integer, got bool")
    try:
        return operator.index(v)
    except TypeError:
        raise TypeError(f"{name}={v!r}: expected an integer, got {type(v).__name__}") from None


def _check_nm(n, m):
    m = _as_int(m, "m")
    n = _as_int(n, "n")
    if m < 1:
        raise ValueError(f"m={m}: must be a positive integer")
    if not 1 <= n <= m:
        raise ValueError(f"n={n}: must be between 1 and m={m}")
    return n, m


def _check_choice(value, name, choices):
    if not isinstance(value, str) or value not in choices:
        valid = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name}={value!r}: must be one of {valid}")
    return value


def _as_array(x, name):
    try:
        a = np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name}: cannot be read as a numeric array ({exc})") from None
    if a.dtype.kind not in "fiubV":
        raise TypeError(f"{name}: dtype {a.dtype} is not supported (expected a real float or integer dtype)")
    return a


def _to_blocks(a, m, axis, name):
    """(B, m) C-contiguous view/copy of a's blocks and the shape to restore."""
    if a.ndim == 0:
        raise ValueError(f"{name}: a 0-d array has no axis {axis}; blocks need at least 1 dimension")
    ax = _as_int(axis, "axis")
    if not -a.ndim <= ax < a.ndim:
        raise ValueError(f"axis={axis}: out of range for {name} with {a.ndim} dimension(s)")
    ax %= a.ndim
    length = a.shape[ax]
    if length % m:
        raise ValueError(
            f"m={m}: does not divide the length {length} of axis {axis} of {name} (shape {a.shape})"
        )
    moved = np.moveaxis(a, ax, -1)
    return np.ascontiguousarray(moved).reshape(-1, m), moved.shape, ax


def _from_blocks(blocks, moved_shape, ax):
    return np.moveaxis(blocks.reshape(moved_shape), -1, ax)


# IEEE-layout floats by bit-pattern width: (unsigned view dtype, |x| mask, +inf pattern)
_FLOAT_KEYS = {
    2: (np.uint16, 0x7FFF, 0x7C00),  # float16
    4: (np.uint32, 0x7FFFFFFF, 0x7F800000),
    8: (np.uint64, 0x7FFFFFFFFFFFFFFF, 0x7FF0000000000000),
}
_BF16_KEYS = (np.uint16, 0x7FFF, 0x7F80)


def _float_keys(bits, layout):
    ut, absmask, inf = layout
    v = _writeable(bits).view(ut)
    if v.dtype == np.uint16:  # float16 / bfloat16 keys as uint32 (the same numbers): one kernel less
        v = v.astype(np.uint32)
    ut = v.dtype.type
    return v, ut(absmask), ut(inf), ut(inf + 1)


def _magnitude_keys(a):
    """(v, absmask, inf_key, nan_key) for nm_mask_blocks: unsigned integers whose masked values
    order the magnitudes exactly.  Floats as their bit patterns (float16/32/64, bfloat16 read
    directly, the 16-bit ones as uint32; other narrow floats widened to float32 by ml_dtypes,
    exactly), integers as uint64 magnitudes.  No float instruction touches the data (MXCSR denormals-are-zero cannot matter)."""
    kind = a.dtype.kind
    ones = np.uint64(0xFFFFFFFFFFFFFFFF)
    if kind in "bu":
        return a.astype(np.uint64), ones, ones, ones
    if kind == "i":
        a64 = a.astype(np.int64)
        neg = a64 < 0
        mag = a64.astype(np.uint64)
        mag[neg] = (~mag[neg]) + np.uint64(1)  # two's complement negation, exact for INT64_MIN
        return mag, ones, ones, ones
    if kind == "f" and a.dtype.itemsize in _FLOAT_KEYS:
        native = np.ascontiguousarray(a.astype(a.dtype.newbyteorder("="), copy=False))
        return _float_keys(native, _FLOAT_KEYS[a.dtype.itemsize])
    if kind == "V" and a.dtype.name == "bfloat16":
        return _float_keys(np.ascontiguousarray(a), _BF16_KEYS)
    try:
        wide = a.astype(np.float32)
    except Exception:
        raise TypeError(f"x: dtype {a.dtype} is not supported") from None
    return _float_keys(wide, _FLOAT_KEYS[4])


def _widen_to_float32(a):
    """float16 / bfloat16 / other ml_dtypes floats as float32, exactly: float16 and bfloat16 from
    their bits (integer operations), the float8 and narrower types by ml_dtypes' conversion (also
    integer operations)."""
    if a.dtype.kind == "f" and a.dtype.itemsize == 2:
        h = np.ascontiguousarray(a.astype(np.dtype(np.float16), copy=False)).view(np.uint16)
        out = np.empty(h.shape, np.uint32)
        if h.size:
            _kernels().f16_to_f32_bits(h.reshape(-1), out.reshape(-1))
        return out.view(np.float32)
    if a.dtype.name == "bfloat16":
        return (np.ascontiguousarray(a).view(np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)
    return a.astype(np.float32)


def _narrow_from_float32(v, dt):
    """float32 array v whose values are values of dt (or +-inf, NaN) as dt: float16 and bfloat16
    from the bits, other ml_dtypes by their (integer) conversion, which rounds once."""
    if dt == np.dtype(np.float16):
        out = np.empty(v.shape, np.uint16)
        if v.size:
            _kernels().f32_to_f16_bits(np.ascontiguousarray(v).view(np.uint32).reshape(-1), out.reshape(-1))
        return out.view(np.float16)
    if dt.name == "bfloat16":
        return (np.ascontiguousarray(v).view(np.uint32) >> np.uint32(16)).astype(np.uint16).view(dt)
    with np.errstate(over="ignore"):
        return v.astype(dt)


# ----------------------------------------------------------------------------- top-n masks


def nm_mask(x, n, m, axis=-1, ties="low_index"):
    """Boolean mask keeping the ``n`` largest magnitudes of every block of ``m`` along ``axis``.

    Within a block elements are ranked by |x| (descending); equal magnitudes by index: with
    ``ties="low_index"`` (default) the lower index wins, with ``"high_index"`` the higher one (the
    common 2:4 GPU kernel's rule: an all-zero 2:4 block keeps indices 2 and 3).  NaN ranks above
    every number (so it is kept and propagates), NaNs among themselves by index; -0 and +0 are
    equal.  Exactly ``n`` per block are kept.  Integer inputs are compared exactly.
    """
    n, m = _check_nm(n, m)
    ties = _check_choice(ties, "ties", _TIES)
    a = _as_array(x, "x")
    blocks, moved_shape, ax = _to_blocks(a, m, axis, "x")
    keys, absmask, inf_key, nan_key = _magnitude_keys(blocks)
    out = np.empty(blocks.shape, dtype=np.bool_)
    _run(_kernels().nm_mask_blocks, (keys, n, ties == "high_index", absmask, inf_key, nan_key, out),
         blocks.shape[0], blocks.size)
    return _from_blocks(out, moved_shape, ax)


def nm_prune(x, n, m, axis=-1, ties="low_index"):
    """``x`` with all but the ``n`` largest magnitudes of every block set to +0 (same dtype).

    Uses :func:`nm_mask`; pruned entries become +0 (not x*0, which would give -0 or NaN).
    """
    a = _as_array(x, "x")
    mask = nm_mask(a, n, m, axis=axis, ties=ties)
    return np.where(mask, a, np.zeros((), dtype=a.dtype))


# ----------------------------------------------------------------------------- MVUE


# dtypes whose MVUE arithmetic runs in the dtype itself, held in float32 and rounded after every
# operation (see emul/_kernels/sparsity.py): name -> their tag dtype (see _mvue_dtypes)
_ROUNDED_DTYPES = {"float16": np.uint16, "bfloat16": np.int16}


def _mvue_dtypes(a):
    """(compute dtype, output dtype, tag dtype, working dtype) of mvue for input array a.

    The kernels compute in `compute` and round every operation to `working` when the tag is not
    the compute dtype itself (float16: uint16, bfloat16: int16; _rounding_mode gives the
    kernels' rmode)."""
    dt = a.dtype
    kind = dt.kind
    if kind == "f" and dt.itemsize in (4, 8):
        c = np.dtype(dt.newbyteorder("="))
        return c, c, c, c
    if kind == "f" and dt.itemsize == 2:
        f16 = np.dtype(np.float16)
        return np.dtype(np.float32), f16, np.dtype(_ROUNDED_DTYPES["float16"]), f16
    if kind in "iub":
        return np.dtype(np.float64), np.dtype(np.float64), np.dtype(np.float64), np.dtype(np.float64)
    if kind == "V":
        ml = ml_dtypes_kind(dt)
        if ml == "int":  # ml_dtypes int4, uint2, ...: like integers
            return np.dtype(np.float64), np.dtype(np.float64), np.dtype(np.float64), np.dtype(np.float64)
        if ml == "float":
            f32 = np.dtype(np.float32)
            if dt.name in _ROUNDED_DTYPES:
                return f32, dt, np.dtype(_ROUNDED_DTYPES[dt.name]), dt
            return f32, dt, f32, f32  # float8 and narrower: float32 arithmetic, outputs rounded once
    raise TypeError(f"x: dtype {dt} is not supported")


# approx: blocks with S < 2^-E are scaled by 2^E so that 1 / S cannot overflow (E = 64, float16: 15)
_APPROX_TINY_EXP = {"float16": 15}

# the fast path's margin, in binades, around the bounds below (emul/_kernels/sparsity.py)
_FAST_MARGIN = 8
_ALWAYS_FAST = (0, -(1 << 20), 1, 1 << 20, 0, -1)
_DEFAULT_NAN = []


def _default_nan():
    """The bits (as int64) of the NaN this machine's float64 hardware gives for an invalid
    operation (x86: negative; its float32 NaN has the same sign), as the fast path's operations
    give it: the emulated path returns it for 0 x inf, 0 / 0 and inf / inf."""
    if not _DEFAULT_NAN:
        with np.errstate(invalid="ignore"):
            nan = np.zeros(1) * np.full(1, np.inf)  # (a hardware product of non-subnormal operands)
        _DEFAULT_NAN.append(int(nan.view(np.int64)[0]))
    return _DEFAULT_NAN[0]


def _rounding_mode(tdt):
    """The MVUE kernels' rmode for tag dtype tdt (emul/_kernels/sparsity.py: _rd)."""
    if tdt == np.dtype(np.uint16):
        return _kernels().RD_F16
    if tdt == np.dtype(np.int16):
        return _kernels().RD_BF16
    return 0


def _mvue_limits(cdt, tdt, wdt, n, m, method):
    """(lim, W) for the MVUE kernels: which blocks take the fast path, and the working format of
    the emulated one (emul/_kernels/sparsity.py: _classify, _round_w).

    lim bounds the biased exponent fields lo <= hi of a block's non-zero magnitudes (in cdt, the
    dtype the kernels hold the data in) so that every value the float arithmetic forms is a normal
    number or an exact 0 -- then flush-to-zero / denormals-are-zero cannot change it -- and the
    overflow guards and rescalings go the way the bounds assume.  With a = 2^lo', A < 2^(hi'+1)
    (unbiased exponents), G = the margin, and rounding monotone (a power of two that bounds an
    exact result also bounds the rounded one):

    * exact (any n:m): sums lie in [a, m A], products t a' in [a, n m A], R / t >= a / n and
      C = (t D) / R >= a / (m A); no overflow guard fires when n m A < 2^emax.  Fast iff
      lo' >= emin + G + ceil(log2(n m)), lo' - hi' >= emin + G + ceil(log2 m),
      hi' <= emax - G - ceil(log2(n m)).
    * approx (2:4): sums in [a, 4 A], 1/S and 1/R_j >= 2^-(hi'+3), ratios >= 2^(lo'-hi'-3), the
      products T_j of two ratios >= 2^(2(lo'-hi'-3)), pi <= 8, x / pi >= a / 8; S < 2^-E surely
      when hi' <= -E - 3 (then everything is scaled by 2^E, which moves lo', hi' alike) and never
      when hi' >= -E.  Fast iff lo' >= emin + G, 2 (lo' - hi') >= emin + G, hi' <= -emin - G and
      (hi' >= -E or hi' <= -E - 3).

    float16 data (held in float32, tag uint16) is always fast: float16 magnitudes lie in
    [2^-24, 65504], so every float32 sum, product or quotient of them is at least 2^-48."""
    if tdt == np.dtype(np.uint16):
        return _ALWAYS_FAST, (24, -126, 127, 11, -14, 15, _default_nan())
    fi = np.finfo(cdt)  # float32 (also for bfloat16 and float8 data) or float64
    emin, emax = int(fi.minexp), int(fi.maxexp) - 1
    bias = emax
    W = (fi.nmant + 1, emin, emax, 0, 0, 0, _default_nan())
    if tdt == np.dtype(np.int16):  # bfloat16: float32 results rounded to 8 bits
        W = (24, -126, 127, 8, -126, 127, _default_nan())
    g = _FAST_MARGIN
    cm, cnm = (m - 1).bit_length(), (n * m - 1).bit_length()
    if method == "exact":
        lim = (emin + g + cnm + bias, emin + g + cm, 1, emax - g - cnm + bias, 0, -1)
    else:
        e = _APPROX_TINY_EXP.get(wdt.name, 64)
        lim = (emin + g + bias, emin + g, 2, -emin - g + bias, -e + bias, -e - 3 + bias)
    return tuple(int(v) for v in lim), tuple(int(v) for v in W)


def _finfo(dt):
    if dt.kind == "f":
        return np.finfo(dt)
    import ml_dtypes

    return ml_dtypes.finfo(dt)


def mvue(x, n, m, axis=-1, *, seed=None, key=None, method="exact"):
    """Unbiased n:m-sparse random estimate of ``x`` with minimum total variance (per block).

    Every block of ``m`` elements along ``axis`` is replaced by a random vector with at most ``n``
    non-zeros whose expectation is the block.  Randomness: ``seed=`` (int) or ``key=`` (a
    ``uint32[2]`` key, see :mod:`emul.random`); block b (C order) uses word b of
    ``emul.random.bits(key, (B,))`` (``method="approx"``: words 2b and 2b+1 of
    ``bits(key, (2B,))``), read as the real number ``u = word / 2**32`` in [0, 1).

    Arithmetic (the exact operation sequence, which a port such as ``emul_jax`` must replicate bit
    for bit).  Every block is computed in its working dtype W; ``(+) (x) (/)`` below are W's
    operations: the exact result rounded once to W (round to nearest, ties to even, subnormals
    kept, overflow to +-inf).  W is

    * float32 / float64 for float32 / float64 input (IEEE arithmetic);
    * float16 / bfloat16 for float16 / bfloat16 (ml_dtypes) input, operation by operation: this
      is numpy's float16 and ml_dtypes' bfloat16 scalar arithmetic.  emul evaluates each
      operation in float32 and rounds the result to W, which is the correctly rounded W result
      because float32 carries 24 >= 2p + 2 bits (p = 11, 8).  A port must likewise round every
      intermediate to W (XLA may otherwise keep float32 between fused float16 operations);
    * float32 for the float8 and narrower ml_dtypes types, with the outputs rounded once to the
      input dtype (their 2-4 fraction bits would make the sampling probabilities off by percents);
    * float64 for integer input (numpy and ml_dtypes integers), returned as float64.

    Constants are W values: t = 1..n (W's rounding of them), 2^-q and 2^q, 1/4, 2^-E and 2^E
    (E = 64; float16: 15).  Sums run left to right in index order from +0 (+0 (+) a = a); a_i =
    |x_i| is exact.  Comparisons are exact: u = word / 2^32 is never rounded, u + j (an integer
    j) is compared with a W value as real numbers.  Output: a new array of the input's shape (and
    dtype; float64 for integers); entries not kept are +0.  These are IEEE results whatever the
    thread's MXCSR (flush-to-zero / denormals-are-zero): blocks whose arithmetic could meet a
    subnormal run the same operations on an integer emulation of W (emul/_kernels/sparsity.py).

    Common rules, per block with a_i = |x_i|:

    * a block containing NaN or +-inf gives NaN in all m positions;
    * a block with at most n non-zeros is returned as it is (zeros as +0): it is already n:m and
      unbiased with variance 0; its words are not used (in particular an all-zero block gives 0).

    ``method="exact"`` (any n <= m) -- optimal inclusion probabilities pi_i = min(1, c a_i) with
    sum pi = n, realised by systematic sampling:

    1. Overflow guard: R0 = a_0 (+) ... (+) a_{m-1}; if n (x) R0 is not <= W's max (it
       overflowed), every a_i is replaced by a_i (x) 2^-q, q = ceil(log2(n m)) (exact unless it
       underflows), and the kept value v of step 3 by v (x) 2^q.
    2. Water-filling (which elements have pi = 1): start with no element capped and repeat:
       R = sum of the uncapped a_i (left to right), t = n - #capped; stop if t = 1; let i* be the
       uncapped index of largest a (lowest index among equals); if t (x) a_{i*} >= R, cap i*
       (it is always kept, with its own value x_{i*}), else stop.
       Then c = t / R for the uncapped elements (pi_i = t a_i / R).
    3. Kept value of a sampled element: sign(x_i) * v with v = R (/) t (every uncapped element
       has x_i / pi_i = sign(x_i) R / t).
    4. Systematic sampling over the uncapped non-zero elements in index order: with D the running
       sum D (+)= a_i, element i covers [C_prev, C_i) where C_i = (t (x) D) (/) R, except that the
       last such element has C_i = t exactly.  The t points u, u+1, ..., u+t-1 are swept in
       order: element i is kept iff at least one point p with C_prev <= p < C_i, i.e. the sweep
       pointer j (starting at 0) advances while j < t and u + j < C_i.
       In exact arithmetic P(i kept) = pi_i, E = x, and at most t of them (exactly t except in
       float corner cases where an interval rounds to length >= 1).

    For 1:2 this is the 1:2 MVUE (keep x_i with probability |x_i|/S, value sign(x_i) S); for
    2:4 it realises the MVUE paper's closed forms ([A], docs/references.md) (Case I: value S/2; Case II: the largest kept with
    its own value, one of the rest with value r = S - a_max).

    ``method="approx"`` (2:4 only) -- two successive magnitude-proportional draws without
    replacement and Horvitz-Thompson values.  eps = 0: zeros are never drawn, so the estimator is
    exactly unbiased and scale-invariant (the third-party kernel adds 1.19209e-7 to every |x|,
    which biases blocks of small gradients and lets zeros be drawn).

    1. Blocks with at most 2 non-zeros: returned as they are (see above).
    2. S = a_0 (+) a_1 (+) a_2 (+) a_3.  If S is not <= W's max, every a_i is replaced by
       a_i (x) 1/4, else if S < 2^-E by a_i (x) 2^E (so that 1 / S cannot overflow), and S is
       summed again (power-of-two scalings, exact unless they underflow: the ratios below and the
       kept values x_i / pi_i do not change).  R_j = the left-to-right sum of the a_k, k != j
       (e.g. R_0 = (a_1 (+) a_2) (+) a_3); inv = 1 (/) S.
    3. first = the smallest i with a_i > 0 and u0 < C_i, C_i = (a_0 (+) ... (+) a_i) (x) inv,
       except C_i = 1 for the last non-zero element.  second = the same over the other three
       elements in index order with u1, their running sums and 1 (/) R_first.  (Zero-width
       intervals are never chosen, so u1 = 0 or a C landing on u is harmless.)
    4. pi_i = ((t_i (+) T_j1) (+) T_j2) (+) T_j3 over the three j != i in increasing order,
       T_j = t_j (x) (a_i (/) R_j), t_j = a_j (x) inv (= P(i first) + sum_j P(j first)
       P(i second | j first)); kept values x_i (/) pi_i.

    :func:`mvue_distribution` gives the exact law (real arithmetic); the float sampler matches it
    up to the rounding of the interval ends and the 2^-32 grid of u.
    """
    n, m = _check_nm(n, m)
    method = _check_choice(method, "method", _MVUE_METHODS)
    if method == "approx" and (n, m) != (2, 4):
        raise ValueError(f"method='approx': only defined for 2:4, got n={n}, m={m}")
    a = _as_array(x, "x")
    k = _random._as_key(key=key, seed=seed)
    cdt, odt, tdt, wdt = _mvue_dtypes(a)
    blocks, moved_shape, ax = _to_blocks(a, m, axis, "x")
    if cdt == np.dtype(np.float32) and blocks.dtype != cdt:
        xb = _writeable(_widen_to_float32(blocks))
    else:
        xb = _writeable(np.asarray(blocks, dtype=cdt))  # float32/64 as they are, integers exactly
    nb = xb.shape[0]
    out = np.empty(xb.shape, dtype=cdt)
    ut = np.uint32 if cdt == np.dtype(np.float32) else np.uint64
    xbits, obits = xb.view(ut), out.view(ut)  # the kernels read and write bits through these
    nan = ut(0x7FC00000 if ut is np.uint32 else 0x7FF8000000000000)  # (the quiet NaN np.nan)
    # float16 / bfloat16 / float32 data share the float32 kernels, rmode selects the rounding
    rmode = _rounding_mode(tdt)
    fbig = float(_finfo(wdt).max)
    big = cdt.type(fbig)
    lim, W = _mvue_limits(cdt, tdt, wdt, n, m, method)
    if method == "exact":
        words = _random.bits(k, (nb,))
        if nb:
            q = (n * m - 1).bit_length()  # ceil(log2(n*m))
            tv = np.arange(m + 1).astype(wdt).astype(cdt)  # t = 0..m as values of the working dtype
            sd, su = cdt.type(2.0**-q), cdt.type(2.0**q)
            tvc = np.array([float(t) for t in tv]).view(np.uint64)  # (small integers: exact)
            cst = np.array([fbig, 2.0**-q, 2.0**q]).view(np.uint64)
            args = (out, obits, rmode, lim, W, tvc, cst, nan)
            if (n, m) == (2, 4):
                _run(_kernels().mvue_exact24_blocks, (xb, xbits, words, tv, big, sd, su, *args), nb, xb.size)
            elif (n, m) == (1, 2):
                _run(_kernels().mvue_exact12_blocks, (xb, xbits, words, big, sd, su, *args), nb, xb.size)
            else:
                _run(_kernels().mvue_exact_blocks, (xb, xbits, n, words, tv, big, sd, su, *args), nb, xb.size)
    else:
        words = _random.bits(k, (2 * nb,))
        if nb:
            e = _APPROX_TINY_EXP.get(wdt.name, 64)
            cst = np.array([1.0, fbig, 0.25, 2.0**-e, 2.0**e]).view(np.uint64)
            _run(_kernels().mvue_approx24_blocks, (xb, xbits, words, cdt.type(1), big, cdt.type(0.25),
                                                   cdt.type(2.0**-e), cdt.type(2.0**e), out, obits, rmode, lim, W,
                                                   cst, nan), nb, xb.size)
    if odt != cdt:
        out = _narrow_from_float32(out, odt)
    return _from_blocks(out, moved_shape, ax)


def _exact_fraction(v, i):
    if isinstance(v, Fraction):
        return v
    if isinstance(v, (bool, np.bool_)):
        return Fraction(int(v))
    if isinstance(v, (int, np.integer)):
        return Fraction(int(v))
    if isinstance(v, Decimal):
        if not v.is_finite():
            raise ValueError(f"block[{i}]={v!r}: must be finite")
        return Fraction(v)
    if isinstance(v, (float, np.floating)):
        f = float(v)  # exact for float16/32/64
        if not math.isfinite(f):
            raise ValueError(f"block[{i}]={v!r}: must be finite")
        return Fraction(f)
    try:
        f = float(np.asarray(v, dtype=np.float64))  # ml_dtypes scalars and the like
    except Exception:
        raise TypeError(f"block[{i}]={v!r}: expected a real number") from None
    if not math.isfinite(f):
        raise ValueError(f"block[{i}]={v!r}: must be finite")
    return Fraction(f)


def _sgn(v):
    return (v > 0) - (v < 0)


def _law_exact(xs, n):
    m = len(xs)
    a = [abs(v) for v in xs]
    capped = [False] * m
    while True:
        r = sum((a[i] for i in range(m) if not capped[i]), Fraction(0))
        t = n - sum(capped)
        if t == 1:
            break
        imax = max((i for i in range(m) if not capped[i]), key=lambda i: (a[i], -i))
        if t * a[imax] >= r:
            capped[imax] = True
        else:
            break
    v = r / t
    support = [i for i in range(m) if not capped[i] and a[i] != 0]
    ends = {}
    d = Fraction(0)
    for i in support:
        d += a[i]
        ends[i] = t * d / r
    cuts = sorted({Fraction(0)} | {c - math.floor(c) for c in ends.values()})
    cuts.append(Fraction(1))
    law = {}
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        if hi == lo:
            continue
        u = lo
        out = []
        j = 0
        for i in range(m):
            if capped[i]:
                out.append(xs[i])
                continue
            if a[i] == 0:
                out.append(Fraction(0))
                continue
            sel = False
            while j < t and u + j < ends[i]:
                j += 1
                sel = True
            out.append(_sgn(xs[i]) * v if sel else Fraction(0))
        key = tuple(out)
        law[key] = law.get(key, Fraction(0)) + (hi - lo)
    return law


def _law_approx(xs):
    a = [abs(v) for v in xs]
    s = sum(a, Fraction(0))
    pi = [a[i] / s + sum((a[j] / s) * a[i] / (s - a[j]) for j in range(4) if j != i) for i in range(4)]
    law = {}
    for f in range(4):
        if a[f] == 0:
            continue
        for g in range(4):
            if g == f or a[g] == 0:
                continue
            p = (a[f] / s) * (a[g] / (s - a[f]))
            key = tuple(xs[i] / pi[i] if i in (f, g) else Fraction(0) for i in range(4))
            law[key] = law.get(key, Fraction(0)) + p
    return dict(sorted(law.items(), key=lambda kv: tuple(v == 0 for v in kv[0])))


def mvue_distribution(block, n, m, method="exact"):
    """Every possible outcome of :func:`mvue` on one block, with its exact probability.

    ``block``: ``m`` real numbers (a sequence or 1-D array of floats, ints, ``Fraction`` or
    ``Decimal``), each converted to a ``Fraction`` exactly; non-finite values raise ValueError.
    Returns a list of ``(probability, outcome)`` pairs: ``probability`` is a ``Fraction`` > 0,
    ``outcome`` a tuple of ``m`` ``Fraction`` values; the probabilities sum to exactly 1 and the
    outcomes are distinct.  This is the law of the algorithm described in :func:`mvue` in exact
    arithmetic with u uniform on [0, 1): ``"exact"`` lists outcomes in order of increasing u,
    ``"approx"`` in order of the kept index pair.
    """
    n, m = _check_nm(n, m)
    method = _check_choice(method, "method", _MVUE_METHODS)
    if method == "approx" and (n, m) != (2, 4):
        raise ValueError(f"method='approx': only defined for 2:4, got n={n}, m={m}")
    if isinstance(block, np.ndarray):
        if block.ndim != 1:
            raise ValueError(f"block: expected a 1-D block of m={m} values, got shape {block.shape}")
        items = list(block)
    else:
        try:
            items = list(block)
        except TypeError:
            raise TypeError(f"block: expected a sequence of m={m} numbers, got {type(block).__name__}") from None
    if len(items) != m:
        raise ValueError(f"block: has {len(items)} values, expected m={m}")
    xs = [_exact_fraction(v, i) for i, v in enumerate(items)]
    nz = sum(v != 0 for v in xs)
    if nz <= n or (method == "approx" and nz <= 2):
        return [(Fraction(1), tuple(xs))]
    law = _law_exact(xs, n) if method == "exact" else _law_approx(xs)
    return [(p, o) for o, p in law.items()]


# ----------------------------------------------------------------------------- transposable masks


_CAND24 = None


def _cand24():
    """The 90 transposable 2:4 4x4 tiles as row-pair ids, sorted by sorted flat kept-index list."""
    global _CAND24
    if _CAND24 is None:
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
        _CAND24 = np.array([rows for _, rows in tiles], dtype=np.int64)
    return _CAND24


def _weight_array(w):
    a = _as_array(w, "w")
    kind = a.dtype.kind
    if kind == "f" and a.dtype.itemsize == 2 or kind == "V":
        try:
            a = _widen_to_float32(a)
        except Exception:
            raise TypeError(f"w: dtype {a.dtype} is not supported") from None
    elif kind == "f":
        a = a.astype(a.dtype.newbyteorder("="), copy=False)
    else:
        a = a.astype(np.float64)
    if a.size and not np.isfinite(a).all():
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(a))[0])
        raise ValueError(f"w: non-finite value {a[bad]} at index {bad}; transposable masks need finite weights")
    return a


def _pad2(a, rows, cols):
    if a.shape == (rows, cols):
        return _writeable(a)
    p = np.zeros((rows, cols), dtype=a.dtype)
    p[: a.shape[0], : a.shape[1]] = a
    return p


def transposable_mask(w, n, m, method="optimal", layout="gemm", reference_early_stop=False):
    """Mask (bool, shape of ``w``) in which every m x m tile keeps at most ``n`` per row and column.

    Tiles (paper [B], docs/references.md), each read as an m x m matrix with flat index ``r*m + c``:

    * ``layout="gemm"``: ``w`` is 2-D (rows = outputs, columns = the reduction); a tile is m
      consecutive rows x m consecutive columns (what the forward and the transposed GEMM need).
    * ``layout="nchw"``: any shape; ``w`` flattened in C order, every m*m consecutive elements
      form a tile, row-major (the reference's dynamic training).
    * ``layout="nhwc"``: ``w`` is (Co, Ci, *spatial) with at least 2 dimensions; each output's
      weights are ordered (*spatial, Ci) (NHWC), and every m*m consecutive ones form a tile,
      row-major (the reference's static pruning).
    Shapes that do not fill the last tiles are zero-padded (gemm: rows and columns to multiples
    of m; nchw: the flat vector, nhwc: each output's row, to multiples of m*m); padded entries
    compete like zeros and are clipped from the result.

    ``method="optimal"``: per tile, the mask with exactly n per row and column maximising the
    exact (real-number) kept sum of |w|; among optima the one whose sorted flat kept-index list
    is lexicographically smallest.  Exact for float16, bfloat16, float32 and float64 weights of
    any magnitudes (subnormals, 1-ulp differences, huge and tiny values in one tile); integer
    weights are converted to float64 first (exact up to 2^53).  The tile's magnitudes enter as
    integer costs ``RNE(|w| * 2^(50-e))``, 2^(e-1) <= max|w| < 2^e, which are exact when the
    tile's values span at most 50 bits below its top bit (every float16 tile, nearly every
    float32 tile).  Otherwise the solution is refined in further integer stages on the exact
    float remainders ``|w| - cost * 2^-(50-e)``, each resolving the next 40-50 bits; edges whose
    reduced cost exceeds the largest possible rounding gain keep their status, and a stage is
    final when no undecided edge has a remainder left or no alternating cycle of undecided edges
    exists (proof in ``emul/_kernels/sparsity.py``).  2:4 enumerates the 90 candidate tiles;
    other n:m run an exact min-cost flow (successive shortest paths on int64 costs in [0, 2^50])
    with a deterministic tie-breaking pass.

    ``method="greedy"``: the 2-approximation: visit the elements of each tile by
    (-|w|, flat index) and keep one when its row and its column both hold fewer than n (the
    result may keep fewer than n in some rows/columns).  ``reference_early_stop=True`` adds the
    reference code's batch-global stop (the batch being all tiles of this call): at the first
    visiting step k >= n whose candidate has a full row and a full column in every tile, all
    tiles stop.
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
    a = _weight_array(w)
    shape = a.shape
    mm = m * m
    if layout == "gemm":
        if a.ndim != 2:
            raise ValueError(
                f"w: has shape {shape}; layout='gemm' needs a 2-D weight (rows = outputs, "
                "columns = reduction); use layout='nchw' or 'nhwc' for other shapes"
            )
        rows, cols = shape
        grid = _pad2(a, -(-rows // m) * m, -(-cols // m) * m)
    elif layout == "nchw":
        if a.ndim == 0:
            raise ValueError("w: a 0-d array has no tiles; layout='nchw' needs at least 1 dimension")
        flat = a.reshape(-1)
        total = -(-flat.size // mm) * mm
        grid = _pad2(flat.reshape(1, -1), 1, total).reshape(-1, m)
    else:
        if a.ndim < 2:
            raise ValueError(f"w: has shape {shape}; layout='nhwc' needs at least 2 dimensions (Co, Ci, ...)")
        moved = np.moveaxis(a, 1, -1)
        rowsv = moved.reshape(shape[0], int(np.prod(moved.shape[1:])))
        grid = _pad2(rowsv, shape[0], -(-rowsv.shape[1] // mm) * mm).reshape(-1, m)
    out = np.zeros(grid.shape, dtype=np.bool_)
    if grid.size and a.size:
        # the kernels read the weights as bit patterns (integer loads): results do not depend on
        # the thread's MXCSR (flush-to-zero / denormals-are-zero)
        gbits = _kernels().weight_bits(grid)
        nt = grid.size // mm
        if n == m:
            out[:] = True
        elif method == "optimal":
            if (n, m) == (2, 4):
                _run(_kernels().transposable_optimal_24_tiles, (gbits, _cand24(), out), nt, grid.size,
                     _PARALLEL_MIN_OPTIMAL)
            else:
                _run(_kernels().transposable_optimal_tiles, (gbits, n, m, out), nt, grid.size, _PARALLEL_MIN_OPTIMAL)
        else:
            if grid.dtype == np.float64:  # float32 values? (from the bits) then the faster key sort
                b32 = np.empty(grid.shape, np.uint32)
                if _kernels().f64_to_f32_bits_if_exact(gbits.reshape(-1), b32.reshape(-1)):
                    gbits = b32
            if reference_early_stop:
                step = np.full(grid.shape, -1, dtype=np.int64)
                blocked = np.empty((nt, mm), dtype=np.bool_)
                _run(_kernels().transposable_greedy, (gbits, n, m, out, step, blocked, True), nt, grid.size)
                allb = blocked.all(axis=0)
                later = np.flatnonzero(allb[n:])
                stop = n + int(later[0]) if later.size else mm
                out = (step >= 0) & (step < stop)
            else:
                dummy_s = np.empty((1, 1), dtype=np.int64)
                dummy_b = np.empty((1, 1), dtype=np.bool_)
                _run(_kernels().transposable_greedy, (gbits, n, m, out, dummy_s, dummy_b, False), nt, grid.size)
    if layout == "gemm":
        return out if out.shape == shape else out[: shape[0], : shape[1]].copy()
    if layout == "nchw":
        return out.reshape(-1)[: a.size].reshape(shape)
    moved_shape = np.moveaxis(a, 1, -1).shape
    k = int(np.prod(moved_shape[1:]))
    res = out.reshape(shape[0], -(-k // mm) * mm)[:, :k].reshape(moved_shape)
    return np.ascontiguousarray(np.moveaxis(res, -1, 1))


# ----------------------------------------------------------------------------- mask diversity


def _count_regular(n, m):
    """Number of m x m 0/1 matrices with exactly n ones in every row and every column.

    Rows are filled one at a time; the state is how many columns still need 0..n ones (columns
    are interchangeable, so only these counts matter)."""
    # state: tuple s with s[r] = number of columns still needing r ones
    layer = {tuple(m if r == n else 0 for r in range(n + 1)): 1}
    for _ in range(m):
        nxt = {}
        for state, ways in layer.items():
            # choose k_r columns of each need-class r >= 1 to take a one, sum k_r = n
            def rec(r, left, cur, mult):
                if r > n:
                    if left == 0:
                        new = list(state)
                        for rr in range(1, n + 1):
                            new[rr] -= cur[rr]
                            new[rr - 1] += cur[rr]
                        key = tuple(new)
                        nxt[key] = nxt.get(key, 0) + ways * mult
                    return
                for k in range(min(left, state[r]) + 1):
                    cur[r] = k
                    rec(r + 1, left - k, cur, mult * math.comb(state[r], k))
                cur[r] = 0

            rec(1, n, [0] * (n + 1), 1)
        layer = nxt
    return layer.get(tuple(m if r == 0 else 0 for r in range(n + 1)), 0)


def mask_diversity(n, m, *, transposable=False, exact=True):
    """Number of valid masks per block of m (``transposable=False``: C(m, n)) or per m x m tile.

    ``transposable=True, exact=True`` counts the m x m 0/1 tiles with exactly ``n`` kept in every
    row and every column (4x4 2:4 -> 90; 8x8 4:8 -> 116,963,796,250).  ``exact=False`` returns
    :func:`mask_diversity_paper` instead (which is not an exact count for transposable masks).
    Returns a Python int.
    """
    n, m = _check_nm(n, m)
    if not exact:
        return mask_diversity_paper(n, m, transposable=transposable)
    if not transposable:
        return math.comb(m, n)
    return _count_regular(n, m)


def mask_diversity_paper(n, m, *, transposable=False):
    """The mask-diversity formula as quoted for the transposable-masks paper, per block/tile.

    N:M: C(m, n); transposable N:M per m x m tile: m! (m-1)! ... (m-n+1)! (4x4 2:4 -> 144,
    8x8 4:8 -> 17,557,585,920,000 ~ 1.76e13).  Not an exact count: see :func:`mask_diversity`.
    Returns a Python int.
    """
    n, m = _check_nm(n, m)
    if not transposable:
        return math.comb(m, n)
    out = 1
    for k in range(m - n + 1, m + 1):
        out *= math.factorial(k)
    return out

"""quantize, encode, decode: the exact value of each input, rounded once to a format.

Rounding acts on the exact value of the input (float16/32/64 of any byte order, or integers) on an
unbounded exponent range; the overflow rule then applies to the rounded value. See
``docs/rounding.md`` for the semantics of every mode and rule, with worked examples.
"""

from __future__ import annotations

import functools

import numpy as np

from ._params import kernel_params, resolve
from ._threads import prefault, run_slices, single_thread_below
from ._threads import threads_pay as _threads_pay
from ._validate import numeric_array, random_words
from .formats import ExpFormat, FixedFormat, FloatFormat, format as as_format
from .rounding import Rounding

__all__ = ["quantize", "encode", "decode"]

PARALLEL_MIN = 1 << 15  # general kernel: below this many elements, threads cost more than they save
FAST_PARALLEL_MIN = 1 << 18  # vectorised kernels (about 1 ns per element): the same, for them
SLICE_ALIGN = 1 << 16  # thread slices of the vectorised kernels start at multiples of this: a
# multiple of their blocks and SR spans, and a divisor of 2**32 (no span crosses a counter word)


def sr_words(rounding, shape, sr_bits, *, seed=None, key=None, random_bits=None) -> np.ndarray:
    """The flat uint32 random words for stochastic rounding of a result of ``shape`` (or a dummy).

    ``random_bits`` are checked and broadcast; ``seed``/``key`` give
    ``emul.random.bits(key, shape) >> (32 - sr_bits)`` (word i for element i in C order).
    """
    given = [name for name, v in (("seed", seed), ("key", key), ("random_bits", random_bits)) if v is not None]
    if rounding != Rounding.STOCHASTIC:
        if given:
            raise ValueError(f"{given[0]}: only used with rounding='stochastic' (got {rounding.value!r})")
        return np.zeros(1, np.uint32)
    if len(given) != 1:
        raise ValueError("rounding='stochastic' needs exactly one of seed=, key= or random_bits= "
                         f"(got {', '.join(given) if given else 'none'})")
    if random_bits is not None:
        return random_words(random_bits, shape, sr_bits)
    from . import random as _random  # the RNG is only needed for SR

    words = _random._bits_flat(_random._as_key(key=key, seed=seed), int(np.prod(shape, dtype=np.int64)))
    return words >> np.uint32(32 - sr_bits)


def _ro(a: np.ndarray) -> np.ndarray:
    """A read-only view of ``a``. Numba compiles a read-only and a writeable input array as two
    signatures of a kernel (seconds of compile each), so kernel inputs are always read-only."""
    v = a.view()
    v.flags.writeable = False
    return v


def _fits_float32(fmt) -> bool:
    if isinstance(fmt, (FloatFormat, ExpFormat)):
        return fmt.man_bits <= 23 and fmt.emax <= 127 and fmt.emin - fmt.man_bits >= -149
    return fmt.bits <= 24 and fmt.frac <= 149 and fmt.bits - 1 - fmt.frac <= 127


def _fast_f32(fmt, mode, in_dtype, out_dtype) -> bool:
    """Whether the vectorised float32 kernels (emul/_kernels/fast_f32.py) cover this call."""
    return (in_dtype == np.float32 and isinstance(fmt, FloatFormat)
            and fmt.emin >= -126 and fmt.man_bits <= 23
            and (out_dtype == np.float32 or (out_dtype != np.float64 and fmt.bits <= 32)))


@functools.lru_cache(maxsize=256)
def _fast_constants(fmt, mode, ovf, sr_bits=0, compare=False) -> np.ndarray:
    """The constant vector of the fast float32 kernels for resolved (format, mode, overflow, SR)."""
    from ._kernels import fast_f32

    return fast_f32.constants(kernel_params(fmt, mode, ovf, sr_bits, compare), fmt)


def code_dtype(fmt) -> np.dtype:
    """The smallest unsigned dtype holding ``fmt.bits``-bit codes."""
    for dt in (np.uint8, np.uint16, np.uint32, np.uint64):
        if fmt.bits <= 8 * np.dtype(dt).itemsize:
            return np.dtype(dt)


def exact_float64(a: np.ndarray) -> np.ndarray:
    """``a`` with float16/float32 elements widened to float64, exactly, from their bits (other
    dtypes as they are). numpy's float32 -> float64 cast reads a subnormal as 0 when the thread has
    denormals-are-zero set (MXCSR.DAZ, as XLA's CPU threads do); results must not depend on that."""
    if a.dtype.kind != "f" or a.dtype == np.float64:
        return a
    from ._kernels import round as K

    src = np.ascontiguousarray(a).reshape(-1)
    if src.dtype == np.float16:
        src = src.view(np.uint16)  # the kernels read float16 as its bits
    out = np.empty(src.size, np.float64)
    if src.size:
        K.widen(_ro(src), out)
    return out.reshape(a.shape)


def exact_float32(values: np.ndarray) -> np.ndarray:
    """float64 ``values`` that are float32 values (results on a format's grid), as float32, from
    their bits: numpy's float64 -> float32 cast writes a float32 subnormal as 0 under flush-to-zero
    (MXCSR.FTZ)."""
    from ._kernels import round as K

    v = np.asarray(values, np.float64)
    src = np.ascontiguousarray(v).reshape(-1)
    out = np.empty(src.size, np.uint32)
    if src.size:
        K.narrow(_ro(src), out)
    return out.view(np.float32).reshape(v.shape)


def _check_fits_float64(fmt, what):
    if isinstance(fmt, FixedFormat) and not fmt.fits_float64:
        raise ValueError(f"{what}: values of {fmt.name} do not fit float64 exactly (bits <= 53 needed); use encode")


# Inputs used as they are (no numeric_array conversion) when they arrive as ndarrays of these.
_NARROW_INTS = frozenset(np.dtype(t) for t in (np.int8, np.int16, np.int32, np.uint8, np.uint16, np.uint32))
_WIDE_INTS = frozenset(np.dtype(t) for t in (np.int32, np.uint32, np.int64, np.uint64))
_DIRECT = frozenset(np.dtype(t) for t in (np.float16, np.float32, np.float64, np.int64, np.uint64)) | _NARROW_INTS
_PLANS: dict = {}  # resolved calls, keyed by the caller's arguments (see _plan)


def _make_plan(fmt, rounding, overflow, sr_bits, sr_method, dtype, codes):
    """Validate the arguments once and choose the kernels: a tuple
    (route, fmt, mode, ovf, r, sr, out_dtype, P, C, kernel, in_view, out_view).

    route: "f32" (fast_f32), "f64" (fast_f64; int64/uint64 rounded to odd first), "fixed" (fast_fixed from float32, codes out),
    "fixed64" (fast_fixed from float64, codes out), "fixedint" (fast_fixed from int32, uint32, int64
    or uint64 arrays as they are, codes out) or "general" (emul/_kernels/round.py). The other
    vectorised routes read float32 (float16 and integers of at most 16 bits are widened to it
    exactly first) or float64 (float16, integers of at most 32 bits, and float32 for the float64
    fixed route, widened exactly). The kernels read the input as ``in_view`` and write the output as
    ``out_view``; ``kernel`` is ``(x, C, out)`` in deterministic modes, ``(x, C, u, key0, key1,
    seeded, out, base)`` for SR, and ``(x, C, P, u, key0, key1, seeded, out, base)`` on the f64
    route (see _fast)."""
    fmt, mode, ovf, r, compare = resolve(fmt, rounding, overflow, sr_bits, sr_method, exp_ok=True)
    sr = mode == Rounding.STOCHASTIC
    if codes:
        out_dtype = code_dtype(fmt)
    else:
        _check_fits_float64(fmt, "quantize")
        out_dtype = np.dtype(np.float32 if dtype == np.float32 and _fits_float32(fmt) else np.float64)
    P = kernel_params(fmt, mode, ovf, r, compare)
    general = ("general", fmt, mode, ovf, r, sr, out_dtype, P, None, None, None, None)
    ints = dtype.kind in "iu" and dtype.itemsize <= 4  # exact in float64 (in float32 up to 16 bits)
    as32 = codes and (dtype == np.float16 or (ints and dtype.itemsize <= 2))
    as32 = as32 or dtype == np.float32
    as64 = ints or dtype in (np.float64, np.float16)
    u32 = np.dtype(np.uint32)
    if isinstance(fmt, FloatFormat) and as32 and _fast_f32(fmt, mode, np.dtype(np.float32), out_dtype):
        from ._kernels import fast_f32 as F

        C = _fast_constants(fmt, mode, ovf, r, compare)
        values = out_dtype == np.float32
        if sr:
            kernel = F.quantize_sr_f32 if values else F.encode_sr_f32
        else:
            kernel = F.quantize_f32 if values else F.encode_f32
        return ("f32", fmt, mode, ovf, r, sr, out_dtype, P, C, kernel, u32, u32 if values else out_dtype)
    # int64/uint64 into float formats: rounded to odd at 53 bits first (fast_f64.int_to_odd), exact
    # for a second rounding to at most 51 bits (SR: man_bits + sr_bits <= 51)
    odd = (dtype.kind in "iu" and dtype.itemsize == 8 and isinstance(fmt, FloatFormat)
           and fmt.man_bits <= (51 - r if sr else 50))
    if isinstance(fmt, FloatFormat) and (as64 or odd) and out_dtype != np.float32:
        from ._kernels import fast_f64 as F

        if not F.in_domain(fmt):
            return general
        values = out_dtype == np.float64
        return ("f64", fmt, mode, ovf, r, sr, out_dtype, P, F.constants(P, fmt),
                F.quantize_f64 if values else F.encode_f64, np.dtype(np.uint64), np.dtype(np.uint64) if values else out_dtype)
    if isinstance(fmt, FixedFormat) and (codes or fmt.frac <= (126 if out_dtype == np.float32 else 1022)):
        from ._kernels import fast_fixed as F

        cd = code_dtype(fmt)  # quantize: codes first, then their values (fast_fixed.fixed_values)
        as32 = as32 or dtype == np.float16 or (ints and dtype.itemsize <= 2)
        if dtype in _WIDE_INTS and F.in_domain_int(fmt):  # read as they are: exact whatever the width
            return ("fixedint", fmt, mode, ovf, r, sr, out_dtype, P, F.constants_int(P, fmt),
                    F.encode_fixed_sr_int if sr else F.encode_fixed_int, dtype, cd)
        if as32 and F.in_domain(fmt):
            return ("fixed", fmt, mode, ovf, r, sr, out_dtype, P, F.constants(P, fmt),
                    F.encode_fixed_sr_f32 if sr else F.encode_fixed_f32, u32, cd)
        if (as64 or dtype == np.float32) and F.in_domain64(fmt):
            return ("fixed64", fmt, mode, ovf, r, sr, out_dtype, P, F.constants(P, fmt, wide=True),
                    F.encode_fixed_sr_f64 if sr else F.encode_fixed_f64, np.dtype(np.uint64), cd)
    return general


def _plan(fmt, rounding, overflow, sr_bits, sr_method, dtype, codes):
    """_make_plan, cached on the arguments as given (with the types of those a float or bool could
    equal: ``sr_bits=4.0`` must not reuse ``sr_bits=4``'s plan). Unhashable arguments are resolved
    (and their errors reported) afresh."""
    key = (fmt, rounding, overflow, sr_bits, type(sr_bits), sr_method, type(sr_method), dtype, codes)
    try:
        return _PLANS[key]
    except KeyError:
        pass
    except TypeError:
        return _make_plan(fmt, rounding, overflow, sr_bits, sr_method, dtype, codes)
    plan = _make_plan(fmt, rounding, overflow, sr_bits, sr_method, dtype, codes)
    if len(_PLANS) >= 1024:
        _PLANS.clear()
    _PLANS[key] = plan
    return plan


def _round(x, fmt, rounding, overflow, seed, key, sr_bits, sr_method, random_bits, *, codes):
    a = x if type(x) is np.ndarray and x.dtype in _DIRECT else numeric_array(x)
    plan = _plan(fmt, rounding, overflow, sr_bits, sr_method, a.dtype, codes)
    if plan[0] == "general" and a.dtype in _NARROW_INTS:  # the general kernel reads int64
        a = a.astype(np.int64)
        plan = _plan(fmt, rounding, overflow, sr_bits, sr_method, a.dtype, codes)
    route, fmt, mode, ovf, r, sr, out_dtype, P, C, kernel, in_view, out_view = plan
    seeded = sr and random_bits is None
    if sr or seed is not None or key is not None or random_bits is not None:
        # seeded SR makes its words inside the kernel; sr_words still checks the arguments
        u = sr_words(mode, (0,) if seeded else a.shape, r, seed=seed, key=key, random_bits=random_bits)
        if not u.flags.writeable:  # (random_bits of x's shape come back as a read-only view) a read-only
            u = u.copy()           # array is another type to Numba: one more compile of every kernel
    else:
        u = _NO_WORDS
    flat = a.reshape(-1) if a.flags.c_contiguous else np.ascontiguousarray(a).reshape(-1)
    n = flat.size
    inf_bad = 0
    if route == "general":
        nan_bad, inf_bad, out = _general(flat, u, P, seeded, seed, key, out_dtype)
    else:
        values = not codes and route in ("fixed", "fixed64", "fixedint")  # codes, then their values
        out = np.empty(n, out_view if values else out_dtype)
        wide = in_view.itemsize == 8
        if flat.dtype == np.float16:
            flat = _widen_f16(flat, to64=wide)
        elif flat.dtype.kind in "iu" and flat.dtype.itemsize == 8 and route == "f64":
            flat = _int_to_odd(flat)  # rounded to odd at 53 bits (the plan checked the format's width)
        elif flat.dtype.kind in "iu" and route != "fixedint":  # exact: at most 16 bits into float32,
            # 32 bits into float64
            flat = flat.astype(np.float64 if wide else np.float32)
        elif wide and flat.dtype == np.float32:
            flat = exact_float64(flat)
        src, dst = _ro(flat.view(in_view)), out.view(out_view)
        if sr or route == "f64" or n >= FAST_PARALLEL_MIN:
            threads = n >= FAST_PARALLEL_MIN and _threads_pay()
            nan_bad = _fast(route, kernel, src, C, P, sr, u, seeded, seed, key, dst, threads)
        else:  # the hot small case: deterministic float32 in
            nan_bad = kernel(src, C, dst)
        if route in ("fixed", "fixed64", "fixedint"):
            nan_bad, inf_bad = nan_bad
            if values and not (nan_bad or inf_bad):
                out = _fixed_values(out, fmt, out_dtype)
    if nan_bad:
        raise ValueError(f"x: {nan_bad} NaN value(s), but {fmt.name} has no NaN, and no overflow rule maps NaN "
                         "(overflow= decides infinities and out-of-range values only: 'saturate' clamps ±inf); "
                         "clean the input first, e.g. np.nan_to_num(x, nan=0.0), or use a format with NaN")
    if inf_bad:
        raise ValueError(f"x: {inf_bad} infinite value(s), which overflow={ovf.value!r} cannot map into {fmt.name}; "
                         "use a saturate rule")
    out = out.reshape(a.shape)
    return out if isinstance(x, np.ndarray) or out.ndim else out[()]


_U0 = np.uint32(0)


def _fast(route, kernel, src, C, P, sr, u, seeded, seed, key, dst, threads):
    """A vectorised kernel on slices of the elements from the thread pool (one slice when not
    ``threads``). Slices start at multiples of SLICE_ALIGN, and each is told its first element's
    index (seeded SR draws the words of its own elements), so the split never changes a result.
    Returns the kernel's NaN count (fixed-point routes: (#NaN, #inf) rejected), summed."""
    k0, k1 = _key_words(seed, key) if seeded else (_U0, _U0)
    n = src.size

    def words(lo, hi):
        return u[lo:hi] if u.size == n else u

    if route == "f64":
        def call(lo, hi):
            return kernel(src[lo:hi], C, P, words(lo, hi), k0, k1, seeded, dst[lo:hi], lo)
    elif sr:
        def call(lo, hi):
            return kernel(src[lo:hi], C, words(lo, hi), k0, k1, seeded, dst[lo:hi], lo)
    else:
        def call(lo, hi):
            return kernel(src[lo:hi], C, dst[lo:hi])
    if threads:
        prefault(dst)
    counts = run_slices(call, n, None if threads else 1, align=SLICE_ALIGN)
    if route in ("fixed", "fixed64", "fixedint"):
        return sum(c[0] for c in counts), sum(c[1] for c in counts)
    return sum(counts)


def _key_words(seed, key):
    """The two uint32 words of the SR key given by ``seed=`` or ``key=`` (emul.random's key)."""
    from . import random as _random

    k = _random._as_key(key=key, seed=seed)
    return np.uint32(k[0]), np.uint32(k[1])


def _int_to_odd(flat):
    """int64/uint64 elements as float64 patterns rounded to odd at 53 bits (fast_f64.int_to_odd)."""
    from ._kernels import fast_f64 as F

    out = np.empty(flat.size, np.uint64)
    F.int_to_odd(_ro(flat), out)
    return out


def _fixed_values(codes, fmt, out_dtype):
    """The values of fixed-point codes (the plan keeps them normal: see fast_fixed.fixed_values)."""
    from ._kernels import fast_fixed as F

    out = np.empty(codes.size, out_dtype)
    F.fixed_values(codes, np.int64(1 << (fmt.bits - 1) if fmt.signed else 0), np.float64(2.0 ** -fmt.frac), out)
    return out


_NO_WORDS = np.zeros(1, np.uint32)  # the kernels' word argument when there are no words (never written)


def _widen_f16(flat, to64):
    """float16 elements (flat) as float32, exactly from their bits (fast_f32.widen_f16), or as
    float64 when ``to64``: every float16 is a float32 normal, so that cast cannot meet a subnormal
    (denormals-are-zero cannot change it)."""
    from ._kernels import fast_f32 as F

    wide = np.empty(flat.size, np.uint32)
    F.widen_f16(_ro(flat.view(np.uint16)), wide)
    if not to64:
        return wide.view(np.float32)
    with np.errstate(invalid="ignore"):  # signalling NaNs (float16 NaN payloads) are quieted, sign kept
        return wide.view(np.float32).astype(np.float64)


def _general(flat, u, P, seeded, seed, key, out_dtype):
    """The general kernel (one compiled signature: every input as its 64 bits and a kind, every
    output as uint64, codes or the bits of float64 values; each signature of these kernels costs
    seconds to compile); returns (#NaN, #inf rejected, result)."""
    from ._kernels import round as K  # Numba loads on first use, not at import

    src = exact_float64(flat)  # float16/32 as float64, exactly (whatever the MXCSR)
    kind = K.IN_KIND[src.dtype.kind]
    src = _ro(np.ascontiguousarray(src).view(np.uint64))
    values = out_dtype.kind == "f"
    dst = np.empty(flat.size, np.uint64)
    n = src.size
    if seeded:  # threefry words made in the kernel
        k0, k1 = _key_words(seed, key)

        def call(lo, hi):
            return K.round_seeded(src[lo:hi], kind, k0, k1, lo, P, dst[lo:hi], values)
    else:
        def call(lo, hi):
            return K.round_serial(src[lo:hi], kind, u[lo:hi] if u.size == n else u, P, dst[lo:hi], values)
    with single_thread_below(n, PARALLEL_MIN):
        counts = run_slices(call, n) if n else [(0, 0)]
    nan_bad, inf_bad = (sum(c[0] for c in counts), sum(c[1] for c in counts))
    if values:
        dst = dst.view(np.float64)
        if out_dtype == np.float32:
            dst = exact_float32(dst)
    elif dst.dtype != out_dtype:
        dst = dst.astype(out_dtype)
    return nan_bad, inf_bad, dst


def quantize(x, fmt, rounding="nearest_even", overflow=None, *, seed=None, key=None, sr_bits=None,
             sr_method="add", random_bits=None):
    """Round every element of ``x`` once to ``fmt`` and return the rounded values.

    Args:
      x: array-like of float16/32/64 (any byte order) or integers; scalars and 0-d arrays work.
      fmt: a :class:`FloatFormat`, :class:`FixedFormat` or a name for :func:`emul.format`.
      rounding: a :class:`Rounding` or its name (default ``"nearest_even"``).
      overflow: ``"ieee"`` (float default), ``"saturate"`` (fixed default), or a fixed-point-only
        rule ``"saturate_zero"``, ``"saturate_symmetric"``, ``"wrap"``, ``"wrap_sign_magnitude"``.
      seed, key, random_bits: the random words for ``rounding="stochastic"`` (exactly one):
        ``random_bits`` are integers in [0, 2**sr_bits) broadcast to x's shape; ``seed``/``key``
        give ``emul.random.bits(key, x.shape) >> (32 - sr_bits)``, word i for element i (C order).
      sr_bits: random bits per stochastic rounding, 1…32 (default 32).
      sr_method: ``"add"`` (round away from the truncation iff t + u >= 2**r, with
        t = floor(f * 2**r) for the discarded fraction f) or ``"compare"`` (iff u < t).

    Returns:
      float32 when x is float32 and every value of ``fmt`` is a float32, else float64.

    >>> quantize([0.1, 464.0, 465.0], "e4m3fn")
    array([1.015625e-01, 4.480000e+02,          nan])
    >>> quantize(1.875, "fx<4,2>")
    np.float64(1.75)
    """
    return _round(x, fmt, rounding, overflow, seed, key, sr_bits, sr_method, random_bits, codes=False)


def encode(x, fmt, rounding="nearest_even", overflow=None, *, seed=None, key=None, sr_bits=None,
           sr_method="add", random_bits=None):
    """Like :func:`quantize`, but return the codes: the smallest unsigned dtype holding
    ``fmt.bits`` bits (fixed point: the two's complement pattern). Works for every fixed width.

    >>> encode([448.0, -0.0, float("nan")], "e4m3fn")
    array([126, 128, 127], dtype=uint8)
    """
    return _round(x, fmt, rounding, overflow, seed, key, sr_bits, sr_method, random_bits, codes=True)


def decode(codes, fmt):
    """The float64 value of every code. A code outside ``[0, 2**fmt.bits)`` or invalid for the
    format (``e == 0, f != 0`` without subnormals) raises ValueError. NaN codes give NaN.

    >>> decode([0x7e, 0x80, 0x7f], "e4m3fn")
    array([448.,  -0.,  nan])
    """
    fmt = as_format(fmt)
    _check_fits_float64(fmt, "decode")
    a = np.asarray(codes)
    if a.dtype.kind not in "iu":
        raise TypeError(f"codes: dtype {a.dtype} is not an integer dtype")
    if a.size and a.dtype.kind == "i" and a.min() < 0:
        raise ValueError(f"codes: negative code {int(a.min())}; codes are unsigned {fmt.bits}-bit patterns")
    flat = np.ascontiguousarray(a, dtype=np.uint64).reshape(-1)
    from ._kernels import round as K

    P = kernel_params(*resolve(fmt, Rounding.NEAREST_EVEN, None, None, "add", exp_ok=True))  # the format's defaults
    out = np.empty(flat.size, np.float64)
    with single_thread_below(flat.size, PARALLEL_MIN):
        invalid = sum(run_slices(lambda lo, hi: K.decode_serial(flat[lo:hi], P, out[lo:hi]), flat.size)) if flat.size else 0
    if invalid:
        first = int(flat[_invalid_codes(flat, fmt)][0])
        rule = "" if not isinstance(fmt, FloatFormat) or fmt.subnormals else ", and without subnormals e == 0 needs f == 0"
        raise ValueError(f"codes: {first:#x} is not a code of {fmt.name} (codes are {fmt.bits}-bit patterns{rule})")
    out = out.reshape(a.shape)
    return out if isinstance(codes, np.ndarray) or out.ndim else out[()]


def _invalid_codes(flat, fmt):
    """Which codes are too wide, or subnormal patterns of a format without subnormals."""
    bad = (flat >> np.uint64(fmt.bits)) != 0 if fmt.bits < 64 else np.zeros(flat.shape, bool)
    if isinstance(fmt, FloatFormat) and not fmt.subnormals:
        mag = flat & np.uint64((1 << (fmt.bits - 1)) - 1)
        bad |= ((mag >> np.uint64(fmt.man_bits)) == 0) & (mag != 0)
    return bad

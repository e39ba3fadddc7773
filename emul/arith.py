"""add, sub, mul, div, fma, sqrt: the exact real result, rounded once to a format.

Each operation computes its exact result with integer arithmetic (a 128-bit product, a sum
aligned in 192 bits with a sticky bit, a 128-bit quotient with its remainder, a 96-bit square root
with its remainder) and rounds it once with the same rounding kernel as :func:`emul.quantize`, so
every mode, overflow rule and stochastic-rounding setting behaves exactly as there. Inputs are
arrays of any numeric dtype, taken at their exact values and broadcast like numpy; the result is
float32 when every input is float32 and the format's values are float32 values, else float64.
See ``docs/arith.md``.
"""

from __future__ import annotations

import functools
import itertools
import math
import threading
from fractions import Fraction

import numpy as np

from ._lazy import LazyModule
from ._threads import pool, run_slices, single_thread_below, threads_pay
K = LazyModule("emul._kernels.arith")
KR = LazyModule("emul._kernels.round")
W = LazyModule("emul._kernels.wide")
from ._kernels import slots as _slots
from ._params import kernel_params, resolve
from ._validate import numeric_array
from .quantize import PARALLEL_MIN, _check_fits_float64, _fits_float32, exact_float32, exact_float64, sr_words

__all__ = ["add", "sub", "mul", "div", "fma", "sqrt"]

_SR_DOC = """
    Args:
      {args}: array-likes of float16/32/64 or integers, taken at their exact values and broadcast.
      fmt: a :class:`FloatFormat`, :class:`FixedFormat` or a name for :func:`emul.format`.
      rounding: a :class:`Rounding` or its name (default ``"nearest_even"``).
      overflow: as for :func:`emul.quantize` (``"ieee"`` for floats, ``"saturate"`` for fixed point
        by default).
      seed, key, random_bits, sr_bits, sr_method: stochastic rounding, as for :func:`emul.quantize`;
        element i of the broadcast result uses random word i (C order).
"""


def _as_float64_or_int(a: np.ndarray) -> np.ndarray:
    """float inputs as float64 (exact, from their bits: see quantize.exact_float64), integers that
    float64 holds exactly as float64 too, so that the kernel is compiled for few dtype combinations."""
    if a.dtype.kind == "f":
        return exact_float64(a)
    if a.size == 0 or (int(a.max()) <= 1 << 53 and int(a.min()) >= -(1 << 53)):
        return a.astype(np.float64)
    return a


def _flat(a: np.ndarray, shape) -> np.ndarray:
    """a broadcast to shape, flat, C-contiguous and writeable (numba compiles read-only arrays as a
    separate signature)."""
    if a.shape != shape:
        a = np.broadcast_to(a, shape)
    return np.require(a.reshape(-1), requirements=["C", "W"])


def _exact_fraction(v) -> Fraction | None:
    """The exact value of one input element (float64, int64 or uint64) as a Fraction (None for
    inf/NaN), read from its bits: ``Fraction(float)`` goes through ``frexp``, which multiplies a
    subnormal by 2**54 in floating point and so reads 0 under denormals-are-zero (docs/arith.md)."""
    if isinstance(v, (np.floating, float)):
        b = int(np.float64(v).view(np.uint64))
        ef, f = (b >> 52) & 0x7FF, b & ((1 << 52) - 1)
        if ef == 0x7FF:
            return None
        mag = Fraction(f, 1 << 1074) if ef == 0 else Fraction((1 << 52) | f) * Fraction(2) ** (ef - 1075)
        return -mag if b >> 63 else mag
    return Fraction(int(v))


def _redo_exact(op, flat, idx, u, P, fmt, out):
    """Recompute the elements the kernel could not finish (wrapping fixed-point results far above
    the format's range) with Python integers, then round them with the same kernel code."""
    for i in idx:
        x = [_exact_fraction(f[i]) for f in flat]
        if op == K.DIV:
            v = x[0] / x[1]
        elif op == K.SQRT:
            v = x[0]
        else:  # pragma: no cover - sums and products always fit their frames
            raise AssertionError(op)
        sign = int(v < 0)
        if op == K.SQRT:  # y = (sqrt(|v|) * 2**frac)**2: the root in units of the lsb, squared
            y = abs(v) * Fraction(2) ** (2 * fmt.frac)
            # floor(sqrt(y) * 2**64) from the integer square root of floor(y * 2**128)
            scaled = y * (1 << 128)
            z = math.isqrt(scaled.numerator // scaled.denominator)
            exact = z * z == scaled
        else:  # the quotient in units of the lsb
            scaled = abs(v) * Fraction(2) ** fmt.frac * (1 << 64)
            z = scaled.numerator // scaled.denominator
            exact = z == scaled
        q, F = z >> 64, z & ((1 << 64) - 1)
        q &= (1 << (fmt.bits + 1)) - 1
        out[i] = K.fixed_from_qF(np.int64(sign), np.uint64(q), np.uint64(F), not exact,
                                 np.uint64(u[i] if P[KR.SR] else 0), P)


_BITS = {np.dtype(np.float16): np.uint16, np.dtype(np.float32): np.uint32, np.dtype(np.float64): np.uint64}
_FLOATS = {np.dtype(bits): dtype for dtype, bits in _BITS.items()}


@functools.lru_cache(maxsize=512, typed=True)
def _setup(fmt, rounding, overflow, sr_bits, sr_method):
    """Resolved arguments, the kernel parameters and the fast kernels' constants (None outside
    their domain), once per distinct argument tuple (the per-call cost of small calls). Typed:
    ``sr_bits=4.0`` or ``True`` hash like 4 and 1 but must still be rejected by resolve()."""
    fmt, mode, ovf, r, compare = resolve(fmt, rounding, overflow, sr_bits, sr_method)
    P = kernel_params(fmt, mode, ovf, r, compare)
    from ._kernels import fast_arith

    fast = fast_arith.constants(fmt, P) if fast_arith.supported(fmt, P) else None
    return fmt, mode, ovf, r, P, fast


def _resolved(fmt, rounding, overflow, sr_bits, sr_method):
    try:
        return _setup(fmt, rounding, overflow, sr_bits, sr_method)
    except TypeError as exc:  # unhashable arguments: resolve() reports them
        if "unhashable" not in str(exc):
            raise
        return _setup.__wrapped__(fmt, rounding, overflow, sr_bits, sr_method)


def _raise_bad(fmt, ovf, n_nan, n_inf):
    if n_nan:
        raise ValueError(f"{n_nan} NaN result(s) (a NaN input or an invalid operation such as "
                         f"inf - inf, 0 * inf, 0 / 0, sqrt(-1)), but {fmt.name} has no NaN")
    if n_inf:
        raise ValueError(f"{n_inf} infinite result(s), which overflow={ovf.value!r} cannot map into "
                         f"{fmt.name}; use a saturate rule")


def _elements(op, ops, u, P, out, flags):
    """The general kernel on the operands ``ops`` (three flat arrays) and words u (one per
    element, or a placeholder without SR), on slices of the elements from several threads."""
    n = out.size
    ins = tuple(KR.IN_KIND[x.dtype.kind] for x in ops)  # the kernel reads every operand as its 64 bits
    a, b, c = (np.ascontiguousarray(x).view(np.uint64) for x in ops)

    def call(lo, hi):
        K.arith_serial(op, a[lo:hi], b[lo:hi], c[lo:hi], ins, u[lo:hi] if u.size == n else u, P, out[lo:hi], flags[lo:hi])

    with single_thread_below(n, PARALLEL_MIN):
        if n:
            run_slices(call, n)


def _general(op, arrays, shape, u, P, fmt, ovf):
    """The general kernel (exact wide-integer frames) on broadcast operands: float64 results,
    flat, or raises for results the format cannot take."""
    flat = [_flat(_as_float64_or_int(a), shape) for a in arrays]
    while len(flat) < 3:
        flat.append(flat[0])
    n = flat[0].size
    out = np.empty(n, np.float64)
    flags = np.empty(n, np.int8)
    _elements(op, flat, u, P, out, flags)
    if n and flags.any():
        _raise_bad(fmt, ovf, int(np.count_nonzero(flags == W.BAD_NAN)), int(np.count_nonzero(flags == W.BAD_INF)))
        _redo_exact(op, flat, np.flatnonzero(flags == W.NEED_EXACT), u, P, fmt, out)
    return out


_SPANS_PER_THREAD = 4


def _threads_pay() -> bool:
    """Whether a large call should use more than one thread: at least half a core to spare
    (:func:`emul._threads.threads_pay`). Measured on 2 cores with the 1-minute load average, bf16
    add of 1 M elements, medians of 40 alternating calls: at load 6, 155 M/s on 2 threads vs 427 M/s
    on one; at load 1.2, 629 M/s vs 437 M/s. Only speed depends on this, never a result."""
    return threads_pay(0.5)


def _chunked(kernel, args, n):
    """kernel(*args, lo, hi) over [0, n): one call below 2 * PARALLEL_MIN elements, else on
    ``t`` threads (Numba's thread count, at most n // PARALLEL_MIN): the calling thread and
    ``t - 1`` threads of the pool (the kernels release the GIL) take spans of about
    ``n / (4 t)`` elements (whole cache lines) from a shared counter until none is left, so a
    thread that gets less CPU (a busy machine) takes fewer spans instead of holding the others
    up. One thread when the machine has no core to spare (:func:`_threads_pay`: a thread that
    holds a span and is descheduled stalls the call). Every element depends only on its own
    operands, so the split never changes a result. Returns the sum of the results."""
    import numba

    threads = min(numba.get_num_threads(), max(1, n // PARALLEL_MIN))
    if threads <= 1 or not _threads_pay():
        return kernel(*args, 0, n)
    step = -(-n // (threads * _SPANS_PER_THREAD))
    step += -step % 64
    spans = -(-n // step)
    counter = itertools.count()

    def work():
        total = 0
        i = next(counter)  # (itertools.count is atomic under the GIL)
        while i < spans:
            lo = i * step
            total += kernel(*args, lo, min(lo + step, n))
            i = next(counter)
        return total

    jobs = [pool().submit(work) for _ in range(threads - 1)]
    total = work()
    return total + sum(j.result() for j in jobs)


_LOCAL = threading.local()


def _scratch(n):
    """A uint8 work array of n elements for the marks of the second pass, kept per thread between
    calls (a fresh one costs a page fault per 4 KiB on every call)."""
    buf = getattr(_LOCAL, "marks", None)
    if buf is None or buf.size < n:
        buf = _LOCAL.marks = np.empty(max(n, 1024), np.uint8)
    return buf[:n]


def _one_dtype(arrays):
    """The float operands in one dtype, exactly, so that each fast kernel is compiled for
    float16, float32 or float64 operands and not for every mix (each costs seconds of compile). A
    size-1 operand (a Python scalar is float64) whose value is a value of the other operands'
    dtype is narrowed to it; otherwise every operand is widened to the widest dtype. Exact both
    ways, and checked from the bits (a cast under flush-to-zero could pass a subnormal as 0)."""
    dtypes = {a.dtype for a in arrays}
    if len(dtypes) == 1:
        return arrays
    target = max((a.dtype for a in arrays if a.size != 1), key=lambda d: d.itemsize, default=None)
    if target is None or any(a.dtype.itemsize > target.itemsize and not _narrows(a, target) for a in arrays):
        target = max(dtypes, key=lambda d: d.itemsize)
    return [a if a.dtype == target else _narrow(a, target) if a.dtype.itemsize > target.itemsize
            else _widen(a, target) for a in arrays]


def _narrow(a, dtype):
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        return a.astype(dtype)


def _narrows(a, dtype) -> bool:
    """Whether the size-1 ``a`` is exactly a value of the narrower float ``dtype`` (same bits back)."""
    back = _widen(_narrow(a, dtype), a.dtype)
    return back.view(_BITS[a.dtype]).tobytes() == np.ascontiguousarray(a).view(_BITS[a.dtype]).tobytes()


def _widen(a, dtype):
    """float16 -> float32 / float16, float32 -> float64, exactly from the bits."""
    if dtype == np.float64:
        return exact_float64(a)
    from .quantize import _widen_f16

    return _widen_f16(np.ascontiguousarray(a).reshape(-1), to64=False).reshape(a.shape)


def _fast(op, arrays, shape, u, P, k, fmt, ovf, out_dtype):
    """The vectorised kernels (emul/_kernels/fast_arith.py) on float operands; elements whose
    float64 operands are not float32 values go through the general kernel. None when an operand
    is not a float array (integers beyond 2**53)."""
    from ._kernels import fast_arith

    if any(a.dtype.kind != "f" for a in arrays):
        return None
    ops = _one_dtype(arrays)
    if ops[0].dtype == np.float32 and out_dtype != np.float32:
        # float32 operands, float64 result: widened exactly, so that each kernel has one float32
        # signature (float32 in, float32 out); the float64 kernel computes the same values
        ops = [exact_float64(a) for a in ops]
    flat = [_flat(a, shape) for a in ops]
    flat = [f.view(_BITS[f.dtype]) for f in flat]
    n = flat[0].size
    out = np.empty(n, np.uint32 if out_dtype == np.float32 else np.uint64)
    fl = _scratch(n)
    kernel = (fast_arith.SR_KERNELS if P[_slots.SR] else fast_arith.KERNELS)[op]
    if op == fast_arith.SQRT and not P[_slots.SR] and P[_slots.M] <= 23:
        kernel = fast_arith.sqrt_narrow_k  # no residual needed (fast_arith's docstring)
    marked = _chunked(kernel, (*flat, k, u, out, fl), n) if n else 0
    n_nan = n_gen_nan = n_gen_inf = 0
    if marked:
        at, n_nan = fast_arith.fix_specials(op, flat, k, out, np.flatnonzero(fl))
        if at.size:
            sub = [np.ascontiguousarray(exact_float64(f[at].view(_FLOATS[f.dtype]))) for f in flat]
            while len(sub) < 3:
                sub.append(sub[0])
            us = np.ascontiguousarray(u[at]) if P[_slots.SR] else u
            vals = np.empty(at.size, np.float64)
            flags = np.empty(at.size, np.int8)
            _elements(op, sub, us, P, vals, flags)
            n_gen_nan = int(np.count_nonzero(flags == W.BAD_NAN))
            n_gen_inf = int(np.count_nonzero(flags == W.BAD_INF))
            out[at] = exact_float32(vals).view(np.uint32) if out.dtype == np.uint32 else vals.view(np.uint64)
    if n_nan or n_gen_nan or n_gen_inf:
        _raise_bad(fmt, ovf, n_nan + n_gen_nan, n_gen_inf)
    return out.view(out_dtype)


def _apply(op, inputs, names, fmt, rounding, overflow, seed, key, sr_bits, sr_method, random_bits):
    fmt, mode, ovf, r, P, k = _resolved(fmt, rounding, overflow, sr_bits, sr_method)
    _check_fits_float64(fmt, names[0] if len(names) == 1 else "result")
    arrays = [numeric_array(x, name) for x, name in zip(inputs, names)]
    shape = arrays[0].shape
    if any(a.shape != shape for a in arrays):
        try:
            shape = np.broadcast_shapes(*(a.shape for a in arrays))
        except ValueError:
            shapes = ", ".join(f"{n}{a.shape}" for n, a in zip(names, arrays))
            raise ValueError(f"operands could not be broadcast together: {shapes}") from None
    out_dtype = (np.float32 if all(a.dtype == np.float32 for a in arrays) and _fits_float32(fmt)
                 else np.float64)
    u = sr_words(mode, shape, r, seed=seed, key=key, random_bits=random_bits)
    u = np.require(u, requirements=["C", "W"])  # (numba compiles read-only arrays separately)
    out = None
    if k is not None and _FAST:
        out = _fast(op, [a if a.dtype.kind == "f" else _as_float64_or_int(a) for a in arrays],
                    shape, u, P, k, fmt, ovf, out_dtype)
    if out is None:
        out = _general(op, arrays, shape, u, P, fmt, ovf)
        if out_dtype == np.float32:
            out = exact_float32(out)  # values of the format: float32 values, converted from bits
    out = out.reshape(shape)
    if out.ndim == 0 and not any(isinstance(x, np.ndarray) for x in inputs):
        return out[()]
    return out


_FAST = True  # tests switch the vectorised kernels off to compare them with the general one


def add(a, b, fmt, rounding="nearest_even", overflow=None, *, seed=None, key=None, sr_bits=None,
        sr_method="add", random_bits=None):
    """a + b, exact, rounded once to ``fmt``.
    {doc}
    >>> add(1.0, 2.0**-12, "fp16", "up")  # the exact sum is just above 1: the next fp16 up
    np.float64(1.0009765625)
    >>> add(1.0, -1.0, "fp16", "down")  # an exact zero sum is -0 when rounding down
    np.float64(-0.0)
    """
    return _apply(K.ADD, (a, b), ("a", "b"), fmt, rounding, overflow, seed, key, sr_bits, sr_method, random_bits)


def sub(a, b, fmt, rounding="nearest_even", overflow=None, *, seed=None, key=None, sr_bits=None,
        sr_method="add", random_bits=None):
    """a - b, exact, rounded once to ``fmt``.
    {doc}
    >>> sub(1.75, -1.0, "fx<4,2>")  # 2.75 saturates to the largest fx<4,2> value
    np.float64(1.75)
    """
    return _apply(K.SUB, (a, b), ("a", "b"), fmt, rounding, overflow, seed, key, sr_bits, sr_method, random_bits)


def mul(a, b, fmt, rounding="nearest_even", overflow=None, *, seed=None, key=None, sr_bits=None,
        sr_method="add", random_bits=None):
    """a * b, exact, rounded once to ``fmt``.
    {doc}
    >>> mul(448.0, 448.0, "e4m3fn")  # OCP E4M3 has no infinity: overflow gives NaN
    np.float64(nan)
    >>> mul(448.0, 448.0, "e4m3fn", overflow="saturate")
    np.float64(448.0)
    """
    return _apply(K.MUL, (a, b), ("a", "b"), fmt, rounding, overflow, seed, key, sr_bits, sr_method, random_bits)


def div(a, b, fmt, rounding="nearest_even", overflow=None, *, seed=None, key=None, sr_bits=None,
        sr_method="add", random_bits=None):
    """a / b, exact, rounded once to ``fmt`` (x / 0 is ±inf for finite nonzero x; 0 / 0 is NaN).
    {doc}
    >>> div(1.0, 3.0, "bf16")
    np.float64(0.333984375)
    >>> div([1.0, -1.0], 0.0, "fp16")
    array([ inf, -inf])
    """
    return _apply(K.DIV, (a, b), ("a", "b"), fmt, rounding, overflow, seed, key, sr_bits, sr_method, random_bits)


def fma(a, b, c, fmt, rounding="nearest_even", overflow=None, *, seed=None, key=None, sr_bits=None,
        sr_method="add", random_bits=None):
    """a * b + c with one rounding.
    {doc}
    >>> fma(1.0 + 2.0**-10, 1.0 - 2.0**-10, -1.0, "fp16")  # -2**-20, which a rounded product loses
    np.float64(-9.5367431640625e-07)
    """
    return _apply(K.FMA, (a, b, c), ("a", "b", "c"), fmt, rounding, overflow, seed, key, sr_bits, sr_method,
                  random_bits)


def sqrt(a, fmt, rounding="nearest_even", overflow=None, *, seed=None, key=None, sr_bits=None,
         sr_method="add", random_bits=None):
    """The square root of a, rounded once to ``fmt`` (sqrt(-0) = -0; negative inputs give NaN).
    {doc}
    >>> sqrt(2.0, "fp16", "toward_zero"), sqrt(2.0, "fp16", "up")
    (np.float64(1.4140625), np.float64(1.4150390625))
    """
    return _apply(K.SQRT, (a,), ("a",), fmt, rounding, overflow, seed, key, sr_bits, sr_method, random_bits)


for _f, _args in ((add, "a, b"), (sub, "a, b"), (mul, "a, b"), (div, "a, b"), (fma, "a, b, c"), (sqrt, "a")):
    _f.__doc__ = _f.__doc__.replace("{doc}", _SR_DOC.format(args=_args))
del _f, _args

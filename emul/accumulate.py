"""dot, matmul, conv2d with a low-precision accumulator: every step rounded, in a chosen order.

``matmul(a, b, acc, ...)`` computes each output element as docs/accumulators.md defines: products exact
(or rounded once to ``product``), then summed in the accumulator format ``acc`` with one rounding
and one overflow check per addition — saturating accumulators clamp the running sum at every
step, wrapping ones wrap it — in the order ``order`` says:

- ``"sequential"``: ``s = Q(s + p_k)`` for k = 0…K-1, from ``init`` (or +0);
- ``"pairwise"``: an adder tree over the products (pairs 2i, 2i+1 level by level, an odd last
  element passes up unchanged), then ``s = Q(init + root)``;
- ``"chunked"``: chunks of ``chunk`` consecutive products summed sequentially in ``acc`` from +0,
  the chunk sums then summed sequentially in ``outer`` (default ``acc``) from ``init``.

Stochastic rounding: output element j (C order) uses random words ``j*T … j*T+T-1`` in the order
of its T rounding steps (T = K for sequential and pairwise, K + ceil(K/chunk) for chunked, whose
K chunk steps come first, then the outer steps);
``random_bits`` has shape ``out.shape + (T,)``. See ``docs/accumulators.md``.

Fast paths, each proven equal to the exact step-by-step definition and tested against it
(``emul/_kernels/fast_accumulate.py``): float accumulators vectorised over the output row with an
error-free sum (stochastic rounding on ``emul/_kernels/sr_accumulate.py``, which generates the
counter-based words in place); fixed-point accumulators as exact integer arithmetic with a per-step
clamp or wrap (int16 lanes for saturating sequential ones where everything fits);
wrapping accumulators (and saturating ones whose running sum provably stays in range) as one
exact BLAS product.
"""

from __future__ import annotations

from fractions import Fraction

import functools

import numpy as np

from ._lazy import LazyModule
from ._threads import run_rows, run_slices, single_thread_below, spare_cores
K = LazyModule("emul._kernels.accumulate")
FK = LazyModule("emul._kernels.fast_accumulate")
SK = LazyModule("emul._kernels.sr_accumulate")
RW = LazyModule("emul._kernels.rowwise")
KR = LazyModule("emul._kernels.round")
from ._params import kernel_params, resolve
from ._validate import numeric_array
from .formats import FixedFormat, FloatFormat
from .quantize import _check_fits_float64, _fits_float32, encode, exact_float32, exact_float64, sr_words
from .rounding import MODE_BITS, Overflow, Rounding, as_rounding

__all__ = ["dot", "matmul", "conv2d", "sr_steps"]

ORDERS = ("sequential", "pairwise", "chunked")  # index = the kernels' SEQUENTIAL, PAIRWISE, CHUNKED


def sr_steps(k: int, order: str = "sequential", chunk: int | None = None) -> int:
    """T, the number of rounding steps (and SR words) of one output element of a length-k dot
    product: k for sequential and pairwise (k - 1 tree additions, then the step adding init),
    k + ceil(k / chunk) for chunked; 0 when k == 0.

    >>> sr_steps(256), sr_steps(256, "chunked", 64)
    (256, 260)
    """
    if k == 0:
        return 0
    if order == "chunked":
        return k + -(-k // chunk)
    return k


class _Config:
    """Validated arguments of one call (everything but the operands)."""

    def __init__(self, acc, product, product_rounding, rounding, overflow, order, chunk, outer, sr_bits, sr_method):
        if order not in ORDERS:
            raise ValueError(f"order={order!r}: must be one of {', '.join(ORDERS)}")
        self.order = order
        if order == "chunked":
            if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)):
                raise ValueError(f"chunk={chunk!r}: order='chunked' needs a positive integer chunk")
            if chunk < 1:
                raise ValueError(f"chunk={chunk}: must be at least 1")
            self.chunk = int(chunk)
        else:
            if chunk is not None:
                raise ValueError(f"chunk={chunk!r}: only used with order='chunked' (got order={order!r})")
            if outer is not None:
                raise ValueError(f"outer={outer!r}: only used with order='chunked' (got order={order!r})")
            self.chunk = 0
        self.acc, self.mode, self.ovf, self.r, self.compare = self._resolve(acc, "acc", rounding, overflow,
                                                                             sr_bits, sr_method)
        if outer is None:
            self.outer, self.outer_ovf = self.acc, self.ovf
        else:
            self.outer, _, self.outer_ovf, _, _ = self._resolve(outer, "outer", rounding, overflow, sr_bits, sr_method)
        self.final = self.outer if order == "chunked" else self.acc
        self.P_acc = kernel_params(self.acc, self.mode, self.ovf, self.r, self.compare)
        self.P_out = kernel_params(self.outer, self.mode, self.outer_ovf, self.r, self.compare)
        if product is None:
            self.product = None
            self.P_prod = self.P_acc  # unused
        else:
            prounding = as_rounding(product_rounding)
            if prounding == Rounding.STOCHASTIC:
                raise ValueError("product_rounding='stochastic': products take a deterministic mode "
                                 "(the random words belong to the accumulation steps)")
            self.product, self.product_mode, self.product_ovf, _, _ = resolve(product, prounding, None, None, "add")
            _check_fits_float64(self.product, "product")
            self.P_prod = kernel_params(self.product, prounding, self.product_ovf, 0, False)

    @staticmethod
    def _resolve(fmt, what, rounding, overflow, sr_bits, sr_method):
        try:
            out = resolve(fmt, rounding, overflow, sr_bits, sr_method)
        except ValueError as exc:
            raise ValueError(f"{what}: {exc}") from None
        _check_fits_float64(out[0], what)
        return out


def _values(codes, fmt) -> np.ndarray:
    """Values of valid codes of fmt (float64, NaN signs kept), without thread start-up."""
    codes = np.ascontiguousarray(codes, dtype=np.uint64).reshape(-1)
    if codes.size == 1 and codes[0] == 0 and isinstance(fmt, (FloatFormat, FixedFormat)):
        return np.zeros(1, np.float64)  # +0 (no kernel to compile for the default init)
    out = np.empty(codes.size, np.float64)
    P = kernel_params(fmt, Rounding.NEAREST_EVEN, Overflow.IEEE if isinstance(fmt, FloatFormat) else Overflow.SATURATE,
                      0, False)
    K.code_values(codes, P, out)
    return out


def _init_codes(init, cfg, out_shape):
    """init as codes of the final format, broadcast to the output (a 1-element +0 when absent)."""
    if init is None:
        return np.zeros(1, np.uint64)
    x = numeric_array(init, "init")
    try:
        x = np.broadcast_to(x, out_shape)
    except ValueError:
        raise ValueError(f"init: shape {x.shape} does not broadcast to the output shape {out_shape}") from None
    fmt = cfg.final
    x = np.ascontiguousarray(x).reshape(-1)
    if x.dtype.kind == "f" and np.isnan(x).any() and (isinstance(fmt, FixedFormat) or not fmt.has_nan):
        raise ValueError(f"init: NaN is not representable in {fmt.name}")
    ovf = Overflow.IEEE if isinstance(fmt, FloatFormat) else Overflow.SATURATE
    codes = encode(x, fmt, "nearest_even", ovf).astype(np.uint64)
    back = _values(codes, fmt)
    if x.dtype.kind == "f":  # compared as bits (a float compare reads subnormals as 0 under MXCSR.DAZ)
        xb, bb = exact_float64(x).view(np.uint64), back.view(np.uint64)
        mag = np.uint64((1 << 63) - 1)
        same = (xb == bb) | (((xb | bb) & mag) == 0) | (np.isnan(back) & np.isnan(x))  # ±0 are equal
    else:
        same = back == x
    if x.dtype.kind in "iu":  # beyond float64's 2**53 decode cannot tell; compare exactly
        same = np.array([int(v) == int(c) for v, c in zip(x, back)]) if np.abs(back).max(initial=0) >= 2**53 else same
    if not same.all():
        bad = x[np.flatnonzero(~same)[0]]
        raise ValueError(f"init: {bad!r} is not representable in the accumulator format {fmt.name}")
    return codes


def _small_int(x: np.ndarray) -> bool:
    return x.dtype.kind in "iu" and x.dtype.itemsize <= 4


_F32_NORMAL_MIN, _F32_INF = np.uint32(0x00800000), np.uint32(0x7F800000)


def _widened(x: np.ndarray) -> np.ndarray:
    """Float ``x`` as float64, exactly, whatever the thread's MXCSR. float32 arrays whose elements
    are all ±0 or normal and finite take numpy's cast (exact, and denormals-are-zero only acts on
    subnormal inputs); others quantize.exact_float64 (from the bits; a NaN becomes the quiet NaN of
    its sign). Checked on the bits: no magnitude field at or above inf's, and none in 1 … 2**23 - 1
    (minus one, mod 2**32, every such field is below 2**23 - 1 and every other at or above it)."""
    if x.dtype == np.float32 and x.size:
        mag = x.view(np.uint32) & np.uint32(0x7FFFFFFF)
        if mag.max() < _F32_INF and np.subtract(mag, np.uint32(1), out=mag).min() >= _F32_NORMAL_MIN - 1:
            return x.astype(np.float64)
    return exact_float64(x)  # from bits (a float32 -> float64 cast depends on MXCSR.DAZ)


def _narrowed(out: np.ndarray, fmt) -> np.ndarray:
    """float64 ``out`` holding values of ``fmt`` (which fits float32), ±inf or NaN, as float32:
    numpy's cast when fmt's quantum is at least 2**-126 (every value ±0 or a normal float32, which
    flush-to-zero never touches) and no element is a NaN; else quantize.exact_float32 (from the
    bits; a NaN becomes the quiet NaN of its sign, which numpy's cast need not give)."""
    if _quantum(fmt) >= -126 and not np.isnan(out).any():
        return out.astype(np.float32)
    return exact_float32(out)


def _operand(x, name) -> np.ndarray:
    """An operand as float64 (exact: floats, and integers within 2**53) or int64/uint64; integer
    arrays of up to 32 bits are kept as they are (exact in float64; converted when needed)."""
    if isinstance(x, np.ndarray) and _small_int(x):
        return x.astype(x.dtype.newbyteorder("="), copy=False)
    x = numeric_array(x, name)
    if x.dtype.kind == "f":
        return _widened(x)
    if x.size == 0 or (int(x.max()) <= 1 << 53 and int(x.min()) >= -(1 << 53)):
        return x.astype(np.float64)
    return x


class _Words:
    """The SR words of one call (``sr_words``'s flat uint32 layout: element e, step t uses word
    e*T + t), materialised only when a kernel reads them from memory: with ``seed``/``key`` the
    vectorised SR kernel generates each word from its index instead (``gen``)."""

    def __init__(self, u, key=None, shift=0, n=0):
        self.u, self.key, self.shift, self.n = u, key, shift, n
        self.gen = u is None

    @classmethod
    def of(cls, cfg, shape, seed, key, random_bits):
        if cfg.mode != Rounding.STOCHASTIC or random_bits is not None:
            return cls(_kernel_arg(sr_words(cfg.mode, shape, cfg.r, seed=seed, key=key, random_bits=random_bits)))
        if (seed is None) == (key is None):
            sr_words(cfg.mode, (0,), cfg.r, seed=seed, key=key)  # raises: exactly one of seed / key
        from . import random as _random
        return cls(None, _random._as_key(key=key, seed=seed), 32 - cfg.r, int(np.prod(shape, dtype=np.int64)))

    def array(self) -> np.ndarray:
        """The words as one flat uint32 array (generated on first use)."""
        if self.u is None:
            from . import random as _random
            self.u = _kernel_arg(_random._bits_flat(self.key, self.n) >> np.uint32(self.shift))
        return self.u

    def kernel_args(self):
        """(k0, k1, shift, gen, u) for emul/_kernels/sr_accumulate.py."""
        if self.gen:
            return int(self.key[0]), int(self.key[1]), self.shift, True, np.zeros(1, np.uint32)
        return 0, 0, 0, False, self.u


def _stack(x: np.ndarray, batch: tuple, core: tuple):
    """(array of shape (n, *core) holding x's distinct batch entries, index of each batch element)."""
    xb = x.shape[:-2]
    n = int(np.prod(xb, dtype=np.int64))
    idx = np.broadcast_to(np.arange(n, dtype=np.int64).reshape(xb), batch).reshape(-1)
    return _kernel_arg(x.reshape((n,) + core)), _kernel_arg(idx)


def _kernel_arg(x: np.ndarray) -> np.ndarray:
    """C-contiguous and writeable: numba compiles read-only arrays as a separate signature."""
    return np.require(x, requirements=["C", "W"])


def _matmul(a, b, acc, product, product_rounding, rounding, overflow, order, chunk, outer, init, seed, key,
            random_bits, sr_bits, sr_method, fast=True, scans=None):
    cfg = _Config(acc, product, product_rounding, rounding, overflow, order, chunk, outer, sr_bits, sr_method)
    a = a if isinstance(a, np.ndarray) else numeric_array(a, "a")
    b = b if isinstance(b, np.ndarray) else numeric_array(b, "b")
    integers = (a.dtype.kind in "iub", b.dtype.kind in "iub")
    max_abs = tuple(max(-int(x.min()), int(x.max())) if x.dtype.kind in "iub" and x.size else None for x in (a, b))
    a_dtype, b_dtype = a.dtype, b.dtype
    a = _operand(a, "a")
    b = _operand(b, "b")
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
        batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
    except ValueError:
        raise ValueError(f"matmul: batch dimensions of {a.shape} and {b.shape} do not broadcast") from None
    out_shape = batch + ((M,) if not squeeze_m else ()) + ((N,) if not squeeze_n else ())
    full_shape = batch + (M, N)
    Kd = Ka
    T = sr_steps(Kd, cfg.order, cfg.chunk)
    u = _Words.of(cfg, out_shape + (T,), seed, key, random_bits)
    init_codes = _init_codes(init, cfg, out_shape)
    out_dtype = (np.float32 if a_dtype == np.float32 and b_dtype == np.float32 and _fits_float32(cfg.final)
                 else np.float64)
    total = int(np.prod(full_shape, dtype=np.int64))
    if Kd == 0 or total == 0:  # no steps: init (or +0), like np.matmul's empty sum
        out = np.zeros(out_shape, out_dtype)
        if init is not None and total:
            out[...] = _values(init_codes, cfg.final).reshape(out_shape)
        return out if out.ndim else out[()]
    A3, ia = _stack(a2, batch, (M, Kd))
    B3, ib = _stack(b2, batch, (Kd, N))
    job = _Job(cfg, A3, B3, ia, ib, M, N, Kd, _kernel_arg(init_codes), u, T)
    job.integers, job.max_abs, job.scans = integers, max_abs, scans
    out = job.run(fast).reshape(out_shape)
    if out_dtype == np.float32:
        out = _narrowed(out, cfg.final)  # values of the final format: float32 values
    return out if out.ndim else out[()]


# Below this many multiply-accumulates a kernel runs on one thread: a parallel region costs a
# thread wake-up and a barrier, which on a busy machine (more runnable threads than cores) can
# stall for milliseconds. The fast kernels take about a nanosecond per MAC or less, so when the
# machine is already busy (1-minute load average at or above the core count) they stay on one
# thread up to 16x more work: a barrier waiting a whole time slice for a descheduled worker costs
# more than the second core saves. Results never depend on the thread count.
_PARALLEL_WORK = {"general": 1 << 14, "float": 1 << 22, "fixed": 1 << 23}


def _busy() -> bool:
    return spare_cores() <= 0.25


def _threshold(kind: str) -> int:
    threshold = _PARALLEL_WORK[kind]
    if kind != "general" and _busy():
        threshold *= 16
    return threshold


def _threads_for(work: int, kind: str):
    return single_thread_below(work, _threshold(kind))


class _Job:
    """One matmul: operands stacked per batch entry, and the choice of kernel for its rows."""

    def __init__(self, cfg, A3, B3, ia, ib, M, N, K, init_codes, u, T):
        self.cfg, self.raw, self.ia, self.ib = cfg, (A3, B3), ia, ib
        self.M, self.N, self.K, self.init_codes, self.words, self.T = M, N, K, init_codes, u, T
        self._wide = [None, None]
        self.rows = ia.size * M
        self.order = ORDERS.index(cfg.order)
        self.integers = (False, False)  # whether A3 / B3 came from integer dtypes
        self.max_abs = (None, None)  # their max |value|, when known
        self.scans = None  # (_Scan, _Scan) when the caller scanned the operands already

    def _operand(self, i):
        """Operand i stacked, as float64 (or int64/uint64 beyond 2**53): small integer arrays are
        converted on first use only (the fixed-point paths read them directly)."""
        if self._wide[i] is None:
            x = self.raw[i]
            self._wide[i] = _kernel_arg(x.astype(np.float64)) if _small_int(x) else x
        return self._wide[i]

    A3 = property(lambda self: self._operand(0))
    u = property(lambda self: self.words.array())
    B3 = property(lambda self: self._operand(1))

    def run(self, fast=True) -> np.ndarray:
        """All outputs, (rows, N) float64: a fast path where one applies; the elements it leaves
        (the general kernel defines non-finite results) by the general kernel."""
        if fast:
            plan = _plan(self)
            if plan is not None:
                out, redo = plan.run(self)
                if redo.size:
                    flat = out.reshape(-1)
                    flat[redo] = self.general(redo)
                return out
        return self.general(np.arange(self.rows * self.N, dtype=np.int64)).reshape(self.rows, self.N)

    def general(self, idxs) -> np.ndarray:
        """The exact step-by-step kernel on the given flat output indices."""
        cfg = self.cfg
        out = np.empty(idxs.size, np.float64)
        flags = np.zeros(idxs.size, np.int8)
        with _threads_for(idxs.size * self.K, "general"):
            run_rows(K.matmul_general, (self.A3, self.B3, self.ia, self.ib, self.M, self.N, self.K, self.order,
                                        cfg.chunk, self.init_codes, cfg.P_acc, cfg.P_out, cfg.product is not None,
                                        cfg.P_prod, self.u, self.T),
                     (np.ascontiguousarray(idxs, dtype=np.int64), out, flags))
        _raise_flags(flags, cfg)
        return out


# -- fast paths: when they apply (the proofs are in emul/_kernels/fast_accumulate.py) ---------------

class _Scan:
    """What the fast paths need to know about an operand: finite?, max |x| and the binary exponents
    of its largest value (``top``: 2**top <= max|x| < 2**(top+1)) and of its lowest set bit
    (``low``), and the most significant bits of any one element (``width``)."""

    def __init__(self, x: np.ndarray, integers: bool = False, max_abs=None):
        self.float64 = x.dtype == np.float64 or _small_int(x)
        self.finite, self.zero = True, True
        if self.float64 and integers:  # integer operands (within 2**53): low = 0 is a valid bound
            mx = float(max_abs) if max_abs is not None else float(np.abs(x).max()) if x.size else 0.0
            self.zero = mx == 0
            self.max, self.low = mx, 0
            self.top = int(mx).bit_length() - 1
            self.width = self.top + 1
        elif self.float64:
            self._set(*FK.scan(x.reshape(-1)))

    def _set(self, finite, nonzero, mx, top, low, width):
        self.max, self.top, self.low, self.width = mx, top, low, width
        self.finite, self.zero = bool(finite), not nonzero



def _quantum(fmt) -> int:
    """log2 of the finest spacing of the format's values."""
    if isinstance(fmt, FixedFormat):
        return -fmt.frac
    return fmt.emin - fmt.man_bits


def _float_ok(fmt, r: int) -> bool:
    """The conditions of the vectorised float kernel on one rounding format (r: SR bits, or 0)."""
    return (isinstance(fmt, FloatFormat) and 1 <= fmt.man_bits <= 51 and fmt.emin >= -1021 and fmt.emax <= 1021
            and (fmt.emin - fmt.man_bits if fmt.subnormals else fmt.emin) - max(r, 1) >= -1074
            and fmt.man_bits + r <= 52)


def _product_exact_in(fmt, sa: _Scan, sb: _Scan) -> bool:
    """Whether every product a·b is a value of fmt already (so rounding it changes nothing)."""
    if sa.zero or sb.zero:
        return True
    bound = Fraction(sa.max) * Fraction(sb.max)
    q = sa.low + sb.low
    if isinstance(fmt, FixedFormat):
        return fmt.signed and q >= -fmt.frac and bound <= Fraction(fmt.max)
    sig = sa.width + sb.width
    floor = fmt.emin - fmt.man_bits if fmt.subnormals else fmt.emin
    return sig <= fmt.man_bits + 1 and q >= floor and bound <= Fraction(fmt.max)


@functools.lru_cache(maxsize=256)
def _float_params_cached(fmt, mode, ovf, r, compare) -> np.ndarray:
    return _float_params(fmt, kernel_params(fmt, mode, ovf, r, compare), mode, r, compare)


def _float_params(fmt, P, mode, r, compare) -> np.ndarray:
    """The parameter vector of fast_accumulate.float_rows for one float format."""
    F = np.zeros(FK.NF, np.int64)
    qbelow = fmt.emin - fmt.man_bits if fmt.subnormals else fmt.emin
    F[FK.F_M], F[FK.F_EMIN], F[FK.F_SUB], F[FK.F_QBELOW] = fmt.man_bits, fmt.emin, int(fmt.subnormals), qbelow
    F[FK.F_MAXBITS] = np.float64(fmt.max).view(np.int64)
    for slot, code in ((FK.F_OVP, P[KR.OVF_POS]), (FK.F_OVN, P[KR.OVF_NEG])):
        F[slot] = np.float64(fmt._value(int(code))).view(np.int64)
    if mode == Rounding.STOCHASTIC:
        F[FK.F_SR], F[FK.F_SRBITS], F[FK.F_SRCMP] = 1, r, int(compare)
    else:
        F[FK.F_NEAREST], F[FK.F_K0], F[FK.F_KS], F[FK.F_KL] = MODE_BITS[mode]
    F[FK.F_NEGZERO] = int(fmt.has_negative_zero)
    F[FK.F_DOWN] = int(mode == Rounding.DOWN)
    F[FK.F_POWQ] = np.float64(2.0**qbelow).view(np.int64)
    return F


@functools.lru_cache(maxsize=256)
def _rne_params_cached(fmt, mode, ovf, r, compare) -> np.ndarray:
    return _rne_params(fmt, kernel_params(fmt, mode, ovf, r, compare))


def _rne_params(fmt, P) -> np.ndarray:
    """The parameter vector of fast_accumulate.rne_step for one float format."""
    R = np.zeros(FK.NR, np.int64)
    m = fmt.man_bits
    qb = fmt.emin - m if fmt.subnormals else fmt.emin
    R[FK.R_SUB] = int(fmt.subnormals)
    R[FK.R_CLOW] = (qb + 1023 + m) << 52
    R[FK.R_CADD] = ((52 - m) << 52) | (1 << 51)
    R[FK.R_CNOSUB] = ((fmt.emin + 1023 + 52) << 52) | (1 << 51)
    R[FK.R_EMINBITS] = (fmt.emin + 1023) << 52
    R[FK.R_MAXF] = np.float64(fmt.max).view(np.int64)
    ov = fmt._value(int(P[KR.OVF_POS]))
    R[FK.R_OVMAG] = np.abs(np.float64(ov)).view(np.int64)
    R[FK.R_ZADD] = np.float64(-0.0 if fmt.has_negative_zero else 0.0).view(np.int64)
    return R


class _FloatPlan:
    """Float accumulator (and outer/product formats) on the vectorised TwoSum kernel."""

    def __init__(self, job, sa, sb, twosum):
        self.sa, self.sb, self.twosum = sa, sb, twosum

    def run(self, job):
        cfg = job.cfg
        Fa = _float_params_cached(cfg.acc, cfg.mode, cfg.ovf, cfg.r, cfg.compare)
        Fo = _float_params_cached(cfg.outer, cfg.mode, cfg.outer_ovf, cfg.r, cfg.compare)
        Fp = (_float_params_cached(cfg.product, cfg.product_mode, cfg.product_ovf, 0, False)
              if cfg.product is not None else Fa)
        init = _values(job.init_codes, cfg.final)
        rows_ids = np.arange(job.rows, dtype=np.int64)
        out = np.empty((job.rows, job.N), np.float64)
        bad = np.zeros(job.rows, np.int8)
        rne = cfg.mode == Rounding.NEAREST_EVEN and all(  # the conditions of fast_accumulate.rne_step
            f.man_bits <= 50 and (f.emin - f.man_bits if f.subnormals else f.emin) >= -1021 for f in (cfg.acc, cfg.outer))
        work = job.rows * job.N * job.K
        Ra = _rne_params_cached(cfg.acc, cfg.mode, cfg.ovf, cfg.r, cfg.compare)
        self._rows(job, work, init, Fa, Fo, Fp, Ra, rne, rows_ids, out, bad)
        redo = np.flatnonzero(~np.isfinite(out[bad != 0]))  # the non-finite elements of those rows
        rows_bad = np.flatnonzero(bad)
        idxs = rows_bad[redo // job.N] * job.N + redo % job.N
        return out, idxs

    def _rows(self, job, work, init, Fa, Fo, Fp, Ra, rne, rows_ids, out, bad):
        cfg = job.cfg
        with _threads_for(work, "float"):
            Ro = _rne_params_cached(cfg.outer, cfg.mode, cfg.outer_ovf, cfg.r, cfg.compare)
            if cfg.mode == Rounding.STOCHASTIC:
                run_rows(SK.sr_rows, (job.A3, job.B3, job.ia, job.ib, job.M, job.N, job.K, job.order, cfg.chunk, init,
                                      Fa, Fo, Fp, cfg.product is not None, self.twosum, *job.words.kernel_args(),
                                      job.T), (rows_ids, out, bad))
            elif rne and job.order == K.SEQUENTIAL and cfg.product is None:
                run_rows(FK.float_rows_rne, (job.A3, job.B3, job.ia, job.ib, job.M, job.N, job.K, init, Ra,
                                             self.twosum), (rows_ids, out, bad))
            else:
                run_rows(FK.float_rows, (job.A3, job.B3, job.ia, job.ib, job.M, job.N, job.K, job.order, cfg.chunk,
                                         init, Fa, Fo, Fp, Ra, Ro, cfg.product is not None, self.twosum, rne, job.u,
                                         job.T), (rows_ids, out, bad))


_LANES = ((np.float32, 2**24), (np.float64, 2**53))


class _FixedPlan:
    """Fixed-point accumulator as exact integers (in float lanes), or as one exact BLAS product."""

    def __init__(self, job, sa, sb, lanes, amax, bmax):
        cfg = job.cfg
        self.sa, self.sb, self.dtype = sa, sb, lanes
        self.amax, self.bmax = amax, bmax  # max |operand| once scaled to integers (Fractions)
        self.fu = cfg.outer.frac if cfg.order == "chunked" else cfg.acc.frac  # unit: the finest lsb

    def _scaled(self, job):
        """Operands (in the lanes' dtype) and init as integers in units of 2**-fu (products a·b
        land on that grid)."""
        qa = 0 if self.sa.zero else self.sa.low
        dt = self.dtype
        A = np.ldexp(job.A3, -qa).astype(dt) if qa else job.raw[0].astype(dt)  # exact: integers
        B = np.ldexp(job.B3, self.fu + qa).astype(dt) if self.fu + qa else job.raw[1].astype(dt)
        init = np.ldexp(_values(job.init_codes, job.cfg.final), self.fu)
        return A, B, init

    def _range(self, fmt, ovf):
        """(lo, hi, rule, signed, modulus, unit) of a fixed format in units of 2**-fu."""
        return _fixed_range(fmt, ovf, 2.0 ** (self.fu - fmt.frac))

    def run(self, job):
        cfg = job.cfg
        A, B, init = self._scaled(job)
        ra = self._range(cfg.acc, cfg.ovf)
        ro = self._range(cfg.outer, cfg.outer_ovf)
        todo = np.arange(job.rows, dtype=np.int64)
        exact = self._exact_rows(job, A, B, init, ra, ro)
        out = None
        if exact is not None:
            rows_ok, values = exact
            if rows_ok.size == job.rows:
                out = values
            else:
                out = np.empty((job.rows, job.N), np.float64)
                out[rows_ok] = values
            todo = np.flatnonzero(~np.isin(np.arange(job.rows), rows_ok))
        if todo.size:
            dt = self.dtype
            res = np.empty((todo.size, job.N), np.float64)
            with _threads_for(todo.size * job.N * job.K, "fixed"):
                if dt == np.int16:  # sequential saturate, everything within int16 (see _plan)
                    run_rows(FK.sat_rows_i16, (A, B, job.ia, job.ib, job.M, job.N, job.K, init.astype(dt),
                                               int(ra[0]), int(ra[1])), (todo, res))
                else:
                    run_rows(FK.fixed_rows, (A, B, job.ia, job.ib, job.M, job.N, job.K, job.order, cfg.chunk,
                                             init.astype(dt), np.array(ra, dt), np.array(ro, dt)), (todo, res))
            if out is None:
                out = res
            else:
                out[todo] = res
        if self.fu:
            out = np.ldexp(out, -self.fu)
        return out, np.zeros(0, np.int64)

    def _exact_rows(self, job, A, B, init, ra, ro):
        """(rows, values) that one exact BLAS product gives: all of them for a wrapping accumulator
        (the exact sum modulo 2**bits), else the rows whose running sums provably stay in range."""
        cfg = job.cfg
        amax, bmax = float(self.amax), float(self.bmax)  # in units of 2**-fu (exact, from the scans)
        if job.K * amax * bmax >= 2**53:
            return None
        wrap = cfg.ovf == Overflow.WRAP and (cfg.order != "chunked" or (cfg.outer == cfg.acc and cfg.outer_ovf == cfg.ovf))
        init_rows = np.broadcast_to(init.reshape(-1) if init.size > 1 else init[:1], (job.rows * job.N,))
        init_rows = init_rows.reshape(job.rows, job.N)
        if not wrap:
            lo, hi = max(ra[0], ro[0]), min(ra[1], ro[1])
            if job.K * amax * bmax > 64 * min(hi, -lo):
                return None  # hopeless in practice: the products are far larger than the range
            # cheap test first: a row bound sum_k |a_ik| * max|b|
            rowabs = np.abs(A).sum(axis=-1)[job.ia].reshape(-1) * bmax
            cand = rowabs + np.abs(init_rows).max(axis=1) <= min(hi, -lo)
            if not cand.any():
                return None
        # exact: integers below 2**24 (float32) or 2**53 (float64), in any summation order
        if A.dtype.kind == "i":  # int16 lanes: BLAS in float32 (exact below 2**24, checked next)
            A, B = A.astype(np.float32), B.astype(np.float32)
        if A.dtype == np.float32 and job.K * amax * bmax + float(np.abs(init).max()) >= 2**24:
            A, B = A.astype(np.float64), B.astype(np.float64)
        total = _batched_matmul(A, B, job).astype(np.float64, copy=False)
        if init.size > 1 or init[0] != 0:
            total += init_rows
        if wrap:  # the exact sum modulo 2**bits, as a two's complement (or unsigned) value
            FK.wrap_inplace(total, float(ra[0]), float(ra[4]))
            return np.arange(job.rows), total
        Sabs = _batched_matmul(np.abs(A), np.abs(B), job).astype(np.float64, copy=False)
        ok = (init_rows + Sabs <= hi) & (init_rows - Sabs >= lo) & (Sabs <= hi) & (-Sabs >= lo)
        rows_ok = np.flatnonzero(ok.all(axis=1))
        return rows_ok, total[rows_ok]


def _batched_matmul(A, B, job) -> np.ndarray:
    """(rows, N) float64: A[ia[b]] @ B[ib[b]] for every batch entry b (one BLAS call without batch)."""
    if job.ia.size == 1:
        return A[job.ia[0]] @ B[job.ib[0]]
    return np.matmul(A[job.ia], B[job.ib]).reshape(job.rows, job.N)


_NORMAL_GRID = -1022  # log2 of float64's smallest normal: multiples of it are 0 or normal


def _plan(job):
    """The fast path for this job, or None for the general kernel."""
    cfg = job.cfg
    if job.scans is not None:
        sa, sb = job.scans
    else:
        sa = _Scan(job.raw[0] if job.integers[0] else job.A3, job.integers[0], job.max_abs[0])
        sb = _Scan(job.raw[1] if job.integers[1] else job.B3, job.integers[1], job.max_abs[1])
    if not (sa.float64 and sb.float64 and sa.finite and sb.finite):
        return None
    # The fast paths compute in binary64 (float accumulators: products, sums, TwoSum; fixed point:
    # power-of-two scalings). A float64 subnormal there would be read or written as 0 by a thread
    # with denormals-are-zero / flush-to-zero set (MXCSR; XLA's CPU threads set both), so they only
    # run when every operand, product and value they form is a multiple of 2**-1022, hence 0 or
    # normal; otherwise the exact general kernel (integers only) runs.
    if not (sa.zero or sa.low >= _NORMAL_GRID) or not (sb.zero or sb.low >= _NORMAL_GRID):
        return None
    fmts = [cfg.acc] + ([cfg.outer] if cfg.order == "chunked" else [])
    if all(isinstance(f, FloatFormat) for f in fmts):
        r = cfg.r if cfg.mode == Rounding.STOCHASTIC else 0
        if not all(_float_ok(f, r) for f in fmts):
            return None
        if cfg.product is not None and not _float_ok(cfg.product, 0):
            return None
        init = _values(job.init_codes, cfg.final)
        if not np.isfinite(init).all():
            return None
        if not (sa.zero or sb.zero):  # every product exact in binary64
            if sa.width + sb.width > 53 or sa.low + sb.low < _NORMAL_GRID:  # (and never subnormal)
                return None
            if sa.top + sb.top + 2 > 1021:
                return None
        # Exact sums in float64 (no TwoSum needed) when every operand of every step shares a grid
        # of at most 53 bits: accumulator values, products (or rounded products) and outer values.
        q = [_quantum(f) for f in fmts]
        top = [f.emax + 1 for f in fmts]
        if cfg.product is not None:
            q.append(_quantum(cfg.product))
            top.append(cfg.product.emax + 1)
        elif not (sa.zero or sb.zero):
            q.append(sa.low + sb.low)
            top.append(sa.top + sb.top + 2)
        if min(q) < _NORMAL_GRID:  # values (and TwoSum's error terms) would reach the subnormals
            return None
        twosum = max(top) + 1 - min(q) > 53
        return _FloatPlan(job, sa, sb, twosum)
    if all(isinstance(f, FixedFormat) for f in fmts):
        if cfg.order == "chunked" and cfg.outer.frac < cfg.acc.frac:
            return None  # chunk sums would be rounded into outer
        if cfg.product is not None and not _product_exact_in(cfg.product, sa, sb):
            return None
        if not (sa.zero or sb.zero) and sa.low + sb.low < -cfg.acc.frac:
            return None  # products off the accumulator's grid: the steps round
        # bounds in units of 2**-fu, exactly (Fractions: the exponents may be far out of float range)
        fu = fmts[-1].frac
        if fu > -_NORMAL_GRID:  # results (multiples of 2**-fu) could be subnormal
            return None
        two = Fraction(2)
        pmax = 0 if (sa.zero or sb.zero) else Fraction(sa.max) * Fraction(sb.max) * two**fu
        qa = 0 if sa.zero else sa.low  # as _FixedPlan._scaled scales the operands
        amax = 0 if sa.zero else Fraction(sa.max) * two**-qa
        bmax = 0 if sb.zero else Fraction(sb.max) * two ** (fu + qa)
        rng = max(max(-f.min_raw, f.max_raw) * two ** (fu - f.frac) for f in fmts)
        bound = 2 * (2 * rng + pmax)
        if (cfg.order == "sequential" and cfg.ovf in (Overflow.SATURATE, Overflow.SATURATE_SYMMETRIC)
                and rng + pmax < 2**15 and amax < 2**15 and bmax < 2**15):
            return _FixedPlan(job, sa, sb, np.int16, amax, bmax)  # FK.sat_rows_i16
        for dtype, limit in _LANES:
            if bound < limit and amax < limit and bmax < limit:
                return _FixedPlan(job, sa, sb, dtype, amax, bmax)
        return None
    return None


def _raise_flags(flags, cfg):
    if not flags.any():
        return
    flags = flags.reshape(-1)
    first = int(flags[np.flatnonzero(flags)[0]])
    count = int(np.count_nonzero(flags))
    if first == K.ACC_NAN:
        raise ValueError(f"{count} output(s) met a NaN (a NaN input, 0 * inf or inf - inf) in the accumulation, "
                         f"but the accumulator format has no NaN")
    if first == K.ACC_INF:
        raise ValueError(f"{count} output(s) met an infinity in the accumulation, which overflow='wrap' cannot "
                         "map into the accumulator; use a saturate rule")
    if first == K.PROD_NAN:
        raise ValueError(f"{count} output(s) have a NaN product, but product={cfg.product.name} has no NaN")
    raise ValueError(f"{count} output(s) have an infinite product that product={cfg.product.name} cannot take")


_ARGS_DOC = """
    Args:
      a, b: array-likes of float16/32/64 or integers (exact values); shapes as for np.matmul.
      acc: the accumulator format (a format or a name: ``"e4m7"``, ``"fp16"``, ``"int12"``, …).
      product: round each product once to this format (default: products are exact).
      product_rounding: the mode for ``product`` (deterministic; the format's default overflow rule).
      rounding, overflow: the accumulator's rounding mode and overflow rule (default: ``"ieee"`` for
        float, ``"saturate"`` for fixed-point accumulators), applied at every step.
      order: ``"sequential"``, ``"pairwise"`` or ``"chunked"`` (with ``chunk`` and optional ``outer``).
      init: starting value(s), broadcast to the output; must be representable in the accumulator
        (``outer`` for chunked).
      seed, key, random_bits, sr_bits, sr_method: stochastic rounding of the steps; ``random_bits``
        has shape ``out.shape + (T,)`` with T = :func:`sr_steps`.
"""


def matmul(a, b, acc, *, product=None, product_rounding="nearest_even", rounding="nearest_even", overflow=None,
           order="sequential", chunk=None, outer=None, init=None, seed=None, key=None, random_bits=None,
           sr_bits=None, sr_method="add"):
    """Matrix product with every accumulation step rounded to ``acc`` (shapes as np.matmul).
    {args}
    >>> a = [[1.0] * 64 + [-1.0] * 64]
    >>> b = [[1.0]] * 128
    >>> matmul(a, b, "fx<7,0>")        # saturates at 63 on the way up, then 63 - 64
    array([[-1.]])
    >>> matmul(a, b, "fx<7,0>", overflow="wrap")
    array([[0.]])
    """
    return _matmul(a, b, acc, product, product_rounding, rounding, overflow, order, chunk, outer, init, seed, key,
                   random_bits, sr_bits, sr_method)


def dot(a, b, acc, *, product=None, product_rounding="nearest_even", rounding="nearest_even", overflow=None,
        order="sequential", chunk=None, outer=None, init=None, seed=None, key=None, random_bits=None,
        sr_bits=None, sr_method="add", axis=None):
    """Dot product accumulated in ``acc``: the same function as :func:`matmul` (and the same shape
    rules: 1-D · 1-D gives a 0-d result), named for the vector case.

    With ``axis`` (an int), row-wise dot products instead: ``a`` and ``b`` are broadcast against
    each other (NumPy rules) and each vector along ``axis`` of ``a`` is dotted with the one at the
    same position of ``b``; the result has the broadcast shape without ``axis`` (``(..., K)`` ·
    ``(..., K)`` gives ``(...)``), element ``r`` the dot product of row ``r`` with the same
    accumulation as ``dot(a[r], b[r], acc, ...)``. ``init`` broadcasts to the result; SR words:
    ``random_bits`` has shape ``result.shape + (T,)``, row ``r`` (C order) uses words ``r*T …
    r*T+T-1`` as the ``r``-th output element of matmul does. Speed: with float accumulators (any
    order and mode, SR included, products optionally rounded) and exact products (operands 0 or
    within [2**-400, 2**500), every product exact in binary64), one vectorised kernel
    (emul/_kernels/rowwise.py): sequential and chunked orders run 32 rows side by side, pairwise
    vectorises each tree level; fixed-point accumulators with integer operands under the matmul's
    fixed-point conditions (products on the accumulator's grid, sums exact in the lanes) on its
    integer twin, a wrapping one as the exact sum wrapped once; with float operands (deterministic
    modes, exact products below 2**49 lsb, formats of at most 49 bits) on a kernel whose steps
    round the exact sum to the grid (TwoSum, then the mode) and apply the overflow rule; the rest
    (NaN/inf or wide operands, SR onto off-grid products) runs as a batched matmul of 1 x K by
    K x 1. The results never depend on the path.
    {args}
    >>> dot([1.0] * 1000, [1.0] * 1000, "bf16")   # 256 + 1 rounds back to 256 in bf16 (8 bits)
    np.float64(256.0)
    >>> dot([1.0] * 1000, [1.0] * 1000, "bf16", order="pairwise")
    np.float64(1000.0)
    >>> dot([[1.0] * 1000, [2.0] * 1000], [1.0] * 1000, "bf16", axis=-1)   # two rows, b broadcast
    array([256., 512.])
    """
    if axis is not None:
        return _rowwise(a, b, acc, axis, product, product_rounding, rounding, overflow, order, chunk, outer, init,
                        seed, key, random_bits, sr_bits, sr_method)
    return _matmul(a, b, acc, product, product_rounding, rounding, overflow, order, chunk, outer, init, seed, key,
                   random_bits, sr_bits, sr_method)


def _rowwise(a, b, acc, axis, product, product_rounding, rounding, overflow, order, chunk, outer, init, seed, key,
             random_bits, sr_bits, sr_method):
    """dot(..., axis=): float accumulators on the row-wise kernel (:func:`_rowwise_float`),
    fixed-point ones on its integer twin (:func:`_rowwise_fixed`), the rest (or when a product is
    not exact in binary64) as a batched matmul of 1 x K by K x 1."""
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"axis={axis!r}: must be an int (or None for matmul's shape rules)")
    a = _operand_array(a, "a")
    b = _operand_array(b, "b")
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"dot(axis={axis}): operands must have at least one dimension (got shapes {a.shape} and "
                         f"{b.shape})")
    try:
        shape = np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(f"dot(axis={axis}): shapes {a.shape} and {b.shape} do not broadcast") from None
    if not -len(shape) <= axis < len(shape):
        raise ValueError(f"axis={axis}: out of range for operands of {len(shape)} dimension(s) (shape {shape})")
    out_dtype_f32 = a.dtype == np.float32 and b.dtype == np.float32
    # broadcast only where needed: a broadcast view is read-only, and the kernels take writeable arrays
    a = np.moveaxis(a if a.shape == shape else np.broadcast_to(a, shape), axis, -1)
    b = np.moveaxis(b if b.shape == shape else np.broadcast_to(b, shape), axis, -1)
    out_shape, k = a.shape[:-1], a.shape[-1]
    rows = int(np.prod(out_shape, dtype=np.int64))
    cfg = _Config(acc, product, product_rounding, rounding, overflow, order, chunk, outer, sr_bits, sr_method)
    T = sr_steps(k, cfg.order, cfg.chunk)

    def words(extra):  # user words of shape out_shape + (T,) as the matmul's out_shape + (T,)
        if random_bits is None:
            return None
        w = np.asarray(random_bits)
        try:
            w = np.broadcast_to(w, out_shape + (T,))
        except ValueError:
            raise ValueError(f"random_bits: shape {w.shape} does not broadcast to the result shape "
                             f"{out_shape + (T,)}") from None
        return w.reshape(extra + (T,))

    def inits(extra):
        if init is None:
            return None
        x = numeric_array(init, "init")
        try:
            x = np.broadcast_to(x, out_shape)
        except ValueError:
            raise ValueError(f"init: shape {x.shape} does not broadcast to the output shape {out_shape}") from None
        return x.reshape(extra)

    r = _rowwise_float(a, b, cfg, init, out_shape, rows, k, T, seed, key, random_bits, (
        acc, product, product_rounding, rounding, overflow, order, chunk, outer, sr_bits, sr_method)) if rows and k else None
    if r is None and rows and k:
        r = _rowwise_grid(a, b, cfg, init, out_shape, rows, k, T, seed, key, random_bits)
    if r is None and rows and k:
        r = _rowwise_fixed(a, b, cfg, init, out_shape, rows, k, T, seed, key, random_bits)
    if r is None:  # the batched general path: 1 x K by K x 1 per row
        r = _matmul(a[..., None, :], b[..., :, None], acc, product, product_rounding, rounding, overflow, order,
                    chunk, outer, inits(out_shape + (1, 1)), seed, key, words(out_shape + (1, 1)), sr_bits,
                    sr_method)
    r = np.asarray(r).reshape(out_shape)
    if out_dtype_f32 and r.dtype != np.float32 and _fits_float32(cfg.final):
        r = exact_float32(r)
    return r if r.ndim else r[()]


def _operand_array(x, name) -> np.ndarray:
    """numeric_array, but integer arrays of up to 32 bits kept as they are (no int64 copy)."""
    if isinstance(x, np.ndarray) and _small_int(x):
        return x.astype(x.dtype.newbyteorder("="), copy=False)
    return numeric_array(x, name)


# A row-wise MAC reads its own two operands (16 bytes) where a matmul MAC mostly reuses them:
# it costs about this many matmul MACs when choosing the thread count (_threads_for).
_ROWWISE_COST = 4
_ROWWISE_F32_MIN = 1 << 16  # MACs from which row-wise float32 operands are read as float32


def _rows_f64(x, rows, k):
    """A (..., K) operand as a row-major (rows, K) float64 array, exactly; None for integers
    beyond 2**53."""
    if x.dtype.kind == "f":
        x = exact_float64(np.ascontiguousarray(x))
    elif x.dtype.itemsize == 8 and x.size and not (-(1 << 53) <= int(x.min()) and int(x.max()) <= 1 << 53):
        return None
    return _kernel_arg(np.ascontiguousarray(x, np.float64).reshape(rows, k))


def _rowwise_float(a, b, cfg, init, out_shape, rows, k, T, seed, key, random_bits, args):
    """Row-wise dot products with float accumulators (any order and mode, SR included, products
    optionally rounded) on RW.rowwise_float, vectorised over rows (sequential, chunked) or over a
    tree level (pairwise). None when it does not apply (or a product is not exact there); rows
    whose result is not finite are recomputed by the general kernel with the same words."""
    r = cfg.r if cfg.mode == Rounding.STOCHASTIC else 0
    fmts = [cfg.acc] + ([cfg.outer] if cfg.order == "chunked" else [])
    pf = cfg.product
    if not (all(_float_ok(f, r) and _quantum(f) >= _NORMAL_GRID for f in fmts)
            and (pf is None or (_float_ok(pf, 0) and _quantum(pf) >= _NORMAL_GRID))):
        return None
    # large float32 operands are read as they are (half the bytes, no widening pass); small ones are
    # widened here, so that their first call does not compile the kernel's float32 twin
    f32 = a.dtype == np.float32 and b.dtype == np.float32 and rows * k >= _ROWWISE_F32_MIN
    if f32:
        A, B = (_kernel_arg(np.ascontiguousarray(x).reshape(rows, k)) for x in (a, b))
    else:
        A, B = _rows_f64(a, rows, k), _rows_f64(b, rows, k)
    if A is None or B is None:
        return None
    init_values = _values(_init_codes(init, cfg, out_shape), cfg.final)
    if not np.isfinite(init_values).all():
        return None
    words = _Words.of(cfg, out_shape + (T,), seed, key, random_bits)
    Fa = _float_params_cached(cfg.acc, cfg.mode, cfg.ovf, cfg.r, cfg.compare)
    Fo = _float_params_cached(cfg.outer, cfg.mode, cfg.outer_ovf, cfg.r, cfg.compare)
    Fp = _float_params_cached(pf, cfg.product_mode, cfg.product_ovf, 0, False) if pf is not None else Fa
    Ra = _rne_params_cached(cfg.acc, cfg.mode, cfg.ovf, cfg.r, cfg.compare)
    Ro = _rne_params_cached(cfg.outer, cfg.mode, cfg.outer_ovf, cfg.r, cfg.compare)
    rne = cfg.mode == Rounding.NEAREST_EVEN and all(  # the conditions of fast_accumulate.rne_step
        f.man_bits <= 50 and (f.emin - f.man_bits if f.subnormals else f.emin) >= -1021 for f in fmts)
    # TwoSum can be skipped where every value is a multiple of 2**g below 2**(g + 51): the formats'
    # values [2**quantum, 2**(emax+1)) centred in that 51-bit window, the products checked in the kernel
    grid = fmts + ([pf] if pf is not None else [])
    q_lo, top = min(_quantum(f) for f in grid), max(f.emax + 1 for f in grid)
    slack = 51 - (top - q_lo)
    g = q_lo - slack // 2
    # (the kernel has TwoSum-free steps for pairwise RNE only: elsewhere they saved no measurable time)
    check = rne and cfg.order == "pairwise" and slack >= 0 and g >= -1074
    gC, gB = (1.5 * 2.0 ** (52 + g), 2.0 ** (g + 51)) if check else (0.0, 0.0)
    out = np.empty(rows, np.float64)
    bad = np.zeros(rows, np.int8)
    order = ORDERS.index(cfg.order)

    def run(A, B):
        args = (A, B, init_values, order, cfg.chunk, Fa, Fo, Fp, Ra, Ro, pf is not None, rne, *words.kernel_args(), T,
                check, gC, gB, out, bad)
        return all(run_slices(lambda lo, hi: RW.rowwise_float(*args, lo, hi), RW.rowwise_parts(order, rows)))

    with _threads_for(_ROWWISE_COST * rows * k, "float"):
        ok = run(A, B)
        if not ok and f32:  # a float32 subnormal (or NaN/inf): widened exactly, they may still fit
            A, B = _rows_f64(a, rows, k), _rows_f64(b, rows, k)
            ok = run(A, B)
    if not ok:
        return None
    redo = np.flatnonzero(bad)
    if redo.size:  # non-finite results (IEEE overflow, NaN in an fn format): the general kernel's
        acc, product, product_rounding, rounding, overflow, order, chunk, outer, sr_bits, sr_method = args
        sub_init = None if init is None else np.broadcast_to(init_values, (rows,))[redo].reshape(-1, 1, 1)
        sub_words = words.array().reshape(rows, T)[redo].reshape(-1, 1, 1, T) if cfg.mode == Rounding.STOCHASTIC else None
        out[redo] = np.asarray(_matmul(A[redo][:, None, :], B[redo][:, :, None], acc, product, product_rounding,
                                       rounding, overflow, order, chunk, outer, sub_init, None, None, sub_words,
                                       sr_bits, sr_method)).reshape(-1)
    return out


def _rows_fixed(x, rows, k):
    """A (..., K) operand as a row-major (rows, K) array for RW.rowwise_fixed, and max |x| for
    integers: integers within 2**53 as they are (the kernel converts them), the rest as float64
    (exactly, max None); (None, None) for integers beyond 2**53."""
    if x.dtype.kind in "iu":
        lo, hi = (int(x.min()), int(x.max())) if x.size else (0, 0)
        if not (-(1 << 53) <= lo and hi <= 1 << 53):
            return None, None
        return _kernel_arg(np.ascontiguousarray(x).reshape(rows, k)), max(-lo, hi)
    return _rows_f64(x, rows, k), None


def _rowwise_fixed(a, b, cfg, init, out_shape, rows, k, T, seed, key, random_bits):
    """Row-wise dot products with fixed-point accumulators on RW.rowwise_fixed: the conditions and
    the lanes (float32, float64, int16) of the matmul's fixed-point path (:func:`_plan` on the
    rows as a batch of 1 x K by K x 1), rows side by side; a wrapping accumulator as the exact sum
    wrapped once where that sum fits the lanes. None when that path does not apply."""
    fmts = [cfg.acc] + ([cfg.outer] if cfg.order == "chunked" else [])
    if not all(isinstance(f, FixedFormat) for f in fmts):
        return None
    (A, amax), (B, bmax) = _rows_fixed(a, rows, k), _rows_fixed(b, rows, k)
    if A is None or B is None:
        return None
    _Words.of(cfg, out_shape + (T,), seed, key, random_bits)  # validates the SR arguments (steps are exact)
    init_codes = _kernel_arg(_init_codes(init, cfg, out_shape))
    ints = (A.dtype.kind in "iu", B.dtype.kind in "iu")
    A3, B3 = A.reshape(rows, 1, k), B.reshape(rows, k, 1)
    idx = np.arange(rows, dtype=np.int64)
    job = _Job(cfg, A3, B3, idx, idx, 1, 1, k, init_codes, None, T)
    # integer operands: their scan is max |x| alone (_Scan of integers), for any integer dtype
    job.scans = tuple(_Scan(np.zeros(0, np.int32), True, m) if m is not None else _Scan(x.reshape(-1))
                      for x, m in ((A, amax), (B, bmax)))
    plan = _plan(job)
    if not isinstance(plan, _FixedPlan):
        return None
    dt, fu = plan.dtype, plan.fu
    qa = 0 if plan.sa.zero else plan.sa.low
    ra, ro = plan._range(cfg.acc, cfg.ovf), plan._range(cfg.outer, cfg.outer_ovf)
    init_units = np.ldexp(_values(init_codes, cfg.final), fu)
    wrap = cfg.ovf == Overflow.WRAP and (cfg.order != "chunked" or (cfg.outer == cfg.acc and cfg.outer_ovf == cfg.ovf))
    sum_only = False
    if wrap:  # the exact total in the narrowest lanes that hold it (else the per-step wrap)
        total = k * float(plan.amax) * float(plan.bmax) + float(np.abs(init_units).max())
        for lanes, limit in _LANES:
            if total < limit:
                dt, sum_only = lanes, True
                break
    if ints[0] and qa == 0:
        Al = A
    else:
        Al = _kernel_arg(np.ldexp(A.astype(np.float64), -qa).astype(dt))
    limit = {np.int16: 2**15, np.float32: 2**24, np.float64: 2**53}[dt]
    if ints[1] and 0 <= fu + qa and 2**(fu + qa) < limit:
        Bl, scale = B, dt(2 ** (fu + qa))  # B * 2**(fu + qa) formed in the kernel, exactly
    else:
        Bl, scale = _kernel_arg(np.ldexp(B.astype(np.float64), fu + qa).astype(dt)), dt(1)
    out = np.empty(rows, np.float64)
    work = _ROWWISE_COST * rows * k
    order = ORDERS.index(cfg.order)
    args = (Al, Bl, scale, _kernel_arg(init_units.astype(dt)), order, cfg.chunk, np.array(ra, np.float64),
            np.array(ro, np.float64), sum_only, out)
    with _threads_for(work, "fixed"):
        run_slices(lambda lo, hi: RW.rowwise_fixed(*args, lo, hi), RW.fixed_parts(order, sum_only, rows))
    return np.ldexp(out, -fu) if fu else out


# gstep's tie / direction decision per deterministic mode (emul/_kernels/rowwise.py):
# (nearest, c1, cpos, cneg, codd, ceven); the increment from f to f + u is taken when
# c1 | cpos & x > 0 | cneg & x < 0 | codd & (f/u odd) | ceven & (f/u even) (for nearest modes: on a tie)
_GRID_MODES = {
    Rounding.NEAREST_EVEN: (1, 0, 0, 0, 1, 0), Rounding.NEAREST_AWAY: (1, 0, 1, 0, 0, 0),
    Rounding.NEAREST_ZERO: (1, 0, 0, 1, 0, 0), Rounding.NEAREST_UP: (1, 1, 0, 0, 0, 0),
    Rounding.NEAREST_DOWN: (1, 0, 0, 0, 0, 0), Rounding.TOWARD_ZERO: (0, 0, 0, 1, 0, 0),
    Rounding.AWAY_FROM_ZERO: (0, 0, 1, 0, 0, 0), Rounding.UP: (0, 1, 0, 0, 0, 0),
    Rounding.DOWN: (0, 0, 0, 0, 0, 0), Rounding.ODD: (0, 0, 0, 0, 0, 1)}


def _grid_params(fmt, mode, ovf):
    """RW.gstep's parameters (grid, mode, overflow rule) of a fixed format, in values."""
    unit = 2.0 ** -fmt.frac
    return np.array((unit, *_GRID_MODES[mode], *_fixed_range(fmt, ovf, unit)), np.float64)


def _fixed_range(fmt, ovf, unit):
    """(lo, hi, rule, signed, modulus, unit) of a fixed format whose lsb is ``unit``: the kernels'
    overflow parameters (fast_accumulate.xstep, rowwise.gstep)."""
    lo, hi = fmt.min_raw * unit, fmt.max_raw * unit
    rule = {Overflow.SATURATE: FK.RULE_SAT, Overflow.SATURATE_SYMMETRIC: FK.RULE_SAT,
            Overflow.SATURATE_ZERO: FK.RULE_SAT_ZERO, Overflow.WRAP: FK.RULE_WRAP,
            Overflow.WRAP_SIGN_MAGNITUDE: FK.RULE_WRAP_SM}[ovf]
    if ovf == Overflow.SATURATE_SYMMETRIC and fmt.signed:
        lo = -hi
    return lo, hi, rule, int(fmt.signed), 2.0**fmt.bits * unit, unit


def _rowwise_grid(a, b, cfg, init, out_shape, rows, k, T, seed, key, random_bits):
    """Row-wise dot products of float operands into fixed-point accumulators (deterministic modes,
    exact products) on RW.rowwise_grid: each step rounds the exact s + p to the accumulator's
    grid (TwoSum, then the mode's decision) and applies the overflow rule, rows side by side, no
    scan of the operands. None when it does not apply (integer operands take
    :func:`_rowwise_fixed`) or when a product is not exact in binary64 or too large."""
    fmts = [cfg.acc] + ([cfg.outer] if cfg.order == "chunked" else [])
    if not (all(isinstance(f, FixedFormat) for f in fmts) and cfg.product is None and cfg.mode in _GRID_MODES):
        return None
    if a.dtype.kind in "iub" and b.dtype.kind in "iub":
        return None
    fine = max(f.frac for f in fmts)
    if fine > -_NORMAL_GRID or any(max(-f.min_raw, f.max_raw) * 2.0 ** (fine - f.frac) >= 2**49 for f in fmts):
        return None  # every value below 2**49 of the finest lsb, none subnormal: sums below 2**51 lsb
    A, B = _rows_f64(a, rows, k), _rows_f64(b, rows, k)
    if A is None or B is None:
        return None
    init_values = _values(_init_codes(init, cfg, out_shape), cfg.final)
    Ga = _grid_params(cfg.acc, cfg.mode, cfg.ovf)
    Go = _grid_params(cfg.outer, cfg.mode, cfg.outer_ovf)
    out = np.empty(rows, np.float64)
    work = _ROWWISE_COST * rows * k
    order = ORDERS.index(cfg.order)
    args = (A, B, init_values, order, cfg.chunk, Ga, Go, 2.0 ** (49 - fine), out)
    with _threads_for(work, "fixed"):
        ok = all(run_slices(lambda lo, hi: RW.rowwise_grid(*args, lo, hi), RW.rowwise_parts(order, rows)))
    return out if ok else None


def _pair(v, name):
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        v = (int(v), int(v))
    try:
        v = tuple(int(x) for x in v)
    except TypeError:
        raise ValueError(f"{name}={v!r}: must be an int or a pair of ints") from None
    if len(v) != 2:
        raise ValueError(f"{name}={v!r}: must be an int or a pair of ints")
    return v


def im2col(x: np.ndarray, kh: int, kw: int, stride, padding) -> tuple[np.ndarray, int, int]:
    """(cols of shape (N, C*kh*kw, Ho*Wo), Ho, Wo): the reduction index is c*kh*kw + i*kw + j."""
    sh, sw = stride
    ph, pw = padding
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else x
    ho = (h + 2 * ph - kh) // sh + 1
    wo = (w + 2 * pw - kw) // sw + 1
    if ho <= 0 or wo <= 0:
        raise ValueError(f"conv2d: kernel {kh}x{kw} is larger than the padded input {h + 2 * ph}x{w + 2 * pw}")
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(2, 3))  # (n, c, H', W', kh, kw)
    win = win[:, :, ::sh, ::sw][:, :, :ho, :wo]
    cols = win.transpose(0, 1, 4, 5, 2, 3).reshape(n, c * kh * kw, ho * wo)
    return np.ascontiguousarray(cols), ho, wo


def conv2d(x, w, acc, *, stride=1, padding=0, product=None, product_rounding="nearest_even", rounding="nearest_even",
           overflow=None, order="sequential", chunk=None, outer=None, init=None, seed=None, key=None,
           random_bits=None, sr_bits=None, sr_method="add"):
    """2-D convolution (cross-correlation, as in deep learning) of x (N, C, H, W) with w (O, C, kh, kw),
    defined as the matmul of its im2col: output (n, o, y, x) sums over k = c*kh*kw + i*kw + j, so the
    reduction runs over the channel (outermost), then the kernel row, then the kernel column; zero
    padding contributes products with +0 inputs like any other step. ``init`` broadcasts to the
    output (N, O, Ho, Wo) (a bias per channel: ``bias[:, None, None]``). Other arguments as
    :func:`matmul`; SR words: output element j (C order over (N, O, Ho, Wo)) uses j*T … j*T+T-1.

    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> conv2d(x, np.ones((1, 1, 2, 2)), "fp16", stride=2)
    array([[[[10., 18.],
             [42., 50.]]]])
    """
    xa = numeric_array(x, "x")
    wa = numeric_array(w, "w")
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
    cols, ho, wo = im2col(xa, kh, kw, stride, padding)
    n = xa.shape[0]
    wmat = wa.reshape(o, c * kh * kw)
    if init is not None:
        init = np.broadcast_to(numeric_array(init, "init"), (n, o, ho, wo)).reshape(n, o, ho * wo)
    if random_bits is not None:
        T = sr_steps(c * kh * kw, order, chunk) if order in ORDERS else 0
        rb = np.asarray(random_bits)
        try:
            rb = np.broadcast_to(rb, (n, o, ho, wo, T))
        except ValueError:
            raise ValueError(f"random_bits: shape {rb.shape} does not broadcast to {(n, o, ho, wo, T)}") from None
        random_bits = rb.reshape(n, o, ho * wo, T)
    out = _matmul(wmat, cols, acc, product, product_rounding, rounding, overflow, order, chunk, outer, init, seed, key,
                  random_bits, sr_bits, sr_method)
    return out.reshape(n, o, ho, wo)


for _f in (matmul, dot):
    _f.__doc__ = _f.__doc__.replace("{args}", _ARGS_DOC)
del _f

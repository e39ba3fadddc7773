"""Fast path of add, sub, mul, div, fma and sqrt: float16/float32 operands (or float64 operands
whose values are float32 values), float formats of up to 51 bits of precision.

Each element is computed in binary64 arithmetic, made exact, and rounded once to the format with
64-bit integer operations and selects only, so that LLVM vectorises the loop.

**Exactness.** Every operand is a float32 value: a multiple of 2**-149 below 2**128 in magnitude
with at most 24 significant bits (float16 values are float32 values). Read as binary64 values
(from their bits, see :func:`_load`), every quantity below is a multiple of 2**-478 and smaller than
2**280, so binary64 never overflows, and a nonzero one is never subnormal (2**-478 > 2**-1022):
flush-to-zero and denormals-are-zero cannot change any step.

- sum ``a + b``: exact for two float16 values (multiples of 2**-24 below 2**17: 41 bits); else
  ``s = fl(a + b)`` and its error ``e = (a + b) - s`` by TwoSum (Knuth), exact for
  binary64 without overflow and without subnormals (all terms are multiples of 2**-298);
- product ``a * b``: at most 48 significant bits, exact (``e = 0``);
- fused ``a * b + c``: the exact product ``p``, then TwoSum of ``p + c``;
- quotient ``a / b``: ``q = fl(a / b)``; the residual ``r = fma(-q, b, a)`` (one rounding) has the
  sign and zero-ness of ``a - q*b``, a multiple of ``lsb(q) * lsb(b) >= 2**-329 * 2**-149``, so a
  nonzero one stays nonzero; ``a/b - q = r / b``;
- root ``sqrt(a)``: ``q = fl(sqrt(a))`` (IEEE: correctly rounded), ``r = fma(-q, q, a)``, a multiple
  of ``min(2**-149, lsb(q)**2 >= 2**-254)``; ``sqrt(a) - q`` has the sign of ``r``.

So each exact result ``x`` is known as a binary64 ``h = RN(x)`` and the sign of ``x - h``.

**Roots into narrow formats** (``man_bits <= 23``, deterministic modes: ``sqrt_narrow_k``) skip the
residual: ``q = fl(sqrt(a))`` rounded to the format as if it were exact gives the right result.
The points where a deterministic rounding to ``P = man_bits + 1 <= 24`` bits changes (the format's
values and the midpoints between them) have at most ``P + 1`` significant bits: ``M = Mi * 2**m``
with ``Mi < 2**(P+1)``. With ``a = A * 2**ea`` (``A < 2**24``), an irrational ``sqrt(a)`` (or a
rational one other than ``M``) has ``a != M**2``, so ``|a - M**2| >= 2**min(ea, 2m)`` and
``|sqrt(a) - M| / M >= |a - M**2| / (2 * M**2 * (1 + 2**-24))`` when the two are close (else
the distance is larger still): at least ``2**-(2P+3) / (1 + 2**-24)`` when ``ea >= 2m`` and
``1 / (4A) > 2**-26`` otherwise, so more than ``2**-52`` relative for ``P <= 24``. ``q`` is
within ``2**-53`` relative of ``sqrt(a)``, so it lies strictly on the same side of every such
point as ``sqrt(a)`` and equals one only when ``sqrt(a)`` does. (Stochastic rounding reads bits
far below ``P`` and keeps the residual.)

**Rounding to odd.** From ``h`` and that sign the 53-bit round-to-odd value ``z`` of ``x`` follows
with integer operations: ``z = h`` when ``x == h`` or ``h``'s last bit is 1, else the binary64
neighbour of ``h`` on the side of ``x`` (its pattern ± 1; it is odd). ``z`` keeps the truncation of
``x`` in every bit above its last one, and its last bit says whether anything below was nonzero.
Hence (Boldo and Melquiond's double-rounding property of round-to-odd) rounding ``z`` once to a
format of ``P <= 51`` bits of precision, in any deterministic mode, equals rounding ``x``:
midpoints and grid points of the format lie on the grid of ``2**-(P+1)`` ulps, which ``z``
represents exactly. Stochastic rounding with ``r`` bits reads the fraction bits down to
``2**-r`` quanta only, all above ``z``'s last bit when ``man_bits + r <= 51``.

**Rounding a binary64 pattern** (``a = |bits|``, ``S = 52 - man_bits``): at or above the format's
min normal (pattern ``THR``) the quantum is ``2**S`` units of ``a``, and the rounded magnitude is
``(a + inc) & ~(2**S - 1)`` (a carry into the exponent field is right). Below it the quantum is
``2**qe`` (``qe = emin - man_bits``, or ``emin`` without subnormals): with ``B = 2**(qe +
man_bits)`` (``> |z|``), ``w = B + |z|`` rounded to odd at 53 bits (Fast2Sum: ``s = fl(B + |z|)``,
its error ``|z| - (s - B)`` exactly) lies in B's binade, whose quantum at ``man_bits`` is again
``2**S`` units of its pattern, so the same formula rounds it (round to odd twice, at 53 bits and on
the coarser grid of ``w``, keeps the truncation and the sticky bit, as above), and the rounded
magnitude is ``q - B`` (exact: ``q`` lies in ``[B, 2B]``). ``inc`` is the core's rule
(:func:`emul._kernels.round.increment`): with ``r = k0 ^ (ks & sign) ^ (kl & lsb)`` (``lsb`` the
kept code's last bit, as ``float_code`` defines it: bit ``S`` of the pattern, flipped by a constant
when ``man_bits == 0``) nearest modes add ``(2**S - 1 + r) >> 1`` and directed modes
``r ? 2**S - 1 : 0``; stochastic rounding adds ``2**S`` when ``(u ^ UX) < t`` with
``t = floor(f * 2**r)`` (``UX = 2**r - 1`` for ``"add"``, 0 for ``"compare"``), the bits below bit
``S``. A rounded magnitude above the format's max takes the overflow value of the mode and rule.
Float32 results are written from the magnitude's float64 pattern with a float64 -> float32
conversion, exact and never meeting a subnormal: a magnitude below 2**-126 gets 2**-126 added first
and taken off the float32 pattern after.

**Zeros.** An exact zero sum (add, sub, fma) gets IEEE 754 §6.3's sign: the operands' common sign,
else +0, or -0 when rounding down; products, quotients and roots keep binary64's (exact) sign.

**Special operands** (±inf, NaN), x / 0 and the root of a negative number are marked in the
vectorised pass and redone one by one with the rules of :mod:`emul._kernels.arith` (first NaN
operand's sign, +NaN for invalid operations, exact infinities). Float64 operands that are not
float32 values are reported to the caller, which rounds them with the general kernel.

Kernels take the flat operands as unsigned bit patterns (``uint16`` for float16, ``uint32`` for
float32, ``uint64`` for float64; each kernel compiles for the dtypes it is called with), the
constant tuple of :func:`constants`, the SR words ``u`` (all of them, or one dummy word), and write
``out`` (``uint64`` patterns of float64 values, or ``uint32`` patterns of float32 values;
:mod:`emul.arith` pairs float32 operands with float32 results only, widening them otherwise, so
that each kernel has one float32 signature). They
return ``(n_general, n_nan)``: the count of indices written to ``idx`` for the general kernel, and
of NaN results in a format without NaN (their outputs are 0; the caller raises). Each element's
result depends only on its operands and word, never on the thread count.
"""

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

ADD, SUB, MUL, DIV, FMA, SQRT = range(6)
SQRT_NARROW = 6  # sqrt into man_bits <= 23 in a deterministic mode: no residual (sqrt_narrow_k)

# Slots of the constant tuple built by constants().
(S, MASK, THR, BB, MAXB, NEAR, K0, K0_N, KS, KL, K0_B, ZF, OVFP, OVFN, INFP, INFN, NANP, NANN, HASNAN,
 SR, SR_MASK, SR_UX, SR_D, DOWN, KEEP, OVFP32, OVFN32) = range(27)
NCONST = 27


_0 = np.uint64(0)
_1 = np.uint64(1)
_ABS = np.uint64(0x7FFFFFFFFFFFFFFF)
_FRAC = np.uint64((1 << 52) - 1)
_EXPM = np.uint64(0x7FF)
_ALL = np.uint64((1 << 64) - 1)  # -1 (pattern - 1 by wraparound)
_T126 = np.uint64((1023 - 126) << 52)  # the pattern of 2**-126, float32's min normal


@intrinsic
def fma64(typingctx, a, b, c):
    """a * b + c with one rounding (llvm.fma.f64: one instruction where the CPU has FMA)."""
    sig = types.float64(types.float64, types.float64, types.float64)

    def codegen(context, builder, signature, args):
        f64 = ir.DoubleType()
        fnty = ir.FunctionType(f64, [f64, f64, f64])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.fma.f64")
        return builder.call(fn, args)

    return sig, codegen


@intrinsic
def sel(typingctx, c, a, b):
    """``a if c else b`` for uint64 a, b as one LLVM select (no branch, so loops vectorise)."""
    if not (isinstance(c, types.Boolean) and isinstance(a, types.Integer) and isinstance(b, types.Integer)):
        return None
    u64 = types.uint64

    def codegen(context, builder, signature, args):
        cond = context.cast(builder, args[0], signature.args[0], types.boolean)
        x = context.cast(builder, args[1], signature.args[1], u64)
        y = context.cast(builder, args[2], signature.args[2], u64)
        return builder.select(cond, x, y)

    return u64(c, a, b), codegen


def _bitcast(src, dst):
    """An intrinsic reading a ``src`` scalar's bits as ``dst`` (one LLVM bitcast). Numba's scalar
    ``.view`` is a call that LLVM inlines late; with many of them in a loop the vectoriser can meet
    one not yet inlined and give up."""

    @intrinsic
    def cast(typingctx, x):
        if x != src:
            return None

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], context.get_value_type(dst))

        return dst(src), codegen

    return cast


_f64_u64 = _bitcast(types.float64, types.uint64)
_u64_f64 = _bitcast(types.uint64, types.float64)
_f32_u32 = _bitcast(types.float32, types.uint32)
_u32_f32 = _bitcast(types.uint32, types.float32)


def width(a):
    """The bit width of an array's elements, as a compile-time constant (a.itemsize is read at run
    time, which would keep both sides of every test on it in the loop and stop vectorisation)."""


@overload(width, inline="always")
def _width(a):
    n = a.dtype.bitwidth
    return lambda a: n


# -- constants --------------------------------------------------------------------------------------

def value_bits(code: int, P: tuple) -> int:
    """The float64 pattern of a code's value as :func:`emul._kernels.wide.value` gives it (a NaN
    keeps the code's sign except in fnuz formats)."""
    from . import slots as K

    bits, m = int(P[K.BITS]), int(P[K.M])
    sign = (code >> (bits - 1)) & 1
    mag = code & ((1 << (bits - 1)) - 1)
    sb = sign << 63
    if mag > int(P[K.MAXC]) or (P[K.FNUZ] and sign and mag == 0):
        if P[K.IEEE] and mag == int(P[K.INFC]):
            return sb | 0x7FF0000000000000
        return 0x7FF8000000000000 | (0 if P[K.FNUZ] else sb)
    ef, f = mag >> m, mag & ((1 << m) - 1)
    e = int(P[K.EMIN]) - m if ef == 0 else ef - int(P[K.BIAS]) - m
    if ef:
        f |= 1 << m
    if f == 0:
        return sb
    n = f.bit_length() - 1  # the value f * 2**e is a normal float64 in this path's domain
    return sb | ((e + n + 1023) << 52) | ((f << (52 - n)) & ((1 << 52) - 1))


def supported(fmt, P: tuple) -> bool:
    """Whether the fast kernels cover results in ``fmt`` with parameters P (a float format with
    at most 51 bits of precision whose values are normal float64 values; SR with
    ``man_bits + sr_bits <= 51``)."""
    from . import slots as K

    if int(P[K.KIND]) != 0:
        return False
    m, emin, emax = int(P[K.M]), int(P[K.EMIN]), int(P[K.EMAX])
    qe = emin - m if P[K.SUB] else emin
    if m > 50 or qe < -1022 or emax > 1023:
        return False
    return not P[K.SR] or m + int(P[K.SR_BITS]) <= 51


def constants(fmt, P: tuple) -> tuple:
    """The constant tuple of the kernels (uint64) for a format and parameters in the domain of
    :func:`supported`."""
    from . import slots as K

    m, emin = int(P[K.M]), int(P[K.EMIN])
    qe = emin - m if P[K.SUB] else emin
    c0 = (1023 - int(P[K.BIAS])) << m
    mask64 = (1 << 64) - 1
    C = [0] * NCONST
    C[S] = 52 - m
    C[MASK] = (1 << C[S]) - 1
    C[THR] = (emin + 1023) << 52
    eb = qe + m  # B = 2**eb: its binade's quantum at man_bits is 2**qe
    C[BB] = (eb + 1023) << 52
    C[KEEP] = mask64 ^ C[MASK]
    C[MAXB] = value_bits(int(P[K.MAXC]), P)
    C[NEAR], C[K0], C[KS], C[KL] = int(P[K.NEAREST]), int(P[K.K0]), int(P[K.KS]), int(P[K.KL])
    C[K0_N] = C[K0] ^ (C[KL] & c0 & 1)  # man_bits == 0 with an odd c0: the code's lsb is bit S flipped
    C[K0_B] = C[K0] ^ (C[KL] & int(m == 0) & (eb + 1023) & 1)  # man_bits == 0: bit S of w is B's exponent's lsb
    C[ZF] = 0 if P[K.NEGZERO] else 1
    C[OVFP], C[OVFN] = value_bits(int(P[K.OVF_POS]) & mask64, P), value_bits(int(P[K.OVF_NEG]) & mask64, P)
    C[INFP], C[INFN] = value_bits(int(P[K.INF_POS]) & mask64, P), value_bits(int(P[K.INF_NEG]) & mask64, P)
    C[OVFP32], C[OVFN32] = (int(np.uint64(C[v]).view(np.float64).astype(np.float32).view(np.uint32))
                            for v in (OVFP, OVFN))  # (float32 results only)
    C[HASNAN] = int(P[K.NANC] >= 0)
    if C[HASNAN]:
        nan = int(P[K.NANC])
        C[NANP] = value_bits(nan, P)
        C[NANN] = value_bits(nan if P[K.FNUZ] else nan | (1 << (int(P[K.BITS]) - 1)), P)
    if P[K.SR]:
        r = int(P[K.SR_BITS])
        C[SR], C[SR_D], C[SR_MASK] = 1, C[S] - r, (1 << r) - 1
        C[SR_UX] = 0 if P[K.SR_CMP] else (1 << r) - 1
    else:
        C[DOWN] = int(not P[K.NEAREST] and not P[K.K0] and P[K.KS] and not P[K.KL])
    return tuple(np.uint64(v) for v in C)


@njit(inline="always")
def _bits(v):
    """The pattern of a float64."""
    return _f64_u64(np.float64(v))


@njit(inline="always")
def _val(b):
    """The float64 of a pattern."""
    return _u64_f64(np.uint64(b))


# -- one element ------------------------------------------------------------------------------------

@njit(inline="always")
def _load(b, nbits):
    """(value, float32_value, finite) of an operand's bit pattern ``b`` (uint64) of an ``nbits``-bit
    float. Subnormal float16/float32 inputs are read right whatever the MXCSR: float16 as
    ``float(m) * 2**k`` (m the integer significand, an exact product whose result is normal),
    float32 through a normal float32 (see below)."""
    if nbits == 64:
        ef = (b >> np.uint64(52)) & _EXPM
        e = np.int64(ef) - 1023
        d = sel(e < -126, np.uint64(-126 - e), _0)
        need = sel(d < np.uint64(34), d + np.uint64(29), np.uint64(63))  # low bits a float32 lacks
        low = b & ((_1 << need) - _1) & _FRAC
        f32 = ((e >= -149) & (e <= 127) & (low == _0)) | ((b & _ABS) == _0)
        return _val(b), f32, ef != _EXPM
    if nbits == 32:
        # a nonzero subnormal gets the exponent field 1, is widened (a normal: exact whatever the
        # MXCSR) and has 2**-126 (its sign and exponent bits) taken off again, exactly
        t = b & np.uint64(0x7FFFFFFF)
        sub = (t - _1) < np.uint64(0x7FFFFF)
        v = np.float64(_u32_f32(np.uint32(b | (np.uint64(sub) << np.uint64(23)))))
        v = v - _val(_bits(v) & sel(sub, np.uint64(0xFFF0000000000000), _0))
        return v, True, t < np.uint64(0x7F800000)
    ef = (b >> np.uint64(10)) & np.uint64(31)
    m = (b & np.uint64(0x3FF)) | (np.uint64(ef != _0) << np.uint64(10))
    k = np.int64(sel(ef != _0, ef, _1)) - 25
    scale = np.uint64(k + 1023) << np.uint64(52)
    v = np.float64(np.int64(m)) * _val(scale)
    vb = _bits(v) | ((b >> np.uint64(15)) << np.uint64(63))
    return _val(vb), True, ef != np.uint64(31)


@njit(inline="always")
def _two_sum(a, b):
    """(s, e): s = fl(a + b) and the exact error e = a + b - s."""
    s = a + b
    bb = s - a
    e = (a - (s - bb)) + (b - bb)
    return s, e


@njit(inline="always")
def _to_odd(hb, inexact, above):
    """The pattern of x rounded to odd at 53 bits, from the pattern hb of h = RN(x), whether
    x != h, and whether |x| > |h|: h itself when exact or odd, else its neighbour toward x."""
    return hb + sel(inexact & ((hb & _1) == _0), sel(above, _1, _ALL), _0)


@njit(inline="always")
def _round(zb, u, k, sr):
    """(sign, magnitude) of the finite binary64 pattern zb rounded to the format (see module): the
    magnitude's float64 pattern before the overflow and zero rules (:func:`_signed`); stochastic
    rounding with word u when sr (a compile-time constant, as in the kernels)."""
    sign = zb >> np.uint64(63)
    a = zb & _ABS
    below = a < k[THR]
    # below the min normal: w = B + |z| rounded to odd (Fast2Sum: B > |z|), on B's binade's grid
    av, bv = _val(a), _val(k[BB])
    ws = bv + av
    we = av - (ws - bv)
    x = sel(below, _to_odd(_bits(ws), we != 0.0, we > 0.0), a)
    s = k[S]
    kept_lsb = (x >> s) & _1
    # deterministic modes: the core's increment rule
    r = sel(below, k[K0_B], k[K0_N]) ^ (k[KS] & sign) ^ (k[KL] & kept_lsb)
    mask = k[MASK]
    inc = sel(k[NEAR] != _0, (mask + r) >> _1, mask & (_0 - r))
    q_det = (x + inc) & k[KEEP]
    # stochastic rounding: t = floor(f * 2**r), from the fraction bits below bit s
    t = (x >> k[SR_D]) & k[SR_MASK]
    q_sr = (x & k[KEEP]) + (np.uint64((u ^ k[SR_UX]) < t) << s)
    q = q_sr if sr else q_det
    mag = sel(below, _bits(_val(q) - bv), q)  # exact: q's value lies in [B, 2B]
    return sign, mag


@njit(inline="always")
def _signed(sign, mag, k):
    """The float64 pattern of the result from its sign and rounded magnitude's pattern."""
    signed = sel((mag != _0) | (k[ZF] == _0), mag | (sign << np.uint64(63)), _0)
    ovf = sel(sign != _0, k[OVFN], k[OVFP])
    return sel(mag > k[MAXB], ovf, signed)


@njit(inline="always")
def _signed32(sign, mag, k):
    """_signed as a float32 pattern (the format's values are float32 values): a magnitude below
    2**-126 (a float32 subnormal or zero) gets 2**-126 added (exact; a float32 normal, converted
    whatever the MXCSR), which its pattern then loses again."""
    tiny = mag < _T126
    f = np.float32(_val(mag) + _val(sel(tiny, _T126, _0)))
    p = np.uint64(_f32_u32(f)) - sel(tiny, np.uint64(0x800000), _0)
    signed = sel((mag != _0) | (k[ZF] == _0), p | (sign << np.uint64(31)), _0)
    ovf = sel(sign != _0, k[OVFN32], k[OVFP32])
    return np.uint32(sel(mag > k[MAXB], ovf, signed))


@njit(inline="always")
def _sign(v):
    return _bits(v) >> np.uint64(63)


@njit(inline="always")
def _zero_sum(hb, sx, sy, k):
    """hb, or for an exact zero sum the zero of IEEE 754 §6.3's sign."""
    zs = sel(k[DOWN] != _0, sx | sy, sx & sy)
    return sel((hb & _ABS) != _0, hb, zs << np.uint64(63))


@njit(inline="always")
def _element(op, ba, bb, bc, u, k, na, nb, nc, sr):
    """(sign, pattern of the rounded magnitude (see _round), 1 if the element needs the second pass
    else 0)."""
    a, fa, oka = _load(np.uint64(ba), na)
    if op == SQRT or op == SQRT_NARROW:
        q = np.sqrt(a)
        if op == SQRT_NARROW:  # q rounds as the exact root would (see the module docstring)
            zb = _bits(q)
        else:
            rr = fma64(-q, q, a)
            zb = _to_odd(_bits(q), rr != 0.0, _sign(rr) == _0)
        bad = ((fa & oka) ^ True) | ((_sign(a) != _0) & (a != 0.0))
        sg, mg = _round(zb, u, k, sr)
        return sg, mg, np.uint8(bad)
    b, fb, okb = _load(np.uint64(bb), nb)
    if op == SUB:
        b = -b
    bad = (fa & oka & fb & okb) ^ True
    if (op == ADD or op == SUB) and na == 16 and nb == 16:
        s = a + b  # exact: multiples of 2**-24 below 2**17 in magnitude
        zb = _zero_sum(_bits(s), _sign(a), _sign(b), k)
    elif op == ADD or op == SUB:
        s, e = _two_sum(a, b)
        hb = _zero_sum(_bits(s), _sign(a), _sign(b), k)
        zb = _to_odd(hb, e != 0.0, _sign(e) == _sign(s))
    elif op == MUL:
        zb = _bits(a * b)
    elif op == DIV:
        q = a / b
        rr = fma64(-q, b, a)
        zb = _to_odd(_bits(q), rr != 0.0, (_sign(rr) ^ _sign(b)) == _sign(q))
        bad = bad | (b == 0.0)
    else:  # FMA
        c, fc, okc = _load(np.uint64(bc), nc)
        bad = bad | ((fc & okc) ^ True)
        p = a * b
        s, e = _two_sum(p, c)
        hb = _zero_sum(_bits(s), _sign(p), _sign(c), k)
        zb = _to_odd(hb, e != 0.0, _sign(e) == _sign(s))
    sg, mg = _round(zb, u, k, sr)
    return sg, mg, np.uint8(bad)


@njit(inline="always")
def _store(out, i, sign, mag, k):
    if width(out) == 32:
        out[i] = _signed32(sign, mag, k)
    else:
        out[i] = _signed(sign, mag, k)


@njit(inline="always")
def _loop(op, a, b, c, k, u, out, fl, lo, hi, sr):
    """Elements lo..hi-1 (the vectorised loop); returns how many need the second pass. u is read
    only when sr (a compile-time constant)."""
    na, nb, nc = width(a), width(b), width(c)
    # slices, so that the loop index runs from 0 (with range(lo, hi) Numba's negative-index
    # wraparound stays in the loop and LLVM does not vectorise it)
    a, b, c, out, fl = a[lo:hi], b[lo:hi], c[lo:hi], out[lo:hi], fl[lo:hi]
    u = u[lo:hi] if sr else u
    cnt = 0
    for i in range(out.size):
        sg, mg, flag = _element(op, a[i], b[i], c[i], np.uint64(u[i]) if sr else _0, k, na, nb, nc, sr)
        _store(out, i, sg, mg, k)
        fl[i] = flag
        cnt += np.int64(flag)
    return cnt


# -- kernels: one per operation and rounding kind (deterministic or stochastic), so that each compiles
# on first use (for the operand dtypes it meets) and holds only its own loop. They release the GIL:
# the caller runs chunks on several threads. out[lo:hi] gets the results; the return value is the
# number of elements marked in fl[lo:hi] for the second pass. The *_sr kernels read word u[i].

@njit(cache=True, nogil=True, error_model="numpy")
def add_k(a, b, k, u, out, fl, lo, hi):
    """a + b."""
    return _loop(ADD, a, b, b, k, u, out, fl, lo, hi, False)


@njit(cache=True, nogil=True, error_model="numpy")
def add_sr_k(a, b, k, u, out, fl, lo, hi):
    """a + b (stochastic rounding)."""
    return _loop(ADD, a, b, b, k, u, out, fl, lo, hi, True)


@njit(cache=True, nogil=True, error_model="numpy")
def sub_k(a, b, k, u, out, fl, lo, hi):
    """a - b."""
    return _loop(SUB, a, b, b, k, u, out, fl, lo, hi, False)


@njit(cache=True, nogil=True, error_model="numpy")
def sub_sr_k(a, b, k, u, out, fl, lo, hi):
    """a - b (stochastic rounding)."""
    return _loop(SUB, a, b, b, k, u, out, fl, lo, hi, True)


@njit(cache=True, nogil=True, error_model="numpy")
def mul_k(a, b, k, u, out, fl, lo, hi):
    """a * b."""
    return _loop(MUL, a, b, b, k, u, out, fl, lo, hi, False)


@njit(cache=True, nogil=True, error_model="numpy")
def mul_sr_k(a, b, k, u, out, fl, lo, hi):
    """a * b (stochastic rounding)."""
    return _loop(MUL, a, b, b, k, u, out, fl, lo, hi, True)


@njit(cache=True, nogil=True, error_model="numpy")
def div_k(a, b, k, u, out, fl, lo, hi):
    """a / b."""
    return _loop(DIV, a, b, b, k, u, out, fl, lo, hi, False)


@njit(cache=True, nogil=True, error_model="numpy")
def div_sr_k(a, b, k, u, out, fl, lo, hi):
    """a / b (stochastic rounding)."""
    return _loop(DIV, a, b, b, k, u, out, fl, lo, hi, True)


@njit(cache=True, nogil=True, error_model="numpy")
def fma_k(a, b, c, k, u, out, fl, lo, hi):
    """a * b + c (one rounding)."""
    return _loop(FMA, a, b, c, k, u, out, fl, lo, hi, False)


@njit(cache=True, nogil=True, error_model="numpy")
def fma_sr_k(a, b, c, k, u, out, fl, lo, hi):
    """a * b + c (one rounding) (stochastic rounding)."""
    return _loop(FMA, a, b, c, k, u, out, fl, lo, hi, True)


@njit(cache=True, nogil=True, error_model="numpy")
def sqrt_k(a, k, u, out, fl, lo, hi):
    """sqrt(a)."""
    return _loop(SQRT, a, a, a, k, u, out, fl, lo, hi, False)


@njit(cache=True, nogil=True, error_model="numpy")
def sqrt_narrow_k(a, k, u, out, fl, lo, hi):
    """sqrt(a) for formats with man_bits <= 23, deterministic modes: ``fl(sqrt(a))`` rounded as if
    exact (the module docstring says why that is right), without the residual."""
    return _loop(SQRT_NARROW, a, a, a, k, u, out, fl, lo, hi, False)


@njit(cache=True, nogil=True, error_model="numpy")
def sqrt_sr_k(a, k, u, out, fl, lo, hi):
    """sqrt(a) (stochastic rounding)."""
    return _loop(SQRT, a, a, a, k, u, out, fl, lo, hi, True)


KERNELS = {ADD: add_k, SUB: sub_k, MUL: mul_k, DIV: div_k, FMA: fma_k, SQRT: sqrt_k}
SR_KERNELS = {ADD: add_sr_k, SUB: sub_sr_k, MUL: mul_sr_k, DIV: div_sr_k, FMA: fma_sr_k, SQRT: sqrt_sr_k}


# -- the second pass (numpy, no compilation): marked elements whose operands decide the result ------

FINITE, INF, NAN, ZERO = 0, 1, 2, 3
_LAYOUT = {2: (10, 0x1F), 4: (23, 0xFF), 8: (52, 0x7FF)}  # itemsize: (mantissa bits, exponent mask)


def kinds(bits: np.ndarray):
    """(sign, kind) arrays of float bit patterns (uint16/32/64): kind FINITE (nonzero), ZERO, INF
    or NAN."""
    mb, emax = _LAYOUT[bits.dtype.itemsize]
    b = bits.astype(np.uint64)
    sign = (b >> np.uint64(8 * bits.dtype.itemsize - 1)).astype(np.int64)
    ef = (b >> np.uint64(mb)) & np.uint64(emax)
    f = b & np.uint64((1 << mb) - 1)
    kind = np.full(b.shape, FINITE, np.int64)
    kind[(ef == 0) & (f == 0)] = ZERO
    kind[(ef == emax) & (f == 0)] = INF
    kind[(ef == emax) & (f != 0)] = NAN
    return sign, kind


def special(op, sa, ka, sb, kb, sc, kc):
    """(kind, sign) arrays of the results that the operands' kinds decide, as
    :func:`emul._kernels.arith.op_frame` decides them (the first NaN operand's sign, +NaN for an
    invalid operation, exact infinities, x / inf = ±0); kind FINITE where they do not."""
    kind = np.full(sa.shape, FINITE, np.int64)
    sign = np.zeros(sa.shape, np.int64)
    todo = np.ones(sa.shape, bool)

    def rule(cond, k, s):
        hit = todo & cond
        kind[hit] = k
        sign[hit] = s[hit] if isinstance(s, np.ndarray) else s
        todo[hit] = False

    if op == SQRT:
        rule(ka == NAN, NAN, sa)
        rule(ka == ZERO, FINITE, 0)
        rule(sa == 1, NAN, 0)
        rule(ka == INF, INF, 0)
        return kind, sign
    if op == SUB:
        sb = np.where(kb != NAN, sb ^ 1, sb)
    rule(ka == NAN, NAN, sa)
    rule(kb == NAN, NAN, sb)
    if op == FMA:
        rule(kc == NAN, NAN, sc)
    if op in (ADD, SUB):
        rule((ka == INF) & (kb == INF) & (sa != sb), NAN, 0)
        rule(ka == INF, INF, sa)
        rule(kb == INF, INF, sb)
        return kind, sign
    s = sa ^ sb
    if op == DIV:
        rule((ka == INF) & (kb == INF), NAN, 0)
        rule(ka == INF, INF, s)
        rule(kb == INF, ZERO, s)
        rule((kb == ZERO) & (ka == ZERO), NAN, 0)
        rule(kb == ZERO, INF, s)
        return kind, sign
    rule(((ka == INF) & (kb == ZERO)) | ((kb == INF) & (ka == ZERO)), NAN, 0)
    kp = (ka == INF) | (kb == INF)
    if op == MUL:
        rule(kp, INF, s)
        return kind, sign
    rule(kp & (kc == INF) & (sc != s), NAN, 0)
    rule(kp, INF, s)
    rule(kc == INF, INF, sc)
    return kind, sign


def fix_specials(op, flat, k, out, at):
    """Write the results of the marked elements ``at`` that special operands decide (out: uint64
    or uint32 patterns). Returns (indices left for the general kernel, number of NaN results in a
    format without NaN)."""
    ops = [f[at] for f in flat]
    while len(ops) < 3:
        ops.append(ops[0])
    (sa, ka), (sb, kb), (sc, kc) = (kinds(o) for o in ops)
    kind, sign = special(op, sa, ka, sb, kb, sc, kc)
    neg = sign != 0
    vb = np.zeros(at.shape, np.uint64)
    inf = kind == INF
    vb[inf] = np.where(neg[inf], k[INFN], k[INFP])
    zero = kind == ZERO
    if not k[ZF]:
        vb[zero] = np.where(neg[zero], np.uint64(1 << 63), np.uint64(0))
    nan = kind == NAN
    n_nan = 0
    if k[HASNAN]:
        vb[nan] = np.where(neg[nan], k[NANN], k[NANP])
    else:
        n_nan = int(np.count_nonzero(nan))
    done = kind != FINITE
    if out.dtype == np.uint32:  # ±0, ±inf, NaN or a format's max: never a float32 subnormal
        out[at[done]] = vb[done].view(np.float64).astype(np.float32).view(np.uint32)
    else:
        out[at[done]] = vb[done]
    return at[~done], n_nan

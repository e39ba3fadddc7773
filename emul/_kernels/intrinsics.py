"""32-bit integer operations that Numba does not widen.

Numba types ``uint32 op uint32`` as a 64-bit operation (``uint32 + uint32 -> uint64``), so a loop
over float32 bit patterns ends up in 64-bit vector lanes with 64-bit variable shifts: half the lanes
of 32-bit code, and slower shifts. These intrinsics emit the plain LLVM ``i32`` instruction instead,
which keeps a vectorised loop body in 32-bit lanes.

Every operation takes and returns ``uint32`` (comparisons return a boolean); Python ints and other
integer arguments are cast to ``uint32`` first (modulo 2**32). Preconditions the caller must keep,
as LLVM gives no defined result otherwise:

- shift amounts (:func:`shl`, :func:`shr`) are below 32;
- :func:`f32_bits_of` takes integers up to 2**24 (exact in float32);
- rotation amounts (:func:`rotl`) are constants in 1…31.

:func:`threefry2x32` and :func:`threefry_word` are Threefry-2x32 (20 rounds, as JAX computes it) in
these operations, so a loop that draws its random words inline stays in 32-bit lanes; they equal
:func:`emul._kernels.threefry.threefry2x32` bit for bit.

The intrinsics are module-level objects, so ``@njit(cache=True)`` functions that use them cache.
(Numba checks only the caller's source file for staleness: after editing this file, clear the
``__pycache__`` of the modules that use it.)
"""

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

_U32 = types.uint32
_I32 = ir.IntType(32)


def _on_two_u32(name, emit, doc, result):
    """An intrinsic ``(uint32, uint32) -> result`` emitting ``emit(builder, a, b)``."""

    @intrinsic
    def op(typingctx, a, b):
        if not (isinstance(a, types.Integer) and isinstance(b, types.Integer)):
            return None

        def codegen(context, builder, signature, args):
            x = context.cast(builder, args[0], signature.args[0], _U32)
            y = context.cast(builder, args[1], signature.args[1], _U32)
            return emit(builder, x, y)

        return result(a, b), codegen

    op.__name__ = op.__qualname__ = name
    op.__doc__ = doc
    return op


def _binary(name, emit, doc):
    """An intrinsic ``(uint32, uint32) -> uint32``."""
    return _on_two_u32(name, emit, doc, _U32)


add = _binary("add", lambda bld, x, y: bld.add(x, y), "a + b mod 2**32.")
sub = _binary("sub", lambda bld, x, y: bld.sub(x, y), "a - b mod 2**32.")
mul = _binary("mul", lambda bld, x, y: bld.mul(x, y), "a * b mod 2**32.")
and_ = _binary("and_", lambda bld, x, y: bld.and_(x, y), "a & b.")
or_ = _binary("or_", lambda bld, x, y: bld.or_(x, y), "a | b.")
xor = _binary("xor", lambda bld, x, y: bld.xor(x, y), "a ^ b.")
shl = _binary("shl", lambda bld, x, y: bld.shl(x, y), "a << b mod 2**32 (b < 32).")
shr = _binary("shr", lambda bld, x, y: bld.lshr(x, y), "a >> b, logical (b < 32).")
rotl = _binary("rotl", lambda bld, x, y: bld.call(_fshl(bld), [x, x, y]),
               "a rotated left by b bits (llvm.fshl; b a constant in 1..31).")
smin = _binary("smin", lambda bld, x, y: bld.select(bld.icmp_signed("<", x, y), x, y),
               "min(a, b) with both read as int32 (the result keeps its bit pattern).")


def _fshl(builder):
    """The LLVM funnel-shift-left intrinsic for i32 (a rotation when both inputs are the same)."""
    fnty = ir.FunctionType(_I32, [_I32, _I32, _I32])
    return cgutils.get_or_insert_function(builder.module, fnty, "llvm.fshl.i32")


def _compare(name, emit, doc):
    """An intrinsic ``(uint32, uint32) -> bool``."""
    return _on_two_u32(name, emit, doc, types.boolean)


ult = _compare("ult", lambda bld, x, y: bld.icmp_unsigned("<", x, y), "a < b, unsigned.")
eq = _compare("eq", lambda bld, x, y: bld.icmp_unsigned("==", x, y), "a == b.")


@intrinsic
def select(typingctx, c, a, b):
    """``a if c else b`` as one LLVM select (no branch): uint32 a and b, boolean c."""
    if not (isinstance(c, types.Boolean) and isinstance(a, types.Integer) and isinstance(b, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        cond = context.cast(builder, args[0], signature.args[0], types.boolean)
        x = context.cast(builder, args[1], signature.args[1], _U32)
        y = context.cast(builder, args[2], signature.args[2], _U32)
        return builder.select(cond, x, y)

    return _U32(c, a, b), codegen


@intrinsic
def f32_bits_of(typingctx, q):
    """The float32 bit pattern of ``float(q)`` for an integer ``q <= 2**24``: exact (no rounding),
    and 0 or at least 1.0, so neither the rounding mode nor flush-to-zero / denormals-are-zero
    (MXCSR) can change it. Callers build other patterns from it with integer operations."""
    if not isinstance(q, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        x = builder.uitofp(context.cast(builder, args[0], signature.args[0], _U32), ir.FloatType())
        return builder.bitcast(x, _I32)

    return _U32(q), codegen


# -- Threefry-2x32 in 32-bit operations -------------------------------------------------------------

_KS_PARITY = 0x1BD11BDA  # Threefry-2x32 key-schedule parity constant


@njit(inline="always")
def _mix4(x0, x1, r0, r1, r2, r3):
    """Four Threefry rounds: x0 += x1; x1 = rotl(x1, r) ^ x0."""
    x0 = add(x0, x1)
    x1 = xor(rotl(x1, r0), x0)
    x0 = add(x0, x1)
    x1 = xor(rotl(x1, r1), x0)
    x0 = add(x0, x1)
    x1 = xor(rotl(x1, r2), x0)
    x0 = add(x0, x1)
    x1 = xor(rotl(x1, r3), x0)
    return x0, x1


@njit(inline="always")
def threefry2x32(k0, k1, x0, x1):
    """Threefry-2x32 of the counter pair (x0, x1) under key (k0, k1): two uint32 words."""
    k2 = xor(xor(k0, k1), _KS_PARITY)
    x0, x1 = add(x0, k0), add(x1, k1)
    x0, x1 = _mix4(x0, x1, 13, 15, 26, 6)
    x0, x1 = add(x0, k1), add(add(x1, k2), 1)
    x0, x1 = _mix4(x0, x1, 17, 29, 16, 24)
    x0, x1 = add(x0, k2), add(add(x1, k0), 2)
    x0, x1 = _mix4(x0, x1, 13, 15, 26, 6)
    x0, x1 = add(x0, k0), add(add(x1, k1), 3)
    x0, x1 = _mix4(x0, x1, 17, 29, 16, 24)
    x0, x1 = add(x0, k1), add(add(x1, k2), 4)
    x0, x1 = _mix4(x0, x1, 13, 15, 26, 6)
    return add(x0, k2), add(add(x1, k0), 5)


@njit(inline="always")
def threefry_word(k0, k1, hi, lo):
    """``y0 ^ y1`` of threefry2x32(k, (hi, lo)): word ``hi * 2**32 + lo`` of ``emul.random.bits(k, n)``."""
    y0, y1 = threefry2x32(k0, k1, hi, lo)
    return xor(y0, y1)


@njit(cache=True, nogil=True)
def threefry_rows(W, nt, lo0, step, N, hi, k0, k1, shift):
    """Fill a tile of Threefry words: for tt < nt and j < N,
    ``W[tt, j] = threefry_word(k0, k1, hi, (lo0 + tt + j * step) mod 2**32) >> shift``.

    That is word ``hi * 2**32 + lo`` of ``emul.random.bits(k, n)`` (shifted) when no counter of the
    tile crosses a multiple of 2**32 (the caller checks that; ``hi`` is the same for all of them).
    Each row ``tt`` is one loop over j in 32-bit lanes, and rows are done four at a time, so that
    four independent Threefry chains are in flight per vector (one row at a time: 0.65 ns/word on
    one thread, AVX-512; two: 0.57; four: 0.47; eight: 0.51). ``shift`` < 32; W is uint32 with at
    least nt rows and N columns. Compiled once and called (not inlined: four chains wide, it adds
    seconds to the compile of each kernel it is inlined into); callers pass nt and N as int64 and
    the rest as uint32, so that one signature serves them."""
    tt = 0
    while tt + 4 <= nt:
        r0 = W[tt]
        r1 = W[tt + 1]
        r2 = W[tt + 2]
        r3 = W[tt + 3]
        c = add(lo0, tt)
        for j in range(N):
            lo = add(c, mul(j, step))
            r0[j] = shr(threefry_word(k0, k1, hi, lo), shift)
            r1[j] = shr(threefry_word(k0, k1, hi, add(lo, 1)), shift)
            r2[j] = shr(threefry_word(k0, k1, hi, add(lo, 2)), shift)
            r3[j] = shr(threefry_word(k0, k1, hi, add(lo, 3)), shift)
        tt += 4
    while tt < nt:
        r0 = W[tt]
        c = add(lo0, tt)
        for j in range(N):
            r0[j] = shr(threefry_word(k0, k1, hi, add(c, mul(j, step))), shift)
        tt += 1


__all__ = ["add", "sub", "mul", "and_", "or_", "xor", "shl", "shr", "rotl", "smin", "ult", "eq", "select",
           "f32_bits_of", "threefry2x32", "threefry_word", "threefry_rows"]

"""32-bit integer operations that Numba does not widen.

Numba types ``uint32 op uint32`` as a 64-bit operation (``uint32 + uint32 -> uint64``), so a loop
over float32 bit patterns ends up in 64-bit vector lanes with 64-bit variable shifts: half the lanes
of 32-bit code, and slower shifts. These intrinsics emit the plain LLVM ``i32`` instruction instead,
which keeps a vectorised loop body in 32-bit lanes.

Every operation takes and returns ``uint32`` (comparisons return a boolean); Python ints and other
integer arguments are cast to ``uint32`` first (modulo 2**32). Preconditions the caller must keep,
as LLVM gives no defined result otherwise:

- shift amounts (:func:`shl`, :func:`shr`) are below 32;
- :func:`f32_scaled_bits` is exact only when ``q * 2**k`` is a float32 (callers pass small ``q`` and
  a power of two).

The intrinsics are module-level objects, so ``@njit(cache=True)`` functions that use them cache.
(Numba checks only the caller's source file for staleness: after editing this file, clear the
``__pycache__`` of the modules that use it.)
"""

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

_U32 = types.uint32
_I32 = ir.IntType(32)


def _binary(name, emit, doc):
    """An intrinsic ``(uint32, uint32) -> uint32`` emitting ``emit(builder, a, b)``."""

    @intrinsic
    def op(typingctx, a, b):
        if not (isinstance(a, types.Integer) and isinstance(b, types.Integer)):
            return None

        def codegen(context, builder, signature, args):
            x = context.cast(builder, args[0], signature.args[0], _U32)
            y = context.cast(builder, args[1], signature.args[1], _U32)
            return emit(builder, x, y)

        return _U32(a, b), codegen

    op.__name__ = op.__qualname__ = name
    op.__doc__ = doc
    return op


add = _binary("add", lambda bld, x, y: bld.add(x, y), "a + b mod 2**32.")
sub = _binary("sub", lambda bld, x, y: bld.sub(x, y), "a - b mod 2**32.")
and_ = _binary("and_", lambda bld, x, y: bld.and_(x, y), "a & b.")
or_ = _binary("or_", lambda bld, x, y: bld.or_(x, y), "a | b.")
xor = _binary("xor", lambda bld, x, y: bld.xor(x, y), "a ^ b.")
shl = _binary("shl", lambda bld, x, y: bld.shl(x, y), "a << b mod 2**32 (b < 32).")
shr = _binary("shr", lambda bld, x, y: bld.lshr(x, y), "a >> b, logical (b < 32).")
smin = _binary("smin", lambda bld, x, y: bld.select(bld.icmp_signed("<", x, y), x, y),
               "min(a, b) with both read as int32 (the result keeps its bit pattern).")


def _compare(name, emit, doc):
    """An intrinsic ``(uint32, uint32) -> bool``."""

    @intrinsic
    def op(typingctx, a, b):
        if not (isinstance(a, types.Integer) and isinstance(b, types.Integer)):
            return None

        def codegen(context, builder, signature, args):
            x = context.cast(builder, args[0], signature.args[0], _U32)
            y = context.cast(builder, args[1], signature.args[1], _U32)
            return emit(builder, x, y)

        return types.boolean(a, b), codegen

    op.__name__ = op.__qualname__ = name
    op.__doc__ = doc
    return op


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
def f32_scaled_bits(typingctx, q, scale_bits):
    """The float32 bit pattern of ``float(q) * scale``, scale given by its float32 bit pattern.

    Used for ``q * 2**k`` with small ``q`` (at most 2**24) and a power of two, which is exact.
    """
    if not (isinstance(q, types.Integer) and isinstance(scale_bits, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        f32 = ir.FloatType()
        x = builder.uitofp(context.cast(builder, args[0], signature.args[0], _U32), f32)
        s = builder.bitcast(context.cast(builder, args[1], signature.args[1], _U32), f32)
        return builder.bitcast(builder.fmul(x, s), _I32)

    return _U32(q, scale_bits), codegen


__all__ = ["add", "sub", "and_", "or_", "xor", "shl", "shr", "smin", "ult", "eq", "select",
           "f32_scaled_bits"]

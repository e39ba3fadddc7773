"""add, sub, mul, div, fma, sqrt in JAX: the exact real result, rounded once, bit for bit as emul.

Same names, arguments and semantics as :mod:`emul.arith` (see ``docs/arith.md``): each operation
computes its exact result from the operands' bit patterns with integer arithmetic in ``uint32``
lanes (:mod:`emul_jax._exact`) and rounds it once with emul_jax's one rounding primitive
(:func:`emul_jax._round.round_parts`), so every rounding mode, overflow rule and stochastic-rounding
setting behaves exactly as in the core. No XLA float operation touches a value: XLA's flushing of
float32 subnormals, its ``a*b + c`` contraction and its ``x/c -> x*(1/c)`` rewrite cannot change
a bit, on CPU or GPU.

JAX conventions, as :mod:`emul_jax.quantize`: operands are float32 (bit-exact parity with
``emul.add`` etc. on float32 inputs), float16/bfloat16 (widened exactly) or integers of at most
32 bits (their exact values), broadcast like numpy; the format's values must fit float32; results
are float32; formats and modes are static (each configuration compiles once under ``jit``);
``key=`` is a JAX key whose words ``jax.random.bits(key, shape, uint32) >> (32 - sr_bits)`` give
element i of the broadcast result word i, so ``key=jax.random.key(s)`` equals the core's
``seed=s``. Gradients are straight-through (``ste=``): ``"identity"`` differentiates the exact
operation (d(a·b) = b·da + a·db, computed in plain float32; the rounding is treated as the
identity), ``"clipped"`` does so only where the plain float32 result lies within the format's
range, ``"none"`` gives zero.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import checkify

from emul._kernels import slots as K
from emul.rounding import Rounding

from . import _exact as E
from . import _round as R
from ._bits import U32, f32_from_bits, u32
from .quantize import _in_range, _input, _is_traced, _spec, _sr_words

__all__ = ["add", "sub", "mul", "div", "fma", "sqrt"]

STE = ("identity", "clipped", "none")
_NAMES = {"add": ("a", "b"), "sub": ("a", "b"), "mul": ("a", "b"), "div": ("a", "b"),
          "fma": ("a", "b", "c"), "sqrt": ("a",)}


# -- the computation ----------------------------------------------------------------------------

def _wrap_frac(sp):
    """``frac`` for a fixed format under a wrap rule (its results need the low integer bits of
    arbitrarily large values, :mod:`emul_jax._exact`), else None."""
    if not sp.is_float and sp.P[K.RULE] in (K.RULE_WRAP, K.RULE_WRAP_SM):
        return sp.P[K.FRAC]
    return None


def round_exact(sp, p: E.Parts, u=None):
    """(codes, bad_nan, bad_inf): ``p`` rounded once to ``sp``'s format; the masks flag NaN results
    the format cannot hold and infinite results a wrap rule cannot map (their codes are
    :func:`emul_jax._round.bad_code`)."""
    code = R.round_parts(sp, p.sign, p.hi, p.lo, p.e, p.sticky, u)
    is_nan = p.kind == u32(E.NAN)
    special = p.kind != u32(E.FINITE)
    code = jnp.where(special, R.special_code(sp, p.sign, is_nan), code)
    bad_nan = is_nan if sp.nan_codes is None else jnp.zeros(is_nan.shape, bool)
    bad_inf = p.kind == u32(E.INF) if _wrap_frac(sp) is not None else jnp.zeros(is_nan.shape, bool)
    return code, bad_nan, bad_inf


def _exact_stage(op, width, nbits, wrap_bound, down, frac, xs) -> E.Parts:
    """Stage 1: the exact result of ``op`` on the operand arrays ``xs`` broadcast together.
    Compiled once per operation (``op``, the divisor ``width``, the quotient/root bits ``nbits``
    (32 or 64) and the wrap rules' ``wrap_bound`` are static): mode ``down`` (the sign of an exact
    zero sum) and a wrap rule's ``frac`` are traced scalars, so formats and modes share it."""
    shape = jnp.broadcast_shapes(*(x.shape for x in xs))
    ps = [E.operand_parts(jnp.broadcast_to(x, shape)) for x in xs]
    wf = None if wrap_bound is None else frac
    if op == "add":
        return E.add_parts(ps[0], ps[1], down=down, wrap_frac=wf)
    if op == "sub":
        return E.sub_parts(ps[0], ps[1], down=down, wrap_frac=wf)
    if op == "mul":
        return E.mul_parts(ps[0], ps[1])
    if op == "fma":
        return E.fma_parts(ps[0], ps[1], ps[2], down=down, wrap_frac=wf)
    if op == "div":
        return E.div_parts(ps[0], ps[1], width=width, nbits=nbits, wrap_frac=wf, wrap_frac_max=wrap_bound)
    if op == "sqrt":
        return E.sqrt_parts(ps[0], nbits=nbits, wrap_frac=wf, wrap_frac_max=wrap_bound)
    raise ValueError(f"unknown operation {op!r}")


def _exact_args(op, sp, xs) -> tuple:
    """The arguments of :func:`_exact_stage` but ``xs``: (op, width, nbits, wrap_bound) static,
    (down, frac) traced. ``nbits``: 32 quotient bits or 30 root bits where the rounding reads no
    more (:func:`emul_jax._exact.result_bits`: every deterministic mode into formats of at most 23
    fraction bits, SR with few bits), else 64.
    ``wrap_bound`` rounds a wrap rule's ``frac`` up to a multiple of 32 (at least 32): it only
    sizes the division and square-root loops, so wrap formats share few compilations."""
    wf = _wrap_frac(sp) if op != "mul" else None
    bound = None if wf is None else 32 * max(1, -(-wf // 32))
    width = max(E.width_of(x.dtype) for x in xs) if op == "div" else 0
    nbits = 0
    if op in ("div", "sqrt"):
        short = 32 if op == "div" else 30  # 30 root bits: the one-word steps of the square root
        nbits = 64 if wf is not None or E.result_bits(sp) > short else short
    down = np.bool_(sp.rounding == Rounding.DOWN)
    return op, width, nbits, bound, down, np.int32(0 if wf is None else wf)


def exact(op: str, sp, xs) -> E.Parts:
    """The exact result of ``op`` on the operand arrays ``xs``, as :class:`emul_jax._exact.Parts`
    ready for :func:`round_exact` in the format of ``sp`` (a :class:`emul_jax._round.RoundSpec`)."""
    down = sp.rounding == Rounding.DOWN
    wf = _wrap_frac(sp)
    return _exact_stage(op, max(E.width_of(x.dtype) for x in xs), 64, wf, down, wf, xs)


def _round_stage(sp, p: E.Parts, u, ubad):
    """Stage 2 (one compilation per format and mode): (float32 values, #NaN results the format
    cannot hold, #infinite results a wrap rule cannot map)."""
    code, bad_nan, bad_inf = round_exact(sp, p, u)
    bits = R.code_to_f32_bits(sp, code)
    # what the core would reject becomes NaN with the result's sign (docs/jax.md), as in quantize
    bad = bad_nan | bad_inf
    if ubad is not None:
        bad = bad | ubad
    bits = jnp.where(bad, u32(R.F32_NAN) | (p.sign << u32(31)), bits)
    return f32_from_bits(bits), jnp.sum(bad_nan), jnp.sum(bad_inf)


_exact_jit = jax.jit(_exact_stage, static_argnums=(0, 1, 2, 3))
_round_jit = jax.jit(_round_stage, static_argnums=(0,))




# -- gradients ----------------------------------------------------------------------------------

@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _attach_grad(op, ste, y, *xs):
    """``y`` (the rounded result), with the straight-through derivative of ``op`` at ``xs``."""
    return y


@_attach_grad.defjvp
def _attach_grad_jvp(op, ste, primals, tangents):
    y, *xs = primals
    _, *ts = tangents
    zero = jnp.zeros(y.shape, jnp.float32)
    if ste == "none":
        return y, zero
    f = [lax.convert_element_type(x, jnp.float32) for x in xs]
    t = [None if tx.dtype == jax.dtypes.float0 else lax.convert_element_type(tx, jnp.float32) for tx in ts]

    def term(tx, scale=None):
        if tx is None:
            return None
        return tx if scale is None else tx * scale

    if op == "add":
        terms = [term(t[0]), term(t[1])]
    elif op == "sub":
        terms = [term(t[0]), None if t[1] is None else -t[1]]
    elif op == "mul":
        terms = [term(t[0], f[1]), term(t[1], f[0])]
    elif op == "div":
        terms = [term(t[0], 1 / f[1]), term(t[1], -f[0] / (f[1] * f[1]))]
    elif op == "fma":
        terms = [term(t[0], f[1]), term(t[1], f[0]), term(t[2])]
    else:  # sqrt
        terms = [term(t[0], 0.5 / jnp.sqrt(f[0]))]
    out = zero
    for tm in terms:
        if tm is not None:
            out = out + tm
    out = jnp.broadcast_to(out, y.shape)
    if isinstance(ste, tuple):  # ("clipped", spec): zero where the float32 result leaves the range
        plain = {"add": lambda: f[0] + f[1], "sub": lambda: f[0] - f[1], "mul": lambda: f[0] * f[1],
                 "div": lambda: f[0] / f[1], "fma": lambda: f[0] * f[1] + f[2], "sqrt": lambda: jnp.sqrt(f[0])}[op]()
        out = jnp.where(_in_range(ste[1], jnp.broadcast_to(plain, y.shape)), out, jnp.float32(0))
    return y, out


# -- public functions ---------------------------------------------------------------------------

def _apply(op, operands, fmt, rounding, overflow, key, random_bits, sr_bits, sr_method, ste):
    sp = _spec(fmt, rounding, overflow, sr_bits, sr_method, op)
    if ste not in STE:
        raise ValueError(f"ste={ste!r}: must be one of {', '.join(map(repr, STE))}")
    names = _NAMES[op]
    xs = [_input(x, name) for x, name in zip(operands, names)]
    try:
        shape = jnp.broadcast_shapes(*(x.shape for x in xs))
    except ValueError:
        shapes = ", ".join(f"{n}{tuple(x.shape)}" for n, x in zip(names, xs))
        raise ValueError(f"operands could not be broadcast together: {shapes}") from None
    u, ubad = _sr_words(sp, shape, key, random_bits)
    xs_ng = tuple(lax.stop_gradient(x) for x in xs)
    p = _exact_jit(*_exact_args(op, sp, xs_ng), xs_ng)
    y, n_nan, n_inf = _round_jit(sp, p, u, ubad)
    nan_msg = (" NaN result(s) (a NaN input or an invalid operation such as inf - inf, 0 * inf, 0 / 0, "
               f"sqrt(-1)), but {sp.fmt.name} has no NaN")
    inf_msg = (f" infinite result(s), which overflow={sp.overflow.value!r} cannot map into {sp.fmt.name}; "
               "use a saturate rule")
    if sp.nan_codes is None or _wrap_frac(sp) is not None:
        if not any(_is_traced(v) for v in (y, n_nan, n_inf)):
            if int(n_nan):
                raise ValueError(f"{int(n_nan)}{nan_msg}")
            if int(n_inf):
                raise ValueError(f"{int(n_inf)}{inf_msg}")
        else:
            checkify.debug_check(n_nan == 0, "some" + nan_msg)
            checkify.debug_check(n_inf == 0, "some" + inf_msg)
    if ubad is not None:
        checkify.debug_check(~jnp.any(ubad), f"random_bits: value(s) outside [0, 2**{sp.sr_bits}) "
                                              f"for sr_bits={sp.sr_bits}")
    return _attach_grad(op, ("clipped", sp) if ste == "clipped" else ste, y, *xs)


_DOC = """
    Args:
      {args}: float32 (bit-exact parity with ``emul.{op}``), float16/bfloat16 (widened exactly) or
        integers of at most 32 bits, broadcast like numpy. Concrete float64/int64 values (NumPy,
        Python scalars) are accepted when each is exactly a float32 / fits 32 bits.
      fmt: a format or its name whose values are all float32 values (else ValueError).
      rounding, overflow, sr_bits, sr_method: as :func:`emul.{op}` (static).
      key: a JAX key or two uint32 words: SR word i (C order over the broadcast result) is element
        i of ``jax.random.bits(key, shape, uint32) >> (32 - sr_bits)``.
      random_bits: integers in [0, 2**sr_bits) broadcastable to the result (the other SR source).
      ste: ``"identity"`` (the derivative of the exact operation, in float32), ``"clipped"`` (that
        derivative where the float32 result of the plain operation lies within the format's range,
        ``[-max, max]`` or ``[min, max]`` compared exactly on bit patterns, else 0; as quantize's
        ``"clipped"`` applied to the unrounded result) or ``"none"`` (0).

    Returns the rounded results as float32. A NaN result in a format without NaN, or an infinite
    one under a wrap rule, raises ValueError as in the core; under ``jit`` it becomes NaN
    (``checkify`` reports it).
"""


def add(a, b, fmt, rounding="nearest_even", overflow=None, *, key=None, random_bits=None, sr_bits=None,
        sr_method="add", ste="identity"):
    """a + b, exact, rounded once to ``fmt``.
    {doc}
    >>> import jax.numpy as jnp
    >>> add(jnp.float32(1.0), jnp.float32(2.0**-12), "fp16", "up")
    Array(1.0009766, dtype=float32)
    >>> add(jnp.float32(1.0), jnp.float32(-1.0), "fp16", "down")  # an exact zero sum: -0 in mode down
    Array(-0., dtype=float32)
    """
    return _apply("add", (a, b), fmt, rounding, overflow, key, random_bits, sr_bits, sr_method, ste)


def sub(a, b, fmt, rounding="nearest_even", overflow=None, *, key=None, random_bits=None, sr_bits=None,
        sr_method="add", ste="identity"):
    """a - b, exact, rounded once to ``fmt``.
    {doc}
    >>> import jax.numpy as jnp
    >>> sub(jnp.float32(1.75), jnp.float32(-1.0), "fx<4,2>")  # 2.75 saturates
    Array(1.75, dtype=float32)
    """
    return _apply("sub", (a, b), fmt, rounding, overflow, key, random_bits, sr_bits, sr_method, ste)


def mul(a, b, fmt, rounding="nearest_even", overflow=None, *, key=None, random_bits=None, sr_bits=None,
        sr_method="add", ste="identity"):
    """a * b, exact, rounded once to ``fmt``.
    {doc}
    >>> import jax.numpy as jnp
    >>> mul(jnp.float32(448.0), jnp.float32(448.0), "e4m3fn")  # no infinity: overflow gives NaN
    Array(nan, dtype=float32)
    >>> mul(jnp.float32(448.0), jnp.float32(448.0), "e4m3fn", overflow="saturate")
    Array(448., dtype=float32)
    """
    return _apply("mul", (a, b), fmt, rounding, overflow, key, random_bits, sr_bits, sr_method, ste)


def div(a, b, fmt, rounding="nearest_even", overflow=None, *, key=None, random_bits=None, sr_bits=None,
        sr_method="add", ste="identity"):
    """a / b, exact, rounded once to ``fmt`` (x / 0 is ±inf for finite nonzero x; 0 / 0 is NaN).
    {doc}
    >>> import jax.numpy as jnp
    >>> div(jnp.float32(1.0), jnp.float32(3.0), "bf16")
    Array(0.33398438, dtype=float32)
    """
    return _apply("div", (a, b), fmt, rounding, overflow, key, random_bits, sr_bits, sr_method, ste)


def fma(a, b, c, fmt, rounding="nearest_even", overflow=None, *, key=None, random_bits=None, sr_bits=None,
        sr_method="add", ste="identity"):
    """a * b + c with one rounding.
    {doc}
    >>> import jax.numpy as jnp
    >>> fma(jnp.float32(1 + 2.0**-10), jnp.float32(1 - 2.0**-10), jnp.float32(-1.0), "fp16")
    Array(-9.536743e-07, dtype=float32)
    """
    return _apply("fma", (a, b, c), fmt, rounding, overflow, key, random_bits, sr_bits, sr_method, ste)


def sqrt(a, fmt, rounding="nearest_even", overflow=None, *, key=None, random_bits=None, sr_bits=None,
         sr_method="add", ste="identity"):
    """The square root of a, rounded once to ``fmt`` (sqrt(-0) = -0; negative inputs give NaN).
    {doc}
    >>> import jax.numpy as jnp
    >>> sqrt(jnp.float32(2.0), "fp16", "toward_zero")
    Array(1.4140625, dtype=float32)
    """
    return _apply("sqrt", (a,), fmt, rounding, overflow, key, random_bits, sr_bits, sr_method, ste)


for _f, _args in ((add, "a, b"), (sub, "a, b"), (mul, "a, b"), (div, "a, b"), (fma, "a, b, c"), (sqrt, "a")):
    _f.__doc__ = _f.__doc__.replace("{doc}", _DOC.format(args=_args, op=_f.__name__))
del _f, _args

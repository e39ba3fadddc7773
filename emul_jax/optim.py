"""optax side of emulated training: quantized gradients and a single-rounding ``apply_updates``.

Imports optax (the ``emul[nn]`` extra); ``import emul_jax`` does not import this module.

* :func:`quantize_gradients` -- an optax ``GradientTransformation`` that rounds every update leaf
  to a format (stochastic rounding by default), with keys from a counter in its state.
* :func:`apply_updates` -- ``params + updates`` rounded **once** into a low-precision format by
  :func:`emul_jax.add` (the exact sum, then one rounding). ``optax.apply_updates`` computes
  ``(p + u).astype(p.dtype)``: the float32 sum is rounded first, so a following quantization
  rounds twice (and, under stochastic rounding, the bits of ``u`` below float32's precision at
  ``p`` are lost before the random decision).

Keys (never reused, never inside a config; replayable with :mod:`emul.random`):

* ``quantize_gradients(fmt, key=k)``: update call ``t`` (t = 0, 1, ... counted in the state)
  rounds leaf ``i`` (the order of ``jax.tree.leaves(updates)``) with
  ``fold_in(fold_in(k, t), i)``; element ``j`` of the leaf uses word ``j`` of
  ``jax.random.bits`` of that key (the core's layout), i.e.
  ``emul.quantize(g, fmt, "stochastic", key=emul.random.fold_in(emul.random.fold_in(k, t), i))``.
* ``apply_updates(params, updates, fmt, key=k)``: leaf ``i`` uses ``fold_in(k, i)``:
  ``emul.add(p, u, fmt, "stochastic", key=emul.random.fold_in(k, i))``. Pass a fresh key per
  step (for example ``fold_in(base, step)`` or an ``nnx.Rngs`` stream).

Results are float32 for float32 leaves; float16/bfloat16 leaves get their own dtype back when
every value of ``fmt`` is one of that dtype (converted exactly through the format's code, never by
a float cast), else a ``ValueError``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from emul.formats import FixedFormat, FloatFormat, format as _format

from .arith import add as _add
from .quantize import _as_key, encode as _encode
from .quantize import quantize as _quantize

__all__ = ["quantize_gradients", "QuantizeGradientsState", "apply_updates"]

# (man_bits, emax, smallest quantum exponent) of the float dtypes a leaf may have
_DTYPE_LIMITS = {
    np.dtype(np.float32): (23, 127, -149),
    np.dtype(jnp.float16): (10, 15, -24),
    np.dtype(jnp.bfloat16): (7, 127, -133),
}
_CODE_FMT = {np.dtype(jnp.float16): ("fp16", jnp.uint16), np.dtype(jnp.bfloat16): ("bf16", jnp.uint16)}


def _fits(fmt, dtype) -> bool:
    """Whether every finite value of ``fmt`` is a value of the float dtype ``dtype``."""
    man, emax, qmin = _DTYPE_LIMITS[np.dtype(dtype)]
    if isinstance(fmt, FloatFormat):
        return fmt.man_bits <= man and fmt.emax <= emax and fmt.emin - fmt.man_bits >= qmin
    assert isinstance(fmt, FixedFormat)
    magnitude_bits = fmt.bits - (1 if fmt.signed else 0)
    # |r| <= 2**magnitude_bits (the signed minimum), times 2**-frac
    return magnitude_bits <= man + 1 and -fmt.frac >= qmin and magnitude_bits - fmt.frac <= emax


def _check_leaf_dtype(fmt, dtype, what):
    dt = np.dtype(dtype)
    if dt not in _DTYPE_LIMITS:
        raise TypeError(f"{what}: dtype {dt} is not supported (float32, float16 or bfloat16 leaves)")
    if not _fits(fmt, dt):
        raise ValueError(f"{what}: values of {fmt.name} are not all {dt} values; the result could not "
                         f"be stored in the leaf's dtype without a second rounding (use float32 leaves)")


def _as_dtype(values, dtype):
    """float32 ``values`` (each exactly a value of ``dtype``) as ``dtype``, bit-exact on every backend."""
    dt = np.dtype(dtype)
    if dt == np.dtype(np.float32):
        return values
    name, code_dtype = _CODE_FMT[dt]
    codes = _encode(values, name).astype(code_dtype)  # exact: the value is a code of ``name``
    return lax.bitcast_convert_type(codes, dt)


def _typed(words):
    return jax.random.wrap_key_data(words, impl="threefry2x32")


def _stochastic(rounding) -> bool:
    return str(getattr(rounding, "value", rounding)) == "stochastic"


# ------------------------------------------------------------------------------ quantize_gradients


class QuantizeGradientsState(NamedTuple):
    """State of :func:`quantize_gradients`: the update count and the base key (2 uint32 words)."""

    count: jax.Array  # uint32 scalar: the number of update calls so far
    key: jax.Array  # uint32[2]: key data given to quantize_gradients (zeros when not stochastic)


def quantize_gradients(fmt, rounding="stochastic", overflow=None, *, key=None, sr_bits=None,
                       sr_method="add") -> optax.GradientTransformation:
    """An optax transform rounding every update leaf to ``fmt`` with :func:`emul_jax.quantize`.

    Args:
      fmt: the format (or its name) whose values are all float32 values, e.g. ``"e5m2"``,
        ``"bf16"``. The leaves are rounded as they are (no scaling).
      rounding, overflow, sr_bits, sr_method: as :func:`emul_jax.quantize`.
      key: required for ``rounding="stochastic"`` (a JAX key or 2 uint32 words), stored in the
        state by ``init``. Update call ``t`` rounds leaf ``i`` of ``jax.tree.leaves(updates)``
        with ``fold_in(fold_in(key, t), i)``. Must be ``None`` for deterministic modes.

    Put it where the quantization belongs in an optax chain, e.g. first (the gradients as a
    low-precision all-reduce would deliver them): ``optax.chain(quantize_gradients("e5m2",
    key=k), optax.sgd(0.1))``. ``None`` leaves stay ``None``; leaves are float32, float16 or
    bfloat16 and keep their dtype (see the module docstring).

    >>> import jax, jax.numpy as jnp
    >>> tx = quantize_gradients("e4m3fn", "nearest_even")
    >>> tx.update({"w": jnp.array([0.1, 1.1])}, tx.init(None))[0]["w"]
    Array([0.1015625, 1.125    ], dtype=float32)
    """
    fmt = _format(fmt) if isinstance(fmt, str) else fmt
    sr = _stochastic(rounding)
    if sr and key is None:
        raise ValueError("quantize_gradients: rounding='stochastic' needs key=")
    if not sr and key is not None:
        raise ValueError(f"quantize_gradients: key= is only used with rounding='stochastic' (got {rounding!r})")
    # validate the configuration once, eagerly (a bad format or mode fails here, not in update)
    probe = dict(key=jax.random.key(0)) if sr else {}
    _quantize(np.zeros((1,), np.float32), fmt, rounding, overflow, sr_bits=sr_bits, sr_method=sr_method, **probe)

    def init_fn(params):
        del params
        words = jax.random.key_data(_as_key(key)) if sr else jnp.zeros((2,), jnp.uint32)
        return QuantizeGradientsState(count=jnp.zeros((), jnp.uint32), key=words)

    def update_fn(updates, state, params=None):
        del params
        leaves, treedef = jax.tree.flatten(updates)
        step_key = jax.random.fold_in(_typed(state.key), state.count) if sr else None
        out = []
        for i, g in enumerate(leaves):
            g = jnp.asarray(g)
            _check_leaf_dtype(fmt, g.dtype, f"quantize_gradients: leaf {i}")
            kw = dict(key=jax.random.fold_in(step_key, i)) if sr else {}
            q = _quantize(g, fmt, rounding, overflow, sr_bits=sr_bits, sr_method=sr_method, ste="none", **kw)
            out.append(_as_dtype(q, g.dtype))
        return jax.tree.unflatten(treedef, out), QuantizeGradientsState(count=state.count + jnp.uint32(1),
                                                                       key=state.key)

    return optax.GradientTransformation(init_fn, update_fn)


# ------------------------------------------------------------------------------ apply_updates


def apply_updates(params, updates, fmt, *, key=None, rounding="stochastic", overflow=None, sr_bits=None,
                  sr_method="add"):
    """``params + updates``, each sum exact and rounded once to ``fmt`` (:func:`emul_jax.add`).

    The replacement for ``optax.apply_updates`` when weights are stored in a low-precision format:
    leaf ``i`` (the order of ``jax.tree.leaves(params)``) becomes
    ``emul_jax.add(p, u, fmt, rounding, overflow, key=fold_in(key, i), ...)``, which equals
    ``emul.add(p, u, fmt, rounding, key=emul.random.fold_in(key, i))`` bit for bit. ``key`` is
    required for stochastic rounding (use a fresh one per step) and must be ``None`` otherwise.
    ``None`` params stay ``None``; the result of a leaf has the param's dtype (float32, or
    float16/bfloat16 when ``fmt`` fits it). The sum carries no gradient information (the
    update is not differentiated).

    >>> import jax.numpy as jnp, emul_jax
    >>> p, u = jnp.array([1.0]), jnp.array([2.0**-8 + 2.0**-30])
    >>> apply_updates(p, u, "bf16", rounding="nearest_even")   # exact sum, rounded once
    Array([1.0078125], dtype=float32)
    >>> emul_jax.quantize(p + u, "bf16")   # the float32 sum is a bf16 tie, rounded again: to even
    Array([1.], dtype=float32)
    """
    fmt = _format(fmt) if isinstance(fmt, str) else fmt
    sr = _stochastic(rounding)
    if sr and key is None:
        raise ValueError("apply_updates: rounding='stochastic' needs key= (a fresh key per step)")
    if not sr and key is not None:
        raise ValueError(f"apply_updates: key= is only used with rounding='stochastic' (got {rounding!r})")
    base = _as_key(key) if sr else None
    p_leaves, treedef = jax.tree.flatten(params, is_leaf=lambda x: x is None)
    u_leaves = treedef.flatten_up_to(updates)
    out = []
    index = 0
    for p, u in zip(p_leaves, u_leaves):
        if p is None:
            out.append(None)
            continue
        p = jnp.asarray(p)
        _check_leaf_dtype(fmt, p.dtype, f"apply_updates: leaf {index}")
        kw = dict(key=jax.random.fold_in(base, index)) if sr else {}
        s = _add(lax.stop_gradient(p), lax.stop_gradient(jnp.asarray(u)), fmt, rounding, overflow,
                 sr_bits=sr_bits, sr_method=sr_method, ste="none", **kw)
        out.append(_as_dtype(s, p.dtype))
        index += 1
    return jax.tree.unflatten(treedef, out)

"""Checks at the public boundary: arrays in, clear errors out."""

from __future__ import annotations

import numpy as np


def numeric_array(x, name="x") -> np.ndarray:
    """x as a native-byte-order array of float16/32/64, int64 or uint64 (exact; never rounds).

    Smaller integers widen to int64, bools to int64. Complex, object, string and extended-precision
    arrays raise TypeError naming the dtype.
    """
    try:
        a = np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name}: cannot be read as a numeric array ({exc})") from None
    kind = a.dtype.kind
    if kind == "f":
        if a.dtype.itemsize not in (2, 4, 8):
            raise TypeError(f"{name}: dtype {a.dtype} is not supported; use float16, float32 or float64")
        return a.astype(a.dtype.newbyteorder("="), copy=False)
    if kind in "iub":
        if a.dtype == np.uint64 or (kind == "u" and a.dtype.itemsize == 8):
            return a.astype(np.uint64, copy=False)
        return a.astype(np.int64, copy=False)
    raise TypeError(f"{name}: dtype {a.dtype} is not numeric (expected float16/32/64 or an integer dtype)")


def random_words(random_bits, shape, sr_bits) -> np.ndarray:
    """User random bits broadcast to ``shape``, checked to lie in [0, 2**sr_bits), as flat uint32."""
    a = np.asarray(random_bits)
    if a.dtype.kind not in "iu":
        raise TypeError(f"random_bits: dtype {a.dtype} is not an integer dtype")
    try:
        a = np.broadcast_to(a, shape)
    except ValueError:
        raise ValueError(f"random_bits: shape {np.shape(random_bits)} does not broadcast to the result shape {shape}") from None
    if a.size:
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi >= 1 << sr_bits:
            bad = lo if lo < 0 else hi
            raise ValueError(f"random_bits: value {bad} is outside [0, 2**{sr_bits}) for sr_bits={sr_bits}")
    return np.ascontiguousarray(a, dtype=np.uint32).reshape(-1)

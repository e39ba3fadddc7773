"""Checks at the public boundary: arrays in, clear errors out."""

from __future__ import annotations

import numpy as np


def numeric_array(x, name="x") -> np.ndarray:
    """x as a native-byte-order array of float16/32/64, int64 or uint64 (exact; never rounds).

    Smaller integers widen to int64, bools to int64; ml_dtypes arrays (bfloat16, float8_*, int4, …)
    to float32 / int64 with the same values. Complex, object, string and extended-precision arrays
    raise TypeError naming the dtype.
    """
    try:
        a = np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name}: cannot be read as a numeric array ({exc})") from None
    a = widen_ml_dtypes(a)  # bfloat16, float8_*, int4, ...: the same values as float32 / int64
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


# ------------------------------------------------------------------------------ friendlier inputs

# ml_dtypes / NumPy dtype names -> emul format names (float8_e4m3fn -> e4m3fn, ...)
DTYPE_FORMATS = {
    "float16": "fp16", "float32": "fp32", "float64": "fp64", "bfloat16": "bf16",
    "float8_e4m3fn": "e4m3fn", "float8_e4m3fnuz": "e4m3fnuz", "float8_e5m2": "e5m2", "float8_e5m2fnuz": "e5m2fnuz",
    "float8_e4m3": "e4m3", "float8_e3m4": "e3m4", "float8_e4m3b11fnuz": "e4m3b11fnuz", "float8_e8m0fnu": "e8m0",
    "float6_e2m3fn": "e2m3fn", "float6_e3m2fn": "e3m2fn", "float4_e2m1fn": "e2m1fn",
    **{f"{s}int{n}": f"{s}int{n}" for s in ("", "u") for n in (1, 2, 4, 8, 16, 32, 64)},
}
# other spellings people type -> the name emul uses (offered as "did you mean", never guessed)
FORMAT_ALIASES = {"half": "fp16", "single": "fp32", "double": "fp64", "float": "fp32", "bfloat": "bf16",
                  "fp8": "e4m3fn", "fp4": "e2m1fn", "fp6": "e2m3fn", "tf32": "tf32", "tensorfloat32": "tf32",
                  "float8": "e4m3fn", "mxfp8": "e4m3fn", "mxfp4": "e2m1fn", "nvfp4": "e2m1fn",
                  "e4m3fn_nosub": "e4m3fn-nosub", **DTYPE_FORMATS}
ROUNDING_ALIASES = {"rne": "nearest_even", "rn": "nearest_even", "nearest": "nearest_even", "even": "nearest_even",
                    "round_nearest_even": "nearest_even", "half_even": "nearest_even", "bankers": "nearest_even",
                    "rna": "nearest_away", "half_away": "nearest_away", "round_half_away": "nearest_away",
                    "rtz": "toward_zero", "trunc": "toward_zero", "truncate": "toward_zero", "chop": "toward_zero",
                    "rz": "toward_zero", "towards_zero": "toward_zero", "rtp": "up", "ceil": "up", "ceiling": "up",
                    "ru": "up", "rtn": "down", "floor": "down", "rd": "down", "raz": "away_from_zero",
                    "sr": "stochastic", "random": "stochastic", "rto": "odd", "jam": "odd", "von_neumann": "odd",
                    "round_to_odd": "odd"}
OVERFLOW_ALIASES = {"sat": "saturate", "clamp": "saturate", "clip": "saturate", "saturating": "saturate",
                    "inf": "ieee", "infinity": "ieee", "nan": "ieee", "modular": "wrap", "modulo": "wrap",
                    "wraparound": "wrap", "wrapping": "wrap", "symmetric": "saturate_symmetric"}


def did_you_mean(value, choices, aliases=None) -> str:
    """`` (did you mean 'x'?)`` for an unknown name: an alias's target, else the closest of
    ``choices`` (difflib), else an empty string."""
    import difflib

    if not isinstance(value, str):
        return ""
    key = value.strip().lower()
    for k in (key, key.replace("-", "_"), key.replace(" ", "_")):
        if aliases and k in aliases:
            return f" (did you mean {aliases[k]!r}?)"
    close = difflib.get_close_matches(key, list(choices), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


def dtype_format_name(obj):
    """The emul format name of a NumPy or ml_dtypes dtype (or scalar type), or None when ``obj``
    is not a dtype or has no matching format."""
    if isinstance(obj, str):
        return None
    try:
        dt = np.dtype(obj)
    except TypeError:
        return None
    return DTYPE_FORMATS.get(dt.name)


def ml_dtypes_kind(dt):
    """'float' or 'int' for an ml_dtypes dtype (bfloat16, float8_*, int4, ...), else None."""
    if dt.kind not in "fV" or dt.type in (np.float16, np.float32, np.float64, np.longdouble):
        return None  # NumPy's own (float8_e5m2 and friends report kind 'f' too)
    try:
        import ml_dtypes
    except ImportError:
        return None
    for kind, info in (("float", ml_dtypes.finfo), ("int", ml_dtypes.iinfo)):
        try:
            info(dt)
            return kind
        except Exception:
            pass
    return None


def widen_ml_dtypes(a: np.ndarray) -> np.ndarray:
    """An ml_dtypes array as a NumPy one holding the same values exactly: floats (bfloat16,
    float8_*, float6_*, float4_*, float8_e8m0fnu) as float32 — bfloat16 from its bits, the others
    by ml_dtypes' conversion (integer operations, exact: every value of these formats is a float32)
    — and integers (int4, uint2, …) as int64. Other arrays pass through."""
    kind = ml_dtypes_kind(a.dtype)
    if kind == "int":
        return a.astype(np.int64)
    if kind == "float":
        if a.dtype.name == "bfloat16":
            return (np.ascontiguousarray(a).view(np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)
        return a.astype(np.float32)
    return a

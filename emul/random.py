"""Explicit randomness: JAX-compatible Threefry keys and models of hardware LFSR bit sources.

A key is a ``numpy.uint32`` array of shape (2,). ``key``, ``fold_in``, ``split`` and ``bits``
reproduce ``jax.random`` (``threefry2x32``, ``jax_threefry_partitionable=True``, x64 off) bit
for bit. All of them are Threefry-2x32 applied to a 64-bit counter ``c``, split into the pair
(c >> 32, c & 0xFFFFFFFF):

* ``split(k, n)[i]`` is the pair ``threefry2x32(k, c=i)``;
* ``fold_in(k, d)`` is ``threefry2x32(k, c=d mod 2**32)``, i.e. ``split(k, 2**32)[d]``;
* ``bits(k, shape).flat[i]`` is ``y0 ^ y1`` of ``threefry2x32(k, c=i)`` (C order).

Every word depends only on the key and its own index, so results never depend on thread count,
chunking or memory layout. ``lfsr`` models Fibonacci and Galois shift registers (see its
docstring and docs/random.md). Importing this module imports neither JAX nor compiles anything.
"""

import math
import sys

import numpy as np


__all__ = ["key", "fold_in", "split", "bits", "lfsr"]

_M32 = 0xFFFFFFFF


# ----------------------------------------------------------------------------- validation


def _int(x, name):
    """Python int from an int or NumPy integer (bools rejected)."""
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)):
        raise TypeError(f"{name}={x!r}: expected an integer, got {type(x).__name__}")
    return int(x)


def _shape(shape):
    """Normalise an int or a sequence of ints to a tuple of non-negative ints."""
    dims = (shape,) if isinstance(shape, (int, np.integer)) else shape
    try:
        dims = tuple(_int(d, "shape") for d in dims)
    except TypeError:
        raise TypeError(
            f"shape={shape!r}: expected an int or a tuple of ints"
        ) from None
    if any(d < 0 for d in dims):
        raise ValueError(f"shape={shape!r}: dimensions must be non-negative")
    return dims


def _is_jax(obj):
    return type(obj).__module__.split(".")[0] in ("jax", "jaxlib") and "jax" in sys.modules


def _jax_key_data(obj):
    """A JAX array as NumPy; typed threefry keys are unwrapped with ``key_data``."""
    jax = sys.modules["jax"]
    if jax.dtypes.issubdtype(obj.dtype, jax.dtypes.prng_key):
        impl = str(jax.random.key_impl(obj))
        if impl != "threefry2x32":
            raise ValueError(f"key: JAX key with impl {impl!r}; only 'threefry2x32' is supported")
        obj = jax.random.key_data(obj)
    return np.asarray(obj)


def _seed_key(seed):
    return np.array([0, _int(seed, "seed") & _M32], dtype=np.uint32)


def _as_key(key=None, seed=None):
    """Normalise ``key=`` or ``seed=`` (exactly one) to a fresh ``numpy.uint32`` array of shape (2,).

    ``seed``: an integer, meaning ``key(seed)``. ``key``: two integer words in [0, 2**32) as a
    NumPy array or sequence, a JAX ``uint32[2]`` array, or a JAX typed key (``jax.random.key``,
    threefry2x32 implementation). JAX is never imported here; JAX objects are recognised by type.
    """
    if key is None and seed is None:
        raise ValueError("key, seed: give one of them (a key array or an integer seed)")
    if key is not None and seed is not None:
        raise ValueError("key, seed: give one of them, not both")
    if seed is not None:
        return _seed_key(seed)
    a = _jax_key_data(key) if _is_jax(key) else np.asarray(key)
    if a.dtype.kind not in "iu":
        raise TypeError(f"key: expected 2 uint32 words, got dtype {a.dtype}")
    if a.shape != (2,):
        hint = " (use emul.random.key(seed) for an integer seed)" if a.ndim == 0 else ""
        raise ValueError(f"key: expected 2 uint32 words, got shape {a.shape}{hint}")
    if a.dtype != np.uint32 and not ((a >= 0).all() and (a <= _M32).all()):
        raise ValueError(f"key: words must be in [0, 2**32), got {a.tolist()}")
    return a.astype(np.uint32)


# ----------------------------------------------------------------------------- Threefry API


def _pairs(k, first, n):
    out = np.empty((n, 2), dtype=np.uint32)
    from ._kernels import threefry as _k  # Numba loads on first use

    _k.threefry_pairs(k[0], k[1], np.int64(first), out)
    return out


_BITS_THREADS_MIN = 1 << 19  # words: below this one thread (waking a pool thread costs ~60-80 us here)


def _bits_flat(k, n):
    """``uint32[n]`` of Threefry bits for a normalised key ``k`` (``numpy.uint32[2]``).

    Word i is ``y0 ^ y1`` of ``threefry2x32(k, (i >> 32, i & 0xFFFFFFFF))``; this is
    ``bits(k, n)`` without validation, for other modules' wrappers. Large calls fill slices of
    the array on the thread pool (each word depends only on its index, so the split never
    changes a word).
    """
    from ._kernels import threefry as _k  # Numba loads on first use
    from ._threads import prefault, run_slices, threads_pay

    out = np.empty(n, dtype=np.uint32)
    threads = n >= _BITS_THREADS_MIN and threads_pay()
    if threads:
        prefault(out)
    k0, k1 = k[0], k[1]
    run_slices(lambda lo, hi: _k.threefry_bits(k0, k1, out[lo:hi], lo), n, None if threads else 1,
               align=_k.BITS_BLOCK)
    return out


def key(seed):
    """The key of an integer seed: ``uint32[2] = [0, seed mod 2**32]``.

    Equals ``jax.random.key_data(jax.random.key(seed))`` with x64 off (JAX's default) for every
    seed JAX accepts; negative seeds wrap like int32. Larger ints are also reduced mod 2**32.
    """
    return _seed_key(seed)


def fold_in(key, data):
    """A new key from ``key`` and an integer: ``threefry2x32(key, (0, data mod 2**32))``.

    Equals ``jax.random.fold_in`` (which rejects Python ints outside [0, 2**32) but wraps
    NumPy integers the same way).
    """
    return _pairs(_as_key(key), _int(data, "data") & _M32, 1)[0]


def split(key, n=2):
    """``n`` new keys as ``uint32[n, 2]``: row i is ``threefry2x32(key, (i >> 32, i & 0xFFFFFFFF))``.

    Equals ``jax.random.key_data(jax.random.split(key, n))``.
    """
    n = _int(n, "n")
    if n < 0:
        raise ValueError(f"n={n}: must be non-negative")
    return _pairs(_as_key(key), 0, n)


def bits(key, shape=()):
    """Uniform random ``uint32`` words of ``shape`` (an int or a tuple; () and 0-size allowed).

    Word i in C order is ``y0 ^ y1`` with ``(y0, y1) = threefry2x32(key, (i >> 32, i & 0xFFFFFFFF))``.
    Equals ``jax.random.bits(key, shape, jnp.uint32)``. Runs in parallel; the result does not
    depend on the number of threads.
    """
    shape = _shape(shape)
    return _bits_flat(_as_key(key), math.prod(shape)).reshape(shape)


# ----------------------------------------------------------------------------- LFSR


def lfsr(shape, *, width, taps, seed, r=None, kind="fibonacci", output="state"):
    """r-bit words from one hardware linear-feedback shift register, as ``random_bits``.

    The register holds ``width`` bits s_0 (LSB) .. s_{width-1}, initially ``seed``
    (1 <= seed < 2**width). ``taps`` are 1-based positions as in the classic tables
    (e.g. width 16, taps (16, 14, 13, 11)); they must be distinct, in 1..width, and include
    ``width``. One step, whose output bit is s_0 before the step:

    * ``kind="fibonacci"``: f = XOR of s_{width-t} over taps t; s = (s >> 1) | (f << (width-1)).
    * ``kind="galois"``: b = s_0; s = s >> 1; if b: s ^= sum(2**(t-1) over taps t).

    Word i of the flat C-order result:

    * ``output="state"`` (1 <= r <= width): the low r bits of the state after i + 1 steps
      (the seed itself is not emitted).
    * ``output="serial"`` (1 <= r <= 64): the output bits of steps i*r + 1 .. i*r + r, the first
      as the MSB (so the first word starts with bit s_0 of the seed).

    ``r`` defaults to ``width``. Returns ``uint32`` when r <= 32, else ``uint64``.
    """
    shape = _shape(shape)
    width = _int(width, "width")
    if not 1 <= width <= 64:
        raise ValueError(f"width={width}: must be between 1 and 64")
    if isinstance(taps, (int, np.integer)):
        raise TypeError(f"taps={taps!r}: expected a sequence of tap positions, e.g. (16, 14, 13, 11)")
    taps = tuple(_int(t, "taps") for t in taps)
    if not taps or any(not 1 <= t <= width for t in taps):
        raise ValueError(f"taps={taps}: must be a non-empty sequence of positions in 1..{width}")
    if len(set(taps)) != len(taps):
        raise ValueError(f"taps={taps}: positions must be distinct")
    if width not in taps:
        raise ValueError(f"taps={taps}: must include the width {width} (the x**{width} term)")
    seed = _int(seed, "seed")
    if not 1 <= seed < 2**width:
        raise ValueError(f"seed={seed}: must be between 1 and 2**{width} - 1")
    if kind not in ("fibonacci", "galois"):
        raise ValueError(f"kind={kind!r}: must be 'fibonacci' or 'galois'")
    if output not in ("state", "serial"):
        raise ValueError(f"output={output!r}: must be 'state' or 'serial'")
    r_max = width if output == "state" else 64
    r = width if r is None else _int(r, "r")
    if not 1 <= r <= r_max:
        raise ValueError(f"r={r}: must be between 1 and {r_max} for output={output!r}")

    galois = kind == "galois"
    mask = sum(1 << (t - 1) if galois else 1 << (width - t) for t in taps)
    out = np.empty(math.prod(shape), dtype=np.uint32 if r <= 32 else np.uint64)
    u64 = np.uint64
    from ._kernels import threefry as _k  # Numba loads on first use

    _k.lfsr_words(u64(seed), galois, u64(mask), u64(width - 1), u64(r), output == "serial", out)
    return out.reshape(shape)

"""Fill Numba's on-disk cache before first use: ``emul warmup`` (or :func:`warmup`).

emul's kernels are compiled by Numba on their first call in a fresh install and cached on disk
(``cache=True``, in the package's ``__pycache__`` folders or ``$NUMBA_CACHE_DIR``); later processes
load them in milliseconds. The first call of each operation in a new install therefore waits for
the compiler (seconds per operation). :func:`warmup` makes those first calls on tiny inputs, one
group of operations at a time, so that a test-vector run or a benchmark starts warm. It changes no
result: the calls' outputs are discarded, and nothing but the compiled code is kept.
"""

from __future__ import annotations

import time

import numpy as np

__all__ = ["GROUPS", "warmup"]


def _encode():
    from .quantize import decode, encode, quantize

    for dt in (np.float32, np.float64, np.float16):
        x = np.linspace(-3, 3, 64).astype(dt)
        for fmt in ("e4m3fn", "e5m2", "bf16", "fp16", "int8", "fx<16,8>"):
            encode(x, fmt)
        encode(x, "e4m3fn", "stochastic", seed=0, sr_bits=8)
        encode(x, "e4m3fn", "toward_zero")
    quantize(np.arange(8.0), "e2m1fn", overflow="saturate")
    decode(np.arange(256, dtype=np.uint8), "e4m3fn")
    decode(np.arange(256, dtype=np.uint8), "e5m2")


def _arith():
    from . import arith

    a = np.linspace(-2, 2, 32)
    b = np.linspace(0.5, 3, 32)
    for fmt in ("fp16", "bf16", "e4m3fn", "e5m2"):
        for rounding in ("nearest_even", "toward_zero"):
            for op in (arith.add, arith.sub, arith.mul, arith.div):
                op(a, b, fmt, rounding)
            arith.fma(a, b, a, fmt, rounding)
            arith.sqrt(b, fmt, rounding)
        arith.mul(a, b, fmt, "stochastic", seed=0, sr_bits=8)


def _accumulate():
    from .accumulate import dot, matmul

    rng = np.random.default_rng(0)
    a = rng.standard_normal((4, 16)).astype(np.float32)
    b = rng.standard_normal((16, 3)).astype(np.float32)
    for order in ("sequential", "pairwise"):
        matmul(a, b, "e4m7", order=order)
        matmul(a, b, "bf16", order=order)
    matmul(a, b, "e4m7", order="chunked", chunk=4)
    matmul(a, b, "e4m7", rounding="stochastic", seed=0, sr_bits=8)
    ai = rng.integers(-128, 128, (4, 16))
    bi = rng.integers(-128, 128, (16, 3))
    for overflow in ("saturate", "wrap"):
        matmul(ai, bi, "int12", overflow=overflow)
    dot(a, a, "e4m7", axis=-1)


def _sparsity():
    from . import sparsity

    g = np.random.default_rng(0).standard_normal((8, 16)).astype(np.float32)
    sparsity.nm_mask(g, 2, 4)
    sparsity.mvue(g, 2, 4, seed=0)
    sparsity.mvue(g, 2, 4, seed=0, method="approx")
    sparsity.transposable_mask(g[:, :8], 2, 4)
    sparsity.transposable_mask(g[:, :8], 4, 8, method="greedy")


def _blocks():
    from . import blocks

    x = np.random.default_rng(0).standard_normal((4, 64))
    for name in ("mxfp8_e4m3", "mxfp4", "nvfp4"):
        blocks.quantize(x, name)
    for dt in (np.float32, np.float64):
        scales, codes = blocks.encode(x.astype(dt), "mxfp8_e4m3")
    blocks.decode(scales, codes, "mxfp8_e4m3")
    blocks.matmul(x, x.T, "mxfp8_e4m3", acc="fp32")


def _vectors():
    from . import vectors

    for op, settings in (("mul", dict(fmt="e5m2", sets="exhaustive")),
                         ("add", dict(fmt="e4m3fn")),
                         ("quantize", dict(fmt="e4m3fn", count=8)),
                         ("mac", dict(fmt="int8", acc="int12", count=4)),
                         ("dot", dict(fmt="e4m3fn", acc="e4m7", count=4))):
        vectors.generate(op, **settings).to_bytes()


#: The groups :func:`warmup` compiles, in order: name -> what it calls.
GROUPS = {"encode": _encode, "arith": _arith, "accumulate": _accumulate, "sparsity": _sparsity,
          "blocks": _blocks, "vectors": _vectors}


def warmup(groups=None, progress=None) -> list[tuple[str, float]]:
    """Compile (or load from the cache) the kernels of ``groups`` (names of :data:`GROUPS`; all by
    default) by calling each operation once on tiny inputs; return ``(group, seconds)`` per group.

    ``progress``, if given, is called with each group's name before it runs. A second warm-up in a
    new process only loads the cache: it takes a fraction of a second per group.
    """
    names = list(GROUPS) if groups is None else list(groups)
    unknown = [g for g in names if g not in GROUPS]
    if unknown:
        raise ValueError(f"unknown warm-up group(s) {unknown}: choose from {list(GROUPS)}")
    timings = []
    for name in names:
        if progress is not None:
            progress(name)
        start = time.perf_counter()
        GROUPS[name]()
        timings.append((name, time.perf_counter() - start))
    return timings

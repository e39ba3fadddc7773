"""Numba kernels for ``emul.random``: Threefry-2x32 counters and LFSR stepping.

Kernels take plain integers and preallocated arrays; validation lives in ``emul.random``.
Nothing is compiled at import time (no signatures are given), and compiled code is cached.

Arithmetic note: Numba widens ``uint32 op uint32`` to 64 bits, so every Threefry result is
truncated back with ``np.uint32(...)``; this is exact modular arithmetic and lets LLVM
vectorise the element loop. LFSR state is kept in ``uint64`` and only ever combined with
``uint64`` operands (mixing with signed ints would promote to float64).
"""

import numpy as np
from numba import njit

from .draw import draw

_U32 = np.uint32
_U64 = np.uint64
_ONE = np.uint64(1)
_KS_PARITY = 0x1BD11BDA  # Threefry-2x32 key-schedule parity constant


# --------------------------------------------------------------------------------------------
# Threefry-2x32, 20 rounds (Salmon et al., SC'11), as used by JAX.
# --------------------------------------------------------------------------------------------


@njit(cache=True, inline="always")
def _mix(x0, x1, r):
    """One round: x0 += x1; x1 = rotl32(x1, r) ^ x0."""
    x0 = _U32(x0 + x1)
    x1 = _U32((x1 << _U32(r)) | (x1 >> _U32(32 - r))) ^ x0
    return x0, x1


@njit(cache=True, inline="always")
def _mix4(x0, x1, r0, r1, r2, r3):
    x0, x1 = _mix(x0, x1, r0)
    x0, x1 = _mix(x0, x1, r1)
    x0, x1 = _mix(x0, x1, r2)
    return _mix(x0, x1, r3)


@njit(cache=True, inline="always")
def threefry2x32(k0, k1, x0, x1):
    """Threefry-2x32 of the counter pair (x0, x1) under key (k0, k1); all uint32."""
    k2 = _U32(k0 ^ k1 ^ _U32(_KS_PARITY))
    x0, x1 = _U32(x0 + k0), _U32(x1 + k1)
    x0, x1 = _mix4(x0, x1, 13, 15, 26, 6)
    x0, x1 = _U32(x0 + k1), _U32(x1 + k2 + _U32(1))
    x0, x1 = _mix4(x0, x1, 17, 29, 16, 24)
    x0, x1 = _U32(x0 + k2), _U32(x1 + k0 + _U32(2))
    x0, x1 = _mix4(x0, x1, 13, 15, 26, 6)
    x0, x1 = _U32(x0 + k0), _U32(x1 + k1 + _U32(3))
    x0, x1 = _mix4(x0, x1, 17, 29, 16, 24)
    x0, x1 = _U32(x0 + k1), _U32(x1 + k2 + _U32(4))
    x0, x1 = _mix4(x0, x1, 13, 15, 26, 6)
    return _U32(x0 + k2), _U32(x1 + k0 + _U32(5))


BITS_BLOCK = 1 << 16  # words per draw call (a divisor of 2**32: no block crosses a multiple of it)


@njit(cache=True, nogil=True)
def threefry_bits(k0, k1, out, first):
    """out[i] = y0 ^ y1 with (y0, y1) = threefry2x32(k, (c >> 32, c & 0xFFFFFFFF)), c = first + i.

    ``out`` is a 1-D uint32 array; each word depends only on its counter, so slices of one array
    can be filled on several threads (``first`` a multiple of BITS_BLOCK). The words are made in
    blocks that never cross a multiple of 2**32 by the SR encode kernels' word loop (draw.draw:
    32-bit vector lanes, four chains in flight), ~1.4x faster per word than this module's scalar
    threefry2x32.
    """
    lo = 0
    while lo < out.size:
        n = min(BITS_BLOCK, out.size - lo)
        draw(out[lo:lo + n], _U32(k0), _U32(k1), first + lo, n, 0)
        lo += n


@njit(cache=True)
def threefry_pairs(k0, k1, first, out):
    """out[j] = threefry2x32(k, (c >> 32, c & 0xFFFFFFFF)) with c = first + j; out is (n, 2)."""
    for j in range(out.shape[0]):
        c = first + j
        out[j, 0], out[j, 1] = threefry2x32(k0, k1, _U32(c >> 32), _U32(c & 0xFFFFFFFF))


# --------------------------------------------------------------------------------------------
# LFSRs. State s (uint64, bits s_0 = LSB ... s_{w-1}); the output bit of a step is s_0.
# --------------------------------------------------------------------------------------------


@njit(cache=True, inline="always")
def _parity(x):
    x ^= x >> _U64(32)
    x ^= x >> _U64(16)
    x ^= x >> _U64(8)
    x ^= x >> _U64(4)
    x ^= x >> _U64(2)
    x ^= x >> _U64(1)
    return x & _ONE


@njit(cache=True, inline="always")
def _lfsr_step(s, galois, mask, top):
    """One step; returns (new state, output bit = old s_0).

    Fibonacci: s' = (s >> 1) | (parity(s & mask) << top)   (mask: tapped bits, top = w - 1)
    Galois:    s' = (s >> 1) ^ (mask if s_0 else 0)       (mask: toggle mask)
    """
    b = s & _ONE
    if galois:
        s = (s >> _ONE) ^ (mask * b)
    else:
        s = (s >> _ONE) | (_parity(s & mask) << top)
    return s, b


@njit(cache=True)
def lfsr_words(seed, galois, mask, top, r, serial, out):
    """Fill 1-D ``out`` with r-bit words from one LFSR stream started at ``seed``.

    serial=False: out[i] = low r bits of the state after i + 1 steps.
    serial=True:  out[i] = output bits of steps i*r+1 .. i*r+r, the first one as the MSB.
    All integer arguments are uint64; ``out`` is uint32 or uint64.
    """
    low = (_ONE << r) - _ONE if r < _U64(64) else ~_U64(0)
    s = seed
    for i in range(out.size):
        if serial:
            word = _U64(0)
            for _ in range(r):
                s, b = _lfsr_step(s, galois, mask, top)
                word = (word << _ONE) | b
        else:
            s, b = _lfsr_step(s, galois, mask, top)
            word = s & low
        out[i] = word

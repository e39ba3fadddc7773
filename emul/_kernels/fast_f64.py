"""Fast path: float64 inputs, every rounding mode (stochastic included), float formats with
emin >= -1022 and man_bits <= 52.

The technique of :mod:`emul._kernels.fast_f32` on float64 bit patterns in 64-bit integer lanes.
With ``a = |bits|`` (uint64) and ``S = 52 - man_bits``, an input whose magnitude lies between the
format's min normal and its max (``FAST_LO <= a <= FAST_LO + FAST_SPAN`` on the patterns) rounds
to a target normal that cannot overflow in any mode, by the **short formula**:

- deterministic modes: ``t = a + inc`` with ``inc = (mask + r) >> 1`` for nearest modes and
  ``r ? mask : 0`` for directed ones (``mask = 2**S - 1``, ``r = k0 ^ (ks & sign) ^ (kl & lsb)``,
  ``lsb`` the kept code's last bit: bit ``S`` of ``a``, flipped when ``C0`` is odd), computed as
  ``base + (r ? mul : 0)``: ``base = mask >> 1, mul = 1`` (nearest; ``mul = 0`` when ``S = 0``)
  or ``base = 0, mul = mask`` (directed);
- stochastic rounding with word ``u`` (``r`` bits): ``t = a + (u << (S - r))`` for ``"add"``
  (``t + u >= 2**r`` carries into bit ``S`` exactly when the discarded fraction ``f`` has
  ``floor(f * 2**r) + u >= 2**r``), ``2**r - 1 - u`` in place of ``u`` for ``"compare"``; when
  ``r > S`` the word is shifted right by ``r - S`` instead (its dropped low bits cannot complete a
  carry that ``a``'s integer fraction needs);
- the code is ``(t >> S) - C0`` with ``C0 = (1023 - bias) << man_bits`` (a carry into the exponent
  field is automatically right) plus the sign bit; the value is ``t`` with its ``S`` low bits
  cleared, plus the sign.

Every other input ("rare": below min normal, above max, ±0, inf, NaN) is rounded by the general
kernel's own per-element code (:func:`emul._kernels.round.round_one`, the oracle) with the same
word. Blocks of ``BLOCK`` elements run the short formula (vectorised); a block that holds a rare
element then redoes just those elements. Each element's result depends only on itself and its
word, so chunking and thread count never change a result.

SR words: ``random_bits`` arrive as a flat uint32 array; for ``seed``/``key`` element ``i`` uses
``bits(key, (n,))[i] >> (32 - r)`` drawn per block (Threefry-2x32 in 32-bit lanes), as
:func:`emul._kernels.round.round_seeded` does.

Kernels take ``x`` (the uint64 view of the flat float64 input), the uint64 constant vector of
:func:`constants`, the parameter tuple ``P`` of :mod:`emul._params`, and write codes (``uint8`` …
``uint64``) or float64 values (as their ``uint64`` patterns). They return the number of NaN inputs
when the format has no NaN (the caller raises).
"""

import numpy as np
from numba import njit

from .draw import draw
from .fast_fixed import _neg_mag
from .round import code_value, round_one

(S, MASK, KEEP, C0, SB, BASE, MUL, K0_N, KS, KL, FAST_LO, FAST_SPAN,
 DETM, SR_CMPX, SR_WM, SR_L, SR_RS, SR_SHIFT) = range(18)
NCONST = 18

BLOCK = 256       # elements per block of the short formula (64: 1.4x slower per thread)

_ABS = np.uint64(0x7FFFFFFFFFFFFFFF)
_0 = np.uint64(0)
_1 = np.uint64(1)
_63 = np.uint64(63)
_W0 = np.uint32(0)


def constants(P: tuple, fmt) -> np.ndarray:
    """The uint64 constant vector for P (:func:`emul._params.kernel_params` of a float format in
    this path's domain, any mode)."""
    from . import slots as K

    m, emin, bias = int(P[K.M]), int(P[K.EMIN]), int(fmt.bias)
    c0 = (1023 - bias) << m
    C = [0] * NCONST
    C[S] = 52 - m
    C[MASK] = (1 << C[S]) - 1
    C[KEEP] = ((1 << 64) - 1) ^ C[MASK]
    C[C0] = c0 % (1 << 64)
    C[SB] = 1 << (fmt.bits - 1)
    C[KS], C[KL] = int(P[K.KS]), int(P[K.KL])
    C[BASE], C[MUL] = (C[MASK] >> 1, 1 if C[S] else 0) if P[K.NEAREST] else (0, C[MASK])
    C[DETM] = 0 if P[K.SR] else (1 << 64) - 1
    C[K0_N] = int(P[K.K0]) ^ (int(P[K.KL]) & c0 & 1)  # the kept code's lsb is bit S of a, flipped when C0 is odd
    thr = (emin + 1023) << 52
    max_bits = int(np.float64(fmt.max).view(np.uint64))  # format max <= float64 max in this domain
    C[FAST_LO], C[FAST_SPAN] = (thr, max_bits - thr) if thr <= max_bits else (1 << 63, 0)
    if P[K.SR]:
        r, compare = int(P[K.SR_BITS]), bool(P[K.SR_CMP])
        mask_r = (1 << r) - 1
        C[SR_CMPX] = mask_r if compare else 0
        C[SR_WM] = mask_r if C[S] else 0  # S == 0: nothing is discarded, nothing added
        C[SR_L], C[SR_RS] = max(C[S] - r, 0), max(r - C[S], 0)
        C[SR_SHIFT] = 32 - r
    return np.array(C, np.uint64)


def in_domain(fmt) -> bool:
    """Whether the float format's grid is covered (emin >= -1022, man_bits <= 52, finite max)."""
    return fmt.emin >= -1022 and fmt.man_bits <= 52 and fmt.bits <= 64 and fmt.max <= np.finfo(np.float64).max


@njit(inline="always")
def _unpack(C):
    return (C[0], C[1], C[2], C[3], C[4], C[5], C[6], C[7], C[8], C[9], C[10], C[11], C[12], C[13],
            C[14], C[15], C[16], C[17])


@njit(inline="always")
def _short(b, k, w, sr):
    """(t, sign, rare) for the float64 pattern b by the short formula; ``sr`` (a compile-time
    flag): stochastic rounding with the word w (unread otherwise). The deterministic increment
    takes its mode from the constants (with 256-element blocks, 2.1x the elements per second of
    one formula with both increments masked together and 64-element blocks, on one thread)."""
    a = b & _ABS
    sign = b >> _63
    if sr:
        inc = (((np.uint64(w) ^ k[SR_CMPX]) & k[SR_WM]) << k[SR_L]) >> k[SR_RS]
    else:
        r = k[K0_N] ^ (k[KS] & sign) ^ (k[KL] & ((a >> k[S]) & _1))
        inc = k[BASE] + ((_0 - r) & k[MUL])
    rare = (a - k[FAST_LO]) > k[FAST_SPAN]
    return a + inc, sign, rare


@njit(inline="always")
def _span(x, k, P, out, lo, n, values, w, sr):
    """Round x[lo:lo + n] into out (w[j]: the SR word of element lo + j, read when ``sr``); return
    #NaN rejected."""
    any_rare = False
    for j in range(n):
        i = np.uintp(lo + j)  # an unsigned index: no negative-index wraparound, so no gathers
        t, sign, rare = _short(x[i], k, w[j] if sr else _W0, sr)
        if values:
            out[i] = (t & k[KEEP]) | (sign << _63)
        else:
            out[i] = ((t >> k[S]) - k[C0]) | (k[SB] & (_0 - sign))
        any_rare |= rare
    bad = 0
    if any_rare:
        for j in range(n):
            b = x[lo + j]
            if ((b & _ABS) - k[FAST_LO]) > k[FAST_SPAN]:
                res, nan = _general_one(b, np.uint64(w[j]) if sr else _0, P, values)
                out[lo + j] = res
                bad += nan
    return bad


@njit  # a plain call (not inlined at the Numba IR level): the general code is large and rarely run
def _general_one(b, u, P, values):
    """(code, or the value's float64 pattern when values; 1 if a rejected NaN) of the float64
    pattern b by the general kernel's per-element code (u: the SR word, unread without SR)."""
    code, bad = round_one(np.uint64(b).view(np.float64), u, P)
    if values:
        return np.float64(code_value(code, P)).view(np.uint64), np.int64(bad == 1)
    return code, np.int64(bad == 1)


@njit(inline="always")
def _chunk(x, k, P, out, lo, hi, u, key0, key1, seeded, values, base):
    """Round x[lo:hi] block by block; return #NaN rejected. x[i] is element base + i of the whole
    input (base a multiple of BLOCK). The words: u[i] (random_bits), threefry words of element
    base + i drawn per block when seeded, none without SR."""
    if k[DETM] != _0:  # deterministic modes: a loop that reads no words
        return _blocks(x, k, P, out, lo, hi, u, key0, key1, seeded, values, base, False)
    return _blocks(x, k, P, out, lo, hi, u, key0, key1, seeded, values, base, True)


@njit(inline="always")
def _blocks(x, k, P, out, lo, hi, u, key0, key1, seeded, values, base, sr):
    """_chunk's loop; ``sr`` a constant at each call."""
    buf = np.zeros(BLOCK, np.uint32)
    bad = 0
    for blo in range(lo, hi, BLOCK):
        n = min(BLOCK, hi - blo)
        if sr and seeded:
            draw(buf, key0, key1, base + blo, n, k[SR_SHIFT])
        elif sr:
            buf[:n] = u[blo:blo + n]
        if n == BLOCK:
            bad += _span(x, k, P, out, blo, BLOCK, values, buf, sr)
        else:
            bad += _span(x, k, P, out, blo, n, values, buf, sr)
    return bad


# -- kernels: x the flat uint64 view of the float64 input (elements base ... base + x.size - 1 of
# the whole input, base a multiple of BLOCK: seeded SR draws the words of those elements); out
# codes, or uint64 value patterns. They release the GIL: emul.quantize runs large inputs as slices
# on its thread pool (emul._threads.run_slices), with the same per-element results.

@njit(cache=True, nogil=True)
def encode_f64(x, C, P, u, key0, key1, seeded, out, base):
    """out[i] = the code of x[i] (u[i] or the threefry word of element base + i when seeded: SR
    words)."""
    return _chunk(x, _unpack(C), P, out, 0, x.size, u, key0, key1, seeded, False, base)


@njit(cache=True, nogil=True)
def quantize_f64(x, C, P, u, key0, key1, seeded, out, base):
    """out[i] = the float64 pattern of x[i] rounded."""
    return _chunk(x, _unpack(C), P, out, 0, x.size, u, key0, key1, seeded, True, base)


# -- int64 / uint64 inputs -------------------------------------------------------------------------

_11 = np.uint64(11)
_52 = np.uint64(52)
_1064 = np.uint64(1064)


@njit(cache=True)
def int_to_odd(x, out):
    """out[i] = the float64 pattern of the integer x[i] (int64 or uint64 array) rounded to odd at
    53 bits: the 53 leading bits of ``|x[i]|`` kept, the last of them set when a dropped bit is
    (exact below 2**53). Rounding that value once more to a format of at most 51 significant bits
    (man_bits <= 50) gives the correct rounding of x[i] (Boldo and Melquiond's round-to-odd);
    stochastic rounding with r bits reads the fraction's first r bits and whether the rest is zero,
    so it needs man_bits + r <= 51. Taken apart from the bits: ``|x| >> 11`` converts exactly and its
    exponent gives the bit length; the kept bits convert exactly; no float operation meets a
    subnormal, so flush-to-zero / denormals-are-zero cannot change a result."""
    for j in range(x.size):
        i = np.uintp(j)
        neg, mag = _neg_mag(x[i])
        hb = np.float64(mag >> _11).view(np.uint64) >> _52  # bit length of mag is hb - 1011 (mag >= 2**11)
        sh = hb - _1064 if hb > _1064 else _0               # bits dropped: bit length - 53
        mask = (_1 << sh) - _1
        p = np.float64(mag & ~mask).view(np.uint64) | np.uint64((mag & mask) != _0)
        out[i] = p | (np.uint64(neg) << _63)

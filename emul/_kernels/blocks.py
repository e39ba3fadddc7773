"""Numba kernels of emul.blocks: one block's scale from its exact amax, then each element rounded
once by the core's rounding (:func:`round.float_code` / :func:`round.fixed_code`).

The input is a C-contiguous (R, L) array (the block axis last); blocks are k consecutive elements
of a row, the last one possibly shorter. Values are read from their bits (``round.parts``), so a
power-of-two scale is an exponent shift and a general scale an exact 128-bit division
(``wide.div_frame``): no floating-point instruction touches a value and nothing rounds twice.
Each block depends only on its own elements and random words, so threads cannot change a bit.
"""

import numpy as np
from numba import njit
from numba.cpython.unsafe.numbers import leading_zeros

from . import round as R
from . import wide as W

_Z = np.uint64(0)
_1 = np.uint64(1)
_ALL = np.uint64(0xFFFFFFFFFFFFFFFF)

FLOOR, CEIL, EVEN, RCEIL = 0, 1, 2, 3


@njit(inline="always")
def block_amax(x, row, lo, hi):
    """(special, exponent, significand) of max |x| over x[row, lo:hi]: special is True when a NaN
    or ±inf is present; the amax is sig * 2**(exponent - 63) with sig's top bit set (sig = 0: all
    zeros)."""
    best_e = np.int64(0)
    best_s = _Z
    special = False
    for i in range(lo, hi):
        sign, mag, e, sp = R.parts(x[row, i])
        if sp != 0:
            special = True
        elif mag != _Z:
            n = np.int64(leading_zeros(mag))
            xe = e + 63 - n
            sig = mag << np.uint64(n)
            if best_s == _Z or xe > best_e or (xe == best_e and sig > best_s):
                best_e = xe
                best_s = sig
    return special, best_e, best_s


@njit(inline="always")
def pow2_exponent(xe, sig, rule, emax_elem, prec, sig_max):
    """The scale exponent e of a block with amax = sig * 2**(xe - 63) > 0 under a scale rule."""
    if rule == FLOOR:
        return xe - emax_elem
    if rule == CEIL:
        return xe - emax_elem + (0 if sig == np.uint64(1 << 63) else 1)
    if rule == EVEN:  # amax rounded to prec bits after the leading one, ties away, then floor
        half = _1 << np.uint64(62 - prec)
        return xe - emax_elem + (1 if sig > _ALL - half else 0)
    # RCEIL: the least e with amax / 2**e <= element max
    return xe - emax_elem + (1 if sig > sig_max else 0)


@njit(cache=True, nogil=True)
def encode_pow2(k, S, PE, x, u, scales, codes):
    """Power-of-two (exponent-only) scales of the rows of x (the caller runs slices of the rows on
    threads: every block depends on its own row only). S: (rule, emax_elem, prec, sig_max, scale
    emin, scale emax, scale bias, scale NaN code, saturate scale overflow?, element NaN-block
    code). u: the rows' SR words (or a (1, 1) placeholder without SR)."""
    rows = x.shape[0]
    nb = scales.shape[1]
    for t in range(rows * nb):
        pow2_block(t, x, u, k, S, PE, scales, codes)


@njit
def pow2_block(t, x, u, k, S, PE, scales, codes):
    """Block t (row-major over rows x blocks) with a power-of-two scale."""
    L = x.shape[1]
    nb = scales.shape[1]
    rule, emax_elem, prec = S[0], S[1], S[2]
    sig_max = np.uint64(S[3])
    semin, semax, sbias, snan, ssat, enan = S[4], S[5], S[6], S[7], S[8], S[9]
    sr = PE[R.SR] != 0
    row = t // nb
    b = t - row * nb
    lo = b * k
    hi = min(lo + k, L)
    special, xe, sig = block_amax(x, row, lo, hi)
    nan_block = special
    e = semin
    if not special and sig != _Z:
        e = pow2_exponent(xe, sig, rule, emax_elem, prec, sig_max)
        if e < semin:
            e = semin
        elif e > semax:
            if ssat:
                e = semax
            else:
                nan_block = True
    if nan_block:
        scales[row, b] = snan
        for i in range(lo, hi):
            codes[row, i] = enan
        return
    scales[row, b] = e + sbias
    for i in range(lo, hi):
        sign, mag, ex, sp = R.parts(x[row, i])
        w = np.uint64(u[row, i]) if sr else _Z
        if PE[R.KIND] == 0:
            codes[row, i] = R.float_code(sign, mag, ex - e, False, w, PE)
        else:
            codes[row, i] = R.fixed_code(sign, mag, ex - e, False, w, PE)


@njit(inline="always")
def divided(sign, mag, e, dm, de, w, P):
    """Code of (-1)**sign * (mag * 2**e) / (dm * 2**de), rounded once to the format in P."""
    if mag == _Z:
        if P[R.KIND] == 0:
            return R.float_code(sign, _Z, 0, False, w, P)
        return _Z
    w2, w1, w0, fe, st = W.div_frame(mag, e, dm, de)
    code, flag = W.finish(sign, w2, w1, w0, fe, st, w, P)
    return code


@njit(cache=True, nogil=True)
def encode_general(k, G, PE, PS, x, u, scales, codes):
    """Float scales: s = RNE_sat(amax / (elem_max * s_t)) raised to scale_min, elements
    x / (s * s_t) rounded once. G: (elem max significand, its exponent, s_t significand, its
    exponent, scale_min code, scale NaN code, element NaN-block code); the s_t significand times a
    scale significand must fit 64 bits."""
    rows = x.shape[0]
    nb = scales.shape[1]
    for t in range(rows * nb):
        general_block(t, x, u, k, G, PE, PS, scales, codes)


@njit
def general_block(t, x, u, k, G, PE, PS, scales, codes):
    """Block t with a float scale."""
    L = x.shape[1]
    nb = scales.shape[1]
    mmax, emax_, tm, te = np.uint64(G[0]), G[1], np.uint64(G[2]), G[3]
    smin, snan, enan = np.uint64(G[4]), G[5], G[6]
    dm = mmax * tm  # elem_max * s_t, exact (checked by the caller)
    de = emax_ + te
    sr = PE[R.SR] != 0
    m = PS[R.M]
    row = t // nb
    b = t - row * nb
    lo = b * k
    hi = min(lo + k, L)
    special, xe, sig = block_amax(x, row, lo, hi)
    if special:
        scales[row, b] = snan
        for i in range(lo, hi):
            codes[row, i] = enan
        return
    sc = _Z
    if sig != _Z:
        sc = divided(0, sig, xe - 63, dm, de, _Z, PS)
    if sc < smin:
        sc = smin
    scales[row, b] = sc
    # the scale's value as ms * 2**es (a positive finite code of PS), times s_t
    ef = np.int64(sc >> np.uint64(m))
    f = sc & ((_1 << np.uint64(m)) - _1)
    if ef == 0:
        ms, es = f, PS[R.EMIN] - m
    else:
        ms, es = f | (_1 << np.uint64(m)), ef - PS[R.BIAS] - m
    for i in range(lo, hi):
        sign, mag, ex, sp = R.parts(x[row, i])
        w = np.uint64(u[row, i]) if sr else _Z
        if ms == _Z:  # a zero scale: zero elements (the sign kept where the format has -0)
            if PE[R.KIND] == 0:
                codes[row, i] = R.float_code(sign, _Z, 0, False, w, PE)
            else:
                codes[row, i] = _Z
        else:
            codes[row, i] = divided(sign, mag, ex, ms * tm, es + te, w, PE)


# -- float32 fast path: power-of-two scales, scaled float32 values for the core's fast kernels ----

@njit(inline="always")
def _f32_scaled(b, e):
    """The float32 pattern of (the float32 with bits b) / 2**e when that quotient is a float32
    (exactly); a nonzero quotient below 2**-149's grid becomes the smallest subnormal of its sign,
    which every element format with quantum >= 2**-90 rounds as the exact value in every mode
    (no tie is near, and SR's t = floor(f * 2**32) is 0 for both)."""
    s = b & np.uint32(0x80000000)
    a = b & np.uint32(0x7FFFFFFF)
    if a == np.uint32(0):
        return b
    ef = np.int64(a >> np.uint32(23))
    if ef == 0:
        sig = np.uint64(a)
        lsb = np.int64(-149)
    else:
        sig = np.uint64(a & np.uint32(0x7FFFFF)) | np.uint64(1 << 23)
        lsb = ef - 150
    top = 63 - np.int64(leading_zeros(sig))  # position of the leading bit in sig
    v = lsb + top - e  # exponent of the leading bit after scaling
    if v >= -126:
        frac = (sig << np.uint64(23 - top)) & np.uint64(0x7FFFFF) if top <= 23 else _Z
        return s | np.uint32((np.uint64(v + 127) << np.uint64(23)) | frac)
    tz = 0
    while (sig >> np.uint64(tz)) & _1 == _Z:
        tz += 1
    low = lsb + tz - e  # exponent of the lowest set bit after scaling
    if low >= -149:
        return s | np.uint32((sig >> np.uint64(tz)) << np.uint64(low + 149))
    return s | np.uint32(1)


@njit(inline="always")
def f32_block(t, x, k, S, nan_bits, scales, y):
    L = x.shape[1]
    nb = scales.shape[1]
    rule, emax_elem, prec = S[0], S[1], S[2]
    sig_max = np.uint64(S[3])
    semin, semax, sbias, snan, ssat = S[4], S[5], S[6], S[7], S[8]
    row = t // nb
    b = t - row * nb
    lo = b * k
    hi = min(lo + k, L)
    amax = np.uint32(0)
    for i in range(lo, hi):
        amax = max(amax, x[row, i] & np.uint32(0x7FFFFFFF))
    nan_block = amax >= np.uint32(0x7F800000)
    e = semin
    if not nan_block and amax != np.uint32(0):
        ef = np.int64(amax >> np.uint32(23))
        if ef == 0:
            m = np.uint64(amax)
            n = np.int64(leading_zeros(m))
            xe = -149 + 63 - n
            sig = m << np.uint64(n)
        else:
            xe = ef - 127
            sig = (np.uint64(amax & np.uint32(0x7FFFFF)) | np.uint64(1 << 23)) << np.uint64(40)
        e = pow2_exponent(xe, sig, rule, emax_elem, prec, sig_max)
        if e < semin:
            e = semin
        elif e > semax:
            if ssat:
                e = semax
            else:
                nan_block = True
    if nan_block:
        scales[row, b] = snan
        for i in range(lo, hi):
            y[row, i] = nan_bits
        return
    scales[row, b] = e + sbias
    # the common case in one branch-free loop: a normal x whose quotient stays normal is x's bits
    # with e taken off the exponent field; the rest (zeros aside) take _f32_scaled
    sh = np.uint32((np.int64(e) << 23) & 0xFFFFFFFF)  # b - sh (mod 2**32) takes e off the exponent field
    e32 = np.int32(e)
    rare = np.int32(0)
    for i in range(lo, hi):
        bi = x[row, i]
        ef = np.int32((bi >> np.uint32(23)) & np.uint32(0xFF))
        ok = (ef - e32 >= np.int32(1)) & (ef >= np.int32(1))
        y[row, i] = bi - sh if ok else bi
        rare |= np.int32(not ok) & np.int32((bi & np.uint32(0x7FFFFFFF)) != np.uint32(0))
    if rare:
        for i in range(lo, hi):
            bi = x[row, i]
            ef = np.int64((bi >> np.uint32(23)) & np.uint32(0xFF))
            if not (ef - e >= 1 and ef >= 1):
                y[row, i] = _f32_scaled(bi, e)


@njit(cache=True, nogil=True)
def scale_f32(k, S, nan_bits, x, scales, y):
    """Power-of-two scales of float32 blocks (x as uint32 bits, (R, L)) and the scaled values
    x / 2**e as float32 bits in y (NaN blocks: ``nan_bits``). The scaled values' exponents stay in
    float32's range for e8m0 scales."""
    rows = x.shape[0]
    nb = scales.shape[1]
    for t in range(rows * nb):
        f32_block(t, x, k, S, nan_bits, scales, y)

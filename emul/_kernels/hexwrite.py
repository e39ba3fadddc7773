"""Numba kernel for ``emul.vectors``: fixed-width hex text of code tables.

A table is ``codes[n, F]`` (uint64); field j is written as ``digits[j]`` hex digits (lower case,
zero-padded, the low ``4 * digits[j]`` bits of the code), preceded by ``prefix`` and followed by
``sep`` except after the last field; every line ends with ``\\n``. All lines have the same length,
so line i starts at byte ``i * line_len``. The caller writes a large table in chunks through one
small buffer that stays in cache (one thread: measured faster than ``prange`` on a shared 2-core
machine, where the writer is bound by memory and page faults, not by arithmetic). No per-line
allocation. Validation lives in ``emul.vectors``.
"""

import numpy as np
from numba import njit

# _PAIRS[2*b], _PAIRS[2*b+1]: the two hex digits of byte b (one lookup per byte, not per nibble)
_PAIRS = np.frombuffer("".join(f"{b:02x}" for b in range(256)).encode(), dtype=np.uint8).copy()


@njit(cache=True)
def line_length(digits, prefix_len, sep_len):
    """Bytes per line: the digits, one prefix per field, separators between fields, a newline."""
    total = 0
    for j in range(digits.size):
        total += digits[j] + prefix_len
    return total + sep_len * (digits.size - 1) + 1


@njit(cache=True, inline="always")
def _write_line(codes, i, digits, prefix, sep, table, out, pos):
    """Write row i at byte ``pos`` of ``out``."""
    nf = digits.size
    for j in range(nf):
        for p in range(prefix.size):
            out[pos] = prefix[p]
            pos += 1
        v = codes[i, j]
        d = digits[j]
        k = d
        while k >= 2:  # two digits per byte of the code, from the last digit back
            b = (v & np.uint64(255)) * np.uint64(2)
            out[pos + k - 2] = table[b]
            out[pos + k - 1] = table[b + np.uint64(1)]
            v >>= np.uint64(8)
            k -= 2
        if k:
            out[pos] = table[(v & np.uint64(15)) * np.uint64(2) + np.uint64(1)]
        pos += d
        if j + 1 < nf:
            for p in range(sep.size):
                out[pos] = sep[p]
                pos += 1
    out[pos] = 10  # '\n'


@njit(cache=True)
def write_lines(codes, digits, prefix, sep, out):
    """Fill ``out`` (uint8, at least ``n * line_len`` bytes) with the text of every row of ``codes``."""
    n = codes.shape[0]
    line_len = line_length(digits, prefix.size, sep.size)
    table = _PAIRS
    for i in range(n):
        _write_line(codes, i, digits, prefix, sep, table, out, i * line_len)

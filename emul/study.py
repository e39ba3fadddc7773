"""The precision trade-off study of low-precision accumulators (``make demo``).

Dot products of e4m3fn-quantised Gaussian vectors (fixed seed) accumulated in 12-bit float
(e4m7, e5m6, with and without subnormals) and 12-bit fixed-point (fx<12,4>, saturating and
wrapping) accumulators, in fp16/bf16 and, as the baseline, fp32 — for K = 64 … 4096 and every
order (sequential, pairwise, chunked with several chunk sizes). For each it prints the relative
error against the exact dot products (products are exact in binary64, the sums exact up to
``math.fsum``'s final rounding) and the share of swamped additions: rounding steps whose result
equals the running (left) operand although the added term was nonzero — the term was lost
entirely.

The steps are replayed with :func:`emul.arith.add` (the same single rounding, overflow rule
included) so that each one can be inspected, and the results are checked against
:func:`emul.accumulate.matmul` for the same configuration.

    python -m emul.study [--vectors 256] [--k 64,256,1024,4096]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from . import arith
from .accumulate import matmul
from .formats import format as as_format
from .quantize import quantize

FORMATS = [  # (label, accumulator, overflow rule)
    ("e4m7", "e4m7", None),
    ("e4m7-nosub", "e4m7-nosub", None),
    ("e5m6", "e5m6", None),
    ("fp16", "fp16", None),
    ("bf16", "bf16", None),
    ("fx<12,4> sat", "fx<12,4>", "saturate"),
    ("fx<12,4> wrap", "fx<12,4>", "wrap"),
    ("fp32", "fp32", None),
]
ORDERS = [("sequential", None), ("pairwise", None), ("chunked", 16), ("chunked", 64), ("chunked", 256)]


def data(vectors: int, k: int, seed: int = 0):
    """e4m3fn-quantised standard Gaussian vectors a, b of shape (vectors, k)."""
    rng = np.random.default_rng(seed + k)
    a = quantize(rng.standard_normal((vectors, k)), "e4m3fn")
    b = quantize(rng.standard_normal((vectors, k)), "e4m3fn")
    return a, b


def exact_dots(a, b):
    """The exact dot products, rounded once to binary64 (products of e4m3fn values are exact)."""
    p = a * b
    return np.array([math.fsum(row) for row in p])


def _steps(x, y, fmt, overflow):
    """Q(x + y) elementwise and the swamped mask: the result is x although y != 0."""
    s = arith.add(x, y, fmt, overflow=overflow)
    return s, (s == x) & (y != 0)


def replay(a, b, fmt, overflow, order, chunk):
    """Accumulate every row of a*b step by step; (results, swamped steps, steps)."""
    p = a * b  # exact
    v, k = p.shape
    swamped = 0
    steps = 0

    def sequential(start, terms):
        nonlocal swamped, steps
        s = start
        for j in range(terms.shape[1]):
            s, sw = _steps(s, terms[:, j], fmt, overflow)
            swamped += int(sw.sum())
            steps += v
        return s

    zero = np.zeros(v)
    if order == "sequential":
        return sequential(zero, p), swamped, steps
    if order == "chunked":  # the chunks are independent sequences: step them side by side
        n = -(-k // chunk)
        padded = np.zeros((v, n * chunk))
        padded[:, :k] = p
        terms = padded.reshape(v, n, chunk)
        sums = np.zeros((v, n))
        for j in range(chunk):
            live = np.arange(n) * chunk + j < k  # the last chunk may be shorter
            s, sw = _steps(sums[:, live], terms[:, live, j], fmt, overflow)
            sums[:, live] = s
            swamped += int(sw.sum())
            steps += s.size
        return sequential(zero, sums), swamped, steps
    level = p  # pairwise: a tree over the products, then the step adding init (+0)
    while level.shape[1] > 1:
        half = level.shape[1] // 2
        left, right = level[:, 0:2 * half:2], level[:, 1:2 * half:2]
        s = arith.add(left, right, fmt, overflow=overflow)
        swamped += int((((s == left) & (right != 0)) | ((s == right) & (left != 0))).sum())
        steps += s.size
        level = np.concatenate([s, level[:, 2 * half:]], axis=1)
    s, sw = _steps(zero, level[:, 0], fmt, overflow)
    return s, swamped + int(sw.sum()), steps + v


def run(vectors=256, ks=(64, 256, 1024, 4096), check=True):
    """Rows of (label, order label, {K: (relative error, swamped share)})."""
    rows = []
    inputs = {k: data(vectors, k) for k in ks}
    exact = {k: exact_dots(*inputs[k]) for k in ks}
    for label, acc, overflow in FORMATS:
        fmt = as_format(acc)
        for order, chunk in ORDERS:
            cells = {}
            for k in ks:
                if order == "chunked" and chunk >= k:
                    cells[k] = None  # one chunk: the sequential result plus one outer step
                    continue
                a, b = inputs[k]
                got, swamped, steps = replay(a, b, fmt, overflow, order, chunk)
                if check:
                    want = matmul(a[:, None, :], b[:, :, None], fmt, overflow=overflow, order=order,
                                  chunk=chunk)[:, 0, 0]
                    assert np.array_equal(got, want), (label, order, chunk, k)
                err = np.linalg.norm(got - exact[k]) / np.linalg.norm(exact[k])
                cells[k] = (float(err), swamped / steps)
            rows.append((label, order if chunk is None else f"chunk {chunk}", cells))
    return rows


def table(rows, ks) -> str:
    """The study as an aligned text table: relative error, then the swamped share in percent."""
    head = f"{'accumulator':14s} {'order':10s}" + "".join(f" {'K=' + str(k):>17s}" for k in ks)
    lines = [head, " " * 26 + "".join(f" {'error  swamped':>17s}" for _ in ks), "-" * len(head)]
    previous = None
    for label, order, cells in rows:
        name = label if label != previous else ""
        previous = label
        parts = []
        for k in ks:
            c = cells[k]
            parts.append(f" {'—':>17s}" if c is None else f" {c[0]:9.2e} {100 * c[1]:6.2f}%")
        lines.append(f"{name:14s} {order:10s}" + "".join(parts))
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Low-precision accumulator study: error and swamping")
    parser.add_argument("--vectors", type=int, default=256, help="dot products per configuration")
    parser.add_argument("--k", default="64,256,1024,4096", help="comma-separated dot-product lengths")
    parser.add_argument("--no-check", action="store_true", help="skip the cross-check against matmul")
    args = parser.parse_args(argv)
    ks = tuple(int(k) for k in args.k.split(","))
    start = time.perf_counter()
    rows = run(args.vectors, ks, check=not args.no_check)
    print(f"Accumulators: relative error ||s - exact|| / ||exact|| over {args.vectors} dot products of "
          "e4m3fn-quantised N(0,1) vectors, and the share of swamped additions (the sum did not move "
          "although the term was nonzero); rounding nearest_even, one rounding and overflow check per "
          "addition. '—': chunk >= K.")
    print(table(rows, ks))
    print(f"({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()

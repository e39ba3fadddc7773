"""Arithmetic (docs/arith.md, docs/accumulators.md): the exact real result, rounded once; dot and matmul.

Each operation first computes its exact result as an ``Exact`` (IEEE 754 special
cases and zero signs included), then rounds it once to the format.

NaN signs, as docs/arith.md documents: a NaN operand propagates with its own sign
(the first NaN among the operands, in argument order); an invalid operation
(inf - inf, 0 * inf, 0/0, inf/inf, sqrt of a negative) gives +NaN.
"""

import math

from . import formats as F
from .quantize import check_args, decode, float_ulp_exponent, floor_log2, round_to_code
from .rounding import check_rounding
from .values import Exact, inf, nan, number, parse, public, zero

# ---- exact results ---------------------------------------------------------


def _first_nan(*operands):
    for v in operands:
        if v.kind == "nan":
            return v
    return None


def _negate(v):
    return Exact(v.kind, 1 - v.sign, v.mag)


def exact_add(a, b, rounding):
    """a + b exactly. An exact zero sum of opposite signs is +0, or -0 in mode down (§2)."""
    if _first_nan(a, b):
        return _first_nan(a, b)
    if a.kind == "inf" and b.kind == "inf":
        return a if a.sign == b.sign else nan(0)
    if a.kind == "inf" or b.kind == "inf":
        return a if a.kind == "inf" else b
    total = a.value + b.value
    if total != 0:
        return number(total)
    if a.sign == b.sign:
        return zero(a.sign)  # x + x keeps x's sign: (+0) + (+0), (-0) + (-0)
    return zero(1 if rounding == "down" else 0)


def exact_sub(a, b, rounding):
    """a - b = a + (-b); a NaN b propagates with its own sign."""
    return _first_nan(a, b) or exact_add(a, _negate(b), rounding)


def exact_mul(a, b):
    """a * b exactly; the sign is the XOR of the signs."""
    if _first_nan(a, b):
        return _first_nan(a, b)
    sign = a.sign ^ b.sign
    if a.kind == "inf" or b.kind == "inf":
        return nan(0) if a.is_zero or b.is_zero else inf(sign)
    return Exact("num", sign, a.mag * b.mag)


def exact_div(a, b):
    """a / b exactly; the sign is the XOR of the signs."""
    if _first_nan(a, b):
        return _first_nan(a, b)
    sign = a.sign ^ b.sign
    if (a.kind == "inf" and b.kind == "inf") or (a.is_zero and b.is_zero):
        return nan(0)
    if a.kind == "inf" or b.is_zero:
        return inf(sign)
    if b.kind == "inf":
        return zero(sign)
    return Exact("num", sign, a.mag / b.mag)


def exact_fma(a, b, c, rounding):
    """a * b + c with no rounding of the product."""
    return _first_nan(a, b, c) or exact_add(exact_mul(a, b), c, rounding)


def exact_sqrt(a, fmt):
    """sqrt(a), exact where rational; otherwise a stand-in that rounds the same way in fmt.

    Rounding a magnitude m to fmt reads only floor(m * 2^j) and whether m * 2^j is an
    integer, for scales j <= r + 1 - p (p: log2 of the grid spacing, r <= 32 SR bits) and
    j = -e (the binade). With N = floor(sqrt(a) 2^K) = isqrt(floor(a 4^K)) and K above all
    of those, the stand-in (2N + 1) / 2^(K+1) (a sticky bit) has the same floors at every
    scale j <= K and, like an inexact sqrt(a), is never an integer there.
    """
    if a.kind == "nan":
        return a
    if a.is_zero:
        return a  # sqrt(+0) = +0, sqrt(-0) = -0
    if a.sign:
        return nan(0)
    if a.kind == "inf":
        return a
    e = floor_log2(a.mag) // 2  # 2^e <= sqrt(a) < 2^(e+1)
    p = float_ulp_exponent(F.pow2(e), fmt) if F.is_float(fmt) else -fmt.frac
    K = 34 - min(e, p)
    scaled = a.mag * F.pow2(2 * K)
    N = math.isqrt(math.floor(scaled))
    if N * N == scaled:
        return Exact("num", 0, N / F.pow2(K))
    return Exact("num", 0, (2 * N + 1) / F.pow2(K + 1))


# ---- rounding once ---------------------------------------------------------


def _rounded(v, fmt, rounding, overflow, u, sr_bits, sr_method):
    """v rounded to fmt, as the format's canonical Exact (what decoding its code gives)."""
    return parse(decode(round_to_code(v, fmt, rounding, overflow, u, sr_bits, sr_method), fmt))


def _result(v, fmt, rounding, overflow, u, sr_bits, sr_method):
    return decode(round_to_code(v, fmt, rounding, overflow, u, sr_bits, sr_method), fmt)


def add(a, b, fmt, rounding="nearest_even", overflow=None, *, u=None, sr_bits=32, sr_method="add"):
    return _result(exact_add(parse(a), parse(b), rounding), fmt, rounding, overflow, u, sr_bits, sr_method)


def sub(a, b, fmt, rounding="nearest_even", overflow=None, *, u=None, sr_bits=32, sr_method="add"):
    return _result(exact_sub(parse(a), parse(b), rounding), fmt, rounding, overflow, u, sr_bits, sr_method)


def mul(a, b, fmt, rounding="nearest_even", overflow=None, *, u=None, sr_bits=32, sr_method="add"):
    return _result(exact_mul(parse(a), parse(b)), fmt, rounding, overflow, u, sr_bits, sr_method)


def div(a, b, fmt, rounding="nearest_even", overflow=None, *, u=None, sr_bits=32, sr_method="add"):
    return _result(exact_div(parse(a), parse(b)), fmt, rounding, overflow, u, sr_bits, sr_method)


def fma(a, b, c, fmt, rounding="nearest_even", overflow=None, *, u=None, sr_bits=32, sr_method="add"):
    return _result(exact_fma(parse(a), parse(b), parse(c), rounding), fmt, rounding, overflow, u, sr_bits, sr_method)


def sqrt(a, fmt, rounding="nearest_even", overflow=None, *, u=None, sr_bits=32, sr_method="add"):
    return _result(exact_sqrt(parse(a), fmt), fmt, rounding, overflow, u, sr_bits, sr_method)


# ---- dot and matmul --------------------------------------------------------

ORDERS = ("sequential", "pairwise", "chunked")


def sr_steps(K, order, chunk=None):
    """T: how many rounding steps (random words) one dot product of length K uses."""
    if K == 0:
        return 0
    if order == "chunked":
        return K + -(-K // chunk)  # every product, then one outer step per chunk
    return K  # sequential: K steps; pairwise: K - 1 tree additions and the final step


def _representable(v, fmt):
    if v.kind == "nan":
        return F.is_float(fmt) and F.has_nan(fmt)
    if v.kind == "inf":
        return F.is_float(fmt) and F.has_inf(fmt)
    return _rounded(v, fmt, "nearest_even", "saturate", None, 32, "add").value == v.value


def _check_dot_args(acc, outer, rounding, overflow, order, chunk, product, product_rounding, sr_bits, sr_method):
    if order not in ORDERS:
        raise ValueError(f"order={order!r}: must be one of {', '.join(ORDERS)}")
    if order == "chunked" and (not isinstance(chunk, int) or chunk < 1):
        raise ValueError(f"chunk={chunk!r}: order='chunked' needs a positive integer chunk")
    for fmt in (acc, outer) if order == "chunked" else (acc,):
        check_args(fmt, rounding, overflow, 0, sr_bits, sr_method)  # u=0: the words are checked one by one
    if product is not None:
        check_rounding(product_rounding)
        if product_rounding == "stochastic":
            raise ValueError("product_rounding='stochastic': products take a deterministic mode")


class _Words:
    """The SR words, handed out in the order the rounding steps execute."""

    def __init__(self, u, rounding, count):
        if rounding != "stochastic":
            self.words = None
            return
        if u is None or len(u) != count:
            raise ValueError(f"u: rounding='stochastic' needs a list of {count} random words")
        self.words = iter(u)

    def next(self):
        return None if self.words is None else next(self.words)


def _dot_one(a, b, acc, product, product_rounding, rounding, overflow, order, chunk, outer, init, words, sr_bits, sr_method):
    if len(a) != len(b):
        raise ValueError(f"dot: lengths {len(a)} and {len(b)} differ")

    def step(s, p, fmt):
        """Q_fmt(s + p): one rounding and one overflow check."""
        return _rounded(exact_add(s, p, rounding), fmt, rounding, overflow, words.next(), sr_bits, sr_method)

    def sequential(start, terms, fmt):
        s = start
        for p in terms:
            s = step(s, p, fmt)
        return s

    products = [exact_mul(parse(x), parse(y)) for x, y in zip(a, b)]
    if product is not None:
        products = [_rounded(p, product, product_rounding, None, None, 32, "add") for p in products]
    final = outer if order == "chunked" else acc
    start = zero(0)
    if init is not None:
        start = parse(init)
        if not _representable(start, final):
            raise ValueError(f"init={init!r}: not representable in the accumulator format")
        start = _rounded(start, final, "nearest_even", "saturate", None, 32, "add")
    if not products:
        return start
    if order == "sequential":
        return sequential(start, products, acc)
    if order == "pairwise":
        level = products
        while len(level) > 1:
            pairs = [step(level[i], level[i + 1], acc) for i in range(0, len(level) - 1, 2)]
            level = pairs + level[len(pairs) * 2:]  # an odd last element passes up unchanged
        return step(start, level[0], acc)
    chunk_sums = [sequential(zero(0), products[i:i + chunk], acc) for i in range(0, len(products), chunk)]
    return sequential(start, chunk_sums, outer)


def dot(a, b, acc, *, product=None, product_rounding="nearest_even", rounding="nearest_even", overflow=None,
        order="sequential", chunk=None, outer=None, init=None, u=None, sr_bits=32, sr_method="add"):
    """sum_k a[k] * b[k] accumulated in acc as docs/accumulators.md describes; u: the T SR words in step order."""
    outer = acc if outer is None else outer
    _check_dot_args(acc, outer, rounding, overflow, order, chunk, product, product_rounding, sr_bits, sr_method)
    words = _Words(u, rounding, sr_steps(len(a), order, chunk))
    s = _dot_one(a, b, acc, product, product_rounding, rounding, overflow, order, chunk, outer, init, words, sr_bits, sr_method)
    return public(s)


def matmul(A, B, acc, *, product=None, product_rounding="nearest_even", rounding="nearest_even", overflow=None,
           order="sequential", chunk=None, outer=None, init=None, u=None, sr_bits=32, sr_method="add"):
    """C[i][j] = dot(A[i], column j of B); output element j (C order) uses words u[j*T:(j+1)*T]."""
    outer = acc if outer is None else outer
    _check_dot_args(acc, outer, rounding, overflow, order, chunk, product, product_rounding, sr_bits, sr_method)
    K = len(B)
    if K == 0:
        raise ValueError("matmul: B has no rows (K = 0), so N is unknown; use dot")
    N = len(B[0])
    if any(len(row) != K for row in A) or any(len(row) != N for row in B):
        raise ValueError("matmul: A must be M x K and B K x N")
    T = sr_steps(K, order, chunk)
    words = _Words(u, rounding, len(A) * N * T)
    C = []
    for row in A:
        C.append([])
        for j in range(N):
            column = [B[k][j] for k in range(K)]
            s = _dot_one(row, column, acc, product, product_rounding, rounding, overflow, order, chunk, outer, init,
                         words, sr_bits, sr_method)
            C[-1].append(public(s))
    return C

"""The golden model's arithmetic, dot and matmul (SEMANTICS §4) against hand-worked cases and Python/numpy floats."""

import math
import random
from fractions import Fraction as Fr

import numpy as np
import pytest

import reference as R

F64 = R.Float(11, 52)
F32 = R.Float(8, 23)
E5M2 = R.Float(5, 2)
E4M3FN = R.Float(4, 3, specials="fn")
INF, NAN = math.inf, math.nan


def same(a, b):
    """Equal values, telling -0.0 from 0.0 and NaN signs apart."""
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b) and math.copysign(1, a) == math.copysign(1, b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return type(a) is type(b) and a == b


def doubles(n, seed, lo=-60, hi=60):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        x = math.ldexp(1 + rng.getrandbits(52) / 2 ** 52, rng.randint(lo, hi))
        out.append(-x if rng.random() < 0.5 else x)
    return out


# ---- accumulators --------------------------------------------------------------------------

def test_saturating_and_wrapping_accumulators():
    acc = R.Fixed(7, 0)                       # raw range [-64, 63]
    a = [1] * 64 + [-1] * 64
    b = [1] * 128
    assert R.dot(a, b, acc) == -1             # clamps at 63 on the way up, then 63 - 64
    assert R.dot(a, b, acc, overflow="saturate") == -1
    assert same(R.dot(a, b, acc, overflow="wrap"), 0.0)
    assert R.dot(a, b, acc, overflow="saturate_symmetric") == -1
    assert R.dot([1] * 70, [1] * 70, acc, overflow="saturate_zero") == 6   # 63 + 1 -> 0 at step 64, then 1..6


def test_order_examples_by_hand():
    # e4m2 (IEEE, bias 7): near 8 the spacing is 2, near 16 it is 4; ties go to the even mantissa
    acc = R.Float(4, 2)
    a, b = [8, 1, 1, 1, 1], [1] * 5
    # sequential: 8+1 = 9 -> 8 (tie, 8 = 1.00b even), and so on: 8
    assert R.dot(a, b, acc) == 8
    # pairwise: [8+1 -> 8, 1+1 = 2, 1] -> [8+2 = 10, 1] -> [10+1 = 11 -> 12] -> 0 + 12
    assert R.dot(a, b, acc, order="pairwise") == 12
    # chunk 2: [8, 1] -> 8, [1, 1] -> 2, [1] -> 1; outer: 8, 10, 11 -> 12
    assert R.dot(a, b, acc, order="chunked", chunk=2) == 12
    # chunk 3: [8, 1, 1] -> 8, [1, 1] -> 2; outer 8 + 2 = 10; from init 1: 1 + 8 = 9 -> 8, then 10
    assert R.dot(a, b, acc, order="chunked", chunk=3) == 10
    assert R.dot(a, b, acc, order="chunked", chunk=3, init=1) == 10
    # sequential from 2: 10, 11 -> 12, 13 -> 12 (tie, 12 = 1.10b even), 12, 12
    assert R.dot(a, b, acc, init=2) == 12
    # a lone product is still rounded once, in every order
    for order in ("sequential", "pairwise", "chunked"):
        assert R.dot([Fr(9)], [1], acc, order=order, chunk=4) == 8
    # chunked in a wider outer format: chunk sums 8 (9 rounded in acc) and 1.25, then 8 + 1.25 exactly in fp32
    assert R.dot([8, 1, Fr(5, 4), 0], [1] * 4, acc, order="chunked", chunk=2, outer=F32) == Fr(37, 4)
    assert R.dot([8, 1, Fr(5, 4), 0], [1] * 4, acc, order="chunked", chunk=2) == 10   # 9.25 -> 10 in acc


def test_products_rounded_once_to_the_product_format():
    e4m3 = R.Float(4, 3)
    assert R.dot([1.1], [1.1], F32) == R.quantize(Fr(1.1) * Fr(1.1), F32)   # exact product, one rounding
    assert R.dot([1.1], [1.1], F32, product=e4m3) == Fr(5, 4)              # 1.21 -> 1.25 in e4m3
    assert R.dot([1.1], [1.1], F32, product=e4m3, product_rounding="toward_zero") == Fr(9, 8)
    assert same(R.dot([300], [1], F32, product=e4m3), INF)                 # e4m3's default overflow: ieee
    assert R.dot([300], [1], F32, product=R.Fixed(8, 0)) == 127            # fixed: saturate


def test_empty_and_init():
    assert same(R.dot([], [], E5M2), 0.0)
    assert same(R.dot([], [], E5M2, init=-0.0), -0.0)
    assert R.dot([], [], E5M2, init=3) == 3
    assert R.dot([1], [2], E5M2, init=3) == 5
    assert same(R.dot([-0.0], [1], E5M2, init=-0.0), -0.0)                 # -0 + -0 keeps the sign
    assert same(R.dot([1, -1], [1, 1], E5M2), 0.0)
    assert same(R.dot([1, -1], [1, 1], E5M2, rounding="down"), -0.0)
    for bad in (Fr(1, 3), 57345, 1e6):
        with pytest.raises(ValueError):
            R.dot([1], [1], E5M2, init=bad)
    with pytest.raises(ValueError):
        R.dot([1], [1], R.Fixed(8, 2), init=NAN)
    with pytest.raises(ValueError):
        R.dot([1], [1, 2], E5M2)
    with pytest.raises(ValueError):
        R.dot([1], [1], E5M2, order="chunked")
    with pytest.raises(ValueError):
        R.dot([1], [1], E5M2, order="chunked", chunk=2, outer=R.Fixed(8, 0), overflow="ieee")
    with pytest.raises(ValueError):
        R.dot([1], [1], E5M2, rounding="stochastic")
    with pytest.raises(ValueError):
        R.dot([1, 2], [1, 1], E5M2, rounding="stochastic", u=[0])


# ---- SR words: the order the rounding steps execute --------------------------------------------

def q_add(s, p, fmt, u, r):
    return R.add(s, p, fmt, "stochastic", u=u, sr_bits=r, sr_method="compare")


@pytest.mark.parametrize("fmt", [R.Fixed(8, 0), R.Float(3, 2)], ids=repr)
def test_sr_word_order(fmt):
    p = [Fr(3, 10), Fr(9, 20), Fr(7, 10), Fr(3, 20), Fr(9, 10)]
    r = 2
    rng = random.Random(0)
    for _ in range(60):
        w = [rng.randrange(4) for _ in range(5 + 3)]
        kw = dict(rounding="stochastic", sr_bits=r, sr_method="compare")
        # sequential: s = Q(s + p_k), words 0..4
        s = 0.0
        for k in range(5):
            s = q_add(s, p[k], fmt, w[k], r)
        assert same(R.dot(p, [1] * 5, fmt, u=w[:5], **kw), s)
        # pairwise: level 1 (p0+p1, p2+p3), level 2, level 3 (with the passed-up p4), final 0 + root
        a = q_add(p[0], p[1], fmt, w[0], r)
        b = q_add(p[2], p[3], fmt, w[1], r)
        c = q_add(a, b, fmt, w[2], r)
        d = q_add(c, p[4], fmt, w[3], r)
        assert same(R.dot(p, [1] * 5, fmt, order="pairwise", u=w[:5], **kw), q_add(0.0, d, fmt, w[4], r))
        # chunked, chunk 2: chunk steps in order (2 + 2 + 1), then the 3 outer steps
        c0 = q_add(q_add(0.0, p[0], fmt, w[0], r), p[1], fmt, w[1], r)
        c1 = q_add(q_add(0.0, p[2], fmt, w[2], r), p[3], fmt, w[3], r)
        c2 = q_add(0.0, p[4], fmt, w[4], r)
        s = q_add(q_add(q_add(0.0, c0, fmt, w[5], r), c1, fmt, w[6], r), c2, fmt, w[7], r)
        assert same(R.dot(p, [1] * 5, fmt, order="chunked", chunk=2, u=w, **kw), s)
    assert R.sr_steps(5, "sequential") == R.sr_steps(5, "pairwise") == 5 and R.sr_steps(5, "chunked", 2) == 8


def test_matmul_matches_dot_and_slices_words():
    A = [[Fr(1, 3), 2, -1], [0.5, 0.25, 3]]
    B = [[1, Fr(2, 7)], [Fr(1, 5), 1], [1, -1]]
    fmt = R.Fixed(8, 2)
    C = R.matmul(A, B, fmt)
    assert C == [[R.dot(row, [B[k][j] for k in range(3)], fmt) for j in range(2)] for row in A]
    rng = random.Random(1)
    u = [rng.randrange(2 ** 8) for _ in range(4 * 3)]
    kw = dict(rounding="stochastic", sr_bits=8)
    C = R.matmul(A, B, fmt, u=u, **kw)
    for i in range(2):
        for j in range(2):
            jj = i * 2 + j
            assert C[i][j] == R.dot(A[i], [B[k][j] for k in range(3)], fmt, u=u[jj * 3:(jj + 1) * 3], **kw)
    with pytest.raises(ValueError):
        R.matmul(A, B, fmt, u=u[:-1], **kw)


# ---- scalar operations against Python / numpy floats -----------------------------------------

def test_float64_ops_match_python():
    xs, ys = doubles(1000, 1), doubles(1000, 2)
    for x, y in zip(xs, ys):
        assert R.add(x, y, F64) == Fr(x + y)
        assert R.sub(x, y, F64) == Fr(x - y)
        assert R.mul(x, y, F64) == Fr(x * y)
        assert R.div(x, y, F64) == Fr(x / y)
        assert R.sqrt(abs(x), F64) == Fr(math.sqrt(abs(x)))
    # underflow and overflow
    assert same(R.mul(1e-200, 1e-200, F64), 1e-200 * 1e-200)
    assert R.mul(3e-160, 3e-160, F64) == Fr(3e-160 * 3e-160)                # subnormal result
    assert same(R.mul(1e200, -1e200, F64), -INF)
    assert R.sqrt(5e-324, F64) == Fr(math.sqrt(5e-324))


def test_float32_ops_match_numpy():
    rng = np.random.default_rng(0)
    xs = (rng.standard_normal(600) * np.exp2(rng.integers(-140, 100, 600))).astype(np.float32)
    ys = (rng.standard_normal(600) * np.exp2(rng.integers(-40, 40, 600))).astype(np.float32)
    with np.errstate(all="ignore"):
        expected = {"add": xs + ys, "sub": xs - ys, "mul": xs * ys, "div": xs / ys}
        sq = np.sqrt(np.abs(xs))
    for i, (x, y) in enumerate(zip(xs.tolist(), ys.tolist())):
        for name, e in expected.items():
            got = getattr(R, name)(x, y, F32)
            assert float(got) == float(e[i]) and math.copysign(1, float(got)) == math.copysign(1, float(e[i])), (name, x, y)
        assert float(R.sqrt(abs(x), F32)) == float(sq[i])


def test_fma_matches_fsum_on_exact_products():
    # with 26-bit significands a*b is exact in float64, so fsum([a*b, c]) is the correctly rounded fma
    rng = random.Random(3)
    for _ in range(500):
        a = math.ldexp(rng.getrandbits(26), rng.randint(-60, 0))
        b = -math.ldexp(rng.getrandbits(26), rng.randint(-60, 0))
        c = math.ldexp(1 + rng.getrandbits(52) / 2 ** 52, rng.randint(-80, 10))
        assert Fr(R.fma(a, b, c, F64)) == Fr(math.fsum([a * b, c]))
    # the product is not rounded first: (1 + 2^-30)^2 - 1 keeps the 2^-60 term
    x = 1 + 2.0 ** -30
    assert R.fma(x, x, -1.0, F64) == Fr(2.0 ** -29 + 2.0 ** -60)
    assert R.fma(x, x, -1.0, F64) != Fr(x * x - 1.0)


@pytest.mark.skipif(not hasattr(math, "fma"), reason="math.fma needs Python 3.13")
def test_fma_matches_math_fma():
    for a, b, c in zip(doubles(500, 4), doubles(500, 5), doubles(500, 6, -100, 100)):
        assert R.fma(a, b, c, F64) == Fr(math.fma(a, b, c))


def test_sqrt_directed_modes_exhaustive_small_format():
    fmt = R.Float(4, 3)
    values = sorted({R.decode(c, fmt) for c in range(0x78)} - {0.0}, key=Fr)  # positive finite values
    for a in values:
        down, up = R.sqrt(a, fmt, "down"), R.sqrt(a, fmt, "up")
        assert down == max((y for y in values if y * y <= a), default=0.0)   # the largest y with y^2 <= a
        assert up == min(y for y in values if y * y >= a)
        near = R.sqrt(a, fmt)
        assert near in (down, up)
        if down != up:   # sqrt is never a tie: compare squares against the midpoint
            mid = (Fr(down) + Fr(up)) / 2
            assert near == (up if a > mid * mid else down)


def test_sqrt_stochastic_uses_the_exact_fraction():
    fmt = R.Fixed(8, 4)                        # sqrt(2) * 16 = 22.627...
    r = 8
    t = math.isqrt(2 * 16 ** 2 * 2 ** (2 * r)) - 22 * 2 ** r   # floor(f * 2^r), from an integer sqrt
    assert t == 160
    ups = [u for u in range(2 ** r) if R.sqrt(2, fmt, "stochastic", u=u, sr_bits=r) == Fr(23, 16)]
    assert ups == list(range(2 ** r - t, 2 ** r))
    # float: sqrt(3) in e5m2: 1.732 = (6 + 0.928...) * 2^-2; t = floor(0.928 * 2^32)
    t = math.isqrt(3 * 16 * 2 ** 64) - 6 * 2 ** 32
    assert R.sqrt(3, E5M2, "stochastic", u=2 ** 32 - t - 1) == Fr(3, 2)
    assert R.sqrt(3, E5M2, "stochastic", u=2 ** 32 - t) == Fr(7, 4)
    assert R.sqrt(3, E5M2, "stochastic", u=t - 1, sr_method="compare") == Fr(7, 4)
    assert R.sqrt(3, E5M2, "stochastic", u=t, sr_method="compare") == Fr(3, 2)
    # tiny and huge arguments
    assert R.sqrt(Fr(1, 2 ** 301), F64) == Fr(math.sqrt(2.0 ** -301))
    assert R.sqrt(Fr(1, 9), F64) == R.quantize(Fr(1, 3), F64)


# ---- special values and zero signs ------------------------------------------------------------

@pytest.mark.parametrize("op, args, fmt, expected", [
    ("add", (INF, -INF), F64, NAN), ("sub", (INF, INF), F64, NAN), ("add", (INF, 1e308), F64, INF),
    ("mul", (0.0, INF), F64, NAN), ("mul", (-INF, 2), F64, -INF), ("mul", (-INF, -0.5), F64, INF),
    ("div", (1, 0.0), F64, INF), ("div", (1, -0.0), F64, -INF), ("div", (-1, 0.0), F64, -INF),
    ("div", (0.0, 0.0), F64, NAN), ("div", (INF, -INF), F64, NAN), ("div", (-INF, 0.0), F64, -INF),
    ("div", (1, -INF), F64, -0.0), ("div", (-0.0, 5), F64, -0.0),
    ("sqrt", (-1,), F64, NAN), ("sqrt", (-INF,), F64, NAN), ("sqrt", (INF,), F64, INF),
    ("sqrt", (-0.0,), F64, -0.0), ("sqrt", (0.0,), F64, 0.0),
    ("fma", (0.0, INF, 1), F64, NAN), ("fma", (INF, 1, -INF), F64, NAN), ("fma", (2, 3, INF), F64, INF),
    # NaN operands propagate with their own sign (the first NaN in argument order)
    ("add", (-NAN, 1), F64, -NAN), ("add", (1, -NAN), F64, -NAN), ("sub", (1, NAN), F64, NAN),
    ("mul", (NAN, -NAN), F64, NAN), ("sqrt", (-NAN,), F64, -NAN), ("fma", (0.0, INF, -NAN), F64, -NAN),
    # special results then follow the format
    ("div", (1, 0), E4M3FN, NAN), ("mul", (300, 300), E4M3FN, NAN), ("add", (INF, 1), R.Float(3, 2, specials="none"), 28),
    ("div", (1, 0), R.Fixed(4, 2), Fr(7, 4)), ("div", (-1, 0), R.Fixed(4, 2), -2),
])
def test_special_cases(op, args, fmt, expected):
    got = getattr(R, op)(*args, fmt)
    assert same(got, expected if isinstance(expected, float) else Fr(expected)), (op, args, got)


def test_special_errors():
    with pytest.raises(ValueError):
        R.sub(INF, INF, R.Float(3, 2, specials="none"))       # NaN into a format without NaN
    with pytest.raises(ValueError):
        R.mul(0, INF, R.Fixed(8, 0))
    with pytest.raises(ValueError):
        R.div(1, 0, R.Fixed(8, 0), overflow="wrap")
    with pytest.raises(ValueError):
        R.add(1, 2, F64, overflow="wrap")
    with pytest.raises(ValueError):
        R.sqrt(2, F64, "stochastic")


@pytest.mark.parametrize("op, args, rounding, expected", [
    ("add", (0.0, -0.0), "nearest_even", 0.0), ("add", (0.0, -0.0), "down", -0.0), ("add", (-0.0, 0.0), "up", 0.0),
    ("add", (-0.0, -0.0), "nearest_even", -0.0), ("add", (0.0, 0.0), "down", 0.0),
    ("add", (1.5, -1.5), "nearest_even", 0.0), ("add", (1.5, -1.5), "down", -0.0),
    ("add", (1.5, -1.5), "toward_zero", 0.0), ("add", (-1.5, 1.5), "stochastic", 0.0),
    ("sub", (0.0, -0.0), "down", 0.0), ("sub", (-0.0, 0.0), "nearest_even", -0.0),   # x - (-x) keeps x's sign
    ("sub", (2.5, 2.5), "nearest_even", 0.0), ("sub", (2.5, 2.5), "down", -0.0), ("sub", (-0.0, -0.0), "nearest_even", 0.0),
    ("mul", (-0.0, 3), "nearest_even", -0.0), ("mul", (-0.0, -3), "nearest_even", 0.0),
    ("mul", (-2.0 ** -20, 2.0 ** -20), "nearest_even", -0.0),   # rounds to zero: keeps the exact sign
    ("mul", (-2.0 ** -20, 2.0 ** -20), "up", -0.0), ("div", (2.0 ** -30, -2.0 ** 20), "toward_zero", -0.0),
    ("fma", (0.0, -1, 0.0), "nearest_even", 0.0), ("fma", (0.0, -1, -0.0), "nearest_even", -0.0),
    ("fma", (2, 3, -6), "nearest_even", 0.0), ("fma", (2, 3, -6), "down", -0.0),
    ("fma", (-2.0 ** -20, 2.0 ** -20, 0.0), "nearest_even", -0.0),  # exact -2^-40 (not zero) rounds to -0
])
def test_zero_signs(op, args, rounding, expected):
    u = 0 if rounding == "stochastic" else None
    got = getattr(R, op)(*args, E5M2, rounding, u=u)
    assert same(got, expected), (op, args, rounding, got)


def test_single_zero_formats():
    assert same(R.sub(1.5, 1.5, R.Float(5, 2, specials="fnuz"), "down"), 0.0)
    assert same(R.mul(-0.0, 1, R.Float(5, 2, specials="fnuz")), 0.0)
    assert same(R.mul(-2.0 ** -20, 2.0 ** -20, R.Float(5, 2, specials="fnuz")), 0.0)
    assert same(R.sub(1.5, 1.5, R.Fixed(8, 2), "down"), 0.0)
    assert same(R.mul(-0.1, 0.1, R.Fixed(8, 2)), 0.0)


def test_float64_dot_matches_python_loops():
    a, b = doubles(37, 8, -20, 20), doubles(37, 9, -20, 20)
    p = [x * y for x, y in zip(a, b)]            # Python rounds each product to float64, as product=F64 does
    s = 0.0
    for v in p:
        s += v
    assert R.dot(a, b, F64, product=F64) == Fr(s)
    level = p
    while len(level) > 1:
        level = [level[i] + level[i + 1] for i in range(0, len(level) - 1, 2)] + level[len(level) // 2 * 2:]
    assert R.dot(a, b, F64, product=F64, order="pairwise") == Fr(0.0 + level[0])
    total = 1.5
    for i in range(0, 37, 5):
        c = 0.0
        for v in p[i:i + 5]:
            c += v
        total += c
    assert R.dot(a, b, F64, product=F64, order="chunked", chunk=5, init=1.5) == Fr(total)
    # exact products, one rounding per step: the k = 0 step is exact, so only the sum is rounded
    assert R.dot(a[:1], b[:1], F64, init=0.25) == R.fma(a[0], b[0], 0.25, F64)

"""emul.matmul/dot equal the golden model (reference/) bit for bit, in every accumulator configuration.

Small K (the reference is Fractions): every order, chunk size, outer format, product format, init,
rounding mode (SR with explicit words), overflow rule; operands near the accumulator's values and
ties, subnormal products, swamping, overflow on the way and recovery after it.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import emul
import emul.accumulate
import reference
from strategies import DETERMINISTIC, FIXED_RULES, MODES, edge_values, float_formats, fixed_formats


def same(got, want) -> bool:
    if isinstance(want, float):
        if math.isnan(want):
            return math.isnan(got) and math.copysign(1, got) == math.copysign(1, want)
        return got == want and math.copysign(1, got) == math.copysign(1, want)
    return math.isfinite(got) and Fraction(got) == want


ACCS = ["e4m7", "e5m6", "fp16", "bf16", "e4m7-nosub", "e4m3fn", "e5m2fnuz", "e3m2fn",
        "int12", "fx<7,0>", "fx<12,4>", "uint8", "fx<8,-2>", "fx<16,10>"]


def acc_formats():
    return st.one_of(st.sampled_from(ACCS).map(emul.format), float_formats(max_exp=6, max_man=12),
                     fixed_formats(max_bits=24))


def rules_for(fmts):
    """Overflow rules valid for every format in fmts (None: each format's default)."""
    if all(isinstance(f, emul.FloatFormat) for f in fmts):
        return st.sampled_from([None, "ieee", "saturate"])
    if all(isinstance(f, emul.FixedFormat) for f in fmts):
        rules = FIXED_RULES if all(f.signed for f in fmts) else FIXED_RULES[:4]
        return st.sampled_from([None] + rules)
    return st.just(None)


@st.composite
def terms(draw, acc, n):
    """n operand values: near the accumulator's values and ties (scaled), small integers, e4m3fn values."""
    out = []
    for _ in range(n):
        kind = draw(st.sampled_from(["edge", "scaled", "int", "e4m3", "zero"]))
        if kind == "edge":
            v = draw(edge_values(acc))
        elif kind == "scaled":
            v = draw(edge_values(acc))
            try:
                v = math.ldexp(v, draw(st.integers(-12, 12)))
            except OverflowError:
                v = math.copysign(math.inf, v)
        elif kind == "int":
            v = float(draw(st.integers(-70, 70)))
        elif kind == "e4m3":
            v = float(reference.decode(draw(st.integers(0, 255).filter(lambda c: c & 0x7F != 0x7F)),
                                       reference.Float(4, 3, specials="fn")))
        else:
            v = draw(st.sampled_from([0.0, -0.0]))
        out.append(v)
    return out


@st.composite
def configs(draw, max_k=12):
    acc = draw(acc_formats())
    order = draw(st.sampled_from(["sequential", "pairwise", "chunked"]))
    chunk = draw(st.integers(1, 5)) if order == "chunked" else None
    outer = draw(st.one_of(st.none(), acc_formats())) if order == "chunked" else None
    fmts = [acc] + ([outer] if outer is not None else [])
    overflow = draw(rules_for(fmts))
    mode = draw(st.sampled_from(MODES))
    product = draw(st.one_of(st.none(), st.sampled_from(["e4m3fn", "bf16", "fp16", "e5m2", "int8", "fx<10,4>"])
                             .map(emul.format), float_formats(max_exp=5, max_man=6)))
    product_rounding = draw(st.sampled_from(DETERMINISTIC))
    r = draw(st.integers(1, 32))
    method = draw(st.sampled_from(["add", "compare"]))
    M, N = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    K = draw(st.integers(1, max_k))
    A = [draw(terms(acc, K)) for _ in range(M)]
    B = [draw(terms(acc, N)) for _ in range(K)]
    final = outer if outer is not None else acc
    init = None
    if draw(st.booleans()):
        code = draw(st.integers(0, 2 ** (final.bits) - 1))
        try:
            init = reference.decode(code, final)
        except ValueError:
            init = None
        if isinstance(init, float) and math.isnan(init):
            init = None
    T = reference.sr_steps(K, order, chunk)
    words = [draw(st.integers(0, 2**r - 1)) for _ in range(M * N * T)] if mode == "stochastic" else None
    return dict(acc=acc, order=order, chunk=chunk, outer=outer, overflow=overflow, rounding=mode, product=product,
                product_rounding=product_rounding, sr_bits=r, sr_method=method, init=init), A, B, words


def run_both(cfg, A, B, words, fast=True):
    kw = dict(cfg)
    init = kw.pop("init")
    M, K, N = len(A), len(B), len(B[0])
    sr = kw["rounding"] == "stochastic"
    mine = dict(kw, init=None if init is None else float(init))
    if not sr:
        mine.pop("sr_bits"), mine.pop("sr_method")
    else:
        mine["random_bits"] = np.array(words, np.uint32).reshape(M, N, -1)
    try:
        with np.errstate(all="ignore"):
            got = emul.accumulate._matmul(np.array(A, np.float64), np.array(B, np.float64), mine.pop("acc"),
                                          mine.pop("product"), mine.pop("product_rounding"), mine.pop("rounding"),
                                          mine.pop("overflow"), mine.pop("order"), mine.pop("chunk"),
                                          mine.pop("outer"), mine.pop("init"), None, None, mine.pop("random_bits", None),
                                          mine.pop("sr_bits", None), mine.pop("sr_method", "add"), fast=fast)
    except ValueError:
        got = ValueError
    try:
        want = reference.matmul(A, B, u=words, init=init, **kw)
    except ValueError:
        want = ValueError
    return got, want


def check(cfg, A, B, words, fast=True):
    got, want = run_both(cfg, A, B, words, fast)
    if got is ValueError or want is ValueError:
        assert got is want, (cfg, A, B, words, got, want)
        return
    for i, row in enumerate(want):
        for j, w in enumerate(row):
            assert same(float(got[i, j]), w), (cfg, A, B, words, (i, j), float(got[i, j]), w)


@given(configs())
def test_matmul_matches_reference(case):
    check(*case)


@given(configs())
def test_general_path_matches_reference(case):
    check(*case, fast=False)


@st.composite
def integer_configs(draw):
    """Integer operands and a fixed-point accumulator: the paths that compute with exact integers."""
    acc = emul.format(draw(st.sampled_from(["int12", "fx<7,0>", "int16", "uint8", "fx<12,2>", "int24"])))
    rules = FIXED_RULES if acc.signed else FIXED_RULES[:4]
    overflow = draw(st.sampled_from(rules))
    order = draw(st.sampled_from(["sequential", "pairwise", "chunked"]))
    chunk = draw(st.integers(1, 6)) if order == "chunked" else None
    M, N, K = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 16))
    hi = draw(st.sampled_from([2, 8, 128, 3000]))
    A = [[draw(st.integers(-hi, hi)) for _ in range(K)] for _ in range(M)]
    B = [[draw(st.integers(-hi, hi)) for _ in range(N)] for _ in range(K)]
    mode = draw(st.sampled_from(MODES))
    T = reference.sr_steps(K, order, chunk)
    words = [draw(st.integers(0, 2**8 - 1)) for _ in range(M * N * T)] if mode == "stochastic" else None
    return dict(acc=acc, order=order, chunk=chunk, outer=None, overflow=overflow, rounding=mode, product=None,
                product_rounding="nearest_even", sr_bits=8, sr_method="add", init=None), A, B, words


@given(integer_configs())
def test_integer_accumulators_match_reference(case):
    check(*case)


@pytest.mark.parametrize("order,chunk", [("sequential", None), ("pairwise", None), ("chunked", 3)])
def test_k_zero_gives_init(order, chunk):
    for init in (None, 1.5, -0.0):
        got = emul.accumulate.dot(np.zeros(0), np.zeros(0), "fp16", order=order, chunk=chunk, init=init)
        want = reference.dot([], [], reference.Float(5, 10), order=order, chunk=chunk, init=init)
        assert same(float(got), want if init is not None or not isinstance(want, Fraction) else want)


@given(configs())
def test_rowwise_dot_matches_reference(case):
    """dot(axis=-1) on the stacked pairs (row i of A, column j of B) equals the reference's matmul
    element (i, j), SR words in the same layout (element i*N + j uses words (i*N + j)*T ...)."""
    cfg, A, B, words = case
    M, K, N = len(A), len(B), len(B[0])
    rows_a = np.array([A[i] for i in range(M) for _ in range(N)], np.float64).reshape(M * N, K)
    rows_b = np.array([[B[k][j] for k in range(K)] for _ in range(M) for j in range(N)], np.float64).reshape(M * N, K)
    kw = dict(cfg)
    init = kw.pop("init")
    acc = kw.pop("acc")
    if kw["rounding"] == "stochastic":
        kw["random_bits"] = np.array(words, np.uint32).reshape(M * N, -1)
    else:
        kw.pop("sr_bits"), kw.pop("sr_method")
    try:
        with np.errstate(all="ignore"):
            got = emul.dot(rows_a, rows_b, acc, axis=-1, init=None if init is None else float(init), **kw)
    except ValueError:
        got = ValueError
    try:
        want = reference.matmul(A, B, u=words, init=init, acc=acc, **{k: v for k, v in cfg.items()
                                                                       if k not in ("acc", "init")})
    except ValueError:
        want = ValueError
    if got is ValueError or want is ValueError:
        assert got is want, (cfg, A, B, words, got, want)
        return
    for i in range(M):
        for j in range(N):
            assert same(float(got[i * N + j]), want[i][j]), (cfg, A, B, words, (i, j), float(got[i * N + j]))

"""Property tests of emul.sparsity against reference/sparsity.py (hypothesis).

Exact claims, checked in Fractions: MVUE is unbiased (E = x exactly), its total variance is the
analytic minimum sum a_i^2/pi_i - a_i^2 (1:2: 2|a1||a2|), every outcome is n:m; the law of
emul.mvue_distribution equals the reference's independent enumeration; the float sampler picks
the law's outcome at u = word / 2^32; masks equal the reference's top-n / greedy / brute force."""

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import emul.random as er
import emul.sparsity as sp
import reference.sparsity as rs

F = Fraction
SETTINGS = settings(deadline=None)  # examples: the profile (root conftest.py)

# values whose float32 conversion is exact: small integers and dyadic fractions, many ties/zeros
value = st.one_of(
    st.integers(-12, 12),
    st.integers(-64, 64).map(lambda k: k / 8),
    st.sampled_from([0, 0, 0.5, -0.25, 100, 3]),
)


@st.composite
def block_nm(draw, ms=(2, 3, 4, 5, 6, 8)):
    m = draw(st.sampled_from(ms))
    n = draw(st.integers(1, m))
    block = draw(st.lists(value, min_size=m, max_size=m))
    return block, n, m


def law_of(block, n, m, method="exact"):
    d = sp.mvue_distribution(block, n, m, method)
    law = {o: p for p, o in d}
    assert len(law) == len(d)
    return law


@SETTINGS
@given(block_nm())
def test_exact_law_equals_reference_and_is_unbiased_min_variance(args):
    block, n, m = args
    law = law_of(block, n, m)
    assert law == rs.mvue_law(block, n)
    assert all(p > 0 for p in law.values()) and sum(law.values()) == 1
    x = tuple(F(v) for v in block)
    assert rs.expectation(law) == x  # E[mvue] == x exactly
    var = rs.total_variance(law, block)
    assert var == rs.min_total_variance(block, n)
    nz = sum(v != 0 for v in x)
    for outcome in law:
        assert sum(v != 0 for v in outcome) == min(n, nz)  # every outcome is n:m
        assert all(v == 0 for v, xv in zip(outcome, x) if xv == 0)
    if m == 2 and n == 1:
        assert var == 2 * abs(x[0]) * abs(x[1])


@SETTINGS
@given(st.lists(value, min_size=4, max_size=4))
def test_2_4_matches_papers_closed_form_marginals_and_variance(block):
    x = tuple(F(v) for v in block)
    assume(sum(v != 0 for v in x) >= 3)
    law = law_of(block, 2, 4)
    closed = rs.mvue24_closed_form(block)
    assert rs.expectation(closed) == x
    marg = lambda lw: [sum(p for o, p in lw.items() if o[i] != 0) for i in range(4)]  # noqa: E731
    assert marg(law) == marg(closed) == rs.optimal_marginals(block, 2)
    assert rs.total_variance(law, block) == rs.total_variance(closed, block)
    a = sorted(abs(v) for v in x)
    s = sum(a)
    if a[3] <= a[0] + a[1] + a[2]:  # Case I: S^2/2 - sum a^2
        assert rs.total_variance(law, block) == s * s / 2 - sum(v * v for v in a)


@SETTINGS
@given(st.lists(value, min_size=4, max_size=4))
def test_approx_law_equals_reference_unbiased_and_not_below_minimum(block):
    law = law_of(block, 2, 4, "approx")
    assert law == rs.mvue_law(block, 2, "approx")
    assert sum(law.values()) == 1
    x = tuple(F(v) for v in block)
    assert rs.expectation(law) == x
    assert rs.total_variance(law, block) >= rs.min_total_variance(block, 2)
    nz = sum(v != 0 for v in x)
    assert all(sum(v != 0 for v in o) == min(2, nz) for o in law)


def _near_cut(block, n, word, method):
    """True when moving u by +-5000/2^32 changes the exact outcome (float rounding may differ)."""
    base = _outcome(block, n, word, method)
    for dw in (-5000, 5000):
        w = np.clip(np.asarray(word, dtype=np.int64) + dw, 0, 2**32 - 1)
        if _outcome(block, n, w, method) != base:
            return True
    return False


def _outcome(block, n, word, method):
    if method == "exact":
        return rs.mvue_outcome_at(block, n, F(int(word), 2**32))
    return rs.mvue_outcome_at(block, n, (F(int(word[0]), 2**32), F(int(word[1]), 2**32)), "approx")


@SETTINGS
@given(block_nm(), st.integers(0, 2**32 - 1), st.sampled_from([np.float32, np.float64]))
def test_sampler_picks_the_law_outcome_at_its_word(args, seed, dtype):
    block, n, m = args
    x = np.array([block], dtype=dtype)
    out = sp.mvue(x, n, m, seed=seed)[0]
    word = er.bits(er.key(seed), (1,))[0]
    assume(not _near_cut(block, n, word, "exact"))
    exp = _outcome(block, n, word, "exact")
    assert [v != 0 for v in out] == [v != 0 for v in exp]
    np.testing.assert_allclose(out.astype(np.float64), [float(v) for v in exp], rtol=1e-6)


@SETTINGS
@given(st.lists(value, min_size=4, max_size=4), st.integers(0, 2**32 - 1),
       st.sampled_from([np.float32, np.float64]))
def test_approx_sampler_picks_the_law_outcome_at_its_words(block, seed, dtype):
    out = sp.mvue(np.array([block], dtype=dtype), 2, 4, seed=seed, method="approx")[0]
    words = er.bits(er.key(seed), (2,))
    assume(not _near_cut(block, 2, words, "approx"))
    exp = _outcome(block, 2, words, "approx")
    assert [v != 0 for v in out] == [v != 0 for v in exp]
    np.testing.assert_allclose(out.astype(np.float64), [float(v) for v in exp], rtol=1e-6)


@SETTINGS
@given(block_nm(ms=(1, 2, 4, 5, 8)), st.sampled_from(["low_index", "high_index"]))
def test_nm_mask_equals_reference(args, ties):
    block, n, m = args
    got = sp.nm_mask(np.array(block, dtype=np.float64), n, m, ties=ties)
    assert list(got) == rs.nm_mask_block(block, n, ties)
    assert got.sum() == n


tile_value = st.one_of(st.integers(-4, 4), st.integers(-1000, 1000).map(lambda k: k / 16))


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 3), st.lists(tile_value, min_size=16, max_size=16))
def test_transposable_4x4_equals_bruteforce_and_greedy_reference(n, values):
    t = np.array(values, dtype=np.float64).reshape(4, 4)
    got = sp.transposable_mask(t, n, 4)
    exp, _ = rs.optimal_tile_bruteforce(t.tolist(), n)
    assert got.tolist() == exp
    g = sp.transposable_mask(t, n, 4, method="greedy")
    assert g.tolist() == rs.greedy_tile(t.tolist(), n)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 4), st.lists(st.integers(0, 3), min_size=25, max_size=25))
def test_transposable_5x5_equals_bruteforce(n, values):
    t = np.array(values, dtype=np.float64).reshape(5, 5)
    got = sp.transposable_mask(t, n, 5)
    exp, _ = rs.optimal_tile_bruteforce(t.tolist(), n)
    assert got.tolist() == exp


@pytest.mark.slow
@settings(max_examples=10, deadline=None)
@given(st.integers(1, 3), st.lists(st.integers(0, 3), min_size=36, max_size=36))
def test_transposable_6x6_equals_bruteforce(n, values):
    t = np.array(values, dtype=np.float64).reshape(6, 6)
    got = sp.transposable_mask(t, n, 6)
    exp, _ = rs.optimal_tile_bruteforce(t.tolist(), n)
    assert got.tolist() == exp


@st.composite
def near_tie_tile(draw):
    """(tile, n, m, dtype): magnitudes 2^e (1 + k ulp) for a few exponents per tile, drawn from
    the whole range of the dtype (subnormals included), both signs, zeros."""
    dtype = draw(st.sampled_from([np.float16, np.float32, np.float64]))
    fi = np.finfo(dtype)
    m = draw(st.sampled_from([2, 3, 4, 5]))
    n = draw(st.integers(1, m))
    exps = draw(st.lists(st.integers(fi.minexp - fi.nmant, fi.maxexp - 1), min_size=1, max_size=3))
    vals = []
    for _ in range(m * m):
        e = draw(st.sampled_from(exps))
        k = draw(st.integers(0, 3))
        v = 2.0**e + k * 2.0 ** max(e - fi.nmant, fi.minexp - fi.nmant)
        vals.append(draw(st.sampled_from([v, -v, 0.0])))
    tile = np.array(vals).reshape(m, m).astype(dtype)
    return tile, n, m


@settings(max_examples=150, deadline=None)
@given(near_tie_tile())
def test_transposable_optimal_is_exact_on_near_ties(args):
    """The optimal mask maximises the exact kept sum (1-ulp differences at any magnitude, mixed
    magnitudes, subnormals; float16/32/64), lexicographically smallest among optima."""
    tile, n, m = args
    exp, _ = rs.optimal_tile_exact(tile.tolist(), n)
    assert sp.transposable_mask(tile, n, m).tolist() == exp
    if m <= 4:
        assert rs.optimal_tile_bruteforce(tile.tolist(), n)[0] == exp


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 6).flatmap(lambda m: st.tuples(st.integers(1, m), st.just(m))))
def test_mask_diversity_equals_reference_count(nm):
    n, m = nm
    assert sp.mask_diversity(n, m, transposable=True) == rs.count_regular(m, n)

"""Tests for emul.sparsity: top-n masks, MVUE (exact laws, sampler vs law, chi-square), the
top-n bias, transposable masks against brute force / LP and PAPERS.md B.3, mask diversity,
layouts and bad input."""

import subprocess
import sys
from fractions import Fraction

import numba
import numpy as np
import pytest

import emul.random as er
import emul.sparsity as sp
import reference.sparsity as rs

F = Fraction


def law_of(block, n, m, method="exact"):
    return {o: p for p, o in sp.mvue_distribution(block, n, m, method)}


def frac_block(block):
    return tuple(F(v) for v in block)


# ----------------------------------------------------------------------------- import hygiene


def test_import_imports_neither_jax_nor_scipy_nor_compiles():
    """Importing emul.sparsity loads no JAX, no SciPy and not even Numba (kernels load on first use)."""
    code = (
        "import sys\n"
        "import emul.sparsity\n"
        "loaded = [k for k in sys.modules if k.split('.')[0] in ('jax', 'scipy', 'numba')]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------- nm_mask / nm_prune

NM_TABLE = [
    # block, n, ties, expected kept
    ((1, -4, 3, 2), 2, "low_index", (0, 1, 1, 0)),
    ((0, 0, 0, 0), 2, "low_index", (1, 1, 0, 0)),
    ((0, 0, 0, 0), 2, "high_index", (0, 0, 1, 1)),
    ((5, -5, 5, 1), 2, "low_index", (1, 1, 0, 0)),
    ((5, -5, 5, 1), 2, "high_index", (0, 1, 1, 0)),
    ((-0.0, 0.0, 1, 0), 2, "low_index", (1, 0, 1, 0)),
    ((3, 1), 1, "low_index", (1, 0)),
    ((1, 1), 1, "high_index", (0, 1)),
    ((np.nan, 1e30, np.inf, 2), 2, "low_index", (1, 0, 1, 0)),
    ((np.nan, np.nan, 1, 2), 1, "high_index", (0, 1, 0, 0)),
    ((1, 2, 3, 4, 5, 6, 7, 8), 8, "low_index", (1,) * 8),
]


@pytest.mark.parametrize("block,n,ties,expected", NM_TABLE)
def test_nm_mask_table(block, n, ties, expected):
    m = len(block)
    got = sp.nm_mask(np.array(block, dtype=np.float64), n, m, ties=ties)
    assert got.dtype == np.bool_
    assert tuple(int(v) for v in got) == expected
    assert [bool(v) for v in expected] == rs.nm_mask_block(list(block), n, ties)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int8, np.int64, np.uint16])
def test_nm_mask_matches_reference_on_random_data(dtype):
    rng = np.random.default_rng(0)
    x = rng.integers(-3, 4, size=(50, 8)).astype(dtype)
    for ties in ("low_index", "high_index"):
        got = sp.nm_mask(x, 3, 8, ties=ties)
        for row, g in zip(x, got):
            assert list(g) == rs.nm_mask_block([int(v) for v in row], 3, ties)


def test_nm_mask_int64_extremes_exact():
    x = np.array([[-(2**63), 2**63 - 1, 2**62, -(2**53) - 1]], dtype=np.int64)
    assert sp.nm_mask(x, 2, 4).tolist() == [[True, True, False, False]]
    x = np.array([[2**53 + 1, 2**53, 2**53, 0]], dtype=np.int64)  # equal as float64
    assert sp.nm_mask(x, 1, 4).tolist() == [[True, False, False, False]]


def test_nm_mask_axis_and_block_numbering():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 3, 4))
    for axis in (0, 1, 2, -1, -3):
        if x.shape[axis] % 4 and x.shape[axis] % 2:
            continue
        m = 4 if x.shape[axis] % 4 == 0 else 2
        got = sp.nm_mask(x, 1, m, axis=axis)
        moved = np.moveaxis(x, axis, -1)
        ref = np.moveaxis(sp.nm_mask(np.ascontiguousarray(moved), 1, m), -1, axis)
        assert np.array_equal(got, ref)
        assert (np.moveaxis(got, axis, -1).reshape(-1, m).sum(1) == 1).all()


def test_nm_prune_keeps_dtype_and_writes_plus_zero():
    x = np.array([[-1.0, -2.0, -3.0, np.inf], [4, -5, 6, -7]], dtype=np.float32)
    got = sp.nm_prune(x, 2, 4)
    assert got.dtype == np.float32
    assert got.tolist() == [[0.0, 0.0, -3.0, np.inf], [0.0, 0.0, 6.0, -7.0]]
    assert not np.signbit(got[0, 0]) and not np.signbit(got[0, 1])
    xi = np.array([3, -9, 1, 2], dtype=np.int16)
    assert sp.nm_prune(xi, 1, 4).tolist() == [0, -9, 0, 0]
    assert sp.nm_prune(xi, 1, 4).dtype == np.int16


def test_empty_and_strided_inputs():
    assert sp.nm_mask(np.zeros((0, 4)), 2, 4).shape == (0, 4)
    assert sp.mvue(np.zeros((3, 0)), 2, 4, seed=0).shape == (3, 0)
    x = np.arange(64, dtype=np.float32).reshape(8, 8)[:, ::2]
    assert np.array_equal(sp.nm_mask(x, 2, 4), sp.nm_mask(x.copy(), 2, 4))
    assert np.array_equal(sp.mvue(x, 2, 4, seed=3), sp.mvue(x.copy(), 2, 4, seed=3))


# ----------------------------------------------------------------------------- MVUE laws

# PAPERS.md A.3/A.4/A.5 total-variance vectors: (block, n, method, total variance)
VARIANCE_TABLE = [
    ((3, -1), 1, "exact", F(6)),
    ((-1, -1), 1, "exact", F(2)),
    ((0, 2), 1, "exact", F(0)),
    ((1, 2, 3, 4), 2, "exact", F(20)),
    ((1, 1, 1, 10), 2, "exact", F(6)),
    ((0.5, 1, 1, 2.4), 2, "exact", None),  # 3.995 for the decimal 2.4; float 2.4 checked below
    ((-3, 0, 1, 1), 2, "exact", F(2)),
    ((2, 2, 2, 2), 2, "exact", F(16)),
    ((2, 2, 2, 2), 2, "approx", F(16)),
]


@pytest.mark.parametrize("block,n,method,var", VARIANCE_TABLE)
def test_total_variance_vectors(block, n, method, var):
    m = len(block)
    law = law_of(block, n, m, method)
    assert sum(law.values()) == 1
    assert rs.expectation(law) == frac_block(block)
    if var is not None:
        assert rs.total_variance(law, block) == var


def test_total_variance_decimal_inputs():
    from decimal import Decimal

    block = [Decimal("0.5"), 1, 1, Decimal("2.4")]
    law = law_of(block, 2, 4)
    assert rs.total_variance(law, [F("0.5"), 1, 1, F("2.4")]) == F("3.995")
    assert abs(float(rs.total_variance(law_of((0.5, 1, 1, 2.4), 2, 4), (0.5, 1, 1, 2.4))) - 3.995) < 1e-12


def test_approx_variance_and_inclusion_vectors():
    law = law_of((1, 2, 3, 4), 2, 4, "approx")
    assert round(float(rs.total_variance(law, (1, 2, 3, 4))), 4) == 20.4736
    pi = [sum(p for o, p in law.items() if o[i] != 0) for i in range(4)]
    assert [round(float(p), 6) for p in pi] == [0.234524, 0.44127, 0.608333, 0.715873]
    law = law_of((1, 1, 1, 10), 2, 4, "approx")
    assert round(float(rs.total_variance(law, (1, 1, 1, 10))), 4) == 9.6667
    pi = [sum(p for o, p in law.items() if o[i] != 0) for i in range(4)]
    assert [round(float(p), 6) for p in pi] == [0.346154] * 3 + [0.961538]


def test_mvue_1_2_outcomes():
    assert law_of((3, -1), 1, 2) == {(F(4), F(0)): F(3, 4), (F(0), F(-4)): F(1, 4)}
    assert law_of((0, 2), 1, 2) == {(F(0), F(2)): F(1)}
    assert law_of((0, 0), 1, 2) == {(F(0), F(0)): F(1)}


def test_mvue_2_4_case_two_keeps_largest_with_own_value():
    law = law_of((1, 1, 1, 10), 2, 4)
    assert all(o[3] == 10 for o in law)
    assert law == {(F(3), 0, 0, F(10)): F(1, 3), (0, F(3), 0, F(10)): F(1, 3), (0, 0, F(3), F(10)): F(1, 3)}
    assert law_of((0, 0, 0, 5), 2, 4) == {(0, 0, 0, F(5)): F(1)}


def test_distribution_format_and_order():
    d = sp.mvue_distribution(np.array([1, 2, 3, 4], dtype=np.float32), 2, 4)
    assert all(isinstance(p, Fraction) and isinstance(o, tuple) for p, o in d)
    assert all(isinstance(v, Fraction) for _, o in d for v in o)
    assert sum(p for p, _ in d) == 1 and len({o for _, o in d}) == len(d)
    # "exact" lists outcomes by increasing u: u in [0, 0.2) keeps (1, 3) (C = 0.2, 0.6, 1.2, 2)
    assert d[0] == (F(1, 5), (F(5), 0, F(5), 0))


# ----------------------------------------------------------------------------- MVUE sampler


def test_seed_and_key_are_equivalent_and_deterministic():
    x = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)
    a = sp.mvue(x, 2, 4, seed=7)
    assert np.array_equal(a, sp.mvue(x, 2, 4, key=er.key(7)))
    assert np.array_equal(a, sp.mvue(x, 2, 4, key=np.array([0, 7], dtype=np.uint32)))
    assert not np.array_equal(a, sp.mvue(x, 2, 4, seed=8))
    assert a.dtype == np.float32 and a.shape == x.shape


def _outcome_at_word(block, n, word, method="exact"):
    if method == "exact":
        return rs.mvue_outcome_at(block, n, F(int(word), 2**32))
    return rs.mvue_outcome_at(block, n, (F(int(word[0]), 2**32), F(int(word[1]), 2**32)), "approx")


@pytest.mark.parametrize("n,m,method", [(1, 2, "exact"), (2, 4, "exact"), (1, 4, "exact"), (3, 4, "exact"),
                                        (4, 8, "exact"), (3, 5, "exact"), (2, 4, "approx")])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sampler_follows_word_layout_and_law(n, m, method, dtype):
    """Block b uses word b (approx: 2b, 2b+1) of bits(key, ...), and the kept set is the law's
    outcome at u = word / 2^32 (small integer data: every float operation is close to exact;
    words within 1e-6 of a cut are skipped)."""
    rng = np.random.default_rng(n * 100 + m)
    nb = 300
    x = rng.integers(-6, 7, size=(nb, m)).astype(dtype)
    x[::7] = 0
    x[1::11, : m - n] = 0
    out = sp.mvue(x, n, m, seed=11, method=method)
    words = er.bits(er.key(11), (nb if method == "exact" else 2 * nb,))
    checked = 0
    for b in range(nb):
        blk = [int(v) for v in x[b]]
        w = words[b] if method == "exact" else words[2 * b: 2 * b + 2]
        exp = _outcome_at_word(blk, n, w, method)
        near = False
        for dw in (-5000, 5000):  # the same outcome slightly left and right: not near a cut
            ww = (np.clip(np.int64(w) + dw, 0, 2**32 - 1))
            if _outcome_at_word(blk, n, ww, method) != exp:
                near = True
        if near:
            continue
        checked += 1
        got = out[b]
        assert [g != 0 for g in got] == [e != 0 for e in exp], (blk, w)
        np.testing.assert_allclose(got.astype(np.float64), [float(e) for e in exp], rtol=1e-6)
    assert checked > nb * 0.9


def test_zero_blocks_skip_their_words_but_keep_positions():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((40, 4)).astype(np.float32)
    y = x.copy()
    y[::3] = 0
    a = sp.mvue(x, 2, 4, seed=5)
    b = sp.mvue(y, 2, 4, seed=5)
    assert np.array_equal(a[y.any(1)], b[y.any(1)])
    assert (b[~y.any(1)] == 0).all() and not np.signbit(b[~y.any(1)]).any()
    assert not np.signbit(sp.mvue(np.array([-0.0, 0.0, -0.0, 0.0]), 2, 4, seed=0)).any()


def test_sparse_enough_blocks_are_returned_unchanged():
    x = np.array([[0, -3, 0, 2], [0, 0, 0, 7.5], [1, 0, 0, 0]], dtype=np.float32)
    assert np.array_equal(sp.mvue(x, 2, 4, seed=1), x)
    assert np.array_equal(sp.mvue(x, 2, 4, seed=1, method="approx"), x)


def test_non_finite_blocks_become_nan():
    x = np.array([[1, 2, np.inf, 3], [1, 2, 3, 4], [np.nan, 0, 0, 0]], dtype=np.float32)
    for method in ("exact", "approx"):
        got = sp.mvue(x, 2, 4, seed=0, method=method)
        assert np.isnan(got[0]).all() and np.isnan(got[2]).all() and np.isfinite(got[1]).all()


def test_overflow_guard_and_subnormals():
    big = np.finfo(np.float32).max
    x = np.array([[big / 2, big / 2, big / 2, big / 4]], dtype=np.float32)
    for method in ("exact", "approx"):
        got = sp.mvue(np.repeat(x, 64, 0), 2, 4, seed=1, method=method)
        assert ((got != 0).sum(1) == 2).all()
        # kept values ~ S/2 = 0.875 max (exact); approx values are finite or a genuine overflow
        if method == "exact":
            assert np.isfinite(got).all()
            np.testing.assert_allclose(got[got != 0], big * 0.875, rtol=1e-6)
    tiny = np.array([[1e-45, 2e-45, 3e-45, 4e-45]], dtype=np.float32)
    got = sp.mvue(np.repeat(tiny, 64, 0), 2, 4, seed=1)
    assert ((got != 0).sum(1) == 2).all() and np.isfinite(got).all()


def test_float16_and_integer_inputs():
    x16 = np.array([[1, 2, 3, 4]], dtype=np.float16)
    g = sp.mvue(np.repeat(x16, 10, 0), 2, 4, seed=0)
    assert g.dtype == np.float16 and set(np.unique(g).tolist()) <= {0.0, 5.0}
    xi = np.array([[1, 2, 3, 4]], dtype=np.int32)
    g = sp.mvue(xi, 2, 4, seed=0)
    assert g.dtype == np.float64 and set(np.unique(g).tolist()) <= {0.0, 5.0}


def test_ml_dtypes_inputs():
    """bfloat16 is computed in bfloat16 (above); float8 types in float32 with the outputs rounded
    once to the dtype; ml_dtypes integers like integers (float64)."""
    ml_dtypes = pytest.importorskip("ml_dtypes")

    x = np.random.default_rng(32).standard_normal((64, 4)).astype(np.float32)
    e = x.astype(ml_dtypes.float8_e4m3fn)
    for method in ("exact", "approx"):
        got = sp.mvue(e, 2, 4, seed=2, method=method)
        assert got.dtype == e.dtype
        want = sp.mvue(e.astype(np.float32), 2, 4, seed=2, method=method).astype(e.dtype)
        assert np.array_equal(got.view(np.uint8), want.view(np.uint8))
    i4 = np.array([[1, -2, 3, 4]], dtype=ml_dtypes.int4)
    g = sp.mvue(i4, 2, 4, seed=0)
    assert g.dtype == np.float64
    assert np.array_equal(g, sp.mvue(np.array([[1, -2, 3, 4]]), 2, 4, seed=0))


# --- the documented arithmetic, written out with numpy / ml_dtypes scalars (every +, *, / of a
# scalar type T is T's own correctly rounded operation), block by block


def _scalar_type(name):
    if name == "bfloat16":
        return pytest.importorskip("ml_dtypes").bfloat16
    return np.dtype(name).type


def _plain_mvue_exact(x, n, word, T):
    m = len(x)
    zero, big = T(0), float(_finfo_of(T).max)
    a = [abs(v) for v in x]
    if not all(np.isfinite(float(v)) for v in a):
        return None
    if sum(float(v) != 0 for v in a) <= n:
        return [v if float(v) != 0 else zero for v in x]
    q = (n * m - 1).bit_length()
    r = zero
    for v in a:
        r = r + v
    scaled = not float(T(n) * r) <= big
    if scaled:
        a = [v * T(2.0**-q) for v in a]
    capped = [False] * m
    while True:
        r = zero
        for i in range(m):
            if not capped[i]:
                r = r + a[i]
        t = n - sum(capped)
        if t == 1:
            break
        imax = max((i for i in range(m) if not capped[i]), key=lambda i: (float(a[i]), -i))
        if float(T(t) * a[imax]) >= float(r):
            capped[imax] = True
        else:
            break
    tf = T(t)
    v = r / tf
    if scaled:
        v = v * T(2.0**q)
    last = [i for i in range(m) if not capped[i] and float(a[i]) != 0][-1]
    u = int(word) / 2**32
    out, j, d = [], 0, zero
    for i in range(m):
        if capped[i] or float(a[i]) == 0:
            out.append(x[i] if capped[i] else zero)
            continue
        d = d + a[i]
        c = float(t) if i == last else float((tf * d) / r)
        sel = False
        while j < t and u + j < c:
            j, sel = j + 1, True
        out.append(T(np.copysign(float(v), float(x[i]))) if sel else zero)
    return out


def _plain_mvue_approx(x, words, T):
    zero, one, big = T(0), T(1), float(_finfo_of(T).max)
    a = [abs(v) for v in x]
    if not all(np.isfinite(float(v)) for v in a):
        return None
    if sum(float(v) != 0 for v in a) <= 2:
        return [v if float(v) != 0 else zero for v in x]

    def total(vals):
        s = zero
        for v in vals:
            s = s + v
        return s

    s = total(a)
    e = 15 if T is np.float16 else 64
    if not float(s) <= big:
        a = [v * T(0.25) for v in a]
        s = total(a)
    elif float(s) < 2.0**-e:
        a = [v * T(2.0**e) for v in a]
        s = total(a)
    R = [total([a[k] for k in range(4) if k != j]) for j in range(4)]
    inv = one / s

    def draw(idx, u, scale):
        last = [i for i in idx if float(a[i]) != 0][-1]
        d = zero
        for i in idx:
            d = d + a[i]
            if float(a[i]) != 0 and (i == last or u < float(d * scale)):
                return i

    first = draw(range(4), int(words[0]) / 2**32, inv)
    second = draw([i for i in range(4) if i != first], int(words[1]) / 2**32, one / R[first])
    t = [v * inv for v in a]
    out = [zero] * 4
    for i in (first, second):
        p = t[i]
        for j in range(4):
            if j != i:
                p = p + t[j] * (a[i] / R[j])
        out[i] = x[i] / p
    return out


def _finfo_of(T):
    if np.dtype(T).kind == "f":
        return np.finfo(T)
    return pytest.importorskip("ml_dtypes").finfo(T)


def _bit_blocks(rng, nb, m, T):
    """Blocks of T built from bit patterns: near-ties (codes within 2 of a base code, any
    magnitude, subnormals included, both signs, zeros), uniform codes, codes near the largest
    finite value (overflow guards) and subnormal-only blocks."""
    bits = 8 * np.dtype(T).itemsize
    ut = {16: np.uint16, 32: np.uint32, 64: np.uint64}[bits]
    fi = _finfo_of(T)
    top = int(np.array(fi.max, dtype=T).view(ut))  # largest finite magnitude code
    mant = 1 << fi.nmant
    kind = rng.integers(0, 5, nb)
    base = rng.integers(0, top + 1, nb, dtype=np.uint64)
    base = np.where(kind == 2, top - rng.integers(0, 3 * mant, nb).astype(np.uint64), base)
    base = np.where(kind == 3, rng.integers(0, mant, nb).astype(np.uint64), base)
    code = base[:, None].astype(np.int64) + rng.integers(-2, 3, (nb, m))
    code = np.where((kind == 1)[:, None], rng.integers(0, top + 1, (nb, m), dtype=np.uint64).astype(np.int64), code)
    code = np.clip(code, 0, top)
    code = np.where(rng.integers(0, 8, (nb, m)) == 0, 0, code)  # zeros
    sign = rng.integers(0, 2, (nb, m)).astype(np.uint64) << np.uint64(bits - 1)
    return (code.astype(np.uint64) | sign).astype(ut).view(T)


MVUE_PLAIN_CASES = [(2, 4, "exact"), (2, 4, "approx"), (1, 2, "exact"), (3, 8, "exact"), (1, 4, "exact"),
                    (3, 5, "exact")]


@pytest.mark.parametrize("n,m,method", MVUE_PLAIN_CASES)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_mvue_equals_the_documented_arithmetic_in_the_input_dtype(dtype, n, m, method):
    """Bit for bit: mvue on float16/bfloat16 blocks equals a plain per-block implementation of
    the documented algorithm with float16/bfloat16 scalars (each operation rounded to the dtype);
    float32/float64 likewise with their own scalars.  Blocks: near-ties at every magnitude,
    subnormals, values near the largest finite one, uniform bit patterns, zeros, both signs."""
    T = _scalar_type(dtype)
    rng = np.random.default_rng([n, m, len(method), len(dtype)])
    nb = 400
    x = _bit_blocks(rng, nb, m, T)
    out = sp.mvue(x, n, m, seed=17, method=method)
    assert out.dtype == x.dtype
    words = er.bits(er.key(17), (nb if method == "exact" else 2 * nb,))
    for b in range(nb):
        blk = list(x[b])
        with np.errstate(all="ignore"):  # overflow to inf is part of the arithmetic
            if method == "exact":
                exp = _plain_mvue_exact(blk, n, words[b], T)
            else:
                exp = _plain_mvue_approx(blk, words[2 * b: 2 * b + 2], T)
        if exp is None:
            assert np.isnan(out[b].astype(np.float64)).all()
            continue
        got = out[b]
        want = np.array(exp, dtype=T)
        assert np.array_equal(got.view(np.uint8), want.view(np.uint8)), (dtype, blk, got, want)


def test_float16_2_4_results_differ_from_float32_arithmetic():
    """Guard against computing float16 blocks in float32: on random float16 2:4 blocks a sizeable
    share of kept values (or choices) differs between the two arithmetics."""
    rng = np.random.default_rng(30)
    x = rng.standard_normal((4000, 4)).astype(np.float16)
    h = sp.mvue(x, 2, 4, seed=3)
    f = sp.mvue(x.astype(np.float32), 2, 4, seed=3).astype(np.float16)
    assert (h != f).any(axis=1).mean() > 0.1


def test_rounding_helpers_match_numpy_and_ml_dtypes_casts():
    """_rd_f16 / _rd_bf16 (float32 -> nearest float16 / bfloat16, ties to even, overflow to inf)
    equal numpy's and ml_dtypes' casts on ties, neighbours of ties, subnormals, the overflow
    threshold and random float32 values."""
    from numba import njit

    from emul._kernels import sparsity as k

    ml_dtypes = pytest.importorskip("ml_dtypes")

    @njit
    def apply(v, out16, outbf):
        for i in range(v.size):
            out16[i] = k._rd_f16(v[i])
            outbf[i] = k._rd_bf16(v[i])

    rng = np.random.default_rng(31)
    codes = [rng.integers(0, 2**32, 200_000, dtype=np.uint64)]
    for shift in (13, 16):  # every tie (and its neighbours) of a sample of target codes
        t = rng.integers(0, 2**32 >> shift, 50_000, dtype=np.uint64) << np.uint64(shift)
        half = np.uint64(1 << (shift - 1))
        codes += [t | half, (t | half) + np.uint64(1), (t | half) - np.uint64(1)]
    v = np.concatenate(codes).astype(np.uint32).view(np.float32)
    v = np.concatenate([v, np.float32([65504, 65519.996, 65520, 65535, 2.0**-24, 2.0**-25, 3 * 2.0**-26,
                                       2.0**-14 - 2.0**-25, np.inf, -np.inf, 0, -0.0])])
    o16, obf = np.empty_like(v), np.empty_like(v)
    apply(v, o16, obf)
    with np.errstate(over="ignore", invalid="ignore"):
        w16 = v.astype(np.float16).astype(np.float32)
        wbf = v.astype(ml_dtypes.bfloat16).astype(np.float32)
    fin = ~np.isnan(v)
    assert np.array_equal(o16[fin].view(np.uint32), w16[fin].view(np.uint32))
    assert np.array_equal(obf[fin].view(np.uint32), wbf[fin].view(np.uint32))
    assert np.isnan(o16[~fin]).all() and np.isnan(obf[~fin]).all()


def test_independent_of_thread_count():
    x = np.random.default_rng(3).standard_normal((4096, 16)).astype(np.float32)
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        a = [sp.mvue(x, n, m, seed=9, method=me) for n, m, me in [(2, 4, "exact"), (2, 4, "approx"), (3, 8, "exact")]]
        t1 = sp.transposable_mask(x[:64], 2, 4), sp.transposable_mask(x[:64], 4, 8, method="greedy")
        numba.set_num_threads(old)
        b = [sp.mvue(x, n, m, seed=9, method=me) for n, m, me in [(2, 4, "exact"), (2, 4, "approx"), (3, 8, "exact")]]
        t2 = sp.transposable_mask(x[:64], 2, 4), sp.transposable_mask(x[:64], 4, 8, method="greedy")
    finally:
        numba.set_num_threads(old)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert all(np.array_equal(u, v) for u, v in zip(t1, t2))


def test_one_compiled_kernel_for_float16_bfloat16_float32_and_read_only_inputs():
    """float16, bfloat16 and float32 data run one compiled float32 MVUE kernel (the rounding is a
    run-time mode) and read-only inputs no other (Numba types a read-only array apart): every
    signature costs seconds of compile on a cold cache.  Read-only inputs give the same bits."""
    from emul._kernels import sparsity as k

    ml_dtypes = pytest.importorskip("ml_dtypes")
    x = np.random.default_rng(4).standard_normal((64, 4)).astype(np.float32)
    for dt in (np.float32, np.float16, ml_dtypes.bfloat16):
        a = x.astype(dt)
        ro = a.copy()
        ro.setflags(write=False)
        assert np.array_equal(sp.mvue(ro, 2, 4, seed=1).view(np.uint8), sp.mvue(a, 2, 4, seed=1).view(np.uint8))
    ro = x.copy()
    ro.setflags(write=False)
    assert np.array_equal(sp.nm_mask(ro, 2, 4), sp.nm_mask(x, 2, 4))
    assert np.array_equal(sp.transposable_mask(ro[:16], 2, 4), sp.transposable_mask(x[:16], 2, 4))
    for kernel in (k.mvue_exact24_blocks, k.nm_mask_blocks, k.transposable_optimal_24_tiles):
        assert all(t.mutable for sig in kernel.signatures for t in sig if isinstance(t, numba.types.Array))
    assert len([sig for sig in k.mvue_exact24_blocks.signatures if sig[0].dtype == numba.types.float32]) == 1


def test_axis_numbering_matches_moved_layout():
    x = np.random.default_rng(4).standard_normal((8, 3)).astype(np.float32)
    a = sp.mvue(x, 2, 4, axis=0, seed=2)
    b = sp.mvue(np.ascontiguousarray(x.T), 2, 4, seed=2).T
    assert np.array_equal(a, b)


CHI_BLOCKS = [
    ((1, 2, 3, 4), 2, "exact"),
    ((0.5, 1, 1, 2.4), 2, "exact"),   # Case Ib region
    ((1, 1, 1, 10), 2, "exact"),      # Case II
    ((3, -1), 1, "exact"),
    ((1, 5, 2, 0, 3, 8, 1, 2), 4, "exact"),
    ((2, 1, 7, 1, 1), 2, "exact"),
    ((1, 2, 3, 4), 2, "approx"),
    ((0, 1, 2, 3), 2, "approx"),
]


@pytest.mark.parametrize("block,n,method", CHI_BLOCKS)
def test_chi_square_sampling_matches_distribution(block, n, method):
    from scipy.stats import chisquare

    m = len(block)
    draws = 100_000
    x = np.tile(np.array(block, dtype=np.float32), (draws, 1))
    out = sp.mvue(x, n, m, seed=1234, method=method)
    dist = sp.mvue_distribution(block, n, m, method)
    patterns = [tuple(v != 0 for v in o) for _, o in dist]
    assert len(set(patterns)) == len(patterns)
    index = {p: k for k, p in enumerate(patterns)}
    keys = [tuple(row) for row in (out != 0)]
    counts = np.zeros(len(dist))
    for k in keys:
        counts[index[k]] += 1  # a KeyError here would be an impossible outcome
    expected = np.array([float(p) for p, _ in dist]) * draws
    if len(dist) > 1:
        assert chisquare(counts, expected).pvalue > 1e-3
    # kept values equal the law's values (float rounding aside)
    for p, o in dist:
        rows = out[np.all((out != 0) == np.array([v != 0 for v in o]), axis=1)]
        np.testing.assert_allclose(rows[0], [float(v) for v in o], rtol=1e-6)


def test_top_n_masking_of_gradients_is_biased_and_mvue_is_not():
    """PAPERS.md A.0: the MSE-optimal top-n mask is biased on gradients (E != x)."""
    g = (1, 2, 3, 4)
    top = sp.nm_prune(np.array(g, dtype=np.float64), 2, 4)
    assert tuple(top) != g  # deterministic, so E[top-n] = top-n(g) = (0, 0, 3, 4)
    assert rs.expectation(law_of(g, 2, 4)) == frac_block(g)
    # averaged over many blocks of one gradient: top-n loses 3 of the mass 10, MVUE keeps it
    x = np.tile(np.array(g, dtype=np.float64), (200_000, 1))
    est = sp.mvue(x, 2, 4, seed=0).mean(0)
    np.testing.assert_allclose(est, g, rtol=0.02)
    assert abs(sp.nm_prune(x, 2, 4).mean(0).sum() - 10) == 3


# ----------------------------------------------------------------------------- transposable

B3_SUBOPTIMAL = [[22, 28, 3, 17], [1, 20, 6, 7], [21, 12, 27, 4], [19, 16, 26, 13]]
B3_UNDERFILL = [[19, 2, 18, 3], [9, 17, 16, 29], [27, 10, 8, 13], [25, 14, 24, 28]]


def kept(mask):
    return {tuple(int(v) for v in ij) for ij in np.argwhere(mask)}


def test_papers_b3_greedy_vs_optimal():
    w = np.array(B3_SUBOPTIMAL, dtype=np.float32)
    g = sp.transposable_mask(w, 2, 4, method="greedy")
    o = sp.transposable_mask(w, 2, 4, method="optimal")
    assert kept(g) == {(0, 0), (0, 1), (1, 1), (1, 3), (2, 0), (2, 2), (3, 2), (3, 3)}
    assert kept(o) == {(0, 1), (0, 3), (1, 1), (1, 3), (2, 0), (2, 2), (3, 0), (3, 2)}
    assert w[g].sum() == 164 and w[o].sum() == 165
    assert np.array_equal(sp.transposable_mask(-w, 2, 4), o)  # magnitudes


def test_underfilled_greedy_can_beat_the_exactly_n_optimum():
    w = np.array([[0.16088833, -0.3279463, -1.5160172, -1.529591],
                  [-0.03364361, 0.11707114, 0.38260356, -0.10731861],
                  [0.73402226, 1.814461, 2.4603271, 1.2994412],
                  [0.07597449, 1.6561865, -0.2606974, 0.7649879]], dtype=np.float32)
    g = sp.transposable_mask(w, 2, 4, method="greedy")
    o = sp.transposable_mask(w, 2, 4)
    assert g[1].sum() == 1 and (o.sum(1) == 2).all()
    _, best = rs.optimal_tile_bruteforce(w.tolist(), 2)
    assert np.abs(w.astype(np.float64))[o].sum() == float(best)
    assert np.abs(w)[g].sum() > np.abs(w)[o].sum()


def test_papers_b3_underfill():
    w = np.array(B3_UNDERFILL, dtype=np.float64)
    g = sp.transposable_mask(w, 2, 4, method="greedy")
    assert kept(g) == {(0, 2), (1, 1), (1, 3), (2, 0), (2, 1), (3, 0), (3, 3)}
    assert g[0].sum() == 1 and g[:, 2].sum() == 1
    o = sp.transposable_mask(w, 2, 4)
    assert (o.sum(0) == 2).all() and (o.sum(1) == 2).all()


def tiles_of(mask, m):
    r, c = mask.shape
    return mask.reshape(r // m, m, c // m, m).transpose(0, 2, 1, 3).reshape(-1, m, m)


@pytest.mark.parametrize("data", ["normal", "small_ints", "binary"])
def test_optimal_4x4_equals_bruteforce(data):
    rng = np.random.default_rng({"normal": 0, "small_ints": 1, "binary": 2}[data])
    for n in (1, 2, 3):
        for _ in range(40 if n == 2 else 15):
            if data == "normal":
                t = rng.standard_normal((4, 4)).astype(np.float32)
            elif data == "small_ints":
                t = rng.integers(-3, 4, (4, 4)).astype(np.float64)
            else:
                t = rng.integers(0, 2, (4, 4)).astype(np.float64)
            got = sp.transposable_mask(t, n, 4)
            exp, _ = rs.optimal_tile_bruteforce(t.tolist(), n)
            assert got.tolist() == exp, (t, n)


def test_optimal_2_4_enumeration_equals_general_solver():
    from emul._kernels import sparsity as k

    rng = np.random.default_rng(5)
    for w in (rng.standard_normal((64, 64)), rng.integers(0, 3, (64, 64)).astype(np.float64),
              np.zeros((8, 8)), np.ones((8, 8))):
        a = np.zeros(w.shape, bool)
        b = np.zeros(w.shape, bool)
        k.transposable_optimal_24(np.ascontiguousarray(w), sp._cand24(), a)
        k.transposable_optimal(np.ascontiguousarray(w), 2, 4, b)
        assert np.array_equal(a, b)


def _lp_value(t, n, fixed=None, value=None):
    from scipy.optimize import linprog

    m = t.shape[0]
    A = []
    for i in range(m):
        r = np.zeros(m * m)
        r[i * m:(i + 1) * m] = 1
        A.append(r)
    for j in range(m):
        r = np.zeros(m * m)
        r[j::m] = 1
        A.append(r)
    b = [n] * (2 * m)
    c = np.abs(t).ravel()
    if value is not None:
        A.append(c)
        b.append(value)
    bounds = [(0, 1)] * (m * m)
    for k, v in (fixed or {}).items():
        bounds[k] = (v, v)
    res = linprog(-c, A_eq=np.array(A), b_eq=np.array(b, float), bounds=bounds, method="highs")
    return None if res.status != 0 else -res.fun


def _lp_lexicographic(t, n):
    """The lexicographically smallest optimal tile by a sequence of LPs (integral: TU)."""
    m = t.shape[0]
    best = _lp_value(t, n)
    fixed = {}
    for k in range(m * m):
        fixed[k] = 1
        if _lp_value(t, n, fixed, best) is None:
            fixed[k] = 0
    return np.array([fixed[k] for k in range(m * m)], bool).reshape(m, m), best


def test_optimal_8x8_equals_lp_sampled():
    rng = np.random.default_rng(6)
    for trial in range(6):
        n = [4, 2, 3, 4, 1, 6][trial]
        t = rng.integers(0, 4, (8, 8)).astype(np.float64) if trial % 2 else rng.standard_normal((8, 8))
        got = sp.transposable_mask(t, n, 8)
        exp, best = _lp_lexicographic(t, n)
        assert abs(np.abs(t)[got].sum() - best) < 1e-9
        assert np.array_equal(got, exp)


@pytest.mark.slow
def test_optimal_8x8_equals_lp_many():
    rng = np.random.default_rng(7)
    for trial in range(200):
        n = int(rng.integers(1, 8))
        t = rng.integers(0, 3, (8, 8)).astype(np.float64) if trial % 2 else rng.standard_normal((8, 8))
        got = sp.transposable_mask(t, n, 8)
        exp, best = _lp_lexicographic(t, n)
        assert np.array_equal(got, exp), (t, n)


def test_optimal_exact_counts_and_beats_greedy_on_layers():
    rng = np.random.default_rng(8)
    w = rng.standard_normal((64, 128)).astype(np.float32)
    for n, m in [(2, 4), (4, 8), (3, 8)]:
        o = sp.transposable_mask(w, n, m)
        g = sp.transposable_mask(w, n, m, method="greedy")
        ot, gt = tiles_of(o, m), tiles_of(g, m)
        assert (ot.sum(1) == n).all() and (ot.sum(2) == n).all()
        assert (gt.sum(1) <= n).all() and (gt.sum(2) <= n).all()
        aw = tiles_of(np.abs(w), m)
        vo = (aw * ot).sum((1, 2))
        vg = (aw * gt).sum((1, 2))
        # greedy is a 2-approximation of the best "at most n" mask, which is at least the best
        # "exactly n" one; a greedy mask that leaves a row short can keep more than the
        # exactly-n optimum (it is not feasible for it), but not on average
        assert (vg >= vo / 2).all() and vo.mean() > vg.mean()


def test_greedy_matches_reference_tile_by_tile():
    rng = np.random.default_rng(9)
    w = rng.integers(0, 5, (16, 32)).astype(np.float64)
    for n, m in [(2, 4), (4, 8), (1, 4)]:
        g = tiles_of(sp.transposable_mask(w, n, m, method="greedy"), m)
        for t, mk in zip(tiles_of(w, m), g):
            assert mk.tolist() == rs.greedy_tile(t.tolist(), n)


@pytest.mark.parametrize("batch", [1, 8])
def test_reference_early_stop_parity(batch):
    rng = np.random.default_rng(10 + batch)
    for _ in range(10):
        w = rng.standard_normal((8, 8 * batch))
        got = tiles_of(sp.transposable_mask(w, 4, 8, method="greedy", reference_early_stop=True), 8)
        exp = rs.greedy_batch_reference_stop([t.tolist() for t in tiles_of(w, 8)], 4)
        assert [t.tolist() for t in got] == exp


def test_early_stop_differs_from_full_greedy_on_single_tiles():
    rng = np.random.default_rng(12)
    diff = 0
    for _ in range(50):
        w = rng.standard_normal((8, 8))
        a = sp.transposable_mask(w, 4, 8, method="greedy")
        b = sp.transposable_mask(w, 4, 8, method="greedy", reference_early_stop=True)
        assert not (b & ~a).any()
        diff += not np.array_equal(a, b)
    assert diff > 40


def test_optimal_sees_float32_differences_of_one_ulp_and_2_pow_minus_26():
    # two candidate 2:4 tiles differ by 2^-26 * max: must still pick the larger
    # the lexicographically smallest tile keeps flat 0,1,4,5,10,11,14,15: (3, 0) = flat 12 is
    # only kept when its (tiny) excess is seen
    t = np.ones((4, 4), np.float32)
    assert not sp.transposable_mask(t, 2, 4)[3, 0]
    t[3, 0] = 1 + 2.0**-23
    assert sp.transposable_mask(t, 2, 4)[3, 0]
    t = np.zeros((4, 4), np.float32)
    t[0, 0] = 1.0
    t[3, 0] = 2.0**-26
    assert sp.transposable_mask(t, 2, 4)[3, 0]


def test_optimal_is_exact_for_float64_near_ties():
    """The issue's example: 1 + 2^-52 must be kept (rounded integer costs collapsed it)."""
    w = np.array([[1, 1 + 2.0**-52], [1, 1]])
    got = sp.transposable_mask(w, 1, 2)
    assert got.tolist() == [[False, True], [True, False]]
    assert sum(F(v) for v in w[got]) == 2 + F(2) ** -52  # (a float64 sum would round it to 2)


def _exact_reference(t, n):
    """The reference optimum: brute force for m <= 4 (checked against the min-cost flow), the
    exact integer min-cost flow beyond."""
    m = t.shape[0]
    exp, val = rs.optimal_tile_exact(t.tolist(), n)
    if m <= 4:
        assert (exp, val) == rs.optimal_tile_bruteforce(t.tolist(), n)
    return exp, val


NEAR_TIE_NM = [(1, 2), (1, 3), (2, 3), (2, 4), (1, 4), (3, 4), (2, 5), (4, 8), (3, 8)]


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_optimal_one_ulp_bump_is_kept_at_every_magnitude(dtype):
    """A tile of equal magnitudes b (both signs) with one element b + 1 ulp: the only optima keep
    the bumped element.  Magnitudes: the largest binade, 1, the smallest normal, subnormals."""
    fi = np.finfo(dtype)
    tiny = float(fi.smallest_subnormal)
    mags = [2.0 ** (fi.maxexp - 1), 1.0, 2.0 ** (fi.minexp), 2.0**-3 * float(fi.tiny), 16 * tiny]
    rng = np.random.default_rng(20)
    for n, m in NEAR_TIE_NM:
        for b in mags:
            bump = float(np.nextafter(dtype(b), dtype(np.inf)))
            assert bump > b
            k = int(rng.integers(m * m))
            t = np.full(m * m, b)
            t[k] = bump
            t *= rng.choice([-1.0, 1.0], m * m)
            t = t.reshape(m, m).astype(dtype)
            got = sp.transposable_mask(t, n, m)
            exp, val = _exact_reference(t, n)
            assert got.tolist() == exp, (dtype, n, m, b, k)
            assert got.reshape(-1)[k]
            assert sum(abs(F(float(v))) for v in t[got]) == val


def _nasty_tile(rng, m, dtype):
    """Near-ties at one magnitude, a few far-apart magnitudes (top binade, 1, smallest normal,
    subnormal), anything in range, or huge values whose ties only the tiny ones decide; both
    signs, zeros."""
    fi = np.finfo(dtype)
    p = fi.nmant
    sub = fi.minexp - p  # exponent of the smallest subnormal
    kind = int(rng.integers(4))
    out = np.zeros(m * m)
    for k in range(m * m):
        if kind == 0:
            e = 0
        elif kind == 1:
            e = int(rng.choice([fi.maxexp - 1, 0, fi.minexp, sub + 3]))
        elif kind == 2:
            e = int(rng.integers(sub, fi.maxexp))
        else:
            e = int(rng.choice([fi.maxexp - 1, sub + 2]))
        if rng.integers(10) == 0:
            continue
        steps = int(rng.integers(4))  # 0..3 ulps above 2^e (or 1..4 units of a subnormal binade)
        v = 2.0**e + steps * 2.0 ** (e - p) if e >= fi.minexp else (steps + 1) * 2.0**e
        out[k] = v if rng.integers(2) else -v
    return out.reshape(m, m).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_optimal_equals_exact_reference_on_near_tie_tiles(dtype):
    """Tiles of near-ties, mixed huge/tiny magnitudes and subnormals, one tile per call and many
    tiles in one grid, against the exact reference optimum."""
    rng = np.random.default_rng({np.float16: 21, np.float32: 22, np.float64: 23}[dtype])
    for m in (2, 3, 4, 5, 8):
        tiles = [_nasty_tile(rng, m, dtype) for _ in range(12 if m < 8 else 6)]
        for n in sorted({1, m // 2, m - 1} - {0}):
            grid = np.concatenate(tiles, axis=1)  # one row of tiles, solved in one call
            got = sp.transposable_mask(grid, n, m)
            for k, t in enumerate(tiles):
                exp, _ = _exact_reference(t, n)
                assert got[:, k * m:(k + 1) * m].tolist() == exp, (dtype, n, m, t)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_optimal_equals_exact_reference_on_near_tie_tiles_many(dtype):
    rng = np.random.default_rng(24)
    for _ in range(400):
        m = int(rng.choice([2, 3, 4, 5, 6, 8]))
        n = int(rng.integers(1, m + 1))
        t = _nasty_tile(rng, m, dtype)
        exp, _ = _exact_reference(t, n)
        assert sp.transposable_mask(t, n, m).tolist() == exp, (dtype, n, m, t)


def test_optimal_huge_ties_decided_by_tiny_values():
    """Equal huge magnitudes on a diagonal pattern, the rest tiny (down to subnormals): every
    optimum keeps the huge ones, and the tiny ones alone decide the rest; 2:4 (enumeration) and
    4:8 (min-cost flow), float32 and float64."""
    rng = np.random.default_rng(25)
    for dtype, huge, tiny in ((np.float64, 1e300, 5e-324), (np.float64, 2.0**60, 2.0**-60),
                              (np.float32, 1e38, 1e-45), (np.float32, 2.0**30, 2.0**-30)):
        for n, m in ((2, 4), (4, 8), (1, 4)):
            for _ in range(8):
                t = tiny * rng.integers(1, 5, (m, m)).astype(np.float64)
                t[np.arange(m), np.arange(m)] = huge
                t = t.astype(dtype)
                got = sp.transposable_mask(t, n, m)
                exp, _ = _exact_reference(t, n)
                assert got.tolist() == exp, (dtype, n, m, t)
                assert got[np.arange(m), np.arange(m)].all()


def test_optimal_general_solver_agrees_with_2_4_enumeration_on_near_ties():
    from emul._kernels import sparsity as k

    rng = np.random.default_rng(26)
    for dtype in (np.float32, np.float64):
        w = np.concatenate([_nasty_tile(rng, 4, dtype) for _ in range(64)], axis=1).astype(np.float64)
        if dtype == np.float32:
            w = w.astype(np.float32)
        a = np.zeros(w.shape, bool)
        b = np.zeros(w.shape, bool)
        k.transposable_optimal_24(np.ascontiguousarray(w), sp._cand24(), a)
        k.transposable_optimal(np.ascontiguousarray(w), 2, 4, b)
        assert np.array_equal(a, b)


# ----------------------------------------------------------------------------- layouts


def test_gemm_padding_is_clipped():
    rng = np.random.default_rng(13)
    w = rng.standard_normal((10, 14)).astype(np.float32)
    for method in ("optimal", "greedy"):
        got = sp.transposable_mask(w, 2, 4, method=method)
        assert got.shape == w.shape
        wp = np.zeros((12, 16), np.float32)
        wp[:10, :14] = w
        assert np.array_equal(got, sp.transposable_mask(wp, 2, 4, method=method)[:10, :14])


def test_nchw_layout_tiles_consecutive_memory():
    rng = np.random.default_rng(14)
    w = rng.standard_normal((4, 8, 3, 3))  # 288 elements: 4.5 tiles of 64 -> padded
    got = sp.transposable_mask(w, 4, 8, layout="nchw")
    flat = np.zeros(320)
    flat[:288] = w.ravel()
    exp = sp.transposable_mask(flat.reshape(-1, 8), 4, 8)  # gemm tiles of an (rows, 8) view
    assert np.array_equal(got.ravel(), exp.ravel()[:288])
    tiles = np.zeros(320, bool)
    tiles[:288] = got.ravel()
    tiles = tiles.reshape(-1, 8, 8)
    assert (tiles.sum(1) <= 4).all() and (tiles.sum(2) <= 4).all()


def test_nhwc_layout_permutes_and_pads_per_output():
    rng = np.random.default_rng(15)
    w = rng.standard_normal((3, 5, 3, 3)).astype(np.float32)  # K = 45 -> padded to 64
    got = sp.transposable_mask(w, 4, 8, layout="nhwc", method="greedy")
    assert got.shape == w.shape
    rows = np.moveaxis(w, 1, -1).reshape(3, 45)
    for o in range(3):
        tile = np.zeros(64, np.float32)
        tile[:45] = rows[o]
        exp = rs.greedy_tile(tile.reshape(8, 8).tolist(), 4)
        gm = np.moveaxis(got, 1, -1).reshape(3, 45)[o]
        assert gm.tolist() == list(np.array(exp).ravel()[:45])
    w2 = rng.standard_normal((16, 24))
    m2 = sp.transposable_mask(w2, 2, 4, layout="nhwc")
    row = np.zeros(32)
    row[:24] = w2[0]
    assert np.array_equal(m2[0], sp.transposable_mask(row.reshape(2, 4, 4)[0], 2, 4).ravel().tolist()
                          + sp.transposable_mask(row.reshape(2, 4, 4)[1], 2, 4).ravel()[:8].tolist())


# ----------------------------------------------------------------------------- mask diversity


def test_mask_diversity_values():
    assert sp.mask_diversity(2, 4) == 6
    assert sp.mask_diversity(4, 8) == 70
    assert sp.mask_diversity(2, 4, transposable=True) == 90
    assert sp.mask_diversity(4, 8, transposable=True) == 116_963_796_250
    assert sp.mask_diversity(3, 6, transposable=True) == rs.count_regular(6, 3) == 297_200
    assert sp.mask_diversity(1, 5, transposable=True) == 120
    assert sp.mask_diversity(2, 4, transposable=True, exact=False) == 144
    assert sp.mask_diversity_paper(4, 8, transposable=True) == 17_557_585_920_000
    assert sp.mask_diversity_paper(2, 4) == 6
    for n, m in [(1, 3), (2, 5), (3, 5), (2, 6)]:
        assert sp.mask_diversity(n, m, transposable=True) == rs.count_regular(m, n)
    assert len(sp._cand24()) == 90 == len(rs.regular_masks(4, 2))


# ----------------------------------------------------------------------------- bad input

BAD = [
    (lambda: sp.nm_mask(np.ones(4), 5, 4), ValueError, "n=5: must be between 1 and m=4"),
    (lambda: sp.nm_mask(np.ones(4), 0, 4), ValueError, "n=0"),
    (lambda: sp.nm_mask(np.ones(6), 2, 4), ValueError, "m=4: does not divide the length 6"),
    (lambda: sp.nm_mask(np.ones(4), 2, 0), ValueError, "m=0"),
    (lambda: sp.nm_mask(np.ones(4), 2.0, 4), TypeError, "n=2.0"),
    (lambda: sp.nm_mask(np.ones(4), 2, 4, ties="random"), ValueError, "ties='random'"),
    (lambda: sp.nm_mask(np.ones(4), 2, 4, axis=1), ValueError, "axis=1"),
    (lambda: sp.nm_mask(np.float64(1.0), 1, 1), ValueError, "0-d"),
    (lambda: sp.nm_mask(np.ones(4, complex), 2, 4), TypeError, "complex"),
    (lambda: sp.mvue(np.ones(4), 2, 4), ValueError, "key, seed"),
    (lambda: sp.mvue(np.ones(4), 2, 4, seed=1, key=er.key(1)), ValueError, "not both"),
    (lambda: sp.mvue(np.ones(8), 4, 8, seed=1, method="approx"), ValueError, "method='approx'"),
    (lambda: sp.mvue(np.ones(4), 2, 4, seed=1, method="fast"), ValueError, "method='fast'"),
    (lambda: sp.mvue(np.ones(6), 2, 4, seed=1), ValueError, "m=4: does not divide"),
    (lambda: sp.mvue_distribution([1, 2, 3], 2, 4), ValueError, "block: has 3 values, expected m=4"),
    (lambda: sp.mvue_distribution([1, 2, 3, float("inf")], 2, 4), ValueError, "block[3]=inf"),
    (lambda: sp.mvue_distribution(np.ones((2, 2)), 2, 4), ValueError, "1-D"),
    (lambda: sp.transposable_mask(np.ones((2, 4, 4)), 2, 4), ValueError, "layout='gemm' needs a 2-D"),
    (lambda: sp.transposable_mask(np.ones(16), 2, 4, layout="nhwc"), ValueError, "at least 2"),
    (lambda: sp.transposable_mask(np.ones((4, 4)), 2, 4, layout="nhcw"), ValueError, "layout='nhcw'"),
    (lambda: sp.transposable_mask(np.ones((4, 4)), 2, 4, method="ip"), ValueError, "method='ip'"),
    (lambda: sp.transposable_mask(np.ones((4, 4)), 3, 2), ValueError, "n=3: must be between 1 and m=2"),
    (lambda: sp.transposable_mask(np.ones((4, 4)), 2, 4, reference_early_stop=True), ValueError,
     "reference_early_stop=True"),
    (lambda: sp.transposable_mask(np.full((4, 4), np.nan), 2, 4), ValueError, "w: non-finite"),
    (lambda: sp.mask_diversity(5, 4), ValueError, "n=5"),
    (lambda: sp.transposable_mask(np.ones((64, 64)), 32, 64), ValueError, "m=64: method='optimal'"),
]


@pytest.mark.parametrize("call,exc,msg", BAD)
def test_bad_input_messages(call, exc, msg):
    with pytest.raises(exc) as info:
        call()
    assert msg in str(info.value)


@pytest.mark.parametrize("layout,shape", [("gemm", (0, 8)), ("gemm", (4, 0)), ("nchw", (0, 3, 3)),
                                          ("nhwc", (0, 8, 3, 3)), ("nhwc", (4, 0, 3, 3))])
def test_transposable_empty_weights(layout, shape):
    for method in ("optimal", "greedy"):
        got = sp.transposable_mask(np.zeros(shape, np.float32), 2, 4, method=method, layout=layout)
        assert got.shape == shape and got.dtype == np.bool_


def test_trivial_n_equals_m_and_all_zero_tiles():
    assert sp.transposable_mask(np.ones((4, 8)), 4, 4).all()
    z = sp.transposable_mask(np.zeros((4, 4)), 2, 4)
    assert kept(z) == {(0, 0), (0, 1), (1, 0), (1, 1), (2, 2), (2, 3), (3, 2), (3, 3)}
    assert np.array_equal(sp.transposable_mask(np.zeros((8, 8)), 2, 4), np.tile(z, (2, 2)))
    zg = sp.transposable_mask(np.zeros((4, 4)), 2, 4, method="greedy")
    assert kept(zg) == {(0, 0), (0, 1), (1, 0), (1, 1), (2, 2), (2, 3), (3, 2), (3, 3)}


# ----------------------------------------------------------------------------- results from bits
# Issue 14 item 10: results do not depend on the thread's floating-point environment (MXCSR
# flush-to-zero / denormals-are-zero); tests/test_fp_environment.py runs the kernels with both
# set.  Here, in the default environment: the MVUE kernels' emulated path (integer IEEE arithmetic
# from bits, for blocks with subnormal inputs or intermediates) gives the fast path's bits, its
# operations are IEEE's, and the magnitude orders and conversions work on bit patterns.

NEVER_FAST = (1 << 20, 0, 1, 0, 0, -1)  # _classify's limits that no block meets


def _force_emulated(monkeypatch):
    orig = sp._mvue_limits
    monkeypatch.setattr(sp, "_mvue_limits", lambda *args: (NEVER_FAST, orig(*args)[1]))


@pytest.mark.parametrize("n,m,method", MVUE_PLAIN_CASES)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_mvue_emulated_path_equals_the_fast_path(dtype, n, m, method, monkeypatch):
    """Every block forced onto the emulated path gives the bits of the default path: on blocks
    the fast path takes (ordinary data) and on the bit-pattern blocks (near-ties, subnormals,
    values near the largest finite one: both paths mixed), plus blocks spanning the whole range."""
    T = _scalar_type(dtype)
    rng = np.random.default_rng([n, m, len(method), len(dtype), 7])
    fi = _finfo_of(T)
    ordinary = (rng.standard_normal((300, m)) * 4.0 ** rng.integers(-6, 7, (300, 1))).astype(T)
    wide = np.ldexp(rng.uniform(1, 2, (300, m)), rng.integers(int(fi.minexp) - int(fi.nmant), int(fi.maxexp),
                                                             (300, m))).astype(T)
    for x in (ordinary, _bit_blocks(rng, 300, m, T), wide):
        with np.errstate(over="ignore", under="ignore"):
            want = sp.mvue(x, n, m, seed=5, method=method)
            with monkeypatch.context() as mp:
                _force_emulated(mp)
                got = sp.mvue(x, n, m, seed=5, method=method)
        assert got.dtype == want.dtype
        assert np.array_equal(got.view(np.uint8), want.view(np.uint8)), (dtype, n, m, method)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_mvue_emulated_path_equals_the_documented_arithmetic(dtype, monkeypatch):
    """The emulated path alone against the plain per-block implementation (2:4 exact and approx,
    3:8): the bit-pattern blocks with their subnormals, near-ties and overflow guards."""
    _force_emulated(monkeypatch)
    T = _scalar_type(dtype)
    for n, m, method in ((2, 4, "exact"), (2, 4, "approx"), (3, 8, "exact")):
        rng = np.random.default_rng([n, m, len(method), len(dtype), 8])
        nb = 150
        x = _bit_blocks(rng, nb, m, T)
        out = sp.mvue(x, n, m, seed=17, method=method)
        words = er.bits(er.key(17), (nb if method == "exact" else 2 * nb,))
        for b in range(nb):
            blk = list(x[b])
            with np.errstate(all="ignore"):
                if method == "exact":
                    exp = _plain_mvue_exact(blk, n, words[b], T)
                else:
                    exp = _plain_mvue_approx(blk, words[2 * b: 2 * b + 2], T)
            if exp is None:
                assert np.isnan(out[b].astype(np.float64)).all()
                continue
            want = np.array(exp, dtype=T)
            assert np.array_equal(out[b].view(np.uint8), want.view(np.uint8)), (dtype, n, m, method, blk)


def _pattern_operands(rng, size, T):
    """Values of T (float64/float32/bfloat16) from bit patterns: subnormals, the smallest
    normals, values near the largest finite one, anything in range, operands whose results tie,
    zeros, infinities and (rarely) a NaN in one operand; both signs."""
    bits = 8 * np.dtype(T).itemsize
    ut = {16: np.uint16, 32: np.uint32, 64: np.uint64}[bits]
    fi = _finfo_of(T)
    top = int(np.array(fi.max, dtype=T).view(ut))
    mant = 1 << int(fi.nmant)
    kind = rng.integers(0, 6, size)
    u = np.uint64

    def draw(lo, hi):
        return rng.integers(lo, hi, size, dtype=np.uint64)

    code = draw(0, top + 1)
    code = np.where(kind == 1, draw(0, 3 * mant), code)  # subnormal / tiny
    code = np.where(kind == 2, u(top) - draw(0, 3 * mant), code)  # near the largest finite value
    code = np.where(kind == 3, (draw(0, top // mant + 1) * u(mant)) | draw(0, 4), code)  # few bits: ties
    special = rng.integers(0, 60, size)
    inf = int(np.array(np.inf, dtype=T).view(ut))
    code = np.where(special == 0, u(0), code)
    code = np.where(special == 1, u(inf), code)
    code = np.where(special == 2, u(inf + 1) + draw(0, 4), code)  # NaNs (quiet or not)
    code = np.where(special == 3, u(top), code)
    assert code.dtype == np.uint64
    sign = rng.integers(0, 2, size).astype(np.uint64) << np.uint64(bits - 1)
    return (code | sign).astype(ut).view(T)


@pytest.mark.parametrize("dtype", ["float64", "float32", "bfloat16"])
def test_emulated_operations_equal_ieee_arithmetic(dtype):
    """_sadd / _smul / _sdiv (integer arithmetic on float64 patterns) against the hardware's IEEE
    operations in the default environment, bit for bit: float64 and float32 as they are, bfloat16
    as the fast path computes it (the float32 result rounded to bfloat16).  Special operands:
    zeros, infinities, a NaN in one operand (propagated, quieted), invalid operations (the
    platform's default NaN).  Additions of equal signs only (the kernels add magnitudes)."""
    from numba import njit

    from emul._kernels import sparsity as k

    T = _scalar_type(dtype)
    lim, W = sp._mvue_limits(np.dtype(np.float64 if dtype == "float64" else np.float32),
                             np.dtype(np.int16 if dtype == "bfloat16" else
                                      (np.float64 if dtype == "float64" else np.float32)), np.dtype(T), 2, 4, "exact")

    @njit
    def run(op, a, b, W, out):
        for i in range(a.size):
            if op == 0:
                out[i] = k._sadd(a[i], b[i], W)
            elif op == 1:
                out[i] = k._smul(a[i], b[i], W)
            else:
                out[i] = k._sdiv(a[i], b[i], W)

    rng = np.random.default_rng(len(dtype))
    size = 200_000
    a, b = _pattern_operands(rng, size, T), _pattern_operands(rng, size, T)
    with np.errstate(invalid="ignore"):  # (signalling NaNs are quieted by the casts)
        a64, b64 = a.astype(np.float64), b.astype(np.float64)  # exact (default environment)
    keep = ~(np.isnan(a64) & np.isnan(b64))  # (which NaN a two-NaN operation returns is not IEEE's business)
    a64, b64 = a64[keep], b64[keep]
    for op in range(3):
        x, y = a64, b64
        if op == 0:  # equal signs
            y = np.copysign(b64, a64)
        out = np.empty(x.size, np.uint64)
        run(op, x.view(np.uint64), y.view(np.uint64), W, out)
        got = out.view(np.float64)
        with np.errstate(all="ignore"):
            if dtype == "float64":
                want = (x + y, x * y, x / y)[op]
            else:
                x32, y32 = x.astype(np.float32), y.astype(np.float32)
                want = (x32 + y32, x32 * y32, x32 / y32)[op].astype(T)
                got = got.astype(np.float32).astype(T)
        bad = np.flatnonzero(got.view(_uint_of(T)) != want.view(_uint_of(T)))
        assert bad.size == 0, (dtype, op, x[bad[:3]], y[bad[:3]], got[bad[:3]], want[bad[:3]])


def _uint_of(T):
    return {2: np.uint16, 4: np.uint32, 8: np.uint64}[np.dtype(T).itemsize]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_nm_mask_orders_subnormals_and_nans_by_their_bits(dtype):
    """Blocks of subnormals (some equal, both signs, zeros of both signs, NaNs) against the
    reference's exact order."""
    T = _scalar_type(dtype)
    ut = _uint_of(T)
    rng = np.random.default_rng(len(dtype) + 40)
    mant = 1 << int(_finfo_of(T).nmant)
    code = rng.integers(0, min(mant, 64), (300, 8)).astype(np.uint64)  # subnormal codes (and 0)
    code[rng.integers(0, 4, (300, 8)) == 0] = mant  # the smallest normal
    sign = rng.integers(0, 2, (300, 8)).astype(np.uint64) << np.uint64(8 * np.dtype(T).itemsize - 1)
    x = (code | sign).astype(ut).view(T)
    x[rng.integers(0, 16, (300, 8)) == 0] = np.array(np.nan, dtype=T)
    for n in (1, 3, 6):
        for ties in ("low_index", "high_index"):
            got = sp.nm_mask(x, n, 8, ties=ties)
            for row, g in zip(x, got):
                assert list(g) == rs.nm_mask_block([float(v) for v in row], n, ties), (dtype, row)


def test_greedy_orders_float64_subnormals_by_their_bits():
    """float64 weights (subnormals, and float32 values including float32 subnormals, which take
    the float32 key sort) against the reference greedy, tile by tile."""
    rng = np.random.default_rng(41)
    sub = np.ldexp(rng.integers(0, 6, (16, 32)).astype(np.float64), -1074)  # float64 subnormals
    f32sub = rng.integers(0, 6, (16, 32)).astype(np.float64) * 2.0**-149  # float32 subnormals
    for w in (sub, f32sub, sub + f32sub * 2.0**40):
        for n, m in [(2, 4), (4, 8), (1, 4)]:
            g = tiles_of(sp.transposable_mask(w, n, m, method="greedy"), m)
            for t, mk in zip(tiles_of(w, m), g):
                assert mk.tolist() == rs.greedy_tile(t.tolist(), n)
        assert np.array_equal(sp.transposable_mask(f32sub, 2, 4, method="greedy"),
                              sp.transposable_mask(f32sub.astype(np.float32), 2, 4, method="greedy"))


def test_exact_conversions_from_bits():
    """The kernels' float16 <-> float32 and float64 -> float32 conversions (integer operations)
    equal numpy's casts in the default environment: every float16 code, float16 values held in
    float32, and float64 values that are (or are not) float32 values."""
    from emul._kernels import sparsity as k

    h = np.arange(1 << 16, dtype=np.uint16)
    w = np.empty(h.size, np.uint32)
    k.f16_to_f32_bits(h, w)
    want = h.view(np.float16).astype(np.float32)
    fin = ~np.isnan(want)
    assert np.array_equal(w[fin], want.view(np.uint32)[fin]) and np.isnan(w.view(np.float32)[~fin]).all()
    back = np.empty(h.size, np.uint16)
    k.f32_to_f16_bits(want.view(np.uint32), back)
    assert np.array_equal(back[fin], h[fin]) and np.isnan(back.view(np.float16)[~fin]).all()
    assert back[np.flatnonzero(h == 0x7E00)[0]] == 0x7E00 and back[np.flatnonzero(h == 0xFE00)[0]] == 0xFE00
    rng = np.random.default_rng(42)
    f32 = rng.integers(0, 0x7F800000, 100_000, dtype=np.uint32).view(np.float32)
    v = f32.astype(np.float64)
    out = np.empty(v.size, np.uint32)
    assert k.f64_to_f32_bits_if_exact(v.view(np.uint64), out)
    assert np.array_equal(out, f32.view(np.uint32))
    for bad in (1 + 2.0**-30, 2.0**-150, 3 * 2.0**-150, 2.0**128, 5e-324):
        assert not k.f64_to_f32_bits_if_exact(np.array([1.0, bad]).view(np.uint64), np.empty(2, np.uint32))


def test_optimal_float64_tiles_with_the_largest_values():
    """Tiles holding one of the largest float64 values (>= 2^1024 - 2^973), whose stage-1 cost
    rounds up to 2^50: the remainder |w| - 2^50 2^-S once overflowed to -inf as a float (and the
    refinement never ended); as integers it is exact.  Against the exact reference."""
    big = np.finfo(np.float64).max
    t = np.array([[-30.08, 6.9e238, -1.97e220, 0.0],
                  [-2.79e307, 2.79e307, np.nextafter(2.79e307, 0), np.nextafter(2.79e307, np.inf)],
                  [8.789e-309, -big, -1.12e308, 0.0],
                  [2.94e230, 0.0, -2.94e230, np.nextafter(-2.94e230, -np.inf)]])
    for n, m, w in ((2, 4, t), (1, 4, t), (2, 4, t.T.copy()), (3, 4, -t)):
        exp, _ = _exact_reference(w, n)
        assert sp.transposable_mask(w, n, m).tolist() == exp
    w = np.array([[big, big], [big, np.nextafter(big, 0)]])
    assert sp.transposable_mask(w, 1, 2).tolist() == _exact_reference(w, 1)[0]

"""emul_jax.accumulate against emul.accumulate, bit for bit (outputs compared as uint32 patterns).

Compiling one accumulator configuration takes seconds (a scan over exact multi-word steps), so the
order × format × mode × overflow matrix runs under ``jax.disable_jit()``: ``lax.scan`` becomes a
Python loop of small per-operation executables shared by every configuration. Each configuration
runs through the general path (``emul_jax._exact`` sums) and, where it applies, through the integer
fast path, and both must equal the core. The public functions are checked eagerly and under
``jit`` (compiling once per configuration), with SR (``key=`` as the core's ``seed=``, and
``random_bits``), np.matmul shapes, conv2d, init, K = 0 and 1, errors, ``vmap`` and ``grad``.

Operands are built to hit the hard cases: e4m3fn values (products from 2**-18, below e4m7's
smallest subnormal, to 448**2, far above its max: subnormal products, overflow on the way,
swamping), int8 values into int12 (overflow and wrap recovery), full-precision float32 values with
exponents spread over 60 binades (the general path, fp32/bf16 accumulators), ±0, and for the
special-value tests inf and NaN.
"""

from __future__ import annotations

import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import emul
from emul_jax import accumulate as A

ml_dtypes = pytest.importorskip("ml_dtypes")


def bits(x):
    return np.asarray(x, np.float32).view(np.uint32)


def assert_bits(got, want):
    g, w = bits(got), bits(want)
    assert g.shape == w.shape, (g.shape, w.shape)
    bad = np.flatnonzero(g.reshape(-1) != w.reshape(-1))
    assert bad.size == 0, (f"{bad.size} of {g.size} differ; first at {bad[0]}: "
                           f"got {g.reshape(-1)[bad[0]]:#010x}, want {w.reshape(-1)[bad[0]]:#010x}")


eager = jax.disable_jit


# -- operands ---------------------------------------------------------------------------------------

E4M3 = np.arange(256, dtype=np.uint8).view(ml_dtypes.float8_e4m3fn).astype(np.float64)  # (no kernel at collection)
E4M3 = E4M3[np.isfinite(E4M3)].astype(np.float32)           # all 254 finite values, ±0 included


def narrow(rng, shape):
    """e4m3fn values (every binade, subnormals and ±0 included)."""
    return rng.choice(E4M3, shape)


def int8s(rng, shape):
    return rng.integers(-128, 128, shape).astype(np.float32)


def quarters(rng, shape):
    """Multiples of 1/8 up to ±16: products land on 1/64, below fx<14,2>'s lsb."""
    return (rng.integers(-128, 129, shape) / 8).astype(np.float32)


def wide(rng, shape):
    """Full 24-bit significands, exponents over 60 binades, some ±0 and float32 subnormals."""
    m = rng.integers(1 << 23, 1 << 24, shape).astype(np.float64)
    x = np.ldexp(m, rng.integers(-50, 10, shape) - 23) * rng.choice([-1.0, 1.0], shape)
    x = x.astype(np.float32)
    flat = x.reshape(-1)
    k = max(1, flat.size // 10)
    flat[rng.choice(flat.size, k, replace=False)] = rng.choice(np.float32([0.0, -0.0, 1e-40, -3e-39, 2 ** -149]), k)
    return x


def lane_results(a, b, acc, init=None, **kw):
    """emul_jax's result for each lane that applies: ("general", y) always, ("odd", y) where the
    configuration has the round-to-odd fast path and the operands pass its check, ("exact", y) where
    it has the exact-product lane and the operands pass that check."""
    cfg = A._config(acc, kw.get("product"), kw.get("product_rounding", "nearest_even"),
                    kw.get("rounding", "nearest_even"), kw.get("overflow"), kw.get("order", "sequential"),
                    kw.get("chunk"), kw.get("outer"), None, "add")
    a3, b3 = jnp.asarray(a)[None], jnp.asarray(b)[None]
    ic = None
    if init is not None:
        ic, _ = A._init_codes(cfg, init, (a3.shape[1], b3.shape[2]))
        ic = ic.reshape((1,) + ic.shape)
    out = []
    with eager():
        ab, bb = A._f32_bits_exact(a3), A._f32_bits_exact(b3)
        for fast in (False, "odd", "exact"):
            if fast == "odd" and (cfg.grids is None or not bool(A._fast_ok(cfg, ab, bb))):
                continue
            if fast == "exact" and (cfg.xgrid is None or not bool(A._exact_ok(cfg, ab, bb, ic))):
                continue
            y, flags = A._compute(cfg, a3, b3, ic, None, None, fast)
            assert not np.asarray(flags).any()
            out.append(("general" if fast is False else fast, np.asarray(y)[0]))
    return out


def check_lanes(a, b, acc, expect_fast=None, expect_exact=None, **kw):
    want = emul.matmul(a, b, acc, **kw)
    got = dict(lane_results(a, b, acc, **kw))
    if expect_fast is not None:
        assert ("odd" in got or "exact" in got) == expect_fast
    if expect_exact is not None:
        assert ("exact" in got) == expect_exact
    for lane, y in got.items():
        try:
            assert_bits(y, want)
        except AssertionError as exc:
            raise AssertionError(f"{lane} path, acc={acc}, {kw}: {exc}") from None
    return got


# -- the matrix: orders × formats × modes × overflow rules, both lanes ----------------------------------

# One output shape (3 x 4) and K = 7 throughout: eager runs then share their per-operation
# executables; pairwise with K = 7 has an odd element passing up two levels.
M, K, N = 3, 7, 4
ORDERS = [dict(order="sequential"), dict(order="pairwise"), dict(order="chunked", chunk=3)]


def order_id(o):
    return "-".join(str(v) for v in o.values())


def _cross(default, accs, orders=ORDERS):
    """(acc, order) pairs: those in ``default`` run by default, the rest of the cross under -m slow."""
    return [pytest.param(acc, order, id=f"{acc}-{order_id(order)}",
                         marks=() if (acc, order["order"]) in default else pytest.mark.slow)
            for acc in accs for order in orders]


@pytest.mark.parametrize("acc,order", _cross({("e4m7", "sequential"), ("e4m7", "pairwise"), ("e4m7", "chunked"),
                                              ("fp16", "sequential"), ("fp16", "pairwise"), ("bf16", "chunked"),
                                              ("e5m6", "sequential"), ("e4m7-nosub", "sequential"),
                                              ("e4m3fn", "chunked")},
                                             ["e4m7", "e5m6", "fp16", "bf16", "e4m7-nosub", "e4m3fn"]))
def test_float_accumulators_narrow_operands(acc, order):
    """e4m3fn operands: subnormal products, overflow on the way (inf, or NaN in e4m3fn), swamping."""
    rng = np.random.default_rng(zlib.crc32(f"{acc}{order}".encode()))
    a, b = narrow(rng, (M, K)), narrow(rng, (K, N))
    a[0, :] = 0.5     # the row of small steps: swamping after a few products
    b[:, 0] = 0.5
    expect_fast = (acc in ("e4m7", "e4m7-nosub", "e4m3fn") and order["order"] != "pairwise") or None
    check_lanes(a, b, acc, expect_fast=expect_fast, **order)


@pytest.mark.parametrize("acc,outer", [("fp16", "fp32"), ("e4m7", "e5m6"), ("int12", "int16"),
                                       pytest.param("e4m7", "fp16", marks=pytest.mark.slow)])
def test_chunked_outer(acc, outer):
    rng = np.random.default_rng(zlib.crc32(f"{acc}{outer}".encode()))
    gen = int8s if acc == "int12" else narrow
    a, b = gen(rng, (M, K)), gen(rng, (K, N))
    check_lanes(a, b, acc, order="chunked", chunk=3, outer=outer)


@pytest.mark.parametrize("acc,order", [("fp32", "sequential"), ("fp32", "pairwise"), ("bf16", "chunked"),
                                       ("e4m7", "sequential")])
def test_float_accumulators_wide_operands(acc, order):
    """Full-precision float32 operands (and float32 subnormals): the general path only."""
    rng = np.random.default_rng(zlib.crc32(f"{acc}{order}w".encode()))
    a, b = wide(rng, (M, K)), wide(rng, (K, N))
    check_lanes(a, b, acc, expect_fast=False, order=order, chunk=3 if order == "chunked" else None)


@pytest.mark.parametrize("rounding", ["nearest_away", "toward_zero", "up", "down", "odd", "nearest_zero",
                                      "nearest_up", "nearest_down", "away_from_zero"])
def test_rounding_modes(rounding):
    rng = np.random.default_rng(7)
    a, b = narrow(rng, (M, K)), narrow(rng, (K, N))
    check_lanes(a, b, "e4m7", rounding=rounding, expect_fast=True)
    if rounding in ("toward_zero", "odd", "nearest_away"):
        check_lanes(a, b, "fp16", rounding=rounding, order="pairwise")


@pytest.mark.parametrize("overflow,order", [
    ("saturate", "sequential"), ("saturate", "pairwise"), pytest.param("saturate", "chunked", marks=pytest.mark.slow),
    ("wrap", "sequential"), ("wrap", "pairwise"), ("wrap", "chunked"), ("wrap_sign_magnitude", "sequential"),
    pytest.param("wrap_sign_magnitude", "pairwise", marks=pytest.mark.slow), ("saturate_zero", "sequential"),
    ("saturate_symmetric", "chunked")])
def test_int12_overflow_rules(order, overflow):
    """int8 × int8 into int12: products up to 2**14 overflow the range on the way; wrapping
    accumulators recover, saturating ones clamp at every step."""
    rng = np.random.default_rng(11)
    a, b = int8s(rng, (M, K)), int8s(rng, (K, N))
    check_lanes(a, b, "int12", overflow=overflow, expect_fast=order != "pairwise" or None, order=order,
                chunk=3 if order == "chunked" else None)


@pytest.mark.parametrize("acc,kw", [("fx<14,2>", {}), pytest.param("fx<14,2>", dict(rounding="down", order="pairwise"),
                                                                 marks=pytest.mark.slow),
                                    ("fx<14,2>", dict(rounding="nearest_away", overflow="wrap")),
                                    ("ufx<10,2>", dict(overflow="wrap")),
                                    ("fx<14,2>", dict(order="chunked", chunk=3, outer="fx<16,1>")),
                                    ("fx<12,-2>", dict(rounding="toward_zero"))])
def test_fixed_point_fractions(acc, kw):
    """Products with bits below the lsb: every step rounds (and clamps or wraps)."""
    rng = np.random.default_rng(5)
    a, b = quarters(rng, (M, K)), quarters(rng, (K, N))
    check_lanes(a, b, acc, **kw)


def test_fixed_point_huge_products_wrap():
    """Products far beyond the format (float32 operands up to 2**40) must wrap modulo 2**bits
    exactly: the low integer bits of a huge product matter."""
    a = np.float32([[2.0 ** 40 + 2 ** 17 * 3, 3.0, -(2.0 ** 30) - 5, 1.5, 2.0 ** 20, 0.0, 1.0]] * M)
    b = np.float32([[1.0, 3.0, 1.0, 2.0], [5.0, -1.0, 0.0, 1.0], [1.0, 1.0, 1.0, 2.0], [3.0, 0.75, 1.0, 1.0],
                    [2.0 ** 12 + 1, 1.0, 3.0, 1.0], [1.0] * 4, [-1.0] * 4])
    check_lanes(a, b, "int12", overflow="wrap")
    check_lanes(a, b, "fx<10,3>", overflow="wrap_sign_magnitude", rounding="up")
    check_lanes(a, b, "int12", overflow="saturate")


def test_product_rounding():
    rng = np.random.default_rng(3)
    a, b = narrow(rng, (M, K)), narrow(rng, (K, N))
    for acc, product, pr in [("e4m7", "e4m3fn", "nearest_even"), ("fp16", "e5m2", "toward_zero"),
                             ("int12", "fx<10,1>", "nearest_even")]:
        check_lanes(a, b, acc, product=product, product_rounding=pr)
    check_lanes(a, b, "e4m7", product="bf16", product_rounding="up", order="pairwise")


def test_fast_path_round_to_odd_cases():
    """Sums within a quarter ulp of a tie, and exact ties, with products below the fast path's grid
    (2**-18 < 2**-15 for e4m7): the round-to-odd guard bits must decide exactly as the exact sum."""
    sub = np.float32(2.0 ** -9)   # e4m3fn's smallest subnormal: products of two are 2**-18
    half_ulp = np.float32(2.0 ** -8)
    a = np.float32([[1.0, half_ulp, sub, 0, 0, 0, 0],          # 1 + 2**-8 (tie) + 2**-18 (breaks it)
                    [1.0, half_ulp, -sub, 0, 0, 0, 0],         # just below the tie
                    [-1.0, -half_ulp, -sub, 1.0, -1.0, sub, -sub]])  # negative; cancellations
    b = np.float32([[1.0, 1.0, 1.0, -1.0], [1.0, 1.0, 0.0, 1.0], [sub, 1.0, 1.0, sub], [sub, 1.0, 1.0, 1.0],
                    [1.0, 0.0, 1.0, 1.0], [1.0, 0.0, 0.0, 1.0], [1.0, 0.0, 1.0, 0.0]])
    for mode in ("nearest_even", "nearest_away", "down", "odd"):
        check_lanes(a, b, "e4m7", rounding=mode, expect_fast=True)


def test_fast_path_check():
    cfg = A._config("e4m7", None, "nearest_even", "nearest_even", None, "sequential", None, None, None, "add")
    rng = np.random.default_rng(0)
    check = jax.jit(lambda a, b: A._fast_ok(cfg, A._f32_bits_exact(a), A._f32_bits_exact(b)))
    e = narrow(rng, (M, M))
    ok = lambda *xs: bool(check(*(e if x is None else np.broadcast_to(np.float32(x), e.shape) for x in xs)))
    assert ok(None, None)
    assert not ok(wide(rng, (M, M)), None)             # significands too wide (24 + 4 bits)
    assert not ok(1e-40, None)                         # a float32 subnormal (flushed by XLA CPU)
    assert not ok(None, np.inf)
    assert not ok(2.0 ** -120, 2.0 ** -30)             # the product is below 2**-126
    assert A._config("e5m6", None, "nearest_even", "nearest_even", None, "sequential", None, None, None,
                     "add").grids is None                             # too wide a range for int32
    assert A._config("e4m7", None, "nearest_even", "nearest_even", None, "pairwise", None, None, None,
                     "add").grids is None


# -- specials and errors ---------------------------------------------------------------------------------

def test_special_values():
    """inf and NaN operands (0 · inf, inf - inf, NaN signs) in float accumulators, every order."""
    a = np.float32([[1.0, np.inf, 2.0, 0.0, 1.0, -np.nan, 1.0], [np.nan, 1.0, 1.0, 1.0, 2.0, 1.0, 1.0],
                    [1.0, 2.0, -np.inf, 1.0, 3.0, 1.0, -1.0]])
    b = np.float32([[1.0, 0.0, 1.0, 1.0], [1.0, -1.0, 0.0, 2.0], [1.0, np.inf, 1.0, 1.0], [np.inf, 2.0, 1.0, 1.0],
                    [1.0, 1.0, -np.inf, 1.0], [1.0, 1.0, 1.0, 0.0], [0.0, 1.0, 1.0, 1.0]])
    for order in ORDERS:
        check_lanes(a, b, "e4m7", **order)
    for acc in ("fp32", "e4m3fn", "e5m2fnuz"):
        check_lanes(a, b, acc)
    check_lanes(a, b, "e4m7", overflow="saturate", order="chunked", chunk=3)


@pytest.mark.parametrize("acc,kw,message", [
    ("int12", {}, "met a NaN"),
    ("int12", dict(overflow="wrap"), "met an infinity"),
    ("e2m1fn", {}, "met a NaN"),
    ("e4m7", dict(product="e2m1fn"), "have a NaN product"),
])
def test_errors_like_the_core(acc, kw, message):
    a = np.ones((M, K), np.float32)
    b = np.ones((K, N), np.float32)
    a[0, 1], b[2, 0] = np.inf, np.inf      # output (0, 0): inf · 1, then 0 · inf = NaN
    a[0, 2] = 0.0
    a[1, 1] = 2.0                          # output (1, 1): finite
    with pytest.raises(ValueError, match=message) as core:
        emul.matmul(a, b, acc, **kw)
    with eager(), pytest.raises(ValueError, match=message) as ours:
        A.matmul(a, b, acc, **kw)
    assert str(ours.value) == str(core.value)


def test_errors_under_jit_give_nan():
    a = jnp.float32([[1.0, np.inf], [1.0, 2.0]])
    b = jnp.float32([[1.0], [0.0]])
    y = jax.jit(lambda a, b: A.matmul(a, b, "fx<12,0>", overflow="wrap"))(a, b)
    assert np.isnan(np.asarray(y)[0, 0]) and np.asarray(y)[1, 0] == 1.0


def test_argument_errors():
    a = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match="jax_enable_x64"):
        A.matmul(a, a.T, "fp64")
    with pytest.raises(ValueError, match="jax_enable_x64"):
        A.matmul(a, a.T, "fx<40,8>")
    with pytest.raises(ValueError, match="do not fit float32"):
        A.matmul(a, a.T, "fx<28,0>")
    for kw in (dict(order="chunky"), dict(order="chunked"), dict(chunk=4), dict(overflow="wrap"),
               dict(product_rounding="stochastic", product="e4m3fn"), dict(rounding="stochastic"),
               dict(sr_bits=4)):
        with pytest.raises(ValueError) as core:
            emul.matmul(a, a.T, "e4m7", **kw)
        with pytest.raises(ValueError) as ours:
            A.matmul(a, a.T, "e4m7", **kw)
        assert str(ours.value).split(" (got")[0] == str(core.value).split(" (got")[0].replace("seed=, ", "")
    with pytest.raises(ValueError, match="columns"):
        A.matmul(a, a, "e4m7")
    with pytest.raises(ValueError, match="at least one dimension"):
        A.matmul(a, 2.0, "e4m7")


# -- init, K = 0, K = 1, shapes --------------------------------------------------------------------------

def test_init():
    rng = np.random.default_rng(2)
    a, b = narrow(rng, (M, K)), narrow(rng, (K, N))
    cases = [("e4m7", dict(init=0.5)), ("e4m7", dict(init=np.float32([[1.0], [-2.0], [-0.0]]))),
             ("e4m7", dict(init=-0.0, order="pairwise")), ("int12", dict(init=np.arange(4.0) - 2)),
             ("fp16", dict(init=3.0, order="chunked", chunk=3, outer="e4m7"))]
    with eager():
        for acc, kw in cases:
            assert_bits(A.matmul(a, b, acc, **kw), emul.matmul(a, b, acc, **kw))
        for acc, init in (("e4m7", 0.1), ("int12", 0.5), ("int12", np.nan), ("e4m7", [1.0, 2.0, 3.0])):
            with pytest.raises(ValueError) as core:
                emul.matmul(a, b, acc, init=init)
            with pytest.raises(ValueError) as ours:
                A.matmul(a, b, acc, init=init)
            assert str(ours.value).split(":")[0] == str(core.value).split(":")[0] == "init"


def test_k_zero_and_one():
    with eager():
        for acc, kw in (("e4m7", {}), ("e4m7", dict(init=2.5)), ("int12", dict(init=-3.0)),
                        ("e4m7", dict(order="pairwise", init=-0.0))):
            z = np.zeros((M, 0), np.float32), np.zeros((0, N), np.float32)
            assert_bits(A.matmul(*z, acc, **kw), emul.matmul(*z, acc, **kw))
        a = np.float32([[2.0 ** -16], [300.0], [-0.0]])
        b = np.float32([[3.0, -1.0, 0.5, 2.0 ** -9]])
        for acc, order in (("e4m7", ORDERS[0]), ("fp16", ORDERS[1])):
            assert_bits(A.matmul(a, b, acc, **order), emul.matmul(a, b, acc, **order))
        assert_bits(A.dot(np.float32([]), np.float32([]), "e4m7"), emul.dot(np.float32([]), np.float32([]), "e4m7"))


@pytest.mark.parametrize("sa,sb", [((7,), (7,)), ((7,), (7, 3)), ((2, 1, 3, 7), (4, 7, 2)), ((3, 7), (2, 1, 7, 2))])
def test_matmul_shapes(sa, sb):
    """np.matmul's shape rules (1-D operands, broadcast batch dimensions); compiled, as each shape
    compiles anyway."""
    rng = np.random.default_rng(len(sa) * 10 + len(sb))
    a, b = narrow(rng, sa), narrow(rng, sb)
    got = A.matmul(a, b, "e4m7", rounding="stochastic", sr_bits=8, key=jax.random.key(5))
    assert_bits(got, emul.matmul(a, b, "e4m7", rounding="stochastic", sr_bits=8, seed=5))
    assert got.shape == np.matmul(a, b).shape


def test_operand_dtypes():
    rng = np.random.default_rng(4)
    a8, b8 = rng.integers(-128, 128, (M, K)).astype(np.int8), rng.integers(-128, 128, (K, N)).astype(np.int8)
    a16 = narrow(rng, (M, K)).astype(np.float16)
    with eager():
        assert_bits(A.matmul(a8, b8, "int12"), emul.matmul(a8.astype(np.float32), b8.astype(np.float32), "int12"))
        assert_bits(A.matmul(a16, b8, "e4m7"), emul.matmul(a16.astype(np.float32), b8.astype(np.float32), "e4m7"))
        assert_bits(A.matmul(jnp.asarray(a16, jnp.bfloat16), b8, "fp16"),
                    emul.matmul(a16.astype(np.float32), b8.astype(np.float32), "fp16"))


# -- stochastic rounding -----------------------------------------------------------------------------------

@pytest.mark.parametrize("order", ORDERS, ids=order_id)
def test_sr_key_word_layout(order):
    """key=jax.random.key(s) draws the core's seed=s words: output j uses j*T … j*T+T-1 in step order."""
    rng = np.random.default_rng(9)
    a, b = narrow(rng, (M, K)), narrow(rng, (K, N))
    with eager():
        for acc, kw in (("e4m7", {}), ("fp16", dict(sr_bits=5, sr_method="compare")), ("int12", dict(sr_bits=4))):
            want = emul.matmul(a, b, acc, rounding="stochastic", seed=1234, **kw, **order)
            got = A.matmul(a, b, acc, rounding="stochastic", key=jax.random.key(1234), **kw, **order)
            assert_bits(got, want)


def test_sr_random_bits():
    rng = np.random.default_rng(10)
    a, b = narrow(rng, (M, K)), narrow(rng, (K, N))
    T = A.sr_steps(K, "chunked", 3)
    assert T == emul.accumulate.sr_steps(K, "chunked", 3) == K + 3
    rb = rng.integers(0, 1 << 8, (M, N, T))
    with eager():
        for kw in (dict(order="chunked", chunk=3), dict(order="sequential")):
            r = rb if kw["order"] == "chunked" else rb[..., :K]
            assert_bits(A.matmul(a, b, "e4m7", rounding="stochastic", sr_bits=8, random_bits=r, **kw),
                        emul.matmul(a, b, "e4m7", rounding="stochastic", sr_bits=8, random_bits=r, **kw))
        row = rb[0, 0, :K]  # broadcast over the outputs
        assert_bits(A.matmul(a, b, "e4m7", rounding="stochastic", sr_bits=8, random_bits=row),
                    emul.matmul(a, b, "e4m7", rounding="stochastic", sr_bits=8, random_bits=row))
        with pytest.raises(ValueError, match="random_bits"):
            A.matmul(a, b, "e4m7", rounding="stochastic", sr_bits=8, random_bits=rb[..., :K] + 256)


def test_sr_fast_path_guard_bits():
    """SR with few bits keeps the fast path (sr_bits + 1 guard bits); every word value of a step."""
    a = np.float32([[1.0, 2.0 ** -9, 2.0 ** -9, 0, 0, 0, 0]] * M)
    b = np.float32([[1.0] * N, [2.0 ** -3] * N, [3 * 2.0 ** -6] * N] + [[0.0] * N] * 4)
    for r in (0, 1, 7, 8, 9, 15):
        rb = np.full((M, N, K), r, np.int64)
        want = emul.matmul(a, b, "e4m7", rounding="stochastic", sr_bits=4, random_bits=rb)
        with eager():
            got = A.matmul(a, b, "e4m7", rounding="stochastic", sr_bits=4, random_bits=rb)
        assert_bits(got, want)
    assert A._config("e4m7", None, "nearest_even", "stochastic", None, "sequential", None, None, 4,
                     "add").grids is not None


# -- conv2d --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("stride,padding,kw", [
    (1, 0, dict(init=np.float32([0.5, -1.0, 2.0])[:, None, None])),
    ((2, 1), (1, 2), dict(rounding="stochastic", sr_bits=6))])
def test_conv2d(stride, padding, kw):
    """Reduction order c, then kh, then kw; zero padding as +0 products; SR words per output."""
    rng = np.random.default_rng(12)
    x, w = narrow(rng, (2, 2, 4, 5)), narrow(rng, (3, 2, 2, 2))
    theirs = dict(kw, seed=77) if "rounding" in kw else kw
    ours = dict(kw, key=jax.random.key(77)) if "rounding" in kw else kw
    want = emul.conv2d(x, w, "e4m7", stride=stride, padding=padding, **theirs)
    got = A.conv2d(x, w, "e4m7", stride=stride, padding=padding, **ours)
    assert_bits(got, want)
    rb = rng.integers(0, 16, want.shape + (8,))
    assert_bits(A.conv2d(x, w, "e4m7", stride=stride, padding=padding, rounding="stochastic", sr_bits=4,
                         random_bits=rb),
                emul.conv2d(x, w, "e4m7", stride=stride, padding=padding, rounding="stochastic", sr_bits=4,
                            random_bits=rb))


# -- jit, vmap, grad ---------------------------------------------------------------------------------------

def test_jit_parity_and_one_compile():
    rng = np.random.default_rng(14)
    traces = []

    @jax.jit
    def f(a, b, key):
        traces.append(1)
        return A.matmul(a, b, "e4m7", rounding="stochastic", sr_bits=8, key=key)

    for seed in (1, 2):
        a, b = narrow(rng, (M, K)), narrow(rng, (K, N))
        assert_bits(f(a, b, jax.random.key(seed)),
                    emul.matmul(a, b, "e4m7", rounding="stochastic", sr_bits=8, seed=seed))
    a, b = wide(rng, (M, K)), wide(rng, (K, N))   # the other branch of the same executable
    assert_bits(f(a, b, jax.random.key(3)), emul.matmul(a, b, "e4m7", rounding="stochastic", sr_bits=8, seed=3))
    assert len(traces) == 1


def test_vmap():
    rng = np.random.default_rng(15)
    a, b = narrow(rng, (2, M, K)), narrow(rng, (K, N))
    f = jax.jit(jax.vmap(lambda x: A.matmul(x, b, "e4m7")))
    assert_bits(f(a), emul.matmul(a, b, "e4m7"))
    bb = narrow(rng, (2, K, N))
    g = jax.jit(jax.vmap(lambda x, y: A.matmul(x, y, "fp16", order="pairwise")))
    assert_bits(g(a, bb), emul.matmul(a, bb, "fp16", order="pairwise"))


def test_grad_is_the_float_matmul():
    rng = np.random.default_rng(16)
    a, b = narrow(rng, (M, K)), narrow(rng, (K, N))
    w = rng.standard_normal((M, N)).astype(np.float32)
    init = np.float32([0.5, -1.0, 0.0, 2.0])
    with eager():
        loss = lambda a, b, i: jnp.sum(A.matmul(a, b, "e4m7", init=i) * w)
        ref = lambda a, b, i: jnp.sum((jnp.matmul(a, b, precision="highest") + i) * w)
        for got, want in zip(jax.grad(loss, (0, 1, 2))(a, b, init), jax.grad(ref, (0, 1, 2))(a, b, init)):
            np.testing.assert_allclose(got, want, rtol=1e-6)
    da = jax.jit(jax.grad(lambda a: jnp.sum(A.matmul(a, b, "int12", overflow="wrap") * w)))(a)
    np.testing.assert_allclose(da, w @ b.T, rtol=1e-6)


# -- long checks -------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("seed", range(8))
def test_random_configurations(seed):
    """Random configurations (format, mode, overflow, order, init, product) on random operands."""
    rng = np.random.default_rng(seed)
    floats = ["e4m7", "e5m6", "fp16", "bf16", "fp32", "e4m3fn", "e5m2", "e3m4", "e4m7-nosub", "e5m2fnuz"]
    fixed = ["int12", "fx<14,2>", "ufx<12,3>", "int8", "fx<16,8>"]
    modes = ["nearest_even", "nearest_away", "nearest_zero", "nearest_up", "nearest_down", "toward_zero",
             "away_from_zero", "up", "down", "odd"]
    for _ in range(8):
        fx = rng.random() < 0.4
        acc = str(rng.choice(fixed if fx else floats))
        kw = dict(rounding=str(rng.choice(modes)))
        if fx:
            rules = ["saturate", "wrap", "saturate_zero"] + ([] if acc.startswith("u") else ["wrap_sign_magnitude"])
            kw["overflow"] = str(rng.choice(rules))
        order = int(rng.integers(3))
        if order == 1:
            kw["order"] = "pairwise"
        elif order == 2:
            kw.update(order="chunked", chunk=int(rng.integers(1, 6)))
        gen = [narrow, wide, int8s, quarters][int(rng.integers(4))]
        K = int(rng.integers(1, 14))
        a, b = gen(rng, (2, K)), gen(rng, (K, 3))
        check_lanes(a, b, acc, **kw)


# -- the exact-product lane and its primitive entry (round_grid) ----------------------------------------

_GRID_FORMATS = ["e4m7", "e4m7-nosub", "e4m3fn", "e3m4", "e5m2"]
_GRID_ROUNDINGS = ["nearest_even", "nearest_away", "nearest_down", "toward_zero", "up", "down", "odd", "stochastic"]


def _grid_cases():
    """Every format in nearest_even and every rounding on one format (rotating) by default; the
    other 28 pairs (each compiles its own eager ops, ~6 s of CPU) under the slow marker."""
    for j, rounding in enumerate(_GRID_ROUNDINGS):
        for i, fmt in enumerate(_GRID_FORMATS):
            default = j == 0 or i == j % len(_GRID_FORMATS)
            yield pytest.param(fmt, rounding, id=f"{rounding}-{fmt}", marks=() if default else pytest.mark.slow)


@pytest.mark.parametrize("fmt,rounding", list(_grid_cases()))
def test_round_grid_is_round_float(fmt, rounding):
    """_round.round_grid (an int32 grid magnitude, a static exponent) gives round_float's code: every
    magnitude near every tie and binade edge, on grids from the format's quantum down 20 bits."""
    from emul_jax import _round as R
    from emul._kernels import slots as SL

    sp = R.spec(fmt, rounding, None, 3 if rounding == "stochastic" else None)
    rng = np.random.default_rng(zlib.crc32(f"{fmt}{rounding}".encode()))
    q0 = sp.P[SL.EMIN] - sp.P[SL.M]   # the finest quantum exponent (with or without subnormals)
    for g in (q0, q0 - 1, q0 - 2, q0 - 7, sp.P[SL.EMAX] - 27, q0 - 20):
        if g > q0 or R.grid_max(sp, g) >= 1 << 30:
            continue
        top = min(2 ** 31 - 1, (R.grid_max(sp, g) * 3) // 2 + (1 << max(0, sp.qe_sub - g)))
        edges = [1 << k for k in range(31) if (1 << k) <= top]
        half = 1 << max(0, sp.qe_sub - g - 1)
        cand = [0, 1, 2, 3, top, R.grid_max(sp, g)]
        for e in edges:
            cand += [e - 1, e, e + 1, e + half, e - half]
        cand += list(rng.integers(0, top + 1, 400))
        mag = np.unique(np.clip(np.array(cand, np.int64), 0, top)).astype(np.uint32)
        mag = np.concatenate([mag, mag])
        sign = np.concatenate([np.zeros(mag.size // 2), np.ones(mag.size // 2)]).astype(np.uint32)
        u = rng.integers(0, 8, mag.size).astype(np.uint32)
        r, over = R.round_grid(sp, jnp.asarray(mag), jnp.asarray(sign), g, jnp.asarray(u))
        code = R.round_float(sp, jnp.asarray(sign), None, jnp.asarray(mag), jnp.full(mag.shape, g, np.int32),
                             None, jnp.asarray(u))
        ovf_pos, ovf_neg = sp.by_sign(SL.OVF_POS, SL.OVF_NEG)
        vals = np.abs(np.asarray(R.code_to_f32_bits(sp, code)).view(np.float32).astype(np.float64))
        r, over = np.asarray(r).astype(np.float64), np.asarray(over)
        ovf = np.where(sign != 0, ovf_neg, ovf_pos)
        # no overflow: the same value; overflow: round_float took the overflow rule's code too
        assert np.array_equal(r[~over] * 2.0 ** g, vals[~over]), (fmt, rounding, g)
        assert np.array_equal(np.asarray(code)[over], ovf[over]), (fmt, rounding, g)
        assert over.any() and (~over).any()


def test_round_grid_rejects():
    from emul_jax import _round as R

    sp = R.spec("e4m7")
    with pytest.raises(ValueError, match="coarser"):
        R.round_grid(sp, jnp.uint32([1]), jnp.uint32([0]), sp.qe_sub + 1)
    with pytest.raises(ValueError, match="coarser"):
        R.round_grid(R.spec("e4m7-nosub"), jnp.uint32([1]), jnp.uint32([0]), -6)
    with pytest.raises(ValueError, match="fit uint32"):
        R.round_grid(sp, jnp.uint32([1]), jnp.uint32([0]), -40)


def _exact_case_operands():
    """e4m3fn operands for the exact-product lane: exact ties of e4m7 (1 + 2**-8), a 2**-18 product
    breaking them either way, swamping, subnormal products (2**-9 · 2**-9), overflow to inf and
    back (448 · 448), cancellation to an exact zero, a tiny negative sum rounding to -0, ±0 products."""
    sub = 2.0 ** -9
    a = np.float32([[1.0, 2.0 ** -8, sub, 0.0, 0.0, 0.0, -0.0],
                    [1.0, 2.0 ** -8, -sub, 1.0, -1.0, 0.0, 0.0],
                    [-sub, -sub, sub, -0.0, -0.0, -0.0, -0.0],
                    [448.0, 448.0, -448.0, 1.0, 0.5, -0.0, 0.0],
                    [-1.0, -2.0 ** -8, -sub, 3 * 2.0 ** -8, -0.0, 1.0, -1.0],
                    [0.0, -0.0, 0.0, -0.0, 0.0, -0.0, -sub]])
    b = np.float32([[1.0, 1.0, -0.0, sub, 0.0, -1.0, -0.0],
                    [1.0, 1.0, 0.0, 1.0, -sub, 1.0, 1.0],
                    [sub, sub, 1.0, 1.0, -1.0, 0.0, 448.0],
                    [sub, 1.0, 1.0, 1.0, -0.0, 1.0, 1.0],
                    [1.0, -1.0, 0.0, -0.0, 1.0, 1.0, 2.0],
                    [1.0, 1.0, 1.0, -1.0, 1.0, -1.0, 1.0],
                    [-0.0, -0.0, 1.0, 1.0, -1.0, 0.0, sub]])
    return a, b


@pytest.mark.parametrize("acc,kw", [("e4m7", {}), ("e4m7", dict(rounding="nearest_away")),
                                    ("e4m7", dict(rounding="down")), ("e4m7", dict(rounding="up")),
                                    ("e4m7", dict(rounding="toward_zero")), ("e4m7", dict(rounding="odd")),
                                    ("e4m7", dict(overflow="saturate")), ("e4m7-nosub", {}),
                                    ("e4m3fn", {}), ("e3m4", dict(rounding="nearest_down"))])
def test_exact_lane_adversarial(acc, kw):
    """The exact-product lane equals the core and the general path (and the round-to-odd path
    where it applies) on ties, swamping, subnormal products, overflow, zero signs."""
    a, b = _exact_case_operands()
    got = check_lanes(a, b, acc, expect_exact=True, **kw)
    assert "general" in got
    rng = np.random.default_rng(zlib.crc32(f"x{acc}{kw}".encode()))
    a, b = narrow(rng, (M, K)), narrow(rng, (K, N))
    check_lanes(a, b, acc, expect_exact=True, **kw)


@pytest.mark.parametrize("init", [np.float32([-0.0, 0.0, -0.0, 1.0, -0.0, 2.0 ** -13, -0.0]),
                                  np.float32([[-0.0], [2.0 ** -13], [-200.0], [0.0], [-0.0], [5.0]])])
def test_exact_lane_init(init):
    a, b = _exact_case_operands()
    want = emul.matmul(a, b, "e4m7", init=init)
    got = dict(lane_results(a, b, "e4m7", init=init))
    assert "exact" in got
    for lane, y in got.items():
        assert_bits(y, want)


def test_exact_lane_sr():
    a, b = _exact_case_operands()
    rng = np.random.default_rng(21)
    for r in (3, 8):
        rb = rng.integers(0, 2 ** r, (a.shape[0], b.shape[1], K))
        want = emul.matmul(a, b, "e4m7", rounding="stochastic", sr_bits=r, random_bits=rb)
        cfg = A._config("e4m7", None, "nearest_even", "stochastic", None, "sequential", None, None, r, "add")
        assert cfg.xgrid is not None
        with eager():
            u = jnp.asarray(rb.astype(np.uint32))[None]
            for fast in (False, "exact"):
                y, _ = A._compute(cfg, jnp.asarray(a)[None], jnp.asarray(b)[None], None, u, None, fast)
                assert_bits(np.asarray(y)[0], want)


@pytest.mark.parametrize("acc,overflow", [("int12", "saturate"), ("int12", "saturate_zero"),
                                          ("int12", "saturate_symmetric"), ("int12", "wrap"),
                                          ("ufx<10,2>", "saturate"), ("ufx<10,2>", "wrap"), ("fx<14,2>", "saturate"),
                                          ("int8", "saturate_zero")])
def test_exact_lane_fixed(acc, overflow):
    """Fixed point with products on the lsb grid: an int32 add and the overflow rule per step."""
    rng = np.random.default_rng(zlib.crc32(f"{acc}{overflow}".encode()))
    a = int8s(rng, (M, K)) / (4 if "<" in acc else 1)
    b = int8s(rng, (K, N))
    a[0, :] = 127.0 / (4 if "<" in acc else 1)      # a run of large steps: overflow on the way
    b[:, 0] = np.float32([100, 100, -100, -100, -100, -100, 100])
    check_lanes(a.astype(np.float32), b, acc, overflow=overflow, expect_exact=True)


def test_exact_lane_check():
    cfg = A._config("e4m7", None, "nearest_even", "nearest_even", None, "sequential", None, None, None, "add")
    assert cfg.xgrid is not None and cfg.xgrid.g == -20
    check = jax.jit(lambda a, b, i: A._exact_ok(cfg, A._f32_bits_exact(a), A._f32_bits_exact(b), i))
    rng = np.random.default_rng(0)
    e = narrow(rng, (M, M))
    zi = np.zeros((1, M, M), np.uint32)

    def ok(x, y, init=zi):
        return bool(check(*(e if v is None else np.broadcast_to(np.float32(v), e.shape) for v in (x, y)), init))

    assert ok(None, None)
    assert ok(2.0 ** -10, 2.0 ** -10)            # products 2**-20: on the grid
    assert not ok(2.0 ** -11, 2.0 ** -10)        # 2**-21: below it (the round-to-odd path takes these)
    assert not ok(wide(rng, (M, M)), None)
    assert not ok(1e-40, None)
    assert not ok(None, np.inf)
    assert not ok(None, None, np.full((1, M, M), 0x780, np.uint32))     # an infinite init
    assert ok(None, None, np.full((1, M, M), 0xF80 - 1, np.uint32))     # -max finite
    for acc, kw in [("e5m6", {}), ("fp16", {}), ("e4m7", dict(order="pairwise")), ("e4m7", dict(order="chunked")),
                    ("fx<10,3>", dict(overflow="wrap_sign_magnitude"))]:
        c = A._config(acc, None, "nearest_even", "nearest_even", kw.get("overflow"), kw.get("order", "sequential"),
                      4 if kw.get("order") == "chunked" else None, None, None, "add")
        assert c.xgrid is None, (acc, kw)
    assert A._config("e4m7", "e4m3fn", "nearest_even", "nearest_even", None, "sequential", None, None, None,
                     "add").xgrid is None

"""emul.dot / matmul / conv2d: step-by-step saturation and wrapping, orders, fast paths equal to the
exact general path, SR word layout, shapes like np.matmul, K = 0, bad input."""

from __future__ import annotations

import math
import zlib
from fractions import Fraction

import numba
import numpy as np
import pytest

import emul
import emul.accumulate as A
import emul._kernels.fast_accumulate as FK
import emul._kernels.sr_accumulate as SR
import reference

ml_dtypes = pytest.importorskip("ml_dtypes")


def e4m3(shape, rng, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(ml_dtypes.float8_e4m3fn).astype(np.float32)


def run(a, b, acc, fast=True, **kw):
    args = dict(product=None, product_rounding="nearest_even", rounding="nearest_even", overflow=None,
                order="sequential", chunk=None, outer=None, init=None, seed=None, key=None, random_bits=None,
                sr_bits=None, sr_method="add")
    args.update(kw)
    return A._matmul(a, b, acc, *args.values(), fast=fast)


def identical(x, y):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return x.shape == y.shape and bool(np.all((x.view(np.uint64) == y.view(np.uint64)) | (np.isnan(x) & np.isnan(y))))


@pytest.fixture
def plans(monkeypatch):
    """Records which path each call took: the plan's class name, or 'general'."""
    seen = []
    original = A._plan

    def spy(job):
        plan = original(job)
        seen.append("general" if plan is None else type(plan).__name__)
        return plan

    monkeypatch.setattr(A, "_plan", spy)
    return seen


# --- the step-by-step rules --------------------------------------------------------------------

@pytest.mark.parametrize("fast", [True, False])
def test_saturating_int7_clamps_every_step(fast):
    a = np.array([1.0] * 64 + [-1.0] * 64)
    b = np.ones(128)
    # 64 x (1*1) saturates at 63; then 64 x (-1*1) brings it to -1 (a final clamp would give 0)
    assert run(a, b, "fx<7,0>", fast) == -1.0
    assert run(a, b, "fx<7,0>", fast, overflow="wrap") == 0.0
    assert run(a, b, "fx<7,0>", fast, overflow="saturate_symmetric") == -1.0
    assert run(np.ones(70), np.ones(70), "fx<7,0>", fast, overflow="saturate_zero") == 6.0


def test_wrapping_overflows_on_the_way_and_recovers():
    a = np.array([60.0, 10.0, -10.0, -60.0, 5.0])
    assert A.dot(a, np.ones(5), "int7", overflow="wrap") == 5.0  # 70 wraps to -58, then comes back
    assert A.dot(a, np.ones(5), "int7") == -2.0                  # 63 - 10 - 60 + 5 after the clamp
    assert reference.dot(list(a), [1.0] * 5, emul.format("int7"), overflow="wrap") == 5


def test_swamping_and_order():
    ones = np.ones(1000)
    assert A.dot(ones, ones, "bf16") == 256.0            # 256 + 1 rounds back to 256 (8 bits)
    assert A.dot(ones, ones, "bf16", order="pairwise") == 1000.0
    assert A.dot(ones, ones, "bf16", order="chunked", chunk=16) == 1000.0
    # chunks of 300 swamp at 256 each; the outer sum 256 + 256 + 256 + 100 = 868 is exact
    assert A.dot(ones, ones, "bf16", order="chunked", chunk=300) == 868.0
    assert reference.dot([1] * 1000, [1] * 1000, emul.format("bf16"), order="chunked", chunk=300) == 868


def test_subnormal_products_and_ties():
    # e4m3fn subnormals: 2**-9 * 2**-9 = 2**-18 is exact here, below e4m7's smallest subnormal 2**-13
    a = np.array([2.0**-9, 2.0**-9, 1.0])
    b = np.array([2.0**-9, 2.0**-4, 2.0**-14])
    for mode in ("nearest_even", "toward_zero", "up", "odd"):
        got = A.dot(a, b, "e4m7", rounding=mode)
        want = reference.dot(list(a), list(b), emul.format("e4m7"), rounding=mode)
        assert Fraction(float(got)) == want
    # a tie: 1 + 2**-8 between 1 and 1 + 2**-7 in e4m7 -> even (1.0); then 1 + 3*2**-8 -> 1 + 2**-6
    assert A.dot([1.0, 1.0], [1.0, 2.0**-8], "e4m7") == 1.0
    assert A.dot([1.0, 3.0], [1.0, 2.0**-8], "e4m7") == 1.0 + 2.0**-6


# --- fast paths are the general path -----------------------------------------------------------

FLOAT_CASES = [
    dict(acc="e4m7"), dict(acc="e5m6"), dict(acc="fp16"), dict(acc="bf16"), dict(acc="e4m7-nosub"),
    dict(acc="e4m7", order="pairwise"), dict(acc="e4m7", order="chunked", chunk=16),
    dict(acc="e4m7", order="chunked", chunk=7, outer="fp32"), dict(acc="e5m2", overflow="saturate"),
    dict(acc="e4m3fn"), dict(acc="e5m2fnuz"), dict(acc="e4m7", init=1.5),
    dict(acc="e4m7", rounding="toward_zero"), dict(acc="fp16", rounding="down"), dict(acc="bf16", rounding="up"),
    dict(acc="e4m7", rounding="odd"), dict(acc="e5m6", rounding="nearest_away", order="pairwise"),
    dict(acc="e4m7", rounding="stochastic", seed=3, sr_bits=32), dict(acc="bf16", rounding="stochastic", seed=4,
                                                                          sr_bits=8, order="pairwise"),
    dict(acc="fp16", rounding="stochastic", seed=5, sr_bits=11, sr_method="compare", order="chunked", chunk=8),
    dict(acc="e4m7-nosub", rounding="stochastic", seed=6, sr_bits=8),
    dict(acc="e4m7", product="e4m3fn"), dict(acc="fp16", product="e5m2", product_rounding="toward_zero",
                                             order="pairwise"),
]


@pytest.mark.parametrize("kw", FLOAT_CASES, ids=lambda kw: "-".join(f"{v}" for v in kw.values()))
@pytest.mark.parametrize("data", ["e4m3", "wide", "tiny"])
def test_float_fast_path_equals_general(kw, data, plans):
    rng = np.random.default_rng(zlib.crc32(data.encode()))
    kw = dict(kw)
    acc = kw.pop("acc")
    if data == "e4m3":
        a, b = e4m3((9, 70), rng), e4m3((70, 13), rng)
    elif data == "wide":  # 24-bit values with exponents far apart: TwoSum's error term matters
        a = rng.standard_normal((9, 70)).astype(np.float32).astype(np.float64) * 2.0 ** rng.integers(-20, 8, (9, 70))
        b = e4m3((70, 13), rng).astype(np.float64)
    else:  # products in and below the subnormal range
        a, b = e4m3((9, 70), rng, 2.0**-6), e4m3((70, 13), rng, 2.0**-5)
    a[rng.random(a.shape) < 0.05] = 0.0
    fast = run(a, b, acc, True, **kw)
    assert plans[-1] == "_FloatPlan"
    assert identical(fast, run(a, b, acc, False, **kw))


def test_float_rows_that_overflow_fall_back_to_the_general_path(plans):
    rng = np.random.default_rng(1)
    a = e4m3((8, 40), rng, 4.0)
    b = e4m3((40, 6), rng, 4.0)
    a[:4, :3] = 448.0       # rows 0-3, columns 0-1: 448 * 448 overflows fp16 (inf) and e4m3fn (NaN)
    b[:3, :2] = 448.0
    for acc, ovf in (("fp16", None), ("e4m3fn", None), ("e5m2", "saturate")):
        got = run(a, b, acc, True, overflow=ovf)
        assert plans[-1] == "_FloatPlan"
        assert identical(got, run(a, b, acc, False, overflow=ovf))
    assert not np.isfinite(run(a, b, "fp16", True)).all()


FIXED_CASES = [
    dict(acc="int12"), dict(acc="int12", overflow="wrap"), dict(acc="int12", overflow="saturate_zero"),
    dict(acc="int12", overflow="saturate_symmetric"), dict(acc="int12", overflow="wrap_sign_magnitude"),
    dict(acc="uint16", overflow="wrap"), dict(acc="uint16"), dict(acc="int12", order="pairwise"),
    dict(acc="int12", order="pairwise", overflow="wrap_sign_magnitude"),
    dict(acc="int12", order="chunked", chunk=8), dict(acc="int12", order="chunked", chunk=5, outer="fx<24,3>"),
    dict(acc="int12", order="chunked", chunk=16, overflow="wrap"), dict(acc="fx<14,2>", overflow="wrap"),
    dict(acc="int24"), dict(acc="int32", overflow="wrap"), dict(acc="int12", init=-100.0),
    dict(acc="int12", rounding="stochastic", seed=1),  # SR leaves on-grid sums alone
    dict(acc="int12", product="int32"),                # a product format that holds every product
]


@pytest.mark.parametrize("kw", FIXED_CASES, ids=lambda kw: "-".join(f"{v}" for v in kw.values()))
@pytest.mark.parametrize("scale", [128, 4, 3000])
def test_fixed_fast_path_equals_general(kw, scale, plans):
    rng = np.random.default_rng(scale)
    kw = dict(kw)
    acc = kw.pop("acc")
    a = rng.integers(-scale, scale, (7, 90)).astype(np.int8 if scale <= 128 else np.int64)
    b = rng.integers(-scale, scale, (90, 11))
    if acc.startswith("u"):
        a, b = np.abs(a), np.abs(b)
    fast = run(a, b, acc, True, **kw)
    assert plans[-1] == "_FixedPlan"
    assert identical(fast, run(a, b, acc, False, **kw))


def test_fixed_bounded_rows_use_the_exact_sum(plans):
    """Rows whose |init| + sum|a||b| stays in range are one exact BLAS product; the others step."""
    rng = np.random.default_rng(2)
    a = rng.integers(-3, 4, (6, 50)).astype(float)
    a[3:] *= 40  # these rows saturate
    b = rng.integers(-3, 4, (50, 9)).astype(float)
    for order, chunk in (("sequential", None), ("pairwise", None), ("chunked", 7)):
        got = run(a, b, "int12", True, order=order, chunk=chunk)
        assert plans[-1] == "_FixedPlan"
        assert identical(got, run(a, b, "int12", False, order=order, chunk=chunk))
        assert identical(got[:3], a[:3] @ b)


def test_general_path_for_off_grid_products(plans):
    a = np.array([[0.3, 0.7, -1.1]])
    b = np.array([[1.0], [0.5], [0.25]])
    run(a, b, "fx<8,2>")
    assert plans[-1] == "general"
    want = reference.matmul(a.tolist(), b.tolist(), emul.format("fx<8,2>"))
    assert Fraction(float(run(a, b, "fx<8,2>")[0, 0])) == want[0][0]


# --- stochastic rounding words -----------------------------------------------------------------

@pytest.mark.parametrize("order,chunk", [("sequential", None), ("pairwise", None), ("chunked", 3)])
def test_sr_word_layout(order, chunk):
    rng = np.random.default_rng(7)
    a, b = e4m3((2, 8), rng), e4m3((8, 3), rng)
    T = A.sr_steps(8, order, chunk)
    assert T == reference.sr_steps(8, order, chunk)
    r = 10
    words = rng.integers(0, 2**r, (2, 3, T))
    got = A.matmul(a, b, "e4m7", rounding="stochastic", random_bits=words, sr_bits=r, order=order, chunk=chunk)
    for i in range(2):
        for j in range(3):  # output element (i, j) uses words[i, j, :] in step order
            want = reference.dot(a[i].tolist(), b[:, j].tolist(), emul.format("e4m7"), rounding="stochastic",
                                 u=words[i, j].tolist(), sr_bits=r, order=order, chunk=chunk)
            assert Fraction(float(got[i, j])) == want
    # seed= draws emul.random.bits(key(seed), out.shape + (T,)) >> (32 - r)
    by_seed = A.matmul(a, b, "e4m7", rounding="stochastic", seed=9, sr_bits=r, order=order, chunk=chunk)
    drawn = np.asarray(emul.random.bits(emul.random.key(9), (2, 3, T))) >> np.uint32(32 - r)
    assert identical(by_seed, A.matmul(a, b, "e4m7", rounding="stochastic", random_bits=drawn, sr_bits=r,
                                       order=order, chunk=chunk))


def test_sr_words_are_independent_of_the_path():
    rng = np.random.default_rng(8)
    a, b = e4m3((5, 40), rng), e4m3((40, 7), rng)
    for acc in ("e4m7", "fp32"):  # fp32 with 32 SR bits needs the general path
        x = run(a, b, acc, True, rounding="stochastic", seed=2)
        assert identical(x, run(a, b, acc, False, rounding="stochastic", seed=2))


# --- shapes, init, K = 0 -----------------------------------------------------------------------

@pytest.mark.parametrize("sa,sb", [((5,), (5,)), ((3, 5), (5,)), ((5,), (5, 4)), ((3, 5), (5, 4)),
                                   ((2, 1, 3, 5), (6, 5, 4)), ((1, 3, 5), (2, 5, 4)), ((0, 5), (5, 4)),
                                   ((3, 0), (0, 4))])
def test_shapes_like_np_matmul(sa, sb):
    rng = np.random.default_rng(0)
    a = rng.integers(-9, 9, sa).astype(np.float32)
    b = rng.integers(-9, 9, sb).astype(np.float32)
    got = A.matmul(a, b, "fp32")   # small integers: every step exact, so equal to np.matmul
    want = np.matmul(a, b)
    assert got.shape == want.shape and got.dtype == np.float32
    assert np.array_equal(got, want)
    assert A.dot(a, b, "fp32").shape == want.shape


def test_k_zero_gives_init_or_plus_zero():
    z = A.matmul(np.zeros((3, 0)), np.zeros((0, 2)), "e4m7")
    assert z.shape == (3, 2) and not np.signbit(z).any() and (z == 0).all()
    assert A.dot([], [], "fp16", init=-2.5) == -2.5
    assert np.array_equal(A.matmul(np.zeros((2, 0)), np.zeros((0, 3)), "int8", init=[1, 2, 3]), [[1, 2, 3]] * 2)
    assert math.copysign(1, A.dot([], [], "fp16", init=-0.0)) == -1


def test_init_is_a_bias_broadcast_to_the_output():
    rng = np.random.default_rng(4)
    a, b = e4m3((4, 30), rng), e4m3((30, 5), rng)
    bias = emul.quantize(rng.standard_normal(5), "e4m7")
    got = A.matmul(a, b, "e4m7", init=bias)
    for i in range(4):
        for j in range(5):
            want = reference.dot(a[i].tolist(), b[:, j].tolist(), emul.format("e4m7"), init=float(bias[j]))
            assert Fraction(float(got[i, j])) == want
    # chunked: init starts the outer sum, so it must be representable there
    tenth = float(np.float32(0.1))
    A.matmul(a, b, "e4m7", order="chunked", chunk=4, outer="fp32", init=tenth)
    with pytest.raises(ValueError, match="init"):
        A.matmul(a, b, "e4m7", init=tenth)


def test_float32_in_float32_out():
    x = np.ones((2, 3), np.float32)
    assert A.matmul(x, x.T, "bf16").dtype == np.float32
    assert A.matmul(x, x.T, "int12").dtype == np.float32
    assert A.matmul(x.astype(np.float64), x.T, "bf16").dtype == np.float64
    assert A.matmul(x, x.T, "e4m7", order="chunked", chunk=2, outer="fp64").dtype == np.float64


def test_float32_operands_and_results_convert_exactly():
    """accumulate._widened / _narrowed (numpy's casts where every element is 0 or a normal float32)
    give the bits of quantize.exact_float64 / exact_float32 (integer operations only), including
    arrays with a subnormal, inf or NaN somewhere (those take the exact kernels)."""
    from emul.quantize import exact_float32, exact_float64

    base = np.array([0.0, -0.0, 1.5, -2.0**-126, 2.0**127 * 1.5, -448.0], np.float32)
    for extra in ([], [2.0**-149], [-2.0**-127], [np.inf], [-np.nan], [np.float32(2.0**-126) * np.float32(0.5)]):
        x = np.concatenate([base, np.array(extra, np.float32)]).reshape(1, -1)
        w = A._widened(x)
        assert w.dtype == np.float64 and np.array_equal(w.view(np.uint64), exact_float64(x).view(np.uint64))
    fmt_sub = emul.formats.format("fx<8,130>")  # values below 2**-126: the exact kernel
    for fmt, vals in ((emul.formats.format("e4m7"), [0.0, -0.0, 2.0**-13, -255.0, np.inf, -np.inf]),
                      (emul.formats.format("e4m7"), [1.0, -np.nan]), (fmt_sub, [2.0**-130, -2.0**-129])):
        v = np.array(vals, np.float64)
        assert np.array_equal(A._narrowed(v, fmt).view(np.uint32), exact_float32(v).view(np.uint32))


def test_special_values():
    inf = np.inf
    assert A.dot([inf, 1.0], [1.0, 1.0], "fp16") == inf
    assert np.isnan(A.dot([inf, -inf], [1.0, 1.0], "fp16"))
    assert np.isnan(A.dot([0.0], [inf], "bf16"))
    assert A.dot([inf], [1.0], "int8") == 127.0          # inf saturates a saturating fixed accumulator
    assert A.dot([1e6, 1.0], [1e6, 1.0], "e5m2", overflow="saturate") == 57344.0
    for a in ([np.nan, 1.0], [-np.nan, 1.0]):
        got = A.dot(a, [1.0, 1.0], "e5m2")
        want = reference.dot(a, [1.0, 1.0], emul.format("e5m2"))
        assert np.isnan(got) and np.signbit(got) == (math.copysign(1, want) < 0)


# --- conv2d --------------------------------------------------------------------------------------

@pytest.mark.parametrize("stride,padding", [(1, 0), (2, 1), ((1, 2), (2, 0))])
def test_conv2d_is_the_matmul_of_its_im2col(stride, padding):
    rng = np.random.default_rng(5)
    x = e4m3((2, 3, 7, 6), rng)
    w = e4m3((4, 3, 3, 2), rng)
    got = A.conv2d(x, w, "e4m7", stride=stride, padding=padding, order="chunked", chunk=5)
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    ho, wo = (7 + 2 * ph - 3) // sh + 1, (6 + 2 * pw - 2) // sw + 1
    assert got.shape == (2, 4, ho, wo)
    for n, o, y, xx in [(0, 0, 0, 0), (1, 3, ho - 1, wo - 1), (1, 2, ho // 2, 0)]:
        # the reduction order: channel (outermost), then kernel row, then kernel column
        patch = [xp[n, c, y * sh + i, xx * sw + j] for c in range(3) for i in range(3) for j in range(2)]
        weights = [w[o, c, i, j] for c in range(3) for i in range(3) for j in range(2)]
        want = reference.dot([float(v) for v in patch], [float(v) for v in weights], emul.format("e4m7"),
                             order="chunked", chunk=5)
        assert Fraction(float(got[n, o, y, xx])) == want


def test_conv2d_bias_and_sr():
    rng = np.random.default_rng(6)
    x = e4m3((1, 2, 4, 4), rng)
    w = e4m3((3, 2, 2, 2), rng)
    bias = np.array([0.5, -1.0, 2.0])
    got = A.conv2d(x, w, "fp16", init=bias[:, None, None])
    plain = A.conv2d(x, w, "fp32")
    assert np.allclose(got - bias[:, None, None], plain, atol=1e-2)
    s1 = A.conv2d(x, w, "e4m7", rounding="stochastic", seed=1)
    words = np.asarray(emul.random.bits(emul.random.key(1), (1, 3, 3, 3, 8))) >> np.uint32(0)
    assert identical(s1, A.conv2d(x, w, "e4m7", rounding="stochastic", random_bits=words))


# --- bad input -----------------------------------------------------------------------------------

@pytest.mark.parametrize("call,match", [
    (lambda: A.matmul(np.ones((2, 3)), np.ones((4, 2)), "fp16"), "columns"),
    (lambda: A.matmul(np.ones((2, 2, 3)), np.ones((3, 3, 2)), "fp16"), "broadcast"),
    (lambda: A.matmul(np.float64(1.0), np.ones(2), "fp16"), "dimension"),
    (lambda: A.dot(np.ones(3), np.ones(3), "fp16", order="chunked", chunk=0), "chunk"),
    (lambda: A.dot(np.ones(3), np.ones(3), "fp16", order="chunked", chunk=-2), "chunk"),
    (lambda: A.dot(np.ones(3), np.ones(3), "fp16", order="chunked"), "chunk"),
    (lambda: A.dot(np.ones(3), np.ones(3), "fp16", chunk=4), "chunk"),
    (lambda: A.dot(np.ones(3), np.ones(3), "fp16", outer="fp32"), "outer"),
    (lambda: A.dot(np.ones(3), np.ones(3), "fp16", order="tree"), "order"),
    (lambda: A.dot(np.ones(3), np.ones(3), "fp16", init=0.1), "not representable"),
    (lambda: A.dot(np.ones(3), np.ones(3), "int8", init=0.5), "not representable"),
    (lambda: A.dot(np.ones(3), np.ones(3), "int8", init=np.nan), "NaN"),
    (lambda: A.matmul(np.ones((2, 3)), np.ones((3, 2)), "fp16", init=np.ones(3)), "init"),
    (lambda: A.dot(np.ones(3), np.ones(3), "fp16", overflow="wrap"), "acc"),
    (lambda: A.dot(np.ones(3), np.ones(3), "int12", overflow="ieee"), "acc"),
    (lambda: A.dot(np.ones(3), np.ones(3), "int12", order="chunked", chunk=2, outer="fp32", overflow="wrap"), "outer"),
    (lambda: A.dot(np.ones(3), np.ones(3), "uint12", overflow="wrap_sign_magnitude"), "acc"),
    (lambda: A.dot([np.nan, 1.0], np.ones(2), "int12"), "NaN"),
    (lambda: A.dot([np.inf, 1.0], np.ones(2), "int12", overflow="wrap"), "infinity"),
    (lambda: A.dot([np.inf], [0.0], "e2m1fn"), "NaN"),
    (lambda: A.dot(np.ones(3), np.ones(3), "fp16", product="e4m3fn", product_rounding="stochastic"), "stochastic"),
    (lambda: A.dot(np.ones(3), np.ones(3), "fp16", rounding="stochastic"), "stochastic"),
    (lambda: A.dot(np.ones(3), np.ones(3), "fp16", rounding="stochastic", random_bits=np.zeros(2, np.uint32)),
     "random_bits"),
    (lambda: A.dot(np.ones(3), np.ones(3), "int64"), "bits <= 53"),
    (lambda: A.conv2d(np.ones((1, 2, 4, 4)), np.ones((1, 3, 2, 2)), "fp16"), "channels"),
    (lambda: A.conv2d(np.ones((1, 2, 4, 4)), np.ones((1, 2, 5, 2)), "fp16"), "larger"),
    (lambda: A.conv2d(np.ones((1, 2, 4, 4)), np.ones((1, 2, 2, 2)), "fp16", stride=0), "stride"),
    (lambda: A.conv2d(np.ones((2, 4, 4)), np.ones((1, 2, 2, 2)), "fp16"), "N, C, H, W"),
])
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("acc,kw", [("e4m7", {}), ("int12", {}), ("int12", dict(overflow="wrap")),
                                    ("fx<12,2>", dict(order="pairwise")), ("bf16", dict(order="chunked", chunk=5))])
def test_integer_dtypes_give_the_same_results(acc, kw):
    rng = np.random.default_rng(9)
    a = rng.integers(-128, 128, (5, 40))
    b = rng.integers(-128, 128, (40, 6))
    want = run(a.astype(np.float64), b.astype(np.float64), acc, False, **kw)
    for dt in (np.int8, np.int16, np.int32, np.int64, np.float32, ">i4"):
        for fast in (True, False):
            assert identical(run(a.astype(dt), b.astype(dt), acc, fast, **kw), want), (dt, fast)
    assert identical(run(np.abs(a).astype(np.uint8), np.abs(b).astype(np.uint16), acc, True, **kw),
                     run(np.abs(a).astype(np.float64), np.abs(b).astype(np.float64), acc, False, **kw))


# --- vectorised SR, int16 lanes, thread counts (issue 13) ---------------------------------------

SR_CASES = [dict(order="sequential"), dict(order="pairwise"), dict(order="chunked", chunk=5),
            dict(order="chunked", chunk=4, outer="fp16"), dict(product="e5m2"),
            dict(sr_method="compare", sr_bits=5), dict(init=-3.5)]


@pytest.mark.parametrize("kw", SR_CASES, ids=lambda kw: "-".join(f"{v}" for v in kw.values()))
@pytest.mark.parametrize("k", [1, 2, 37])
def test_sr_kernel_generates_the_documented_words(kw, k, plans):
    """sr_accumulate.sr_rows with in-kernel Threefry words (seed/key) equals the same call with
    the words materialised as random_bits, and the general kernel, bit for bit."""
    rng = np.random.default_rng(k)
    a, b = e4m3((3, k), rng, 4.0), e4m3((k, 35), rng)
    a[0, 0] = 0.0
    kw = dict(kw)
    r = kw.pop("sr_bits", 8)
    T = A.sr_steps(k, kw.get("order", "sequential"), kw.get("chunk"))
    drawn = np.asarray(emul.random.bits(emul.random.key(11), (3, 35, T))) >> np.uint32(32 - r)
    by_seed = run(a, b, "e4m7", True, rounding="stochastic", seed=11, sr_bits=r, **kw)
    assert plans[-1] == "_FloatPlan"
    by_key = run(a, b, "e4m7", True, rounding="stochastic", key=emul.random.key(11), sr_bits=r, **kw)
    by_words = run(a, b, "e4m7", True, rounding="stochastic", random_bits=drawn, sr_bits=r, **kw)
    general = run(a, b, "e4m7", False, rounding="stochastic", random_bits=drawn, sr_bits=r, **kw)
    assert identical(by_seed, general) and identical(by_key, general) and identical(by_words, general)


def test_sr_rows_that_overflow_use_the_same_words():
    rng = np.random.default_rng(3)
    a, b = e4m3((4, 20), rng, 8.0), e4m3((20, 5), rng, 8.0)
    a[1, :4] = 448.0
    b[:4, 2] = 448.0  # element (1, 2) overflows fp16 (inf): recomputed by the general kernel
    x = run(a, b, "fp16", True, rounding="stochastic", seed=4, sr_bits=8)
    assert np.isinf(x[1, 2])
    assert identical(x, run(a, b, "fp16", False, rounding="stochastic", seed=4, sr_bits=8))


# --- the SR kernel's pieces against the general step and emul.random (issue 13) -----------------

@numba.njit  # not cached: Numba would not see edits of the kernels it inlines
def _sr_add_and_fstep(s, p, uw, F):
    """(sr_add, fstep with twosum/down/compare off) of every triple, for one format vector F."""
    m, emin, qb, pq, mx, ovp, ovn, near, k0, ks, kl, nz, sub = FK._unpack(F)
    r = F[FK.F_SRBITS]
    ok, D, eb, bias, zadd = SR.sr_add_params(m, emin, qb, mx, nz)
    out = np.empty((s.size, 2), np.float64)
    for i in range(s.size):
        out[i, 0] = SR.sr_add(s[i], p[i], uw[i], np.uint64(r), D, eb, bias, mx, ovp, ovn, zadd) if ok else np.nan
        out[i, 1] = FK.fstep(s[i], p[i], uw[i], False, False, m, emin, qb, pq, mx, ovp, ovn, near, k0, ks, kl, nz,
                             True, r, False)
    return out


def _sr_edge_triples(fmt, r, F):
    """(s, p, uw) in sr_add's domain (s + p exact, and a multiple of 2**(qbelow + m - 52) below
    2**emin): grid points of fmt plus fractions of their ulp (0, 2**-r, 1/2, 1 - 2**-r, and offsets
    below 2**-r of an ulp), in the subnormals, below the quantum, at binade ends, at max finite and
    one ulp above it; zeros; s the format's overflow value when that is not finite."""
    m, qb = fmt.man_bits, (fmt.emin - fmt.man_bits if fmt.subnormals else fmt.emin)
    grid = [(0.0, qb)]  # (grid value, log2 of its ulp: the spacing above it)
    if fmt.subnormals:
        grid += [(math.ldexp(k, qb), qb) for k in (1, 2, 3, 2**m - 1)]
    for e in (fmt.emin, 0, fmt.emax):
        grid += [(math.ldexp(1, e), e - m), (math.ldexp(2**m + 1, e - m), e - m),
                 (math.ldexp(2**(m + 1) - 1, e - m), e - m)]  # the last: a binade end
    grid += [(float(fmt.max), fmt.emax - m), (float(fmt.max) + math.ldexp(1, fmt.emax - m), fmt.emax - m)]
    fracs = [0.0, 2.0**-r, 0.5, 1 - 2.0**-r, 2.0**-(r + 3), 1 - 2.0**-(r + 3), 2.0**-40]
    xs = [g + math.ldexp(f, q) for g, q in grid for f in fracs]
    xs += [math.ldexp(f, qb) for f in (0.75, 2.0**-r, 2.0**-(r + 1), 1 - 2.0**-(r + 2), 2.0**-40)]  # below 2**qb
    xs = [x for x in xs if x >= 2.0**fmt.emin or math.ldexp(x, 52 - qb - m).is_integer()]
    words = [0, 1, 2**(r - 1), 2**r - 1]
    rng = np.random.default_rng(r)
    s, p, u = [], [], []
    for x in xs:
        for sign in (1.0, -1.0):
            split = math.ldexp(1, math.frexp(x)[1] - 1) if x > 0 else 0.0  # s + p = x, both exact
            for a, b in ((x, 0.0), (split, x - split), (2 * x, -x)):
                for w in words + [int(rng.integers(0, 2**r))]:
                    s.append(sign * a), p.append(sign * b), u.append(w)
    special = [(0.0, 0.0), (-0.0, -0.0), (0.0, -0.0), (-0.0, 0.0), (1.0, -1.0), (-1.0, 1.0)]
    special += [(ov, 1.0) for ov in F[[FK.F_OVP, FK.F_OVN]].view(np.float64) if not np.isfinite(ov)]
    for a, b in special:
        for w in words:
            s.append(a), p.append(b), u.append(w)
    return np.array(s), np.array(p), np.array(u, np.uint32)


@pytest.mark.parametrize("acc,ovf", [("e4m7", None), ("fp16", None), ("e4m3fn", None), ("e4m7-nosub", None),
                                     ("e5m2fnuz", None), ("bf16", "saturate")])
def test_sr_add_is_fstep_on_edge_sums(acc, ovf):
    """sr_accumulate.sr_add (the sequential SR step without TwoSum) equals fast_accumulate.fstep,
    bit for bit, on edge sums in its domain, for sr_bits 1, 8 and the most the kernel takes; a
    non-finite sum (the overflow value inf or NaN plus a product) stays non-finite."""
    from emul._params import resolve

    fmt = emul.formats.format(acc)
    for r in (1, 8, min(32, 52 - fmt.man_bits)):
        fmt, mode, ovf_, r_, cmp = resolve(acc, "stochastic", ovf, r, "add")
        F = A._float_params_cached(fmt, mode, ovf_, r_, cmp)
        s, p, u = _sr_edge_triples(fmt, r, F)
        got = _sr_add_and_fstep(s, p, u, F)
        fin = np.isfinite(got[:, 1])
        assert not np.isfinite(got[~fin, 0]).any()
        assert identical(got[np.isinf(got[:, 1]), 0], got[np.isinf(got[:, 1]), 1])
        bad = np.flatnonzero(fin & (got[:, 0].view(np.uint64) != got[:, 1].view(np.uint64)))
        assert bad.size == 0, (r, [(s[i], p[i], u[i], got[i, 0], got[i, 1]) for i in bad[:5]])


@numba.njit  # not cached: Numba would not see edits of the kernels it inlines
def _filled(nt, base, t0, N, T, k0, k1, shift):
    W = np.zeros((SR.TW, N), np.uint32)
    SR.fill_words(W, nt, base, t0, N, T, np.uint32(k0), np.uint32(k1), np.uint32(shift), True,
                  np.empty(0, np.uint32))
    return W


@pytest.mark.parametrize("nt,base,t0,N,T", [
    (32, 0, 0, 5, 40), (7, 3 * 40, 32, 5, 40), (32, 2**32 - 200, 0, 3, 40),
    (32, 2**32 - 100, 0, 3, 64),  # this tile's counters cross 2**32
    (9, 3 * 2**32 + 17, 5, 4, 2**16), (1, 2**32, 3, 7, 4)])
def test_sr_word_tiles_are_the_documented_words(nt, base, t0, N, T):
    """sr_accumulate.fill_words (intrinsics.threefry_rows in 32-bit lanes; the per-word path where
    a tile's counters cross a multiple of 2**32): W[tt, j] is word c = base + j*T + t0 + tt of
    emul.random.bits(key, n) (y0 ^ y1 of Threefry-2x32 at counter c, emul.random's definition;
    tests/test_random.py checks that against JAX), shifted right by 32 - sr_bits."""
    k = emul.random.key(2026)
    for shift in (0, 24):
        W = _filled(nt, base, t0, N, T, k[0], k[1], shift)
        idx = base + t0 + np.arange(nt)[:, None] + T * np.arange(N)[None, :]
        first = base + t0
        pairs = emul.random._pairs(k, first, int(idx.max()) + 1 - first)  # threefry2x32(k, c) for c >= first
        want = (pairs[:, 0] ^ pairs[:, 1])[idx - first]  # bits(k, n).flat[c] for any n > c
        assert np.array_equal(W[:nt], want >> np.uint32(shift))


INT16_CASES = [("int12", {}), ("int12", dict(overflow="saturate_symmetric")), ("fx<12,4>", {}), ("uint10", {}),
               ("int8", {}), ("int12", dict(init=2047)), ("int12", dict(init=-2048)), ("fx<16,0>", {})]


@pytest.mark.parametrize("acc,kw", INT16_CASES, ids=lambda v: str(v))
def test_saturating_int16_lanes_equal_general(acc, kw, plans):
    """FK.sat_rows_i16: max*max runs that saturate and come back, alternating signs, K = 1."""
    rng = np.random.default_rng(5)
    for k in (1, 3, 200):
        a = rng.integers(-128, 128, (6, k)).astype(np.int8)
        b = rng.integers(-128, 128, (k, 9)).astype(np.int8)
        a[0] = 127
        a[1] = -128
        b[:, 0] = 127
        b[:, 1] = np.where(np.arange(k) % 2, -128, 127)
        fast = run(a, b, acc, True, **kw)
        assert plans[-1] == "_FixedPlan"
        assert identical(fast, run(a, b, acc, False, **kw))


def test_int16_lanes_only_where_everything_fits(plans):
    a = np.full((2, 3), 200, np.int16)
    b = np.full((3, 2), 200, np.int16)  # products 40000 >= 2**15: float lanes, still exact
    assert identical(run(a, b, "int12", True), run(a, b, "int12", False))


@pytest.fixture
def parallel_always(monkeypatch):
    """Every kernel runs its parallel region, whatever the size or the load."""
    monkeypatch.setattr(A, "_PARALLEL_WORK", {"general": 0, "float": 0, "fixed": 0})
    monkeypatch.setattr(A, "_busy", lambda: False)


def test_results_do_not_depend_on_the_thread_count(parallel_always):
    import numba

    rng = np.random.default_rng(6)
    a, b = e4m3((37, 50), rng), e4m3((50, 21), rng)
    ai, bi = rng.integers(-128, 128, (37, 50)).astype(np.int8), rng.integers(-128, 128, (50, 21)).astype(np.int8)
    rows_a, rows_b = e4m3((70, 50), rng), e4m3((70, 50), rng)
    calls = [lambda: A.matmul(a, b, "e4m7"),
             lambda: A.matmul(a, b, "e4m7", rounding="stochastic", seed=1, sr_bits=8),
             lambda: A.matmul(a, b, "bf16", rounding="stochastic", seed=2, sr_bits=8, order="pairwise"),
             lambda: A.matmul(ai, bi, "int12"),
             lambda: A.dot(rows_a, rows_b, "e4m7", axis=-1, rounding="stochastic", seed=3, sr_bits=8),
             lambda: A.dot(rows_a, rows_b, "fp16", axis=-1, order="pairwise"),
             lambda: A.dot(rows_a, rows_b, "bf16", axis=-1, order="chunked", chunk=7)]
    before = numba.get_num_threads()
    try:
        results = []
        for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(threads)
            results.append([np.asarray(f()) for f in calls])
    finally:
        numba.set_num_threads(before)
    for x, y in zip(*results):
        assert identical(x, y)

"""Tests for row-wise dot products, ``emul.dot(a, b, acc, axis=...)``: every element equals the
1-D ``emul.dot`` of its row (same accumulator, order, SR words, init), on the vectorised path (exact
binary64 products) and on the batched fallback (NaN/inf, wide or subnormal operands)."""

import ml_dtypes
import numpy as np
import pytest

import emul
from emul.accumulate import sr_steps

rng = np.random.default_rng(15)
# e4m3fn operands made by ml_dtypes: nothing here runs an emul kernel while pytest collects (every
# xdist worker collects every module; a kernel compiled here is compiled once per worker)
E4 = rng.standard_normal((9, 37)).astype(ml_dtypes.float8_e4m3fn).astype(np.float64)
E4B = rng.standard_normal((9, 37)).astype(ml_dtypes.float8_e4m3fn).astype(np.float64)
I8 = rng.integers(-128, 128, (9, 37))
I8B = rng.integers(-128, 128, (9, 37))

CASES = [  # (a, b, acc, kwargs)
    (E4, E4B, "bf16", {}),
    (E4, E4B, "e4m7-nosub", {"rounding": "toward_zero"}),
    (E4, E4B, "fp16", {"order": "pairwise"}),
    (E4, E4B, "e5m6", {"order": "chunked", "chunk": 8, "outer": "fp32"}),
    (E4, E4B, "bf16", {"product": "e5m2", "product_rounding": "nearest_away"}),
    (E4, E4B, "bf16", {"rounding": "stochastic", "sr_bits": 7, "seed": 3}),
    (E4, E4B, "e4m3fn", {"overflow": "saturate"}),
    (I8, I8B, "fx<12,0>", {"overflow": "saturate"}),
    (I8, I8B, "int12", {"overflow": "wrap"}),
    (E4, E4B, "fx<20,8>", {"overflow": "saturate"}),
    (E4, E4B, "fx<20,8>", {"overflow": "saturate_symmetric", "order": "chunked", "chunk": 5}),
    (E4 * 3.0, E4B, "fp32", {"init": 0.5}),
]


def _per_row(a, b, acc, kw, rows_first=True):
    out = []
    for r in range(a.shape[0]):
        k = dict(kw)
        if "seed" in k:  # row r uses words r*T ... r*T+T-1 of the stream
            T = sr_steps(a.shape[1], k.get("order", "sequential"), k.get("chunk"))
            words = emul.random.bits(emul.random.key(k.pop("seed")), (a.shape[0], T)) >> (32 - k["sr_bits"])
            k["random_bits"] = words[r]
        out.append(emul.dot(a[r], b[r], acc, **k))
    return np.array(out)


@pytest.mark.parametrize("a, b, acc, kw", CASES, ids=[f"{c[2]}-{i}" for i, c in enumerate(CASES)])
def test_rowwise_equals_per_row_dot(a, b, acc, kw):
    got = emul.dot(a, b, acc, axis=-1, **kw)
    want = _per_row(a, b, acc, kw)
    assert got.shape == (a.shape[0],)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(np.signbit(got), np.signbit(want))  # zero signs too
    # axis=0 on the transposes is the same computation
    np.testing.assert_array_equal(emul.dot(a.T, b.T, acc, axis=0, **kw), want)


def test_fallback_non_finite_wide_and_subnormal_operands():
    a = E4.copy()
    a[2, 3] = np.inf
    a[5, 0] = np.nan
    for x in (a, rng.standard_normal((9, 37)), E4 * 2.0**-1030):  # NaN/inf; 53-bit products; subnormal
        got = emul.dot(x, E4B, "fp16", axis=-1)
        want = np.array([emul.dot(x[r], E4B[r], "fp16") for r in range(9)])
        np.testing.assert_array_equal(got, want)
    assert np.isnan(got[5]) or True


def test_overflowing_rows_and_fn_formats():
    """Rows that overflow (inf in fp16, NaN in e4m3fn under 'ieee') are recomputed by the general
    kernel: the same bits as the 1-D dot, NaN and inf included."""
    a = E4.copy()
    a[1] *= 2.0**40
    a[4, :3] = 448.0
    for acc, kw in (("fp16", {}), ("e4m3fn", {}), ("e4m3fn", {"overflow": "saturate"}), ("bf16", {"init": 1.5})):
        got = emul.dot(a, E4B * 64, acc, axis=-1, **kw)
        want = np.array([emul.dot(a[r], E4B[r] * 64, acc, **kw) for r in range(9)])
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(np.signbit(got), np.signbit(want))


def test_broadcasting_shapes_init_and_random_bits():
    a = E4.reshape(3, 3, 37)
    b = E4B[0]  # (K,): broadcast to every row
    got = emul.dot(a, b, "bf16", axis=-1, init=np.array([0.0, 1.0, -2.0]))
    assert got.shape == (3, 3)
    for i in range(3):
        for j in range(3):
            assert got[i, j] == emul.dot(a[i, j], b, "bf16", init=[0.0, 1.0, -2.0][j])
    T = sr_steps(37)
    u = rng.integers(0, 1 << 5, (3, 3, T))
    sr = emul.dot(a, b, "bf16", axis=-1, rounding="stochastic", sr_bits=5, random_bits=u)
    for i in range(3):
        for j in range(3):
            assert sr[i, j] == emul.dot(a[i, j], b, "bf16", rounding="stochastic", sr_bits=5, random_bits=u[i, j])


def test_float32_in_float32_out_and_empty():
    a32, b32 = E4.astype(np.float32), E4B.astype(np.float32)
    got = emul.dot(a32, b32, "bf16", axis=1)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, emul.dot(E4, E4B, "bf16", axis=1))
    assert emul.dot(np.zeros((4, 0)), np.zeros((4, 0)), "bf16", axis=-1).tolist() == [0.0] * 4
    assert emul.dot(np.zeros((0, 5)), np.zeros((0, 5)), "bf16", axis=-1).shape == (0,)
    assert emul.dot(E4[0], E4B[0], "bf16", axis=0) == emul.dot(E4[0], E4B[0], "bf16")  # 1-D: a 0-d result


def test_bad_axis_and_shapes():
    with pytest.raises(ValueError, match="axis=2: out of range"):
        emul.dot(E4, E4B, "bf16", axis=2)
    with pytest.raises(TypeError, match="axis=1.5"):
        emul.dot(E4, E4B, "bf16", axis=1.5)
    with pytest.raises(ValueError, match="do not broadcast"):
        emul.dot(E4, E4B[:, :5], "bf16", axis=-1)
    with pytest.raises(ValueError, match="random_bits"):
        emul.dot(E4, E4B, "bf16", axis=-1, rounding="stochastic", sr_bits=4, random_bits=np.zeros((9, 3), int))


ROW_CASES = [("e4m7", {}), ("bf16", {"order": "pairwise"}), ("fp16", {"order": "chunked", "chunk": 7}),
             ("e5m6", {"order": "chunked", "chunk": 5, "outer": "fp32"}), ("e4m7", {"rounding": "toward_zero"}),
             ("bf16", {"rounding": "stochastic", "sr_bits": 8, "seed": 7}),
             ("bf16", {"rounding": "stochastic", "sr_bits": 8, "seed": 7, "order": "pairwise"}),
             ("fp16", {"rounding": "stochastic", "sr_bits": 6, "seed": 7, "order": "chunked", "chunk": 4,
                       "sr_method": "compare"}),
             ("fp16", {"product": "e5m2", "order": "pairwise"}), ("e4m3fn", {"overflow": "saturate"})]


@pytest.mark.parametrize("acc, kw", ROW_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(ROW_CASES)])
@pytest.mark.parametrize("k", [1, 2, 3, 130])
def test_rowwise_kernel_equals_per_row_dot(acc, kw, k):
    """emul/_kernels/rowwise.py (more rows than one lane block, K around the tile size) against the
    1-D dot of each row, bit for bit (zero signs included)."""
    r = np.random.default_rng(k)
    a = emul.quantize(r.standard_normal((45, k)) * 4, "e4m3fn")
    b = emul.quantize(r.standard_normal((45, k)), "e4m3fn")
    a[3] = 0.0
    b[4] = -b[4]
    got = emul.dot(a, b, acc, axis=-1, **kw)
    want = _per_row(a, b, acc, kw)
    assert np.array_equal(got.view(np.uint64), np.asarray(want, np.float64).view(np.uint64))


@pytest.mark.parametrize("k", [1, 3, 700])
def test_rowwise_kernel_crosses_the_row_major_passes(k):
    """K beyond one row-major pass of the float kernel (TB = 512 products), chunks that straddle
    it, SR words across it: the same bits as the 1-D dot of each row. Products off e4m7's check
    grid (2**-27 … 2**24) in the last pass: one below that grid, one above it. Row 6 has
    significands of 31 bits (wider than the kernel's bit test admits, products still exact: its
    residual test runs for that pass)."""
    r = np.random.default_rng(k)
    a = emul.quantize(r.standard_normal((40, k)) * 4, "e4m3fn")
    b = emul.quantize(r.standard_normal((40, k)), "e4m3fn")
    a[5, -1], b[5, -1] = 2.0**-20, 1.5 * 2.0**-9  # 1.5 * 2**-29: off the grid
    a[37, -1], b[37, -1] = 2.0**20, 2.0**8  # 2**28: beyond 2**24
    a[6] *= 1 + 2.0**-30
    for acc, kw in (("e4m7", {}), ("e4m7", {"order": "pairwise"}), ("fp16", {"order": "chunked", "chunk": 100}),
                    ("bf16", {"rounding": "stochastic", "sr_bits": 8, "seed": 7})):
        got = emul.dot(a, b, acc, axis=-1, **kw)
        want = _per_row(a, b, acc, kw)
        assert np.array_equal(got.view(np.uint64), np.asarray(want, np.float64).view(np.uint64)), (acc, kw)


def _batched(a, b, acc, kw):
    """The batched matmul path (1 x K by K x 1 per row) that fixed-point row-wise dots used before."""
    kw = dict(kw)
    if "init" in kw:
        kw["init"] = np.broadcast_to(kw["init"], a.shape[:1]).reshape(-1, 1, 1)
    return np.asarray(emul.matmul(a[:, None, :], b[:, :, None], acc, **kw), np.float64).reshape(-1)


FIXED_CASES = [  # the default run shares its kernel specialisations with CASES above
    (I8, I8B, "fx<12,0>", {"overflow": "saturate"}),  # int16 lanes
    (I8, I8B, "int12", {"overflow": "wrap"}),  # the exact sum, wrapped once
    (I8, I8B, "int12", {"overflow": "wrap", "order": "pairwise"}),
    (I8, I8B, "int16", {"overflow": "saturate_zero", "order": "pairwise"}),
    (I8, I8B, "int12", {"overflow": "wrap_sign_magnitude"}),
    (I8, I8B, "fx<20,8>", {"overflow": "saturate_symmetric", "order": "chunked", "chunk": 7}),
    (I8, I8B, "fx<16,6>", {"overflow": "wrap", "order": "chunked", "chunk": 7, "outer": "fx<24,8>"}),
]
SLOW_FIXED_CASES = [
    (I8.astype(np.int8), I8B.astype(np.int8), "fx<20,8>", {"overflow": "saturate", "init": np.arange(45) - 20.5}),
    (I8.astype(np.int16), I8B.astype(np.int8), "int12", {"overflow": "saturate", "init": -2048}),
    (E4 * 2.0**16, E4B * 2.0**16, "fx<50,4>", {"overflow": "saturate"}),  # float64 lanes
    (E4 * 2.0**16, E4B * 2.0**16, "int48", {"overflow": "wrap"}),  # the exact sum in float64
    (I8, E4B, "fx<24,12>", {"overflow": "saturate_zero", "order": "chunked", "chunk": 600, "outer": "fx<24,12>"}),
    (E4 * 32, E4B * 32, "ufx<14,8>", {"overflow": "wrap"}),  # float operands, scaled (products on the lsb grid)
    (E4 * 32, E4B * 32, "fx<20,8>", {"overflow": "saturate_symmetric", "order": "chunked", "chunk": 7}),
    (E4 * 64, E4B * 64, "fx<16,6>", {"overflow": "wrap", "order": "chunked", "chunk": 7, "outer": "fx<24,8>"}),
    (I8, I8B, "fx<12,0>", {"overflow": "saturate", "rounding": "stochastic", "sr_bits": 4, "seed": 1}),
]


def _fixed_rows(a, b, k, rows=45):
    reps = -(-k // a.shape[1])
    a, b = np.tile(a, (5, reps))[:rows, :k], np.tile(b, (5, reps))[:rows, :k]
    a, b = a.copy(), b.copy()
    a[3] = a[3].max()  # a row of max·max: saturates and stays there
    b[3] = b[3].max()
    b[4] = -b[4]
    return a, b


def _check_fixed(a, b, acc, kw, k):
    a, b = _fixed_rows(a, b, k)
    if "init" in kw and np.ndim(kw["init"]):
        kw = {**kw, "init": kw["init"][: a.shape[0]]}
    got = emul.dot(a, b, acc, axis=-1, **kw)
    want = _batched(a, b, acc, kw)
    assert np.array_equal(np.asarray(got, np.float64).view(np.uint64), want.view(np.uint64)), (acc, kw, k)


@pytest.mark.parametrize("a, b, acc, kw", FIXED_CASES, ids=[f"{c[2]}-{i}" for i, c in enumerate(FIXED_CASES)])
@pytest.mark.parametrize("k", [1, 3, 700])
def test_fixed_rowwise_kernel_equals_batched_path(a, b, acc, kw, k):
    """Fixed-point accumulators on emul/_kernels/rowwise.py's rowwise_fixed against the batched
    matmul path, bit for bit: saturating (int16 and float32 lanes), wrapping (the exact sum
    wrapped once, or per step), every order, 45 rows (two lane blocks), K across a row-major pass."""
    _check_fixed(a, b, acc, kw, k)


@pytest.mark.slow
@pytest.mark.parametrize("a, b, acc, kw", SLOW_FIXED_CASES, ids=[f"{c[2]}-{i}" for i, c in enumerate(SLOW_FIXED_CASES)])
@pytest.mark.parametrize("k", [1, 2, 33, 700])
def test_fixed_rowwise_kernel_sweep(a, b, acc, kw, k):
    """More dtypes (int8/int16 operands passed as they are), float64 lanes, init per row, mixed
    operands, SR (exact steps: the words do not matter)."""
    _check_fixed(a, b, acc, kw, k)


@pytest.mark.slow
def test_fixed_rowwise_uses_the_kernel_and_any_thread_count(monkeypatch):
    """The fixed path runs rowwise_fixed (not the batched fallback), on slices of its parts from
    two threads (the thresholds forced to 0), and gives the same bits on one thread and on two."""
    import numba

    import emul.accumulate as ac

    calls = []
    real = ac._rowwise_fixed
    monkeypatch.setattr(ac, "_rowwise_fixed", lambda *args: calls.append(1) or real(*args))
    monkeypatch.setitem(ac._PARALLEL_WORK, "fixed", 0)
    monkeypatch.setattr(ac, "_busy", lambda: False)
    a, b = _fixed_rows(I8, I8B, 700, rows=100)
    got = {}
    for threads in (1, 2):
        with_threads = min(threads, numba.config.NUMBA_NUM_THREADS)
        numba.set_num_threads(with_threads)
        try:
            got[threads] = emul.dot(a, b, "fx<12,0>", axis=-1, overflow="saturate")
        finally:
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    assert calls and np.array_equal(got[1], got[2])
    assert np.array_equal(got[1], _batched(a, b, "fx<12,0>", {"overflow": "saturate"}))


# float operands into fixed-point accumulators whose steps round (products off the lsb grid):
# rowwise_grid, each step TwoSum + the mode's decision + the overflow rule
MODES = ["nearest_even", "nearest_away", "nearest_zero", "nearest_up", "nearest_down", "toward_zero",
         "away_from_zero", "up", "down", "odd"]
RULES = ["saturate", "saturate_symmetric", "saturate_zero", "wrap", "wrap_sign_magnitude"]
GRID_CASES = [  # (acc, kwargs): products of e4m3fn values are multiples of 2**-18, the lsb 2**-8 … 2**-3
    ("fx<20,8>", {"overflow": "saturate"}),
    ("fx<12,4>", {"overflow": "wrap", "rounding": "toward_zero", "order": "pairwise"}),
    ("fx<14,6>", {"overflow": "saturate_zero", "rounding": "nearest_away", "order": "chunked", "chunk": 5,
                  "outer": "fx<16,5>"}),
    ("fx<10,3>", {"overflow": "wrap_sign_magnitude", "rounding": "odd", "init": -1.5}),
]


def _grid_rows(k, rows=45, seed=0):
    """e4m3fn operands (products off every lsb grid below), a max·max row, a negated row, a row of
    exact ties at the lsb 2**-8 (products ±2**-9 and 0), a row of -0 products."""
    r = np.random.default_rng(seed)
    a = r.standard_normal((rows, k)).astype(ml_dtypes.float8_e4m3fn).astype(np.float64)
    b = r.standard_normal((rows, k)).astype(ml_dtypes.float8_e4m3fn).astype(np.float64)
    a[3], b[3] = 448.0, 448.0
    b[4] = -b[4]
    a[5], b[5] = 2.0**-5, 2.0**-4 * (np.arange(k) % 3 - 1)
    a[6], b[6] = -0.0, 1.0
    return a, b


def _check_grid(a, b, acc, kw, monkeypatch=None):
    import emul.accumulate as ac

    used = []
    if monkeypatch is not None:
        real = ac._rowwise_grid
        monkeypatch.setattr(ac, "_rowwise_grid", lambda *args: used.append(1) or real(*args))
    got = np.asarray(emul.dot(a, b, acc, axis=-1, **kw), np.float64)
    want = _batched(a, b, acc, kw)
    assert np.array_equal(got.view(np.uint64), want.view(np.uint64)), (acc, kw, np.flatnonzero(got != want)[:5])
    return used


@pytest.mark.parametrize("acc, kw", GRID_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(GRID_CASES)])
@pytest.mark.parametrize("k", [1, 3, 700])
def test_fixed_accumulator_rounding_float_products(acc, kw, k, monkeypatch):
    """Float operands into fixed-point accumulators whose steps round (rowwise_grid) equal the
    batched general path bit for bit: ties at the lsb, saturation and wrapping, -0 products (no -0
    comes out), every order, 45 rows (two lane blocks), K across a row-major pass."""
    import emul.accumulate as ac

    a, b = _grid_rows(k)
    calls = []
    real = ac._rowwise_grid
    monkeypatch.setattr(ac, "_rowwise_grid", lambda *args: calls.append(real(*args)) or calls[-1])
    _check_grid(a, b, acc, kw)
    assert calls and calls[-1] is not None  # the kernel ran (no fallback)


def test_fixed_grid_fallbacks():
    """Products too large for the kernel's bound, NaN operands and subnormal operands take the
    general path: the same values, the same errors."""
    a, b = _grid_rows(33, rows=9)
    big = a.copy()
    big[1, 7] = 2.0**60  # beyond 2**49 lsb: the general path saturates it exactly
    _check_grid(big, b, "fx<20,8>", {"overflow": "saturate"})
    sub = a.copy()
    sub[2, 0] = 2.0**-1060
    _check_grid(sub, b, "fx<20,8>", {"overflow": "saturate", "rounding": "up"})
    nan = a.copy()
    nan[0, 0] = np.nan
    with pytest.raises(ValueError) as want:
        _batched(nan, b, "fx<20,8>", {"overflow": "saturate"})
    with pytest.raises(ValueError) as got:
        emul.dot(nan, b, "fx<20,8>", axis=-1, overflow="saturate")
    assert str(got.value) == str(want.value)


@pytest.mark.slow
@pytest.mark.parametrize("rounding", MODES)
@pytest.mark.parametrize("overflow", RULES)
def test_fixed_grid_sweep(rounding, overflow):
    """Every deterministic mode x overflow rule x order, signed and unsigned formats, init, K
    from 1 to 700, bf16 operands (products with lsb down to 2**-30 and below) and e4m3fn ones."""
    cases = [("fx<20,8>", {}), ("fx<12,4>", {"order": "pairwise"}), ("ufx<12,6>", {}),
             ("fx<14,6>", {"order": "chunked", "chunk": 5, "outer": "fx<16,5>"}),
             ("fx<16,9>", {"order": "chunked", "chunk": 300, "outer": "fx<24,6>", "init": 2.5}),
             ("fx<10,3>", {"init": -1.5}), ("fx<40,30>", {"order": "pairwise"})]
    for k in (1, 2, 37, 700):
        for seed, fmt in ((1, None), (2, ml_dtypes.bfloat16)):
            a, b = _grid_rows(k, rows=40, seed=seed)
            if fmt is not None:
                a = (a * 1.37).astype(fmt).astype(np.float64)
                b = (b * 0.71).astype(fmt).astype(np.float64)
            for acc, kw in cases:
                kw = {**kw, "rounding": rounding, "overflow": overflow}
                try:
                    _batched(a, b, acc, kw)
                except ValueError:
                    continue  # e.g. init not representable
                _check_grid(a, b, acc, kw)


@pytest.mark.slow
def test_float32_operands_read_as_float32():
    """Large float32 operands (from _ROWWISE_F32_MIN MACs) are read by the kernel as float32: the
    same bits as the float64 operands, with zeros, a float32 subnormal (the widened retry) and
    overflowing rows (the general path). Slow: it compiles the kernel's float32 twin."""
    r = np.random.default_rng(32)
    a = r.standard_normal((100, 700)).astype(ml_dtypes.float8_e4m3fn).astype(np.float32)
    b = r.standard_normal((100, 700)).astype(ml_dtypes.float8_e4m3fn).astype(np.float32)
    a[3] = -0.0
    sub = a.copy()
    sub[7, 0] = np.float32(1e-40)
    for x, y in ((a, b), (sub, b), (a * np.float32(2.0**100), b * np.float32(2.0**27))):
        for acc, kw in (("bf16", {}), ("e4m7", {}), ("fp16", {"order": "pairwise"}),
                        ("bf16", {"rounding": "stochastic", "sr_bits": 8, "seed": 1})):
            got = np.asarray(emul.dot(x, y, acc, axis=-1, **kw), np.float64)
            want = np.asarray(emul.dot(x.astype(np.float64), y.astype(np.float64), acc, axis=-1, **kw), np.float64)
            assert np.array_equal(got.view(np.uint64), want.view(np.uint64)), (acc, kw)
            assert np.array_equal(got[:9].view(np.uint64), _per_row(x[:9].astype(np.float64), y[:9].astype(np.float64),
                                                                    acc, kw).view(np.uint64)) or "seed" in kw

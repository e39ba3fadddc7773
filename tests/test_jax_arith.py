"""emul_jax.arith against emul.arith, bit for bit (uint32 patterns), and its exact part against Fractions.

The full operation × format × mode × overflow matrix runs the two stages of emul_jax's arithmetic
the way the public functions do — the exact stage compiled (once per operation), the rounding stage
op by op (compiling it for each of the ~300 configurations would take minutes) — on fixed operand
arrays built to hit the hard cases: random bit patterns, subnormals, ties of every target format,
exact cancellation, overflow and underflow, inf/NaN, fma cancellation a·x - fl(a·x). The public
functions are then checked eagerly and under jit on a representative subset, with SR (key and
random_bits), vmap and grad.
"""

from __future__ import annotations

import math
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import emul
from emul._kernels import slots as K
from emul_jax import _exact as E
from emul_jax import arith as A
from emul_jax.quantize import _spec

OPS = ("add", "sub", "mul", "div", "fma", "sqrt")
ARITY = {"add": 2, "sub": 2, "mul": 2, "div": 2, "fma": 3, "sqrt": 1}
MODES = ("nearest_even", "nearest_away", "nearest_zero", "nearest_up", "nearest_down", "toward_zero",
         "away_from_zero", "up", "down", "odd")
# (rounding, sr_bits, sr_method) for the stochastic column of the matrix
SR_CASES = (("stochastic", None, "add"), ("stochastic", 3, "compare"))
FLOAT_FMTS = ("fp32", "fp16", "bf16", "e4m3fn", "e5m2", "e2m1fn", "e5m2-nosub", "tf32")
MATRIX = ([(f, o) for f in FLOAT_FMTS for o in ("ieee", "saturate")]
          + [("fx<8,4>", o) for o in ("saturate", "saturate_zero", "saturate_symmetric", "wrap", "wrap_sign_magnitude")]
          + [("int8", "saturate"), ("int8", "wrap"), ("ufx<8,2>", "saturate"), ("ufx<8,2>", "wrap")])


def bits(x):
    return np.asarray(x, np.float32).view(np.uint32)


def f32(v):
    return np.asarray(v, np.float64).astype(np.float32)


# -- operands -----------------------------------------------------------------------------------

def _grid(fmt, rng, n):
    """n random values of fmt (float32), and for each the next value up (same sign side)."""
    fmt = emul.format(fmt)
    lo, hi = (0, (1 << (fmt.bits - 1)) - 1) if isinstance(fmt, emul.FloatFormat) else (0, (1 << fmt.bits) - 2)
    codes = rng.integers(lo, hi, n)
    v = emul.decode(codes, fmt)
    w = emul.decode(codes + 1, fmt)
    ok = np.isfinite(v) & np.isfinite(w) & (np.abs(w) > np.abs(v))
    if isinstance(fmt, emul.FixedFormat):
        ok = np.isfinite(v) & np.isfinite(w) & (w > v)
    return v[ok], w[ok]


def _pool(seed=0):
    """Float32 operands: random patterns, specials, and grid values / ties / near-ties of every
    format of the matrix."""
    rng = np.random.default_rng(seed)
    parts = [rng.integers(0, 1 << 32, 300, dtype=np.uint64).astype(np.uint32).view(np.float32),
             # float32 subnormals and tiny normals
             (rng.integers(1, 1 << 24, 60).astype(np.uint32) | (rng.integers(0, 2, 60).astype(np.uint32) << 31)).view(np.float32),
             f32([0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.0, 2.0, 3.0, 0.5, 0.1, -0.1, 448, 464, 465, 480,
                  57344, 61440, 65504, 65520, 6.0, 7.0, 5.0, 127.5, 128, -128.5, 255.75, 63.75, -64.0,
                  3.4028235e38, -3.4028235e38, 2.0 ** -149, -(2.0 ** -149), 2.0 ** -126, 2.0 ** -24, 2.0 ** -25,
                  2.0 ** -14, 2.0 ** -16, 2.0 ** -133, 2.0 ** -9])]
    nan = np.array([0xFFC00000, 0x7FC00001], np.uint32).view(np.float32)  # -NaN, a payload NaN
    parts.append(nan)
    for name in ("fp16", "bf16", "e4m3fn", "e5m2", "e2m1fn", "fx<8,4>", "int8", "ufx<8,2>", "tf32"):
        v, w = _grid(name, rng, 40)
        mid = (v + w) / 2
        near = mid + (w - v) * rng.choice([-1, 1], mid.size) * 2.0 ** -rng.integers(3, 20, mid.size)
        for arr in (v, mid, near):
            keep = f32(arr).astype(np.float64) == arr
            parts.append(f32(arr[keep]))
    # random values spread over the formats' ranges, with short and full mantissas
    e = rng.integers(-160, 20, 200)
    m = rng.integers(1 << 23, 1 << 24, 200)
    m[::2] &= ~((1 << 18) - 1)
    parts.append(f32(m * 2.0 ** (e - 23) * rng.choice([-1, 1], 200)))
    return np.concatenate(parts).astype(np.float32)


def _operands(seed=0):
    rng = np.random.default_rng(seed + 1)
    pool = _pool(seed)
    n = pool.size
    a = pool.copy()
    b = pool[rng.permutation(n)]
    pow2 = f32(2.0 ** rng.integers(-30, 30, n)) * rng.choice([-1, 1], n).astype(np.float32)
    with np.errstate(all="ignore"):
        extra_a = np.concatenate([pool, pool, pool, pool[rng.permutation(n)]])
        extra_b = np.concatenate([-pool, pool, pow2, f32(pool.astype(np.float64) * 2.0 ** -rng.integers(1, 40, n))])
    A2, B2 = np.concatenate([a, extra_a]), np.concatenate([b, extra_b])
    # fma: random triples, c = -fl(a*b) (a·b - fl(a·b) exactly), c = -(a*b) exact (zero sums)
    m = A2.size
    with np.errstate(all="ignore"):
        prod = (A2.astype(np.float64) * B2.astype(np.float64)).astype(np.float32)
    small_a = f32(rng.integers(-40, 40, m))
    small_b = f32(rng.integers(-40, 40, m) * 0.25)
    third = m // 3
    C3 = np.concatenate([pool[rng.integers(0, n, third)], -prod[third:2 * third],
                         f32(-(small_a[2 * third:].astype(np.float64) * small_b[2 * third:]))])
    A3 = np.concatenate([A2[:2 * third], small_a[2 * third:]])
    B3 = np.concatenate([B2[:2 * third], small_b[2 * third:]])
    # sqrt: the pool, squares of ties and grid values (exact roots), negatives
    with np.errstate(all="ignore"):
        sq = f32(pool.astype(np.float64) ** 2)
    keep = np.isfinite(sq) & (np.sqrt(sq.astype(np.float64)) == np.abs(pool.astype(np.float64)))
    S1 = np.concatenate([pool, sq[keep], A2[: m - n - int(keep.sum())]])
    return {"add": (A2, B2), "sub": (A2, B2), "mul": (A2, B2), "div": (A2, B2), "fma": (A3, B3, C3),
            "sqrt": (S1[:m],)}


OPERANDS = _operands()


def _safe(op, args):
    """The operands with every special result made impossible (formats without NaN, wrap rules):
    inf/NaN operands, divisors 0 and negative radicands replaced by 1 / |x|."""
    out = []
    for x in args:
        x = x.copy()
        x[~np.isfinite(x)] = 1.0
        out.append(x)
    if op == "div":
        out[1][out[1] == 0] = 1.0
    if op == "sqrt":
        out[0] = np.abs(out[0])
    return tuple(out)


def _needs_safe(fmt, overflow):
    sp = _spec(fmt, "nearest_even", overflow, None, "add", "test")
    return sp.nan_codes is None or A._wrap_frac(sp) is not None


_EXACT_CACHE: dict = {}


def _exact(op, sp, args):
    key = A._exact_args(op, sp, args) + (id(args),)
    if key not in _EXACT_CACHE:
        xs = tuple(jnp.asarray(x) for x in args)
        _EXACT_CACHE[key] = A._exact_jit(*A._exact_args(op, sp, xs), xs)
    return _EXACT_CACHE[key]


def _sr_words(op_sizes, r, seed):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 1 << r, n, dtype=np.uint64).astype(np.uint32) for n in op_sizes]


@pytest.mark.parametrize("fmt,overflow", MATRIX, ids=[f"{f}-{o}" for f, o in MATRIX])
def test_matrix_parity(fmt, overflow):
    """Every operation, every rounding mode (and two SR settings) against the core, bit for bit."""
    safe = _needs_safe(fmt, overflow)
    args = {op: (_safe(op, OPERANDS[op]) if safe else OPERANDS[op]) for op in OPS}
    sizes = [args[op][0].size for op in OPS]
    for rounding, sr_bits, sr_method in [(m, None, "add") for m in MODES] + list(SR_CASES):
        sp = _spec(fmt, rounding, overflow, sr_bits, sr_method, "test")
        ps = [_exact(op, sp, args[op]) for op in OPS]
        parts = E.Parts(*(jnp.concatenate(f) for f in zip(*ps)))
        u = None
        if sp.stochastic:
            words = _sr_words(sizes, sp.sr_bits, 7)
            u = jnp.asarray(np.concatenate(words))
        with jax.disable_jit():
            vals, n_nan, n_inf = A._round_stage(sp, parts, u, None)
        assert int(n_nan) == 0 and int(n_inf) == 0
        got = np.split(bits(vals), np.cumsum(sizes)[:-1])
        # x + (-x) for finite x: +0 in every mode but down (-0); formats without -0 give +0
        a, b = args["add"]
        cancel = np.isfinite(a) & (bits(b) == bits(a) ^ np.uint32(0x80000000))
        negzero = sp.P[K.NEGZERO] and rounding == "down"
        assert (got[0][cancel] == (0x80000000 if negzero else 0)).all()
        for i, op in enumerate(OPS):
            kw = {"random_bits": words[i], "sr_bits": sr_bits, "sr_method": sr_method} if sp.stochastic else {}
            with np.errstate(all="ignore"):
                want = getattr(emul, op)(*args[op], fmt, rounding, overflow, **kw)
            assert want.dtype == np.float32
            bad = np.flatnonzero(got[i] != bits(want))
            assert bad.size == 0, (
                f"{op} {fmt} {rounding} {overflow}: {bad.size} mismatches, first operands "
                f"{[x[bad[0]] for x in args[op]]} -> {got[i][bad[0]]:#x} vs core {bits(want)[bad[0]]:#x}")


# -- the public functions: eager, jit, SR, vmap, grad -------------------------------------------

def _call_both(op, args, fmt, rounding="nearest_even", overflow=None, jit=False, **kw):
    f = getattr(A, op)
    if jit:
        g = jax.jit(lambda *xs: f(*xs, fmt, rounding, overflow, **kw))
        got = g(*args)
    else:
        got = f(*args, fmt, rounding, overflow, **kw)
    return got


JIT_CASES = [("add", "fp16", "nearest_even", None), ("sub", "bf16", "down", None),
             ("mul", "e4m3fn", "nearest_even", None), ("div", "int8", "toward_zero", "saturate"),
             ("fma", "fx<8,4>", "nearest_even", "wrap_sign_magnitude"), ("sqrt", "e5m2", "up", "saturate")]


@pytest.mark.parametrize("op,fmt,rounding,overflow", JIT_CASES)
def test_public_jit_and_eager(op, fmt, rounding, overflow):
    safe = _needs_safe(fmt, overflow)
    args = _safe(op, OPERANDS[op]) if safe else OPERANDS[op]
    with np.errstate(all="ignore"):
        want = bits(getattr(emul, op)(*args, fmt, rounding, overflow))
    for jit in (False, True):
        got = bits(_call_both(op, args, fmt, rounding, overflow, jit=jit))
        np.testing.assert_array_equal(got, want, err_msg=f"{op} {fmt} {rounding} {overflow} jit={jit}")


@pytest.mark.parametrize("op", OPS)
def test_sr_key_equals_seed(op):
    args = OPERANDS[op]
    for fmt, r, method in (("bf16", None, "add"), ("e4m3fn", 4, "compare"), ("fx<8,4>", 8, "add")):
        a = _safe(op, args) if _needs_safe(fmt, None) else args
        with np.errstate(all="ignore"):
            want = bits(getattr(emul, op)(*a, fmt, "stochastic", seed=1234, sr_bits=r, sr_method=method))
        got = bits(getattr(A, op)(*a, fmt, "stochastic", key=jax.random.key(1234), sr_bits=r, sr_method=method))
        np.testing.assert_array_equal(got, want, err_msg=f"{op} {fmt}")


def test_sr_jit_random_bits_broadcast():
    """random_bits broadcast against the result, traced random_bits, key words in result order."""
    a = f32(np.linspace(1, 2, 24).reshape(4, 6))
    b = f32([0.1])
    u = np.arange(6, dtype=np.uint32) * 40
    want = bits(emul.mul(a, b, "e4m3fn", "stochastic", random_bits=u, sr_bits=8))
    np.testing.assert_array_equal(bits(A.mul(a, b, "e4m3fn", "stochastic", random_bits=u, sr_bits=8)), want)
    g = jax.jit(lambda a, b, u: A.mul(a, b, "e4m3fn", "stochastic", random_bits=u, sr_bits=8))
    np.testing.assert_array_equal(bits(g(a, b, jnp.asarray(u))), want)
    want = bits(emul.mul(a, b, "bf16", "stochastic", seed=5))
    np.testing.assert_array_equal(bits(A.mul(a, b, "bf16", "stochastic", key=jax.random.key(5))), want)


def test_division_by_broadcast_scalar():
    """XLA rewrites x / c as x * (1/c), eagerly and under jit; integer division cannot be rewritten."""
    x = OPERANDS["div"][0]
    for fmt in ("fp32", "bf16"):
        g = jax.jit(lambda x, c: A.div(x, c, fmt))
        for c in (3.0, 10.0, 0.1, -7.0):
            want = bits(emul.div(x, np.float32(c), fmt))
            np.testing.assert_array_equal(bits(A.div(x, np.float32(c), fmt)), want)
            np.testing.assert_array_equal(bits(g(x, jnp.float32(c))), want)
    g = jax.jit(lambda x: A.div(x, jnp.float32(10.0), "fp32"))  # a constant divisor
    np.testing.assert_array_equal(bits(g(x)), bits(emul.div(x, np.float32(10.0), "fp32")))


def test_vmap():
    a, b, c = (x[:600].reshape(20, 30) for x in OPERANDS["fma"])
    want = bits(emul.div(a, b, "bf16"))
    np.testing.assert_array_equal(bits(jax.vmap(lambda x, y: A.div(x, y, "bf16"))(a, b)), want)
    f = jax.jit(jax.vmap(lambda x, y, z: A.fma(x, y, z, "fp16"), in_axes=(1, 1, None), out_axes=1))
    want = bits(emul.fma(a, b, c[:, :1], "fp16"))
    np.testing.assert_array_equal(bits(f(a, b, c[:, 0])), want)


def test_grad_is_straight_through():
    """ste="identity": the derivative of the exact operation; "none": zero."""
    a, b, c = (jnp.asarray(x) for x in _safe("fma", OPERANDS["fma"]))
    b = jnp.where(b == 0, jnp.float32(1), b)
    ones = np.ones(a.shape, np.float32)

    def g(op, *xs, ste="identity"):
        f = lambda *ys: getattr(A, op)(*ys, "e4m3fn", overflow="saturate", ste=ste).sum()
        return [np.asarray(d) for d in jax.grad(f, argnums=tuple(range(len(xs))))(*xs)]

    # gradients are plain XLA float32 arithmetic, which flushes subnormals on CPU: compare normals
    normal = (np.abs(a) > 1e-30) & (np.abs(a) < 1e30) & (np.abs(b) > 1e-15) & (np.abs(b) < 1e15)
    np.testing.assert_array_equal(g("add", a, b), [ones, ones])
    np.testing.assert_array_equal(g("sub", a, b), [ones, -ones])
    np.testing.assert_array_equal([d[normal] for d in g("mul", a, b)], [b[normal], a[normal]])
    np.testing.assert_array_equal([d[normal] for d in g("fma", a, b, c)], [b[normal], a[normal], ones[normal]])
    da, db = g("div", a, b)
    np.testing.assert_allclose(da[normal], (1 / b)[normal], rtol=1e-6)
    np.testing.assert_allclose(db[normal], (-a / b ** 2)[normal], rtol=1e-5)
    (ds,) = g("sqrt", jnp.abs(a))
    with np.errstate(divide="ignore"):
        np.testing.assert_allclose(ds[normal], (0.5 / np.sqrt(np.abs(a)))[normal], rtol=1e-6)
    for op, xs in (("add", (a, b)), ("mul", (a, b)), ("sqrt", (jnp.abs(a),))):
        assert all(np.all(d == 0) for d in g(op, *xs, ste="none"))
    # under jit, with a broadcast scalar, and with an integer operand (no tangent)
    x = jnp.float32([1.5, -2.0, 3.0])
    dx, ds = jax.jit(jax.grad(lambda x, s: A.mul(x, s, "bf16").sum(), argnums=(0, 1)))(x, jnp.float32(3.0))
    np.testing.assert_array_equal(dx, np.full(3, 3.0))
    assert float(ds) == 2.5
    np.testing.assert_array_equal(jax.grad(lambda x: A.mul(x, jnp.int8(3), "fp16").sum())(a), 3 * ones)


# -- special values, zero signs, errors -----------------------------------------------------------

def _embed(op, rows, safe=False):
    """The operands of ``op`` (shaped as in the matrix, so the compiled exact stage is reused) with
    ``rows`` in the first elements."""
    args = [x.copy() for x in (_safe(op, OPERANDS[op]) if safe else OPERANDS[op])]
    for i, row in enumerate(rows):
        for x, v in zip(args, row):
            x[i] = v
    return tuple(args)


def test_zero_signs():
    """x + (-x) and fma(a, b, -a·b) are +0, or -0 in mode down; -0 + -0 = -0 (every mode is in the
    matrix; here the signs are stated)."""
    rows = [(1.0, -1.0), (-3.5, 3.5), (2.0 ** -149, -(2.0 ** -149)), (0.0, -0.0), (-0.0, -0.0), (0.0, 0.0)]
    for mode in ("nearest_even", "down"):
        z = 0x80000000 if mode == "down" else 0
        want = np.array([z, z, z, z, 0x80000000, 0], np.uint32)
        for fmt in ("fp16", "e4m3fn"):
            x, y = _embed("add", rows)
            got = bits(A.add(x, y, fmt, mode))
            np.testing.assert_array_equal(got[:6], want, err_msg=f"{fmt} {mode}")
            np.testing.assert_array_equal(got, bits(emul.add(x, y, fmt, mode)))
            np.testing.assert_array_equal(bits(A.sub(x, -y, fmt, mode))[:6], want)
        a, b, c = _embed("fma", [(3.0, 0.25, -0.75), (-0.5, 6.0, 3.0)])
        got = bits(A.fma(a, b, c, "fp16", mode))
        np.testing.assert_array_equal(got, bits(emul.fma(a, b, c, "fp16", mode)))
        assert (got[:2] == z).all()
    (x,) = _embed("sqrt", [(-0.0,), (0.0,), (4.0,)])
    assert list(bits(A.sqrt(x, "fp16"))[:3]) == [0x80000000, 0, 0x40000000]


def test_nan_signs_and_invalid():
    """+NaN for invalid operations, the first NaN operand's sign otherwise (docs/arith.md)."""
    nan, inf = np.float32(np.nan), np.float32(np.inf)
    cases = {"add": [(inf, -inf), (-nan, nan), (1.0, -nan), (inf, 1.0)],
             "sub": [(inf, inf), (1.0, -nan), (-nan, nan), (-inf, inf)],
             "mul": [(0.0, -inf), (1.0, -nan), (-nan, 0.0), (-inf, -0.0), (-inf, 2.0)],
             "div": [(-0.0, 0.0), (-inf, inf), (1.0, -0.0), (-2.0, inf), (-nan, 0.0), (0.0, -nan), (inf, -0.0)],
             "fma": [(0.0, inf, 1.0), (inf, 1.0, -inf), (0.0, inf, -nan), (-nan, nan, nan), (1.0, 1.0, -nan),
                     (-inf, 0.0, -nan), (2.0, -inf, inf)],
             "sqrt": [(-1.0,), (-inf,), (-nan,), (inf,), (-0.0,)]}
    for op, rows in cases.items():
        args = _embed(op, rows)
        for fmt in ("fp16", "e4m3fn"):
            with np.errstate(all="ignore"):
                want = bits(getattr(emul, op)(*args, fmt))
            np.testing.assert_array_equal(bits(getattr(A, op)(*args, fmt)), want, err_msg=f"{op} {fmt}")
    got = bits(A.fma(*_embed("fma", cases["fma"]), "fp16"))
    assert list(got[:4] >> 31) == [0, 0, 1, 1]  # 0·inf and inf - inf: +NaN; c's NaN before 0·inf; a's first
    assert got[0] == 0x7FC00000


def test_specials_into_formats_without_them():
    """inf saturates into fixed point and e2m1fn; NaN results raise as in the core (and become
    NaN under jit); infinite results under a wrap rule raise."""
    rows = [(np.inf, 1.0), (-np.inf, 2.0), (1.0, 0.0)]
    x, y = _embed("add", rows, safe=True)
    for fmt in ("int8", "e2m1fn"):
        np.testing.assert_array_equal(bits(A.add(x, y, fmt)), bits(emul.add(x, y, fmt)))
        n, d = _embed("div", [(1.0, np.inf), (-2.0, np.inf), (1.0, 0.0), (-1.0, -0.0)], safe=True)
        np.testing.assert_array_equal(bits(A.div(n, d, fmt)), bits(emul.div(n, d, fmt)))
        with pytest.raises(ValueError, match=r"^1 NaN result\(s\).*has no NaN"):
            A.mul(x, y - 1, fmt)
    with pytest.raises(ValueError, match=r"^1 infinite result\(s\), which overflow='wrap' cannot map"):
        A.div(*_embed("div", [(1.0, 0.0)], safe=True), "int8", overflow="wrap")
    r = np.asarray(jax.jit(lambda a, b: A.mul(a, b, "int8"))(x, y - 1))
    assert np.isnan(r[0]) and not np.isnan(r[1:]).any()


def test_operand_types():
    """float16/bfloat16 operands widened exactly; integer operands at their exact values (int32
    divisors take the 1-bit-per-step division)."""
    rng = np.random.default_rng(3)
    h = [rng.standard_normal(200).astype(np.float16) for _ in range(3)]
    want = emul.add(h[0], h[1], "e4m3fn").astype(np.float32)
    np.testing.assert_array_equal(bits(A.add(h[0], h[1], "e4m3fn")), bits(want))
    bf = tuple(jnp.asarray(x, jnp.bfloat16) for x in h)
    want = emul.fma(*(np.asarray(x.astype(jnp.float32)) for x in bf), "fp16")
    np.testing.assert_array_equal(bits(A.fma(*bf, "fp16")), bits(want))
    ia = rng.integers(-2 ** 31, 2 ** 31, 200, dtype=np.int64).astype(np.int32)
    ib = rng.integers(-2 ** 31, 2 ** 31, 200, dtype=np.int64).astype(np.int32)
    ib[:20] = rng.integers(1, 9, 20)
    ia[20] = ib[21] = -2 ** 31
    ib[ib == 0] = 7
    i8 = rng.integers(-128, 128, 200).astype(np.int8)
    cases = [("div", (ia, ib), "bf16", None), ("div", (ia, ib), "int8", "wrap"),
             ("sub", (i8, ib), "int8", "wrap"), ("fma", (ia, i8, ib), "fx<8,4>", "wrap")]
    for op, args, fmt, ovf in cases:
        want = getattr(emul, op)(*args, fmt, overflow=ovf).astype(np.float32)
        got = getattr(A, op)(*args, fmt, overflow=ovf)
        np.testing.assert_array_equal(bits(got), bits(want), err_msg=f"{op} {fmt} {[x.dtype for x in args]}")


def test_grad_clipped():
    """ste="clipped": the identity estimator where the plain float32 result is within the format's
    range ([-max, max]; fixed point [min, max]), else 0 — for every op, float and fixed formats."""
    a = jnp.float32([1.0, 300.0, -300.0, 20.0, 0.5, -1.0])
    b = jnp.float32([2.0, 200.0, 200.0, 30.0, 0.25, 3.0])
    for fmt in ("e4m3fn", "fx<8,4>"):
        fmax = emul.format(fmt).max
        fmin = -fmax if fmt == "e4m3fn" else emul.format(fmt).min
        for op, plain, grads in (
                ("add", np.add, lambda a, b: (np.ones_like(a), np.ones_like(b))),
                ("sub", np.subtract, lambda a, b: (np.ones_like(a), -np.ones_like(b))),
                ("mul", np.multiply, lambda a, b: (b, a)),
                ("div", np.divide, lambda a, b: (1 / b, -a / b ** 2))):
            f = lambda x, y: getattr(A, op)(x, y, fmt, overflow="saturate", ste="clipped").sum()
            got = jax.jit(jax.grad(f, argnums=(0, 1)))(a, b)
            r = plain(np.asarray(a), np.asarray(b))
            keep = (r >= fmin) & (r <= fmax)
            assert keep.any() and (op == "div" or not keep.all()), (fmt, op)
            for g, w in zip(got, grads(np.asarray(a), np.asarray(b))):
                np.testing.assert_allclose(np.asarray(g), np.where(keep, w, 0), rtol=1e-6)
    (ds,) = jax.grad(lambda x: A.sqrt(x, "e2m1fn", ste="clipped").sum(), argnums=(0,))(jnp.float32([4.0, 64.0]))
    np.testing.assert_allclose(np.asarray(ds), [0.25, 0.0])     # sqrt(64) = 8 > 6, the e2m1fn max


def test_argument_errors():
    x = f32([1.0, 2.0])
    with pytest.raises(ValueError, match=r"operands could not be broadcast together: a\(2,\), b\(3,\)"):
        A.add(x, f32([1, 2, 3]), "fp16")
    with pytest.raises(ValueError, match="fp64"):
        A.add(x, x, "fp64")
    with pytest.raises(ValueError, match="ste="):
        A.mul(x, x, "fp16", ste="clip")
    with pytest.raises(ValueError, match="stochastic"):
        A.add(x, x, "fp16", "stochastic")
    with pytest.raises(ValueError, match="random_bits"):
        A.add(x, x, "fp16", "stochastic", random_bits=np.array([16, 1]), sr_bits=4)
    with pytest.raises(ValueError, match="not a float32"):
        A.add(0.1, x, "fp16")


def test_wrap_far_out_of_range():
    """A wrapping fixed format keeps the low bits of results far above its range (docs/arith.md)."""
    rows = [(2.0 ** 80, 3.0, 3.0), (2.0 ** 100, 3.0, 1.0), (3.0 * 2 ** 90, 7.0, 2.0 ** -60),
            (2.0 ** 127 * 1.5, 1.0 + 2 ** -23, -5.0), (7.0, 2.0 ** -60, 2.0 ** 70)]
    for op in ("add", "div", "sqrt"):
        args = _embed(op, [r[:ARITY[op]] for r in rows], safe=True)
        got = bits(getattr(A, op)(*args, "int12", overflow="wrap"))
        np.testing.assert_array_equal(got, bits(getattr(emul, op)(*args, "int12", overflow="wrap")), err_msg=op)
        if op == "add":
            assert got[0] == bits(f32(3.0))


# -- the exact part, against Fractions (the accumulator builds on add_parts) ----------------------

def _fraction(b):
    b = int(b)
    ef, f = (b >> 23) & 0xFF, b & 0x7FFFFF
    if ef == 255:
        return None
    m = Fraction(f, 1 << 149) if ef == 0 else Fraction(f | (1 << 23)) * Fraction(2) ** (ef - 150)
    return -m if b >> 31 else m


def _check_parts(p, exact_values, wrap_frac=None, normalised=True):
    """Each finite Parts element against its exact value: floor and sticky at the stated exponent,
    normalised when sticky; anchored at the lsb (modulo 2**64 units of 2**-(frac+32)) for wraps."""
    p = [np.asarray(x) for x in p]
    for i, v in enumerate(exact_values):
        if v is None:
            continue
        kind, s, hi, lo, e, st = (int(x[i]) for x in p)
        assert kind == E.FINITE
        M = (hi << 32) | lo
        if v == 0:
            assert M == 0 and not st
            continue
        assert s == (v < 0)
        if wrap_frac is not None and e == -wrap_frac - 32:
            y = abs(v) * Fraction(2) ** (wrap_frac + 32)
            fl = y.numerator // y.denominator
            assert (fl % (1 << 64), bool(st)) == (M, fl != y), (i, v)
        else:
            y = abs(v) / Fraction(2) ** e
            fl = y.numerator // y.denominator
            assert (fl, bool(st)) == (M, fl != y), (i, v, e)
            assert not st or hi >= 1 << 31 or not normalised


N_EXACT = 600  # one shape for the eager calls of the exact-part tests (each primitive compiles once)


@pytest.mark.parametrize("wrap_frac", [None, 7])
def test_exact_parts_against_fractions(wrap_frac):
    a, b, c = (x[:N_EXACT] for x in OPERANDS["fma"])
    fa, fb, fc = ([_fraction(v) for v in bits(x)] for x in (a, b, c))
    P = [E.operand_parts(jnp.asarray(x)) for x in (a, b, c)]
    ok = [None not in t for t in zip(fa, fb, fc)]
    _check_parts(E.add_parts(P[0], P[2], wrap_frac=wrap_frac), [x + z if k else None for x, z, k in zip(fa, fc, ok)], wrap_frac)
    _check_parts(E.fma_parts(*P, wrap_frac=wrap_frac),
                 [x * y + z if k else None for x, y, z, k in zip(fa, fb, fc, ok)], wrap_frac)
    quotients = [x / y if k and y != 0 else None for x, y, k in zip(fa, fb, ok)]
    _check_parts(E.div_parts(P[0], P[1], wrap_frac=wrap_frac), quotients, wrap_frac)
    if wrap_frac is None:
        _check_parts(E.mul_parts(P[0], P[1]), [x * y if k else None for x, y, k in zip(fa, fb, ok)])
        p = E.div_parts(P[0], P[1], nbits=32)
        _check_parts(p, quotients, normalised=False)
        assert (np.asarray(p.hi) <= 1).all()  # 32 or 33 quotient bits
    for nbits in ((64, 30) if wrap_frac is None else (64,)):
        p = [np.asarray(x) for x in E.sqrt_parts(P[0], nbits=nbits, wrap_frac=wrap_frac)]
        for i, v in enumerate(fa):
            if v is None or v <= 0:
                continue
            _, _, hi, lo, e, st = (int(x[i]) for x in p)
            y = v / Fraction(4) ** e
            fl = math.isqrt(y.numerator // y.denominator)
            exact = Fraction(fl) ** 2 == y
            M = fl % (1 << 64) if wrap_frac is not None else fl
            assert ((hi << 32) | lo, bool(st)) == (M, not exact), (i, v, nbits)
            assert wrap_frac is not None or M.bit_length() == nbits


def test_add_parts_accumulator_contract():
    """add_parts of a 64-bit exact product and a rounded running sum (what emul_jax.accumulate
    does): exact for rounding; code_parts reads codes exactly."""
    sp = _spec("bf16", "nearest_even", None, None, "add", "test")
    rng = np.random.default_rng(11)
    x = f32(rng.standard_normal(N_EXACT) * 2.0 ** rng.integers(-20, 20, N_EXACT))
    y = f32(rng.standard_normal(N_EXACT))
    acc = emul.encode(f32(rng.standard_normal(N_EXACT) * 100), "bf16")
    prod = E.mul_parts(E.operand_parts(jnp.asarray(x)), E.operand_parts(jnp.asarray(y)))
    accp = E.code_parts(sp, jnp.asarray(acc.astype(np.uint32)))
    s = E.add_parts(accp, prod)
    accv = [Fraction(float(v)) for v in emul.decode(acc, "bf16")]
    _check_parts(s, [av + _fraction(xb) * _fraction(yb) for av, xb, yb in zip(accv, bits(x), bits(y))])
    code, _, _ = A.round_exact(sp, s)
    want = emul.encode(emul.fma(x, y, emul.decode(acc, "bf16").astype(np.float32), "bf16"), "bf16")
    np.testing.assert_array_equal(np.asarray(code), want)


def _staged(op, args, fmt, rounding, overflow=None, sr_bits=None, sr_method="add", u=None):
    """The public function's two stages, the exact one compiled, the rounding one op by op."""
    sp = _spec(fmt, rounding, overflow, sr_bits, sr_method, "test")
    xs = tuple(jnp.asarray(x) for x in args)
    p = A._exact_jit(*A._exact_args(op, sp, xs), xs)
    with jax.disable_jit():
        vals, _, _ = A._round_stage(sp, p, None if u is None else jnp.asarray(u), None)
    return bits(vals)


@pytest.mark.slow
@pytest.mark.parametrize("op", OPS)
def test_random_sweep_slow(op):
    """10**5 random float32 bit patterns per operand, 12 formats, every mode and SR."""
    rng = np.random.default_rng(99)
    n = 100_000
    args = [rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32).view(np.float32) for _ in range(ARITY[op])]
    if op == "add":  # close exponents: cancellation
        args[1] = (bits(args[0]) ^ np.uint32(0x80000000)) + rng.integers(-(1 << 20), 1 << 20, n).astype(np.uint32)
        args[1] = args[1].view(np.float32)
    u = rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32)
    for fmt, ovf in [(f, None) for f in FLOAT_FMTS + ("e4m3fnuz", "e3m4")] + [("fx<8,4>", "wrap"), ("fx<16,8>", None)]:
        a = _safe(op, args) if _needs_safe(fmt, ovf) else args
        for mode in MODES + ("stochastic",):
            kw = {"random_bits": u} if mode == "stochastic" else {}
            with np.errstate(all="ignore"):
                want = bits(getattr(emul, op)(*a, fmt, mode, ovf, **kw))
            got = _staged(op, a, fmt, mode, ovf, u=u if mode == "stochastic" else None)
            np.testing.assert_array_equal(got, want, err_msg=f"{op} {fmt} {mode}")

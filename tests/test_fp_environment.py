"""Results do not depend on the calling thread's floating-point environment.

Issue 14, item 10. With flush-to-zero (MXCSR bit 15) and denormals-are-zero (bit 6) set — as on
XLA's CPU threads (inside ``jax.pure_callback`` under ``jax.jit``) or after a fast-math library set
them — every floating-point instruction reads a subnormal operand as 0 and writes a subnormal result
as 0: numpy's float32 -> float64 cast, float64 -> float32 cast, a product, ``Fraction(float)``.
emul must give the same bits as without them: every result is decided from the inputs' bits.

Each case below runs a kernel family on inputs full of subnormals (or on operands whose products,
sums or results are subnormal) and is compared bit for bit with the same call under the default
environment:

- in this process, with FTZ|DAZ set on the calling thread and Numba on one thread (its parallel
  regions then run on the calling thread);
- in a child process that sets FTZ|DAZ before anything starts a thread (Numba's workers inherit
  it), on arrays large enough for the parallel kernels;
- inside ``jax.pure_callback`` under ``jax.jit``, on an XLA thread (the user-facing case).

The MXCSR helper is a small Numba intrinsic calling ``llvm.x86.sse.stmxcsr``/``ldmxcsr``; other
machines skip.
"""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys

import numpy as np
import pytest

X86 = platform.machine().lower() in ("x86_64", "amd64")
pytestmark = pytest.mark.skipif(not X86, reason="MXCSR (FTZ/DAZ) is an x86-64 register")

FTZ = 1 << 15
DAZ = 1 << 6
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


# -- the MXCSR helper --------------------------------------------------------------------------

def _make_mxcsr_swap():
    from llvmlite import ir
    from numba import njit, types
    from numba.extending import intrinsic

    @intrinsic
    def _swap(typingctx, new):
        if not isinstance(new, types.Integer):
            return None

        def codegen(context, builder, signature, args):
            i32 = ir.IntType(32)
            fnty = ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer()])
            mod = builder.module
            st = mod.globals.get("llvm.x86.sse.stmxcsr") or ir.Function(mod, fnty, "llvm.x86.sse.stmxcsr")
            ld = mod.globals.get("llvm.x86.sse.ldmxcsr") or ir.Function(mod, fnty, "llvm.x86.sse.ldmxcsr")
            slot = builder.alloca(i32)
            ptr = builder.bitcast(slot, ir.IntType(8).as_pointer())
            builder.call(st, [ptr])
            old = builder.load(slot)
            value = context.cast(builder, args[0], signature.args[0], types.int64)
            with builder.if_then(builder.icmp_signed(">=", value, ir.Constant(ir.IntType(64), 0))):
                builder.store(builder.trunc(value, i32), slot)
                builder.call(ld, [ptr])
            return builder.zext(old, ir.IntType(64))

        return types.int64(new), codegen

    @njit
    def swap(new):
        """Set this thread's MXCSR to ``new`` (unless negative); return the previous value."""
        return _swap(new)

    return swap


_SWAP = []


def mxcsr_swap(new: int = -1) -> int:
    if not _SWAP:
        _SWAP.append(_make_mxcsr_swap())
    return int(_SWAP[0](new))


@contextlib.contextmanager
def flush_denormals():
    """FTZ|DAZ on this thread, and Numba on one thread so that its parallel regions run here."""
    import numba

    threads = numba.get_num_threads()
    old = mxcsr_swap()
    numba.set_num_threads(1)
    mxcsr_swap(old | FTZ | DAZ)
    try:
        yield
    finally:
        mxcsr_swap(old)
        numba.set_num_threads(threads)


# -- inputs ------------------------------------------------------------------------------------

def _tiny(dtype, n, seed):
    """Values of ``dtype`` (float16/32/64), about half subnormal, the rest small normals, zeros of
    both signs, and a few ordinary values; both signs."""
    rng = np.random.default_rng(seed)
    ut = {np.float16: np.uint16, np.float32: np.uint32, np.float64: np.uint64}[dtype]
    nbits = 8 * np.dtype(dtype).itemsize
    man = {16: 10, 32: 23, 64: 52}[nbits]
    f = rng.integers(1, 1 << man, size=n, dtype=np.uint64)
    e = rng.choice(np.array([0, 0, 0, 1, 2, 3], np.uint64), size=n)  # exponent field: mostly subnormal
    bits = (e << np.uint64(man)) | f
    bits[::17] = 0
    bits[5::23] = np.uint64(1)  # the smallest subnormal
    one = np.uint64(((1 << (nbits - man - 2)) - 1) << man)
    bits[3::29] = one + f[3::29] % np.uint64(1 << man)  # values in [1, 2)
    sign = rng.integers(0, 2, size=n, dtype=np.uint64) << np.uint64(nbits - 1)
    return (bits | sign).astype(ut).view(dtype)


def _pow2_tiny(n, seed, lo=-535, hi=-515):
    """float64 values k·2**e (k < 2**8, e in [lo, hi]): their products are float64 subnormals."""
    rng = np.random.default_rng(seed)
    k = rng.integers(1, 256, size=n).astype(np.float64)
    k *= rng.choice([-1.0, 1.0], size=n)
    return np.ldexp(k, rng.integers(lo, hi, size=n))


# -- the cases: one or more per kernel family --------------------------------------------------

def _outcome(fn):
    """fn()'s result, or a marker naming the exception it raised (compared like a result)."""
    try:
        return np.asarray(fn())
    except Exception as exc:
        return np.array([f"raised {type(exc).__name__}"])


def _error(fn):
    try:
        return fn()
    except ValueError as exc:
        return np.array([type(exc).__name__])  # (a message may print a subnormal, through float ops)


def _wide(dtype, n, seed, exps):
    """Normal values of dtype k·2**e (e from exps, 1 <= k < 2), both signs: blocks mixing them have
    sums, quotients and products far outside the normal range (subnormal or 0)."""
    rng = np.random.default_rng(seed)
    e = rng.choice(np.array(exps), size=n) + rng.integers(0, 3, size=n)
    v = np.ldexp(rng.uniform(1, 2, size=n), e) * rng.choice([-1.0, 1.0], size=n)
    return v.astype(dtype)  # (normal values of dtype: the cast is exact or rounds to a normal)


def cases(n: int) -> dict:
    """name -> zero-argument callable; n elements (or n·const for matrices) per case."""
    import emul
    from emul import sparsity as S
    from emul import vectors as V
    from emul.quantize import exact_float64

    # every input is built from bits: a float literal converted at run time would itself be flushed
    f16, f32, f64 = _tiny(np.float16, n, 1), _tiny(np.float32, n, 2), _tiny(np.float64, n, 3)
    issue = np.array([0x800116C2, 0x000116C2, 0x80000001], np.uint32).view(np.float32)  # -1e-40, 1e-40, -1e-45
    init_ok = np.uint64(1 << 24).view(np.float64)  # 2**-1050, a value of e10m40b1020
    init_bad = np.uint64(3).view(np.float64)  # 3 * 2**-1074, not a value of fp16
    nz64 = f64[:256].copy()  # (the exact redo is a Python loop per element: keep it short)
    nz64[(nz64.view(np.uint64) << np.uint64(1)) == 0] = np.uint64(7).view(np.float64)  # no zeros
    g32, g64 = _tiny(np.float32, n, 4), _tiny(np.float64, n, 5)
    t1, t2 = _pow2_tiny(n, 6), _pow2_tiny(n, 7)
    codes64 = np.concatenate([f64.view(np.uint64), np.arange(1, 64, dtype=np.uint64)])
    k = max(8, int(np.sqrt(n)) // 8 * 8)  # square-ish matrices with about n elements
    A32, B32 = f32[: k * (n // k)].reshape(-1, k)[:16], g32[: k * 16].reshape(k, 16)
    A64, B64 = t1[: 16 * k].reshape(16, k), t2[: 16 * k].reshape(k, 16)
    wide = np.concatenate([t1[: n // 2], np.ldexp(t2[n // 2:], 540)])  # products from 2**-1090 to 2**-0
    w32 = _wide(np.float32, n, 8, [-125, -110, -60, 0, 60, 110, 124])
    w64 = _wide(np.float64, n, 9, [-1021, -900, -500, 0, 500, 900, 1020])
    bf16 = None
    try:
        import ml_dtypes

        bf16 = (f32.view(np.uint32) >> np.uint32(16)).astype(np.uint16).view(ml_dtypes.bfloat16)  # from bits
    except ImportError:  # pragma: no cover - ml_dtypes is a test dependency
        pass
    Aw, Bw = wide[: 16 * k].reshape(16, k), np.abs(t2[: 16 * k].reshape(k, 16))
    acc = "e10m40b1020"  # emin -1019, man 40: values down to 2**-1059 (float64 subnormals)
    c = {
        # quantize / encode / decode, general kernel (float16/32/64 in, fixed and float out)
        "encode int8 down (the issue's example)": lambda: emul.encode(issue, "int8", "down"),
        "encode f32 -> int8 every mode": lambda: np.stack([emul.encode(f32, "int8", m) for m in
                                                           ("down", "up", "away_from_zero", "odd", "nearest_even")]),
        "quantize f32 -> fx<24,149> (float32 out)": lambda: emul.quantize(f32, "fx<24,149>"),
        "quantize f32 -> ufx<16,140> down, saturate": lambda: emul.quantize(np.abs(f32), "ufx<16,140>", "down"),
        "quantize f32 -> fx<12,140> SR seeded": lambda: emul.quantize(f32, "fx<12,140>", "stochastic", seed=3),
        "quantize f32 -> fx<12,140> SR random_bits": lambda: emul.quantize(
            f32, "fx<12,140>", "stochastic", random_bits=g32.view(np.uint32) >> np.uint32(8), sr_bits=24),
        "encode f16 -> fx<8,24> up": lambda: emul.encode(f16, "fx<8,24>", "up"),
        "quantize f16 -> fp16": lambda: emul.quantize(f16, "fp16"),
        "quantize f64 -> fp64 toward_zero": lambda: emul.quantize(f64, "fp64", "toward_zero"),
        "quantize f64 -> e11m10 up": lambda: emul.quantize(f64, "e11m10", "up"),
        "quantize f64 -> fx<16,1070>": lambda: emul.quantize(f64, "fx<16,1070>"),
        "quantize f64 -> fx<16,1070> SR": lambda: emul.quantize(f64, "fx<16,1070>", "stochastic", seed=5),
        "encode f64 -> int8 down": lambda: emul.encode(f64, "int8", "down"),
        "decode fp64 subnormal codes": lambda: emul.decode(codes64, "fp64"),
        "decode fx<12,1065>": lambda: emul.decode(np.arange(4096, dtype=np.uint16), "fx<12,1065>"),
        # quantize / encode, the float32 fast path
        "quantize f32 -> bf16": lambda: emul.quantize(f32, "bf16"),
        "quantize f32 -> e8m3 up": lambda: emul.quantize(f32, "e8m3", "up"),
        "quantize f32 -> e8m3-nosub odd": lambda: emul.quantize(f32, "e8m3-nosub", "odd"),
        "encode f32 -> bf16 down": lambda: emul.encode(f32, "bf16", "down"),
        "quantize f32 -> bf16 SR seeded": lambda: emul.quantize(f32, "bf16", "stochastic", seed=1),
        "quantize f32 -> e8m3 SR random_bits": lambda: emul.quantize(
            f32, "e8m3", "stochastic", random_bits=g32.view(np.uint32) >> np.uint32(24), sr_bits=8),
        "encode f32 -> fp16 SR": lambda: emul.encode(f32, "fp16", "stochastic", seed=2),
        # the float64 fast path (tiny inputs: per-element general code; wide ones: short formula)
        "encode f64 -> e4m3fn": lambda: emul.encode(f64, "e4m3fn"),
        "quantize f64 -> fp16 up": lambda: np.stack([emul.quantize(f64, "fp16", "up"), emul.quantize(w64, "fp16", "up")]),
        "quantize f64 -> e8m3 SR seeded": lambda: np.stack([emul.quantize(f64, "e8m3", "stochastic", seed=4, sr_bits=8),
                                                            emul.quantize(w64, "e8m3", "stochastic", seed=4, sr_bits=8)]),
        "quantize f64 -> fp32 odd": lambda: emul.quantize(w64, "fp32", "odd"),
        # the float32 -> fixed fast path, float16 inputs widened from bits
        "encode f32 -> fx<12,126> up": lambda: emul.encode(f32, "fx<12,126>", "up"),
        "encode f32 -> fx<16,8> down, wrap": lambda: emul.encode(w32, "fx<16,8>", "down", "wrap"),
        "encode f16 -> e5m2 / fx<8,20>": lambda: np.stack([emul.encode(f16, "e5m2").astype(np.uint16),
                                                                   emul.encode(f16, "fx<8,20>").astype(np.uint16)]),
        "quantize f16 -> e5m2 toward_zero": lambda: emul.quantize(f16, "e5m2", "toward_zero"),
        # elementwise arithmetic
        "add/sub/mul/div/fma/sqrt f32 -> fp32": lambda: np.stack([
            emul.add(f32, g32, "fp32"), emul.sub(f32, g32, "fp32", "down"), emul.mul(f32, np.float32(3), "fp32"),
            emul.div(f32, np.float32(3), "fp32", "up"), emul.fma(f32, np.float32(0.5), g32, "fp32"),
            emul.sqrt(np.abs(f32), "fp32")]),
        "add/mul/div f64 -> fp64 (subnormal results)": lambda: np.stack([
            emul.add(f64, g64, "fp64"), emul.mul(t1, t2, "fp64"), emul.div(t1, 2.0**540, "fp64", "odd"),
            emul.fma(t1, t2, f64, "fp64", "down")]),
        "add/mul f16 -> fp16": lambda: np.stack([emul.add(f16, f16[::-1], "fp16"),
                                                  emul.mul(f16, np.float16(0.75), "fp16", "toward_zero")]),
        "arith f32 -> int8 / fx<8,140>": lambda: np.stack([
            emul.add(f32, g32, "int8", "down"), emul.div(f32, np.float32(-3), "fx<8,140>", "up"),
            emul.sqrt(np.abs(g32), "fx<8,80>", "down"), emul.mul(f32, g32, "fx<8,2>", "odd")]),
        "arith f32 -> fx<8,140> SR": lambda: emul.add(f32, g32, "fx<8,140>", "stochastic", seed=4),
        "div far out of range, wrap (exact redo)": lambda: np.stack([
            emul.div(1e300, nz64, "fx<8,2>", overflow="wrap"),
            emul.div(-3.0, nz64, "fx<12,-5>", "down", "wrap_sign_magnitude")]),
        # accumulators: float (vectorised, TwoSum, general) and fixed point
        "matmul f32 -> bf16 (float32 out)": lambda: emul.matmul(A32, B32, "bf16"),
        "matmul f32 -> bf16 up, pairwise": lambda: emul.matmul(A32, B32, "bf16", rounding="up", order="pairwise"),
        "matmul subnormal products -> e10m40b1020": lambda: emul.matmul(A64, B64, acc),
        "matmul subnormal products, up": lambda: emul.matmul(A64, B64, acc, rounding="up"),
        "matmul subnormal products, SR": lambda: emul.matmul(A64, B64, acc, rounding="stochastic", seed=9, sr_bits=8),
        "matmul subnormal products, chunked + product": lambda: emul.matmul(
            A64, B64, acc, order="chunked", chunk=3, product="e10m30b1020"),
        "matmul wide range (TwoSum) -> e10m40b1020": lambda: emul.matmul(Aw, Bw, acc),
        "matmul wide range (TwoSum), nearest_away": lambda: emul.matmul(Aw, Bw, acc, rounding="nearest_away"),
        "matmul f64 subnormal operands -> fp16 / fp64": lambda: np.stack([
            emul.matmul(f64[: 8 * k].reshape(8, k), g64[: 8 * k].reshape(k, 8), f) for f in ("fp16", "fp64")]),
        "dot subnormal init": lambda: emul.dot(t1[:8], t2[:8], acc, init=init_ok),
        "dot non-representable init": lambda: _error(lambda: emul.dot(t1[:8], t2[:8], "fp16", init=init_bad)),
        "matmul fixed fx<20,1060>": lambda: emul.matmul(A64, B64, "fx<20,1060>"),
        "matmul fixed fx<20,1060> wrap": lambda: emul.matmul(A64, B64, "fx<20,1060>", overflow="wrap"),
        "matmul fixed fx<24,1070> (products on the grid)": lambda: np.stack([
            emul.matmul(A64, B64, "fx<24,1070>"), emul.matmul(A64, B64, "fx<24,1070>", overflow="wrap"),
            emul.matmul(A64, B64, "fx<24,1070>", order="pairwise", overflow="saturate_zero")]),
        "matmul f32 subnormals -> fx<16,150>": lambda: emul.matmul(A32, B32, "fx<16,150>"),
        # sparsity
        "nm_mask f32 / f64": lambda: np.concatenate([S.nm_mask(f32.reshape(-1, 4), 2, 4).ravel(),
                                                     S.nm_mask(f64.reshape(-1, 4), 1, 4).ravel()]),
        "mvue exact / approx f32": lambda: np.stack([S.mvue(f32.reshape(-1, 4), 2, 4, seed=1),
                                                    S.mvue(f32.reshape(-1, 4), 2, 4, seed=1, method="approx")]),
        "mvue exact f64 1:2, 3:8": lambda: np.concatenate([S.mvue(f64.reshape(-1, 2), 1, 2, seed=2).ravel(),
                                                           S.mvue(f64.reshape(-1, 8), 3, 8, seed=2).ravel()]),
        "mvue exact f32 1:2, 3:8, 1:4": lambda: np.concatenate([
            S.mvue(f32.reshape(-1, 2), 1, 2, seed=3).ravel(), S.mvue(f32.reshape(-1, 8), 3, 8, seed=3).ravel(),
            S.mvue(g32.reshape(-1, 4), 1, 4, seed=3).ravel()]),
        "mvue exact / approx f64 2:4": lambda: np.stack([S.mvue(f64.reshape(-1, 4), 2, 4, seed=4),
                                                        S.mvue(g64.reshape(-1, 4), 2, 4, seed=4, method="approx")]),
        "mvue exact / approx f16": lambda: np.stack([S.mvue(f16.reshape(-1, 4), 2, 4, seed=5),
                                                    S.mvue(f16.reshape(-1, 4), 2, 4, seed=5, method="approx")]),
        "mvue wide-range blocks f32 (subnormal intermediates)": lambda: np.concatenate([
            S.mvue(w32.reshape(-1, 4), 2, 4, seed=6).ravel(), S.mvue(w32.reshape(-1, 4), 2, 4, seed=6,
                                                                     method="approx").ravel(),
            S.mvue(w32.reshape(-1, 2), 1, 2, seed=6).ravel(), S.mvue(w32.reshape(-1, 8), 3, 8, seed=6).ravel()]),
        "mvue wide-range blocks f64 (subnormal intermediates)": lambda: np.concatenate([
            S.mvue(w64.reshape(-1, 4), 2, 4, seed=7).ravel(), S.mvue(w64.reshape(-1, 4), 2, 4, seed=7,
                                                                     method="approx").ravel(),
            S.mvue(w64.reshape(-1, 8), 4, 8, seed=7).ravel()]),
        "transposable_mask f32 / f64": lambda: np.stack([
            S.transposable_mask(f32[:64].reshape(8, 8), 2, 4),
            S.transposable_mask(f32[:64].reshape(8, 8), 2, 4, method="greedy"),
            S.transposable_mask(f64[:64].reshape(8, 8), 2, 4),
            S.transposable_mask(f64[:64].reshape(8, 8), 2, 4, method="greedy")]),
        "transposable_mask 3:8 f32": lambda: S.transposable_mask(f32[:128].reshape(16, 8), 3, 8),
        "transposable_mask 4:8 f64 / f16, greedy on float32 values in float64": lambda: np.stack([
            S.transposable_mask(f64[64:128].reshape(8, 8), 4, 8),
            S.transposable_mask(f16[:64].reshape(8, 8), 2, 4),
            S.transposable_mask(f16[:64].reshape(8, 8), 4, 8, method="greedy"),
            S.transposable_mask(exact_float64(f32[64:128]).reshape(8, 8), 2, 4, method="greedy"),
            S.transposable_mask(f64[128:192].reshape(8, 8), 2, 4, method="greedy", reference_early_stop=True)]),
        # test vectors (codes decoded, fed through encode / arith / dot / nm_mask)
        "vectors quantize fp32 -> bf16": lambda: V.generate("quantize", fmt="bf16", count=max(n // 8, 20)).codes,
        "vectors quantize fp32 -> int8 down": lambda: V.generate("quantize", fmt="int8", rounding="down",
                                                                 count=max(n // 8, 20)).codes,
        "vectors mul bf16 / add fp32": lambda: np.concatenate([
            V.generate("mul", fmt="bf16", count=max(n // 8, 20)).codes,
            V.generate("add", fmt="fp32", rounding="up", count=max(n // 8, 20)).codes]),
        "vectors mac bf16": lambda: V.generate("mac", fmt="bf16", acc="bf16", k=4, count=max(n // 32, 8)).codes,
        "vectors nm fp32": lambda: V.generate("nm", fmt="fp32", count=max(n // 8, 20)).codes,
        "vectors dot bf16 (row-wise dot)": lambda: V.generate("dot", fmt="bf16", acc="bf16", k=4,
                                                              count=max(n // 32, 8)).codes,
        # row-wise dot products: the fused RNE kernel, the lanes after a transposing pass, the batched path
        "dot rows f32 fused (float32 out)": lambda: emul.dot(A32, B32.T, "fp32", axis=-1),
        "dot rows f64 fused / lanes / batched": lambda: np.stack([
            emul.dot(A64, B64.T, acc, axis=-1), emul.dot(A64, B64.T, acc, axis=-1, order="pairwise"),
            emul.dot(Aw, Bw.T, acc, axis=-1), emul.dot(A64, B64.T, acc, axis=-1, rounding="up")]),
    }
    if bf16 is not None:
        c["nm_mask f16 / bf16"] = lambda: np.concatenate([S.nm_mask(f16.reshape(-1, 4), 2, 4).ravel(),
                                                          S.nm_mask(bf16.reshape(-1, 8), 3, 8, ties="high_index").ravel()])
        c["mvue exact / approx bf16"] = lambda: np.stack([
            S.mvue(bf16.reshape(-1, 4), 2, 4, seed=8).view(np.uint16),
            S.mvue(bf16.reshape(-1, 4), 2, 4, seed=8, method="approx").view(np.uint16)])
        c["transposable_mask bf16"] = lambda: S.transposable_mask(bf16[:64].reshape(8, 8), 2, 4)
    return c


def bits_of(x) -> np.ndarray:
    """Results as comparable bits (floats by bit pattern, so -0 and NaN signs count)."""
    x = np.asarray(x)
    if x.dtype.kind == "f":
        return x.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[x.dtype.itemsize])
    return x


def assert_same(got, want, name):
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype and got.shape == want.shape, (name, got.dtype, want.dtype, got.shape, want.shape)
    bad = np.flatnonzero(bits_of(got).ravel() != bits_of(want).ravel())
    assert bad.size == 0, (f"{name}: {bad.size} of {got.size} results differ under FTZ/DAZ, first at flat index "
                           f"{bad[0]}: {got.ravel()[bad[0]]!r} instead of {want.ravel()[bad[0]]!r}")


N_SMALL = 256
N_LARGE = 1 << 16  # above emul.quantize.PARALLEL_MIN: the parallel kernels run in parallel
NAMES = list(cases(N_SMALL))  # building the cases runs no kernel


def _check_all(got_of, want_of, names):
    """Compare every case; fail listing every difference."""
    different = []
    for name in names:
        try:
            assert_same(got_of(name), want_of(name), name)
        except Exception as exc:  # a difference, or a case that raised
            different.append(f"{name}: {str(exc).splitlines()[0]}")
    assert not different, "\n".join(different)


@pytest.fixture(scope="module")
def small_cases():
    return cases(N_SMALL)


class _Expected(dict):
    """Each case's result under the default environment (FTZ and DAZ off), computed on first use."""

    def __init__(self, cases):
        super().__init__()
        self.cases = cases

    def __missing__(self, name):
        assert mxcsr_swap() & (FTZ | DAZ) == 0
        self[name] = value = self.cases[name]()
        return value


@pytest.fixture(scope="module")
def expected_small(small_cases):
    return _Expected(small_cases)


@pytest.fixture(scope="module")
def regions_run_here():
    """Whether Numba's parallel regions (on one thread) run on the calling thread, as with the
    omp and tbb threading layers: then the in-thread test covers the parallel kernels too."""
    from numba import njit, prange

    mxcsr_swap()
    swap = _SWAP[0]

    @njit(parallel=True)
    def read_all(out):
        for i in prange(out.size):
            out[i] = swap(-1)

    out = np.zeros(8, np.int64)
    with flush_denormals():
        read_all(out)
    return bool(np.all(out & (FTZ | DAZ) == FTZ | DAZ))


def test_the_environment_is_in_effect():
    """The helper does set FTZ|DAZ: numpy's float32 -> float64 cast then reads a subnormal as 0,
    and float64 -> float32 writes one as 0."""
    x, y = np.float32([1e-40]), np.float64([1e-40])
    with flush_denormals():
        widened, narrowed, inside = x.astype(np.float64)[0], y.astype(np.float32)[0], mxcsr_swap()
    assert widened == 0.0 and narrowed == 0.0 and inside & (FTZ | DAZ) == FTZ | DAZ
    assert x.astype(np.float64)[0] != 0.0 and mxcsr_swap() & (FTZ | DAZ) == 0


@pytest.mark.parametrize("name", NAMES)
def test_under_ftz_daz_on_the_calling_thread(name, small_cases, expected_small, regions_run_here):
    expected_small[name]
    with flush_denormals():
        got = small_cases[name]()
    assert_same(got, expected_small[name], name)
    if not regions_run_here:  # pragma: no cover - the workqueue threading layer
        pytest.skip("Numba's parallel regions ran on worker threads; the child-process test covers them")


@pytest.mark.slow  # compiles every parallel kernel in a fresh process (~160 s cold on 2 cores); the serial kernels share their code and are checked above
def test_under_ftz_daz_on_every_thread_in_a_child_process(tmp_path):
    """FTZ|DAZ set before any thread exists (Numba's workers inherit it), arrays above the
    parallel threshold: every case, compared with this process's default-environment results."""
    out = tmp_path / "results.npz"
    proc = subprocess.run([sys.executable, __file__, str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = np.load(out)
    large = cases(N_LARGE)
    _check_all(lambda name: got[name], lambda name: large[name](), large)


def test_inside_jax_pure_callback_under_jit(small_cases, expected_small):
    """The user-facing case: emul called from ``jax.pure_callback`` under ``jax.jit`` runs on an
    XLA CPU thread, which has FTZ|DAZ set."""
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    results, seen = {}, []
    for name in small_cases:  # the expected results first, in this (default-environment) thread
        _outcome(lambda: expected_small[name])

    def callback(x):
        seen.append(mxcsr_swap())
        for name, fn in small_cases.items():
            results[name] = _outcome(fn)
        return np.asarray(x)

    run = jax.jit(lambda x: jax.pure_callback(callback, jax.ShapeDtypeStruct((2,), jnp.float32), x))
    jax.block_until_ready(run(jnp.zeros(2, jnp.float32)))
    assert seen, "the callback did not run"
    if seen[0] & (FTZ | DAZ) != FTZ | DAZ:  # pragma: no cover - depends on the XLA build
        pytest.skip(f"this XLA runs callbacks without FTZ/DAZ (MXCSR {seen[0]:#x})")
    _check_all(results.__getitem__, expected_small.__getitem__, small_cases)


def _child(path):
    """Set FTZ|DAZ on this (main) thread before anything starts a thread, run every case."""
    mxcsr_swap(mxcsr_swap() | FTZ | DAZ)
    assert np.array([0x116C2], np.uint32).view(np.float32).astype(np.float64)[0] == 0.0  # in effect
    import emul  # noqa: F401

    Q = sys.modules["emul.quantize"]  # the vectorised kernels' parallel versions, at this size too
    Q.FAST_PARALLEL_MIN, Q._threads_pay = 0, lambda: True
    results = {}
    for name, fn in cases(N_LARGE).items():
        results[name] = _outcome(fn)
    np.savez(path, **results)


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    _child(sys.argv[1])

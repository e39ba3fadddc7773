"""emul_jax: the rounding primitive and quantize/encode/decode, bit for bit against the core.

Every comparison is of uint32 bit patterns (codes, or float32 patterns), never of floats:
``assert_array_equal`` treats +0 == -0 and NaN == NaN. The big format × mode × overflow matrix
runs op by op (``jax.disable_jit``: every lax primitive compiles once per shape and is reused), a
representative subset under ``jax.jit``.
"""

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

import emul  # noqa: E402
from emul.formats import FixedFormat, FloatFormat  # noqa: E402
from emul_jax import _round as R  # noqa: E402
from emul_jax._bits import shl, shr, word  # noqa: E402

MODES = ["nearest_even", "nearest_away", "nearest_zero", "nearest_up", "nearest_down", "toward_zero",
         "away_from_zero", "up", "down", "odd"]
FIXED_RULES = ["saturate", "saturate_zero", "saturate_symmetric", "wrap", "wrap_sign_magnitude"]


def _rules(fmt):
    if isinstance(fmt, FloatFormat):
        return ["ieee", "saturate"]
    return [r for r in FIXED_RULES if fmt.signed or r != "wrap_sign_magnitude"]


def _diff(got, want, x=None):
    """A readable account of where two code/bit arrays differ ('' when equal)."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    bad = np.flatnonzero(got.reshape(-1) != want.reshape(-1))
    if not bad.size:
        return ""
    where = f" x={np.asarray(x).reshape(-1)[bad[:4]]!r}" if x is not None else ""
    return (f"{bad.size} of {got.size} differ, e.g. at {bad[:4]}:{where} "
            f"got={got.reshape(-1)[bad[:4]]} want={want.reshape(-1)[bad[:4]]}")


# -- lane helpers -----------------------------------------------------------------------------------

def test_shifts_by_32_or_more_and_negative_amounts_give_zero():
    """The lane helpers rely on XLA defining logical shifts by >= 32 (and, read as uint32, by a
    negative int32) as 0 — eagerly and compiled."""
    x = jnp.array([1, 0xFFFFFFFF, 0x80000001, 12345], jnp.uint32)
    n = jnp.array([32, 33, -1, -32], jnp.int32)
    for f in (lambda x, n: (shl(x, n), shr(x, n)), jax.jit(lambda x, n: (shl(x, n), shr(x, n)))):
        for out in f(x, n):
            assert np.asarray(out).tolist() == [0, 0, 0, 0]
    M = (0x89ABCDEF << 32) | 0x01234567
    hi, lo = jnp.full(7, 0x89ABCDEF, jnp.uint32), jnp.full(7, 0x01234567, jnp.uint32)
    k = np.array([-40, -5, 0, 7, 32, 50, 70])
    want = [((M << -int(j)) if j < 0 else (M >> int(j))) & 0xFFFFFFFF for j in k]
    assert np.asarray(word(hi, lo, jnp.asarray(k, jnp.int32))).tolist() == want


# -- the general primitive: (sign, hi, lo, e, sticky) against the core on float64 inputs ---------------

PRIMITIVE_FORMATS = ["e4m3fn", "e5m2fnuz", "e2m1fn", "bf16", "fp16", "fp32", "e5m6-nosub", "e3m0fin", "e8m3b130",
                     "int8", "uint8", "fx<12,4>", "ufx<4,2>", "fx<32,16>", "int32", "uint32", "fx<4,-2>",
                     "fx<6,10>", "int1"]


def _float64_inputs(fmt, rng):
    """float64 values around the format's range (including exact ties perturbed below float32's
    precision), ±0 and float64 subnormals; the core rounds each once."""
    n = 1500
    lo = np.log2(fmt.min_subnormal if isinstance(fmt, FloatFormat) else fmt.lsb) - 4
    hi = np.log2(max(fmt.max, -getattr(fmt, "min", 0))) + 4
    mag = np.exp2(rng.uniform(lo, hi, n)) * rng.choice([1, 1 + 2.0**-40, 1 - 2.0**-45, 1 + 2.0**-60], n)
    step = fmt.min_subnormal if isinstance(fmt, FloatFormat) else fmt.lsb
    ties = (rng.integers(0, 64, n // 2) + 0.5) * step * rng.choice([1, 2, 4, 1024], n // 2)
    ties = ties * rng.choice([1, 1 + 2.0**-50, 1 - 2.0**-50], n // 2)
    x = np.concatenate([mag, ties, [0.0, 5e-324, 2.0**-1060, 1e300], rng.standard_normal(200)])
    x = x * rng.choice([-1.0, 1.0], x.size)
    x[:2] = [0.0, -0.0]
    return x


def _f64_parts(x):
    b = x.view(np.uint64)
    sign = (b >> np.uint64(63)).astype(np.uint32)
    ef = ((b >> np.uint64(52)) & np.uint64(0x7FF)).astype(np.int64)
    f = b & np.uint64((1 << 52) - 1)
    M = np.where(ef > 0, f | np.uint64(1 << 52), f)
    e = np.maximum(ef, 1) - 1075
    return sign, M, e


def _split64(M):
    return (jnp.asarray((M >> np.uint64(32)).astype(np.uint32)),
            jnp.asarray((M & np.uint64(0xFFFFFFFF)).astype(np.uint32)))


def _need(sp):
    """Bits of M that must lie below the quantum when sticky is set (the primitive's precondition)."""
    if sp.stochastic:
        return sp.sr_bits
    return 1 if sp.mode_bits[0] else 0


def _quantum_exponent(fmt, x):
    if isinstance(fmt, FixedFormat):
        return np.full(x.shape, -fmt.frac)
    _, ex = np.frexp(np.abs(x))
    ex = ex.astype(np.int64) - 1
    qe_sub = fmt.emin - fmt.man_bits if fmt.subnormals else fmt.emin
    return np.where(ex >= fmt.emin, ex - fmt.man_bits, qe_sub)


@pytest.mark.parametrize("name", PRIMITIVE_FORMATS)
def test_primitive_against_core(name):
    """round_parts on float64 inputs split three ways — exact (53-bit M), normalised to 64 bits, and
    normalised then truncated into a sticky bit wherever the precondition allows — equals
    emul.encode of the float64 value, for every mode (SR with given words) and overflow rule."""
    fmt = emul.format(name)
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    x = _float64_inputs(fmt, rng)
    sign, M, e = _f64_parts(x)
    nz = M != 0
    shift = np.where(nz, 64 - np.array([int(v).bit_length() for v in M]), 0)
    M64 = np.array([int(m) << int(s) for m, s in zip(M, shift)], dtype=object)
    e64 = e - shift
    qe = _quantum_exponent(fmt, x)
    for mode in MODES + ["stochastic"]:
        for rule in _rules(fmt) if mode in ("nearest_even", "up", "stochastic") else _rules(fmt)[:1]:
            r = int(rng.choice([1, 8, 32])) if mode == "stochastic" else None
            sp = R.spec(fmt, mode, rule, r)
            u = rng.integers(0, 2**r, x.size, dtype=np.uint64).astype(np.uint32) if r else None
            want = emul.encode(x, fmt, mode, rule, random_bits=u, sr_bits=r).astype(np.uint32)
            uj = None if u is None else jnp.asarray(u)
            s = jnp.asarray(sign)
            # exact, 53 bits
            got = R.round_parts(sp, s, *_split64(M), jnp.asarray(e, jnp.int32), None, uj)
            assert not (msg := _diff(got, want, x)), f"{name} {mode} {rule} exact: {msg}"
            # normalised to hi >= 2**31, then k low bits dropped into sticky (k within the precondition)
            room = qe - e64 - _need(sp)
            if isinstance(fmt, FixedFormat) and rule.startswith("wrap"):
                room = np.minimum(room, qe - e64)
            k = np.clip(np.minimum(rng.integers(0, 40, x.size), room), 0, 63)
            k = np.where(nz, k, 0)
            Mk = np.array([(int(m) >> int(j)) for m, j in zip(M64, k)], dtype=np.uint64)
            st = np.array([(int(m) & ((1 << int(j)) - 1)) != 0 for m, j in zip(M64, k)])
            got = R.round_parts(sp, s, *_split64(Mk), jnp.asarray(e64 + k, jnp.int32), jnp.asarray(st), uj)
            assert not (msg := _diff(got, want, x)), f"{name} {mode} {rule} sticky: {msg}"
            # one word (hi=None) where M fits 32 bits
            if mode == "nearest_even":
                M32 = M >> np.uint64(21)
                x32 = (M32.astype(np.float64) * np.exp2(e + 21)) * np.where(sign, -1.0, 1.0)
                want32 = emul.encode(x32, fmt, mode, rule).astype(np.uint32)
                got = R.round_parts(sp, s, None, jnp.asarray(M32.astype(np.uint32)),
                                    jnp.asarray(e + 21, jnp.int32))
                assert not (msg := _diff(got, want32, x32)), f"{name} {mode} {rule} one word: {msg}"


def test_spec_rejects_wide_formats_naming_x64():
    for name in ["fp64", "int33", "fx<64,3>"]:
        with pytest.raises(ValueError, match="jax_enable_x64"):
            R.spec(name)
    with pytest.raises(ValueError, match="sr_bits=33: must be between 1 and 32"):
        R.spec("e4m3fn", "stochastic", sr_bits=33)
    with pytest.raises(ValueError, match="only for fixed-point"):
        R.spec("e4m3fn", overflow="wrap")

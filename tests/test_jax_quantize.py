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
N_INPUTS = 16384  # one input shape for every eager test: each lax primitive compiles once per shape


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

PRIMITIVE_FORMATS = ["e4m3fn", "e5m2fnuz", "e2m1fn", "bf16", "fp32", "e5m6-nosub", "e3m0fin", "e8m3b130",
                     "int8", "uint8", "fx<12,4>", "fx<32,16>", "uint32", "fx<4,-2>", "fx<6,10>", "int1"]


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
    return np.resize(x, N_INPUTS)  # the shape of every other eager test: primitives compile once


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
    M64 = M << shift.astype(np.uint64)  # bit 63 set (M < 2**53, so nothing is lost)
    e64 = e - shift
    qe = _quantum_exponent(fmt, x)
    # the modes that exercise every input of increment (lsb, sign, sticky, u); the quantize matrix
    # below runs every mode through the same increment
    for mode in ["nearest_even", "nearest_away", "nearest_down", "toward_zero", "up", "odd", "stochastic"]:
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
            ku = k.astype(np.uint64)
            Mk = M64 >> ku
            st = (M64 & ((np.uint64(1) << ku) - np.uint64(1))) != 0
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


@pytest.mark.parametrize("name", ["e4m3fn", "bf16", "e5m6-nosub", "fx<8,4>", "uint8", "int1"])
def test_primitive_zero_magnitude_with_sticky_is_a_tiny_value(name):
    """M == 0 with sticky means ε·2**e (0 < ε < 1): it rounds like any value in (0, 2**e)."""
    fmt = emul.format(name)
    qe = (fmt.emin - fmt.man_bits if fmt.subnormals else fmt.emin) if isinstance(fmt, FloatFormat) else -fmt.frac
    e = qe - 40
    x = np.array([2.0 ** (e - 1), -(2.0 ** (e - 1)), 0.75 * 2.0**e, -0.3 * 2.0**e])
    sign = jnp.asarray((x < 0).astype(np.uint32))
    zero = jnp.zeros(x.size, jnp.uint32)
    for mode in MODES + ["stochastic"]:
        sp = R.spec(fmt, mode, sr_bits=32 if mode == "stochastic" else None)
        u = np.array([0, 1, 2**32 - 1, 2**31], np.uint32) if sp.stochastic else None
        want = emul.encode(x, fmt, mode, random_bits=u, sr_bits=sp.sr_bits or None).astype(np.uint32)
        got = R.round_parts(sp, sign, zero, zero, jnp.full(x.size, e, jnp.int32), jnp.ones(x.size, bool),
                            None if u is None else jnp.asarray(u))
        assert not (msg := _diff(got, want, x)), f"{name} {mode}: {msg}"


def test_spec_rejects_wide_formats_naming_x64():
    for name in ["fp64", "int33", "fx<64,3>"]:
        with pytest.raises(ValueError, match="jax_enable_x64"):
            R.spec(name)
    with pytest.raises(ValueError, match="sr_bits=33: must be between 1 and 32"):
        R.spec("e4m3fn", "stochastic", sr_bits=33)
    with pytest.raises(ValueError, match="only for fixed-point"):
        R.spec("e4m3fn", overflow="wrap")


# -- quantize / encode / decode against the core ------------------------------------------------------

import functools  # noqa: E402
import sys  # noqa: E402

import chex  # noqa: E402
from jax.experimental import checkify  # noqa: E402

import emul_jax  # noqa: E402

FLOAT_FORMATS = ["e4m3fn", "e4m3fnuz", "e5m2", "e5m2fnuz", "e3m4", "e4m3b11fnuz", "e2m3fn", "e3m2fn", "e2m1fn",
                 "fp16", "bf16", "tf32", "fp32", "e5m6-nosub", "e2m1fn-nosub", "e3m2", "e6m9b20", "e3m0fin",
                 "e8m3b130", "e8m7b133fnuz-nosub"]
FIXED_FORMATS = ["int8", "uint8", "fx<8,4>", "fx<12,4>", "ufx<4,2>", "fx<16,8>", "fx<32,16>", "int32", "fx<4,-2>",
                 "fx<6,10>", "uint32", "int1"]


def _bits32(a):
    return np.asarray(a, np.float32).view(np.uint32)


@pytest.fixture(scope="module")
def base_inputs():
    """Random float32 bit patterns and the classes of docs/jax.md: ±0, ±inf, NaNs of both signs
    (with payloads), float32 subnormals, the edges of float32's range, e4m3fn's 448/464/465."""
    rng = np.random.default_rng(2024)
    rand = rng.integers(0, 2**32, 3000, dtype=np.uint64).astype(np.uint32)
    sub = rng.integers(1, 1 << 23, 300, dtype=np.uint64).astype(np.uint32)
    special = np.array([0, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00000, 0x7F800001, 0xFFBFFFFF,
                        1, 0x80000001, 2, 3, 0x007FFFFF, 0x807FFFFF, 0x00800000, 0x80800000, 0x7F7FFFFF,
                        0xFF7FFFFF], np.uint32)
    small = np.array([448, 449, 456, 464, 465, 472, 480, 240, 57344, 61440, 6, 7, 0.25, 0.375, 1.875, 2.5,
                      65504, 65520, 1e-30, 1e-40, 2.0**-149, 1.5 * 2**-149], np.float32)
    x = np.concatenate([rand, sub, sub | np.uint32(0x80000000), special, _bits32(small), _bits32(-small)])
    return x.view(np.float32)


@functools.lru_cache(maxsize=None)
def _grid_points(name):
    """The format's values (all, or a sample with the edges), the midpoints between neighbours (ties),
    one float32 ulp either side of both, and the edges: max + half an ulp, max + ulp, values below
    half the smallest step; both signs; the float32 ones only."""
    fmt = emul.format(name)
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    if isinstance(fmt, FloatFormat):
        n, m, top = 1 << (fmt.bits - 1), fmt.man_bits, fmt.max_code_magnitude
        mags = np.arange(n) if n <= 4096 else np.concatenate(
            [rng.integers(0, n, 3000), np.arange(40), np.arange(max((1 << m) - 20, 0), (1 << m) + 20),
             np.arange(top - 40, top + 1)])
        mags = np.unique(mags[mags <= top])
        if not fmt.subnormals:
            mags = mags[((mags >> m) > 0) | (mags == 0)]
        v = emul.decode(mags.astype(np.uint64), fmt)
        ulp = 2.0 ** (fmt.emax - m)
        extra = [fmt.max + ulp / 2, fmt.max + ulp, fmt.max + ulp / 4, 2 * fmt.max, fmt.min_subnormal / 2,
                 fmt.min_subnormal / 4, 0.75 * fmt.min_subnormal, fmt.min_normal / 2, 0.75 * fmt.min_normal]
    else:
        raw = (np.arange(fmt.min_raw, fmt.max_raw + 1) if fmt.bits <= 12 else np.concatenate(
            [rng.integers(fmt.min_raw, fmt.max_raw, 3000, endpoint=True),
             [fmt.min_raw, fmt.min_raw + 1, 0, 1, fmt.max_raw - 1, fmt.max_raw]]))
        v = raw.astype(np.float64) * fmt.lsb
        lsb = fmt.lsb
        extra = [fmt.max + lsb / 2, fmt.max + lsb, fmt.min - lsb / 2, fmt.min - lsb, 2 * fmt.max + 3 * lsb,
                 lsb / 2, lsb / 4, 0.75 * lsb, 2.0 ** (fmt.bits - fmt.frac + 2) + lsb / 2,
                 -(2.0 ** (fmt.bits - fmt.frac + 1)) - 1.5 * lsb]
    v = np.sort(v)
    cand = np.concatenate([v, (v[:-1] + v[1:]) / 2, extra])
    with np.errstate(over="ignore"):
        c = cand.astype(np.float32)
    c = c[(c.astype(np.float64) == cand) & np.isfinite(c)]
    with np.errstate(over="ignore"):
        near = np.concatenate([c, np.nextafter(c, np.float32(np.inf)), np.nextafter(c, np.float32(-np.inf))])
    return np.concatenate([near, -near]).astype(np.float32)


def _inputs(name, base, finite=False):
    """base + the format's grid points (a sample when there are too many), N_INPUTS of them; NaN
    (where the format has none) and, with ``finite``, ±inf replaced by 0 — same shape always."""
    fmt = emul.format(name)
    grid = _grid_points(name)
    room = N_INPUTS - base.size
    if grid.size > room:
        grid = np.random.default_rng(7).choice(grid, room, replace=False)
    x = np.resize(np.concatenate([base, grid]), N_INPUTS)
    if not (isinstance(fmt, FloatFormat) and fmt.has_nan):
        x = np.where(np.isnan(x), np.float32(0), x)
    if finite:
        x = np.where(np.isfinite(x), x, np.float32(0))
    return x


def _check(fmt, x, xj, mode, rule, tag, values=True, **sr):
    """encode codes and (with ``values``) quantize float32 patterns of emul_jax equal the core's."""
    core_sr = {("seed" if k == "key" else k): (v[1] if k == "key" else v) for k, v in sr.items()}
    def jax_sr():  # a fresh key per call (keys are never reused: jax_debug_key_reuse)
        return {k: (v[0]() if k == "key" else v) for k, v in sr.items()}

    want = emul.encode(x, fmt, mode, rule, **core_sr).astype(np.uint32)
    got = np.asarray(emul_jax.encode(xj, fmt, mode, rule, **jax_sr())).astype(np.uint32)
    assert not (msg := _diff(got, want, x)), f"{tag} encode {fmt.name} {mode} {rule}: {msg}"
    if values and _fits(fmt):
        want = _bits32(emul.quantize(x, fmt, mode, rule, **core_sr))
        got = _bits32(emul_jax.quantize(xj, fmt, mode, rule, **jax_sr()))
        assert not (msg := _diff(got, want, x)), f"{tag} quantize {fmt.name} {mode} {rule}: {msg}"


def _fits(fmt):
    from emul.quantize import _fits_float32

    return _fits_float32(fmt)


@pytest.mark.parametrize("name", FLOAT_FORMATS)
def test_float_formats_every_mode_and_rule_eager(name, base_inputs):
    fmt = emul.format(name)
    x = _inputs(name, base_inputs)
    xj = jnp.asarray(x)
    with jax.disable_jit():  # codes: every mode and rule; values: every mode under ieee, three under saturate
        for mode in MODES:
            for rule in _rules(fmt):
                values = rule == "ieee" or mode in ("nearest_even", "toward_zero", "up")
                _check(fmt, x, xj, mode, rule, "eager", values)


@pytest.mark.parametrize("name", FIXED_FORMATS)
def test_fixed_formats_every_mode_and_rule_eager(name, base_inputs):
    """All modes under saturate and wrap; every rule under nearest_even, down and up. (±inf only
    where the rule takes it: the wrap rules raise, as in the core.)"""
    fmt = emul.format(name)
    x, fin = _inputs(name, base_inputs), _inputs(name, base_inputs, finite=True)
    xj, finj = jnp.asarray(x), jnp.asarray(fin)
    with jax.disable_jit():  # values (decode of the code) for every mode under saturate, one mode otherwise
        for rule in _rules(fmt):
            for mode in MODES if rule in ("saturate", "wrap") else ["nearest_even", "down", "up"]:
                wrap = rule.startswith("wrap")
                values = rule == "saturate" or mode == "down"
                _check(fmt, fin if wrap else x, finj if wrap else xj, mode, rule, "eager", values)


JIT_CASES = [  # every format family, every mode and every overflow rule at least once, under jax.jit
    ("e4m3fn", "nearest_even", "ieee"), ("e4m3fn", "odd", "saturate"), ("e5m2", "up", "ieee"),
    ("e4m3fnuz", "nearest_away", "ieee"), ("e2m1fn", "down", "ieee"), ("bf16", "nearest_zero", "saturate"),
    ("fp16", "nearest_up", "ieee"), ("fp32", "away_from_zero", "ieee"), ("e5m6-nosub", "nearest_down", "ieee"),
    ("e8m3b130", "toward_zero", "ieee"), ("fx<12,4>", "nearest_even", "saturate"),
    ("int8", "down", "wrap"), ("fx<8,4>", "up", "wrap_sign_magnitude"), ("ufx<4,2>", "odd", "saturate_zero"),
    ("fx<6,10>", "nearest_away", "saturate_symmetric"), ("int32", "nearest_even", "wrap"),
]


@pytest.mark.parametrize("name,mode,rule", JIT_CASES)
def test_under_jit(name, mode, rule, base_inputs):
    fmt = emul.format(name)
    x = _inputs(name, base_inputs, finite=rule.startswith("wrap"))
    want_c = emul.encode(x, fmt, mode, rule).astype(np.uint32)
    if _fits(fmt):
        both = jax.jit(lambda v: (emul_jax.encode(v, fmt, mode, rule), emul_jax.quantize(v, fmt, mode, rule)))
        got_c, got_q = both(x)
        want_q = _bits32(emul.quantize(x, fmt, mode, rule))
        assert not (msg := _diff(_bits32(got_q), want_q, x)), f"jit quantize: {msg}"
    else:
        got_c = jax.jit(lambda v: emul_jax.encode(v, fmt, mode, rule))(x)
    assert not (msg := _diff(np.asarray(got_c).astype(np.uint32), want_c, x)), f"jit encode: {msg}"


# -- stochastic rounding ----------------------------------------------------------------------------

SR_FORMATS = ["e4m3fn", "e2m1fn", "bf16", "e8m3b130", "fx<12,4>", "ufx<4,2>", "fx<32,16>"]


@pytest.mark.parametrize("name", SR_FORMATS)
def test_stochastic_key_equals_core_seed(name, base_inputs):
    """key=jax.random.key(s) gives emul's seed=s bit for bit; random_bits= gives the core's
    random_bits=; sr_bits 1, 8, 32; add and compare; key reuse is checked."""
    fmt = emul.format(name)
    x = _inputs(name, base_inputs, finite=isinstance(fmt, FixedFormat))
    xj = jnp.asarray(x)
    rng = np.random.default_rng(5)
    with jax.disable_jit(), jax.debug_key_reuse(True):
        for r, method in [(1, "add"), (8, "compare"), (32, "add"), (8, "add"), (32, "compare")]:
            sr = dict(sr_bits=r, sr_method=method)
            if method == "add" or r == 8:
                s = int(rng.integers(0, 2**31))
                _check(fmt, x, xj, "stochastic", None, "key", key=(lambda: jax.random.key(s), s), **sr)
            if r != 1:
                u = rng.integers(0, 2**r, x.size, dtype=np.uint64).astype(np.uint32)
                _check(fmt, x, xj, "stochastic", None, "random_bits", random_bits=u, **sr)


def test_stochastic_under_jit_and_key_data(base_inputs):
    x = _inputs("e4m3fn", base_inputs)
    want = _bits32(emul.quantize(x, "e4m3fn", "stochastic", seed=11, sr_bits=8))
    f = jax.jit(lambda v, k: emul_jax.quantize(v, "e4m3fn", "stochastic", key=k, sr_bits=8))
    assert not _diff(_bits32(f(x, jax.random.key(11))), want)
    assert not _diff(_bits32(f(x, jax.random.key_data(jax.random.key(11)))), want)  # raw uint32[2]
    u = np.random.default_rng(0).integers(0, 256, x.size).astype(np.uint8)
    g = jax.jit(lambda v, w: emul_jax.quantize(v, "fx<8,4>", "stochastic", random_bits=w, sr_bits=8,
                                               sr_method="compare", overflow="saturate"))
    xf = x[np.isfinite(x)]
    uf = u[np.isfinite(x)]
    want = _bits32(emul.quantize(xf, "fx<8,4>", "stochastic", random_bits=uf, sr_bits=8, sr_method="compare"))
    assert not _diff(_bits32(g(xf, uf)), want)


def test_random_bits_broadcast():
    x = np.linspace(-3, 3, 24, dtype=np.float32).reshape(4, 6)
    u = np.arange(6, dtype=np.int32) * 40
    got = emul_jax.encode(x, "e2m1fn", "stochastic", random_bits=u, sr_bits=8)
    want = emul.encode(x, "e2m1fn", "stochastic", random_bits=u, sr_bits=8)
    assert not _diff(got, want)


# -- decode -------------------------------------------------------------------------------------------

DECODE_FORMATS = ["e4m3fn", "e4m3fnuz", "e5m2", "e5m2fnuz", "e3m4", "e4m3b11fnuz", "e2m3fn", "e3m2fn", "e2m1fn",
                  "fp16", "bf16", "e5m6-nosub", "e3m0fin", "e8m3b130", "e8m7b133fnuz-nosub", "int8", "uint8",
                  "fx<12,4>", "ufx<4,2>", "fx<16,8>", "fx<4,-2>", "fx<6,10>", "int1"]


@pytest.mark.parametrize("name", DECODE_FORMATS)
def test_decode_every_code(name):
    """Every code of formats of at most 16 bits (all 2**16 of fp16 and bf16) decodes to the core's
    value (float64, exactly a float32) bit for bit, subnormal float32 results included."""
    fmt = emul.format(name)
    codes = np.arange(1 << fmt.bits, dtype=np.uint32)
    if isinstance(fmt, FloatFormat) and not fmt.subnormals:
        mag = codes & ((1 << (fmt.bits - 1)) - 1)
        codes = codes[((mag >> fmt.man_bits) > 0) | (mag == 0)]
    codes = np.resize(codes, 1 << 16)  # one shape for every format (eager primitives compile once)
    want = _bits32(emul.decode(codes, fmt).astype(np.float32))
    with jax.disable_jit():
        got = _bits32(emul_jax.decode(jnp.asarray(codes), fmt))
    assert not (msg := _diff(got, want, codes)), msg
    if name in ("fp16", "e5m6-nosub", "fx<12,4>"):
        got = _bits32(jax.jit(lambda c: emul_jax.decode(c, fmt))(codes))
        assert not (msg := _diff(got, want, codes)), msg


def test_decode_of_encode_is_quantize(base_inputs):
    x = _inputs("e5m2", base_inputs)
    q = emul_jax.quantize(x, "e5m2", "up")
    assert not _diff(_bits32(emul_jax.decode(emul_jax.encode(x, "e5m2", "up"), "e5m2")), _bits32(q))


def test_decode_rejects_invalid_codes_like_the_core():
    for codes, fmt in [(np.array([0, 256], np.int32), "e4m3fn"), (np.array([1], np.uint8), "e4m3fn-nosub"),
                       (np.array([-1], np.int32), "e4m3fn"), (np.array([0x10], np.uint8), "ufx<4,2>")]:
        with pytest.raises(ValueError) as core:
            emul.decode(codes, fmt)
        with pytest.raises(ValueError) as ours:
            emul_jax.decode(codes, fmt)
        assert str(ours.value) == str(core.value)
    out = jax.jit(lambda c: emul_jax.decode(c, "e4m3fn-nosub"))(np.array([1, 8], np.uint8))
    assert _bits32(out).tolist() == [0x7FC00000, int(_bits32(np.float32(2.0**-6)))]
    with pytest.raises(TypeError, match="integer"):
        emul_jax.decode(np.array([1.0]), "e4m3fn")


# -- other input dtypes, shapes -----------------------------------------------------------------------

def test_half_precision_inputs_widen_exactly(ml_dtypes):
    """float16 (all 2**16 patterns) and bfloat16 inputs round from their exact values."""
    h = np.arange(1 << 16, dtype=np.uint16)
    x16 = h.view(np.float16)
    finite = np.where(np.isfinite(x16), x16, np.float16(0))
    for name in ["e4m3fn", "e5m2fnuz", "fx<8,4>", "e3m2"]:
        fmt = emul.format(name)
        x = x16 if isinstance(fmt, FloatFormat) and fmt.has_nan else finite
        with jax.disable_jit():
            got = _bits32(emul_jax.quantize(jnp.asarray(x), fmt, "nearest_even"))
        want = _bits32(emul.quantize(x.astype(np.float32), fmt, "nearest_even"))
        assert not (msg := _diff(got, want, x)), f"float16 -> {name}: {msg}"
    xb = h.view(ml_dtypes.bfloat16)
    with jax.disable_jit():
        got = np.asarray(emul_jax.encode(jnp.asarray(xb), "e4m3fn", "down"))
    want = emul.encode((h.astype(np.uint32) << 16).view(np.float32), "e4m3fn", "down")
    assert not _diff(got, want)


def test_integer_inputs_round_from_their_exact_values():
    rng = np.random.default_rng(3)
    for dt in (np.int8, np.int32, np.uint16, np.uint32, np.bool_):
        if dt is np.bool_:
            x = np.array([True, False, True])
        else:
            info = np.iinfo(dt)
            x = np.concatenate([rng.integers(info.min, info.max, 500, endpoint=True),
                                [info.min, info.max, 0, 1, 7, 9, 17, 2**24 + 1]]).astype(dt)
            x = np.resize(x, N_INPUTS)  # the shape of the other eager tests
        for name, mode, rule in [("e4m3fn", "nearest_even", None), ("bf16", "odd", None), ("fp32", "up", None),
                                 ("int8", "down", "wrap"), ("fx<12,-4>", "nearest_even", "saturate_symmetric"),
                                 ("uint32", "up", "wrap")]:
            want = emul.encode(x, name, mode, rule).astype(np.uint32)
            with jax.disable_jit():
                got = np.asarray(emul_jax.encode(x, name, mode, rule)).astype(np.uint32)
            assert not (msg := _diff(got, want, x)), f"{dt.__name__} -> {name}: {msg}"
            if _fits(emul.format(name)):
                want = _bits32(np.asarray(emul.quantize(x, name, mode, rule)).astype(np.float32))
                with jax.disable_jit():
                    got = _bits32(emul_jax.quantize(x, name, mode, rule))
                assert not _diff(got, want)


def test_shapes_scalars_and_exact_float64():
    assert emul_jax.quantize(np.float32(465.0), "e4m3fn").shape == ()
    assert emul_jax.encode(jnp.zeros((0, 3)), "e4m3fn").shape == (0, 3)
    assert emul_jax.encode(jnp.zeros((0, 3)), "e4m3fn").dtype == jnp.uint8
    assert emul_jax.encode(1.5, "fp16").dtype == jnp.uint16 and emul_jax.encode(1, "tf32").dtype == jnp.uint32
    got = emul_jax.encode(np.array([464.0, 465.0, 2**-140]), "e4m3fn")  # float64 values that are float32
    assert np.asarray(got).tolist() == [126, 127, 0]
    for ints in ([2**31 - 1, -3], [2**32 - 1, 7]):  # int64 values that fit int32 / uint32
        want = emul.encode(np.array(ints), "bf16").tolist()
        assert np.asarray(emul_jax.encode(np.array(ints), "bf16")).tolist() == want


# -- errors ---------------------------------------------------------------------------------------------

def _same_error(exc_type, core_call, jax_call):
    with pytest.raises(exc_type) as core:
        core_call()
    with pytest.raises(exc_type) as ours:
        jax_call()
    assert str(ours.value) == str(core.value)


def test_errors_read_like_the_core():
    x = np.array([1.0, np.nan], np.float32)
    for args in [("e2m1fn",), ("int8",), ("e4m3fn", "bogus"), ("e4m3fn", "nearest_even", "wrap"),
                 ("uint8", "nearest_even", "wrap_sign_magnitude"), ("nope",)]:
        _same_error(ValueError, lambda: emul.encode(x, *args), lambda: emul_jax.encode(x, *args))
    inf = np.array([np.inf], np.float32)
    _same_error(ValueError, lambda: emul.quantize(inf, "fx<8,4>", overflow="wrap"),
                lambda: emul_jax.quantize(inf, "fx<8,4>", overflow="wrap"))
    y = np.ones(4, np.float32)
    for kw in [dict(sr_bits=0), dict(sr_bits=33), dict(sr_method="xor"),
               dict(random_bits=np.array([0, 1, 2, 256]), sr_bits=8),
               dict(random_bits=np.ones(3, np.uint8))]:
        _same_error(ValueError, lambda: emul.encode(y, "e4m3fn", "stochastic", **kw),
                    lambda: emul_jax.encode(y, "e4m3fn", "stochastic", **kw))
    _same_error(TypeError, lambda: emul.encode(y, "e4m3fn", "stochastic", random_bits=np.ones(4)),
                lambda: emul_jax.encode(y, "e4m3fn", "stochastic", random_bits=np.ones(4)))
    _same_error(ValueError, lambda: emul.encode(y, "e4m3fn", "nearest_even", sr_bits=8),
                lambda: emul_jax.encode(y, "e4m3fn", "nearest_even", sr_bits=8))


def test_errors_of_the_jax_front_end():
    y = jnp.ones(4)
    with pytest.raises(ValueError, match="needs exactly one of key= or random_bits="):
        emul_jax.quantize(y, "e4m3fn", "stochastic")
    with pytest.raises(ValueError, match="key: only used with rounding='stochastic'"):
        emul_jax.quantize(y, "e4m3fn", key=jax.random.key(0))
    with pytest.raises(ValueError, match="jax_enable_x64"):
        emul_jax.encode(y, "fp64")
    with pytest.raises(ValueError, match="jax_enable_x64"):
        emul_jax.encode(y, "int64")
    with pytest.raises(ValueError, match="do not fit float32"):
        emul_jax.quantize(y, "int32")
    with pytest.raises(ValueError, match="do not fit float32"):
        emul_jax.encode(y, "e9m10")
    with pytest.raises(ValueError, match="ste="):
        emul_jax.quantize(y, "e4m3fn", ste="straight")
    with pytest.raises(ValueError, match="is not a float32"):
        emul_jax.quantize(np.array([0.1]), "e4m3fn")  # float64 0.1 would be rounded twice
    with pytest.raises(ValueError, match="does not fit 32 bits"):
        emul_jax.encode(np.array([2**40]), "bf16")
    for bad in (np.array([1 + 2j]), np.array(["a"]), np.array([object()]), jnp.zeros(2, jnp.float8_e4m3fn)):
        with pytest.raises(TypeError, match="not supported"):
            emul_jax.encode(bad, "e4m3fn")
    with pytest.raises(ValueError, match="expected 2 uint32 words"):
        emul_jax.encode(y, "e4m3fn", "stochastic", key=np.array([1, 2, 3]))
    with pytest.raises(ValueError, match="one key"):
        emul_jax.encode(y, "e4m3fn", "stochastic", key=jax.random.split(jax.random.key(0), 2))


def test_invalid_elements_under_jit_are_defined_and_checkify_reports_them():
    """Under jit nothing can raise: a NaN into a format without NaN, ±inf under a wrap rule and an
    SR word out of range give NaN (quantize, with the input's sign) or the NaN code / 0 (encode);
    checkify.checkify reports each."""
    x = jnp.array([1.0, -jnp.nan, jnp.inf], jnp.float32)
    q = jax.jit(lambda v: emul_jax.quantize(v, "e2m1fn"))(x)
    assert _bits32(q).tolist() == [int(_bits32(np.float32(1.0))), 0xFFC00000, int(_bits32(np.float32(6.0)))]
    assert np.asarray(jax.jit(lambda v: emul_jax.encode(v, "e2m1fn"))(x)).tolist() == [2, 0, 7]
    q = jax.jit(lambda v: emul_jax.quantize(v, "fx<8,4>", overflow="wrap"))(x)
    assert _bits32(q).tolist() == [int(_bits32(np.float32(1.0))), 0xFFC00000, 0x7FC00000]
    err, _ = checkify.checkify(jax.jit(lambda v: emul_jax.quantize(v, "e2m1fn")))(x)
    assert "has no NaN" in str(err.get())
    err, _ = checkify.checkify(jax.jit(lambda v: emul_jax.encode(v, "int8", overflow="wrap")))(x[::2])
    assert "infinite" in str(err.get())
    u = jnp.array([0, 300, 5], jnp.int32)
    f = jax.jit(lambda v, w: emul_jax.quantize(v, "e4m3fn", "stochastic", random_bits=w, sr_bits=8))
    assert _bits32(f(x.at[1].set(-2.0), u)).tolist()[1] == 0xFFC00000
    err, _ = checkify.checkify(f)(x, u)
    assert "outside [0, 2**8)" in str(err.get())
    err, _ = checkify.checkify(f)(x, jnp.array([0, 255, 5], jnp.int32))
    assert err.get() is None


# -- transformations ----------------------------------------------------------------------------------

def test_vmap_equals_the_whole_array():
    x = np.random.default_rng(1).standard_normal((6, 40)).astype(np.float32) * 100
    u = np.random.default_rng(2).integers(0, 16, x.shape).astype(np.uint32)
    whole = emul_jax.quantize(x, "e4m3fn", "stochastic", random_bits=u, sr_bits=4)
    rows = jax.vmap(lambda a, b: emul_jax.quantize(a, "e4m3fn", "stochastic", random_bits=b, sr_bits=4))(x, u)
    assert not _diff(_bits32(rows), _bits32(whole))
    codes = jax.vmap(lambda a: emul_jax.encode(a, "fx<8,2>"))(x)
    assert not _diff(codes, emul.encode(x, "fx<8,2>"))
    # an unbatched key: each row uses the words of its own shape, as emul's seed= per row
    keyed = jax.vmap(lambda a: emul_jax.quantize(a, "bf16", "stochastic", key=jax.random.key(3)))(x)
    assert not _diff(_bits32(keyed[2]), _bits32(emul.quantize(x[2], "bf16", "stochastic", seed=3)))


@pytest.mark.parametrize("ste", ["identity", "clipped", "none"])
def test_grad_is_the_straight_through_estimator(ste):
    fmt = emul.format("e4m3fn")
    x = jnp.array([0.3, -1.7, 448.0, -448.0, 449.0, -500.0, 1e-9, -0.0, jnp.inf, jnp.nan], jnp.float32)
    g = jax.grad(lambda v: jnp.sum(emul_jax.quantize(v, fmt, ste=ste) * 3.0))(x)
    inside = np.array([1, 1, 1, 1, 0, 0, 1, 1, 0, 0], np.float32)
    want = {"identity": np.ones(10), "clipped": inside, "none": np.zeros(10)}[ste] * 3.0
    assert _bits32(g).tolist() == _bits32(want).tolist()
    gj = jax.jit(jax.grad(lambda v: jnp.sum(emul_jax.quantize(v, fmt, "stochastic", key=jax.random.key(0),
                                                              ste=ste))))(x)
    assert _bits32(gj).tolist() == _bits32(want / 3.0).tolist()
    # fixed point clips at [min, max]
    gf = jax.grad(lambda v: jnp.sum(emul_jax.quantize(v, "ufx<4,2>", ste=ste)))(jnp.array([-0.0, -0.1, 3.75, 3.8]))
    want_f = {"identity": [1, 1, 1, 1], "clipped": [1, 0, 1, 0], "none": [0, 0, 0, 0]}[ste]
    assert np.asarray(gf).tolist() == want_f


def test_jvp_and_vmap_of_grad():
    x = jnp.linspace(-500, 500, 12, dtype=jnp.float32)
    y, t = jax.jvp(lambda v: emul_jax.quantize(v, "e4m3fn", ste="clipped"), (x,), (jnp.ones_like(x),))
    assert not _diff(_bits32(y), _bits32(emul.quantize(np.asarray(x), "e4m3fn")))
    assert np.asarray(t).tolist() == [float(abs(v) <= 448) for v in np.asarray(x)]
    g = jax.vmap(jax.grad(lambda v: emul_jax.quantize(v, "e4m3fn", ste="clipped")))(x)
    assert np.asarray(g).tolist() == np.asarray(t).tolist()


def test_jit_traces_once_per_configuration():
    x = jnp.arange(64, dtype=jnp.float32) / 7

    @jax.jit
    @chex.assert_max_traces(n=1)
    def f(v):
        return emul_jax.quantize(v, "e4m3fn", "nearest_even")

    f(x).block_until_ready()
    f(x + 1).block_until_ready()  # same shape and configuration: no new trace
    chex.clear_trace_counter()
    # the internal per-configuration jit: a second eager call with an equal (fresh) spec is a cache hit
    Q = sys.modules["emul_jax.quantize"]  # (emul_jax.quantize is the function)

    emul_jax.quantize(x, emul.FloatFormat(4, 3, specials="fn"), "up")
    n = Q._round_jit._cache_size()
    emul_jax.quantize(x + 1, "e4m3fn", emul_jax.Rounding.UP)
    assert Q._round_jit._cache_size() == n


def test_package_imports():
    import subprocess
    import sys

    code = ("import sys, emul\nassert 'jax' not in sys.modules and 'emul_jax' not in sys.modules\n"
            "import emul_jax\nassert 'flax' not in sys.modules\n"
            "assert emul_jax.FloatFormat is emul.FloatFormat and emul_jax.Rounding is emul.Rounding\n"
            "assert emul_jax.format is emul.format and emul_jax.Overflow is emul.Overflow\n")
    subprocess.run([sys.executable, "-c", code], check=True)


# -- random formats ---------------------------------------------------------------------------------

from hypothesis import HealthCheck, assume, given, settings, strategies as st  # noqa: E402


@st.composite
def float32_formats(draw):
    """Float formats whose values are float32: exp 2..8, man 0..23, any specials and bias that fit."""
    e, m = draw(st.integers(2, 8)), draw(st.integers(0, 23))
    specials = draw(st.sampled_from(["ieee", "fn", "fnuz", "none"]))
    default = 2 ** (e - 1) - (0 if specials == "fnuz" else 1)
    bias = draw(st.one_of(st.none(), st.integers(default - 4, default + 4)))
    try:
        fmt = FloatFormat(e, m, bias=bias, subnormals=draw(st.booleans()), specials=specials)
    except ValueError:
        assume(False)
    assume(_fits(fmt))
    return fmt


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fmt=float32_formats(), mode=st.sampled_from(MODES + ["stochastic"]), rule=st.sampled_from(["ieee", "saturate"]),
       r=st.sampled_from([1, 3, 8, 32]), method=st.sampled_from(["add", "compare"]))
def test_random_float_formats_against_core(fmt, mode, rule, r, method, base_inputs):
    x = _inputs(fmt.name, base_inputs)
    sr = {}
    if mode == "stochastic":
        u = np.random.default_rng(r).integers(0, 2**r, x.size, dtype=np.uint64).astype(np.uint32)
        sr = dict(random_bits=u, sr_bits=r, sr_method=method)
    with jax.disable_jit():
        _check(fmt, x, jnp.asarray(x), mode, rule, "hypothesis", **sr)

"""The fixed-point fast paths (emul/_kernels/fast_fixed.py) beyond float32 in deterministic modes:
stochastic rounding from float32, float64 inputs (deterministic and SR), and integer-array inputs
(routed to the float32 / float64 kernels), against the general kernel bit for bit.

Inputs: float patterns around every code value and midpoint (ties at the lsb) ±2 ulp, the range
ends and one lsb beyond, far beyond (wrap), ±0, subnormals, ±inf and NaN, random patterns. SR words
lie on both sides of each input's decision boundary, computed here exactly in float64 (positive
values: the magnitude rounds up iff ``t + u >= 2**r`` / ``u < t``; negative ones iff ``u < t + st``
/ ``u + t + st >= 2**r``, ``st`` whether ``f * 2**r`` is not an integer). The default run compiles
one output dtype (uint8) per new kernel; sweeps over wider formats are slow-marked.
"""

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import emul
from emul import encode, quantize
from emul._kernels import fast_fixed as FX
from emul._kernels import round as K
from emul._params import kernel_params
from emul.quantize import _plan, _ro, code_dtype, exact_float32, exact_float64
from emul.rounding import MODE_BITS, Overflow, Rounding

MODES = list(MODE_BITS)  # the deterministic modes
ALL_MODES = MODES + [Rounding.STOCHASTIC]
RULES = [Overflow.SATURATE, Overflow.SATURATE_ZERO, Overflow.SATURATE_SYMMETRIC, Overflow.WRAP,
         Overflow.WRAP_SIGN_MAGNITUDE]
SMALL = ["fx<8,4>", "int8", "uint8", "int1", "fx<4,-3>", "ufx<6,3>"]  # uint8 codes: one compile per kernel


def _rules(fmt):
    return [r for r in RULES if fmt.signed or r != Overflow.WRAP_SIGN_MAGNITUDE]


def _edges(fmt, dtype, rng):
    """Inputs of ``dtype`` (float32/float64) around every code and midpoint (sampled above 10
    bits), the range ends, far beyond, and specials; both signs."""
    lo, hi = fmt.min_raw, fmt.max_raw
    raws = np.arange(lo, hi + 1) if fmt.bits <= 10 else np.r_[lo:lo + 64, -64:64, hi - 64:hi + 1,
                                                              rng.integers(lo, hi, 300)]
    far = [float(v) for v in (lo - 1, hi + 1, 2 * hi + 1, 4 * hi + 3, 1000 * hi + 7)]  # beyond int64 at 63 bits
    raws = np.r_[raws.astype(np.float64), far]
    vals = np.ldexp(np.r_[raws, raws + 0.5, raws - 0.5, raws + 0.25, raws + 0.75], -fmt.frac)
    u, fi, bits = (np.uint32, np.float32, 32) if dtype == np.float32 else (np.uint64, np.float64, 64)
    top = 0x7F800000 if bits == 32 else 0x7FF0000000000000
    with np.errstate(over="ignore"):
        base = np.abs(vals).astype(fi).view(u).astype(np.int64)
    near = np.clip((base[:, None] + np.arange(-2, 3)).reshape(-1), 0, top)
    specials = [0, 1, 2, 3, top >> 9, top - 1, top, top + 1, top | (top >> 8)] if bits == 32 else \
        [0, 1, 2, 3, (1 << 52) - 1, 1 << 52, top - 1, top, top + 1, top | (1 << 51)]
    rand = rng.integers(0, top, 512, dtype=np.int64)
    mag = np.unique(np.r_[near, specials, rand]).astype(u)
    return np.r_[mag, mag | u(1 << (bits - 1))].view(fi)


def _oracle(x, P, u=None):
    """(codes, #NaN, #inf rejected) of the general kernel on x as float64 (exact for every input
    here: float32, float64, integers of at most 32 bits)."""
    out = np.empty(x.size, np.uint64)
    with np.errstate(invalid="ignore"):  # signalling NaNs
        wide = x.astype(np.float64)
    nan, inf = K.round_serial(_ro(wide.view(np.uint64)), K.IN_FLOAT64, np.zeros(1, np.uint32) if u is None else u, P, out, False)
    return out, nan, inf


def _seeded_words(k, n, r):
    """The words of seed=/key= SR: ``emul.random.bits(key, (n,)) >> (32 - r)``, element i word i
    (what round_seeded draws)."""
    return emul.random.bits(k, (n,)) >> np.uint32(32 - r)


def _same(got, want, what):
    assert got.dtype == want.dtype, what
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, f"{what}: {bad.size} mismatches at {bad[:4]}: got {got[bad[:4]]}, want {want[bad[:4]]}"


def _finite_for(x, fmt, ovf):
    """x without NaN (fixed point has none), and without inf under the wrap rules (rejected)."""
    keep = ~np.isnan(x)
    if ovf in (Overflow.WRAP, Overflow.WRAP_SIGN_MAGNITUDE):
        keep &= ~np.isinf(x)
    return x[keep]


def _check_deterministic(fmt, x):
    for mode in MODES:
        for ovf in _rules(fmt):
            P = kernel_params(fmt, mode, ovf, 0, False)
            want, nan, inf = _oracle(x, P)
            assert nan == np.isnan(x).sum()
            with pytest.raises(ValueError, match=f"{nan} NaN value"):
                encode(x, fmt, mode, ovf)
            if inf:
                with pytest.raises(ValueError, match=f"{inf} infinite value"):
                    encode(x[~np.isnan(x)], fmt, mode, ovf)
            xs = _finite_for(x, fmt, ovf)
            want, _, _ = _oracle(xs, P)
            _same(encode(xs, fmt, mode, ovf), want.astype(code_dtype(fmt)), f"{fmt.name} {mode.value} {ovf.value}")


# -- float64 -> fixed, deterministic ------------------------------------------------------------------

@pytest.mark.parametrize("name", SMALL + ["fx<8,1000>", "fx<6,-1000>"])
def test_f64_deterministic_equals_general_kernel(name):
    """Every deterministic mode and overflow rule; NaN and (wrap) inf raise with their counts."""
    fmt = emul.format(name)
    assert _plan(fmt, "nearest_even", None, None, "add", np.dtype(np.float64), True)[0] == "fixed64"
    rng = np.random.default_rng(abs(hash(name)) % 2**32 + 3)
    _check_deterministic(fmt, _edges(fmt, np.float64, rng))


def test_domains():
    f64, f32, f16 = np.dtype(np.float64), np.dtype(np.float32), np.dtype(np.float16)
    route = lambda name, dt, mode="nearest_even": _plan(emul.format(name), mode, None, None, "add", dt, True)[0]
    assert route("fx<8,4>", f32, "stochastic") == "fixed"
    assert route("fx<63,4>", f64) == route("uint63", f64) == route("fx<40,4>", f32) == "fixed64"
    assert route("fx<40,4>", f16) == route("fx<8,1022>", f64) == "fixed64"
    assert route("int64", f64) == route("uint64", f32) == route("fx<8,1023>", f64) == "general"
    assert route("fx<8,4>", np.dtype(np.int16)) == "fixed" and route("e4m3fn", np.dtype(np.uint8)) == "f32"
    assert route("e4m3fn", np.dtype(np.int32)) == "f64"
    for dt in (np.int32, np.uint32, np.int64, np.uint64):  # integers read as they are
        assert route("fx<8,4>", np.dtype(dt)) == route("fx<63,-63>", np.dtype(dt)) == "fixedint"
    assert route("fx<8,64>", np.dtype(np.int64)) == route("int64", np.dtype(np.uint64)) == "general"
    assert route("fx<8,64>", np.dtype(np.int32)) == "fixed64"
    # quantize (values): the same kernels, then fixed_values, where every nonzero value is normal
    qroute = lambda name, dt: _plan(emul.format(name), "nearest_even", None, None, "add", np.dtype(dt), False)[0]
    assert qroute("fx<8,4>", f64) == qroute("fx<8,1022>", f32) == qroute("fx<40,4>", f16) == "fixed64"
    assert qroute("fx<8,4>", f32) == qroute("fx<8,4>", f16) == qroute("fx<8,4>", np.int16) == "fixed"
    assert qroute("fx<8,4>", np.int64) == "fixedint"
    assert qroute("fx<8,1023>", f64) == qroute("fx<10,127>", f32) == "general"  # subnormal values


# -- stochastic rounding ------------------------------------------------------------------------------

def _sr_words(x, fmt, r, rng, k=12):
    """k words per input (k x n): both sides of every candidate boundary of each input (see the
    module docstring), 0, 2**r - 1 and random words."""
    with np.errstate(invalid="ignore", over="ignore"):
        a = np.abs(x.astype(np.float64))
    ok = np.isfinite(a)
    with np.errstate(over="ignore", invalid="ignore"):  # far beyond the range: f = 0 there (exact below)
        scaled = np.ldexp(np.where(ok, a, 0.0), fmt.frac)
        f = np.where(np.isfinite(scaled), scaled - np.floor(scaled), 0.0)
    ft = np.ldexp(f, r)
    t = np.floor(ft).astype(np.int64)
    st = (ft != np.floor(ft)).astype(np.int64)
    top = (1 << r) - 1
    cands = [t, t + st, (1 << r) - t, (1 << r) - t - st]
    cols = [c + d for c in cands for d in (0, -1)] + [np.zeros_like(t), np.full_like(t, top)]
    cols += [rng.integers(0, top + 1, t.size, dtype=np.int64) for _ in range(max(0, k - len(cols)))]
    return np.clip(np.stack(cols[:k]), 0, top).astype(np.uint32)


def _check_sr_words(fmt, x, rules, bits_list, rng):
    for i, r in enumerate(bits_list):
        for method in ("add", "compare"):
            ovf = rules[(i + (method == "add")) % len(rules)]
            xs = _finite_for(x, fmt, ovf)
            words = _sr_words(xs, fmt, r, rng)
            xx = np.tile(xs, words.shape[0])
            u = words.reshape(-1)
            P = kernel_params(fmt, Rounding.STOCHASTIC, ovf, r, method == "compare")
            want, _, _ = _oracle(xx, P, u)
            got = encode(xx, fmt, "stochastic", ovf, random_bits=u, sr_bits=r, sr_method=method)
            _same(got, want.astype(code_dtype(fmt)), f"{x.dtype} {fmt.name} SR {method} r={r} {ovf.value}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sr_random_bits_at_decision_boundaries(dtype):
    """random_bits=: words on both sides of each edge input's boundary, every overflow rule."""
    rng = np.random.default_rng(17)
    for name in ["fx<8,4>", "uint8", "int1", "fx<4,-3>"]:
        fmt = emul.format(name)
        x = _edges(fmt, dtype, rng)
        _check_sr_words(fmt, x, _rules(fmt), [1, 2, 8, 24, 31, 32], rng)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sr_seeded_equals_general_kernel(dtype):
    """seed=/key=: the in-kernel threefry words equal emul.random.bits', at sizes across the span
    length (tails), for every overflow rule, and key= with a 2-d shape."""
    rng = np.random.default_rng(29)
    fmt = emul.format("fx<8,4>")
    edges = _edges(fmt, dtype, rng)
    big = (rng.standard_normal(FX.CHUNK + 77) * 8).astype(dtype)
    for j, x in enumerate([edges, big[:1], big[:65], big]):
        for i, (r, method) in enumerate([(1, "add"), (8, "compare"), (32, "add")]):
            ovf = RULES[(i + j) % len(RULES)]
            xs = _finite_for(x, fmt, ovf)
            P = kernel_params(fmt, Rounding.STOCHASTIC, ovf, r, method == "compare")
            seed = 100 * j + r
            k = emul.random.key(seed)
            want = _oracle(xs, P, _seeded_words(k, xs.size, r))[0].astype(np.uint8)
            got = encode(xs, fmt, "stochastic", ovf, seed=seed, sr_bits=r, sr_method=method)
            _same(got, want, f"{dtype.__name__} n={xs.size} r={r} {method} {ovf.value}")
            m = xs.size // 2 * 2
            got = encode(xs[:m].reshape(2, -1), fmt, "stochastic", ovf, key=k, sr_bits=r, sr_method=method)
            _same(got.reshape(-1), want[:m], "key=")


def test_sr_nan_and_inf_raise():
    for dt in (np.float32, np.float64):
        x = np.array([1.0, np.nan, -np.nan, np.inf, 2.5], dt)
        for kw in ({"seed": 3}, {"random_bits": np.zeros(5, np.uint32)}):
            with pytest.raises(ValueError, match="2 NaN value"):
                encode(x, "fx<8,4>", "stochastic", sr_bits=8, **kw)
            with pytest.raises(ValueError, match="1 infinite value"):
                encode(x[[0, 3]], "fx<8,4>", "stochastic", "wrap", sr_bits=8, **{k: (v[:2] if k == "random_bits" else v)
                                                                                   for k, v in kw.items()})
        got = encode(x[[0, 3, 4]], "fx<8,4>", "stochastic", sr_bits=8, seed=3)
        assert got[1] == 0x7F


# -- integer inputs ---------------------------------------------------------------------------------

INT_DTYPES = [np.int8, np.int16, np.int32, np.uint8, np.uint16, np.uint32]


def _int_inputs(dt, rng):
    info = np.iinfo(dt)
    x = rng.integers(info.min, info.max, 2000, endpoint=True, dtype=np.int64)
    near = np.r_[info.min:info.min + 40, info.max - 40:info.max + 1, -300:300]
    return np.r_[x, near[(near >= info.min) & (near <= info.max)]].astype(dt)


def _check_ints(dt, formats):
    """Integer arrays take the float32 (<= 16 bits) or float64 kernels, exactly; their codes equal
    the general kernel's (deterministic modes, SR by words and seeded); quantize (float64 values)
    equals quantize of the same values as float64."""
    rng = np.random.default_rng(np.dtype(dt).itemsize * 7 + (np.dtype(dt).kind == "u"))
    x = _int_inputs(dt, rng)
    for name, modes in formats:
        fmt = emul.format(name)
        fixed = isinstance(fmt, emul.FixedFormat)
        assert _plan(fmt, modes[0], None, None, "add", np.dtype(dt), True)[0] != "general"
        for mode in modes:
            for ovf in ([Overflow.SATURATE, Overflow.WRAP] if fixed else [Overflow.IEEE]):
                want = _oracle(x, kernel_params(fmt, Rounding(mode), ovf, 0, False))[0]
                _same(encode(x, fmt, mode, ovf), want.astype(code_dtype(fmt)), f"{dt.__name__} {name} {mode} {ovf}")
            if not fixed:
                q, qw = quantize(x, fmt, mode), quantize(x.astype(np.float64), fmt, mode)
                _same(q.view(np.uint64), qw.view(np.uint64), f"quantize {dt.__name__} {name} {mode}")
        P = kernel_params(fmt, Rounding.STOCHASTIC, Overflow.SATURATE if fixed else Overflow.IEEE, 8, False)
        u = rng.integers(0, 256, x.size).astype(np.uint32)
        _same(encode(x, fmt, "stochastic", random_bits=u, sr_bits=8), _oracle(x, P, u)[0].astype(code_dtype(fmt)),
              f"{dt.__name__} {name} SR")
        want = _oracle(x, P, _seeded_words(emul.random.key(5), x.size, 8))[0].astype(code_dtype(fmt))
        _same(encode(x, fmt, "stochastic", seed=5, sr_bits=8), want, f"{dt.__name__} {name} SR seeded")
    assert encode(x[:0].reshape(0, 2), "fx<8,4>").shape == (0, 2)
    assert encode(x[0], "fx<8,4>") == encode(int(x[0]), "fx<8,4>")


@pytest.mark.parametrize("dt", [np.int8, np.int32])
def test_integer_inputs_equal_general_kernel(dt):
    """int8 (float32 kernels) and int32 (float64 kernels) into fx<8,4> and e4m3fn."""
    _check_ints(dt, [("fx<8,4>", ["nearest_even", "down"]), ("e4m3fn", ["nearest_even", "up"])])


def test_integer_inputs_without_fast_route():
    """A format outside every fast route (int64 codes): narrow integers are widened to int64 for
    the general kernel."""
    x = np.array([-128, -1, 0, 5, 127], np.int8)
    assert _plan(emul.format("int64"), "nearest_even", None, None, "add", x.dtype, True)[0] == "general"
    _same(encode(x, "int64"), x.astype(np.int64).view(np.uint64), "int64 general")


def _wide_int_inputs(dt, fmt, rng):
    """int64/uint64 (or narrower) inputs: both sides of every power of two (values beyond 2**53,
    where float64 would round), the dtype's ends, multiples of the rounding step 2**-frac and its
    half (ties) ±1, the format's range ends ±3 in input units, random integers of every size."""
    info = np.iinfo(dt)
    s, L = max(-fmt.frac, 0), max(fmt.frac, 0)
    vals = [int(info.min), int(info.max)]
    vals += [sg * (1 << p) + d for p in range(64) for sg in (1, -1) for d in (-1, 0, 1)]
    vals += [m * (1 << s) + h + d for m in range(-24, 25) for h in {0, (1 << s) >> 1} for d in (-1, 0, 1)]
    vals += [(v >> L) + d for v in (fmt.max_raw, fmt.min_raw) for d in range(-3, 4)]
    vals += [(v << s) + d for v in (fmt.max_raw, fmt.min_raw) for d in range(-3, 4)]
    sizes = rng.integers(0, 64, 600)
    vals += [int(v) for v in rng.integers(0, 2**62, 600, dtype=np.int64) >> (62 - sizes).clip(0)]
    vals += [-v for v in vals[-300:]]
    return np.array(sorted({v for v in vals if info.min <= v <= info.max}), dtype=dt)


def _oracle_int(x, P, u=None):
    """(codes,) of the general kernel, which reads int64/uint64 arrays exactly (no float64)."""
    out = np.empty(x.size, np.uint64)
    kind = K.IN_INT64 if x.dtype.kind == "i" else K.IN_UINT64
    K.round_serial(_ro(np.ascontiguousarray(x).view(np.uint64)), kind, np.zeros(1, np.uint32) if u is None else u, P, out, False)
    return (out,)


def _check_wide_ints(dt, name, modes, rules, rng):
    """codes of the integer-input kernels (fast_fixed.code_of_int) against the general kernel, which
    reads int64/uint64 exactly; SR with words and seeded."""
    fmt = emul.format(name)
    x = _wide_int_inputs(dt, fmt, rng)
    assert _plan(fmt, "nearest_even", None, None, "add", x.dtype, True)[0] == "fixedint"
    wide = x.astype(np.uint64 if np.dtype(dt).kind == "u" else np.int64)
    _oracle = _oracle_int
    cd = code_dtype(fmt)
    for mode in modes:
        for i, ovf in enumerate(r for r in rules if fmt.signed or r != Overflow.WRAP_SIGN_MAGNITUDE):
            if mode != Rounding.STOCHASTIC:
                want = _oracle(wide, kernel_params(fmt, mode, ovf, 0, False))[0]
                _same(encode(x, fmt, mode, ovf), want.astype(cd), f"{dt.__name__} {name} {mode.value} {ovf.value}")
                continue
            r, method = [(1, "add"), (8, "compare"), (32, "add"), (5, "compare"), (13, "add")][i]
            P = kernel_params(fmt, mode, ovf, r, method == "compare")
            u = rng.integers(0, 1 << r, x.size, dtype=np.int64).astype(np.uint32)
            got = encode(x, fmt, mode, ovf, random_bits=u, sr_bits=r, sr_method=method)
            _same(got, _oracle(wide, P, u)[0].astype(cd), f"{dt.__name__} {name} SR {method} r={r} {ovf.value}")
            want = _oracle(wide, P, _seeded_words(emul.random.key(r), x.size, r))[0].astype(cd)
            got = encode(x, fmt, mode, ovf, seed=r, sr_bits=r, sr_method=method)
            _same(got, want, f"{dt.__name__} {name} SR seeded r={r} {ovf.value}")


@pytest.mark.parametrize("dt", [np.int64, pytest.param(np.uint64, marks=pytest.mark.slow)])
def test_int64_inputs_equal_general_kernel(dt):
    """int64/uint64 arrays (beyond 2**53: not exact in float64) into fx<8,4> (exact, shifted left)
    and fx<6,-3> (rounded at 2**3), every mode and overflow rule, against the general kernel."""
    rng = np.random.default_rng(np.dtype(dt).kind == "u")
    for name in ("fx<8,4>", "fx<6,-3>"):
        _check_wide_ints(dt, name, ALL_MODES, RULES, rng)


@given(st.data())
@settings(max_examples=25, deadline=None)
def test_int64_inputs_against_reference(data):
    """int64/uint64 arrays into fixed formats of at most 8 bits (uint8 codes: one compilation per
    kernel), every mode incl. SR by words: 24 inputs in one call, each against reference/."""
    _int_reference(data, 8)


@pytest.mark.slow
@given(st.data())
@settings(max_examples=300, deadline=None)
def test_int64_inputs_against_reference_wide(data):
    _int_reference(data, 63)


def _int_reference(data, max_bits):
    from reference import encode as ref_encode

    signed = data.draw(st.booleans())
    bits = data.draw(st.integers(2 if signed else 1, max_bits))
    fmt = emul.FixedFormat(bits, data.draw(st.integers(-63, 63)), signed=signed)
    mode = data.draw(st.sampled_from(ALL_MODES))
    ovf = data.draw(st.sampled_from(_rules(fmt)))
    dt = np.dtype(data.draw(st.sampled_from(["int64", "uint64"])))
    info = np.iinfo(dt)
    ints = st.one_of(st.integers(int(info.min), int(info.max)), st.integers(-(1 << 20), 1 << 20).map(
        lambda v: max(int(info.min), min(int(info.max), v << max(-fmt.frac, 0)))), st.sampled_from(
        [int(info.min), int(info.max), 0, 1]))
    x = np.array(data.draw(st.lists(ints, min_size=24, max_size=24)), dt)
    r = data.draw(st.integers(1, 32))
    method = data.draw(st.sampled_from(["add", "compare"]))
    u = np.array(data.draw(st.lists(st.integers(0, 2**r - 1), min_size=x.size, max_size=x.size)), np.uint32)
    sr = mode == Rounding.STOCHASTIC
    got = encode(x, fmt, mode, ovf, **(dict(random_bits=u, sr_bits=r, sr_method=method) if sr else {}))
    for i, v in enumerate(x):
        kw = dict(u=int(u[i]), sr_bits=r, sr_method=method) if sr else {}
        assert int(got[i]) == ref_encode(int(v), fmt, mode.value, ovf.value, **kw), (fmt, int(v), mode, ovf)


def _check_ints_to_float(dt, names, modes, rng):
    """int64/uint64 into float formats (fast_f64 after fast_f64.int_to_odd) against the general
    kernel, codes and values; SR by words at sr_bits 8 and the widest the route takes."""
    fmt_x = {}
    for name in names:
        fmt = emul.format(name)
        x = fmt_x.setdefault(0, _wide_int_inputs(dt, emul.format("fx<8,-11>"), rng))
        x = np.r_[x, _wide_int_inputs(dt, emul.format(f"fx<8,{-(63 - fmt.man_bits)}>"), rng)]
        wide = x.astype(np.uint64 if np.dtype(dt).kind == "u" else np.int64)
        for mode in modes:
            ovf = Overflow.SATURATE if mode == Rounding.DOWN else Overflow.IEEE
            sr = mode == Rounding.STOCHASTIC
            for r in ([8, min(51 - fmt.man_bits, 32)] if sr else [0]):
                assert _plan(fmt, mode, ovf, r or None, "add", x.dtype, True)[0] == "f64"
                P = kernel_params(fmt, mode, ovf, r, False)
                u = rng.integers(0, 1 << r, x.size, dtype=np.int64).astype(np.uint32) if sr else None
                kw = dict(random_bits=u, sr_bits=r) if sr else {}
                want = _oracle_int(wide, P, u)[0]
                _same(encode(x, fmt, mode, ovf, **kw), want.astype(code_dtype(fmt)), f"{dt.__name__} {name} {mode.value} r={r}")
                vals = emul.decode(want, fmt)
                _same(quantize(x, fmt, mode, ovf, **kw).view(np.uint64), vals.view(np.uint64), f"quantize {name}")
    assert _plan(emul.format("fp32"), "stochastic", None, 29, "add", np.dtype(dt), True)[0] == "general"
    assert _plan(emul.format("e11m51"), "nearest_even", None, None, "add", np.dtype(dt), True)[0] == "general"


@pytest.mark.parametrize("dt", [np.int64, pytest.param(np.uint64, marks=pytest.mark.slow)])
def test_int64_into_float_formats(dt):
    """Beyond 2**53 (ties and near-ties at every precision): rounded to odd at 53 bits, then once
    to e4m3fn, the same codes and values as the general kernel."""
    _check_ints_to_float(dt, ["e4m3fn"], ALL_MODES, np.random.default_rng(8))


@pytest.mark.slow
@pytest.mark.parametrize("dt", [np.int64, np.uint64])
def test_int64_into_float_formats_sweep(dt):
    _check_ints_to_float(dt, ["bf16", "fp16", "e5m2", "fp32", "e11m30"], ALL_MODES, np.random.default_rng(9))
    _check_ints_to_float(dt, ["e11m50"], MODES, np.random.default_rng(10))  # SR: 50 + 1 bits at most


@pytest.mark.slow
@pytest.mark.parametrize("dt", [np.int32, np.uint32, np.int64, np.uint64])
def test_wide_integer_inputs_sweep(dt):
    rng = np.random.default_rng(np.dtype(dt).itemsize)
    for name in ("fx<8,4>", "uint8", "fx<4,-3>", "int1", "fx<16,8>", "fx<63,0>", "ufx<63,3>", "fx<63,-10>",
                 "fx<8,-63>", "fx<8,63>", "fx<40,20>", "uint63", "fx<12,-1>"):
        _check_wide_ints(dt, name, ALL_MODES, RULES, rng)


# -- quantize (values) ------------------------------------------------------------------------------

def _oracle_values(x, P, u, dtype, fmt):
    """The general kernel's values: its codes (float64 / int64 / uint64 in: the specialisations
    other tests compile too), decoded (float32 narrowed from the bits)."""
    if x.dtype.kind == "f":
        codes = _oracle(x, P, u)[0]
    else:
        codes = _oracle_int(x.astype(np.uint64 if x.dtype.kind == "u" else np.int64), P, u)[0]
    out = emul.decode(codes, fmt)
    return exact_float32(out) if dtype == np.float32 else out


def _check_values(dt, name, modes, rng):
    fmt = emul.format(name)
    if np.dtype(dt).kind == "f":
        with np.errstate(over="ignore", invalid="ignore"):
            x = _edges(fmt, np.float64, rng).astype(dt)
        x = x[np.isfinite(x)]
    else:
        x = _wide_int_inputs(dt, fmt, rng)
    assert _plan(fmt, modes[0], None, None, "add", x.dtype, False)[0] != "general"
    rules = _rules(fmt)
    for i, mode in enumerate(modes):
        ovf = rules[i % len(rules)]
        kw, u = {}, None
        if mode == Rounding.STOCHASTIC:
            u = rng.integers(0, 256, x.size).astype(np.uint32)
            kw = dict(random_bits=u, sr_bits=8)
        got = quantize(x, fmt, mode, ovf, **kw)
        want = _oracle_values(x, kernel_params(fmt, mode, ovf, 8 if u is not None else 0, False), u, got.dtype, fmt)
        assert got.dtype == want.dtype
        bits = np.uint32 if got.dtype == np.float32 else np.uint64
        _same(got.view(bits), want.view(bits), f"quantize {x.dtype} {name} {mode.value} {ovf.value}")


@pytest.mark.parametrize("dt", [np.float32, np.float64, np.int64])
def test_quantize_fixed_equals_general_kernel(dt):
    """quantize (values) to fx<8,4> from float32 (float32 values out), float64 and int64: the fast
    kernels' codes, then their values, equal the general kernel bit for bit in every mode."""
    _check_values(dt, "fx<8,4>", ALL_MODES, np.random.default_rng(5))


@pytest.mark.slow
@pytest.mark.parametrize("dt", [np.float16, np.float32, np.float64, np.int8, np.int32, np.int64, np.uint64])
def test_quantize_fixed_sweep(dt):
    rng = np.random.default_rng(6)
    for name in ("ufx<6,3>", "fx<4,-3>", "fx<16,8>", "fx<24,20>", "fx<40,20>", "fx<53,0>", "fx<10,126>",
                 "fx<8,1022>"):
        if np.dtype(dt).kind in "iu" and emul.format(name).frac > 63:
            continue
        _check_values(dt, name, ALL_MODES, rng)


@pytest.mark.slow
@pytest.mark.parametrize("dt", INT_DTYPES)
def test_integer_inputs_sweep(dt):
    _check_ints(dt, [("fx<8,4>", ["nearest_even", "down"]), ("int8", ["toward_zero"]), ("fx<16,8>", ["up"]),
                     ("e4m3fn", ["nearest_even", "up"]), ("fp16", ["nearest_even"]), ("bf16", ["toward_zero"])])


# -- slow sweeps -------------------------------------------------------------------------------------

WIDE = ["fx<16,8>", "ufx<12,3>", "fx<31,0>", "ufx<31,5>", "fx<20,30>", "fx<32,16>", "fx<40,20>",
        "uint32", "fx<53,0>", "fx<63,0>", "ufx<63,3>", "fx<63,-10>", "ufx<60,1022>", "fx<10,126>", "fx<6,-140>"]


@pytest.mark.slow  # compiles every output dtype of the float64 kernels
@pytest.mark.parametrize("name", WIDE)
def test_f64_wide_formats(name):
    fmt = emul.format(name)
    rng = np.random.default_rng(abs(hash(name)) % 2**32 + 9)
    x = _edges(fmt, np.float64, rng)
    _check_deterministic(fmt, x)
    _check_sr_words(fmt, x, _rules(fmt), [1, 8, 32], rng)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in WIDE if emul.format(n).bits <= 31] + SMALL)
def test_f32_sr_wide_formats(name):
    fmt = emul.format(name)
    rng = np.random.default_rng(abs(hash(name)) % 2**32 + 13)
    _check_sr_words(fmt, _edges(fmt, np.float32, rng), _rules(fmt), [1, 7, 8, 23, 24, 31, 32], rng)


def test_results_do_not_depend_on_thread_count(monkeypatch):
    """Slices on 1 and 2 threads (each told its first element's index) give the bits of one call."""
    import sys

    Q = sys.modules["emul.quantize"]
    rng = np.random.default_rng(41)
    n = 2 * Q.SLICE_ALIGN + 91  # two slices on two threads, the second starting at 2**17
    x64 = rng.standard_normal(n) * 20
    x32 = x64.astype(np.float32)
    xi = (x64 * 100).astype(np.int32)
    calls = [lambda: encode(x32, "fx<8,4>", "stochastic", seed=4, sr_bits=8),
             lambda: encode(x64, "fx<8,4>", "down", "wrap"),
             lambda: encode(x64, "fx<16,8>", "stochastic", "wrap_sign_magnitude", seed=5, sr_bits=13),
             lambda: encode(x64, "fx<8,4>", "stochastic", random_bits=xi.astype(np.uint32) & np.uint32(255), sr_bits=8),
             lambda: encode(xi, "fx<8,4>"), lambda: encode(xi.astype(np.int16), "e4m3fn")]
    serial = [c() for c in calls]
    monkeypatch.setattr(Q, "FAST_PARALLEL_MIN", 0)
    monkeypatch.setattr(Q, "_threads_pay", lambda: True)
    before = numba.get_num_threads()
    try:
        for threads in sorted({1, min(2, numba.config.NUMBA_NUM_THREADS)}):
            numba.set_num_threads(threads)
            for c, want in zip(calls, serial):
                _same(c(), want, f"{threads} threads")
    finally:
        numba.set_num_threads(before)


# -- sqrt into formats of man_bits <= 23 without the residual (fast_arith.sqrt_narrow_k) -------------

def _sqrt_hard_operands(man_bits, rng):
    """float32 operands whose roots lie on, or as close as float32 allows to, the points where
    rounding to man_bits + 1 bits changes (values and midpoints: M = Mi * 2**m, Mi of man_bits + 2
    bits), at both exponent parities: M**2 itself where it is a float32, a = Mi**2 - d (|d| <= 8)
    for the Mi = j * 2**t ± 1 that make it one (Mi**2 - 1 divisible by a large power of 2: the
    roots closest to M), their float32 neighbours, and random float32 patterns (subnormals too)."""
    p2 = man_bits + 2
    ints = []
    for t in range(1, p2):
        for j in range(1, 64):
            for mi in (j * 2**t - 1, j * 2**t + 1):
                if mi.bit_length() != p2:
                    continue
                for d in range(-8, 9):
                    v = mi * mi - d
                    tz = (v & -v).bit_length() - 1
                    if v > 0 and v >> tz < 2**24:
                        ints.append((v >> tz, tz))
    mi = rng.integers(1 << (p2 - 1), 1 << p2, 2000, dtype=np.int64)
    ints += [(int(v), 0) for v in mi * mi if v < 2**24]
    A = np.array([a for a, _ in ints], np.float64)
    e = np.array([z for _, z in ints], np.int64)
    scale = 2 * rng.integers(-40, 30, A.size) - 2 * p2  # even: the root's grid stays M's
    a = np.ldexp(A, e + scale).astype(np.float32).view(np.uint32).astype(np.int64)
    near = (a[:, None] + np.arange(-2, 3)).reshape(-1)
    rand = rng.integers(0, 0x7F800000, 20000, dtype=np.int64)
    return np.r_[near, rand, 0, 1, 0x7F7FFFFF].astype(np.uint32).view(np.float32)


def test_sqrt_narrow_equals_general_kernel():
    """emul.sqrt of float32 operands into bf16, fp16, e4m3fn, e5m2 and fp32 (man_bits 23: the
    proof's limit), every deterministic mode, both overflow rules: the no-residual kernel equals
    the general kernel bit for bit."""
    import emul.arith as A

    rng = np.random.default_rng(43)
    for name in ("bf16", "fp16", "e4m3fn", "e5m2", "fp32"):
        fmt = emul.format(name)
        x = _sqrt_hard_operands(fmt.man_bits, rng)
        for i, mode in enumerate(MODES):
            ovf = "saturate" if i % 2 else "ieee"
            got = A.sqrt(x, fmt, mode, ovf)
            A._FAST = False
            try:
                want = A.sqrt(x, fmt, mode, ovf)
            finally:
                A._FAST = True
            _same(got.view(np.uint32), want.view(np.uint32), f"sqrt {name} {mode.value} {ovf}")

"""emul.encode/quantize/decode equal the golden model (reference/) bit for bit."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import emul
import reference
from strategies import DETERMINISTIC, MODES, edge_values, float_formats, formats, overflow_rules


def _both(x, fmt, mode, overflow, u=None, r=None, method="add"):
    """(emul code or exception type, reference code or exception type)."""
    kwargs = dict(random_bits=u, sr_bits=r, sr_method=method) if mode == "stochastic" else {}
    try:
        got = int(emul.encode(x, fmt, mode, overflow, **kwargs))
    except ValueError:
        got = ValueError
    ref_kwargs = dict(u=u, sr_bits=r, sr_method=method) if mode == "stochastic" else {}
    xr = x.item() if isinstance(x, np.generic) else x
    try:
        want = reference.encode(xr, fmt, mode, overflow, **ref_kwargs)
    except ValueError:
        want = ValueError
    return got, want


@st.composite
def cases(draw, fmt_strategy=formats()):
    fmt = draw(fmt_strategy)
    x = draw(edge_values(fmt))
    mode = draw(st.sampled_from(MODES))
    overflow = draw(overflow_rules(fmt))
    r = draw(st.integers(1, 32))
    u = draw(st.integers(0, 2**r - 1))
    method = draw(st.sampled_from(["add", "compare"]))
    return fmt, x, mode, overflow, u, r, method


@given(cases())
def test_encode_float64_inputs(case):
    fmt, x, mode, overflow, u, r, method = case
    got, want = _both(np.float64(x), fmt, mode, overflow, u, r, method)
    assert got == want, (fmt, x, mode, overflow, u, r, method)


@given(cases(st.one_of(float_formats(max_exp=8, max_man=23), formats(max_fixed_bits=32))))
def test_encode_float32_inputs(case):
    fmt, x, mode, overflow, u, r, method = case
    with np.errstate(over="ignore"):
        x32 = np.float32(x)
    got, want = _both(x32, fmt, mode, overflow, u, r, method)
    assert got == want, (fmt, float(x32), mode, overflow, u, r, method)


@given(cases(st.one_of(float_formats(max_exp=5, max_man=10), formats(max_fixed_bits=16))))
def test_encode_float16_inputs(case):
    fmt, x, mode, overflow, u, r, method = case
    with np.errstate(over="ignore"):
        x16 = np.float16(x)
    got, want = _both(x16, fmt, mode, overflow, u, r, method)
    assert got == want, (fmt, float(x16), mode, overflow, u, r, method)


@given(formats(), st.integers(-(2**63), 2**64 - 1), st.sampled_from(DETERMINISTIC), st.data())
def test_encode_integer_inputs(fmt, k, mode, data):
    overflow = data.draw(overflow_rules(fmt))
    x = np.uint64(k) if k >= 2**63 else np.int64(k)
    got, want = _both(x, fmt, mode, overflow)
    assert got == want, (fmt, k, mode, overflow)


@given(formats(), st.data())
def test_decode(fmt, data):
    code = data.draw(st.integers(0, 2**fmt.bits - 1))
    try:
        want = reference.decode(code, fmt)
    except ValueError:
        with pytest.raises(ValueError):
            emul.decode(np.uint64(code), fmt)
        return
    if isinstance(fmt, emul.FixedFormat) and not fmt.fits_float64:
        with pytest.raises(ValueError):
            emul.decode(np.uint64(code), fmt)
        return
    got = float(emul.decode(np.uint64(code), fmt))
    if isinstance(want, float) and math.isnan(want):
        assert math.isnan(got)
    else:
        assert got == want and math.copysign(1, got) == math.copysign(1, float(want))


@given(cases(float_formats(max_exp=6, max_man=8)))
@settings(max_examples=100)
def test_quantize_values(case):
    fmt, x, mode, overflow, u, r, method = case
    kwargs = dict(random_bits=u, sr_bits=r, sr_method=method) if mode == "stochastic" else {}
    try:
        got = float(emul.quantize(x, fmt, mode, overflow, **kwargs))
    except ValueError:
        return
    want = reference.quantize(x, fmt, mode, overflow, **({} if mode != "stochastic" else
                                                          dict(u=u, sr_bits=r, sr_method=method)))
    if isinstance(want, float) and math.isnan(want):
        assert math.isnan(got)
    else:
        assert got == want and math.copysign(1, got) == math.copysign(1, float(want))


# -- the vectorised paths (emul/_kernels/fast_f64.py, fast_fixed.py), in blocks of mixed inputs -----

@given(st.data())
@settings(max_examples=100)
def test_fast_paths_in_blocks(data):
    """float64 -> float formats and float32 -> fixed point (<= 31 bits), 70 edge inputs in one call
    (short formula and per-element redo in the same blocks), every element against reference/."""
    fixed = data.draw(st.booleans())
    if fixed:
        signed = data.draw(st.booleans())
        bits = data.draw(st.integers(2 if signed else 1, 31))
        fmt = emul.FixedFormat(bits, data.draw(st.integers(-20, bits + 20)), signed=signed)
        mode = data.draw(st.sampled_from(DETERMINISTIC))
    else:
        fmt = data.draw(float_formats())
        mode = data.draw(st.sampled_from(MODES))
    overflow = data.draw(overflow_rules(fmt))
    xs = data.draw(st.lists(edge_values(fmt), min_size=70, max_size=70))
    with np.errstate(over="ignore", invalid="ignore"):
        x = np.array(xs, np.float32 if fixed else np.float64)
    x = x[~np.isnan(x)] if fixed or not fmt.has_nan else x
    if isinstance(fmt, emul.FixedFormat) and overflow in ("wrap", "wrap_sign_magnitude"):
        x = x[~np.isinf(x)]
    r = data.draw(st.integers(1, 32))
    u = np.array(data.draw(st.lists(st.integers(0, 2**r - 1), min_size=x.size, max_size=x.size)), np.uint32)
    kwargs = dict(random_bits=u, sr_bits=r) if mode == "stochastic" else {}
    got = emul.encode(x, fmt, mode, overflow, **kwargs)
    for i, v in enumerate(x):
        ref_kwargs = dict(u=int(u[i]), sr_bits=r) if mode == "stochastic" else {}
        assert int(got[i]) == reference.encode(v.item(), fmt, mode, overflow, **ref_kwargs), (fmt, v, mode, overflow)


@given(st.data())
@settings(max_examples=60)
def test_fixed_and_integer_fast_paths(data):
    """Fixed point from float32 (<= 31 bits) and float64 (<= 63 bits) in every mode, stochastic
    rounding included, and integer arrays (int8 ... uint32) into fixed or float formats: 40 inputs
    in one call (emul/_kernels/fast_fixed.py and the routes of integer inputs), each element
    against reference/."""
    src = data.draw(st.sampled_from(["f32", "f64", "int"]))
    if src == "int" and data.draw(st.booleans()):
        fmt = data.draw(float_formats())
    else:
        signed = data.draw(st.booleans())
        bits = data.draw(st.integers(2 if signed else 1, 31 if src == "f32" else 63))
        fmt = emul.FixedFormat(bits, data.draw(st.integers(-20, bits + 20)), signed=signed)
    mode = data.draw(st.sampled_from(MODES))
    overflow = data.draw(overflow_rules(fmt))
    if src == "int":
        dt = np.dtype(data.draw(st.sampled_from(["int8", "int16", "int32", "uint8", "uint16", "uint32"])))
        info = np.iinfo(dt)
        ints = st.one_of(st.integers(int(info.min), int(info.max)), st.sampled_from([int(info.min), int(info.max), 0]))
        x = np.array(data.draw(st.lists(ints, min_size=40, max_size=40)), dt)
    else:
        xs = data.draw(st.lists(edge_values(fmt), min_size=40, max_size=40))
        with np.errstate(over="ignore", invalid="ignore"):
            x = np.array(xs, np.float32 if src == "f32" else np.float64)
        x = x[~np.isnan(x)]
        if overflow in ("wrap", "wrap_sign_magnitude"):
            x = x[~np.isinf(x)]
    r = data.draw(st.integers(1, 32))
    method = data.draw(st.sampled_from(["add", "compare"]))
    u = np.array(data.draw(st.lists(st.integers(0, 2**r - 1), min_size=x.size, max_size=x.size)), np.uint32)
    kwargs = dict(random_bits=u, sr_bits=r, sr_method=method) if mode == "stochastic" else {}
    try:
        got = emul.encode(x, fmt, mode, overflow, **kwargs)
    except ValueError:  # a NaN result in a format without NaN: the reference raises on that element
        got = None
    raised = False
    for i, v in enumerate(x):
        ref_kwargs = dict(u=int(u[i]), sr_bits=r, sr_method=method) if mode == "stochastic" else {}
        try:
            want = reference.encode(v.item(), fmt, mode, overflow, **ref_kwargs)
        except ValueError:
            assert got is None, (fmt, v, mode, overflow)
            raised = True
            continue
        if got is not None:
            assert int(got[i]) == want, (fmt, dt if src == "int" else src, v, mode, overflow)
    assert raised == (got is None), (fmt, mode, overflow)

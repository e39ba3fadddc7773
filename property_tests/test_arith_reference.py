"""emul.add/sub/mul/div/fma/sqrt equal the golden model (reference/) bit for bit."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import emul
import emul.arith
import reference
from strategies import MODES, edge_values, float_formats, fixed_formats, overflow_rules

OPS = {"add": 2, "sub": 2, "mul": 2, "div": 2, "fma": 3, "sqrt": 1}


def same(got, want) -> bool:
    """emul's float result equals the reference's value (Fraction or float), -0.0 and NaN signs included."""
    if isinstance(want, float):
        if math.isnan(want):
            return math.isnan(got) and math.copysign(1, got) == math.copysign(1, want)
        return got == want and math.copysign(1, got) == math.copysign(1, want)
    return math.isfinite(got) and Fraction(got) == want


def run_both(op, args, fmt, mode, overflow, u=None, r=None, method="add"):
    kwargs = dict(random_bits=u, sr_bits=r, sr_method=method) if mode == "stochastic" else {}
    try:
        got = float(getattr(emul.arith, op)(*args, fmt, mode, overflow, **kwargs))
    except ValueError:
        got = ValueError
    ref_kwargs = dict(u=u, sr_bits=r, sr_method=method) if mode == "stochastic" else {}
    py_args = [a.item() if isinstance(a, np.generic) else a for a in args]
    try:
        want = getattr(reference, op)(*py_args, fmt, mode, overflow, **ref_kwargs)
    except ValueError:
        want = ValueError
    return got, want


def value_formats():
    return st.one_of(float_formats(), fixed_formats(max_bits=53))


@st.composite
def operands(draw, fmt, n):
    """Operands near the format's values and ties, plus scaled copies so that sums, products and
    quotients land near ties, subnormals and the overflow threshold too."""
    out = []
    for _ in range(n):
        kind = draw(st.sampled_from(["edge", "edge", "scaled", "small_int"]))
        if kind == "edge":
            x = draw(edge_values(fmt))
        elif kind == "scaled":
            v = draw(edge_values(fmt))
            try:
                x = math.ldexp(v, draw(st.integers(-60, 60)))
            except OverflowError:
                x = math.copysign(math.inf, v)
        else:
            x = float(draw(st.integers(-40, 40)))
        out.append(np.float64(x))
    return out


@st.composite
def cases(draw, op, fmt_strategy=value_formats()):
    fmt = draw(fmt_strategy)
    args = draw(operands(fmt, OPS[op]))
    mode = draw(st.sampled_from(MODES))
    overflow = draw(overflow_rules(fmt))
    r = draw(st.integers(1, 32))
    u = draw(st.integers(0, 2**r - 1))
    method = draw(st.sampled_from(["add", "compare"]))
    return fmt, args, mode, overflow, u, r, method


def _check(op, case):
    fmt, args, mode, overflow, u, r, method = case
    with np.errstate(all="ignore"):
        got, want = run_both(op, args, fmt, mode, overflow, u, r, method)
    if got is ValueError or want is ValueError:
        assert got is want, (op, fmt, [float(a) for a in args], mode, overflow, u, r, method, got, want)
    else:
        assert same(got, want), (op, fmt, [float(a) for a in args], mode, overflow, u, r, method, got, want)


@given(cases("add"))
def test_add(case):
    _check("add", case)


@given(cases("sub"))
def test_sub(case):
    _check("sub", case)


@given(cases("mul"))
def test_mul(case):
    _check("mul", case)


@given(cases("div"))
def test_div(case):
    _check("div", case)


@given(cases("fma"))
def test_fma(case):
    _check("fma", case)


@given(cases("sqrt"))
def test_sqrt(case):
    _check("sqrt", case)


@st.composite
def integer_cases(draw):
    """Integer operands of up to 64 bits (int64/uint64 inputs), exact in neither float64 nor a frame of 53 bits."""
    op = draw(st.sampled_from(sorted(OPS)))
    fmt = draw(value_formats())
    dtype = draw(st.sampled_from([np.int64, np.uint64]))
    lo, hi = (-(2**63), 2**63 - 1) if dtype == np.int64 else (0, 2**64 - 1)
    args = [dtype(draw(st.one_of(st.integers(lo, hi), st.integers(max(lo, -1000), 1000)))) for _ in range(OPS[op])]
    mode = draw(st.sampled_from(MODES))
    overflow = draw(overflow_rules(fmt))
    r = draw(st.integers(1, 32))
    u = draw(st.integers(0, 2**r - 1))
    return op, (fmt, args, mode, overflow, u, r, draw(st.sampled_from(["add", "compare"])))


@given(integer_cases())
def test_integer_inputs(case):
    op, case = case
    _check(op, case)


@given(st.sampled_from(sorted(OPS)), st.data())
def test_float32_inputs(op, data):
    fmt, args, mode, overflow, u, r, method = data.draw(cases(op, st.one_of(float_formats(max_exp=8, max_man=23),
                                                                            fixed_formats(max_bits=24))))
    with np.errstate(over="ignore"):
        args = [np.float32(a) for a in args]
    _check(op, (fmt, args, mode, overflow, u, r, method))


@given(st.sampled_from(sorted(OPS)), st.data())
def test_float16_inputs(op, data):
    """float16 operands (the vectorised kernels' bit-pattern route) into any float format."""
    fmt, args, mode, overflow, u, r, method = data.draw(cases(op, float_formats(max_exp=8, max_man=23)))
    with np.errstate(over="ignore"):
        args = [np.float16(a) for a in args]
    _check(op, (fmt, args, mode, overflow, u, r, method))


@given(st.sampled_from(sorted(OPS)), st.data())
def test_float16_array_inputs_elementwise(op, data):
    """Arrays of float16 operands: element i equals the golden model on operands i."""
    fmt = data.draw(float_formats(max_exp=6, max_man=12))
    n = data.draw(st.integers(0, 6))
    cols = [np.array([data.draw(edge_values(fmt)) for _ in range(n)], np.float64) for _ in range(OPS[op])]
    with np.errstate(over="ignore"):
        cols = [c.astype(np.float16) for c in cols]
    mode = data.draw(st.sampled_from([m for m in MODES if m != "stochastic"]))
    overflow = data.draw(overflow_rules(fmt))
    try:
        with np.errstate(all="ignore"):
            got = np.asarray(getattr(emul.arith, op)(*cols, fmt, mode, overflow), np.float64)
    except ValueError:
        got = None
    wants = []
    for i in range(n):
        try:
            wants.append(getattr(reference, op)(*[float(c[i]) for c in cols], fmt, mode, overflow))
        except ValueError:
            wants.append(ValueError)
    if got is None:
        assert ValueError in wants
        return
    assert got.shape == (n,)
    for i, want in enumerate(wants):
        assert same(float(got[i]), want), (op, fmt, [float(c[i]) for c in cols], mode, overflow, got[i], want)

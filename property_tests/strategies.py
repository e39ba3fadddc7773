"""Hypothesis strategies shared by the property tests: formats, modes, edge-weighted inputs."""

from __future__ import annotations

import math
import struct

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st

import emul
import reference

MODES = [m.value for m in emul.Rounding]
DETERMINISTIC = [m for m in MODES if m != "stochastic"]
FIXED_RULES = ["saturate", "saturate_zero", "saturate_symmetric", "wrap", "wrap_sign_magnitude"]


@st.composite
def float_formats(draw, max_exp=11, max_man=52):
    e = draw(st.integers(1, max_exp))
    m = draw(st.integers(0, max_man))
    specials = draw(st.sampled_from(["ieee", "fn", "fnuz", "none"]))
    subnormals = draw(st.booleans())
    bias = draw(st.one_of(st.none(), st.integers(-(2 ** min(e, 6)), 2 ** e + 2)))
    try:
        return emul.FloatFormat(e, m, bias=bias, subnormals=subnormals, specials=specials)
    except ValueError:
        assume(False)


@st.composite
def fixed_formats(draw, max_bits=64):
    signed = draw(st.booleans())
    bits = draw(st.integers(2 if signed else 1, max_bits))
    frac = draw(st.integers(-20, bits + 20))
    return emul.FixedFormat(bits, frac, signed=signed)


def formats(max_fixed_bits=64):
    return st.one_of(float_formats(), fixed_formats(max_fixed_bits))


def _f64(bits: int) -> float:
    return struct.unpack("<d", struct.pack("<Q", bits))[0]


def _next(x: float, n: int) -> float:
    """n float64 steps from x."""
    for _ in range(abs(n)):
        x = math.nextafter(x, math.inf if n > 0 else -math.inf)
    return x


@st.composite
def edge_values(draw, fmt):
    """A float64 near something that matters for fmt: a code value, a midpoint (tie), the
    largest value and one quantum beyond, subnormal boundaries, zeros, inf, NaN, or random bits."""
    kind = draw(st.sampled_from(["code", "tie", "tie", "max", "tiny", "special", "random", "random32"]))
    sign = draw(st.sampled_from([1.0, -1.0]))
    if kind == "random":
        return _f64(draw(st.integers(0, 2**64 - 1)))
    if kind == "random32":
        return float(np.uint32(draw(st.integers(0, 2**32 - 1))).view(np.float32))
    if kind == "special":
        return draw(st.sampled_from([0.0, -0.0, math.inf, -math.inf, math.nan, -math.nan]))
    nudge = draw(st.sampled_from([0, 0, 0, 1, -1, 2]))
    if isinstance(fmt, emul.FloatFormat):
        top = fmt.max_code_magnitude
        if kind == "max":
            lo, hi = fmt.max, fmt.max + 2.0 ** (fmt.emax - fmt.man_bits)
            v = draw(st.sampled_from([lo, (lo + hi) / 2, hi, 2 * hi]))
            return sign * _next(v, nudge)
        if kind == "tiny":
            v = draw(st.sampled_from([fmt.min_subnormal, fmt.min_subnormal / 2, fmt.min_normal,
                                      fmt.min_normal / 2, fmt.min_subnormal * 1.5, fmt.min_normal * 0.75]))
            return sign * _next(v, nudge)
        code = draw(st.integers(0, top - 1))
        try:
            lo = float(reference.decode(code, fmt))
            hi = float(reference.decode(code + 1, fmt))
        except ValueError:
            assume(False)
    else:
        lsb = fmt.lsb
        raw = draw(st.integers(fmt.min_raw - 3, fmt.max_raw + 3))
        if kind == "max":
            raw = draw(st.sampled_from([fmt.max_raw, fmt.min_raw, fmt.max_raw + 1, fmt.min_raw - 1]))
        if kind == "tiny":
            raw = draw(st.sampled_from([0, 1, -1]))
        lo, hi = raw * lsb, (raw + 1) * lsb
    v = lo if kind == "code" else (lo + hi) / 2
    return sign * _next(v, nudge) if isinstance(fmt, emul.FloatFormat) else _next(v, nudge)


def overflow_rules(fmt):
    if isinstance(fmt, emul.FloatFormat):
        return st.sampled_from(["ieee", "saturate"])
    return st.sampled_from(FIXED_RULES if fmt.signed else FIXED_RULES[:4])

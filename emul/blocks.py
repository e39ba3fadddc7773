"""Block-scaled formats: OCP MX v1.0 (MXFP8/6/4, MXINT8), NVFP4 and block floating point.

A block format stores k consecutive elements along ``axis`` as element codes sharing one scale
(``docs/blocks.md``). :class:`BlockFormat` names the element format, the scale
format and k; :func:`format` parses the presets ``mxfp8_e4m3 mxfp8_e5m2 mxfp6_e2m3 mxfp6_e3m2 mxfp4
mxint8 nvfp4`` and generic names ``"{element}/{scale}/{k}"`` (``k`` = ``axis`` for one block per
axis: classic block floating point).

Power-of-two (exponent-only, e8m0) scales, for a block with exact amax = max|x| and ``emax_elem``
the exponent of the element format's largest value:

- ``scale_rule="floor"`` (OCP): e = floor(log2 amax) - emax_elem; elements may saturate.
- ``"ceil"``: e = ceil(log2 amax) - emax_elem.
- ``"even"``: amax rounded to the element precision (ties away) first, then floor.
- ``"rceil"``: the least e with amax / 2**e <= element max (nothing saturates).

then e < emin_scale -> emin_scale; e > emax_scale -> NaN scale (``scale_overflow="nan"``) or
emax_scale (``"saturate"``). amax = 0 -> scale code 0 and zero elements (signs kept); a NaN or ±inf
in the block, or a NaN scale, -> the scale's NaN code and every element code the element format's
canonical positive NaN (0 where it has none). Elements x_i / 2**e are rounded once by ``rounding``,
saturating to ± element max.

Float scales (NVFP4's e4m3fn, or any FloatFormat): s_b = amax / (element max * s_t) rounded once to
the scale format (nearest_even, saturating), raised to ``scale_min``; elements x_i / (s_b * s_t)
rounded once, saturating; s_b = 0 gives zero elements. s_t is 1 unless the block format has
``tensor_scale=True`` (NVFP4): s_t = amax_tensor / (scale max * element max) rounded once to float32
(see :func:`tensor_scale`), or the ``tensor_scale=`` argument.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from fractions import Fraction

import numpy as np

from ._lazy import LazyModule
from ._threads import run_slices, single_thread_below
from .formats import ExpFormat, FixedFormat, FloatFormat, format as as_format
from .quantize import PARALLEL_MIN, code_dtype, decode as core_decode, encode as core_encode, exact_float64, sr_words
from .rounding import Rounding, as_rounding

KB = LazyModule("emul._kernels.blocks")

__all__ = ["BlockFormat", "format", "encode", "decode", "quantize", "tensor_scale", "dot", "matmul",
           "PRESETS", "SCALE_RULES"]

SCALE_RULES = ("floor", "ceil", "even", "rceil")
SCALE_OVERFLOW = ("nan", "saturate")
TAILS = ("partial", "error")
ARITHMETIC = ("exact", "float32", "float32_div", "float32_te")


def _element_emax(fmt) -> int:
    """floor(log2(max)) of an element format."""
    return math.floor(math.log2(fmt.max)) if fmt.max > 0 else 0


def _element_precision(fmt) -> int:
    """Bits after the leading one at the element format's largest value (``even`` rounds amax to it)."""
    if isinstance(fmt, FloatFormat):
        return fmt.man_bits
    return fmt.max_raw.bit_length() - 1


def _sig_exp(value: Fraction) -> tuple[int, int]:
    """(m, e) with value = m * 2**e, m odd (value > 0)."""
    n, d = value.numerator, value.denominator
    e = 0
    while n % 2 == 0:
        n //= 2
        e += 1
    while d % 2 == 0:
        d //= 2
        e -= 1
    assert d == 1
    return n, e


def _exact(v: float) -> Fraction:
    return Fraction(v)


@dataclasses.dataclass(frozen=True)
class BlockFormat:
    """``block`` consecutive elements (``None``: the whole axis) sharing one scale.

    ``element``: a FloatFormat or FixedFormat (or its name) with a positive max; ``scale``: an
    ExpFormat (power-of-two scale, e8m0) or a FloatFormat; ``tensor_scale``: a second, per-tensor
    float32 scale (NVFP4; float scales only). Every decoded value X * P (* s_t) must be a float64
    exactly, which bounds the formats' combined precision and range (ValueError otherwise).

    >>> format("mxfp4")
    BlockFormat('mxfp4')
    >>> BlockFormat("e4m3fn", "e8m0", 32) == format("mxfp8_e4m3")
    True
    """

    element: object
    scale: object
    block: int | None = 32
    tensor_scale: bool = False

    def __post_init__(self):
        el = as_format(self.element)
        sc = as_format(self.scale)
        object.__setattr__(self, "element", el)
        object.__setattr__(self, "scale", sc)
        if isinstance(el, ExpFormat):
            raise ValueError(f"element={el.name}: an unsigned exponent-only format cannot be a block element")
        if el.max <= 0:
            raise ValueError(f"element={el.name}: has no positive value to scale to")
        if isinstance(sc, FixedFormat):
            raise ValueError(f"scale={sc.name}: block scales are an ExpFormat (e8m0) or a FloatFormat")
        if self.block is not None and (isinstance(self.block, bool) or not isinstance(self.block, (int, np.integer))):
            raise TypeError(f"block={self.block!r}: must be an int >= 1 or None (the whole axis)")
        if self.block is not None:
            if self.block < 1:
                raise ValueError(f"block={self.block}: must be at least 1 (or None for the whole axis)")
            object.__setattr__(self, "block", int(self.block))
        if not isinstance(self.tensor_scale, bool):
            raise TypeError(f"tensor_scale={self.tensor_scale!r}: must be a bool")
        if self.tensor_scale and isinstance(sc, ExpFormat):
            raise ValueError("tensor_scale=True: only with a float scale format (NVFP4), not a power-of-two scale")
        if isinstance(el, FixedFormat) and not el.fits_float64:
            raise ValueError(f"element={el.name}: values must fit float64 exactly (bits <= 53)")
        # every decoded value X * P (* s_t) must be a normal float64 or zero, exactly
        p_el = _element_precision(el) + 1
        p_sc = 1 if isinstance(sc, ExpFormat) else sc.man_bits + 1
        p_t = 24 if self.tensor_scale else 0
        if p_el + p_sc + p_t > 53:
            raise ValueError(f"{el.name} elements times {sc.name} scales need {p_el + p_sc + p_t} bits of precision; "
                             "float64 carries 53")
        if isinstance(sc, FloatFormat) and p_sc + p_t > 64 or isinstance(sc, FloatFormat) and p_el + p_t > 64:
            raise ValueError("the scale significands do not fit the kernels' 64 bits")
        q_el = _quantum_exp(el)
        s_lo = sc.emin - (0 if isinstance(sc, ExpFormat) else (sc.man_bits if sc.subnormals else 0))
        lo = q_el + s_lo + (-149 if self.tensor_scale else 0)
        hi = _element_emax(el) + 1 + sc.emax + 1 + (128 if self.tensor_scale else 0)
        if lo < -1022 or hi > 1023:
            raise ValueError(f"{el.name} elements times {sc.name} scales range over 2**{lo} … 2**{hi}; "
                             "float64 normals hold 2**-1022 … 2**1023")

    @property
    def k(self) -> int | None:
        return self.block

    @property
    def power_of_two(self) -> bool:
        """Whether the scale is exponent-only (the scale rules apply)."""
        return isinstance(self.scale, ExpFormat)

    @property
    def emax_elem(self) -> int:
        """floor(log2) of the element format's largest value (e4m3fn 8, e2m1fn 2, fx<8,6> 0)."""
        return _element_emax(self.element)

    @property
    def name(self) -> str:
        for preset, fmt in PRESETS.items():
            if fmt == self:
                return preset
        block = "axis" if self.block is None else str(self.block)
        return f"{self.element.name}/{self.scale.name}/{block}" + ("/tensor" if self.tensor_scale else "")

    def __repr__(self):
        return f"BlockFormat({self.name!r})"


def _quantum_exp(fmt) -> int:
    """log2 of the smallest positive value's grid spacing of a float or fixed format."""
    if isinstance(fmt, FloatFormat):
        return fmt.emin - (fmt.man_bits if fmt.subnormals else 0)
    return -fmt.frac


PRESETS = {}
for _name, _args in {
    "mxfp8_e4m3": ("e4m3fn", "e8m0", 32),
    "mxfp8_e5m2": ("e5m2", "e8m0", 32),
    "mxfp6_e2m3": ("e2m3fn", "e8m0", 32),
    "mxfp6_e3m2": ("e3m2fn", "e8m0", 32),
    "mxfp4": ("e2m1fn", "e8m0", 32),
    "mxint8": ("fx<8,6>", "e8m0", 32),
    "nvfp4": ("e2m1fn", "e4m3fn", 16, True),
}.items():
    PRESETS[_name] = BlockFormat(*_args)

_GENERIC = re.compile(r"(.+)/(.+)/(\d+|axis)(/tensor)?")


def format(name) -> BlockFormat:  # noqa: A001 - mirrors emul.format
    """The block format called ``name`` (a BlockFormat passes through).

    Presets: ``mxfp8_e4m3 mxfp8_e5m2 mxfp6_e2m3 mxfp6_e3m2 mxfp4 mxint8`` (OCP MX: e8m0 scale,
    k = 32) and ``nvfp4`` (e2m1fn elements, e4m3fn scale, k = 16, a float32 tensor scale).
    Generic: ``"{element}/{scale}/{k}"`` with ``k`` an integer or ``axis`` (one block per axis),
    optionally followed by ``/tensor`` (a per-tensor float32 scale).

    >>> format("e4m3fn/e8m0/axis").block is None
    True
    """
    if isinstance(name, BlockFormat):
        return name
    if not isinstance(name, str):
        raise TypeError(f"format: expected a block format name or a BlockFormat, got {type(name).__name__}")
    text = name.strip().lower()
    if text in PRESETS:
        return PRESETS[text]
    if match := _GENERIC.fullmatch(text):
        el, sc, k, tensor = match.groups()
        return BlockFormat(el, sc, None if k == "axis" else int(k), tensor is not None)
    raise ValueError(f"block format {name!r}: unknown; expected a preset ({', '.join(PRESETS)}) "
                     "or '{element}/{scale}/{k|axis}[/tensor]'")


# -- helpers ---------------------------------------------------------------------------------------

def _choice(value, name, choices):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name}={value!r}: must be one of {', '.join(choices)}")
    return value


def _axis(axis, ndim, what="x"):
    if ndim == 0:
        raise ValueError(f"{what}: a 0-d array has no axis to block; pass at least one dimension")
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"axis={axis!r}: must be an int")
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis={axis}: out of range for an array with {ndim} dimension(s)")
    return int(axis) % ndim


def _blocks(L, bfmt, tail):
    """(k, number of blocks) along an axis of length L."""
    k = bfmt.block if bfmt.block is not None else max(L, 1)
    nb = -(-L // k)
    if tail == "error" and L % k:
        raise ValueError(f"tail='error': the axis length {L} is not a multiple of the block size {k}")
    return k, nb


def _input(x):
    """x as a float64/float32/float16 array read exactly (integers must be float64 values)."""
    a = np.asarray(x)
    if a.dtype.kind == "f":
        if a.dtype.itemsize not in (2, 4, 8):
            raise TypeError(f"x: dtype {a.dtype} is not supported; use float16, float32 or float64")
        return a.astype(a.dtype.newbyteorder("="), copy=False)
    if a.dtype.kind in "iub":
        b = a.astype(np.float64)
        if a.size and not np.array_equal(b.astype(np.int64 if a.dtype.kind != "u" else np.uint64), a):
            raise ValueError("x: integers beyond 2**53 are not float64 values; pass floats")
        return b
    raise TypeError(f"x: dtype {a.dtype} is not numeric (expected float16/32/64 or integers)")


def _rows(a, ax):
    """a with ``ax`` moved last, as a C-contiguous (R, L) array."""
    m = np.moveaxis(a, ax, -1)
    return np.ascontiguousarray(m).reshape(math.prod(m.shape[:-1]), m.shape[-1]), m.shape


def _elem_params(el, rounding, sr_bits, sr_method):
    from ._params import kernel_params, resolve

    fmt, mode, ovf, r, compare = resolve(el, rounding, "saturate", sr_bits, sr_method)
    return kernel_params(fmt, mode, ovf, r, compare), mode, r


def _nan_element_code(el) -> int:
    """The element format's canonical positive NaN code, or 0 where it has none."""
    if isinstance(el, FixedFormat) or not el.has_nan:
        return 0
    if el.specials == "ieee":
        return (((1 << el.exp_bits) - 1) << el.man_bits) | (1 << (el.man_bits - 1))
    if el.specials == "fn":
        return (1 << (el.bits - 1)) - 1
    return 1 << (el.bits - 1)  # fnuz


def _scale_nan_code(sc) -> int:
    if isinstance(sc, ExpFormat):
        return sc.nan_code
    if not sc.has_nan:
        return -1
    return _nan_element_code(sc)


@functools.lru_cache(maxsize=64)
def _decode_table(fmt):
    """(value of every code, invalid-code mask) of a format of at most 16 bits."""
    from .quantize import _invalid_codes

    codes = np.arange(1 << fmt.bits, dtype=np.uint64)
    bad = _invalid_codes(codes, fmt)
    vals = np.zeros(codes.size, np.float64)
    vals[~bad] = core_decode(codes[~bad], fmt)
    return vals, bad


def _decode(codes, fmt):
    """``emul.decode`` (the same values and errors); small arrays of formats of at most 16 bits by a
    table lookup, which spares the core's threaded kernel its start-up on a few codes."""
    a = np.asarray(codes)
    if fmt.bits > 16 or a.size >= PARALLEL_MIN or a.dtype.kind not in "iu" or \
            (a.size and (int(a.min()) < 0 or int(a.max()) >> fmt.bits)):
        return core_decode(codes, fmt)
    vals, bad = _decode_table(fmt)
    idx = a.astype(np.intp)
    if bad[idx].any():
        return core_decode(codes, fmt)  # its ValueError
    return vals[idx]


def _fp32_from_fraction(v: Fraction) -> float:
    # round v to 24 significant bits, nearest even, on float32's exponent range (subnormals kept)
    e = v.numerator.bit_length() - v.denominator.bit_length()
    if Fraction(2) ** e > v:
        e -= 1
    q = max(e, -126) - 23
    scaled = v / Fraction(2) ** q
    n = math.floor(scaled)
    rem = scaled - n
    if rem > Fraction(1, 2) or (rem == Fraction(1, 2) and n % 2):
        n += 1
    r = Fraction(n) * Fraction(2) ** q
    if r > Fraction(np.finfo(np.float32).max.item()):
        return float(np.finfo(np.float32).max)
    return float(r)


def tensor_scale(x, bfmt, arithmetic="exact") -> np.float32:
    """NVFP4's per-tensor scale s_t: amax over the finite values of x divided by (scale max *
    element max), rounded once to float32 (nearest even, at most float32's max, at least its
    smallest subnormal 2**-149); 1.0 when that amax is 0. With ``arithmetic="float32_te"``:
    TransformerEngine's s_t = fp32(1 / G), G = fp32(2688 / amax) (float32 x; G at most float32's max,
    1 where it is 0) — see :func:`encode`.

    >>> float(tensor_scale([2688.0, -1.0], "nvfp4"))
    1.0
    """
    bfmt = format(bfmt)
    if not bfmt.tensor_scale:
        raise ValueError(f"{bfmt.name}: has no tensor scale")
    if _choice(arithmetic, "arithmetic", ARITHMETIC) == "float32_te":
        return np.float32(1) / _te_global_encode_scale(_input(x), bfmt)
    a = exact_float64(_input(x))
    finite = np.abs(a[np.isfinite(a)])
    amax = Fraction(float(finite.max())) if finite.size else Fraction(0)
    if amax == 0:
        return np.float32(1.0)
    v = amax / (Fraction(bfmt.scale.max) * Fraction(bfmt.element.max))
    return np.float32(max(_fp32_from_fraction(v), 2.0 ** -149))


def _te_global_encode_scale(a, bfmt) -> np.float32:
    """TransformerEngine's global encode scale G = fp32(scale max * element max / amax) over the
    finite values of the float32 x, at most float32's max, 1 where it is 0."""
    if a.dtype != np.float32:
        raise TypeError("arithmetic='float32_te': x must be float32 (the peers' input)")
    finite = np.abs(a[np.isfinite(a)])
    amax = finite.max() if finite.size else np.float32(0)
    with np.errstate(all="ignore"):
        g = np.float32(np.float32(bfmt.scale.max) * np.float32(bfmt.element.max)) / np.float32(amax)
    g = np.float32(min(g, np.finfo(np.float32).max))
    return np.float32(1) if g == 0 else g


def _check_global_scale(g) -> np.float32:
    try:
        return np.float32(_check_tensor_scale(g))
    except ValueError:
        raise ValueError(f"global_scale={g!r}: must be a positive finite float32 value (TransformerEngine's G)") from None


def _check_tensor_scale(t):
    v = np.asarray(t)
    if v.shape != () or v.dtype.kind not in "fiu":
        raise ValueError(f"tensor_scale={t!r}: must be one positive finite float32 value")
    f = float(v)
    if not (math.isfinite(f) and f > 0 and float(np.float32(f)) == f):
        raise ValueError(f"tensor_scale={t!r}: must be a positive finite float32 value")
    return f


# -- encode / decode / quantize ------------------------------------------------------------------

def encode(x, bfmt, axis=-1, *, rounding="nearest_even", scale_rule=None, scale_overflow=None, tail="partial",
           tensor_scale=None, scale_min=None, arithmetic="exact", global_scale=None, seed=None, key=None,
           sr_bits=None, sr_method="add", random_bits=None):
    """Encode x into a block format: ``(scales, codes)``.

    Args:
      x: float16/32/64 values (or integers that are float64 values), at least 1-D.
      bfmt: a :class:`BlockFormat` or a name for :func:`format`.
      axis: the axis along which consecutive elements form blocks.
      rounding: the element rounding mode (every mode of :class:`emul.Rounding`); elements always
        saturate to ± element max.
      scale_rule: power-of-two scales: ``"floor"`` (default, OCP), ``"ceil"``, ``"even"``, ``"rceil"``.
      scale_overflow: power-of-two scales: ``"nan"`` (default) or ``"saturate"`` for e > emax_scale.
      tail: ``"partial"`` (a shorter last block takes its amax over the elements present) or
        ``"error"``.
      tensor_scale: float scales with a tensor scale: s_t (a positive float32 value); default
        :func:`tensor_scale` of x.
      scale_min: float scales: the least block scale (a value of the scale format; default 0;
        ``2**-6`` reproduces torchao's NVFP4).
      arithmetic: float scales: ``"exact"`` (every quotient rounded once), or the peers' float32
        arithmetic (x must be float32; every step rounds to nearest even): the scale
        s = e4m3(fp32(fp32(amax / elem_max) / s_t)), then elements rounded from
        fp32(x * fp32(1 / fp32(s * s_t))) (``"float32"``: TransformerEngine's reciprocal) or from
        fp32(x / fp32(s_t * s)) (``"float32_div"``: torchao); where fp32(s * s_t) is 0 the elements
        are zeros, as for s = 0. ``"float32_te"``: TransformerEngine's NVFP4 reference in full: from
        the tensor amax, G = fp32(2688 / amax) and s_t = fp32(1 / G) (:func:`tensor_scale` with the
        same ``arithmetic``), s = e4m3(fp32(fp32(amax_b / 6) * G)), elements as ``"float32"``.
      global_scale: with ``arithmetic="float32_te"`` only: TransformerEngine's G (a positive finite
        float32 value) instead of the one computed from x — what a part of a tensor (one block of an
        RTL vector) needs; s_t is then fp32(1 / G).
      seed, key, random_bits, sr_bits, sr_method: stochastic element rounding as in
        :func:`emul.quantize`; word i belongs to element i of x in C order.

    Returns:
      ``scales`` (x's shape with ``axis`` replaced by the number of blocks; the scale format's code
      dtype) and ``codes`` (x's shape; the element format's code dtype).

    >>> s, c = encode([0.0, 1.0, 3.0, 960.0], "mxfp8_e4m3")
    >>> s, c    # floor(log2 960) - 8 = 1: scale 2**1 (code 128); 960 / 2 = 480 saturates to 448
    (array([128], dtype=uint8), array([  0,  48,  60, 126], dtype=uint8))
    """
    bfmt = format(bfmt)
    el, sc = bfmt.element, bfmt.scale
    mode = as_rounding(rounding)
    _choice(tail, "tail", TAILS)
    _choice(arithmetic, "arithmetic", ARITHMETIC)
    if bfmt.power_of_two:
        scale_rule = _choice("floor" if scale_rule is None else scale_rule, "scale_rule", SCALE_RULES)
        scale_overflow = _choice("nan" if scale_overflow is None else scale_overflow, "scale_overflow", SCALE_OVERFLOW)
        for name, v in (("tensor_scale", tensor_scale), ("scale_min", scale_min)):
            if v is not None:
                raise ValueError(f"{name}=: only for float scale formats, not {sc.name}")
        if arithmetic != "exact":
            raise ValueError(f"arithmetic={arithmetic!r}: power-of-two scales are always exact")
    else:
        for name, v in (("scale_rule", scale_rule), ("scale_overflow", scale_overflow)):
            if v is not None:
                raise ValueError(f"{name}=: only for power-of-two (e8m0) scales; {sc.name} scales round amax / "
                                 "element max once (nearest_even, saturating)")
        if tensor_scale is not None and not bfmt.tensor_scale:
            raise ValueError(f"tensor_scale=: {bfmt.name} has no tensor scale")
    if global_scale is not None and arithmetic != "float32_te":
        raise ValueError("global_scale=: only with arithmetic='float32_te' (TransformerEngine's G)")
    a = _input(x)
    ax = _axis(axis, a.ndim)
    PE, mode, r = _elem_params(el, mode, sr_bits, sr_method)
    u = sr_words(mode, a.shape, r, seed=seed, key=key, random_bits=random_bits)
    # float16 arrives as its bits (round.parts reads uint16 as float16)
    rows, mshape = _rows(a.view(np.uint16) if a.dtype == np.float16 else a, ax)
    urows = _rows(u.reshape(a.shape), ax)[0] if mode == Rounding.STOCHASTIC else np.zeros((1, 1), np.uint32)
    L = mshape[-1]
    k, nb = _blocks(L, bfmt, tail)
    scales = np.zeros((rows.shape[0], nb), code_dtype(sc))
    codes = np.zeros(rows.shape, code_dtype(el))
    if rows.size:
        if bfmt.power_of_two:
            S = np.array([SCALE_RULES.index(scale_rule), bfmt.emax_elem, _element_precision(el),
                          np.uint64(int(Fraction(el.max) / Fraction(2) ** bfmt.emax_elem * 2 ** 63)).view(np.int64),
                          sc.emin, sc.emax, sc.bias, sc.nan_code, int(scale_overflow == "saturate"),
                          _nan_element_code(el)], np.int64)
            if _f32_fast(rows, bfmt):  # scale in float32 bits, then the core's vectorised rounding
                y = np.empty(rows.shape, np.uint32)
                nan_bits = np.uint32(0x7FC00000 if el.has_nan else 0)  # the canonical +NaN, or code 0
                _by_rows(KB.scale_f32, (k, S, nan_bits), rows.view(np.uint32), None, scales, y)
                kw = {} if mode != Rounding.STOCHASTIC else dict(random_bits=urows, sr_bits=r, sr_method=sr_method)
                codes = core_encode(y.view(np.float32), el, mode, "saturate", **kw)
            else:
                _by_rows(KB.encode_pow2, (k, S, PE), rows, urows, scales, codes)
        else:
            snan = _scale_nan_code(sc)
            if snan < 0 and not np.isfinite(exact_float64(rows) if rows.dtype != np.uint16 else
                                            exact_float64(rows.view(np.float16))).all():
                raise ValueError(f"x: NaN or inf in a block, but the scale format {sc.name} has no NaN")
            st = 1.0
            G = None
            if arithmetic == "float32_te":
                if not bfmt.tensor_scale or tensor_scale is not None:
                    raise ValueError("arithmetic='float32_te': TransformerEngine's two-level scaling computes the "
                                     "tensor scale from x; a format with a tensor scale and no tensor_scale= needed "
                                     "(global_scale= gives its G)")
                G = _te_global_encode_scale(a, bfmt) if global_scale is None else _check_global_scale(global_scale)
                st = float(np.float32(1) / G)
            elif bfmt.tensor_scale:
                st = float(_tensor_scale_of(a, bfmt)) if tensor_scale is None else _check_tensor_scale(tensor_scale)
            smin = _scale_min_code(sc, scale_min)
            if arithmetic != "exact":
                scales, codes = _encode_float32(rows, urows, k, nb, bfmt, st, smin, mode, r, sr_method,
                                                arithmetic == "float32_div", G)
            else:
                mm, me = _sig_exp(Fraction(el.max))
                tm, te = _sig_exp(Fraction(st))
                G = np.array([mm, me, tm, te, smin, max(snan, 0), _nan_element_code(el)], np.int64)
                PS = _scale_params(sc)
                _by_rows(KB.encode_general, (k, G, PE, PS), rows, urows, scales, codes)
    scales = np.moveaxis(scales.reshape(mshape[:-1] + (nb,)), -1, ax)
    codes = np.moveaxis(codes.reshape(mshape), -1, ax)
    return np.ascontiguousarray(scales), np.ascontiguousarray(codes)


def _by_rows(kernel, params, rows, urows, *outs):
    """kernel(*params, rows, [urows,] *outs) on slices of the rows from the thread pool (one
    thread below PARALLEL_MIN elements): every block depends on its own row and words only. The
    words are sliced with the rows under SR, else passed whole (a (1, 1) placeholder). Inputs are
    made writeable C arrays (a read-only one, such as a JAX array's view, is another signature
    for Numba: seconds of compile)."""
    rows = np.require(rows, requirements=["C", "W"])
    pass_u = urows is not None
    u_rows = pass_u and urows.shape[0] == rows.shape[0] and rows.shape[0] != 1
    if pass_u:
        urows = np.require(urows, requirements=["C", "W"])

    def call(lo, hi):
        u = (urows[lo:hi],) if u_rows else (urows,) if pass_u else ()
        kernel(*params, rows[lo:hi], *u, *(o[lo:hi] for o in outs))

    with single_thread_below(rows.size, PARALLEL_MIN):
        run_slices(call, rows.shape[0])


def _f32_fast(rows, bfmt) -> bool:
    """float32 input, e8m0 scale, a float element the core's float32 kernels take, whose quantum
    is at least 2**-90 (see emul/_kernels/blocks.py: _f32_scaled)."""
    el = bfmt.element
    return (rows.dtype == np.float32 and bfmt.scale == ExpFormat(8) and isinstance(el, FloatFormat)
            and el.emin >= -126 and el.man_bits <= 23 and _quantum_exp(el) >= -90 and el.emax <= 100)


def _tensor_scale_of(a, bfmt):
    return tensor_scale(a, bfmt)


def _scale_params(sc):
    from ._params import kernel_params, resolve

    return kernel_params(*resolve(sc, "nearest_even", "saturate", None, "add"))


def _scale_min_code(sc, scale_min) -> int:
    if scale_min is None or scale_min == 0:
        return 0
    v = float(scale_min)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"scale_min={scale_min!r}: must be a positive finite value of {sc.name} (or 0)")
    code = int(core_encode(np.float64(v), sc, "nearest_even", "saturate"))
    if float(_decode(np.uint64(code), sc)) != v:
        raise ValueError(f"scale_min={scale_min!r}: not a value of the scale format {sc.name}")
    return code


def _encode_float32(rows, urows, k, nb, bfmt, st, smin, mode, r, sr_method, divide, G=None):
    """The peers' float32 arithmetic: x times a float32 reciprocal (TransformerEngine) or
    (``divide``) x divided by the float32 scale product (torchao); with ``G`` (TransformerEngine's
    global encode scale) the block scale is fp32(fp32(amax / elem_max) * G), not / s_t."""
    el, sc = bfmt.element, bfmt.scale
    if rows.dtype != np.float32:
        raise TypeError("arithmetic='float32': x must be float32 (the peers' input)")
    R_, L = rows.shape
    pad = nb * k - L
    x = np.pad(rows, ((0, 0), (0, pad))) if pad else rows
    xb = x.reshape(R_, nb, k)
    with np.errstate(all="ignore"):
        amax = np.abs(xb).max(axis=-1)
        special = ~np.isfinite(xb).all(axis=-1)
        s32 = (amax / np.float32(el.max)).astype(np.float32)
        s32 = s32 * G if G is not None else s32 / np.float32(st)
        s32 = np.where(special, np.float32(0), s32).astype(np.float32)
        scodes = core_encode(s32, sc, "nearest_even", "saturate").astype(np.int64)
        scodes = np.maximum(scodes, smin)
        svals = _decode(scodes, sc).astype(np.float32)
        prod = (svals * np.float32(st)).astype(np.float32)
        if divide:
            y = (x.reshape(R_, nb, k) / prod[..., None]).astype(np.float32)
        else:
            recip = (np.float32(1) / prod).astype(np.float32)
            y = (x.reshape(R_, nb, k) * recip[..., None]).astype(np.float32)
        # a scale product that is 0 in float32 (s_b = 0, or an underflow) gives zero elements; NaN blocks too
        zero = (prod == 0)[..., None] | special[..., None] | (xb == 0)  # (0 * inf where 1 / prod overflowed)
        y = np.where(zero, np.copysign(np.float32(0), xb), y)
    y = y.reshape(R_, nb * k)[:, :L]
    from .quantize import encode as enc

    kw = {}
    if mode == Rounding.STOCHASTIC:
        kw = dict(random_bits=urows, sr_bits=r, sr_method=sr_method)
    codes = enc(y, el, mode, "saturate", **kw).astype(code_dtype(el))
    snan = _scale_nan_code(sc)
    scodes = np.where(special, snan, scodes).astype(code_dtype(sc))
    spec_el = np.repeat(special, k, axis=1)[:, :L]
    codes[spec_el] = _nan_element_code(el)
    return scodes, codes


def _expand(scales_values, k, L, ax):
    """Block values repeated k times along ax, trimmed to L."""
    return np.take(np.repeat(scales_values, k, axis=ax), np.arange(L), axis=ax)


def _nan_first(r, a, b):
    """The product or sum r = a op b with its NaNs chosen explicitly, never by the hardware (NumPy's
    SIMD loop and its remainder loop keep different operands' NaNs): a's NaN where a is NaN, else
    b's NaN where b is NaN, else r (the NaN of 0 * inf or inf - inf as computed)."""
    na, nb_ = np.isnan(a), np.isnan(b)
    if not (na.any() or nb_.any()):
        return r
    return np.where(na, a, np.where(nb_, b, r))


def decode(scales, codes, bfmt, axis=-1, *, tensor_scale=None):
    """The float64 values X * P_i (* s_t) of encoded blocks (exact).

    ``codes`` has the data's shape; ``scales`` has it with ``axis`` replaced by the number of
    blocks. A NaN scale makes its whole block NaN. Which NaN: a NaN element gives its own NaN (its
    sign kept), else a NaN scale gives its NaN, whatever the element's position in the array.
    ``tensor_scale`` (s_t) is required for formats with a tensor scale and refused otherwise. Codes or scales of the wrong shape, dtype or out of
    their format raise ValueError.

    >>> decode([128], [0, 48, 60, 126], "mxfp8_e4m3")
    array([  0.,   1.,   3., 896.])
    """
    bfmt = format(bfmt)
    P, X, k, ax = _decoded(scales, codes, bfmt, axis, tensor_scale)
    L = P.shape[ax]
    if L == 0:
        return P.copy()
    Xe = _expand(X, k, L, ax)
    return _nan_first(P * Xe, P, Xe)


def _decoded(scales, codes, bfmt, axis, tensor_scale):
    """(element values, scale values * s_t, k, axis) of encoded blocks, validated."""
    c = np.asarray(codes)
    s = np.asarray(scales)
    for name, arr in (("codes", c), ("scales", s)):
        if arr.dtype.kind not in "iu":
            raise TypeError(f"{name}: dtype {arr.dtype} is not an integer dtype")
    ax = _axis(axis, c.ndim, "codes")
    L = c.shape[ax]
    k, nb = _blocks(L, bfmt, "partial")
    want = c.shape[:ax] + (nb,) + c.shape[ax + 1:]
    if s.shape != want:
        raise ValueError(f"scales: shape {s.shape}, but codes of shape {c.shape} in blocks of {k} along axis {ax} "
                         f"need scales of shape {want}")
    st = 1.0
    if bfmt.tensor_scale:
        if tensor_scale is None:
            raise ValueError(f"tensor_scale=: {bfmt.name} needs the tensor scale s_t the data was encoded with")
        st = _check_tensor_scale(tensor_scale)
    elif tensor_scale is not None:
        raise ValueError(f"tensor_scale=: {bfmt.name} has no tensor scale")
    try:
        P = _decode(c, bfmt.element)
    except ValueError as exc:
        raise ValueError(f"codes: {exc}") from None
    try:
        X = _decode(s, bfmt.scale)
    except ValueError as exc:
        raise ValueError(f"scales: {exc}") from None
    return np.asarray(P, np.float64), np.asarray(X, np.float64) * st, k, ax


def quantize(x, bfmt, axis=-1, *, dtype=None, **kwargs):
    """``decode(*encode(x, ...))`` in x's float dtype when every value fits it exactly (else a
    ValueError asking for float64); integer inputs give float64. Arguments as :func:`encode`.

    ``dtype=np.float64`` returns the float64 values whatever x's dtype: what float32 NVFP4 input
    needs, since element × block scale × tensor scale takes up to ~30 significant bits (and the
    ``arithmetic="float32"`` variants take float32 x only). ``dtype=None`` (default): x's dtype.

    >>> quantize([0.0, 1.0, 3.0, 960.0], "mxfp8_e4m3")
    array([  0.,   1.,   3., 896.])
    >>> x = np.array([1.0, 0.3, 5.0] + [0.0] * 13, np.float32)
    >>> quantize(x, "nvfp4", dtype=np.float64)[:3]    # 448 * s_t * (1, 0.5, 6); s_t = fp32(5 / 2688)
    array([0.83333334, 0.41666667, 5.00000001])
    """
    if dtype is not None and np.dtype(dtype) != np.float64:
        raise ValueError(f"dtype={dtype!r}: must be None (x's dtype) or float64")
    bfmt = format(bfmt)
    a = _input(x)
    scales, codes = encode(a, bfmt, axis, **kwargs)
    st = None
    if bfmt.tensor_scale:
        st = kwargs.get("tensor_scale")
        if kwargs.get("arithmetic") == "float32_te" and kwargs.get("global_scale") is not None:
            st = np.float32(1) / _check_global_scale(kwargs["global_scale"])  # as encode: s_t = fp32(1 / G)
        st = tensor_scale(a, bfmt, kwargs.get("arithmetic", "exact")) if st is None else st
    v = decode(scales, codes, bfmt, axis, tensor_scale=st)
    if a.dtype == np.float64 or not np.asarray(x).dtype.kind == "f" or dtype is not None:
        return v
    from .quantize import exact_float32

    with np.errstate(all="ignore"):
        back = v.astype(a.dtype)
        ok = (back.astype(np.float64) == v) | np.isnan(v)
    if not ok.all():
        raise ValueError(f"quantize: values of {bfmt.name} here do not fit {a.dtype} exactly; pass float64 input "
                         "or dtype=np.float64")
    return exact_float32(v) if a.dtype == np.float32 else back


# -- dot / matmul ---------------------------------------------------------------------------------

def _operand(v, bfmt, axis, name):
    """(element values, scale values) of an operand: raw values (encoded with the defaults) or an
    encoded (scales, codes) pair — (scales, codes, tensor_scale) for formats with a tensor scale;
    the tensor scale is folded into the scale values (exact: element × scale × s_t is a float64)."""
    if isinstance(v, tuple):
        want = 3 if bfmt.tensor_scale else 2
        if len(v) != want:
            raise ValueError(f"{name}: an encoded {bfmt.name} operand is a " +
                             ("(scales, codes, tensor_scale) triple" if want == 3 else "(scales, codes) pair"))
        scales, codes = v[:2]
        if bfmt.tensor_scale:
            P, X, _, _ = _decoded(scales, codes, bfmt, axis, 1.0)
            return P, X * _tensor_scales(v[2], np.shape(X), name)
        st = None
    else:
        a = _input(v)
        scales, codes = encode(a, bfmt, axis)
        st = tensor_scale(a, bfmt) if bfmt.tensor_scale else None
    P, X, _, _ = _decoded(scales, codes, bfmt, axis, st)
    return P, X


def _tensor_scales(t, shape, name):
    """Tensor scales as float64, broadcast to the scales' shape: one positive finite float32 value, or
    an array of them (one per matrix of a batch, or per row)."""
    v = np.asarray(t)
    if v.dtype.kind not in "fiu" or v.size == 0:
        raise ValueError(f"{name}: tensor_scale {t!r} must be positive finite float32 values")
    f = v.astype(np.float64)
    with np.errstate(all="ignore"):
        ok = np.isfinite(f) & (f > 0) & (f.astype(np.float32).astype(np.float64) == f)
    if not ok.all():
        raise ValueError(f"{name}: tensor_scale {float(f[~ok].reshape(-1)[0])!r} is not a positive finite float32 value")
    try:
        return np.broadcast_to(f, shape)
    except ValueError:
        raise ValueError(f"{name}: tensor_scale of shape {v.shape} does not broadcast to the scales' {shape}") from None


def _sigbits(v):
    """Significant bits of each finite float64 (0 for zeros)."""
    m, _ = np.frexp(np.where(np.isfinite(v), v, 0.0))
    i = np.abs(m * 2.0 ** 53).astype(np.int64)
    tz = np.zeros(i.shape, np.int64)
    nz = i != 0
    low = i & -i
    tz[nz] = np.log2(low[nz].astype(np.float64)).astype(np.int64)
    return np.where(nz, 53 - tz, 0)


_TINY = 2.0 ** -1022


def _block_terms(Pb, Qb, XaB):
    """Block sums S = sum_i Pb[..., i] * Qb[..., i] (element values, blocks on the last axis) and
    terms S * XaB in float64: ``(S, terms, wide)``. ``wide`` marks the blocks float64 does not carry
    exactly — a product or partial sum that rounds (checked with error-free sums), over- or
    underflows, or a term S * X_a that is not a float64 — which :func:`matmul` computes with
    integers instead. NaNs are chosen explicitly (:func:`_nan_first`): a product takes P's NaN, then
    Q's; a partial sum the earlier NaN; a term S's NaN, then X_a's."""
    with np.errstate(all="ignore"):
        s = np.zeros(np.broadcast_shapes(Pb.shape[:-1], Qb.shape[:-1]))
        wide = np.zeros(s.shape, bool)
        for i in range(Pb.shape[-1]):
            a, b = Pb[..., i], Qb[..., i]
            p = _nan_first(a * b, a, b)
            fin = np.isfinite(a) & np.isfinite(b)
            # element products have few enough bits (matmul checks); only the range can spoil them
            wide |= fin & ((np.abs(p) < _TINY) & (a != 0) & (b != 0) | ~np.isfinite(p))
            t = _nan_first(s + p, s, p)
            bp = t - s
            err = (s - (t - bp)) + (p - bp)
            wide |= (err != 0) & np.isfinite(err)
            s = t
        term_a = _nan_first(s * XaB, s, XaB)
    X = np.broadcast_to(XaB, s.shape)
    plain = ~np.isfinite(s) | ~np.isfinite(X) | (s == 0) | (X == 0)
    fits = (_sigbits(s) + _sigbits(X) <= 53) & np.isfinite(term_a) & (np.abs(term_a) >= _TINY)
    return s, term_a, wide | ~(plain | fits)


# -- the exact path: block terms as integers, accumulated step by step ---------------------------

_FINITE, _INF, _NAN = 0, 1, 2


def _parts(v) -> tuple:
    """(kind, sign, N, E) of a float64 read from its bits: value (-1)**sign * N * 2**E."""
    b = int(np.float64(v).view(np.uint64))
    sign, ef, f = b >> 63, (b >> 52) & 0x7FF, b & ((1 << 52) - 1)
    if ef == 0x7FF:
        return (_NAN if f else _INF), sign, 0, 0
    if ef == 0:
        return _FINITE, sign, f, -1074
    return _FINITE, sign, f | (1 << 52), ef - 1075


def _mul(x, y) -> tuple:
    """The exact product of two parts, special values as the core's products (a NaN of x wins,
    then y's; 0 * inf is +NaN; signs multiply)."""
    kx, sx, nx, ex = x
    ky, sy, ny, ey = y
    if kx == _NAN:
        return x
    if ky == _NAN:
        return y
    s = sx ^ sy
    if (kx == _INF and ky == _FINITE and ny == 0) or (ky == _INF and kx == _FINITE and nx == 0):
        return _NAN, 0, 0, 0
    if kx == _INF or ky == _INF:
        return _INF, s, 0, 0
    return _FINITE, s, nx * ny, ex + ey


def _exact_sum(P, Q) -> tuple:
    """The exact sum of the products of two blocks of finite element values (+0 when it is 0, as
    the float64 sum from +0 gives)."""
    terms = [(_parts(a), _parts(b)) for a, b in zip(P.tolist(), Q.tolist())]
    nz = [(x[1] ^ y[1], x[2] * y[2], x[3] + y[3]) for x, y in terms if x[2] and y[2]]
    if not nz:
        return _FINITE, 0, 0, 0
    e0 = min(e for _, _, e in nz)
    total = sum((-n if s else n) << (e - e0) for s, n, e in nz)
    return _FINITE, int(total < 0), abs(total), e0


def _fma_operands(sign, N, E, P) -> tuple:
    """Float64 (a, b, c) with a * b + c rounding to the format of P exactly as the nonzero exact
    value (-1)**sign * N * 2**E does, in every mode and word (the core's FMA, ``emul/_kernels/
    arith.py``, forms a * b + c exactly and rounds it once with the accumulation steps' ``finish``):

    - the value is first reduced to what the rounding reads: far above a float format's range, to
      2**(emax+1) (every such value overflows alike); a saturating fixed-point format, to 2**70 lsb
      (saturates alike); a wrapping one, modulo 2**64 lsb (the wrap keeps fewer bits; the rounding
      reads none above the lsb); below the quantum at the value, to round-to-odd at r + 2 bits below
      it (r: the SR bits, else 0), which keeps the kept bits, the r bits under them and a sticky bit;
    - what is left has at most 53 + 32 + 3 bits: its top 53 (at or above 2**-1074) are c, the rest
      a * b with b a power of two."""
    from ._kernels import round as KR

    r = int(P[KR.SR_BITS]) if P[KR.SR] else 0
    if P[KR.KIND] == 1:  # fixed point
        qe = -int(P[KR.FRAC])
        if P[KR.RULE] in (KR.RULE_WRAP, KR.RULE_WRAP_SM):
            N = 0 if E >= qe + 64 else N & ((1 << (qe + 64 - E)) - 1)
            if N == 0:
                return 0.0, 1.0, 0.0  # a multiple of the modulus: wraps to 0
        elif E + N.bit_length() - 1 >= qe + 70:
            N, E = 1, qe + 70
        g = qe - r - 2
    else:
        top = E + N.bit_length() - 1
        emax, emin, m = int(P[KR.EMAX]), int(P[KR.EMIN]), int(P[KR.M])
        if top > emax:
            h = emax + 1
            return math.ldexp(-1.0 if sign else 1.0, h // 2), math.ldexp(1.0, h - h // 2), 0.0
        g = max(top, emin) - m - r - 2
    if E < g:  # round to odd at 2**g
        low = N & ((1 << (g - E)) - 1)
        N = (N >> (g - E)) | int(low != 0)
        E = g
    cut = max(E + max(N.bit_length() - 53, 0), -1074)
    hi = (N >> (cut - E)) if cut > E else N << (E - cut)
    lo = N & ((1 << (cut - E)) - 1) if cut > E else 0
    sg = -1.0 if sign else 1.0
    c = sg * math.ldexp(float(hi), cut)
    K = 0 if E >= -900 else 200
    return sg * math.ldexp(float(lo), E + K), math.ldexp(1.0, -K), c


def _round_step(x, y, u, P):
    """Q_P(x + y) of two exact parts (kind, sign, N, E) with the word u (``y`` None: x alone, as
    the core rounds a product): ``(flag, value)`` (flag a wide.BAD_* flag, or 0), special values
    and signed zeros as the core's accumulation steps treat them (IEEE 754; a NaN x wins)."""
    from ._kernels import arith as KA, round as KR
    from ._threads import single_thread_below

    kx, sx, nx, ex = x
    if y is None:
        y = (_FINITE, sx, 0, 0)
    ky, sy, ny, ey = y
    if kx != _FINITE or ky != _FINITE:  # x (then y) through a * 1 + y: the same special rules
        a = _special(kx, sx) if kx != _FINITE else (-0.0 if sx else 0.0)
        c = _special(ky, sy) if ky != _FINITE else (-0.0 if sy else 0.0)
        if kx == _FINITE and nx:  # a finite x only matters beside an infinite y: keep its sign
            a = -1.0 if sx else 1.0
        if ky == _FINITE and ny:
            c = -1.0 if sy else 1.0
        ops = (a, 1.0, c)
    elif nx == 0 and ny == 0:
        ops = (-0.0 if sx else 0.0, 1.0, -0.0 if sy else 0.0)  # the signed zero sum
    else:
        e = min(ex if nx else ey, ey if ny else ex)
        z = ((-nx if sx else nx) << (ex - e) if nx else 0) + ((-ny if sy else ny) << (ey - e) if ny else 0)
        ops = (-0.0 if sx else 0.0, 1.0, -0.0 if sy else 0.0) if z == 0 else _fma_operands(int(z < 0), abs(z), e, P)
    a, b, c = (np.array([v], np.float64) for v in ops)
    out = np.empty(1, np.float64)
    flags = np.empty(1, np.int8)
    words = np.array([u if P[KR.SR] else 0], np.uint32)
    with single_thread_below(1, 2):
        KA.arith_serial(KA.FMA, a.view(np.uint64), b.view(np.uint64), c.view(np.uint64), (KR.IN_FLOAT64,) * 3, words, P,
                        out, flags)
    return int(flags[0]), float(out[0])


def _special(kind, sign) -> float:
    v = math.nan if kind == _NAN else math.inf
    return -v if sign else v


def _exact_output(terms, cfg, init_code, init_value, words):
    """One output element from its exact block terms, step by step as emul.accumulate's general
    kernel computes it (the same orders, word order, product rounding and error flags):
    ``(value, flag)`` with flag one of emul/_kernels/accumulate.py's error flags (0: none)."""
    from .accumulate import K as KA
    from ._kernels import wide as W

    Pa, Po = cfg.P_acc, cfg.P_out
    t = [0]

    def word():
        w = 0 if words is None else int(words[t[0]])
        t[0] += 1
        return w

    def product(x):
        if cfg.product is None:
            return x, 0
        flag, v = _round_step(x, None, 0, cfg.P_prod)
        if flag:
            return x, KA.PROD_NAN if flag == W.BAD_NAN else KA.PROD_INF
        return _parts(v), 0

    def step(x, y, P):
        flag, v = _round_step(x, y, word(), P)
        return _parts(v), v, (KA.ACC_NAN if flag == W.BAD_NAN else KA.ACC_INF) if flag else 0

    def sequential(lo, hi, start):
        s, v = start, None
        for j in range(lo, hi):
            p, flag = product(terms[j])
            if flag:
                return s, v, flag
            s, v, flag = step(s, p, Pa)
            if flag:
                return s, v, flag
        return s, v, 0

    K = len(terms)
    start = _parts(init_value)
    if cfg.order == "sequential":
        _, v, flag = sequential(0, K, start)
        return (init_value if v is None else v), flag
    if cfg.order == "chunked":
        so, vo = start, init_value
        outer_t = t[0] + K
        for c0 in range(0, K, cfg.chunk):
            sc, _, flag = sequential(c0, min(c0 + cfg.chunk, K), (_FINITE, 0, 0, 0))
            if flag:
                return vo, flag
            inner_t, t[0] = t[0], outer_t
            so, vo, flag = step(so, sc, Po)
            outer_t, t[0] = t[0], inner_t
            if flag:
                return vo, flag
        return vo, 0
    leaves = []
    for j in range(K):
        p, flag = product(terms[j])
        if flag:
            return init_value, flag
        leaves.append(p)
    while len(leaves) > 1:
        nxt = []
        for i in range(len(leaves) // 2):
            p, _, flag = step(leaves[2 * i], leaves[2 * i + 1], Pa)
            if flag:
                return init_value, flag
            nxt.append(p)
        if len(leaves) % 2:
            nxt.append(leaves[-1])
        leaves = nxt
    _, v, flag = step(start, leaves[0], Pa)
    return v, flag


def _block_term(P, Q, s, term_a, wide, Xa, Xb) -> tuple:
    """The exact term S * X_a * X_b of one pair of blocks as parts (kind, sign, N, E): special
    values as the float path forms them (the float64 sum, then s * X_a, then the core's product
    with X_b); a wide block's finite sum exactly."""
    if wide and np.isfinite(P).all() and np.isfinite(Q).all():
        S = _exact_sum(P, Q)
        if np.isfinite(Xa):
            ta = _mul(S, _parts(Xa))
        else:  # a NaN or infinite scale: as s * X_a in float64, with the exact sum's sign and zero
            with np.errstate(all="ignore"):
                ta = _parts(np.float64(0.0 if S[2] == 0 else (-1.0 if S[1] else 1.0)) * np.float64(Xa))
    else:
        ta = _parts(term_a)
    return _mul(ta, _parts(Xb))


def _exact_outputs(rare, Pb, Qb, s, term_a, wide, XaB, XbB, out, rb, kwargs):
    """Fill ``out`` (the flat float64 results over the output shape) at the flat indices ``rare`` by
    the exact path. Raises the core's errors for outputs the accumulator cannot take."""
    from .accumulate import _Config, _init_codes, _raise_flags, _values

    cfg = _Config(kwargs.get("acc"), kwargs.get("product"), kwargs.get("product_rounding", "nearest_even"),
                  kwargs.get("rounding", "nearest_even"), kwargs.get("overflow"), kwargs.get("order", "sequential"),
                  kwargs.get("chunk"), kwargs.get("outer"), kwargs.get("sr_bits"), kwargs.get("sr_method", "add"))
    full = s.shape[:-1]
    init = _init_codes(kwargs.get("init"), cfg, full)
    init_vals = _values(init, cfg.final)
    shape = full + s.shape[-1:]
    P = np.broadcast_to(Pb, shape + Pb.shape[-1:])
    Q = np.broadcast_to(Qb, shape + Qb.shape[-1:])
    Xa, Xb = np.broadcast_to(XaB, shape), np.broadcast_to(XbB, shape)
    words = None if rb is None else np.asarray(rb).reshape(-1, np.asarray(rb).shape[-1])
    flags = np.zeros(rare.size, np.int64)
    for n, e in enumerate(rare.tolist()):
        ix = np.unravel_index(e, full)
        terms = [_block_term(P[ix + (j,)], Q[ix + (j,)], s[ix + (j,)], term_a[ix + (j,)], wide[ix + (j,)],
                             Xa[ix + (j,)], Xb[ix + (j,)]) for j in range(shape[-1])]
        iv = init_vals[e] if init_vals.size > 1 else init_vals[0]
        out[e], flags[n] = _exact_output(terms, cfg, None, iv, None if words is None else words[e])
    _raise_flags(flags, cfg)


# Tests set this to send every output through the exact path (which must agree with the float one).
_ALL_EXACT = False


def matmul(a, b, bfmt_a, bfmt_b=None, *, acc="fp32", **kwargs):
    """``a @ b`` of block-scaled operands (blocks along the reduction axis: a's last, b's first of
    its last two), accumulated over blocks.

    Each operand is raw values (encoded with :func:`encode`'s defaults; a tensor scale from
    :func:`tensor_scale`) or an encoded ``(scales, codes)`` pair — ``(scales, codes, tensor_scale)``
    for formats with a tensor scale (NVFP4), s_t one float32 value or an array of them that
    broadcasts to ``scales``. For each pair of blocks the exact sum of element products times
    both scales (each block scale times its tensor scale: X_a s_ta X_b s_tb) is one term; the terms are accumulated in ``acc`` exactly as :func:`emul.matmul`
    accumulates its products (``order``, ``chunk``, ``outer``, ``init``, ``rounding``, ``overflow``,
    SR arguments — one rounding step per block). A NaN scale (or element) makes the result NaN.
    a: (..., M, K), b: (..., K, N) (1-D operands as np.matmul). Both block sizes must be equal.

    Blocks whose exact sums or terms float64 carries (every preset's usual data) take a float64
    path; an output with a block it does not carry (e.g. e5m2 products 2**53 apart in one block, or
    a term S * X_a of more than 53 bits) is computed with integers instead: the exact terms, each
    step rounded once exactly as the core rounds (same results; slower, per output in Python).

    >>> a = [[1.0] * 32]
    >>> b = [[1.0]] * 32
    >>> matmul(a, b, "mxfp4", acc="bf16")
    array([[32.]])
    """
    from .accumulate import matmul as core_matmul, sr_steps

    ba = format(bfmt_a)
    bb = ba if bfmt_b is None else format(bfmt_b)
    if ba.block != bb.block:
        raise ValueError(f"block sizes differ: {ba.name} has {ba.block}, {bb.name} has {bb.block}")
    araw = a if isinstance(a, tuple) else _input(a)
    braw = b if isinstance(b, tuple) else _input(b)
    a_nd = (np.asarray(araw[1]) if isinstance(araw, tuple) else araw).ndim
    b_nd = (np.asarray(braw[1]) if isinstance(braw, tuple) else braw).ndim
    if a_nd == 0 or b_nd == 0:
        raise ValueError("matmul: operands must have at least one dimension")
    P, Xa = _operand(araw, ba, -1, "a")
    Q, Xb = _operand(braw, bb, 0 if b_nd == 1 else -2, "b")
    squeeze_m, squeeze_n = P.ndim == 1, Q.ndim == 1
    if squeeze_m:
        P, Xa = P[None, :], Xa[None, :]
    if squeeze_n:
        Q, Xb = Q[:, None], Xb[:, None]
    K = P.shape[-1]
    if Q.shape[-2] != K:
        raise ValueError(f"matmul: a has {K} columns but b has {Q.shape[-2]} rows")
    k, nb = _blocks(K, ba, "partial")
    # exact block sums S[..., m, n, j] = sum_i P[m, jk+i] Q[jk+i, n] (error-free sums, checked)
    pad = nb * k - K
    if pad:
        P = np.concatenate([P, np.zeros(P.shape[:-1] + (pad,))], axis=-1)
        Q = np.concatenate([Q, np.zeros(Q.shape[:-2] + (pad,) + Q.shape[-1:])], axis=-2)
    Pb = P.reshape(P.shape[:-1] + (nb, k))                 # (..., M, nb, k)
    Qb = np.moveaxis(Q.reshape(Q.shape[:-2] + (nb, k) + Q.shape[-1:]), -1, -3)  # (..., N, nb, k)
    Pb = Pb[..., :, None, :, :]                              # (..., M, 1, nb, k)
    Qb = Qb[..., None, :, :, :]                              # (..., 1, N, nb, k)
    XaB = Xa[..., :, None, :]     # (..., M, 1, nb)
    XbB = np.swapaxes(Xb, -1, -2)[..., None, :, :]  # (..., 1, N, nb)
    s, term_a, wide = _block_terms(Pb, Qb, XaB)
    if _element_precision(ba.element) + _element_precision(bb.element) + 2 > 53 or _ALL_EXACT:
        wide = np.ones(wide.shape, bool)  # element products wider than float64: every block exactly
    full = s.shape[:-1]
    rare = np.flatnonzero(wide.any(axis=-1)) if s.shape[-1] else np.zeros(0, np.intp)
    # one dot of length nb per output element: term_a[m, n, :] . X_b[n, :]
    A4 = term_a[..., None, :]                         # (..., M, N, 1, nb)
    if rare.size:  # the exact path computes these outputs; the float path gets zero terms there
        A4 = A4.copy()
        A4.reshape((-1,) + A4.shape[-2:])[rare] = 0.0
    B4 = np.broadcast_to(XbB, s.shape)[..., :, None]  # (..., M, N, nb, 1)
    rb = kwargs.pop("random_bits", None)
    T = sr_steps(nb, kwargs.get("order", "sequential"), kwargs.get("chunk"))
    if rb is not None:  # shape: the result's + (T,), as emul.matmul; T = steps over nb block terms
        user = full[:-2] + full[-2:-1] * (not squeeze_m) + full[-1:] * (not squeeze_n)
        try:
            rb = np.broadcast_to(np.asarray(rb), user + (T,)).reshape(full + (1, 1, T))
        except ValueError:
            raise ValueError(f"random_bits: shape {np.shape(rb)} does not broadcast to {user + (T,)}") from None
    elif rare.size and as_rounding(kwargs.get("rounding", "nearest_even")) == Rounding.STOCHASTIC:
        from .accumulate import _Config, _Words  # the words the core draws from seed / key, drawn here

        c = _Config(acc, kwargs.get("product"), kwargs.get("product_rounding", "nearest_even"), kwargs["rounding"],
                    kwargs.get("overflow"), kwargs.get("order", "sequential"), kwargs.get("chunk"),
                    kwargs.get("outer"), kwargs.get("sr_bits"), kwargs.get("sr_method", "add"))
        rb = _Words.of(c, full + (1, 1, T), kwargs.pop("seed", None), kwargs.pop("key", None), None).array()
        rb = rb.reshape(full + (1, 1, T))
    out = core_matmul(A4, B4, acc, random_bits=rb, **kwargs)[..., 0, 0]
    if rare.size:
        out = np.array(out, np.float64)
        _exact_outputs(rare, Pb, Qb, s, term_a, wide, XaB, XbB, out.reshape(-1), rb, dict(kwargs, acc=acc))
    if squeeze_n:
        out = out[..., 0]
    if squeeze_m:
        out = out[..., 0, :] if not squeeze_n else out[..., 0]
    return out if out.ndim else out[()]


def dot(a, b, bfmt_a, bfmt_b=None, *, acc="fp32", **kwargs):
    """The dot product of two 1-D block-scaled vectors: :func:`matmul` of 1-D operands (0-d result).

    >>> float(dot([1.5] * 40, [2.0] * 40, "mxfp8_e4m3"))
    120.0
    """
    av = a if isinstance(a, tuple) else _input(a)
    bv = b if isinstance(b, tuple) else _input(b)
    for name, v in (("a", av), ("b", bv)):
        nd = (np.asarray(v[1]) if isinstance(v, tuple) else v).ndim
        if nd != 1:
            raise ValueError(f"dot: {name} must be 1-D (got {nd} dimensions); use matmul")
    return matmul(av, bv, bfmt_a, bfmt_b, acc=acc, **kwargs)

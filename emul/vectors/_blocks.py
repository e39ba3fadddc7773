"""Vectors of block-scaled formats (``emul.blocks``): ``block_encode`` (one block per line: the input
codes, then the scale code and the element codes) and ``block_dot`` (one dot product of encoded
operands per line: a's scales and elements, b's scales and elements, the result code).

Expected results come from :func:`emul.blocks.encode` and :func:`emul.blocks.matmul` (one output
element per line), called on whole tables.
"""

from __future__ import annotations

import numpy as np

from .. import blocks as _blocks
from ..formats import ExpFormat, FixedFormat, FloatFormat, format as as_format
from ..quantize import _fits_float32, code_dtype, decode, encode, exact_float32
from ..rounding import as_overflow, as_rounding
from ._codes import (_check_lines, _from_ord, _isinf, _isnan, _ord_range, _random_codes, _unique_keep_order,
                     _values, _words64, corner_codes)
from ._table import Field

MAX_K = 4096
ARITHMETIC = ("exact", "float32", "float32_div", "float32_te")
_SR = ("sr_bits", "sr_method", "random_source", "lfsr")


def _spec(op, common):
    sr = {key: common[key] for key in _SR}
    base = {key: common[key] for key in ("sets", "count", "seed")}
    if op == "block_encode":
        return {**base, "fmt": None, "in_fmt": "fp32", "k": None, "rounding": "nearest_even", "scale_rule": None,
                "scale_overflow": None, "tail": "partial", "scale_min": None, "tensor_scale": None,
                "arithmetic": "exact", **sr}
    return {**base, "fmt": None, "b_fmt": None, "k": None, "acc": "fp32", "order": "sequential", "chunk": None,
            "outer": None, "rounding": "nearest_even", "overflow": None, **sr}


def _block_format(name, what="fmt"):
    if name is None:
        raise ValueError(f"{what}=None: block vectors need a block format, e.g. {what}='mxfp8_e4m3' "
                         f"(presets {', '.join(_blocks.PRESETS)}, or '{{element}}/{{scale}}/{{k|axis}}[/tensor]')")
    return _blocks.format(name)


def _line_length(s, block):
    """Elements per line: ``k``, default the format's block size."""
    if s["k"] is None:
        if block is None:
            raise ValueError("k=None: a format with block=None (one scale per axis) needs k, the elements per line")
        s["k"] = block
    if block is not None and isinstance(s["k"], (int, np.integer)) and not isinstance(s["k"], bool) and s["k"] > block:
        raise ValueError(f"k={s['k']}: a block_encode line is one block, at most {block} elements (the format's "
                         "block size; fewer make a short last block)")
    s["k"] = _int(s["k"], "k", 1, block if block is not None else MAX_K)
    return s["k"]


def _int(value, name, lo, hi):
    from ._settings import _int_setting

    return _int_setting(value, name, lo, hi)


def canonical_block(op, kw, common) -> dict:
    """The canonical settings of a ``block_encode`` or ``block_dot`` table (see :func:`generate`)."""
    from ._settings import _sets_count_seed, _sr_settings

    spec = _spec(op, common)
    unknown = sorted(set(kw) - set(spec))
    if unknown:
        raise ValueError(f"{unknown[0]}=: not a setting of op={op!r}; settings are {', '.join(sorted(spec))}")
    s = {**spec, **kw, "op": op}
    _sets_count_seed(s)
    if "exhaustive" in s["sets"]:
        raise ValueError(f"sets='exhaustive': not available for {op} vectors (use corners and random)")
    s["rounding"] = as_rounding(s["rounding"]).value
    if op == "block_encode":
        _encode_settings(s)
    else:
        _dot_settings(s)
    _sr_settings(s, op)
    if op == "block_dot":
        from ..accumulate import _Config

        _Config(s["acc"], None, "nearest_even", s["rounding"], s["overflow"], s["order"], s["chunk"], s["outer"],
                s.get("sr_bits"), s.get("sr_method", "add"))
    _trial(s)  # every remaining combination as emul.blocks checks it
    return s


def _encode_settings(s):
    B = _block_format(s["fmt"])
    s["fmt"] = B.name
    I = as_format(s["in_fmt"])
    if not isinstance(I, FloatFormat):
        raise ValueError(f"in_fmt={I.name}: block_encode inputs are a float format (emul.blocks.encode takes "
                         "float values), e.g. fp32, bf16, fp16 or fp64")
    s["in_fmt"] = I.name
    k = _line_length(s, B.block)
    if s["tail"] not in _blocks.TAILS:
        raise ValueError(f"tail={s['tail']!r}: must be one of {', '.join(_blocks.TAILS)}")
    if s["tail"] == "error" and B.block is not None and k < B.block:
        raise ValueError(f"tail='error': k={k} elements per line make a short block ({k} < {B.block}); "
                         "tail='error' refuses it (use tail='partial')")
    if B.power_of_two:
        for key in ("scale_min", "tensor_scale"):
            if s[key] is not None:
                raise ValueError(f"{key}={s[key]!r}: only for float scale formats (nvfp4), not {B.scale.name} scales")
        if s["arithmetic"] != "exact":
            raise ValueError(f"arithmetic={s['arithmetic']!r}: {B.scale.name} (power-of-two) scales are always exact")
        s["scale_rule"] = "floor" if s["scale_rule"] is None else s["scale_rule"]
        s["scale_overflow"] = "nan" if s["scale_overflow"] is None else s["scale_overflow"]
        for key, choices in (("scale_rule", _blocks.SCALE_RULES), ("scale_overflow", _blocks.SCALE_OVERFLOW)):
            if s[key] not in choices:
                raise ValueError(f"{key}={s[key]!r}: must be one of {', '.join(choices)}")
        for key in ("scale_min", "tensor_scale", "arithmetic"):
            s.pop(key)
        return
    for key in ("scale_rule", "scale_overflow"):
        if s[key] is not None:
            raise ValueError(f"{key}={s[key]!r}: only for power-of-two (e8m0) scales; {B.scale.name} block scales "
                             "round amax / element max once")
        s.pop(key)
    if s["arithmetic"] == "float32_te":
        if not B.tensor_scale:
            raise ValueError(f"arithmetic='float32_te': TransformerEngine's two-level scaling needs a format with a "
                             f"tensor scale (nvfp4), not {B.name}")
        if s["tensor_scale"] is not None:
            raise ValueError("tensor_scale=: arithmetic='float32_te' lines carry TransformerEngine's global scale G "
                             "(field g; s_t = fp32(1/G)) instead")
    if s["arithmetic"] not in ARITHMETIC:
        raise ValueError(f"arithmetic={s['arithmetic']!r}: must be one of {', '.join(ARITHMETIC)}")
    if s["arithmetic"] != "exact" and not _fits_float32(I):
        raise ValueError(f"arithmetic={s['arithmetic']!r}: the peers' float32 arithmetic takes float32 inputs; "
                         f"in_fmt={I.name} has values that are not float32 values")
    smin = 0 if s["scale_min"] is None else s["scale_min"]
    if isinstance(smin, bool) or not isinstance(smin, (int, float, np.integer, np.floating)):
        raise TypeError(f"scale_min={smin!r}: must be a number")
    _blocks._scale_min_code(B.scale, smin)  # a value of the scale format (or 0)
    s["scale_min"] = float(smin)
    if not B.tensor_scale:
        if s["tensor_scale"] is not None:
            raise ValueError(f"tensor_scale={s['tensor_scale']!r}: {B.name} has no tensor scale")
        s.pop("tensor_scale")
    elif s["tensor_scale"] is not None:
        s["tensor_scale"] = _blocks._check_tensor_scale(s["tensor_scale"])


def _dot_settings(s):
    from ._settings import _dot_order

    A = _block_format(s["fmt"])
    B = _block_format(s["b_fmt"] or s["fmt"], "b_fmt")
    if A.block != B.block:
        raise ValueError(f"block sizes differ: {A.name} has {A.block}, {B.name} has {B.block}")
    s["fmt"], s["b_fmt"] = A.name, B.name
    if s["k"] is None and A.block is None:
        raise ValueError("k=None: a format with block=None (one scale per axis) needs k, the elements per line")
    s["k"] = _int(A.block if s["k"] is None else s["k"], "k", 1, MAX_K)
    acc = as_format(s["acc"])
    s["acc"] = acc.name
    s["running"] = False
    _dot_order(s)
    s.pop("running")
    final = as_format(s["outer"] if s["order"] == "chunked" and s["outer"] else s["acc"])
    if s["overflow"] is None:
        s["overflow"] = "ieee" if isinstance(final, FloatFormat) else "saturate"
    s["overflow"] = as_overflow(s["overflow"]).value


def _trial(s):
    """Compute one all-zero line, so that emul.blocks rejects what it does not take."""
    k = s["k"]
    u = None
    if s["op"] == "block_encode":
        I = as_format(s["in_fmt"])
        if s["rounding"] == "stochastic":
            u = np.zeros((1, k), np.uint64)
        expected_block_encode(s, np.zeros((1, k), np.uint64), _t_column(s, np.zeros((1, k), np.uint64), I, None), u)
    else:
        A, B = _blocks.format(s["fmt"]), _blocks.format(s["b_fmt"])
        nb = _nblocks(s)
        if s["rounding"] == "stochastic":
            u = np.zeros((1, _sr_steps(s)), np.uint64)
        one_a, one_b = _one_scale(A.scale), _one_scale(B.scale)
        one_t = np.full(1, _FP32_ONE, np.uint64)
        expected_block_dot(s, np.full((1, nb), one_a, np.uint64), np.zeros((1, k), np.uint64),
                           np.full((1, nb), one_b, np.uint64), np.zeros((1, k), np.uint64), u,
                           one_t if A.tensor_scale else None, one_t if B.tensor_scale else None)


# ============================================================================== expected values


def _encode_kwargs(s):
    kw = dict(rounding=s["rounding"], tail=s["tail"])
    B = _blocks.format(s["fmt"])
    if B.power_of_two:
        kw.update(scale_rule=s["scale_rule"], scale_overflow=s["scale_overflow"])
    else:
        kw.update(scale_min=s["scale_min"], arithmetic=s["arithmetic"])
    if s["rounding"] == "stochastic":
        kw.update(sr_bits=s["sr_bits"], sr_method=s["sr_method"])
    return kw


def _input_values(x, I):
    """The inputs as emul.blocks takes them: float32 when every value of I is a float32, else float64."""
    v = _values(x, I)
    return exact_float32(v) if _fits_float32(I) else np.asarray(v, np.float64)


def expected_block_encode(s, x, t=None, u=None):
    """Expected ``(scale codes [n], element codes [n, k])`` of block_encode vectors: ``emul.blocks.encode``
    of each line's inputs (codes ``x`` [n, k] of ``in_fmt``), with the tensor scale codes ``t`` [n]
    (fp32; formats with a tensor scale; with ``arithmetic="float32_te"`` TransformerEngine's global
    scale G instead) and the SR words ``u`` [n, k] (word i for element i)."""
    B = _blocks.format(s["fmt"])
    I = as_format(s["in_fmt"])
    n, k = x.shape
    xv = _input_values(x, I)
    kw = _encode_kwargs(s)
    scales = np.zeros(n, np.uint64)
    codes = np.zeros((n, k), np.uint64)
    if n == 0:
        return scales, codes
    groups = [np.arange(n)] if t is None else [np.flatnonzero(t == v) for v in np.unique(t)]
    te = s.get("arithmetic") == "float32_te"
    for rows in groups:
        extra = {}
        if t is not None:
            extra["global_scale" if te else "tensor_scale"] = np.uint32(t[rows[0]]).view(np.float32)
        if u is not None:
            extra["random_bits"] = u[rows].astype(np.uint32)
        sc, c = _blocks.encode(xv[rows], B, -1, **kw, **extra)
        scales[rows] = sc[:, 0]
        codes[rows] = c
    return scales, codes


def _nblocks(s):
    B = _blocks.format(s["fmt"])
    return 1 if B.block is None else -(-s["k"] // B.block)


def _sr_steps(s):
    from ..accumulate import sr_steps

    return sr_steps(_nblocks(s), s["order"], s["chunk"] if s["order"] == "chunked" else None)


def _final(s):
    return as_format(s["outer"] if s["order"] == "chunked" and s["outer"] else s["acc"])


_FP32_ONE = int(np.float32(1.0).view(np.uint32))


def _tensor_values(t):
    """fp32 codes [n] as float32 tensor scales [n, 1, 1] (one per line)."""
    return t.astype(np.uint32).view(np.float32)[:, None, None]


def expected_block_dot(s, sa, a, sb, b, u=None, ta=None, tb=None):
    """Expected result codes [n] of block_dot vectors: ``emul.blocks.matmul`` of each line's encoded
    operands (a: scales ``sa`` [n, nb], elements ``a`` [n, k], for formats with a tensor scale its
    fp32 code ``ta`` [n]; b likewise) into the table's accumulator, with SR words ``u`` [n, T]."""
    A, B = _blocks.format(s["fmt"]), _blocks.format(s["b_fmt"])
    n, k = a.shape
    final = _final(s)
    kw = dict(acc=s["acc"], rounding=s["rounding"], overflow=s["overflow"], order=s["order"])
    if s["order"] == "chunked":
        kw.update(chunk=s["chunk"], outer=s["outer"])
    if u is not None:
        kw.update(sr_bits=s["sr_bits"], sr_method=s["sr_method"])
    if n == 0:
        return np.zeros(0, np.uint64)
    opa = (sa.astype(code_dtype(A.scale))[:, None, :], a.astype(code_dtype(A.element))[:, None, :])
    opb = (sb.astype(code_dtype(B.scale))[:, :, None], b.astype(code_dtype(B.element))[:, :, None])
    if A.tensor_scale:
        opa += (_tensor_values(ta),)
    if B.tensor_scale:
        opb += (_tensor_values(tb),)
    rb = None if u is None else u.astype(np.uint32)[:, None, None, :]
    r = _blocks.matmul(opa, opb, A, B, random_bits=rb, **kw)
    return encode(np.asarray(r, np.float64).reshape(n), final, overflow=s["overflow"]).astype(np.uint64)


# ============================================================================== operands


def _keys(seed):
    from ._generate import _keys as keys

    return keys(seed)


def _fit(values, I):
    """Codes of I for float64 values (nearest even; beyond the range: inf, NaN or max as I has)."""
    return np.asarray(encode(np.asarray(values, np.float64), I), np.uint64)


def _element_grid(el):
    """The element format's finite non-negative values, ascending (corner codes for wide ones)."""
    if el.bits <= 12:
        c = np.arange(1 << el.bits, dtype=np.uint64)
    else:
        c = corner_codes(el)
    from ._codes import _valid_mask

    c = c[_valid_mask(c, el)]
    v = decode(c, el)
    v = np.unique(v[np.isfinite(v) & (v >= 0)])
    return v


def _encode_corner_blocks(B, I, k) -> list:
    """Corner blocks of k values (float64), to be rounded to I: zero blocks, NaN/inf in a block,
    amax at powers of two across the scale's range (with the element grid's values, ties between
    neighbours and subnormals beside it), amax that saturates under the floor rule (960 -> 448 in
    mxfp8_e4m3), the ``even`` rule's tie, just above the element max (``rceil`` moves up), scale
    under- and overflow, negative amax."""
    el, sc = B.element, B.scale
    emax = B.emax_elem
    M = float(el.max)
    grid = _element_grid(el)
    mids = (grid[:-1] + grid[1:]) / 2
    p = _blocks._element_precision(el)
    sub = [float(el.min_subnormal)] if isinstance(el, FloatFormat) and el.subnormals else [float(2.0 ** -el.frac)] \
        if isinstance(el, FixedFormat) else []
    lines = [[0.0] * k, [(-0.0, 0.0)[j % 2] for j in range(k)]]
    nan, inf = float("nan"), float("inf")
    for special in (nan, inf, -inf):
        for pos in {0, k - 1}:
            row = [1.0] * k
            row[pos] = special
            lines.append(row)
    for big in (2.0 ** 200, 2.0 ** -200, 2.0 ** -1074, float(np.finfo(np.float64).max), float(np.finfo(np.float32).max)):
        lines.append([big, -big / 2, big / 3, 0.0, 1.0])  # beyond the scale's range (scale over- and underflow)
    if isinstance(sc, ExpFormat):
        lo_e, hi_e = sc.emin, sc.emax
        es = {lo_e - 20, lo_e - 1, lo_e, lo_e + 1, -1, 0, 1, hi_e - 1, hi_e, hi_e + 1, hi_e + 70}
    else:
        lo_e, hi_e = sc.emin - sc.man_bits - 2, sc.emax + 2
        es = set(range(lo_e, hi_e + 1))
    # the scale exponents I's values reach at its extremes
    top = np.floor(np.log2(float(I.max)))
    bottom = I.emin - (I.man_bits if I.subnormals else 0)
    es |= {int(top) - emax, int(top) - emax - 1, bottom - emax, bottom - emax + 4}
    amax_kinds = [
        1.0,                                      # a power of two: 2**emax_elem
        M / 2 ** emax,                            # the element max itself
        (M / 2 ** emax + 2.0) / 2,                # between max and 2**(emax+1): floor saturates (960 -> 448)
        2.0 - 2.0 ** -(p + 1),                    # the even rule's tie (rounds away to 2**(emax+1))
        2.0 - 2.0 ** -(p + 1) - 2.0 ** -(p + 3),  # just below it
        M / 2 ** emax * (1 + 2.0 ** -20),         # just above the max: rceil takes the next scale
        1.5,
    ]
    for e in sorted(es):
        f = 2.0 ** e if -1074 <= e <= 1023 else (0.0 if e < 0 else inf)
        if f == 0.0 or f == inf:
            continue
        for j, kind in enumerate(amax_kinds):
            amax = kind * 2.0 ** emax * f
            if not np.isfinite(amax) or amax == 0:
                continue
            if j == 0:
                rest = list(grid[::-1]) + list(-grid[1::2])
            elif j == 1:
                rest = list(mids[::-1]) + list(-mids[::3])
            else:
                rest = [x for v in sub for x in (v, v / 2, 1.5 * v, -v / 2)] + list(mids[:4]) + [1.0]
            rest = [v * f for v in rest]
            row = ([amax] + rest * (k // max(len(rest), 1) + 1))[:k]
            lines.append(row)
            if j in (0, 2):
                lines.append([-amax] + row[1:])
    return lines


def _pad_rows(rows, k):
    return np.array([(list(r) + [0.0] * k)[:k] for r in rows], np.float64)


def _encode_random(B, I, k, n, key) -> np.ndarray:
    """n random blocks (float64 values, to be rounded to I): per block a scale exponent (3 in 4
    blocks near the scale's range, else anywhere in I's), elements of random signs and
    significands over the element format's range and below; one block in 8 of uniformly random I
    codes (NaN, inf included), one in 8 of ties between neighbouring element values."""
    el = B.element
    emax = B.emax_elem
    w = _words64(key, n * (k + 2)).reshape(n, k + 2)
    pick, ew = w[:, 0], w[:, 1]
    el_lo = el.emin - el.man_bits if isinstance(el, FloatFormat) else -el.frac
    depth = emax - el_lo + 3
    sc = B.scale
    if isinstance(sc, ExpFormat):
        near_lo, near_hi = sc.emin - 3, sc.emax + 2
    else:
        near_lo, near_hi = sc.emin - sc.man_bits - 3, sc.emax + 3
    i_lo = I.emin - (I.man_bits if I.subnormals else 0) - emax
    i_hi = I.emax - emax
    near_lo, near_hi = max(near_lo, i_lo), min(near_hi, i_hi)
    if near_hi < near_lo:
        near_lo, near_hi = i_lo, i_hi
    span_near, span_all = near_hi - near_lo + 1, i_hi - i_lo + 1
    e = np.where((ew & np.uint64(3)) != 0, near_lo + ((ew >> np.uint64(2)) % np.uint64(span_near)).astype(np.int64),
                 i_lo + ((ew >> np.uint64(2)) % np.uint64(span_all)).astype(np.int64))
    body = w[:, 2:]
    d = ((body >> np.uint64(53)) % np.uint64(depth + 1)).astype(np.int64)
    d[:, 0] = 0  # one element near the top of the block
    mant = (body & np.uint64((1 << 52) - 1)).astype(np.float64)
    sign = np.where((body >> np.uint64(52)) & np.uint64(1), -1.0, 1.0)
    exps = e[:, None] + emax - d
    with np.errstate(over="ignore", under="ignore"):
        vals = sign * np.ldexp(1.0 + mant * 2.0 ** -52, np.clip(exps, -1100, 1100))
        zero = (body >> np.uint64(59)) == 0  # about 1 element in 32 is zero
        vals = np.where(zero, 0.0 * sign, vals)
        grid = _element_grid(el)
        mids = (grid[:-1] + grid[1:]) / 2
        ties = sign * mids[(body % np.uint64(mids.size)).astype(np.int64)] * np.ldexp(1.0, np.clip(e, -1100, 1100))[:, None]
        ties[:, 0] = float(el.max) * np.ldexp(1.0, np.clip(e, -1100, 1100))
    kind = (pick >> np.uint64(60)) & np.uint64(7)
    vals = np.where((kind == 1)[:, None], ties, vals)
    uniform = (kind == 0)[:, None]
    return vals, uniform, body


def _t_column(s, x, I, kinds):
    """The tensor scale codes (fp32) of each line, or None for formats without one: the setting's
    value; else per line, corners with t = 1 and t = tensor_scale(line) (``kinds`` None), random
    lines with t putting the block scale at a random 2**j * m across the scale format's range."""
    B = _blocks.format(s["fmt"])
    if not B.tensor_scale:
        return None
    n = x.shape[0]
    if s.get("tensor_scale") is not None:
        return np.full(n, np.float32(s["tensor_scale"]).view(np.uint32), np.uint64)
    if kinds is None:
        return np.full(n, np.float32(1.0).view(np.uint32), np.uint64)
    return kinds


def _random_t(B, xv, w):
    """fp32 tensor scale codes for random lines: block scale amax / (element max * t) = 2**j * m."""
    sc = B.scale
    lo, hi = sc.emin - sc.man_bits - 2, sc.emax + 2
    j = lo + (w % np.uint64(hi - lo + 1)).astype(np.int64)
    m = 1.0 + ((w >> np.uint64(20)) & np.uint64((1 << 23) - 1)).astype(np.float64) * 2.0 ** -23
    with np.errstate(all="ignore"):
        a = np.abs(np.asarray(xv, np.float64))
        finite = np.isfinite(a).all(axis=1)
        amax = np.where(np.isfinite(a), a, 0).max(axis=1) if a.size else np.zeros(a.shape[0])
        t = amax / (float(B.element.max) * m * np.ldexp(1.0, j))
        t = np.clip(t, 2.0 ** -149, float(np.finfo(np.float32).max))
        t = np.where(finite & (amax > 0), t, 1.0)
    return np.asarray(encode(t, as_format("fp32")), np.uint64)  # nearest even, from the bits


def _gen_block_encode(s):
    B = _blocks.format(s["fmt"])
    I = as_format(s["in_fmt"])
    k, el, sc = s["k"], B.element, B.scale
    xs, ts = [], []
    if "corners" in s["sets"]:
        x = _unique_keep_order(_fit(_pad_rows(_encode_corner_blocks(B, I, k), k), I), axis=0)
        xs.append(x)
        if B.tensor_scale and s.get("tensor_scale") is None:
            xv = _values(x, I)
            one = np.full(x.shape[0], np.float32(1.0).view(np.uint32), np.uint64)
            if s.get("arithmetic") == "float32_te":  # G = fp32(2688 / amax) of the line, as TE computes it
                nominal = np.array([_blocks._te_global_encode_scale(exact_float32(row), B).view(np.uint32)
                                    for row in xv], np.uint64)
            else:
                nominal = np.array([np.float32(_blocks.tensor_scale(row, B)).view(np.uint32) for row in xv],
                                   np.uint64)
            xs[-1] = np.concatenate([x, x])
            ts.append(np.concatenate([one, nominal]))
        elif B.tensor_scale:
            ts.append(_t_column(s, x, I, None))
    if "random" in s["sets"] and s["count"]:
        n = s["count"]
        _check_lines(n * k, "block_encode vectors")
        keys = _keys(s["seed"])
        vals, uniform, body = _encode_random(B, I, k, n, keys["operands"])
        x = np.where(uniform, _random_codes(I, body), _fit(vals, I))
        xs.append(x)
        if B.tensor_scale:
            tw = _words64(keys["extra"], n)
            t = _random_t(B, _values(x, I), tw) if s.get("tensor_scale") is None else _t_column(s, x, I, None)
            if s.get("arithmetic") == "float32_te":  # G = fp32(1 / t), at most float32's max
                with np.errstate(over="ignore"):
                    g = np.float32(1) / t.astype(np.uint32).view(np.float32)
                t = np.minimum(g, np.finfo(np.float32).max).view(np.uint32).astype(np.uint64)
            ts.append(t)
    x = np.concatenate(xs) if xs else np.zeros((0, k), np.uint64)
    _check_lines(x.size, "block_encode vectors")
    t = np.concatenate(ts) if B.tensor_scale and ts else (np.zeros(0, np.uint64) if B.tensor_scale else None)
    u = None
    if s["rounding"] == "stochastic":
        from ._generate import _sr_words

        u = _sr_words(s, x.shape[0] * k).reshape(x.shape[0], k)
    scale, y = expected_block_encode(s, x, t, u)
    fields = [Field(f"x{i}", I.bits, I.name) for i in range(k)]
    cols = [x[:, i] for i in range(k)]
    if t is not None:
        fields.append(Field("g" if s.get("arithmetic") == "float32_te" else "t", 32, "fp32"))
        cols.append(t)
    if u is not None:
        fields += [Field(f"u{i}", s["sr_bits"]) for i in range(k)]
        cols += [u[:, i] for i in range(k)]
    fields.append(Field("s", sc.bits, sc.name))
    cols.append(scale)
    fields += [Field(f"y{i}", el.bits, el.name) for i in range(k)]
    cols += [y[:, i] for i in range(k)]
    return fields, cols


def _one_scale(sc) -> int:
    return int(encode(np.float64(1.0), sc))


def _scale_corners(sc) -> list:
    """Scale codes: 1.0, its neighbours, the smallest and largest, NaN (where the format has one)."""
    one = _one_scale(sc)
    if isinstance(sc, ExpFormat):
        out = [one, one - 1, one + 1, 0, 1, sc.max_code_magnitude - 1, sc.max_code_magnitude, sc.nan_code]
    else:
        out = [one, one - 1, one + 1, 1, 1 << sc.man_bits, sc.max_code_magnitude - 1, sc.max_code_magnitude, 0]
        if sc.has_nan:
            out.append(int(corner_codes(sc)[_isnan(corner_codes(sc), sc)][0]))
    return list(dict.fromkeys(c for c in out if c >= 0))


def _dot_corners(s):
    """Corner lines (scales [n, nb], elements [n, k] of a and b): the plain dot corners
    (every pair of element corner codes repeated, saturating runs, ties at the accumulator's
    lsb) at scale 1; every pair of corner scales with max·max, 1·1 and alternating-sign elements;
    with several blocks, blocks that cancel (+big, -big, small) under different scales."""
    from ._generate import _sequence_corners

    A, B = _blocks.format(s["fmt"]), _blocks.format(s["b_fmt"])
    acc, k, nb = as_format(s["acc"]), s["k"], _nblocks(s)
    ea, eb = A.element, B.element
    ca, cb = _sequence_corners(ea, eb, acc, k, False)
    one_a, one_b = _one_scale(A.scale), _one_scale(B.scale)
    rows = [(np.full(nb, one_a), r_a, np.full(nb, one_b), r_b) for r_a, r_b in zip(ca, cb)]

    def top(F):
        return int(_from_ord(_ord_range(F)[1], F))

    def unit(F):
        return int(encode(np.float64(1.0), F, "toward_zero", "saturate"))

    def neg(F, c):
        return int(encode(-decode(np.uint64(c), F), F, "toward_zero", "saturate"))

    elems = [([top(ea)] * k, [top(eb)] * k), ([unit(ea)] * k, [unit(eb)] * k),
             ([(unit(ea), neg(ea, unit(ea)))[j % 2] for j in range(k)], [unit(eb)] * k)]
    for xa in _scale_corners(A.scale):
        for xb in _scale_corners(B.scale):
            for pa, pb in elems:
                rows.append((np.full(nb, xa), pa, np.full(nb, xb), pb))
    if nb > 1:
        bs = A.block
        big_a = [c for c in _scale_corners(A.scale)][:3]
        for hi in big_a:
            sa = np.array([hi, hi] + [_one_scale(A.scale)] * (nb - 2))[:nb]
            pa = np.array([(unit(ea) if (i // bs) % 2 == 0 else neg(ea, unit(ea))) for i in range(k)])
            pa[(np.arange(k) // bs) >= 2] = unit(ea)
            rows.append((sa, pa, np.full(nb, one_b), np.full(k, top(eb))))
            rows.append((sa[::-1].copy(), pa, np.full(nb, one_b), np.full(k, unit(eb))))
    sa = np.array([r[0] for r in rows], np.uint64).reshape(-1, nb)
    a = np.array([r[1] for r in rows], np.uint64).reshape(-1, k)
    sb = np.array([r[2] for r in rows], np.uint64).reshape(-1, nb)
    b = np.array([r[3] for r in rows], np.uint64).reshape(-1, k)
    return sa, a, sb, b


def _random_scales(sc, w, width) -> np.ndarray:
    """Scale codes near 1.0 (within 2**±width), one in 16 uniform over every code (NaN included)."""
    one = _one_scale(sc)
    if isinstance(sc, ExpFormat):
        lo, hi, step = 0, sc.max_code_magnitude, 1
    else:
        lo, hi, step = 0, sc.max_code_magnitude, 1 << sc.man_bits
    span = 2 * width * step + 1
    near = np.clip(one - width * step + (w % np.uint64(span)).astype(np.int64), lo, hi).astype(np.uint64)
    uniform = (w >> np.uint64(32)) % np.uint64(sc.nan_code + 1 if isinstance(sc, ExpFormat) else 1 << (sc.bits - 1))
    return np.where(((w >> np.uint64(60)) & np.uint64(15)) == 0, uniform, near)


def _scale_width(acc) -> int:
    if isinstance(acc, FixedFormat):
        return max(2, (acc.bits - acc.frac) // 3)
    return int(min(20, max(2, acc.emax // 3)))


# tensor-scale pairs (ta, tb) of the corner lines: 1 and 1; odd 24-bit significands; the extremes
_T_CORNERS = [(1.0, 1.0), (float(np.float32(1 / 3)), float(np.float32(5 / 2688))),
              (2.0 ** -149, float(np.finfo(np.float32).max))]


def _dot_tensor_scales(s, sa, a, sb, b, n_random):
    """fp32 tensor-scale codes (ta, tb) per line for formats with a tensor scale (None for an operand
    without one): every corner line once per pair of ``_T_CORNERS``; the last ``n_random`` lines
    (the random ones, after the corners) get random scales — a random 24-bit significand at 2**e, e within ±20 of 1
    (7 in 8) or anywhere in float32's range, subnormals included. Returns the lines, repeated."""
    A, B = _blocks.format(s["fmt"]), _blocks.format(s["b_fmt"])
    n = sa.shape[0]
    n_corner = n - n_random
    reps = len(_T_CORNERS)
    idx = np.r_[np.tile(np.arange(n_corner), reps), np.arange(n_corner, n)]
    tc = np.array(_T_CORNERS, np.float32).view(np.uint32).astype(np.uint64)  # (reps, 2)
    t = np.zeros((idx.size, 2), np.uint64)
    t[: reps * n_corner] = np.repeat(tc, n_corner, axis=0)
    if n_random:
        w = _words64(_keys(s["seed"])["extra"], 2 * n_random).reshape(n_random, 2)
        sig = (w & np.uint64((1 << 23) - 1)).astype(np.float64) * 2.0 ** -23 + 1.0
        wide = ((w >> np.uint64(23)) & np.uint64(7)) == 0
        e = np.where(wide, -149 + ((w >> np.uint64(26)) % np.uint64(277)).astype(np.int64),
                     -20 + ((w >> np.uint64(26)) % np.uint64(41)).astype(np.int64))
        v = np.clip(np.ldexp(sig, e), 2.0 ** -149, float(np.finfo(np.float32).max))
        t[reps * n_corner:] = _fit(v, as_format("fp32"))
    ta = t[:, 0] if A.tensor_scale else None
    tb = t[:, 1] if B.tensor_scale else None
    return sa[idx], a[idx], sb[idx], b[idx], ta, tb


def _gen_block_dot(s):
    from ._generate import _finite_only, _mac_random

    A, B = _blocks.format(s["fmt"]), _blocks.format(s["b_fmt"])
    acc, k, nb = as_format(s["acc"]), s["k"], _nblocks(s)
    parts = []
    if "corners" in s["sets"]:
        parts.append(_dot_corners(s))
    if "random" in s["sets"] and s["count"]:
        n = s["count"]
        _check_lines(n * k, "block_dot vectors")
        w = _words64(_keys(s["seed"])["operands"], 2 * n * (k + nb) + n)
        wa = w[: n * k].reshape(n, k)
        wb = w[n * k: 2 * n * k].reshape(n, k)
        ws = w[2 * n * k: 2 * n * k + 2 * n * nb].reshape(2, n, nb)
        mag = w[2 * n * k + 2 * n * nb:]
        width = _scale_width(_final(s))
        parts.append((_random_scales(A.scale, ws[0], width), _mac_random(A.element, wa, mag),
                      _random_scales(B.scale, ws[1], width), _mac_random(B.element, wb, mag)))
    if parts:
        sa, a, sb, b = (np.concatenate([p[i] for p in parts]).astype(np.uint64) for i in range(4))
    else:
        sa, sb = np.zeros((0, nb), np.uint64), np.zeros((0, nb), np.uint64)
        a, b = np.zeros((0, k), np.uint64), np.zeros((0, k), np.uint64)
    n_corner = parts[0][0].shape[0] if "corners" in s["sets"] else 0
    ab = _unique_keep_order(np.concatenate([sa, a, sb, b], axis=1), axis=0) if sa.shape[0] else \
        np.zeros((0, 2 * (nb + k)), np.uint64)
    # the first occurrences are kept in order: the unique corner lines come first
    n_corner = _unique_keep_order(ab[:0] if not n_corner else
                                  np.concatenate([sa, a, sb, b], axis=1)[:n_corner], axis=0).shape[0]
    sa, a, sb, b = ab[:, :nb], ab[:, nb: nb + k], ab[:, nb + k: 2 * nb + k], ab[:, 2 * nb + k:]
    is_random = np.arange(sa.shape[0]) >= n_corner
    if _finite_only(dict(s, product=None)):
        bad = np.zeros(sa.shape[0], bool)
        for codes, F in ((sa, A.scale), (sb, B.scale), (a, A.element), (b, B.element)):
            bad |= (_isnan(codes, F) | _isinf(codes, F)).any(axis=1)
        sa, a, sb, b, is_random = sa[~bad], a[~bad], sb[~bad], b[~bad], is_random[~bad]
    ta = tb = None
    if A.tensor_scale or B.tensor_scale:
        sa, a, sb, b, ta, tb = _dot_tensor_scales(s, sa, a, sb, b, int(is_random.sum()))
    u = None
    if s["rounding"] == "stochastic":
        from ._generate import _sr_words

        T = _sr_steps(s)
        u = _sr_words(s, sa.shape[0] * T).reshape(sa.shape[0], T)
    y = expected_block_dot(s, sa, a, sb, b, u, ta, tb)
    final = _final(s)
    fa, fb = A.scale, B.scale
    fields = [Field(f"sa{j}", fa.bits, fa.name) for j in range(nb)] + \
        [Field(f"a{i}", A.element.bits, A.element.name) for i in range(k)]
    cols = [sa[:, j] for j in range(nb)] + [a[:, i] for i in range(k)]
    if ta is not None:
        fields.append(Field("ta", 32, "fp32"))
        cols.append(ta)
    fields += [Field(f"sb{j}", fb.bits, fb.name) for j in range(nb)] + \
        [Field(f"b{i}", B.element.bits, B.element.name) for i in range(k)]
    cols += [sb[:, j] for j in range(nb)] + [b[:, i] for i in range(k)]
    if tb is not None:
        fields.append(Field("tb", 32, "fp32"))
        cols.append(tb)
    if u is not None:
        fields += [Field(f"u{j}", s["sr_bits"]) for j in range(u.shape[1])]
        cols += [u[:, j] for j in range(u.shape[1])]
    fields.append(Field("y", final.bits, final.name))
    cols.append(y)
    return fields, cols


def describe_block(s) -> str:
    if s["op"] == "block_encode":
        B = _blocks.format(s["fmt"])
        what = f"block_encode {s['in_fmt']} -> {s['fmt']} ({B.element.name} elements, {B.scale.name} scale), " \
               f"k {s['k']}"
        if B.power_of_two:
            what += f", scale_rule {s['scale_rule']}, scale_overflow {s['scale_overflow']}"
        else:
            what += f", scale_min {s['scale_min']!r}, arithmetic {s['arithmetic']}"
            if B.tensor_scale and s["arithmetic"] == "float32_te":
                what += ", TransformerEngine's global scale G per line (field g)"
            elif B.tensor_scale:
                what += ", tensor scale " + ("per line" if s.get("tensor_scale") is None else repr(s["tensor_scale"]))
        return what + f", element rounding {s['rounding']}"
    order = s["order"] + (f" by {s['chunk']}" + (f", outer {s['outer']}" if s.get("outer") else "")
                          if s["order"] == "chunked" else "")
    return (f"block_dot {s['fmt']} x {s['b_fmt']} into {s['acc']}, k {s['k']} ({_nblocks(s)} block(s)), "
            f"order {order}, rounding {s['rounding']}, overflow {s['overflow']}")


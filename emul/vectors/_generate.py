"""What a vectors table holds: the operands of each op (exhaustive, corner and random sets) and emul's
expected results for them."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np

from .. import random as _random
from ..formats import FixedFormat, FloatFormat, format as as_format
from ..quantize import code_dtype, encode
from ..rounding import Overflow
from ._codes import (_arith_corners, _check_lines, _code_py, _extremes, _fits_float64, _from_ord, _grid, _isinf,
                     _isnan, _ord, _ord_py, _ord_range, _pow2, _random_codes, _succ, _succ_py, _toward_zero_ord,
                     _unique_keep_order, _valid_mask, _value_py, _values, _words64, all_codes, corner_codes, decode,
                     encode_exact)
from ._settings import _WRAPS, INIT_PER_VECTOR, canonical
from ._table import Field, Vectors

# ============================================================================== expected values


def _sr_kwargs(s, u):
    if s["rounding"] != "stochastic":
        return {}
    return {"random_bits": u, "sr_bits": s["sr_bits"], "sr_method": s["sr_method"]}


def expected_arith(s, codes, u=None) -> np.ndarray:
    """Expected result codes of add/sub/mul/fma vectors (``codes``: one array per operand), from
    ``emul.arith`` (exact result, rounded once)."""
    from .. import arith

    op, out = s["op"], as_format(s["out_fmt"])
    fmts = [s["fmt"], s["b_fmt"]] + ([s["c_fmt"]] if op == "fma" else [])
    vals = [_values(c, f) for c, f in zip(codes, fmts)]
    r = getattr(arith, op)(*vals, out, rounding=s["rounding"], overflow=s["overflow"], **_sr_kwargs(s, u))
    return encode_exact(r, out, overflow=s["overflow"])  # r holds values of out: looked up


def _dot():
    try:
        from ..accumulate import dot
    except ImportError:  # emul.accumulate is written concurrently; the per-step rule below is its spec
        return None
    return dot


def _init_kwarg(s, init_codes, final, shape) -> dict:
    """``init=`` for emul.dot: the table's one value, the per-vector codes' values reshaped to
    ``shape``, or nothing (+0)."""
    if init_codes is not None:
        return {"init": np.asarray(_values(init_codes, final)).reshape(shape)}
    if s.get("init") is not None:
        return {"init": s["init"]}
    return {}


def expected_mac(s, a_codes, b_codes, init_codes=None) -> np.ndarray:
    """Expected accumulator codes after every step of MAC sequences (``[n, k]`` operand codes).

    Step j of sequence i holds the sequential dot product of the first j + 1 pairs:
    s = init (the table's ``init``, sequence i's code in ``init_codes``, or +0), then
    s = Q_acc(s + p) for each product p (exact, or rounded once to ``product``).
    With ``emul.accumulate`` installed this is ``dot(a[:j+1], b[:j+1], acc, order="sequential")``;
    without it, the same steps as ``emul.arith.fma(a, b, s, acc)`` (exact products) or
    ``emul.arith.add(s, mul(a, b, product), acc)``.
    """
    acc = as_format(s["acc"])
    a = _values(a_codes, s["fmt"])
    b = _values(b_codes, s["b_fmt"])
    n, k = a.shape
    out = np.empty((n, k), np.uint64)
    kw = dict(rounding=s["rounding"], overflow=s["overflow"])
    prod = {} if s["product"] is None else {"product": s["product"], "product_rounding": s["product_rounding"]}
    dot = _dot()
    init = _init_kwarg(s, init_codes, acc, (n,))
    if dot is not None:
        for j in range(k):
            r = dot(a[:, : j + 1], b[:, : j + 1], acc, order="sequential", axis=-1, **init, **prod, **kw)
            out[:, j] = encode_exact(np.asarray(r).reshape(n), acc, overflow=s["overflow"])
        return out
    from .. import arith

    run = np.broadcast_to(np.asarray(init.get("init", 0.0), np.float64), (n,)).copy()
    for j in range(k):
        if s["product"] is None:
            run = np.asarray(arith.fma(a[:, j], b[:, j], run, acc, **kw), np.float64)
        else:
            p = arith.mul(a[:, j], b[:, j], s["product"], s["product_rounding"])
            run = np.asarray(arith.add(run, p, acc, **kw), np.float64)
        out[:, j] = encode_exact(run, acc, overflow=s["overflow"])
    return out


# ============================================================================== generators


def _keys(seed):
    root = _random.key(seed)
    return {name: _random.fold_in(root, i) for i, name in enumerate(("operands", "sr", "extra"))}


def _sr_words(s, n):
    """Random words per line for stochastic rounding (threefry or lfsr sources)."""
    r = s["sr_bits"]
    if s["random_source"] == "lfsr":
        return _random.lfsr(n, r=r, **s["lfsr"]).astype(np.uint64)
    return (_random.bits(_keys(s["seed"])["sr"], n) >> np.uint32(32 - r)).astype(np.uint64)


def _with_sr(s, operand_codes):
    """Attach the SR random words: per line (threefry/lfsr) or every word per operand tuple (all)."""
    if s.get("rounding") != "stochastic":
        return operand_codes, None
    n = operand_codes[0].size
    if s["random_source"] == "all":
        r = 1 << s["sr_bits"]
        _check_lines(n * r, "random_source='all'")
        ops = [np.repeat(c, r) for c in operand_codes]
        return ops, np.tile(np.arange(r, dtype=np.uint64), n)
    return operand_codes, _sr_words(s, n)


def _quantize_inputs(s):
    I, O = as_format(s["in_fmt"]), as_format(s["fmt"])
    parts = []
    if "exhaustive" in s["sets"]:
        _check_lines(1 << I.bits, f"exhaustive {I.name} inputs")
        parts.append(all_codes(I))
    if "corners" in s["sets"]:
        parts.append(_quantize_corners(I, O))
    if "random" in s["sets"] and s["count"]:
        parts.append(_quantize_random(I, O, s["count"], _keys(s["seed"])["operands"]))
    x = np.concatenate(parts) if parts else np.zeros(0, np.uint64)
    ovf = Overflow(s["overflow"])
    bad = np.zeros(x.shape, bool)
    if isinstance(O, FixedFormat) or not O.has_nan:
        bad |= _isnan(x, I)
    if ovf in _WRAPS:
        bad |= _isinf(x, I)
    return x[~bad]


def _in_ord_of(values, I):
    """Input-format ordinals of float64 values, rounded toward zero and clipped to the range
    (formats that fit float64)."""
    v = np.asarray(values, np.float64)
    if isinstance(I, FixedFormat):
        with np.errstate(all="ignore"):
            raw = np.trunc(v / I.lsb)
        return np.clip(np.nan_to_num(raw), I.min_raw, I.max_raw).astype(np.int64)
    return _ord(encode(v, I, "toward_zero", "saturate"), I)


def _quantize_plan(I, O):
    """How emul computes the codes of quantize vectors from inputs of I: ``(raw, target, shift)``.

    Inputs that fit float64 (every float format, fixed point of at most 53 bits) are passed as
    their values (``raw`` False) and rounded to ``target`` = O.  Wider fixed-point inputs with
    fraction bits (``fx<64,10>``) are passed as their raw integers r (exact) and rounded to
    ``target`` = O scaled by 2^frac (values 2^frac times O's: rounding r to it gives the code of
    r 2^-frac rounded to O, in every mode, with every overflow rule).  Where that scaled format
    does not exist (a float target with float64's own exponent range, such as fp64) but every
    |r 2^-frac| lies in O's normal range, the raw integers are rounded to a proxy float with O's
    precision and the codes are re-based to O's exponent (``shift`` = frac).  Otherwise
    ValueError."""
    if not (isinstance(I, FixedFormat) and I.frac != 0 and not I.fits_float64):
        return False, O, None
    f = I.frac
    try:
        if isinstance(O, FixedFormat):
            return True, FixedFormat(O.bits, O.frac - f, signed=O.signed), None
        return True, FloatFormat(O.exp_bits, O.man_bits, bias=O.bias - f, subnormals=O.subnormals,
                                 specials=O.specials), None
    except ValueError as exc:
        reason = str(exc)
    if isinstance(O, FloatFormat) and O.emin <= -f and I.bits - f <= O.emax:
        return True, FloatFormat(8, O.man_bits), f  # |r| in [1, 2^64]: normal there too
    raise ValueError(
        f"in_fmt={I.name}: its values do not fit float64; emul rounds them to {O.name} through the raw "
        f"integers r (value r * 2^-{f}), but {O.name} scaled by 2^{f} does not exist ({reason}) and the "
        f"values reach beyond its normal range")


def _rebase(codes, proxy, O, shift) -> np.ndarray:
    """Codes of the proxy float (normal values or zeros) as codes of O for the values * 2^-shift."""
    c = np.asarray(codes, np.uint64)
    m = np.uint64(O.man_bits)
    e = ((c >> m) & np.uint64((1 << proxy.exp_bits) - 1)).astype(np.int64)
    mag = (((e - proxy.bias - shift + O.bias).astype(np.uint64)) << m) | (c & np.uint64((1 << O.man_bits) - 1))
    sign = (c >> np.uint64(proxy.bits - 1)) << np.uint64(O.bits - 1)
    return np.where(e == 0, np.uint64(0), mag) | sign


def expected_quantize(s, x, u=None) -> np.ndarray:
    """Expected result codes of quantize vectors with input codes ``x``: ``emul.encode`` of the
    exact input values (float64 or exact integers; wide fixed point through its raw integers,
    see ``_quantize_plan``)."""
    I, O = as_format(s["in_fmt"]), as_format(s["fmt"])
    raw, target, shift = _quantize_plan(I, O)
    vals = _values(x, FixedFormat(I.bits, 0, signed=I.signed) if raw else I)
    y = encode(vals, target, s["rounding"], s["overflow"], **_sr_kwargs(s, u))
    return y if shift is None else _rebase(y, target, O, shift).astype(code_dtype(O))


def _precision_ords(I, O) -> set:
    """Target ordinals around the magnitudes where the coarser grid of the two formats starts
    to need rounding: a float target fed fixed-point inputs (lsb 2^-f) first rounds in the
    binade of 2^p lsb (p = its precision: ties 2^24 + 1 and 2^24 + 3 for int -> fp32, 2^11 + 1
    for fp16), so take the start of that binade, of the one below and of two above, with the
    neighbouring target values of both signs; a fixed-point target fed floats has half-lsb ties
    up to 2^man_bits(I) lsb (1023.5 for fp16 -> int)."""
    out = set()
    if isinstance(O, FloatFormat) and isinstance(I, FixedFormat):
        e0 = O.man_bits + 1 - I.frac
        for e in range(e0 - 1, e0 + 3):
            if O.emin <= e <= O.emax:
                o = (e + O.bias) << O.man_bits  # the ordinal of 2^e: 2^e - 1 ulp .. 2^e + 2 ulp
                out |= {sign * (o + d) for d in (-1, 0, 1, 2) for sign in (1, -1)}
    elif isinstance(O, FixedFormat) and isinstance(I, FloatFormat):
        k = 1 << I.man_bits
        lo, hi = _ord_range(O)
        out |= {o for d in (-2, -1, 0, 1) for o in (k + d, -(k + d)) if lo <= o <= hi}
    return out


def _quantize_corners(I, O) -> np.ndarray:
    """Inputs around the target's corners, exactly (Python ints and Fractions, any width):
    every target corner value and its successor, the target's precision boundaries and the
    input's extremes in the target's terms; the points on them, halfway and a quarter and three
    quarters between them, mapped to input codes toward zero, with their two input neighbours;
    then the input format's own corners."""
    co = corner_codes(O)
    finite = co[~(_isnan(co, O) | _isinf(co, O))]
    lo, hi = _ord_range(O)
    T = {_ord_py(c, O) for c in finite.tolist()}
    T |= {_succ_py(O, o) for o in T} | {hi + 1, hi + 2, lo - 1, lo - 2}
    T |= _precision_ords(I, O)
    for v in _extremes(I):
        o = _toward_zero_ord(O, v)
        T |= {o - 1, o, o + 1}
    pts = []
    for o in sorted(T):
        g0, g1 = _value_py(O, o), _value_py(O, _succ_py(O, o))
        d = g1 - g0
        pts += [g0, g0 + d / 2, g0 + d / 4, g0 + 3 * d / 4]
    if isinstance(O, FloatFormat):
        tiny, top = Fraction(O.min_subnormal) / 4, 2 * Fraction(O.max)
        pts += [tiny, -tiny, top, -top]
    base = {_toward_zero_ord(I, p) for p in pts}
    io = sorted({b + k for b in base for k in (-1, 0, 1)})
    c = np.array([_code_py(o, I) for o in io] + corner_codes(I).tolist(), np.uint64)
    return _unique_keep_order(c[_valid_mask(c, I)])


def _random_target_ords(I, O):
    """Two ranges (first, last) of target ordinals for random vectors (the first may be empty:
    last < first): those the inputs can reach (one more at each end), and for a float target
    fed fixed-point inputs without the band of target values below the input's lsb in magnitude
    (their inputs are only 0 and the lsb)."""
    lo, hi = _ord_range(O)
    vlo, vhi = _extremes(I)
    lo = max(lo, _toward_zero_ord(O, vlo) - 1)  # ordinals beyond the input's reach only repeat its ends
    hi = min(hi, _toward_zero_ord(O, vhi) + 1)
    if isinstance(O, FloatFormat) and isinstance(I, FixedFormat):
        small = _toward_zero_ord(O, _pow2(-I.frac))  # the target value at (or just below) one lsb
        if 1 <= small <= hi:
            return (lo, max(lo - 1, -small)), (max(lo, small - 1), hi)
    return (lo, lo - 1), (lo, hi)


def _quantize_random(I, O, count, key) -> np.ndarray:
    """Mostly inputs between two adjacent target values (a uniform target ordinal among those
    the inputs can reach, then a uniform input code between the two), one in eight uniform over
    the input codes.  Exact: float64 arithmetic when both formats fit float64, else Python ints."""
    w = _words64(key, 3 * count).reshape(count, 3)
    (a1, b1), (a2, b2) = _random_target_ords(I, O)
    len1 = b1 - a1 + 1
    span = len1 + b2 - a2 + 1  # up to 2^64
    uniform = _random_codes(I, w[:, 2])  # valid codes (fixed point: every pattern is one)
    if _fits_float64(I) and _fits_float64(O):
        k = (w[:, 1] % np.uint64(span)).astype(np.int64)
        o = np.where(k < len1, a1 + k, a2 + (k - len1))
        a, b = _in_ord_of(_grid(O, o), I), _in_ord_of(_grid(O, _succ(O, o)), I)
        lo_i, hi_i = np.minimum(a, b), np.maximum(a, b)
        width = (hi_i - lo_i + 1).astype(np.uint64)
        near = _from_ord(lo_i + (w[:, 2] % width).astype(np.int64), I)
    else:
        near = np.empty(count, np.uint64)
        for k, (w1, w2) in enumerate(zip(w[:, 1].tolist(), w[:, 2].tolist())):
            o = w1 % span
            o = a1 + o if o < len1 else a2 + (o - len1)
            a = _toward_zero_ord(I, _value_py(O, o))
            b = _toward_zero_ord(I, _value_py(O, _succ_py(O, o)))
            near[k] = _code_py(min(a, b) + w2 % (abs(a - b) + 1), I)
    return np.where((w[:, 0] & np.uint64(7)) == 0, uniform, near)


def _gen_quantize(s):
    I, O = as_format(s["in_fmt"]), as_format(s["fmt"])
    (x,), u = _with_sr(s, [_quantize_inputs(s)])
    y = expected_quantize(s, x, u)
    fields = [Field("x", I.bits, I.name)]
    cols = [x]
    if u is not None:
        fields.append(Field("u", s["sr_bits"]))
        cols.append(u)
    fields.append(Field("y", O.bits, O.name))
    cols.append(y)
    return fields, cols


def _operand_sets(s, fmts, random_fn):
    """Operand code tuples from the sets: exhaustive product, corner product, random."""
    parts = []
    if "exhaustive" in s["sets"]:
        alls = [all_codes(f) for f in fmts]
        _check_lines(math.prod(a.size for a in alls), "exhaustive operands")
        parts.append(_product(alls))
    if "corners" in s["sets"]:
        parts.append(_product([_arith_corners(f) for f in fmts]))
    if "random" in s["sets"] and s["count"]:
        parts.append(random_fn())
    if not parts:
        return [np.zeros(0, np.uint64) for _ in fmts]
    return [np.concatenate([p[i] for p in parts]) for i in range(len(fmts))]


def _product(arrays):
    grids = np.meshgrid(*arrays, indexing="ij")
    return [g.reshape(-1).astype(np.uint64) for g in grids]


def _gen_arith(s):
    op = s["op"]
    names = ["a", "b", "c"][: 3 if op == "fma" else 2]
    fmts = [as_format(s["fmt"]), as_format(s["b_fmt"])] + ([as_format(s["c_fmt"])] if op == "fma" else [])
    out = as_format(s["out_fmt"])

    def rand():
        w = _words64(_keys(s["seed"])["operands"], len(fmts) * s["count"]).reshape(s["count"], len(fmts))
        return [_random_codes(f, w[:, i]) for i, f in enumerate(fmts)]

    ops = _operand_sets(s, fmts, rand)
    # drop operand tuples whose result the output format cannot hold (NaN without NaN; inf under wrap)
    bad = np.zeros(ops[0].shape, bool)
    if isinstance(out, FixedFormat) or not out.has_nan:
        for c, f in zip(ops, fmts):
            bad |= _isnan(c, f)
        if fmts and all(isinstance(f, FloatFormat) for f in fmts) and op != "fma":
            with np.errstate(all="ignore"):
                v = [decode(c, f) for c, f in zip(ops, fmts)]
                r = {"add": np.add, "sub": np.subtract, "mul": np.multiply}[op](*v)
            bad |= np.isnan(r)
        elif op == "fma":
            with np.errstate(all="ignore"):
                v = [decode(c, f) if isinstance(f, FloatFormat) else _values(c, f).astype(np.float64)
                     for c, f in zip(ops, fmts)]
                bad |= np.isnan(v[0] * v[1] + v[2])
    if Overflow(s["overflow"]) in _WRAPS:
        for c, f in zip(ops, fmts):
            bad |= _isinf(c, f)
    ops = [c[~bad] for c in ops]
    ops, u = _with_sr(s, ops)
    y = expected_arith(s, ops, u)
    fields = [Field(nm, f.bits, f.name) for nm, f in zip(names, fmts)]
    cols = list(ops)
    if u is not None:
        fields.append(Field("u", s["sr_bits"]))
        cols.append(u)
    fields.append(Field("y", out.bits, out.name))
    cols.append(y)
    return fields, cols


def _finite_codes(codes, fmt):
    """Non-finite codes replaced by the largest finite value of the same sign."""
    bad = _isnan(codes, fmt) | _isinf(codes, fmt)
    if not bad.any():
        return codes
    lo, hi = _ord_range(fmt)
    neg = (codes >> np.uint64(fmt.bits - 1)) != 0
    return np.where(bad, np.where(neg, _from_ord(lo, fmt), _from_ord(hi, fmt)), codes)


def _finite_only(s) -> bool:
    """Whether a mac/dot table must hold finite operands only: an accumulator (or outer or
    product format) without NaN, a fixed-point one, a product format without infinities, or a
    wrapping overflow rule cannot take a NaN or an infinity (emul raises; no hardware defines it)."""
    fmts = [as_format(s["acc"])] + [as_format(s[key]) for key in ("outer", "product") if s.get(key)]
    if any(isinstance(f, FixedFormat) or not f.has_nan for f in fmts):
        return True
    if s.get("product") and not as_format(s["product"]).has_inf:
        return True
    return Overflow(s["overflow"]) in _WRAPS


def _finite_corners(fmt):
    codes = corner_codes(fmt)
    return codes[~(_isnan(codes, fmt) | _isinf(codes, fmt))]


def _pow2_codes(fmt) -> dict:
    """{e: code} for every finite power of two 2**e of a format (positive codes)."""
    if isinstance(fmt, FixedFormat):
        top = fmt.bits - 1 if fmt.signed else fmt.bits
        return {i - fmt.frac: 1 << i for i in range(top)}
    m = fmt.man_bits
    cands = [e << m for e in range(1, 1 << fmt.exp_bits)] + ([1 << j for j in range(m)] if fmt.subnormals else [])
    c = np.array(cands, np.uint64)
    v = decode(c, fmt)
    ok = np.isfinite(v) & (v > 0)
    return {int(np.log2(x)): int(code) for x, code in zip(v[ok].tolist(), c[ok].tolist())}


def _negate(code: int, fmt) -> int | None:
    """The code of -value (None when the format cannot hold it)."""
    if isinstance(fmt, FloatFormat):
        return code | (1 << (fmt.bits - 1))
    if not fmt.signed or code == 1 << (fmt.bits - 1):
        return None
    return (-code) & ((1 << fmt.bits) - 1)


def _product_pair(A, B, e, negative=False):
    """Codes (a, b) of A and B whose exact product is +-2**e, or None."""
    pa, pb = _pow2_codes(A), _pow2_codes(B)
    for ea in sorted(pa, key=lambda x: abs(x - e / 2)):  # balanced operands first
        if e - ea in pb:
            a = _negate(pa[ea], A) if negative else pa[ea]
            if a is not None:
                return a, pb[e - ea]
            b = _negate(pb[e - ea], B)
            if b is not None:
                return pa[ea], b
    return None


def _sequence_corners(A, B, acc, k, finite) -> tuple:
    """Corner sequences of k products (codes ``[n, k]`` of A and B) for mac and dot tables:

    - every pair of corner codes (finite ones only when ``finite``), repeated k times: runs of
      max·max, min·max, 0·x, subnormal products…;
    - saturating runs: +max·max for the first half then -max·max (and the other way round),
      and alternating signs +, -, +, … (the bound is reached, left and reached again);
    - ties at the accumulator's lsb (fixed point: its lsb; float: the spacing at 1.0) where A·B
      can form the needed powers of two h = lsb/2 exactly: 1 then k - 1 times ±h (every step a
      tie, in round-to-nearest the sum stays or moves by one lsb), ±h from zero, 1 then h, -h, h, …
    """
    ca, cb = (_finite_corners(A), _finite_corners(B)) if finite else (corner_codes(A), corner_codes(B))
    pa, pb = _product([ca, cb])
    seqs_a, seqs_b = [np.repeat(pa[:, None], k, 1)], [np.repeat(pb[:, None], k, 1)]
    hi_a, lo_a, hi_b = (int(_from_ord(_ord_range(A)[1], A)), int(_from_ord(_ord_range(A)[0], A)),
                        int(_from_ord(_ord_range(B)[1], B)))
    half = (k + 1) // 2
    rows_a = [[hi_a] * half + [lo_a] * (k - half), [lo_a] * half + [hi_a] * (k - half),
              [(hi_a, lo_a)[j % 2] for j in range(k)]]
    rows_b = [[hi_b] * k] * 3
    lsb_e = -acc.frac if isinstance(acc, FixedFormat) else -acc.man_bits
    one = _product_pair(A, B, 0)
    for base in ((one,) if one is not None else ()) + (None,):
        h, mh = _product_pair(A, B, lsb_e - 1), _product_pair(A, B, lsb_e - 1, negative=True)
        for tie in (h, mh):
            if tie is None:
                continue
            start = [base] if base is not None else []
            rest = [tie] * (k - len(start))
            for row in (start + rest,):
                rows_a.append([p[0] for p in row])
                rows_b.append([p[1] for p in row])
        if base is not None and h is not None and mh is not None:
            row = [base] + [(h, mh)[j % 2] for j in range(k - 1)]
            rows_a.append([p[0] for p in row])
            rows_b.append([p[1] for p in row])
    seqs_a.append(np.array(rows_a, np.uint64).reshape(-1, k))
    seqs_b.append(np.array(rows_b, np.uint64).reshape(-1, k))
    a, b = np.concatenate(seqs_a), np.concatenate(seqs_b)
    ab = _unique_keep_order(np.concatenate([a, b], axis=1), axis=0)
    return ab[:, :k], ab[:, k:]


def _init_corner_rows(A, B, final, k, finite):
    """Corner sequences for a per-vector init (codes ``[n, k]`` of A and B, ``[n]`` of final):
    every corner value of the final format (finite ones only when ``finite``; +0 is the main
    corner set's start) as the start of a run of zero products (the init passes through, -0
    meets +0 products), of max·max, of -max·max (from one bound toward the other) and of
    alternating signs."""
    hi_a, lo_a, hi_b = (int(_from_ord(_ord_range(A)[1], A)), int(_from_ord(_ord_range(A)[0], A)),
                        int(_from_ord(_ord_range(B)[1], B)))
    runs = np.array([[0] * k, [hi_a] * k, [lo_a] * k, [(hi_a, lo_a)[j % 2] for j in range(k)]], np.uint64)
    runs_b = np.array([[0] * k] + [[hi_b] * k] * 3, np.uint64)
    inits = _finite_corners(final) if finite else corner_codes(final)
    inits = inits[inits != 0]
    n = runs.shape[0]
    return np.tile(runs, (inits.size, 1)), np.tile(runs_b, (inits.size, 1)), np.repeat(inits, n)


def _random_init(final, w, finite):
    """Random per-vector init codes of the final format (finite where the table is)."""
    c = _random_codes(final, w)
    return _finite_codes(c, final) if finite or isinstance(final, FloatFormat) else c


def _sequences(s, what):
    """The operand codes ``[n, k]`` of a mac or dot table: corner sequences, then ``count`` random;
    and with ``init="per_vector"`` the init code of each (``[n]`` codes of the final format: +0
    for the main corner set, then :func:`_init_corner_rows`, random codes for random lines), else
    None."""
    A, B, acc = as_format(s["fmt"]), as_format(s["b_fmt"]), as_format(s["acc"])
    final = _dot_final(s) if what == "dot" else acc
    per_vector = s.get("init") == INIT_PER_VECTOR
    k = s["k"]
    if "exhaustive" in s["sets"]:
        raise ValueError(f"sets='exhaustive': not available for {what} vectors (use corners and random)")
    finite = _finite_only(s)
    parts = []  # (a, b, init) per set
    if "corners" in s["sets"]:
        ca, cb = _sequence_corners(A, B, acc, k, finite)
        ci = np.zeros(ca.shape[0], np.uint64)
        if per_vector:
            ia, ib, ii = _init_corner_rows(A, B, final, k, finite)
            ca, cb, ci = np.concatenate([ca, ia]), np.concatenate([cb, ib]), np.concatenate([ci, ii])
        parts.append((ca, cb, ci))
    if "random" in s["sets"] and s["count"]:
        n = s["count"]
        _check_lines(n * k, f"{what} vectors")
        w = _words64(_keys(s["seed"])["operands"], 2 * n * k + n).astype(np.uint64)
        scale = w[2 * n * k:]
        wa, wb = w[: n * k].reshape(n, k), w[n * k: 2 * n * k].reshape(n, k)
        ra, rb = _mac_random(A, wa, scale), _mac_random(B, wb, scale)
        # init from its own stream: the operands are those of the same seed without init
        ri = _random_init(final, _words64(_keys(s["seed"])["extra"], n), finite) if per_vector else \
            np.zeros(n, np.uint64)
        parts.append((ra, rb, ri))
    for i, (a, b, init) in enumerate(parts):
        _check_lines(a.size, f"{what} vectors")
        if finite:
            keep = ~(_isnan(a, A) | _isnan(b, B) | _isinf(a, A) | _isinf(b, B)).any(axis=1)
            a, b, init = a[keep], b[keep], init[keep]
        if per_vector and i == 0 and "corners" in s["sets"]:  # an init corner may repeat a line
            abi = _unique_keep_order(np.concatenate([a, b, init[:, None]], axis=1), axis=0)
            a, b, init = abi[:, :k], abi[:, k:2 * k], abi[:, 2 * k]
        parts[i] = (a, b, init)
    a = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, k), np.uint64)
    b = np.concatenate([p[1] for p in parts]) if parts else np.zeros((0, k), np.uint64)
    init = np.concatenate([p[2] for p in parts]) if parts else np.zeros(0, np.uint64)
    _check_lines(a.size, f"{what} vectors")
    return a, b, (init if per_vector else None)


def _gen_mac(s):
    A, B, acc = as_format(s["fmt"]), as_format(s["b_fmt"]), as_format(s["acc"])
    a, b, init = _sequences(s, "mac")
    y = expected_mac(s, a, b, init)
    first = np.zeros(a.shape, np.uint64)
    first[:, 0] = 1
    fields = [Field("first", 1), Field("a", A.bits, A.name), Field("b", B.bits, B.name)]
    cols = [first.reshape(-1), a.reshape(-1), b.reshape(-1)]
    if init is not None:  # the sequence's starting value, on each of its lines
        fields.append(Field("init", acc.bits, acc.name))
        cols.append(np.repeat(init, s["k"]))
    return fields + [Field("acc", acc.bits, acc.name)], cols + [y.reshape(-1)]


def _dot_final(s):
    return as_format(s["outer"] if s["order"] == "chunked" and s.get("outer") else s["acc"])


def _dot_sr_words(s, n) -> np.ndarray | None:
    """The SR words of n dot products, ``[n, T]`` (T = emul.accumulate.sr_steps): the stream's
    words in line order, a line's words in the order of its rounding steps; None without SR."""
    if s["rounding"] != "stochastic":
        return None
    from ..accumulate import sr_steps

    t = sr_steps(s["k"], s["order"], s.get("chunk"))
    return _sr_words(s, n * t).reshape(n, t)


def expected_dot(s, a_codes, b_codes, u=None, init_codes=None):
    """Expected result codes of dot vectors: ``emul.dot`` of each line's a and b (``[n, k]``
    operand codes) with the table's settings, init (the table's one value, or each line's code in
    ``init_codes``) and SR words ``u`` (``[n, T]``); with
    ``running=True`` also ``[n, k]`` codes of the running sums (the sequential dot product of
    the first j + 1 pairs, with the first j + 1 words). Returns ``(y, running or None)``."""
    from ..accumulate import dot, sr_steps

    a, b = _values(a_codes, s["fmt"]), _values(b_codes, s["b_fmt"])
    n, k = a.shape
    final = _dot_final(s)
    kw = dict(rounding=s["rounding"], overflow=s["overflow"], order=s["order"],
              chunk=s["chunk"] if s["order"] == "chunked" else None, outer=s["outer"])
    if s["product"] is not None:
        kw.update(product=s["product"], product_rounding=s["product_rounding"])
    if u is not None:
        kw.update(sr_bits=s["sr_bits"], sr_method=s["sr_method"])
    kw.update(_init_kwarg(s, init_codes, final, (n,)))

    def run(j):
        if n == 0:
            return np.zeros(0, np.uint64)
        t = sr_steps(j, s["order"], s["chunk"] if s["order"] == "chunked" else None)
        r = dot(a[:, :j], b[:, :j], s["acc"], axis=-1, random_bits=None if u is None else u[:, :t], **kw)
        return encode_exact(np.asarray(r).reshape(n), final, overflow=s["overflow"]).astype(np.uint64)

    y = run(k)
    running = np.stack([run(j + 1) for j in range(k)], axis=1) if s["running"] else None
    return y, running


def _gen_dot(s):
    A, B, acc = as_format(s["fmt"]), as_format(s["b_fmt"]), as_format(s["acc"])
    final, k = _dot_final(s), s["k"]
    a, b, init = _sequences(s, "dot")
    u = _dot_sr_words(s, a.shape[0])
    y, running = expected_dot(s, a, b, u, init)
    fields = [Field(f"a{j}", A.bits, A.name) for j in range(k)] + [Field(f"b{j}", B.bits, B.name) for j in range(k)]
    cols = [a[:, j] for j in range(k)] + [b[:, j] for j in range(k)]
    if init is not None:  # the line's starting value, a code of the final format
        fields.append(Field("init", final.bits, final.name))
        cols.append(init)
    if u is not None:
        fields += [Field(f"u{j}", s["sr_bits"]) for j in range(u.shape[1])]
        cols += [u[:, j] for j in range(u.shape[1])]
    if running is not None:
        fields += [Field(f"s{j}", acc.bits, acc.name) for j in range(k)]
        cols += [running[:, j] for j in range(k)]
    fields.append(Field("y", final.bits, final.name))
    cols.append(y)
    return fields, cols


def _mac_random(fmt, w, scale):
    """Random MAC operands: fixed point with one magnitude width per sequence (so sums drift
    toward the accumulator's bounds at different rates); floats uniform and finite."""
    if isinstance(fmt, FloatFormat):
        return _finite_codes(_random_codes(fmt, w), fmt)
    width = (scale % np.uint64(fmt.bits))[:, None] + np.uint64(1)
    raw = w & ((np.uint64(1) << width) - np.uint64(1))
    if fmt.signed:
        top = np.uint64(1) << (width - np.uint64(1))
        raw = np.where(raw & top, raw | ~((top << np.uint64(1)) - np.uint64(1)), raw)
    return raw & np.uint64((1 << fmt.bits) - 1) if fmt.bits < 64 else raw


def _gen_nm(s):
    F, n, m = as_format(s["fmt"]), s["n"], s["m"]
    blocks = []
    if "exhaustive" in s["sets"]:
        codes = all_codes(F)
        _check_lines(codes.size ** m, f"exhaustive {m}-blocks of {F.name}")
        blocks.append(np.stack(_product([codes] * m), axis=1))
    if "corners" in s["sets"]:
        blocks.append(_nm_corners(F, m))
    if "random" in s["sets"] and s["count"]:
        c = s["count"]
        w = _words64(_keys(s["seed"])["operands"], c * m + 3 * c)
        x = _random_codes(F, w[: c * m]).reshape(c, m)
        pal_w = w[c * m:].reshape(c, 3)
        palette = np.stack([_random_codes(F, pal_w[:, 0]), _random_codes(F, pal_w[:, 1])], axis=1)
        pick = ((pal_w[:, 2][:, None] >> np.arange(m, dtype=np.uint64)) & np.uint64(1)).astype(np.int64)
        tied = np.take_along_axis(palette, pick, axis=1)
        x = np.where(((pal_w[:, 2] >> np.uint64(63)) == 1)[:, None], tied, x)  # half the blocks tie-heavy
        blocks.append(x)
    x = np.concatenate(blocks) if blocks else np.zeros((0, m), np.uint64)
    x = x[_valid_mask(x, F).all(axis=1)]
    from ..sparsity import nm_mask

    mask = nm_mask(_values(x, F), n, m, axis=-1, ties=s["ties"]) if x.size else np.zeros(x.shape, bool)
    idx = np.argsort(~mask, axis=1, kind="stable")[:, :n]  # kept indices, ascending
    kept = np.take_along_axis(x, idx, axis=1)
    mask_bits = (mask.astype(np.uint64) << np.arange(m, dtype=np.uint64)).sum(axis=1, dtype=np.uint64)
    ib = max(1, (m - 1).bit_length())
    fields = [Field(f"x{i}", F.bits, F.name) for i in range(m)] + [Field("mask", m)]
    fields += [Field(f"v{i}", F.bits, F.name) for i in range(n)] + [Field(f"i{i}", ib) for i in range(n)]
    cols = [x[:, i] for i in range(m)] + [mask_bits] + [kept[:, i] for i in range(n)]
    cols += [idx[:, i].astype(np.uint64) for i in range(n)]
    return fields, cols


def _nm_corners(F, m) -> np.ndarray:
    """Blocks built from a small palette (ties of equal magnitudes, both zero signs, a larger
    value), all-equal blocks, and each position holding NaN/max/-max among tied values."""
    if isinstance(F, FloatFormat):
        one = F.bias << F.man_bits
        sb = 1 << (F.bits - 1)
        small, big = min(one, F.max_code_magnitude - 1), min(one + (1 << F.man_bits), F.max_code_magnitude)
        palette = [0, small, small | sb, big] + ([sb] if F.has_negative_zero else [])
        specials = [F.max_code_magnitude, F.max_code_magnitude | sb]
        if F.has_nan:
            specials.append(int(corner_codes(F)[_isnan(corner_codes(F), F)][0]))
    else:
        mask = (1 << F.bits) - 1
        palette = [0, 1, (-1) & mask, 2] if F.signed else [0, 1, 2]
        specials = [F.max_raw, F.min_raw & mask]
    p = len(palette)
    while p > 2 and p ** m > 4096:
        p -= 1
    rows = [list(t) for t in itertools.product(palette[:p], repeat=m)] if p ** m <= 4096 else []
    base = palette[1]
    for sp in specials:
        for pos in range(m):
            row = [base] * m
            row[pos] = sp
            rows.append(row)
    return _unique_keep_order(np.array(rows, np.uint64), axis=0)


_GENERATORS = {"quantize": _gen_quantize, "add": _gen_arith, "sub": _gen_arith, "mul": _gen_arith,
               "fma": _gen_arith, "mac": _gen_mac, "dot": _gen_dot, "nm": _gen_nm}


def _gen_block(s):
    from . import _blocks

    return (_blocks._gen_block_encode if s["op"] == "block_encode" else _blocks._gen_block_dot)(s)


_GENERATORS.update(block_encode=_gen_block, block_dot=_gen_block)


def generate(op, **settings) -> Vectors:
    """Operands and expected results of ``op`` as a :class:`Vectors` table.

    Settings (all recorded in the file header; defaults in brackets):

    - every op: ``sets`` [``["corners", "random"]``] — any of ``"exhaustive"``, ``"corners"``,
      ``"random"`` (a list, or a string such as ``"corners,random"``); ``count`` [1000] random
      vectors (``mac``: sequences; ``nm``: blocks); ``seed`` [0] (random operands use
      ``emul.random.bits(fold_in(key(seed), 0), …)``; SR words ``fold_in(key(seed), 1)``).
    - ``quantize``: ``fmt`` (target), ``in_fmt`` ["fp32"]. Fields ``x [u] y``. Every fixed-point
      width 1..64 works as ``fmt`` and ``in_fmt``; the expected codes are exact
      (:func:`expected_quantize`).
    - ``add``/``sub``/``mul``: ``fmt`` (operand a), ``b_fmt`` [fmt], ``out_fmt`` [fmt]. Fields ``a b [u] y``.
    - ``fma``: also ``c_fmt`` [out_fmt]; y = a·b + c rounded once. Fields ``a b c [u] y``.
    - the above: ``rounding`` ["nearest_even"], ``overflow`` [the format's default], and for
      ``rounding="stochastic"``: ``sr_bits`` [32], ``sr_method`` ["add"], ``random_source``
      ["threefry"]: ``"threefry"`` (word i of the seed's SR stream, ``>> (32 - sr_bits)``),
      ``"lfsr"`` (word i of ``emul.random.lfsr(n, r=sr_bits, **lfsr)``, ``lfsr`` a dict of
      ``width taps seed kind output``, default :data:`LFSR_DEFAULT`: one LFSR step per vector) or
      ``"all"`` (every operand tuple with every ``sr_bits`` word, ``sr_bits <= 16``).
    - ``mac``: ``fmt`` ["int8"], ``b_fmt`` [fmt], ``acc`` ["int12"], ``product`` [None = exact;
      else the format products are rounded to, by ``product_rounding``], ``rounding``,
      ``overflow`` [acc's default], ``k`` [16] steps per sequence. One line per step: fields
      ``first a b acc`` — ``first`` = 1 starts a sequence from +0, ``acc`` is the accumulator after
      the step (s = Q_acc(s + a·b), one rounding and overflow check per step).
    - ``mac`` and ``dot``: ``init`` [None = +0]: the accumulator's starting value (``emul.dot``'s
      ``init``; dot: in the final format): one finite number for every vector (recorded in the
      header only), or ``"per_vector"``: a code per vector in an ``init`` field (mac: ``first a b
      init acc``, the sequence's value on each of its lines; dot: after ``b{k-1}``), +0 for the
      main corner set, every corner value of the final format before runs of zero, max·max,
      -max·max and alternating products, random codes (a stream of their own) for random lines.
    - ``dot``: ``fmt`` ["int8"], ``b_fmt`` [fmt], ``acc`` ["int12"], ``product``/``product_rounding``
      as for mac, ``order`` ["sequential"], ``chunk``, ``outer`` (``order="chunked"``), ``k`` [16],
      ``running`` [False], ``rounding``, ``overflow`` and the SR settings above (``random_source``
      threefry or lfsr), ``init``. One line per k-element dot product: fields ``a0 … a{k-1} b0 … b{k-1}``,
      with a per-vector init ``init``,
      with SR ``u0 … u{T-1}`` (T = ``emul.accumulate.sr_steps(k, order, chunk)``: the line's words
      in the order of its rounding steps, consecutive words of the stream), with ``running=True``
      (sequential order) ``s0 … s{k-1}`` (the accumulator after each step), then ``y``, the result
      of ``emul.dot(a, b, acc, …)`` in the final format (``outer`` for chunked).
    - ``mac`` and ``dot`` corners (:func:`_sequence_corners`): every pair of corner codes repeated
      k times, saturating runs (+max·max then -max·max, alternating signs) and ties at the
      accumulator's lsb; finite operands only when the accumulator (or outer or product format)
      has no NaN, is fixed point, or wraps.
    - every op: without the ``"random"`` set, ``count`` is recorded as the number of vectors
      generated (mac: sequences).
    - ``nm``: ``fmt`` ["int8"], ``n`` [2], ``m`` [4], ``ties`` ["low_index"]. One line per block:
      fields ``x0 … x{m-1} mask v0 … v{n-1} i0 … i{n-1}``: ``mask`` bit i keeps element i
      (``emul.sparsity.nm_mask``), ``v``/``i`` the kept codes and their indices, ascending.
    - ``block_encode``: ``fmt`` (a block format: preset or ``"{element}/{scale}/{k|axis}[/tensor]"``),
      ``in_fmt`` ["fp32"], ``k`` [the block size; at most it], ``rounding`` (elements; SR settings
      as above, one word per element), ``scale_rule`` ["floor"] and ``scale_overflow`` ["nan"]
      (e8m0 scales), ``scale_min`` [0], ``arithmetic`` ["exact"; ``"float32"``, ``"float32_div"``]
      and ``tensor_scale`` [a t per line] (float scales), ``tail`` ["partial"]. One line per block:
      fields ``x0 … x{k-1} [t] [u0 … u{k-1}] s y0 … y{k-1}`` (``emul.blocks.encode``).
    - ``block_dot``: ``fmt``, ``b_fmt`` [fmt] (block formats of equal block sizes), ``k`` [the
      block size], ``acc`` ["fp32"], ``order``/``chunk``/``outer``, ``rounding``, ``overflow`` and
      the SR settings (one word per block term). One line per dot product:
      ``sa0 … a0 … [ta] sb0 … b0 … [tb] [u0 …] y`` (``emul.blocks.dot`` of the encoded operands;
      ``ta``/``tb``: the fp32 tensor scales of formats that have one, NVFP4).

    >>> v = generate("mul", fmt="e4m3fn", out_fmt="fp16", sets="exhaustive")
    >>> len(v), v.names
    (65536, ('a', 'b', 'y'))
    """
    s = canonical(op, **settings)
    fields, cols = _GENERATORS[op](s)
    codes = np.stack([np.asarray(c, np.uint64) for c in cols], axis=1) if cols and cols[0].size else \
        np.zeros((0, len(fields)), np.uint64)
    if "random" not in s["sets"]:  # the real number of vectors (mac: sequences)
        s["count"] = codes.shape[0] // (s["k"] if op == "mac" else 1)
    return Vectors(s, tuple(fields), np.ascontiguousarray(codes))


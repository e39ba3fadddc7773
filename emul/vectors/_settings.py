"""What a vectors file's settings mean: every op's settings with their defaults, their validation
(:func:`canonical`, the dict recorded in a file's header) and a one-line description."""

from __future__ import annotations

import json

import numpy as np

from .. import random as _random
from ..formats import FloatFormat, format as as_format
from ..rounding import Overflow, Rounding, as_overflow, as_rounding

OPS = ("quantize", "add", "sub", "mul", "fma", "mac", "dot", "nm", "block_encode", "block_dot")
BLOCK_OPS = ("block_encode", "block_dot")
SETS = ("exhaustive", "corners", "random")
FILE_VERSION = 1
LFSR_DEFAULT = {"width": 16, "taps": [16, 14, 13, 11], "seed": 0xACE1, "kind": "fibonacci", "output": "state"}
RANDOM_SOURCES = ("threefry", "lfsr", "all")
_WRAPS = (Overflow.WRAP, Overflow.WRAP_SIGN_MAGNITUDE)


def _dumps(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def describe(settings) -> str:
    """One line saying what a settings dict generates."""
    s = dict(settings)
    op = s.get("op")
    if op == "quantize":
        what = f"quantize {s['in_fmt']} -> {s['fmt']}"
    elif op in ("add", "sub", "mul"):
        sym = {"add": "+", "sub": "-", "mul": "x"}[op]
        what = f"{op} {s['fmt']} {sym} {s['b_fmt']} -> {s['out_fmt']}"
    elif op == "fma":
        what = f"fma {s['fmt']} x {s['b_fmt']} + {s['c_fmt']} -> {s['out_fmt']}"
    elif op == "mac":
        prod = f" (products rounded to {s['product']})" if s.get("product") else " (exact products)"
        what = f"mac {s['fmt']} x {s['b_fmt']} into {s['acc']}{prod}, {s['k']} steps per sequence{_init_text(s)}"
    elif op == "dot":
        prod = f" (products rounded to {s['product']})" if s.get("product") else " (exact products)"
        order = s["order"] + (f" by {s['chunk']}" + (f", outer {s['outer']}" if s.get("outer") else "")
                              if s["order"] == "chunked" else "")
        run = ", running sums" if s.get("running") else ""
        what = f"dot {s['fmt']} x {s['b_fmt']} into {s['acc']}{prod}, k {s['k']}, order {order}{run}{_init_text(s)}"
    elif op == "nm":
        what = f"nm {s['n']}:{s['m']} of {s['fmt']}, ties {s['ties']}"
    elif op in BLOCK_OPS:
        from ._blocks import describe_block

        what = describe_block(s)
    else:
        what = str(op)
    parts = [what]
    if "rounding" in s and op not in BLOCK_OPS:
        parts.append(f"rounding {s['rounding']}, overflow {s['overflow']}")
    if s.get("rounding") == "stochastic":
        src = s["random_source"]
        lf = f" {_dumps(s['lfsr'])}" if src == "lfsr" else ""
        parts.append(f"SR {s['sr_bits']} bits ({s['sr_method']}) from {src}{lf}")
    if "sets" in s:
        count = f", count {s['count']}"
        parts.append(f"sets {'+'.join(s['sets'])}{count}, seed {s['seed']}")
    return "; ".join(parts)


def _init_text(s) -> str:
    init = s.get("init")
    if init is None:
        return ""
    return ", init per vector" if init == INIT_PER_VECTOR else f", init {init!r}"


# ============================================================================== settings


def _init_value(value):
    """A mac/dot ``init`` setting: None (+0), ``"per_vector"`` (an ``init`` field in every line) or
    one finite number for every vector (a string holding a number is read as one), as a float."""
    if value is None or value == INIT_PER_VECTOR:
        return value
    if isinstance(value, str):
        try:
            value = int(value, 0)
        except ValueError:
            try:
                value = float(value)
            except ValueError:
                raise ValueError(f"init={value!r}: must be a number or {INIT_PER_VECTOR!r}") from None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"init={value!r}: must be a number or {INIT_PER_VECTOR!r}")
    x = float(value)
    if not np.isfinite(x):
        raise ValueError(f"init={value!r}: one init for every vector must be finite (use "
                         f"init={INIT_PER_VECTOR!r} for corner starting values)")
    if isinstance(value, (int, np.integer)) and int(value) != x:
        raise ValueError(f"init={value!r}: not exact in float64")
    return x



def _dot_order(s):
    """Validate a dot table's order, chunk, outer and running settings (in place)."""
    if s["order"] not in ORDERS:
        raise ValueError(f"order={s['order']!r}: must be one of {', '.join(ORDERS)}")
    if s["order"] == "chunked":
        if s["chunk"] is None:
            raise ValueError("chunk=None: order='chunked' needs a chunk size, e.g. chunk=4")
        s["chunk"] = _int_setting(s["chunk"], "chunk", 1)
        if s["outer"] is not None:
            s["outer"] = as_format(s["outer"]).name
    else:
        for key in ("chunk", "outer"):
            if s[key] is not None:
                raise ValueError(f"{key}={s[key]!r}: only used with order='chunked' (got order={s['order']!r})")
    if not isinstance(s["running"], bool):
        raise TypeError(f"running={s['running']!r}: must be True or False")
    if s["running"] and s["order"] != "sequential":
        raise ValueError(f"running=True: the running sums are the steps of order='sequential' (got order="
                         f"{s['order']!r}); a {s['order']} dot product has no running sum after each product")

_COMMON = {"sets": ["corners", "random"], "count": 1000, "seed": 0}
_ROUND = {"rounding": "nearest_even", "overflow": None, "sr_bits": None, "sr_method": "add",
          "random_source": "threefry", "lfsr": None}
_SPEC = {
    "quantize": {"fmt": None, "in_fmt": "fp32", **_ROUND},
    "add": {"fmt": None, "b_fmt": None, "out_fmt": None, **_ROUND},
    "sub": {"fmt": None, "b_fmt": None, "out_fmt": None, **_ROUND},
    "mul": {"fmt": None, "b_fmt": None, "out_fmt": None, **_ROUND},
    "fma": {"fmt": None, "b_fmt": None, "c_fmt": None, "out_fmt": None, **_ROUND},
    "mac": {"fmt": "int8", "b_fmt": None, "acc": "int12", "product": None, "product_rounding": "nearest_even",
            "rounding": "nearest_even", "overflow": None, "k": 16, "init": None},
    "dot": {"fmt": "int8", "b_fmt": None, "acc": "int12", "product": None, "product_rounding": "nearest_even",
            "order": "sequential", "chunk": None, "outer": None, "k": 16, "running": False, "init": None, **_ROUND},
    "nm": {"fmt": "int8", "n": 2, "m": 4, "ties": "low_index"},
}
ORDERS = ("sequential", "pairwise", "chunked")
INIT_PER_VECTOR = "per_vector"  # init setting: a starting value per vector, in the line's ``init`` field


def _int_setting(value, name, lo, hi=None):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}={value!r}: must be an int")
    value = int(value)
    if value < lo or (hi is not None and value > hi):
        raise ValueError(f"{name}={value}: must be between {lo} and {hi}" if hi is not None
                         else f"{name}={value}: must be at least {lo}")
    return value



def _sets_count_seed(s) -> None:
    """Validate (in place) the settings every op has: sets, count, seed."""
    sets = s["sets"]
    if isinstance(sets, str):
        sets = [x for x in sets.replace("+", ",").split(",") if x]
    sets = list(sets)
    bad = [x for x in sets if x not in SETS]
    if bad or not sets:
        raise ValueError(f"sets={s['sets']!r}: must be a non-empty list of {', '.join(SETS)}")
    s["sets"] = [x for x in SETS if x in sets]
    s["count"] = _int_setting(s["count"], "count", 0)
    s["seed"] = _int_setting(s["seed"], "seed", 0, 2**32 - 1)


def canonical(op, **kw) -> dict:
    """Validate settings and resolve every default: the dict recorded in a file's header."""
    if op in BLOCK_OPS:
        from ._blocks import canonical_block

        return canonical_block(op, kw, {**_COMMON, **_ROUND})
    s = _canonical(op, **kw)
    if op in ("mac", "dot"):  # every accumulator setting as emul.dot checks it
        from ..accumulate import _Config, _init_codes

        order = s.get("order", "sequential")
        cfg = _Config(s["acc"], s["product"], s["product_rounding"] or "nearest_even", s["rounding"], s["overflow"],
                      order, s.get("chunk") if order == "chunked" else None, s.get("outer"), s.get("sr_bits"),
                      s.get("sr_method", "add"))
        if isinstance(s["init"], float):
            _init_codes(s["init"], cfg, ())  # raises unless representable in the final format
        if s["init"] is None:  # the default (+0) is not recorded: files without init are as before
            del s["init"]
    return s


def _canonical(op, **kw) -> dict:
    if op not in OPS:
        raise ValueError(f"op={op!r}: must be one of {', '.join(OPS)}")
    spec = {**_COMMON, **_SPEC[op]}
    unknown = sorted(set(kw) - set(spec))
    if unknown:
        raise ValueError(f"{unknown[0]}=: not a setting of op={op!r}; settings are {', '.join(sorted(spec))}")
    s = {**spec, **kw, "op": op}
    _sets_count_seed(s)
    if s.get("fmt") is None:
        raise ValueError(f"fmt=None: op={op!r} needs the operand format, e.g. fmt='e4m3fn'")
    fmt = as_format(s["fmt"])
    s["fmt"] = fmt.name
    if op == "quantize":
        in_fmt = as_format(s["in_fmt"])
        s["in_fmt"] = in_fmt.name
        out = fmt
        from ._generate import _quantize_plan

        _quantize_plan(in_fmt, out)  # raises when emul cannot take these inputs exactly
    elif op in ("add", "sub", "mul", "fma"):
        s["b_fmt"] = as_format(s["b_fmt"] or fmt).name
        out = as_format(s["out_fmt"] or fmt)
        s["out_fmt"] = out.name
        if op == "fma":
            s["c_fmt"] = as_format(s["c_fmt"] or out).name
    elif op in ("mac", "dot"):
        s["b_fmt"] = as_format(s["b_fmt"] or fmt).name
        out = as_format(s["acc"])
        s["acc"] = out.name
        s["k"] = _int_setting(s["k"], "k", 1, 1 << 20 if op == "mac" else 4096)
        s["init"] = _init_value(s["init"])
        if s["product"] is None:
            s["product_rounding"] = None
        else:
            s["product"] = as_format(s["product"]).name
            s["product_rounding"] = as_rounding(s["product_rounding"]).value
            if s["product_rounding"] == "stochastic":
                raise ValueError(f"product_rounding='stochastic': not supported in {op} vectors "
                                 "(the random words belong to the accumulation steps)")
        if op == "dot":
            _dot_order(s)
    else:  # nm
        s["m"] = _int_setting(s["m"], "m", 1, 64)
        s["n"] = _int_setting(s["n"], "n", 1, s["m"])
        if s["ties"] not in ("low_index", "high_index"):
            raise ValueError(f"ties={s['ties']!r}: must be 'low_index' or 'high_index'")
        return s

    # rounding, overflow, stochastic rounding
    mode = as_rounding(s["rounding"])
    s["rounding"] = mode.value
    if s["overflow"] is None:
        s["overflow"] = "ieee" if isinstance(out, FloatFormat) else "saturate"
    s["overflow"] = as_overflow(s["overflow"]).value
    from .._params import resolve

    resolve(out, mode, s["overflow"], s.get("sr_bits") if mode == Rounding.STOCHASTIC else None,
            s.get("sr_method", "add"))  # raises on invalid combinations
    if op == "mac":
        if mode == Rounding.STOCHASTIC:
            raise ValueError("rounding='stochastic': not supported in mac vectors (use quantize/add/fma vectors)")
        return s
    return _sr_settings(s, op)


def _sr_settings(s, op) -> dict:
    """Validate (in place) the stochastic-rounding settings of a table whose ``rounding`` is
    resolved: without SR they are dropped; with SR ``sr_bits`` defaults to 32 (or an LFSR's width)."""
    mode = as_rounding(s["rounding"])
    if mode != Rounding.STOCHASTIC:
        for key in ("sr_bits", "lfsr"):
            if s[key] is not None:
                raise ValueError(f"{key}={s[key]!r}: only used with rounding='stochastic'")
        for key in ("sr_bits", "sr_method", "random_source", "lfsr"):
            s.pop(key)
        return s
    src = s["random_source"]
    if src not in RANDOM_SOURCES:
        raise ValueError(f"random_source={src!r}: must be one of {', '.join(RANDOM_SOURCES)}")
    lf = {**LFSR_DEFAULT, **(s["lfsr"] or {})} if src == "lfsr" else None
    if s["sr_bits"] is None:  # emul's default, or all the bits an LFSR state offers
        s["sr_bits"] = min(32, int(lf["width"])) if lf and lf["output"] == "state" else 32
    s["sr_bits"] = _int_setting(s["sr_bits"], "sr_bits", 1, 32)
    if s["sr_method"] not in ("add", "compare"):
        raise ValueError(f"sr_method={s['sr_method']!r}: must be 'add' or 'compare'")
    if src == "lfsr":
        extra = sorted(set(lf) - set(LFSR_DEFAULT))
        if extra:
            raise ValueError(f"lfsr: unknown key {extra[0]!r}; keys are {', '.join(LFSR_DEFAULT)}")
        lf["taps"] = [int(t) for t in lf["taps"]]
        lf = {k: lf[k] for k in LFSR_DEFAULT}
        _random.lfsr(1, r=s["sr_bits"], **lf)  # validates
        s["lfsr"] = lf
    elif s["lfsr"] is not None:
        raise ValueError(f"lfsr={s['lfsr']!r}: only used with random_source='lfsr'")
    else:
        s.pop("lfsr")
    if op in ("dot", "block_encode", "block_dot") and src == "all":
        raise ValueError(f"random_source='all': not available for {op} vectors (use threefry or lfsr)")
    if src == "all" and s["sr_bits"] > 16:
        raise ValueError(f"random_source='all' with sr_bits={s['sr_bits']}: at most 16 bits (2**sr_bits lines per operand)")
    return s


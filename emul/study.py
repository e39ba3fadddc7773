"""Precision studies of low-precision accumulation: :func:`sweep`, :func:`table`, :func:`plot`.

:func:`sweep` measures how far dot products accumulated in a low-precision format land from their
exact values, over a grid of accumulator formats (with their overflow rules) × rounding modes
(stochastic rounding with a number of random bits included) × summation orders × lengths K × input
distributions. For each configuration it draws ``vectors`` pairs of length-K vectors (fixed seed),
quantises them to ``inputs`` (e4m3fn by default; products are then exact in binary64), accumulates
every dot product with :func:`emul.dot` (row-wise) and replays every rounding step with
:func:`emul.arith.add` to count the swamped additions. It returns one record per configuration in
a NumPy structured array (``pandas.DataFrame(result)`` turns it into a frame):

==============  =====================================================================================
field           meaning
==============  =====================================================================================
acc             the accumulator format's name (``outer`` too, for chunked order)
overflow        its overflow rule (resolved: ``ieee``/``saturate``/``wrap``…)
rounding        the rounding mode of every step
sr_bits         random bits per rounding (stochastic rounding), else 0
order           ``sequential``, ``pairwise`` or ``chunked``
chunk           the chunk size (chunked), else 0
k               the vectors' length K
distribution    the inputs' distribution (before quantisation)
vectors         dot products measured
rel_error       ‖s − x‖₂ / ‖x‖₂ over the dot products: s accumulated, x exact (products exact in
                binary64, x their ``math.fsum``, one final rounding to binary64)
bias            Σ(s − x) / Σ|x|: the signed drift (negative when rounding loses magnitude)
swamped         the share of rounding steps whose result equals the running operand although the
                added term was nonzero (tree steps: equals either operand while the other was
                nonzero) — the term was lost entirely
steps           rounding steps replayed (``vectors`` × :func:`emul.accumulate.sr_steps`)
==============  =====================================================================================

Inputs: for distribution ``d`` and length K, ``rng = numpy.random.default_rng(seed + K)`` draws a
then b, each of shape (vectors, K): ``normal`` (standard normal), ``uniform`` (on [-1, 1)),
``positive`` (|standard normal|: no cancellation), ``student-t3`` (heavy tails), ``lognormal``
(positive, σ = 1); or a callable ``f(rng, shape)``. The same (seed, K) gives the same vectors for
every format, mode and order, so the rows of a table compare like with like. Stochastic
rounding: row r takes the words ``emul.random.bits(emul.random.key(seed), (vectors, T))[r] >>
(32 - sr_bits)``.

    python -m emul.study [--vectors 256] [--k 64,256,1024,4096] [--png study.png]
"""

from __future__ import annotations

import argparse
import itertools
import math
import time
from pathlib import Path

import numpy as np

from . import arith
from . import random as _random
from .accumulate import dot, sr_steps
from .formats import FixedFormat, format as as_format
from .quantize import quantize
from .rounding import Rounding, as_overflow, as_rounding

__all__ = ["sweep", "table", "plot", "DISTRIBUTIONS", "FIELDS", "data", "exact_dots", "replay"]

DISTRIBUTIONS = {
    "normal": lambda rng, shape: rng.standard_normal(shape),
    "uniform": lambda rng, shape: rng.uniform(-1.0, 1.0, shape),
    "positive": lambda rng, shape: np.abs(rng.standard_normal(shape)),
    "student-t3": lambda rng, shape: rng.standard_t(3, shape),
    "lognormal": lambda rng, shape: rng.lognormal(0.0, 1.0, shape),
}

FIELDS = [("acc", "U40"), ("overflow", "U24"), ("rounding", "U16"), ("sr_bits", "i4"), ("order", "U12"),
          ("chunk", "i8"), ("k", "i8"), ("distribution", "U24"), ("vectors", "i8"), ("rel_error", "f8"),
          ("bias", "f8"), ("swamped", "f8"), ("steps", "i8")]

_PROGRESS_WORK = 1 << 24  # a bar when the sweep replays more steps than this (progress=None)


# ------------------------------------------------------------------------------ inputs and exact values


def data(vectors: int, k: int, seed: int = 0, distribution="normal", inputs="e4m3fn"):
    """The vectors a, b (float64, shape (vectors, k)) of one (distribution, K): drawn with
    ``default_rng(seed + k)`` (a first), quantised to ``inputs`` (None: as drawn)."""
    draw = _distribution(distribution)[1]
    rng = np.random.default_rng(seed + k)
    a = np.asarray(draw(rng, (vectors, k)), np.float64)
    b = np.asarray(draw(rng, (vectors, k)), np.float64)
    if inputs is not None:
        a, b = quantize(a, inputs), quantize(b, inputs)
    return a, b


def exact_dots(a, b):
    """The exact dot products of the rows, rounded once to binary64 (requires exact products)."""
    p = a * b
    return np.array([math.fsum(row) for row in p])


def _distribution(d):
    if callable(d):
        return getattr(d, "__name__", "custom"), d
    if isinstance(d, tuple) and len(d) == 2 and callable(d[1]):
        return str(d[0]), d[1]
    if d not in DISTRIBUTIONS:
        raise ValueError(f"distribution={d!r}: must be one of {', '.join(DISTRIBUTIONS)} or a callable "
                         "f(rng, shape)")
    return d, DISTRIBUTIONS[d]


# ------------------------------------------------------------------------------ step-by-step replay


def replay(a, b, fmt, overflow=None, order="sequential", chunk=None, rounding="nearest_even", sr_bits=None,
           random_bits=None, outer=None):
    """Accumulate every row of a·b step by step with :func:`emul.arith.add`, in the order and with
    the SR words (``random_bits``: shape (rows, T), word t for the t-th rounding step, as
    :func:`emul.dot`) of :func:`emul.dot`. Returns (results, swamped steps, steps)."""
    p = a * b  # exact
    v, k = p.shape
    sr = as_rounding(rounding) == Rounding.STOCHASTIC
    kw = dict(rounding=rounding, overflow=overflow)
    counts = [0, 0]  # swamped, steps
    t = [0]

    def add(x, y, f, words_at):
        extra = {"sr_bits": sr_bits, "random_bits": random_bits[:, words_at]} if sr else {}
        return arith.add(x, y, f, **kw, **extra)

    def step(s, y, f, words_at):
        r = add(s, y, f, words_at)
        counts[0] += int(((r == s) & (y != 0)).sum())
        counts[1] += r.size
        return r

    zero = np.zeros(v)
    if order == "sequential":
        s = zero
        for j in range(k):
            s = step(s, p[:, j], fmt, j)
        return s, counts[0], counts[1]
    if order == "chunked":  # the chunks are independent sequences from +0: stepped side by side
        n = -(-k // chunk)
        sums = np.zeros((v, n))
        for j in range(chunk):
            live = np.flatnonzero(np.arange(n) * chunk + j < k)  # the last chunk may be shorter
            idx = live * chunk + j  # product index = word index (the K chunk steps come first)
            sums[:, live] = step(sums[:, live], p[:, idx], fmt, idx)
        s = zero
        for c in range(n):
            s = step(s, sums[:, c], as_format(outer) if outer is not None else fmt, k + c)
        return s, counts[0], counts[1]
    level = p  # pairwise: a tree over the products (word t per node, level by level), then + init (+0)
    while level.shape[1] > 1:
        half = level.shape[1] // 2
        left, right = level[:, 0:2 * half:2], level[:, 1:2 * half:2]
        s = add(left, right, fmt, t[0] + np.arange(half))
        t[0] += half
        counts[0] += int((((s == left) & (right != 0)) | ((s == right) & (left != 0))).sum())
        counts[1] += s.size
        level = np.concatenate([s, level[:, 2 * half:]], axis=1)
    s = step(zero, level[:, 0], fmt, t[0])
    return s, counts[0], counts[1]


# ------------------------------------------------------------------------------ the sweep


def _accs(acc, overflow):
    out = []
    for item in _as_list(acc, _overflow_pair):
        fmt, ovf = (item if isinstance(item, tuple) else (item, overflow))
        fmt = as_format(fmt)
        if ovf is None:
            ovf = "saturate" if isinstance(fmt, FixedFormat) else "ieee"
        out.append((fmt, as_overflow(ovf).value))
    return out


def _name_and_int(item):
    """(name, int or None) from ``("name", n)``, ``"name:n"`` or ``"name"``."""
    if isinstance(item, tuple):
        return item
    if isinstance(item, str) and ":" in item:
        name, n = item.split(":", 1)
        return name, int(n)
    return item, None


def _roundings(rounding, sr_bits):
    out = []
    for item in _as_list(rounding, _int_pair):
        mode, bits = _name_and_int(item)
        mode = as_rounding(mode)
        if mode == Rounding.STOCHASTIC:
            bits = bits if bits is not None else (sr_bits if sr_bits is not None else 32)
            if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 32:
                raise ValueError(f"sr_bits={bits!r}: must be an int between 1 and 32")
        elif bits is not None:
            raise ValueError(f"rounding={item!r}: random bits only go with 'stochastic'")
        out.append((mode.value, int(bits or 0)))
    return out


def _orders(order):
    out = []
    for item in _as_list(order, _int_pair):
        name, chunk = _name_and_int(item)
        if name not in ("sequential", "pairwise", "chunked"):
            raise ValueError(f"order={item!r}: must be 'sequential', 'pairwise', ('chunked', size) or 'chunked:size'")
        if (name == "chunked") != (chunk is not None):
            raise ValueError(f"order={item!r}: a chunk size goes with 'chunked' only, e.g. ('chunked', 64)")
        if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1):
            raise ValueError(f"order={item!r}: the chunk size must be a positive int")
        out.append((name, int(chunk or 0)))
    return out


def _as_list(x, pair=lambda t: False):
    """A grid argument as a list: one value, or a list/tuple of values (a tuple that ``pair``
    accepts, such as ``("fx<12,4>", "wrap")`` or ``("chunked", 64)``, is one value)."""
    if isinstance(x, str) or callable(x) or not hasattr(x, "__iter__") or (isinstance(x, tuple) and pair(x)):
        return [x]
    return list(x)


def _int_pair(t):
    return len(t) == 2 and isinstance(t[0], str) and isinstance(t[1], (int, np.integer)) and not isinstance(t[1], bool)


def _overflow_pair(t):
    from .rounding import Overflow

    return len(t) == 2 and (t[1] is None or t[1] in {o.value for o in Overflow} or isinstance(t[1], Overflow))


def _callable_pair(t):
    return len(t) == 2 and callable(t[1])


def sweep(acc=("bf16",), *, k=(1024,), order=("sequential",), rounding=("nearest_even",), distribution=("normal",),
          inputs="e4m3fn", vectors=256, seed=0, overflow=None, sr_bits=None, outer=None, check=True,
          progress=None) -> np.ndarray:
    """Error of dot products accumulated in low precision, over a grid of configurations.

    Args (each grid argument takes one value or a list):
      acc: accumulator formats (names or formats), or ``(format, overflow)`` pairs.
      k: vector lengths K.
      order: ``"sequential"``, ``"pairwise"``, ``("chunked", size)`` or ``"chunked:size"``.
      rounding: modes of every accumulation step; ``"stochastic"`` takes ``sr_bits`` random bits
        (default 32), or give them per entry as ``("stochastic", 8)`` or ``"stochastic:8"``.
      distribution: input distributions (see the module docstring) or callables f(rng, shape).
      inputs: the format the vectors are quantised to (None: float64 as drawn; products must
        still be exact in binary64, so keep the inputs within 26 significant bits).
      vectors: dot products per configuration; seed: the inputs' (and SR words') seed.
      overflow: the overflow rule of accumulators given without one (default: their format's).
      outer: chunked order's outer accumulator (default: acc).
      check: also compute every configuration with :func:`emul.dot` (row-wise) and require the
        replayed results to equal it bit for bit.
      progress: a tqdm progress bar over the configurations: True, False, or None (shown when
        the sweep replays more than 2**24 steps and tqdm is installed).

    Returns a structured array with one record per configuration, in grid order (acc, rounding,
    order, k, distribution; the last varies fastest); fields :data:`FIELDS`.

    >>> r = sweep(["bf16", "fp16"], k=[64, 256], order=["sequential", "pairwise"], vectors=32)
    >>> r.shape, r.dtype.names[:4]
    ((8,), ('acc', 'overflow', 'rounding', 'sr_bits'))
    >>> bool((r[r["order"] == "pairwise"]["rel_error"] < r[r["order"] == "sequential"]["rel_error"]).all())
    True
    """
    vectors = int(vectors)
    if vectors < 1:
        raise ValueError(f"vectors={vectors}: must be at least 1")
    ks = [int(x) for x in _as_list(k)]
    if any(x < 1 for x in ks):
        raise ValueError(f"k={k!r}: every length must be at least 1")
    grid = list(itertools.product(_accs(acc, overflow), _roundings(rounding, sr_bits), _orders(order), ks,
                                  [_distribution(d) for d in _as_list(distribution, _callable_pair)]))
    total = sum(vectors * sr_steps(kk, o, c or None) for _, _, (o, c), kk, _ in grid)
    bar = _bar(len(grid), total, progress)
    out = np.zeros(len(grid), FIELDS)
    inputs_cache = {}
    outer_fmt = as_format(outer) if outer is not None else None
    try:
        for n, ((fmt, ovf), (mode, bits), (order_name, chunk), kk, (dname, draw)) in enumerate(grid):
            key = (kk, dname)
            if key not in inputs_cache:
                a, b = data(vectors, kk, seed, draw, inputs)
                inputs_cache[key] = (a, b, exact_dots(a, b))
            a, b, exact = inputs_cache[key]
            T = sr_steps(kk, order_name, chunk or None)
            u = None
            if mode == "stochastic":
                u = _random.bits(_random.key(seed), (vectors, T)) >> np.uint32(32 - bits)
            got, swamped, steps = replay(a, b, fmt, ovf, order_name, chunk or None, mode, bits or None, u,
                                         outer_fmt if order_name == "chunked" else None)
            if check:
                want = dot(a, b, fmt, axis=-1, overflow=ovf, order=order_name, chunk=chunk or None,
                           outer=outer_fmt if order_name == "chunked" else None, rounding=mode,
                           **({"sr_bits": bits, "random_bits": u} if u is not None else {}))
                if not np.array_equal(got, want, equal_nan=True):
                    raise AssertionError(f"replay differs from emul.dot for {fmt.name} {mode} {order_name} K={kk}")
            with np.errstate(invalid="ignore", over="ignore"):
                err = float(np.linalg.norm(got - exact) / np.linalg.norm(exact))
                bias = float(np.sum(got - exact) / np.sum(np.abs(exact)))
            name = fmt.name if not (order_name == "chunked" and outer_fmt) else f"{fmt.name}/{outer_fmt.name}"
            out[n] = (name, ovf, mode, bits, order_name, chunk, kk, dname, vectors, err, bias, swamped / steps, steps)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return out


def _bar(n, steps, progress):
    if progress is False or (progress is None and steps <= _PROGRESS_WORK):
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        if progress:
            raise ImportError("progress=True needs tqdm: pip install 'emul[plot]'") from None
        return None
    return tqdm(total=n, desc="emul.study", unit="config")


# ------------------------------------------------------------------------------ table and plot


def table(results, *, by=("acc", "overflow", "rounding", "sr_bits", "order", "chunk"), columns="k",
          values=("rel_error", "swamped")) -> str:
    """The results as an aligned text table: one row per distinct ``by`` tuple, one column group
    per distinct value of ``columns`` (K by default), each cell the ``values`` (the error in
    scientific notation, shares in percent); '—' where the sweep has no record (or a chunk of at
    least K, which only repeats the sequential order)."""
    r = np.asarray(results)
    cols = sorted(set(r[columns].tolist()))
    keys = []
    for rec in r:
        kt = tuple(rec[f].item() for f in by)
        if kt not in keys:
            keys.append(kt)
    label = [_label(dict(zip(by, kt))) for kt in keys]
    w = max([len(s) for s in label] + [12])
    cell = 10 * len(values)
    head = f"{'configuration':{w}s}" + "".join(f" {f'{columns}={c}':>{cell}s}" for c in cols)
    sub = " " * w + "".join(" " + "".join(f"{v[:9]:>10s}" for v in values) for _ in cols)
    lines = [head, sub, "-" * len(head)]
    for kt, name in zip(keys, label):
        sel = np.ones(r.shape, bool)
        for f, v in zip(by, kt):
            sel &= r[f] == v
        parts = []
        for c in cols:
            m = sel & (r[columns] == c)
            rec = r[m][0] if m.any() else None
            if rec is None or (rec["order"] == "chunked" and rec["chunk"] >= rec["k"]):
                parts.append(f" {'—':>{cell}s}")
                continue
            parts.append(" " + "".join(_fmt(v, rec[v]) for v in values))
        lines.append(f"{name:{w}s}" + "".join(parts))
    return "\n".join(lines)


def _fmt(field, v) -> str:
    if field in ("swamped",):
        return f"{100 * v:9.2f}%"
    if field in ("steps", "vectors", "k"):
        return f"{int(v):10d}"
    return f"{v:10.2e}"


def _label(rec) -> str:
    parts = []
    if "acc" in rec:
        parts.append(str(rec["acc"]))
    if rec.get("overflow") not in (None, "ieee", "saturate"):
        parts.append(str(rec["overflow"]))
    if "rounding" in rec and rec["rounding"] != "nearest_even":
        parts.append(f"SR{rec['sr_bits']}" if rec["rounding"] == "stochastic" else str(rec["rounding"]))
    if "order" in rec:
        parts.append(f"chunk {rec['chunk']}" if rec["order"] == "chunked" else str(rec["order"]))
    if "distribution" in rec:
        parts.append(str(rec["distribution"]))
    return " ".join(parts)


def plot(results, path, *, x="k", y="rel_error", by=("acc", "overflow", "rounding", "sr_bits", "order", "chunk"),
         title=None, logx=True, logy=None) -> Path:
    """Write a PNG: ``y`` against ``x`` (default: relative error against K, log-log), one line per
    distinct ``by`` tuple. matplotlib (the ``plot`` extra) is imported here, with the Agg backend
    (no display needed). Returns the path written.

    >>> import tempfile, pathlib
    >>> out = plot(sweep("bf16", k=[16, 64], vectors=8), pathlib.Path(tempfile.mkdtemp()) / "s.png")
    >>> out.suffix, out.stat().st_size > 1000
    ('.png', True)
    """
    try:
        import matplotlib
    except ImportError:
        raise ImportError("emul.study.plot needs matplotlib: pip install 'emul[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = np.asarray(results)
    path = Path(path)
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    try:
        keys = []
        for rec in r:
            kt = tuple(rec[f].item() for f in by)
            if kt not in keys:
                keys.append(kt)
        for i, kt in enumerate(keys):
            sel = np.ones(r.shape, bool)
            for f, v in zip(by, kt):
                sel &= r[f] == v
            part = np.sort(r[sel], order=x)
            ax.plot(part[x], part[y], marker="o", linestyle=("-", "--", ":", "-.")[i // 10 % 4],
                    label=_label(dict(zip(by, kt))))
        if logx:
            ax.set_xscale("log", base=2)
        if logy if logy is not None else bool((r[y] > 0).all()):
            ax.set_yscale("log")
        ax.set_xlabel(x)
        ax.set_ylabel(y.replace("_", " "))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, ncol=2 if len(keys) > 8 else 1)
        ax.set_title(title or f"{y.replace('_', ' ')} of dot products accumulated in low precision")
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path


# ------------------------------------------------------------------------------ the demo's study

DEMO_ACCS = [("e4m7", None), ("e4m7-nosub", None), ("e5m6", None), ("fp16", None), ("bf16", None),
             ("fx<12,4>", "saturate"), ("fx<12,4>", "wrap"), ("fp32", None)]
DEMO_ORDERS = ["sequential", "pairwise", ("chunked", 16), ("chunked", 64), ("chunked", 256)]


def demo_sweep(vectors=256, ks=(64, 256, 1024, 4096), check=True, progress=None) -> np.ndarray:
    """The accumulator study of ``make demo``: e4m3fn-quantised N(0, 1) vectors, the accumulators
    :data:`DEMO_ACCS` × orders :data:`DEMO_ORDERS`, nearest_even (chunks of at least K skipped)."""
    accs = [(f, o) if o else f for f, o in DEMO_ACCS]
    results = sweep(accs, k=list(ks), order=DEMO_ORDERS, vectors=vectors, check=check, progress=progress)
    return results[~((results["order"] == "chunked") & (results["chunk"] >= results["k"]))]


def main(argv=None, png=None):
    parser = argparse.ArgumentParser(description="Low-precision accumulator study: error and swamping")
    parser.add_argument("--vectors", type=int, default=256, help="dot products per configuration")
    parser.add_argument("--k", default="64,256,1024,4096", help="comma-separated dot-product lengths")
    parser.add_argument("--no-check", action="store_true", help="skip the cross-check against emul.dot")
    parser.add_argument("--png", default=png, help="also plot the error against K to this PNG file")
    args = parser.parse_args(argv)
    ks = tuple(int(k) for k in args.k.split(","))
    start = time.perf_counter()
    results = demo_sweep(args.vectors, ks, check=not args.no_check)
    print(f"Accumulators: relative error ||s - exact|| / ||exact|| over {args.vectors} dot products of "
          "e4m3fn-quantised N(0,1) vectors, and the share of swamped additions (the sum did not move "
          "although the term was nonzero); rounding nearest_even, one rounding and overflow check per "
          "addition. '—': chunk >= K.")
    print(table(results))
    if args.png:
        shown = results[(results["order"] != "chunked") & (results["rel_error"] > 0)]  # (fp32: exact here)
        out = plot(shown, args.png, logy=True,
                   title=f"relative error of {args.vectors} dot products (e4m3fn N(0,1) inputs)")
        print(f"plot: {out}")
    print(f"({time.perf_counter() - start:.1f} s)")
    return results


if __name__ == "__main__":
    main()

"""Speed of emul's correctly rounded elementwise ops against APyTypes and numpy float16: same operands, one run.

Operands: fp16 as numpy float16 arrays (all finite bit patterns); bf16 and e4m3fn as float32
arrays holding the format's values (random finite codes; e4m3fn below 256, where APyTypes'
IEEE-style 4/3-bit format has the same values). The result is in the operands' format. Peers:

- APyTypes (``APyFloatArray``, its quantization context set to the mode) for add, mul, div;
  it has no fused multiply-add, so fma is compared with its ``a * b + c`` (two roundings), and no
  square root, so sqrt is compared with numpy's float64 root cast by ``APyFloatArray.from_float``;
- numpy's float16 ``+`` and ``*`` (round to nearest even only).

Prints M elements/s (median of repeats) and ratios (emul speed / peer speed); writes
bench/results/arith.json with a ``ratios`` row per target of issue 13.

    .venv/bin/python bench/arith.py [--n 1048576] [--repeats 5] [--rows SUBSTRING ...]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import median_time, ratio, write  # noqa: E402

FORMATS = {"fp16": (5, 10), "bf16": (8, 7), "e4m3fn": (4, 3)}
OPS = ("add", "mul", "fma", "div", "sqrt")
MODES = ("nearest_even", "toward_zero")
TARGET_APY = {"add": 5.0, "mul": 5.0, "fma": 5.0, "div": 2.0, "sqrt": 2.0}


def operands(fmt, n, rng):
    """Three operand arrays of the format's finite values (float16 for fp16, else float32)."""
    import emul

    f = emul.format(fmt)
    codes = rng.integers(0, 1 << f.bits, (3, n)).astype(np.uint64)
    vals = np.asarray(emul.decode(codes.reshape(-1), f), np.float64).reshape(3, n)
    keep = np.isfinite(vals) & (np.abs(vals) < (256.0 if fmt == "e4m3fn" else np.inf))
    vals = np.where(keep, vals, 1.0)
    return [v.astype(np.float16 if fmt == "fp16" else np.float32) for v in vals]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1 << 20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--general", action="store_true",
                        help="time emul's general kernel (exact wide integers), the path before the vectorised one")
    parser.add_argument("--rows", nargs="*", default=None,
                        help="run only the rows whose 'fmt op mode' contains one of these substrings "
                             "(the record is not written)")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()

    import apytypes as apy

    import emul.arith as A

    A._FAST = not args.general
    n, reps = args.n, args.repeats
    rng = np.random.default_rng(0)
    rows, ratios = [], []
    print(f"{n} operands per op, result in the operands' format; M elements/s")
    print(f"  {'fmt':7s} {'op':5s} {'mode':13s} {'emul':>8s} {'APyTypes':>9s} {'numpy':>8s} {'emul/APy':>9s} {'emul/np':>8s}")
    with np.errstate(all="ignore"):
        for fmt, (eb, mb) in FORMATS.items():
            a, b, c = operands(fmt, n, rng)
            absa = np.abs(a)
            q = [apy.APyFloatArray.from_float(v.astype(np.float64), exp_bits=eb, man_bits=mb) for v in (a, b, c)]
            sqrt_in = np.sqrt(absa.astype(np.float64))
            apy_ops = {"add": lambda: q[0] + q[1], "mul": lambda: q[0] * q[1], "div": lambda: q[0] / q[1],
                       "fma": lambda: q[0] * q[1] + q[2],
                       "sqrt": lambda: apy.APyFloatArray.from_float(sqrt_in, exp_bits=eb, man_bits=mb)}
            np_ops = {"add": lambda: a + b, "mul": lambda: a * b} if fmt == "fp16" else {}
            emul_args = {"add": (a, b), "mul": (a, b), "div": (a, b), "fma": (a, b, c), "sqrt": (absa,)}
            for op in OPS:
                for mode in MODES:
                    if args.rows is not None and not any(r in f"{fmt} {op} {mode}" for r in args.rows):
                        continue
                    te = median_time(lambda: getattr(A, op)(*emul_args[op], fmt, mode), reps)
                    qm = apy.QuantizationMode.TIES_EVEN if mode == "nearest_even" else apy.QuantizationMode.TO_ZERO
                    with apy.APyFloatQuantizationContext(qm):
                        ta = median_time(apy_ops[op], reps)
                    tn = median_time(np_ops[op], reps) if op in np_ops and mode == "nearest_even" else None
                    ra = ta / te
                    rn = tn / te if tn else None
                    print(f"  {fmt:7s} {op:5s} {mode:13s} {n / te / 1e6:8.1f} {n / ta / 1e6:9.1f} "
                          f"{(f'{n / tn / 1e6:8.1f}' if tn else '       —')} {ra:9.2f} "
                          f"{(f'{rn:8.2f}' if rn else '       —')}")
                    rows.append(dict(fmt=fmt, op=op, mode=mode, emul_s=te, apytypes_s=ta, numpy_f16_s=tn))
                    peer = {"fma": "APyTypes a*b+c", "sqrt": "APyTypes from_float(np.sqrt)"}.get(op, "APyTypes")
                    tag = "arith (general kernel)" if args.general else "arith"
                    ratios.append(ratio(f"{tag} {fmt} {op} {mode} vs {peer}", ra,
                                        None if args.general else TARGET_APY[op]))
                    if rn is not None:
                        ratios.append(ratio(f"{tag} {fmt} {op} {mode} vs numpy float16", rn,
                                            None if args.general else 1.0))
    if args.rows is not None:  # a partial run does not replace the record
        print(f"--rows given: no record written (load now {os.getloadavg()[0]:.2f})")
        return
    name = "arith_general" if args.general else "arith"
    path = write(name, dict(n=n, repeats=reps, path="general" if args.general else "fast", results=rows,
                            ratios=ratios), load_before)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

"""Speed of emul's correctly rounded elementwise ops against numpy float16 and APyTypes: same operands, one run.

numpy's float16 arithmetic is round-to-nearest-even only (and computed in binary32 then rounded);
APyTypes rounds its exact results with a chosen quantization mode. emul computes the exact result
with integer arithmetic and rounds once, in any format and mode. Prints M elements/s (median of
repeats) and ratios; writes bench/results/arith.json.

    .venv/bin/python bench/arith.py [--n 1048576] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def median_time(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1 << 20)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    import apytypes as apy

    import emul.arith as A

    n, reps = args.n, args.repeats
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 1 << 16, (2, n)).astype(np.uint16)
    codes = np.where((codes & 0x7C00) == 0x7C00, codes & 0x83FF, codes)  # finite fp16 values
    a16, b16 = codes[0].view(np.float16), codes[1].view(np.float16)
    a, b = a16.astype(np.float64), b16.astype(np.float64)
    qa = apy.APyFloatArray.from_float(a, exp_bits=5, man_bits=10)
    qb = apy.APyFloatArray.from_float(b, exp_bits=5, man_bits=10)
    results = []
    print(f"{n} fp16 operands (all finite bit patterns), result in fp16; M elements/s")
    print(f"  {'op':6s} {'mode':13s} {'emul':>9s} {'numpy f16':>10s} {'APyTypes':>9s} {'emul/numpy':>11s} {'emul/APy':>9s}")
    apy_ops = {"add": lambda: qa + qb, "mul": lambda: qa * qb, "div": lambda: qa / qb}
    np_ops = {"add": lambda: a16 + b16, "sub": lambda: a16 - b16, "mul": lambda: a16 * b16, "div": lambda: a16 / b16,
              "sqrt": lambda: np.sqrt(np.abs(a16))}
    with np.errstate(all="ignore"):
        for op in ("add", "sub", "mul", "div", "sqrt", "fma"):
            args_ = {"sqrt": (np.abs(a),), "fma": (a, b, a)}.get(op, (a, b))
            for mode in ("nearest_even", "toward_zero"):
                te = median_time(lambda: getattr(A, op)(*args_, "fp16", mode), reps)
                tn = median_time(np_ops[op], reps) if op in np_ops and mode == "nearest_even" else None
                ta = None
                if op in apy_ops:
                    qm = (apy.QuantizationMode.TIES_EVEN if mode == "nearest_even"
                          else apy.QuantizationMode.TO_ZERO)
                    with apy.APyFloatQuantizationContext(qm):
                        ta = median_time(apy_ops[op], reps)
                cells = [n / te / 1e6, n / tn / 1e6 if tn else None, n / ta / 1e6 if ta else None]
                fmt = lambda v: f"{v:9.1f}" if v else f"{'—':>9s}"  # noqa: E731
                print(f"  {op:6s} {mode:13s} {fmt(cells[0])} {fmt(cells[1]):>10s} {fmt(cells[2])} "
                      f"{(tn / te if tn else float('nan')):11.2f} {(ta / te if ta else float('nan')):9.2f}")
                results.append(dict(op=op, mode=mode, emul_s=te, numpy_f16_s=tn, apytypes_s=ta))
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "arith.json"), "w") as f:
        json.dump(dict(n=n, results=results), f, indent=1)


if __name__ == "__main__":
    main()

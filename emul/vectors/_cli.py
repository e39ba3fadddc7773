"""``emul vectors``: the command line of :mod:`emul.vectors` (write, regenerate, check, compare)."""

from __future__ import annotations

import sys


def _integer(text: str) -> int:
    """An int option: decimal, or 0x/0o/0b prefixed (e.g. --lfsr-seed 0xACE1)."""
    return int(text, 0)


_VECTOR_OPTIONS = [  # (flag, settings key, type, help)
    ("--fmt", "fmt", str, "operand format (quantize: the target format), e.g. e4m3fn, int8, fx<12,4>; "
                          "block_encode/block_dot: a block format, e.g. mxfp4, nvfp4, e4m3fn/e8m0/16"),
    ("--in-fmt", "in_fmt", str, "quantize: input format (default fp32)"),
    ("--b-fmt", "b_fmt", str, "second operand format (default --fmt)"),
    ("--c-fmt", "c_fmt", str, "fma: addend format (default --out-fmt)"),
    ("--out-fmt", "out_fmt", str, "add/sub/mul/fma: result format (default --fmt)"),
    ("--acc", "acc", str, "mac/dot: accumulator format (default int12; block_dot: fp32)"),
    ("--product", "product", str, "mac/dot: round each product to this format (default: exact products)"),
    ("--product-rounding", "product_rounding", str, "mac/dot: rounding of products (default nearest_even)"),
    ("--rounding", "rounding", str, "rounding mode (default nearest_even)"),
    ("--overflow", "overflow", str, "overflow rule (default: the result format's)"),
    ("--sr-bits", "sr_bits", _integer, "stochastic rounding: random bits per rounding (default 32)"),
    ("--sr-method", "sr_method", str, "stochastic rounding: add or compare (default add)"),
    ("--random-source", "random_source", str, "stochastic rounding: threefry, lfsr or all (default threefry)"),
    ("--k", "k", _integer, "mac: steps per sequence; dot: elements per dot product (default 16); block_encode: "
                          "elements per line; block_dot: elements per dot product (default: the block size)"),
    ("--order", "order", str, "dot: sequential, pairwise or chunked (default sequential)"),
    ("--chunk", "chunk", _integer, "dot: chunk size of order chunked"),
    ("--outer", "outer", str, "dot: format of the chunk sums' accumulator (order chunked; default --acc)"),
    ("--init", "init", str, "mac/dot: the accumulator's starting value: a number for every vector, or per_vector "
                           "(an init field in each line: corner and random starting values); default +0"),
    ("--scale-rule", "scale_rule", str, "block_encode, e8m0 scales: floor, ceil, even or rceil (default floor)"),
    ("--scale-overflow", "scale_overflow", str, "block_encode, e8m0 scales: nan or saturate (default nan)"),
    ("--tail", "tail", str, "block_encode: partial or error, for --k below the block size (default partial)"),
    ("--scale-min", "scale_min", float, "block_encode, float scales: the least block scale (default 0; torchao 2**-6)"),
    ("--tensor-scale", "tensor_scale", float, "block_encode, nvfp4: one tensor scale for every line "
                                              "(default: a t per line)"),
    ("--arithmetic", "arithmetic", str, "block_encode, float scales: exact, float32, float32_div or float32_te "
                                        "(default exact)"),
    ("--n", "n", _integer, "nm: kept per block (default 2)"),
    ("--m", "m", _integer, "nm: block size (default 4)"),
    ("--ties", "ties", str, "nm: low_index or high_index (default low_index)"),
    ("--count", "count", _integer, "random vectors (mac: sequences, nm: blocks; default 1000)"),
    ("--seed", "seed", _integer, "seed of the random vectors and SR words (default 0)"),
]
_LFSR_OPTIONS = [("--lfsr-width", "width", int), ("--lfsr-taps", "taps", str), ("--lfsr-seed", "seed", _integer),
                 ("--lfsr-kind", "kind", str), ("--lfsr-output", "output", str)]


def _vector_settings(args) -> dict:
    """The settings the user gave (unset options are left to emul.vectors' defaults)."""
    settings = {key: getattr(args, key) for _, key, _, _ in _VECTOR_OPTIONS if getattr(args, key) is not None}
    sets = [name for name in ("exhaustive", "corners", "random") if getattr(args, name)]
    if args.sets:
        sets += [x for x in args.sets.replace("+", ",").split(",") if x]
    if sets:
        settings["sets"] = sets
    if args.running:
        settings["running"] = True
    lfsr = {}
    for flag, key, _ in _LFSR_OPTIONS:
        value = getattr(args, "lfsr_" + key)
        if value is not None:
            lfsr[key] = [int(t) for t in value.replace(" ", "").split(",") if t] if key == "taps" else value
    if lfsr:
        settings["lfsr"] = lfsr
        settings.setdefault("random_source", "lfsr")
    return settings


def _vectors(args) -> int:
    from .. import vectors

    try:
        if args.regenerate or args.check:
            path = args.regenerate or args.check
            if args.op:
                raise ValueError(f"--regenerate/--check take their settings from {path}; drop {args.op!r}")
            if args.check:
                import tempfile
                from pathlib import Path

                with tempfile.TemporaryDirectory() as tmp:
                    fresh = vectors.regenerate(path, Path(tmp) / "regenerated")
                    same = fresh.read_bytes() == Path(path).read_bytes()
                print(f"emul vectors: {path} {'matches' if same else 'DIFFERS FROM'} its regenerated header settings",
                      file=sys.stderr)
                return 0 if same else 1
            out = vectors.regenerate(path, args.out if args.out != "-" else None)
            print(f"emul vectors: regenerated {out} from its header", file=sys.stderr)
            return 0
        if args.op == "compare":
            return _compare(args)
        if args.files:
            raise ValueError(f"unexpected arguments {' '.join(args.files)} (only 'compare' takes files)")
        if not args.op:
            raise ValueError(f"give an operation ({', '.join(vectors.OPS)}), compare EXPECTED ACTUAL, "
                             "or --regenerate FILE")
        vec = vectors.generate(args.op, **_vector_settings(args))
        csv = args.csv or str(args.out).endswith(".csv")
        if csv:
            out = vec.to_csv(args.out, values=args.values)
        else:
            out = vec.to_hex(args.out, sep=args.sep)
    except (ValueError, TypeError, NotImplementedError, KeyError, OSError) as exc:
        print(f"emul vectors: {exc}", file=sys.stderr)
        return 2
    where = "standard output" if str(out) == "-" else out
    print(f"emul vectors: wrote {len(vec)} vectors ({' '.join(vec.names)}) to {where}", file=sys.stderr)
    return 0


def _compare(args) -> int:
    """``emul vectors compare EXPECTED ACTUAL``: 0 when everything matches, 1 on a mismatch."""
    from .. import vectors

    if len(args.files) != 2:
        raise ValueError(f"compare takes two files, EXPECTED (an emul vectors file) and ACTUAL (the device's "
                         f"output); got {len(args.files)}")
    fields = [f for f in args.fields.replace(" ", "").split(",") if f] if args.fields else None
    result = vectors.compare(args.files[0], args.files[1], nan=args.nan, fields=fields, show=args.show)
    print(f"emul vectors compare: {args.files[0]} vs {args.files[1]}")
    print(result.report())
    return 0 if result.ok else 1


def add_parser(sub) -> None:
    """Add the ``vectors`` subcommand to the ``emul`` parser's subparsers."""
    from . import OPS as ops

    p = sub.add_parser(
        "vectors", help="write test vectors (operands and emul's expected results) as $readmemh hex or CSV",
        description="Operands and expected results as bit codes, one vector per line, with a header that "
                    "records every setting (so --regenerate re-creates the file). Examples: "
                    "emul vectors mul --fmt e4m3fn --out-fmt fp16 --exhaustive -o mul.hex; "
                    "emul vectors mac --acc int12 --overflow saturate --k 16 --count 1000 --seed 1 -o mac.hex; "
                    "emul vectors dot --fmt e5m2 --acc 'fx<20,8>' --k 16 --count 1000 -o dot.hex; "
                    "emul vectors quantize --in-fmt fp16 --fmt e4m3fn --rounding stochastic --sr-bits 8 "
                    "--random-source lfsr -o sr.hex; emul vectors block_encode --fmt mxfp4 --count 1000 -o mx.hex; "
                    "emul vectors block_dot --fmt mxfp8_e4m3 --acc fp32 --k 64 -o bdot.hex; "
                    "emul vectors compare mul.hex dut_out.hex --nan any")
    p.add_argument("op", nargs="?", choices=(*ops, "compare"),
                   help="the operation, or compare (then: EXPECTED ACTUAL)")
    p.add_argument("files", nargs="*", help="compare: the vectors file and the device's output file")
    for flag, key, typ, text in _VECTOR_OPTIONS:
        p.add_argument(flag, dest=key, type=typ, default=None, help=text)
    for flag, key, typ in _LFSR_OPTIONS:
        p.add_argument(flag, dest="lfsr_" + key, type=typ, default=None,
                       help=f"LFSR {key} (random source lfsr; taps as 16,14,13,11)")
    p.add_argument("--running", action="store_true", help="dot: also the running sums s0..s{k-1} (sequential order)")
    p.add_argument("--exhaustive", action="store_true", help="every operand code (small formats)")
    p.add_argument("--corners", action="store_true", help="corner cases (zeros, subnormals, max, ties, NaN/inf...)")
    p.add_argument("--random", action="store_true", help="--count seeded random vectors")
    p.add_argument("--sets", default=None, help="sets as a list, e.g. corners,random (default corners,random)")
    p.add_argument("-o", "--out", default="-", help="output file (.csv: CSV; default: standard output)")
    p.add_argument("--csv", action="store_true", help="write CSV instead of hex")
    p.add_argument("--values", action="store_true", help="CSV: also write each field's decoded value")
    p.add_argument("--sep", default="_", choices=("_", " ", ""), help="hex: separator between fields (default _)")
    p.add_argument("--nan", default="exact", choices=("exact", "any"),
                   help="compare: 'any' lets any NaN code match an expected NaN (default exact: equal codes)")
    p.add_argument("--show", type=int, default=10, help="compare: print the first N mismatches (default 10)")
    p.add_argument("--fields", default=None, help="compare: only these fields, e.g. y or s15,y")
    p.add_argument("--regenerate", metavar="FILE", help="re-create FILE (or -o OUT) from the settings in its header")
    p.add_argument("--check", metavar="FILE", help="exit 0 iff FILE equals what its header settings regenerate")
    p.set_defaults(run=_vectors)

"""The ``emul`` command line: ``emul info FORMAT``, ``emul vectors OP ...`` (and more subcommands as they come)."""

from __future__ import annotations

import argparse
import sys

import numpy as np

from .formats import FixedFormat, FloatFormat, format as as_format


def describe(fmt) -> list[str]:
    """Lines describing a format's parameters."""
    lines = [f"format        {fmt.name}", f"bits          {fmt.bits}"]
    if isinstance(fmt, FloatFormat):
        lines += [
            f"exp_bits      {fmt.exp_bits}",
            f"man_bits      {fmt.man_bits}",
            f"bias          {fmt.bias}",
            f"subnormals    {fmt.subnormals}",
            f"specials      {fmt.specials}",
            f"max           {fmt.max!r}",
            f"min_normal    {fmt.min_normal!r}",
            f"min_subnormal {fmt.min_subnormal!r}",
            f"eps           {fmt.eps!r}",
        ]
    else:
        lines += [
            f"frac          {fmt.frac}",
            f"signed        {fmt.signed}",
            f"min           {fmt.min!r}",
            f"max           {fmt.max!r}",
            f"lsb           {fmt.lsb!r}",
        ]
    return lines


def code_table(fmt) -> list[str]:
    """One line per code (for formats of at most 8 bits): code in hex and binary, and its value."""
    from .quantize import decode

    digits = (fmt.bits + 3) // 4
    lines = [f"{'code':>{digits + 2}}  {'bits':>{fmt.bits}}  value"]
    for code in range(1 << fmt.bits):
        try:
            value = repr(float(decode(np.uint64(code), fmt)))
        except ValueError:
            value = "(invalid: subnormal pattern without subnormals)"
        lines.append(f"{code:#0{digits + 2}x}  {code:0{fmt.bits}b}  {value}")
    return lines


def _info(args) -> int:
    try:
        fmt = as_format(args.format)
    except (ValueError, TypeError) as exc:
        print(f"emul info: {exc}", file=sys.stderr)
        return 2
    print("\n".join(describe(fmt)))
    if fmt.bits <= 8 and not args.no_table:
        print()
        print("\n".join(code_table(fmt)))
    return 0


def _integer(text: str) -> int:
    """An int option: decimal, or 0x/0o/0b prefixed (e.g. --lfsr-seed 0xACE1)."""
    return int(text, 0)


_VECTOR_OPTIONS = [  # (flag, settings key, type, help)
    ("--fmt", "fmt", str, "operand format (quantize: the target format), e.g. e4m3fn, int8, fx<12,4>"),
    ("--in-fmt", "in_fmt", str, "quantize: input format (default fp32)"),
    ("--b-fmt", "b_fmt", str, "second operand format (default --fmt)"),
    ("--c-fmt", "c_fmt", str, "fma: addend format (default --out-fmt)"),
    ("--out-fmt", "out_fmt", str, "add/sub/mul/fma: result format (default --fmt)"),
    ("--acc", "acc", str, "mac: accumulator format (default int12)"),
    ("--product", "product", str, "mac: round each product to this format (default: exact products)"),
    ("--product-rounding", "product_rounding", str, "mac: rounding of products (default nearest_even)"),
    ("--rounding", "rounding", str, "rounding mode (default nearest_even)"),
    ("--overflow", "overflow", str, "overflow rule (default: the result format's)"),
    ("--sr-bits", "sr_bits", _integer, "stochastic rounding: random bits per rounding (default 32)"),
    ("--sr-method", "sr_method", str, "stochastic rounding: add or compare (default add)"),
    ("--random-source", "random_source", str, "stochastic rounding: threefry, lfsr or all (default threefry)"),
    ("--k", "k", _integer, "mac: steps per sequence (default 16)"),
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
    from . import vectors

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
        if not args.op:
            raise ValueError(f"give an operation ({', '.join(vectors.OPS)}) or --regenerate FILE")
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


def _add_vectors_parser(sub) -> None:
    ops = ("quantize", "add", "sub", "mul", "fma", "mac", "nm")
    p = sub.add_parser(
        "vectors", help="write test vectors (operands and emul's expected results) as $readmemh hex or CSV",
        description="Operands and expected results as bit codes, one vector per line, with a header that "
                    "records every setting (so --regenerate re-creates the file). Examples: "
                    "emul vectors mul --fmt e4m3fn --out-fmt fp16 --exhaustive -o mul.hex; "
                    "emul vectors mac --acc int12 --overflow saturate --k 16 --count 1000 --seed 1 -o mac.hex; "
                    "emul vectors quantize --in-fmt fp16 --fmt e4m3fn --rounding stochastic --sr-bits 8 "
                    "--random-source lfsr -o sr.hex")
    p.add_argument("op", nargs="?", choices=ops, help="the operation")
    for flag, key, typ, text in _VECTOR_OPTIONS:
        p.add_argument(flag, dest=key, type=typ, default=None, help=text)
    for flag, key, typ in _LFSR_OPTIONS:
        p.add_argument(flag, dest="lfsr_" + key, type=typ, default=None,
                       help=f"LFSR {key} (random source lfsr; taps as 16,14,13,11)")
    p.add_argument("--exhaustive", action="store_true", help="every operand code (small formats)")
    p.add_argument("--corners", action="store_true", help="corner cases (zeros, subnormals, max, ties, NaN/inf...)")
    p.add_argument("--random", action="store_true", help="--count seeded random vectors")
    p.add_argument("--sets", default=None, help="sets as a list, e.g. corners,random (default corners,random)")
    p.add_argument("-o", "--out", default="-", help="output file (.csv: CSV; default: standard output)")
    p.add_argument("--csv", action="store_true", help="write CSV instead of hex")
    p.add_argument("--values", action="store_true", help="CSV: also write each field's decoded value")
    p.add_argument("--sep", default="_", choices=("_", " ", ""), help="hex: separator between fields (default _)")
    p.add_argument("--regenerate", metavar="FILE", help="re-create FILE (or -o OUT) from the settings in its header")
    p.add_argument("--check", metavar="FILE", help="exit 0 iff FILE equals what its header settings regenerate")
    p.set_defaults(run=_vectors)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emul", description="Bit-exact low-precision number formats.")
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="print a format's parameters (and its code table when <= 8 bits)")
    info.add_argument("format", help="a format name, e.g. e4m3fn, bf16, e5m6b10-nosub, fx<12,4>")
    info.add_argument("--no-table", action="store_true", help="omit the code table")
    info.set_defaults(run=_info)
    _add_vectors_parser(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())

"""Arguments of ``python -m core batch {inspect,chop,resize}`` and the options dict a batch task gets."""
from __future__ import annotations

import math
import os

from .errors import ChopShopError

RULES = ("rank", "sv_fro", "sv_ratio", "sv_cumulative", "fro_ckpt", "size")


def _common(s) -> None:
    s.add_argument("inputs", nargs="+", metavar="INPUT",
                   help=".safetensors files, folders (searched recursively) or globs (quote them)")
    s.add_argument("-o", "--output-dir", required=True, metavar="OUTDIR",
                   help="outputs mirror the input tree here; report in OUTDIR/chopshop-batch.json and .csv")
    s.add_argument("--jobs", type=int, default=None, help=f"worker processes (default: the cores, {os.cpu_count()})")
    s.add_argument("--resume", action="store_true",
                   help="skip files whose output exists and was made from the same input with the same options")
    s.add_argument("--cluster", metavar="tcp://HOST:PORT",
                   help="run the files on a Dask distributed scheduler (workers share the filesystem)")
    s.add_argument("--json", action="store_true", help="print the report as one JSON object")


def add_parsers(subparsers, func) -> None:
    b = subparsers.add_parser("batch", help="inspect, chop or resize many files (a folder, a library)")
    ops = b.add_subparsers(dest="operation", required=True)
    s = ops.add_parser("inspect", help="write each file's inspect report as NAME.json")
    _common(s)
    s.add_argument("--layout-only", action="store_true", help="header only: no energies")
    s = ops.add_parser("chop", help="keep, drop or scale blocks of every file")
    _common(s)
    s.add_argument("--vector", help="global,w1,...,wN over each file's blocks")
    s.add_argument("--preset", help="a named preset (files of other architectures fail)")
    s.add_argument("--te-weight", type=float, default=1.0, help="text-encoder weight (1 keeps, 0 drops)")
    s = ops.add_parser("resize", help="SVD-resize every file")
    _common(s)
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--rank", type=int, help="fixed rank")
    g.add_argument("--sv-fro", type=float, help="keep the smallest rank with Frobenius retention >= P")
    g.add_argument("--sv-ratio", type=float, help="keep singular values > sigma_1 / R")
    g.add_argument("--sv-cumulative", type=float, help="keep the smallest rank with sum(sigma) share >= P")
    g.add_argument("--fro-ckpt", type=float, metavar="THR", help="keep sigma_i >= 10^THR * ||W0||_F (needs --base)")
    g.add_argument("--size", type=float, metavar="MIB", help="target file size in MiB")
    s.add_argument("--base", help="base model .safetensors (for --fro-ckpt)")
    s.add_argument("--max-rank", type=int, default=None)
    s.add_argument("--kohya-compatible", action="store_true", help="dynamic rules keep one more rank, as kohya")
    s.add_argument("--dtype", default="fp16", choices=["fp16", "bf16", "fp32", "match"])
    s.add_argument("--device", default="cpu", help="cpu (default), cuda or mps")
    s.add_argument("--min-retention", type=float, metavar="P",
                   help="write nothing for a file whose energy-weighted retention is below P (e.g. 0.9)")
    for p in (b, *ops.choices.values()):
        p.set_defaults(func=func)


def options_from_args(args) -> tuple[dict, float | None]:
    """The task options (validated here, so bad options fail before any file) and --min-retention."""
    if args.jobs is not None and args.jobs < 1:
        raise ChopShopError(f"--jobs must be >= 1, got {args.jobs}")
    if args.operation == "inspect":
        return {"layout_only": bool(args.layout_only)}, None
    if args.operation == "chop":
        if (args.vector is None) == (args.preset is None):
            raise ChopShopError("give either --vector (e.g. 1,0,1,...) or --preset NAME, not both or neither")
        if not (math.isfinite(args.te_weight) and args.te_weight >= 0):
            raise ChopShopError(f"--te-weight must be a finite number >= 0, got {args.te_weight}")
        return {"vector": args.vector, "preset": args.preset, "te_weight": args.te_weight}, None
    from .cli import rule_from_args
    rule_from_args(args)                      # raises on a bad rule
    opts = {r: getattr(args, r) for r in RULES if getattr(args, r) is not None}
    opts.update(max_rank=args.max_rank, kohya_compatible=args.kohya_compatible, dtype=args.dtype,
                device=args.device, base=os.path.abspath(args.base) if args.base else None)
    p = args.min_retention
    if p is not None and not (0 < p <= 1):
        raise ChopShopError(f"--min-retention must be a fraction in (0, 1] (0.9 for 90%), got {p}")
    return opts, p

"""Command line: ``python -m core inspect|chop|resize|presets ...``.

Errors are one line on stderr and exit status 2 (bad input) — never a traceback for user mistakes. The input
path and header are checked before torch is imported, so a missing or malformed file is reported at once.
Text output escapes control characters (a key named ``\x1b[2J`` cannot clear the terminal); ``--json`` is
strict JSON (never NaN or Infinity). A closed pipe (``presets | head``) ends the command quietly.
"""
from __future__ import annotations

import argparse
import re
import sys
import time

from . import strict_json
from .errors import ChopShopError, Terminated

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
TORCH_HINT = ("PyTorch is not installed in this Python ({exe}); install it with `pip install torch` "
              "(https://pytorch.org lists the CUDA builds), then run the command again")


def escape_controls(text: str) -> str:
    """``text`` with control characters (other than newline and tab) shown as ``\\xNN`` escapes."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


def print(*parts, file=None) -> None:  # noqa: A001 - every text line of the CLI goes through the escaper
    (file or sys.stdout).write(escape_controls(" ".join(str(p) for p in parts)) + "\n")


def _print_json(obj) -> None:
    sys.stdout.write(strict_json.dumps(obj) + "\n")


def cmd_inspect(args) -> int:
    from .inspect_report import inspect, render_text
    from .lora_file import read
    from .progress import ProgressCallback
    lora = read(args.file)
    with ProgressCallback("inspect", "modules") as progress:
        report = inspect(lora, energies=not args.layout_only, progress=progress)
    if args.json:
        _print_json(report)
    elif args.chop_blocks_style:
        from .inspect_report import render_chop_blocks
        print(render_chop_blocks(report))
    else:
        print(render_text(report))
    return 0


def cmd_presets(args) -> int:
    from .presets import load_presets, preset_rows
    rows = preset_rows(load_presets(), args.architecture)
    if args.json:
        _print_json(rows)
    else:
        for r in rows:
            print(f"{r['name']:<28} [{r['layout']}] {','.join(_fmt(v) for v in r['vector'])}")
            if r["description"]:
                print(f"{'':<28} {r['description']}")
    return 0


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def cmd_chop(args) -> int:
    from .chop import chop_file
    if (args.vector is None) == (args.preset is None):
        raise ChopShopError("give either a VECTOR (e.g. 1,0,1,...) or --preset NAME, not both or neither")
    from .progress import ProgressCallback
    with ProgressCallback("chop", "B") as progress:
        result = chop_file(args.file, vector=args.vector, preset=args.preset, output=args.output,
                           te_weight=args.te_weight, progress=progress)
    if args.json:
        _print_json(result)
    else:
        print(f"Kept blocks: {', '.join(result['kept_blocks']) or '(none)'}")
        print(f"Removed blocks: {', '.join(result['removed_blocks']) or '(none)'}")
        if result.get("scaled_blocks"):
            print("Scaled blocks: " + ", ".join(f"{k}x{_fmt(v)}" for k, v in result["scaled_blocks"].items()))
        for w in result.get("warnings", []):
            print(f"Warning: {w}")
        print(f"Tensors: {result['tensors_in']} -> {result['tensors_out']}, "
              f"bytes: {result['bytes_in']} -> {result['bytes_out']}")
        print(f"Saved: {result['output']}")
    return 0


RULE_FLAGS = ("rank", "sv_fro", "sv_ratio", "sv_cumulative", "fro_ckpt", "recipe", "size")


def rule_from_args(args):
    """The resize rule the command line names (exactly one of the rule flags)."""
    from .resize import Rule
    for mode in RULE_FLAGS:
        v = getattr(args, mode, None)
        if v is not None:
            rule = Rule(mode, v, getattr(args, "max_rank", None), getattr(args, "kohya_compatible", False))
            if rule.needs_base and not getattr(args, "base", None):
                raise ChopShopError(f"--{mode.replace('_', '-')} {v} needs --base CKPT (the base model the LoRA "
                                    "was trained on)")
            return rule
    raise ChopShopError("give a rank rule: --rank, --sv-fro, --sv-ratio, --sv-cumulative, --fro-ckpt, --recipe "
                        "or --size")


def cmd_resize(args) -> int:
    from .gc_freeze import freeze_imports
    from .progress import Progress
    from .resize import render_report, resize_file
    freeze_imports()
    rule = rule_from_args(args)
    t0 = time.perf_counter()
    with Progress(0, desc="resize", enabled=not args.json) as bar:
        def progress(done: int, total: int) -> None:
            bar.total, bar.enabled = float(total), not args.json
            bar.update(done - bar.done)
        result = resize_file(args.file, rule, output=args.output, dtype=args.dtype, device=args.device,
                             base=args.base, progress=progress, norm_cache=args.norm_cache)
    result["seconds"] = round(time.perf_counter() - t0, 3)
    if args.json:
        _print_json(result)
    else:
        print(render_report(result))
    return 0


class Parser(argparse.ArgumentParser):
    """argparse with its errors on one line (no usage block), exit status 2."""

    def error(self, message: str):
        sys.stderr.write(escape_controls(f"error: {message} (see `{self.prog} --help`)").replace("\n", " ") + "\n")
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m core", description="LoRA Chop Shop: inspect, chop and resize "
                                "LoRA/LyCORIS .safetensors files.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("inspect", help="show a LoRA's block layout")
    s.add_argument("file")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.add_argument("--layout-only", action="store_true", help="header only: no energies, no alpha reads")
    s.add_argument("--chop-blocks-style", action="store_true", help="print the layout exactly as chop_blocks.py")
    s.set_defaults(func=cmd_inspect)

    s = sub.add_parser("presets", help="list the named block presets")
    s.add_argument("--json", action="store_true")
    s.add_argument("--architecture", default=None, help="only presets of this architecture (e.g. sdxl, flux)")
    s.set_defaults(func=cmd_presets)

    s = sub.add_parser("chop", help="keep, drop or scale blocks")
    s.add_argument("file")
    s.add_argument("vector", nargs="?", help="global,w1,...,wN over the blocks present (or the full layout)")
    s.add_argument("--preset", help="a named preset (see `presets`)")
    s.add_argument("-o", "--output", help="output file (default <stem>-chop.safetensors beside the input)")
    s.add_argument("--te-weight", type=float, default=1.0, help="text-encoder weight (1 keeps, 0 drops)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_chop)

    s = sub.add_parser("resize", help="SVD-resize to the rank each layer needs")
    s.add_argument("file")
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--rank", type=int, help="fixed rank")
    g.add_argument("--sv-fro", type=float, help="keep the smallest rank with Frobenius retention >= P")
    g.add_argument("--sv-ratio", type=float, help="keep singular values > sigma_1 / R")
    g.add_argument("--sv-cumulative", type=float, help="keep the smallest rank with sum(sigma) share >= P")
    g.add_argument("--fro-ckpt", type=float, metavar="THR",
                   help="keep sigma_i >= 10^THR * ||W0||_F (needs --base)")
    g.add_argument("--size", type=float, metavar="MIB", help="target file size in MiB")
    g.add_argument("--recipe", metavar="RECIPE",
                   help="elias-gaeros score recipe, e.g. 'fro_ckpt=1,thr=-3.55' or 'spn_ckpt=1,size=50': terms "
                        "fro_ckpt, spn_ckpt, fro_lora (fro), spn_lora (spn), params; thr=LOG10 or size=MIB; "
                        "rescale=X (docs/resize.md §4.3)")
    s.add_argument("--base", help="base model .safetensors (for --fro-ckpt and *_ckpt recipe terms)")
    s.add_argument("--norm-cache", metavar="DIR", default=None,
                   help="folder of the base-model norm cache (default ~/.cache/chopshop/norms)")
    s.add_argument("--max-rank", type=int, default=None)
    s.add_argument("--kohya-compatible", action="store_true", help="dynamic rules keep one more rank, as kohya")
    s.add_argument("--dtype", default="fp16", choices=["fp16", "bf16", "fp32", "match"])
    s.add_argument("--device", default=None, help="cpu, cuda or mps (default: cuda when available)")
    s.add_argument("-o", "--output")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_resize)

    from .batch_cli import add_parsers
    add_parsers(sub, cmd_batch)
    return p


def cmd_batch(args) -> int:
    from .batch import cmd_batch as run   # the process pool and reports load only for a batch
    return run(args)


def check_inputs(args) -> None:
    """Path and header checks that need no torch: the input file and ``--base``; then torch itself."""
    from .safetensors_header import read_header
    for attr in ("file", "base"):
        path = getattr(args, attr, None)
        if path:
            read_header(path)
    if args.command != "presets":
        require_torch()


def require_torch() -> None:
    import importlib.util
    if importlib.util.find_spec("torch") is None:
        raise ChopShopError(TORCH_HINT.format(exe=sys.executable))


def _error(message: str) -> None:
    sys.stderr.write("error: " + escape_controls(" ".join(str(message).split("\n"))) + "\n")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if not argv:
            require_torch()
        args = build_parser().parse_args(argv)
        check_inputs(args)
        rc = args.func(args)
        sys.stdout.flush()      # a closed pipe shows here, not as a warning at interpreter exit
        return rc
    except ChopShopError as e:
        _error(str(e))
        return 2
    except BrokenPipeError:
        return _quiet_pipe()
    except Terminated:
        _error("terminated; nothing was written")
        return 143
    except KeyboardInterrupt:
        _error("interrupted; nothing was written")
        return 130
    except MemoryError:
        _error("out of memory")
        return 2
    except OSError as e:
        _error(f"{e.strerror or e}: {getattr(e, 'filename', '') or ''}".rstrip(": "))
        return 2


def _quiet_pipe() -> int:
    """The reader of stdout went away (``| head``): stop quietly, as other command-line tools do."""
    import os
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return 0

"""The command line freezes torch's import-time objects out of the garbage collector; the library never does
(inside ComfyUI those objects are not the pack's)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from chopshop_dev import synth

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = """
import gc, sys
from core.resize import Rule, resize_file
from core import cli
resize_file(sys.argv[1], Rule("sv_fro", 0.9), output=sys.argv[2])
library = gc.get_freeze_count()
code = cli.main(["resize", sys.argv[1], "--sv-fro", "0.9", "-o", sys.argv[3], "--json"])
print("FREEZE", library, gc.get_freeze_count(), code)
"""


def test_command_line_resize_freezes_imports_and_the_library_does_not(tmp_path):
    src = synth.write(tmp_path / "l.safetensors", synth.sdxl_lycoris_full(te="mlp", rank=4, conv_rank=2))
    r = subprocess.run([sys.executable, "-c", SCRIPT, src, tmp_path / "a.safetensors", tmp_path / "b.safetensors"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("FREEZE"))
    _, library, cli_count, code = line.split()
    assert int(library) == 0                 # resize_file left the collector alone
    assert int(cli_count) > 10_000           # the CLI froze what was alive: torch's objects among them
    assert code == "0" and (tmp_path / "b.safetensors").exists()

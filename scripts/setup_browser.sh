#!/usr/bin/env bash
# Headless browser for the UI tests: Debian's chromium (+ chromium-driver, fonts) and the playwright
# python package in .runtime/venv, driving /usr/bin/chromium.
# Never runs `playwright install` (that downloads a browser build: no such network here).
#
#   bash scripts/setup_browser.sh            # or: make browser   (needs .runtime/venv: make runtime)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
RT=${CHOPSHOP_RUNTIME:-$REPO/.runtime}
VPY=$RT/venv/bin/python
LOCK=$HERE/runtime-lock.txt
PIN=$RT/constraints-torch-cpu.txt
export PIP_DISABLE_PIP_VERSION_CHECK=1
t0=$(date +%s)
say() { echo "[setup_browser $(($(date +%s) - t0))s] $*"; }

[ -x "$VPY" ] && [ -f "$PIN" ] || { echo "no runtime at $RT: run scripts/setup_runtime.sh (make runtime) first" >&2; exit 1; }

if ! command -v chromium >/dev/null 2>&1; then
  say "installing Debian chromium, chromium-driver, fonts-dejavu-core"
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends \
    chromium chromium-driver fonts-dejavu-core
fi
# the /usr/bin/chromium wrapper prints a harmless "[: ... unexpected operator" line
say "$(chromium --version 2>/dev/null | tail -1)"

# the python package only (its node driver is inside the wheel); never a browser download
if ! "$VPY" -c "import playwright" 2>/dev/null \
   || [ "$("$VPY" -m playwright --version 2>/dev/null)" != "Version $(grep '^playwright==' "$LOCK" | cut -d= -f3)" ]; then
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 "$VPY" -m pip install -q -c "$PIN" -c "$LOCK" playwright 2>&1 \
    | { grep -v "^WARNING: Location 'file:" || true; }
fi
say "playwright $("$VPY" -m playwright --version) (browser: $(command -v chromium))"

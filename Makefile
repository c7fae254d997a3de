# LoRA Chop Shop: runtime setup and tests against a real ComfyUI 0.3.75 (CPU).
#   make runtime       build .runtime/ (venv + ComfyUI; ~2.5 min fresh, ~1 s when up to date)
#   make browser       Debian chromium + playwright for the UI tests
#   make test          everything (core, comfy, browser); a missing runtime fails instead of skipping
#   make test-core | test-comfy | test-browser
#   make test-browser  the UI tests twice: the frontend pinned by ComfyUI (1.32.9) and the newest
#                      comfyui-frontend-package on PyPI (make frontend-newest; version in .runtime/frontend-newest.txt)
#   make demo ARGS="..."   make bench
SHELL := /bin/bash
PY := .runtime/venv/bin/python
PYTEST := $(PY) -m pytest -q
ARGS ?=

.PHONY: runtime browser frontend-newest test test-core test-comfy test-browser test-browser-newest demo bench

runtime:
	bash scripts/setup_runtime.sh

browser: runtime
	bash scripts/setup_browser.sh

test: runtime browser frontend-newest
	CHOPSHOP_REQUIRE_RUNTIME=1 $(PYTEST) tests
	$(MAKE) --no-print-directory test-browser-newest

test-core: runtime
	$(PYTEST) -m "not comfy and not browser" tests

test-comfy: runtime
	CHOPSHOP_REQUIRE_RUNTIME=1 $(PYTEST) -m comfy tests

test-browser: browser frontend-newest
	CHOPSHOP_REQUIRE_RUNTIME=1 $(PYTEST) -m browser tests
	$(MAKE) --no-print-directory test-browser-newest

# The newest comfyui-frontend-package on PyPI, resolved now (pip index versions; pip download as a fallback),
# installed once into .runtime/frontend-<version>/ (pip --target, no deps) and recorded.
FRONTEND_PKG := comfyui-frontend-package
frontend-newest: runtime
	@set -e; \
	v=$$($(PY) -m pip index versions $(FRONTEND_PKG) 2>/dev/null | sed -n 's/^$(FRONTEND_PKG) (\(.*\))$$/\1/p' | head -n1); \
	if [ -z "$$v" ]; then \
	  tmp=$$(mktemp -d); $(PY) -m pip download --quiet --no-deps --dest "$$tmp" $(FRONTEND_PKG); \
	  v=$$(ls "$$tmp" | sed -n 's/^comfyui_frontend_package-\([^-]*\)-.*/\1/p' | head -n1); rm -rf "$$tmp"; fi; \
	[ -n "$$v" ] || { echo "cannot resolve the newest $(FRONTEND_PKG) on PyPI" >&2; exit 1; }; \
	d=.runtime/frontend-$$v; \
	if [ ! -f "$$d/comfyui_frontend_package/static/index.html" ]; then \
	  rm -rf "$$d"; $(PY) -m pip install --quiet --no-deps --target "$$d" "$(FRONTEND_PKG)==$$v"; fi; \
	echo "$$v" > .runtime/frontend-newest.txt; \
	echo "newest $(FRONTEND_PKG): $$v ($$d)"

test-browser-newest: frontend-newest
	@v=$$(cat .runtime/frontend-newest.txt); echo "== browser tests against frontend $$v"; \
	CHOPSHOP_FRONTEND_ROOT=$(CURDIR)/.runtime/frontend-$$v/comfyui_frontend_package/static CHOPSHOP_FRONTEND_VERSION=$$v \
	CHOPSHOP_ARTIFACTS=$(CURDIR)/test-artifacts/frontend-$$v CHOPSHOP_REQUIRE_RUNTIME=1 $(PYTEST) -m browser tests

demo: runtime
	PYTHONPATH=$(CURDIR) $(PY) scripts/demo.py $(ARGS)

bench: runtime
	@set -e; shopt -s nullglob; files=(bench/*.py); \
	if [ $${#files[@]} -eq 0 ]; then echo "no bench/*.py"; exit 0; fi; \
	for f in "$${files[@]}"; do echo "== $$f"; PYTHONPATH=$(CURDIR) $(PY) "$$f"; done

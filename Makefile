# LoRA Chop Shop: runtime setup and tests against a real ComfyUI 0.3.75 (CPU).
#   make runtime       build .runtime/ (venv + ComfyUI; ~2.5 min fresh, ~1 s when up to date)
#   make browser       Debian chromium + playwright for the UI tests
#   make test          everything (core, comfy, browser); a missing runtime fails instead of skipping
#   make test-core | test-comfy | test-browser
#   make demo ARGS="..."   make bench
SHELL := /bin/bash
PY := .runtime/venv/bin/python
PYTEST := $(PY) -m pytest -q
ARGS ?=

.PHONY: runtime browser test test-core test-comfy test-browser demo bench

runtime:
	bash scripts/setup_runtime.sh

browser: runtime
	bash scripts/setup_browser.sh

test: runtime browser
	CHOPSHOP_REQUIRE_RUNTIME=1 $(PYTEST) tests

test-core: runtime
	$(PYTEST) -m "not comfy and not browser" tests

test-comfy: runtime
	CHOPSHOP_REQUIRE_RUNTIME=1 $(PYTEST) -m comfy tests

test-browser: browser
	CHOPSHOP_REQUIRE_RUNTIME=1 $(PYTEST) -m browser tests

demo: runtime
	PYTHONPATH=$(CURDIR) $(PY) scripts/demo.py $(ARGS)

bench: runtime
	@set -e; shopt -s nullglob; files=(bench/*.py); \
	if [ $${#files[@]} -eq 0 ]; then echo "no bench/*.py"; exit 0; fi; \
	for f in "$${files[@]}"; do echo "== $$f"; PYTHONPATH=$(CURDIR) $(PY) "$$f"; done

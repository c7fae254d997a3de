"""Shared pytest setup. Tests marked ``comfy`` need the ComfyUI runtime (make runtime) and must run
under its python (.runtime/venv/bin/python -m pytest); ``browser`` tests also need chromium and
playwright (make browser). Without them those tests are SKIPPED, unless CHOPSHOP_REQUIRE_RUNTIME is
set (make test / test-comfy / test-browser set it), in which case they FAIL."""
import importlib.util
import os
import shutil
import sys

import pytest

from chopshop_dev.comfy_runtime import RUNTIME, VENV_PY, in_runtime_venv, load_comfy_inprocess, make_base_dir, runtime_present


def _missing(item):
    """Why this item cannot run here, or None."""
    marks = {m.name for m in item.iter_markers()}
    if not marks & {"comfy", "browser"}:
        return None
    if not runtime_present():
        return f"ComfyUI runtime missing at {RUNTIME} (run `make runtime`)"
    if not in_runtime_venv():
        return f"not running under the runtime python (use `{VENV_PY} -m pytest` or the make targets)"
    if "browser" in marks:
        if not shutil.which("chromium"):
            return "chromium not installed (run `make browser`)"
        if importlib.util.find_spec("playwright") is None:
            return "playwright not installed in the runtime venv (run `make browser`)"
    return None


def pytest_runtest_setup(item):
    why = _missing(item)
    if why:
        if os.environ.get("CHOPSHOP_REQUIRE_RUNTIME"):
            pytest.fail(f"CHOPSHOP_REQUIRE_RUNTIME is set but {why}", pytrace=False)
        pytest.skip(why)


@pytest.fixture(scope="session")
def comfy_base_dir(tmp_path_factory):
    """A ComfyUI base directory (models/, custom_nodes/lora-chopshop -> this checkout, ...) for the session."""
    return make_base_dir(tmp_path_factory.mktemp("comfy_base"))


@pytest.fixture(scope="session")
def comfy_inprocess(comfy_base_dir):
    """ComfyUI imported into this process (comfy.lora, comfy.sd, comfy.utils, comfy.model_patcher, ...);
    see comfy_runtime.load_comfy_inprocess. Nodes are not loaded: call
    load_comfy_inprocess(with_nodes=True) for that."""
    return load_comfy_inprocess(comfy_base_dir)


@pytest.fixture(scope="session")
def comfy_sdxl(comfy_base_dir):
    """ComfyUI in this process with its nodes and this pack loaded, and the tiny SDXL checkpoint and LoRA in
    its models folders. ``N``: NODE_CLASS_MAPPINGS; ``pack``: this pack's package as ComfyUI imported it."""
    from chopshop_dev.tiny_sdxl import ensure_tiny_sdxl, ensure_tiny_sdxl_lora
    ensure_tiny_sdxl(comfy_base_dir / "models")
    ensure_tiny_sdxl_lora(comfy_base_dir / "models")
    ns = load_comfy_inprocess(comfy_base_dir, with_nodes=True)
    ns.N = ns.nodes.NODE_CLASS_MAPPINGS
    ns.pack = sys.modules[ns.N["ChopShopLoadLoRA"].__module__.rsplit(".nodes.", 1)[0]]
    return ns


@pytest.fixture(scope="module")
def sdxl_unet(comfy_sdxl):
    """(ModelPatcher, VAE) of the tiny SDXL checkpoint without its (big) text encoders; fp32 on CPU."""
    from chopshop_dev.tiny_sdxl import CKPT_NAME
    path = comfy_sdxl.folder_paths.get_full_path_or_raise("checkpoints", CKPT_NAME)
    model, _, vae, _ = comfy_sdxl.sd.load_checkpoint_guess_config(path, output_vae=True, output_clip=False)
    return model, vae

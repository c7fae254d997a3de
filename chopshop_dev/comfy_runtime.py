"""Helpers for tests against the real ComfyUI 0.3.75 runtime built by scripts/setup_runtime.sh.

    from chopshop_dev.comfy_runtime import ComfyServer, make_base_dir, load_comfy_inprocess, RUNTIME, COMFY_DIR, VENV_PY

* ``make_base_dir(tmp_path)``: a ComfyUI --base-directory with this checkout linked in as
  custom_nodes/lora-chopshop.
* ``ComfyServer(base)``: context manager running ``main.py`` (CPU, 127.0.0.1, a free port) from the
  runtime venv; HTTP helpers; stopped by SIGTERM to its own PID.
* ``load_comfy_inprocess()``: import comfy.* into this interpreter (must be .runtime/venv's python),
  in the order ComfyUI needs. Once per process (use the session fixture ``comfy_inprocess``).

No test functions here.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import types
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUNTIME = Path(os.environ.get("CHOPSHOP_RUNTIME", REPO / ".runtime"))
COMFY_DIR = RUNTIME / "ComfyUI"
VENV = RUNTIME / "venv"
VENV_PY = VENV / "bin" / "python"
PACK_NAME = "lora-chopshop"
BASE_SUBDIRS = ("models/loras", "models/checkpoints", "input", "output", "temp", "user", "custom_nodes")


def frontend_args():
    """``--front-end-root DIR`` when CHOPSHOP_FRONTEND_ROOT names a frontend build (the folder holding its
    index.html, e.g. .runtime/frontend-<version>/comfyui_frontend_package/static); else the pinned one."""
    root = os.environ.get("CHOPSHOP_FRONTEND_ROOT")
    if not root:
        return []
    if not (Path(root) / "index.html").is_file():
        raise RuntimeError(f"CHOPSHOP_FRONTEND_ROOT={root} has no index.html (a comfyui_frontend_package/static)")
    return ["--front-end-root", str(Path(root).resolve())]


def runtime_present():
    """True when scripts/setup_runtime.sh has built the runtime."""
    return VENV_PY.exists() and (COMFY_DIR / "main.py").is_file()


def in_runtime_venv():
    """True when this interpreter is the runtime venv's python (needed for in-process ComfyUI)."""
    try:
        return Path(sys.prefix).resolve() == VENV.resolve()
    except OSError:
        return False


def make_base_dir(tmp_path, link_pack=True):
    """Create a ComfyUI base directory under tmp_path (models/loras, models/checkpoints, input, output,
    temp, user, custom_nodes) with this checkout symlinked as custom_nodes/lora-chopshop."""
    base = Path(tmp_path)
    for d in BASE_SUBDIRS:
        (base / d).mkdir(parents=True, exist_ok=True)
    link = base / "custom_nodes" / PACK_NAME
    if link_pack and not (link.exists() or link.is_symlink()):
        link.symlink_to(REPO, target_is_directory=True)
    return base


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    """A real ComfyUI server on 127.0.0.1 (CPU) with ``base_dir`` as its --base-directory.

        with ComfyServer(make_base_dir(tmp_path)) as srv:
            status, body = srv.post_prompt(prompt)
            entry = srv.wait_history(body["prompt_id"])
    """

    def __init__(self, base_dir, port=None, extra_args=(), env=None, start_timeout=120, log_path=None):
        self.base_dir = Path(base_dir).resolve()
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_args = list(extra_args)
        self.env = env
        self.start_timeout = start_timeout
        self.log_path = Path(log_path) if log_path else self.base_dir / f"comfyui-{self.port}.log"
        self.proc = None
        self.client_id = str(uuid.uuid4())
        self.start_seconds = None

    # ------------------------------------------------------------------ lifecycle
    def start(self):
        if not runtime_present():
            raise RuntimeError(f"no ComfyUI runtime at {RUNTIME}: run `make runtime`")
        cmd = [str(VENV_PY), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
               "--disable-auto-launch", "--base-directory", str(self.base_dir),
               "--database-url", "sqlite:///:memory:", "--preview-method", "none",
               "--disable-api-nodes", *frontend_args(), *self.extra_args]
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        env.pop("PYTHONPATH", None)
        env.update(self.env or {})
        t0 = time.monotonic()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=COMFY_DIR, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env)
        try:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"ComfyUI exited with {self.proc.returncode} during start; log "
                                       f"{self.log_path}:\n{self.log_text()[-4000:]}")
                try:
                    with urllib.request.urlopen(self.url + "/object_info", timeout=5) as r:
                        r.read()
                    break
                except (urllib.error.URLError, ConnectionError, socket.timeout, TimeoutError):
                    pass
                if time.monotonic() - t0 > self.start_timeout:
                    raise RuntimeError(f"ComfyUI did not answer /object_info in {self.start_timeout} s; log "
                                       f"{self.log_path}:\n{self.log_text()[-4000:]}")
                time.sleep(0.2)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t0
        return self

    def stop(self, timeout=30):
        """SIGTERM to the server's own PID (never by name); SIGKILL to that PID if it hangs."""
        p = self.proc
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    # ------------------------------------------------------------------ HTTP
    def get_bytes(self, path, timeout=60):
        with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
            return r.read()

    def get(self, path, timeout=60):
        """GET path; JSON-decoded when the body is JSON, else the raw bytes."""
        body = self.get_bytes(path, timeout)
        try:
            return json.loads(body)
        except ValueError:
            return body

    def post_json(self, path, payload, timeout=60):
        """POST JSON; returns (HTTP status, decoded JSON body or text). HTTP errors are returned, not raised."""
        req = urllib.request.Request(self.url + path, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                status, body = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, body = e.code, e.read()
        try:
            return status, (json.loads(body) if body else {})
        except ValueError:
            return status, body.decode(errors="replace")

    def post_prompt(self, api_prompt):
        """Queue an API-format prompt -> (status, json). 200: {"prompt_id", "number", "node_errors"};
        400: validation report {"error", "node_errors"}."""
        return self.post_json("/prompt", {"prompt": api_prompt, "client_id": self.client_id})

    def wait_history(self, prompt_id, timeout=120):
        """Poll /history/<id> until the prompt finished (success or error); returns its history entry."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            h = self.get(f"/history/{prompt_id}")
            entry = h.get(prompt_id) if isinstance(h, dict) else None
            if entry:
                st = entry.get("status") or {}
                if st.get("completed") or st.get("status_str") == "error":
                    return entry
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI died while running {prompt_id}:\n{self.log_text()[-4000:]}")
            time.sleep(0.05)
        raise TimeoutError(f"prompt {prompt_id} not finished after {timeout} s")

    def run_prompt(self, api_prompt, timeout=120):
        """post_prompt + wait_history; raises unless the prompt was accepted and succeeded."""
        status, body = self.post_prompt(api_prompt)
        if status != 200:
            raise AssertionError(f"POST /prompt -> {status}: {json.dumps(body)[:3000]}")
        entry = self.wait_history(body["prompt_id"], timeout)
        if entry["status"].get("status_str") != "success":
            raise AssertionError(f"prompt failed: {json.dumps(entry['status'])[:4000]}")
        return entry

    def output_images(self, entry):
        """Bytes of every image in a history entry's outputs (PNG files via /view)."""
        out = []
        for node_out in entry.get("outputs", {}).values():
            for img in node_out.get("images", []):
                q = urllib.parse.urlencode({"filename": img["filename"], "subfolder": img.get("subfolder", ""),
                                            "type": img.get("type", "output")})
                out.append(self.get_bytes("/view?" + q))
        return out

    def free(self, settle=0.5):
        """Drop cached node outputs and unload models so the next prompt recomputes everything
        (the worker thread acts on it asynchronously, hence the short sleep)."""
        status, _ = self.post_json("/free", {"unload_models": True, "free_memory": True})
        time.sleep(settle)
        return status

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


# ---------------------------------------------------------------------- in-process
_INPROCESS = None


def load_comfy_inprocess(base_dir=None, with_nodes=False):
    """Import ComfyUI into this interpreter (the runtime venv's python) and return a namespace with
    ``args, model_management, lora, sd, utils, model_patcher, folder_paths`` (+ ``nodes, server`` when
    with_nodes). Order matters: args.cpu (and base_directory) before comfy.model_management /
    folder_paths; utils.extra_config before nodes (nodes.py puts ComfyUI/comfy first on sys.path, after
    which ``utils`` would be comfy/utils.py). with_nodes=True also creates the PromptServer object (not
    listening) and loads built-in + custom nodes of base_dir, like main.py. Idempotent per process."""
    global _INPROCESS
    if _INPROCESS is not None:
        if with_nodes and not hasattr(_INPROCESS, "nodes"):
            _init_nodes(_INPROCESS)
        return _INPROCESS
    if not runtime_present():
        raise RuntimeError(f"no ComfyUI runtime at {RUNTIME}: run `make runtime`")
    comfy_dir = str(COMFY_DIR)
    if comfy_dir not in sys.path:
        sys.path.insert(0, comfy_dir)
    from comfy.cli_args import args
    args.cpu = True
    if base_dir is not None:
        args.base_directory = str(Path(base_dir).resolve())
    import utils.extra_config  # noqa: F401
    import comfy.model_management
    import comfy.model_patcher
    import comfy.lora
    import comfy.sd
    import comfy.utils
    import folder_paths
    ns = types.SimpleNamespace(args=args, model_management=comfy.model_management, lora=comfy.lora,
                               sd=comfy.sd, utils=comfy.utils, model_patcher=comfy.model_patcher,
                               folder_paths=folder_paths, comfy_dir=COMFY_DIR, base_dir=base_dir)
    _INPROCESS = ns
    if with_nodes:
        _init_nodes(ns)
    return ns


def _init_nodes(ns):
    import asyncio
    import server
    import nodes
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    if getattr(server.PromptServer, "instance", None) is None:
        server.PromptServer(loop)   # packs register routes on PromptServer.instance at import time
    loop.run_until_complete(nodes.init_extra_nodes(init_custom_nodes=True, init_api_nodes=False))
    ns.server, ns.nodes, ns.loop = server, nodes, loop

"""Hostile input through the command line (in-process ``core.cli.main`` for most runs, real subprocesses for
the exit-status and traceback guarantees): every malformed container, broken module, bad path and bad user
preset file gets exit 2 and ONE ``error:`` line on stderr, no traceback; nothing is written and no temporary
file is left; the input's sha256 is unchanged; outputs never hold NaN/Inf; ``--json`` is strict JSON.
"""
from __future__ import annotations

import errno
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hostile  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def strict_json(text: str):
    def refuse(word):
        raise AssertionError(f"non-strict JSON constant {word}")
    return json.loads(text, parse_constant=refuse)


def run_cli(capsys, *argv):
    from core.cli import main
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:       # argparse
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_error_line(rc, out, err, *words):
    assert rc == 2, (rc, err)
    assert "Traceback" not in err and "Traceback" not in out
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), lines[0]
    assert not any(ord(c) < 32 or 127 <= ord(c) < 160 for c in lines[0]), repr(lines[0])
    for w in words:
        assert w.lower() in lines[0].lower(), (w, lines[0])


class Scene:
    """One hostile input in its own folder with an empty output folder; ``check()`` asserts that nothing
    was written anywhere and that the input is byte-identical."""

    def __init__(self, folder: Path, name: str, data: bytes | None = None, sd=None):
        self.folder = folder / name
        self.folder.mkdir()
        self.out = folder / f"{name}-out"
        self.out.mkdir()
        self.input = self.folder / f"{name}.safetensors"
        if sd is not None:
            hostile.write_sd(self.input, sd)
        elif data is not None:
            self.input.write_bytes(data)
        self.sha = hostile.sha256(self.input) if self.input.is_file() else None
        self.listing = sorted(os.listdir(self.folder))

    @property
    def output(self) -> Path:
        return self.out / "result.safetensors"

    def check(self):
        assert sorted(os.listdir(self.folder)) == self.listing
        assert os.listdir(self.out) == []
        if self.sha:
            assert hostile.sha256(self.input) == self.sha


COMMANDS = {
    "inspect": lambda s: ["inspect", s.input],
    "inspect_json": lambda s: ["inspect", s.input, "--json"],
    "layout_only": lambda s: ["inspect", s.input, "--layout-only"],
    "chop": lambda s: ["chop", s.input, "1,1,0,1", "-o", s.output],
    "chop_default_output": lambda s: ["chop", s.input, "1,0,1,1"],
    "resize": lambda s: ["resize", s.input, "--rank", "2", "-o", s.output],
}


# ----------------------------------------------------------------------------------- malformed containers

@pytest.mark.parametrize("name", sorted(hostile.CONTAINERS))
def test_malformed_container_is_refused_by_every_command(name, tmp_path, capsys):
    s = Scene(tmp_path, name, hostile.CONTAINERS[name])
    for cmd, argv in COMMANDS.items():
        rc, out, err = run_cli(capsys, *argv(s))
        assert_one_error_line(rc, out, err, name)
        assert out == "", cmd
        s.check()


SPECIFIC_WORDS = {
    "length_over_cap": "100 MiB", "duplicate_key": "appears twice", "shape_true": "whole numbers",
    "shape_1e400": "whole numbers", "offsets_float": "whole numbers", "offsets_overlap": "overlaps",
    "offsets_gap": "gap", "trailing_bytes": "after the last tensor", "deeply_nested": "nested too deeply",
    "offsets_reversed": "ends before it starts", "pickle_renamed": "pickle", "unknown_dtype": "valid: F64",
}


@pytest.mark.parametrize("name", sorted(SPECIFIC_WORDS))
def test_container_messages_name_the_problem(name, tmp_path, capsys):
    s = Scene(tmp_path, name, hostile.CONTAINERS[name])
    assert_one_error_line(*run_cli(capsys, "inspect", s.input), SPECIFIC_WORDS[name])


def test_the_reference_loader_refuses_the_same_malformed_files(tmp_path):
    """Independent oracle: the safetensors package refuses the malformed layouts we refuse."""
    from safetensors import SafetensorError
    for name in ("duplicate_key", "offsets_overlap", "offsets_gap", "trailing_bytes", "shape_negative",
                 "offsets_float", "size_mismatch", "unknown_dtype", "length_over_cap"):
        p = tmp_path / f"{name}.safetensors"
        p.write_bytes(hostile.CONTAINERS[name])
        try:
            load_file(str(p))
        except (SafetensorError, Exception):
            continue
        if name == "duplicate_key":
            continue    # the reference keeps the last of duplicate keys; we refuse them (ambiguous)
        pytest.fail(f"the safetensors package accepted {name}")


@pytest.mark.parametrize("kind,word", [("directory", "is a directory"), ("fifo", "FIFO"),
                                       ("device", "a device"), ("missing", "no such file")])
def test_paths_that_are_no_regular_file(kind, word, tmp_path, capsys):
    s = Scene(tmp_path, kind)
    if kind != "missing":
        hostile.make_special(s.input, kind)
    s.listing = sorted(os.listdir(s.folder))
    for cmd, argv in COMMANDS.items():
        assert_one_error_line(*run_cli(capsys, *argv(s)), word)
        s.check()


def test_pickles_are_refused_by_suffix_unopened(tmp_path, capsys):
    for suffix in (".ckpt", ".pt", ".bin"):
        p = tmp_path / f"lora{suffix}"
        p.write_bytes(b"\x80\x04 not even read")
        assert_one_error_line(*run_cli(capsys, "inspect", p), "pickle")


# ----------------------------------------------------------------------------------- broken modules

RESIZE_PASSES = {"nan_up", "inf_down", "neg_inf_down", "alpha_nan", "alpha_inf", "alpha_vector", "te_nan",
                 "bf16_nan", "loha_fp32_inf", "full_diff_nan"}


@pytest.mark.parametrize("name", sorted(hostile.MODULES))
def test_broken_module_inspect_names_it_and_chop_refuses(name, tmp_path, capsys):
    sd, module = hostile.MODULES[name]
    s = Scene(tmp_path, name, sd=sd)
    rc, out, err = run_cli(capsys, "inspect", s.input, "--json")
    assert rc == 0 and err == "", err
    report = strict_json(out)
    if name != "unknown_key_nan":      # not a module: only chop's guard reads it
        assert module in [b["module"] for b in report["broken"]], report["broken"]
        rc, out, err = run_cli(capsys, "inspect", s.input)
        assert rc == 0 and "Broken modules: 1" in out and module in out
        assert "energy   nan" not in out.lower()
    for argv in (["chop", s.input, "1,1,1,1", "-o", s.output], ["chop", s.input, "1,0.5,0.5,0.5"]):
        assert_one_error_line(*run_cli(capsys, *argv), module)
        s.check()


def _resize_case(name):
    return name


@pytest.mark.parametrize("name", [_resize_case(n) for n in sorted(hostile.MODULES)])
def test_broken_module_resize_refuses_naming_it(name, tmp_path, capsys):
    sd, module = hostile.MODULES[name]
    s = Scene(tmp_path, name, sd=sd)
    assert_one_error_line(*run_cli(capsys, *COMMANDS["resize"](s)), module)
    s.check()


def test_chop_can_drop_the_broken_block(tmp_path, capsys):
    sd, module = hostile.MODULES["nan_up"]          # OUT01 holds NaN
    s = Scene(tmp_path, "drop", sd=sd)
    rc, out, err = run_cli(capsys, "chop", s.input, "1,1,1,0", "-o", s.output, "--json")
    assert rc == 0, err
    assert strict_json(out)["removed_blocks"] == ["OUT01"]
    result = load_file(str(s.output))
    assert not any(k.startswith(module) for k in result)
    assert all(torch.isfinite(t.float()).all() for t in result.values())


@pytest.mark.parametrize("chunk", [8, 64, 4096, 10240, 1 << 22])
@pytest.mark.parametrize("name", ["nan_up", "inf_down", "bf16_nan", "te_nan", "unknown_key_nan"])
def test_chop_guard_finds_nan_in_chunks_of_any_size(chunk, name, tmp_path, capsys, monkeypatch):
    """The guard checks the chunks it copies: whether the bad tensor is split across chunks (8, 64 bytes),
    shares one with others or is read alone, chop names it and leaves nothing; a good file comes out the
    same whatever the chunk size."""
    import core.safetensors_stream as stream
    monkeypatch.setattr(stream, "CHUNK", chunk)
    sd, module = hostile.MODULES[name]
    s = Scene(tmp_path, name, sd=sd)
    assert_one_error_line(*run_cli(capsys, "chop", s.input, "1,1,1,1", "-o", s.output), module)
    s.check()
    good = Scene(tmp_path, "good", sd=hostile.good_sd())
    rc, _, err = run_cli(capsys, "chop", good.input, "1,1,0,1", "-o", good.output)
    assert rc == 0, err
    monkeypatch.setattr(stream, "CHUNK", 1 << 22)
    rc, _, err = run_cli(capsys, "chop", good.input, "1,1,0,1", "-o", good.out / "reference.safetensors")
    assert rc == 0, err
    assert good.output.read_bytes() == (good.out / "reference.safetensors").read_bytes()


@pytest.mark.parametrize("name", ["nan_up", "inf_down", "bf16_nan", "loha_fp32_inf", "unknown_key_nan"])
def test_command_line_guard_without_numpy(name, tmp_path):
    """A command-line 0/1 chop checks with the stdlib (numpy is never imported) and refuses the same files."""
    sd, module = hostile.MODULES[name]
    s = Scene(tmp_path, name, sd=sd)
    code = ("import sys; from core.cli import main; "
            f"rc = main(['chop', {str(s.input)!r}, '1,1,1,1', '-o', {str(s.output)!r}]); "
            "assert 'numpy' not in sys.modules and 'torch' not in sys.modules; sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and module in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    s.check()


# ----------------------------------------------------------------------------------- chop overflow

@pytest.mark.parametrize("argv,module", [
    (["1,10000000,1,1"], hostile.Q),
    (["1,1,1,1", "--te-weight", "1e30"], hostile.TE1),
    (["1e30,1,1,1"], hostile.Q),
])
def test_chop_refuses_weights_that_overflow(argv, module, tmp_path, capsys):
    s = Scene(tmp_path, "big", sd=hostile.good_sd())
    rc, out, err = run_cli(capsys, "chop", s.input, *argv, "-o", s.output)
    assert_one_error_line(rc, out, err, module, "largest safe weight")
    s.check()


def test_largest_safe_weight_is_exact_and_works(tmp_path, capsys):
    sd = hostile.good_sd()
    up = sd[f"{hostile.OUT}.lora_up.weight"]
    up[0, 0] = 30000.0                                   # fp16 max is 65504: weight 2.1 overflows
    s = Scene(tmp_path, "near_max", sd=sd)
    rc, out, err = run_cli(capsys, "chop", s.input, "1,1,1,2.5", "-o", s.output)
    assert_one_error_line(rc, out, err, hostile.OUT, "F16")
    safe = float(err.split("largest safe weight for this module is ")[1].split(";")[0])
    assert safe == pytest.approx(65504 / 30000, rel=1e-5)
    s.check()
    rc, out, err = run_cli(capsys, "chop", s.input, "1,1,1,2", "-o", s.output)
    assert rc == 0, err
    result = load_file(str(s.output))
    assert all(torch.isfinite(t.float()).all() for t in result.values())
    assert float(result[f"{hostile.OUT}.lora_up.weight"][0, 0]) == 60000.0


# ----------------------------------------------------------------------------------- control characters

ESC_KEY = "lora_unet_evil\x1b[2J_module"


def test_control_characters_are_escaped_in_text_output(tmp_path, capsys):
    sd = hostile.good_sd()
    sd.update(hostile.lora_module(ESC_KEY, (64, 64)))
    meta = {**hostile.META, "ss_output_name": "name\x1b]0;pwned\x07\x9b", "ss_training_comment": "a\rb"}
    s = Scene(tmp_path, "esc", sd=None)
    hostile.write_sd(s.input, sd, meta)
    s.sha, s.listing = hostile.sha256(s.input), sorted(os.listdir(s.folder))
    for argv in (["inspect", s.input], ["chop", s.input, "1,1,0,1", "-o", s.output]):
        rc, out, err = run_cli(capsys, *argv)
        assert rc == 0, err
        assert not any(ord(c) < 32 and c not in "\n" or 127 <= ord(c) < 160 for c in out + err), repr(out)
    assert "\\x1b[2J" in out or "\\x1b" in out
    rc, out, err = run_cli(capsys, "inspect", s.input, "--json")
    report = strict_json(out)
    assert report["metadata"]["ss_output_name"] == "name\x1b]0;pwned\x07\x9b"   # JSON keeps the value, escaped
    assert "\x1b" not in out


def test_control_characters_in_a_file_name_are_escaped(tmp_path, capsys):
    rc, out, err = run_cli(capsys, "inspect", tmp_path / "x\x1b[2J\x07.safetensors")
    assert_one_error_line(rc, out, err, "no such file", "\\x1b")


# ----------------------------------------------------------------------------------- presets

@pytest.mark.parametrize("name", sorted(hostile.PRESET_FILES))
def test_bad_user_presets_are_refused(name, tmp_path, capsys, monkeypatch):
    user = tmp_path / "user_presets.json"
    user.write_bytes(hostile.PRESET_FILES[name])
    sha = hostile.sha256(user)
    monkeypatch.setenv("CHOPSHOP_USER_PRESETS", str(user))
    for argv in (["presets"], ["presets", "--json"], ["presets", "--architecture", "sdxl"]):
        assert_one_error_line(*run_cli(capsys, *argv), "user_presets.json")
    s = Scene(tmp_path, "lora", sd=hostile.good_sd())
    assert_one_error_line(*run_cli(capsys, "chop", s.input, "--preset", "Hostile", "-o", s.output))
    s.check()
    assert hostile.sha256(user) == sha


def test_presets_unknown_architecture_lists_valid_ids(capsys):
    rc, out, err = run_cli(capsys, "presets", "--architecture", "nonsense")
    assert_one_error_line(rc, out, err, "nonsense", "sdxl", "flux")


def test_presets_json_is_strict(capsys):
    rc, out, err = run_cli(capsys, "presets", "--json")
    assert rc == 0 and err == ""
    rows = strict_json(out)
    assert rows and all(math.isfinite(v) for r in rows for v in r["vector"])


# ----------------------------------------------------------------------------------- bad options

@pytest.mark.parametrize("argv", [
    ["chop", "{good}", "1,nan,1,1"], ["chop", "{good}", "1,-1,1,1"], ["chop", "{good}", "1,1"],
    ["chop", "{good}", "1,1,1,1", "--te-weight", "nan"], ["chop", "{good}", "1,1,1,1", "--te-weight", "-1"],
    ["chop", "{good}", "--preset", "Nope"], ["chop", "{good}"], ["chop", "{good}", "1,0,0,0", "--te-weight", "0"],
    ["resize", "{good}", "--rank", "0"], ["resize", "{good}", "--rank", "abc"], ["resize", "{good}"],
    ["resize", "{good}", "--sv-fro", "1.5"], ["resize", "{good}", "--fro-ckpt", "-3"],
    ["inspect"], ["frobnicate"], ["chop", "{good}", "1,1,1,1", "-o", "{good}"],
    ["chop", "{good}", "1,1,1,1", "-o", "{dir}/x.ckpt"],
])
def test_bad_options_one_line(argv, tmp_path, capsys):
    s = Scene(tmp_path, "good", sd=hostile.good_sd())
    argv = [a.format(good=s.input, dir=s.out) for a in argv]
    assert_one_error_line(*run_cli(capsys, *argv))
    s.check()


@pytest.mark.parametrize("device", ["tpu", "meta", "cuda"])
def test_resize_bad_device_is_one_line(device, tmp_path, capsys):
    s = Scene(tmp_path, "dev", sd=hostile.good_sd())
    assert_one_error_line(*run_cli(capsys, "resize", s.input, "--rank", "2", "--device", device, "-o", s.output),
                          device)
    s.check()


@pytest.mark.parametrize("name", ["not_json", "shape_true", "offsets_overlap", "empty"])
def test_corrupt_base_header_is_refused_before_work(name, tmp_path, capsys):
    s = Scene(tmp_path, "lora", sd=hostile.good_sd())
    base = tmp_path / "base.safetensors"
    base.write_bytes(hostile.CONTAINERS[name])
    assert_one_error_line(*run_cli(capsys, "resize", s.input, "--fro-ckpt", "-3", "--base", base,
                                   "-o", s.output), "base.safetensors")
    s.check()


def test_zero_dim_base_layer_is_named(tmp_path, capsys):
    s = Scene(tmp_path, "lora", sd=hostile.good_sd())
    base = tmp_path / "base.safetensors"
    from safetensors.torch import save_file
    save_file({"model.diffusion_model.output_blocks.1.1.transformer_blocks.0.attn1.to_q.weight":
               torch.tensor(1.0)}, str(base))
    assert_one_error_line(*run_cli(capsys, "resize", s.input, "--fro-ckpt", "-3", "--base", base,
                                   "-o", s.output), "to_q")
    s.check()


def base_file(path: Path, bad_layer: str | None = None, bad=None) -> Path:
    """A base model holding the LoRA's diffusion-model layers (random), one of them replaced by ``bad``."""
    from safetensors.torch import save_file
    g = torch.Generator().manual_seed(3)
    layers = {hostile.Q: "input_blocks.4.1", hostile.MID: "middle_block.1", hostile.OUT: "output_blocks.1.1"}
    sd = {}
    for name, prefix in layers.items():
        key = f"model.diffusion_model.{prefix}.transformer_blocks.0.attn1.to_q.weight"
        sd[key] = bad if name == bad_layer else torch.randn(*hostile.LAYERS[name], generator=g).half()
    save_file(sd, str(path))
    return path


@pytest.mark.parametrize("what", ["nan", "zero"])
def test_fro_ckpt_base_layer_nan_or_zero_is_named(what, tmp_path, capsys):
    s = Scene(tmp_path, "lora", sd={k: v for k, v in hostile.good_sd().items() if k.startswith("lora_unet_")})
    bad = torch.zeros(1280, 1280, dtype=torch.float16)
    if what == "nan":
        bad[0, 0] = float("nan")
    base = base_file(tmp_path / "base.safetensors", hostile.OUT, bad)
    rc, out, err = run_cli(capsys, "resize", s.input, "--fro-ckpt", "-3", "--base", base, "-o", s.output)
    assert "output_blocks.1.1" in out + err or hostile.OUT in out + err
    assert ("nan" if what == "nan" else "zero") in (out + err).lower()


def test_resize_reports_unknown_keys(tmp_path, capsys):
    sd = hostile.good_sd()
    sd["bundle_emb.token.string_to_param.*"] = torch.zeros(2, 8, dtype=torch.float16)
    s = Scene(tmp_path, "unknown", sd=sd)
    rc, out, err = run_cli(capsys, "resize", s.input, "--rank", "2", "-o", s.output)
    assert rc == 0 and "bundle_emb.token.string_to_param.*" in out


# ----------------------------------------------------------------------------------- writes

def test_disk_full_names_the_path_and_leaves_nothing(tmp_path):
    from core.errors import ChopShopError
    from core.safetensors_file import write_file

    def full():
        raise OSError(errno.ENOSPC, "No space left on device")
    target = tmp_path / "out.safetensors"
    with pytest.raises(ChopShopError, match="out.safetensors.*disk is full"):
        write_file(target, {"a": ("F16", (2,), 4, full)})
    assert os.listdir(tmp_path) == []


def test_sigterm_during_a_write_removes_the_temp_file(tmp_path, capsys, monkeypatch):
    import core.safetensors_file as sf
    real = sf.chunks

    def dying(*args):
        for i, buf in enumerate(real(*args)):
            yield buf
            if i == 0:
                os.kill(os.getpid(), signal.SIGTERM)
    monkeypatch.setattr(sf, "chunks", dying)
    s = Scene(tmp_path, "term", sd=hostile.good_sd())
    rc, out, err = run_cli(capsys, "chop", s.input, "1,0.5,1,1", "-o", s.output)
    assert rc == 143 and err.strip() == "error: terminated; nothing was written"
    s.check()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_broken_pipe_is_quiet(capsys, monkeypatch):
    class Closed:
        def write(self, s):
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")

        def flush(self):
            pass

        def fileno(self):
            raise ValueError("no fd")
    from core.cli import main
    monkeypatch.setattr(sys, "stdout", Closed())
    assert main(["presets"]) == 0
    assert capsys.readouterr().err == ""


# ----------------------------------------------------------------------------------- real processes

def cli_process(*argv, python=sys.executable, **kw):
    env = dict(os.environ)
    env.pop("CHOPSHOP_USER_PRESETS", None)
    return subprocess.run([python, "-m", "core", *map(str, argv)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=env, **kw)


def test_real_processes_exit_2_with_one_line(tmp_path):
    """A handful of real runs: exit status 2, one line, no traceback (what a shell user sees)."""
    s = Scene(tmp_path, "bad", hostile.CONTAINERS["offsets_overlap"])
    broken = tmp_path / "broken.safetensors"
    hostile.write_sd(broken, hostile.MODULES["rank_zero"][0])
    good = hostile.write_sd(tmp_path / "good.safetensors", hostile.good_sd())
    for argv, word in [(["inspect", tmp_path / "missing.safetensors"], "no such file"),
                       (["inspect", s.input], "overlaps"),
                       (["chop", broken, "1,1,1,1", "-o", s.output], hostile.OUT),
                       (["chop", good, "1,1e7,1,1", "-o", s.output], "largest safe weight"),
                       (["resize", s.input, "--rank", "2", "-o", s.output], "overlaps")]:
        p = cli_process(*argv)
        assert_one_error_line(p.returncode, p.stdout, p.stderr, word)
        assert p.stdout == ""
        s.check()


def test_real_broken_pipe_is_quiet():
    p = subprocess.Popen([sys.executable, "-m", "core", "presets", "--json"], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    p.stdout.close()                       # the reader is gone before the first write
    err = p.stderr.read().decode()
    p.wait(timeout=120)
    p.stderr.close()
    assert err == "" and p.returncode == 0


def _python_without_torch():
    for exe in ("/usr/bin/python3", os.path.expanduser("~/.pyenv/shims/python3"), "python3"):
        try:
            r = subprocess.run([exe, "-c", "import sys; assert sys.version_info >= (3, 10); import torch"],
                               capture_output=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if r.returncode != 0 and b"No module named 'torch'" in r.stderr:
            return exe
    return None


def test_python_without_torch_says_what_to_install(tmp_path):
    exe = _python_without_torch()
    if exe is None:
        pytest.skip("no Python >= 3.10 without torch on this machine")
    good = hostile.write_sd(tmp_path / "good.safetensors", hostile.good_sd())
    for argv in ([], ["inspect", good], ["chop", good, "1,1,0,1"]):
        p = cli_process(*argv, python=exe)
        assert_one_error_line(p.returncode, p.stdout, p.stderr, "pip install torch")
    p = cli_process("inspect", tmp_path / "missing.safetensors", python=exe)
    assert_one_error_line(p.returncode, p.stdout, p.stderr, "no such file")
    p = cli_process("presets", "--architecture", "flux", python=exe)   # presets need no torch
    assert p.returncode == 0 and "[flux]" in p.stdout


def test_unusual_but_valid_alphas_are_not_broken(tmp_path, capsys):
    """A negative alpha flips the delta (ComfyUI applies it), and a LoKr without a decomposed factor ignores
    its alpha: neither is refused."""
    sd = hostile.good_sd()
    sd[f"{hostile.OUT}.alpha"] = torch.tensor(-2.0, dtype=torch.float16)
    g = torch.Generator().manual_seed(9)
    for k in [k for k in sd if k.startswith(hostile.MID)]:
        del sd[k]
    sd.update({f"{hostile.MID}.lokr_w1": torch.randn(8, 8, generator=g).half(),
               f"{hostile.MID}.lokr_w2": torch.randn(160, 160, generator=g).half() * 0.01,
               f"{hostile.MID}.alpha": torch.tensor(0.0)})
    s = Scene(tmp_path, "alphas", sd=sd)
    rc, out, err = run_cli(capsys, "inspect", s.input, "--json")
    assert rc == 0 and strict_json(out)["broken_count"] == 0, out
    rc, out, err = run_cli(capsys, "chop", s.input, "1,1,0.5,1", "-o", s.output)
    assert rc == 0, err
    assert all(torch.isfinite(t.float()).all() for t in load_file(str(s.output)).values())


def test_a_valid_header_whose_length_starts_like_a_pickle_is_read(tmp_path):
    """A header of 640 bytes begins 80 02 ..., the bytes of a pickle's protocol mark: the file is still read
    (checked against the safetensors package, an independent reader)."""
    import json
    import struct

    from safetensors.numpy import load_file

    from core.safetensors_header import read_header
    body = json.dumps({"a.lora_down.weight": {"dtype": "F32", "shape": [1, 1], "data_offsets": [0, 4]},
                       "__metadata__": {"pad": ""}}).encode()
    pad = 640 - len(body)
    body = json.dumps({"a.lora_down.weight": {"dtype": "F32", "shape": [1, 1], "data_offsets": [0, 4]},
                       "__metadata__": {"pad": "x" * pad}}).encode()
    assert len(body) == 640
    path = tmp_path / "len640.safetensors"
    path.write_bytes(struct.pack("<Q", 640) + body + struct.pack("<f", 1.5))
    assert path.read_bytes()[:2] == b"\x80\x02"
    infos = read_header(path)[0]
    assert list(infos) == ["a.lora_down.weight"]
    assert float(load_file(str(path))["a.lora_down.weight"][0, 0]) == 1.5

"""Building blocks of the tiny random-weight checkpoints and LoRAs (tiny_sd15.py, tiny_sdxl.py).

A layout is an ordered dict ``name -> (shape, init, gain)``; ``materialize`` turns it into tensors with
one seeded generator, in order, so the same seed always gives byte-identical files. Built files are
cached under ``<repo>/.runtime/cache/<kind>-<recipe hash>/`` and linked (or copied) into a ComfyUI
models dir. Only torch + safetensors are needed.

Init: weights ~ N(0, gain^2 / fan_in), norms 1/0, biases 0; TAESD's output conv has a small gain and a
0.5 bias so images come out as mid-grey textures (a random UNet does not denoise: pictures are noise
textures, but they react strongly to a LoRA).
"""
import argparse
import hashlib
import json
import math
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parents[1]
CACHE_ROOT = Path(os.environ.get("CHOPSHOP_RUNTIME", REPO / ".runtime")) / "cache"
DEFAULT_SEED = 0
STORE_DTYPE = torch.float16
CLIP_L = dict(width=768, ff=3072, depth=12)
VOCAB, CTX_LEN = 49408, 77
LORA_RANK, LORA_ALPHA, LORA_REL = 4, 4.0, 1.0


class Layout:
    """Ordered tensor specs: name -> (shape, init, gain). init: 'fan_in' | 'zeros' | 'ones' | 'normal'
    (plain std = gain) | 'const' (filled with gain). The order is fixed, so generation is deterministic."""

    def __init__(self, prefix=""):
        self.prefix = prefix
        self.specs = {}

    def add(self, name, shape, init, gain=1.0):
        self.specs[self.prefix + name] = (tuple(shape), init, gain)

    def linear(self, name, n_in, n_out, bias=True, gain=1.0):
        self.add(name + ".weight", (n_out, n_in), "fan_in", gain)
        if bias:
            self.add(name + ".bias", (n_out,), "zeros")

    def conv(self, name, n_in, n_out, k, bias=True, gain=1.0):
        self.add(name + ".weight", (n_out, n_in, k, k), "fan_in", gain)
        if bias:
            self.add(name + ".bias", (n_out,), "zeros")

    def norm(self, name, ch):
        self.add(name + ".weight", (ch,), "ones")
        self.add(name + ".bias", (ch,), "zeros")

    def res_block(self, p, c_in, c_out, time_ch):
        """An LDM ResBlock (in_layers, emb_layers, out_layers, 1x1 skip when the width changes)."""
        self.norm(p + ".in_layers.0", c_in)
        self.conv(p + ".in_layers.2", c_in, c_out, 3)
        self.linear(p + ".emb_layers.1", time_ch, c_out)
        self.norm(p + ".out_layers.0", c_out)
        self.conv(p + ".out_layers.3", c_out, c_out, 3)
        if c_in != c_out:
            self.conv(p + ".skip_connection", c_in, c_out, 1)

    def unet_out(self, ch):
        """The UNet's output head: GroupNorm + conv to the 4 latent channels."""
        self.norm("out.0", ch)
        self.conv("out.2", ch, 4, 3)
        return self.specs

    def spatial_transformer(self, p, ch, depth, context, linear_proj):
        """An LDM SpatialTransformer: proj_in/out as 1x1 convs (SD1.5) or Linears (SDXL), GEGLU ff."""
        self.norm(p + ".norm", ch)
        proj = self.linear if linear_proj else (lambda name, a, b: self.conv(name, a, b, 1))
        proj(p + ".proj_in", ch, ch)
        for t in range(depth):
            b = f"{p}.transformer_blocks.{t}"
            for attn, kv_ch in (("attn1", ch), ("attn2", context)):
                self.linear(f"{b}.{attn}.to_q", ch, ch, bias=False)
                self.linear(f"{b}.{attn}.to_k", kv_ch, ch, bias=False)
                self.linear(f"{b}.{attn}.to_v", kv_ch, ch, bias=False)
                self.linear(f"{b}.{attn}.to_out.0", ch, ch)
            self.linear(b + ".ff.net.0.proj", ch, ch * 8)      # GEGLU: 2 x (4 * ch)
            self.linear(b + ".ff.net.2", ch * 4, ch)
            for n in ("norm1", "norm2", "norm3"):
                self.norm(f"{b}.{n}", ch)
        proj(p + ".proj_out", ch, ch)


CLIP_L_NAMES = dict(token="embeddings.token_embedding.weight", position="embeddings.position_embedding.weight",
                    layer="encoder.layers.{}.", ln1="layer_norm1", out="self_attn.out_proj", ln2="layer_norm2",
                    qkv=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
                    fc1="mlp.fc1", fc2="mlp.fc2", final="final_layer_norm")


def text_tower(prefix, spec, names):
    """A CLIP text transformer (spec: width, ff, depth) with the key names of ``names``; ``names["qkv"]``
    is either three separate projections or one fused ``in_proj_`` prefix (OpenCLIP). Returns the Layout.
    ComfyUI builds text encoders from fixed configs; any tensor missing from a file would stay uninitialised."""
    L = Layout(prefix)
    w, ff = spec["width"], spec["ff"]
    L.add(names["token"], (VOCAB, w), "normal", 1.0)
    L.add(names["position"], (CTX_LEN, w), "normal", 0.5)
    for i in range(spec["depth"]):
        p = names["layer"].format(i)
        L.norm(p + names["ln1"], w)
        if isinstance(names["qkv"], str):
            L.add(p + names["qkv"] + "weight", (3 * w, w), "fan_in", 1.0)
            L.add(p + names["qkv"] + "bias", (3 * w,), "zeros")
        else:
            for proj in names["qkv"]:
                L.linear(p + proj, w, w)
        L.linear(p + names["out"], w, w)
        L.norm(p + names["ln2"], w)
        L.linear(p + names["fc1"], w, ff)
        L.linear(p + names["fc2"], ff, w)
    L.norm(names["final"], w)
    return L


def clip_l_layout(prefix):
    """A FULL CLIP-L text encoder (12 x 768, HF transformers names) under prefix ``...text_model.``."""
    return text_tower(prefix, CLIP_L, CLIP_L_NAMES).specs


def taesd_layout():
    """TAESD as VAE (``first_stage_model.taesd_*``): comfy.sd.VAE switches to comfy.taesd.taesd.TAESD when
    it sees ``taesd_decoder.1.weight``; same 4-channel x8 latent as AutoencoderKL at 1/30 of the size.
    comfy/taesd/taesd.py: Encoder / Decoder are nn.Sequential; indices below are theirs."""
    L = Layout("first_stage_model.")
    relu_gain, last_gain = 1.4, 0.3   # the 3rd conv of a Block feeds a residual sum: keep it small

    def block(p):
        L.conv(p + ".conv.0", 64, 64, 3, gain=relu_gain)
        L.conv(p + ".conv.2", 64, 64, 3, gain=relu_gain)
        L.conv(p + ".conv.4", 64, 64, 3, gain=last_gain)

    layers = {  # Sequential entry kind -> its tensors ("clamp", "relu", "up" have none)
        "conv_rgb_in": lambda p: L.conv(p, 3, 64, 3, gain=relu_gain),
        "conv_latent_in": lambda p: L.conv(p, 4, 64, 3, gain=relu_gain),
        "conv_nb": lambda p: L.conv(p, 64, 64, 3, bias=False, gain=relu_gain),   # also the strided "down"
        "block": block,
        "conv_latent_out": lambda p: L.conv(p, 64, 4, 3),
        "conv_rgb_out": lambda p: (L.add(p + ".weight", (3, 64, 3, 3), "fan_in", 0.15),   # contrast of the image
                                   L.add(p + ".bias", (3,), "const", 0.5)),              # mid grey
    }
    enc = ["conv_rgb_in", "block"] + ["conv_nb", "block", "block", "block"] * 3 + ["conv_latent_out"]
    dec = (["clamp", "conv_latent_in", "relu"] + ["block", "block", "block", "up", "conv_nb"] * 3
           + ["block", "conv_rgb_out"])
    for part, kinds in (("taesd_encoder", enc), ("taesd_decoder", dec)):
        for i, kind in enumerate(kinds):
            if kind in layers:
                layers[kind](f"{part}.{i}")
    L.add("vae_scale", (), "const", 1.0)
    L.add("vae_shift", (), "const", 0.0)
    return L.specs


def materialize(specs, gen):
    """Tensors for a layout, drawn in order from gen (fp32), stored as fp16."""
    out = {}
    for name, (shape, init, gain) in specs.items():
        if init == "fan_in":
            t = torch.randn(shape, generator=gen) * (gain / math.sqrt(math.prod(shape[1:])))
        elif init == "normal":
            t = torch.randn(shape, generator=gen) * gain
        elif init == "zeros":
            t = torch.zeros(shape)
        elif init == "ones":
            t = torch.ones(shape)
        elif init == "const":
            t = torch.full(shape, float(gain))
        else:
            raise ValueError(init)
        out[name] = t.to(STORE_DTYPE).contiguous()
    return out


def build_lora(modules, seed):
    """kohya/LoCon LoRA (rank LORA_RANK, alpha LORA_ALPHA, fp16) for modules: name -> (target weight
    shape, init gain). Each delta ``alpha/rank * up @ down`` has about the norm of the weight it patches."""
    gen = torch.Generator().manual_seed(seed + 7919)
    scale = LORA_ALPHA / LORA_RANK
    sd = {}
    for name, (shape, gain) in modules.items():
        fan_in = math.prod(shape[1:])
        # W entries have std gain/sqrt(fan_in); delta = scale * up @ down has entry std
        # scale * sqrt(rank) * s_up * s_down. With s_down = 1/sqrt(fan_in) the delta matches
        # LORA_REL * std(W) when s_up = LORA_REL * gain / (scale * sqrt(rank)).
        s_down = 1.0 / math.sqrt(fan_in)
        s_up = LORA_REL * gain / (scale * math.sqrt(LORA_RANK))
        conv = len(shape) == 4
        down_shape = (LORA_RANK,) + tuple(shape[1:]) if conv else (LORA_RANK, fan_in)
        up_shape = (shape[0], LORA_RANK, 1, 1) if conv else (shape[0], LORA_RANK)
        sd[name + ".lora_down.weight"] = (torch.randn(down_shape, generator=gen) * s_down).to(STORE_DTYPE).contiguous()
        sd[name + ".lora_up.weight"] = (torch.randn(up_shape, generator=gen) * s_up).to(STORE_DTYPE).contiguous()
        sd[name + ".alpha"] = torch.tensor(LORA_ALPHA, dtype=STORE_DTYPE)
    return sd


def recipe_id(sources, seed=DEFAULT_SEED):
    """Hash of the generator sources (this file + the model's file), the seed and the torch version."""
    h = hashlib.sha256(Path(__file__).read_bytes())
    for src in sources:
        h.update(Path(src).read_bytes())
    h.update(json.dumps({"seed": seed, "torch": torch.__version__.split("+")[0]}).encode())
    return h.hexdigest()[:16]


def save_atomic(sd, path, metadata):
    """Write sd to path via a temp file + rename. Give ONE metadata key: safetensors writes
    __metadata__ from a hash map, so with 2+ keys the order (and so the bytes) would vary."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(sd, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def place(src, dst, real_file=False):
    """Make dst refer to src: keep a correct link, else symlink (``real_file``: a hard link, else a copy; the
    Chop Shop nodes refuse LoRA symlinks that lead outside the loras folders)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not real_file and dst.is_symlink() and Path(os.readlink(dst)) == src:
        return dst
    if real_file and not dst.is_symlink() and dst.is_file() and os.path.samefile(src, dst):
        return dst
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    try:
        os.link(src, dst) if real_file else os.symlink(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
    return dst


class TinyFixture:
    """A tiny checkpoint + LoRA pair, cached per recipe and linked into a ComfyUI models dir.

    source: the model's generator file (hashed into the recipe); build_checkpoint(seed) -> state dict;
    lora_modules() -> {module name: (target shape, gain)}; lora_metadata: the LoRA's one metadata key
    (default: a fixture tag)."""

    def __init__(self, family, source, ckpt_name, lora_name, build_checkpoint, lora_modules, lora_metadata=None):
        self.family, self.source, self.ckpt_name, self.lora_name = family, source, ckpt_name, lora_name
        self.build_checkpoint, self.lora_modules, self.lora_metadata = build_checkpoint, lora_modules, lora_metadata

    def cached_file(self, kind, seed=DEFAULT_SEED, force=False):
        """Path of the cached file ('checkpoint' or 'lora'), generating it if needed."""
        d = CACHE_ROOT / f"tiny-{self.family}-{recipe_id([self.source], seed)}"
        tag = {"chopshop_fixture": f"{kind} {d.name} seed {seed}"}
        if kind == "checkpoint":
            path, build, meta = d / self.ckpt_name, (lambda: self.build_checkpoint(seed)), tag
        else:
            path, build, meta = d / self.lora_name, (lambda: build_lora(self.lora_modules(), seed)), \
                dict(self.lora_metadata or tag)
        if force or not path.is_file():
            save_atomic(build(), path, meta)
        return path

    def ensure_checkpoint(self, models_dir, seed=DEFAULT_SEED, force=False):
        """models_dir/checkpoints/<ckpt_name> (a ComfyUI 'models' dir)."""
        return place(self.cached_file("checkpoint", seed, force), Path(models_dir) / "checkpoints" / self.ckpt_name)

    def ensure_lora(self, models_dir, seed=DEFAULT_SEED, force=False):
        """models_dir/loras/<lora_name>."""
        return place(self.cached_file("lora", seed, force), Path(models_dir) / "loras" / self.lora_name,
                     real_file=True)

    def main(self, doc, argv=None):
        """Command line: ``python -m chopshop_dev.<module> MODELS_DIR [--seed N] [--force]``."""
        ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
        ap.add_argument("models_dir", help="a ComfyUI models/ dir (checkpoints/ and loras/ are created)")
        ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
        ap.add_argument("--force", action="store_true", help="regenerate the cached files")
        a = ap.parse_args(argv)
        for ensure in (self.ensure_checkpoint, self.ensure_lora):
            p = ensure(a.models_dir, a.seed, a.force)
            print(p, "->", p.resolve(), p.stat().st_size, "bytes")
        return 0

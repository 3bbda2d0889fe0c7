"""Train the built-in default model from scratch on CPU (about 80 minutes on 2 idle cores).

    python -m t2vzero.default_model.train --out DIR [--seed 0] [--overwrite]

Four phases, all seeded and with a fixed data order:

1. an ``AutoencoderKL`` (x8 downsampling, 4 latent channels) on fresh synthetic images, MSE + 1e-6 KL;
1b. the decoder alone at a lower learning rate with the encoder frozen: it sharpens edges (shape is
   decided there) without moving the latent space;
2. a fixed pool of synthetic images is encoded once (so the UNet phase never runs the VAE) and the
   latent scaling factor (1 / std) is measured and stored in the VAE config;
3. a cross-attention ``UNet2DConditionModel`` (epsilon prediction, SD's noise schedule) trained jointly
   with a small ``CLIPTextModel``; 10 % of captions are dropped to "" so classifier-free guidance works.

``--init DIR`` fine-tunes a trained model instead: DIR's VAE encoder (so its latent space), latent scale,
tokenizer and generation defaults are kept; phase 1b (``--dec-steps``) and phase 3 (``--unet-steps``, 0 to
skip) run on ``--world`` from DIR's weights.

Each phase stops after its step count, or earlier if its wall-clock cap (``--*-minutes``) is hit; only
a run that hits a cap depends on machine speed. Everything is written to a temporary directory beside
``--out`` and renamed into place at the end, so an interrupted run leaves no half-written model.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Passive OpenMP waiting: when another process also computes on this 2-core machine, spinning worker
# threads steal the core their partner needs and a step got ~30x slower in trials; passive waiting
# keeps it to ~2x. Must be set before torch (and its OpenMP runtime) is first imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
from tqdm import tqdm

from t2vzero.default_model import data
from t2vzero.stops import INTERRUPTED, Stopped, stop_on_signals
from t2vzero.tiny import write_clip_tokenizer_files

MODEL_MAX_LENGTH = 77  # SD's prompt length, so the model accepts any prompt the generator passes
# What `t2vzero` uses when the caller gives nothing. t0/t1 sit far below the paper's 881/941: at those noise
# levels this small model's latent holds almost no layout yet, so the t0->t1 jump would re-draw the object.
# They are one DDIM step apart (50 steps): the fresh forward noise of each frame is then small, so frames that
# share a whole-latent-pixel shift do not jitter back against the motion. Chosen on 192 held-out videos
# (seeds 1000-1095, 2000-2095): monotone centroid 46 % -> 95 % against 300/400 at 25 steps, identity 87 % both
# (by the fill-ratio judge of the time; the silhouette judge reads 95 % at these defaults).
GENERATION_DEFAULTS: dict[str, Any] = {"height": 64, "width": 64, "motion": [16, 0], "num_inference_steps": 50,
                                       "guidance_scale": 7.5, "t0": 201, "t1": 221}
SCHEDULER_KWARGS: dict[str, Any] = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
                                    "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1}


@dataclass(frozen=True)
class Architecture:
    """The VAE and UNet shapes for one latent grid (pixels per latent pixel)."""

    vae_blocks: tuple[int, ...]
    unet_blocks: tuple[int, ...]
    unet_down: tuple[str, ...]
    unet_up: tuple[str, ...]


# x8 is the shipped model's (SD's factor: 8x8 latents at 64 px). x4 gives 16x16 latents at 64 px, so a zoom or a
# turn of a few degrees per frame moves latent pixels at all (on 8x8 latents a centred object's warp only
# changes every few frames); its UNet keeps attention off the 16x16 level so a step costs about what x8's does.
ARCHITECTURES: dict[int, Architecture] = {
    8: Architecture((16, 32, 64, 64), (64, 128, 128),
                    ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                    ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")),
    4: Architecture((16, 32, 64), (32, 64, 128),
                    ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                    ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D")),
}


def build_vae(factor: int = 8) -> Any:
    """The autoencoder: 64x64x3 images <-> (64/factor)^2 x4 latents (~1M parameters)."""
    from diffusers import AutoencoderKL

    blocks = ARCHITECTURES[factor].vae_blocks
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=blocks,
        down_block_types=("DownEncoderBlock2D",) * len(blocks), up_block_types=("UpDecoderBlock2D",) * len(blocks),
        layers_per_block=1, norm_num_groups=16, sample_size=data.RESOLUTION,
    )


def build_unet(factor: int = 8) -> Any:
    """The denoiser on the latents of `build_vae(factor)`, cross-attending to 64-d text states."""
    from diffusers import UNet2DConditionModel

    arch = ARCHITECTURES[factor]
    return UNet2DConditionModel(
        sample_size=data.RESOLUTION // factor, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=arch.unet_blocks, norm_num_groups=16,
        down_block_types=arch.unet_down, up_block_types=arch.unet_up,
        cross_attention_dim=64, attention_head_dim=8,
    )


def build_text_encoder(tokenizer: Any) -> Any:
    """A 3-layer, 64-wide CLIP text transformer over the caption vocabulary."""
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=256, num_attention_heads=4,
        num_hidden_layers=3, max_position_embeddings=MODEL_MAX_LENGTH, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    ))


def make_scheduler() -> Any:
    """SD 1.x's DDIM scheduler (also defines the training noise schedule)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(**SCHEDULER_KWARGS)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 NxHxWx3 -> float NCHW in [-1, 1], the range the VAE is trained on."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def lr_factor(progress: float, step: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 5 % (a decayed LR stands in for weight EMA)."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


class LossLog:
    """Appends one JSON line per logged step to a file (kept with the model as its training record)."""

    def __init__(self, path: Path) -> None:
        self.file = path.open("a", encoding="utf-8")

    def write(self, **record: Any) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def _optimise(opt: Any, loss: Any, params: Any) -> None:
    """One optimiser step with gradients clipped to norm 1, as every phase takes."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()


class _Phase:
    """One training phase's loop: runs to its step count or wall-clock cap, sets the warm-up + cosine LR
    each step (progress is whichever of steps and time is further along), logs and shows the loss."""

    def __init__(self, name: str, opt: Any, lr: float, steps: int, minutes: float, warmup: int, log: LossLog,
                 metric: str, digits: int) -> None:
        self.name, self.opt, self.lr, self.steps, self.cap, self.warmup = name, opt, lr, steps, minutes * 60, warmup
        self.log, self.metric, self.digits = log, metric, digits
        self.done, self.recent, self.start = 0, [], time.monotonic()
        self.bar = tqdm(total=steps, desc=name, dynamic_ncols=True)

    def __iter__(self) -> Any:
        for step in range(self.steps):
            elapsed = time.monotonic() - self.start
            if elapsed > self.cap:
                break
            for group in self.opt.param_groups:
                group["lr"] = self.lr * lr_factor(max(step / self.steps, elapsed / self.cap), step, self.warmup)
            yield step
            self.done = step + 1

    def record(self, value: float, **extra: float) -> None:
        """Keep the last 100 values; every 25 steps write the loss log and the bar's running mean."""
        step = self.done
        self.recent = (self.recent + [value])[-100:]
        if step % 25 == 0:
            self.log.write(phase=self.name, step=step, **{self.metric: value}, **extra,
                           lr=self.opt.param_groups[0]["lr"], t=round(time.monotonic() - self.start, 1))
            self.bar.set_postfix({self.metric: f"{np.mean(self.recent):.{self.digits}f}"})
        self.bar.update(1)

    def summary(self) -> dict:
        """Steps actually taken, minutes, and the mean of the last 100 values."""
        self.bar.close()
        return {"steps": self.done, "minutes": (time.monotonic() - self.start) / 60,
                f"final_{self.metric}": float(np.mean(self.recent))}


def train_vae(vae: Any, rng: np.random.Generator, steps: int, minutes: float, batch: int, log: LossLog,
              world: data.World = data.WORLDS["classic"]) -> dict:
    """Phase 1. Fresh images every step (drawing is ~0.2 ms/image, negligible next to the model)."""
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    vae.train()
    phase = _Phase("vae", opt, 1e-3, steps, minutes, 50, log, "mse", 5)
    for _ in phase:
        images, _ = data.make_batch(rng, batch, world=world)
        x = to_tensor(images)
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample()).sample
        mse = torch.nn.functional.mse_loss(recon, x)
        kl = posterior.kl().mean()
        loss = mse + 1e-6 * kl
        _optimise(opt, loss, vae.parameters())
        phase.record(mse.item(), kl=kl.item())
    vae.eval()
    return phase.summary()


def finetune_decoder(vae: Any, rng: np.random.Generator, steps: int, minutes: float, batch: int, lr: float,
                     log: LossLog, world: data.World = data.WORLDS["classic"]) -> dict:
    """Train only the decoder (and post-quant conv) with the encoder frozen.

    The latent space, and so the scaling factor and any UNet trained on it, stays valid; this sharpens
    the edges that phase 1 leaves soft (a shape's corners are decided there).
    """
    params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    vae.eval()
    vae.decoder.train()
    phase = _Phase("decoder", opt, lr, steps, minutes, 20, log, "mse", 5)
    for _ in phase:
        images, _ = data.make_batch(rng, batch, world=world)
        x = to_tensor(images)
        with torch.no_grad():
            z = vae.encode(x).latent_dist.sample()
        mse = torch.nn.functional.mse_loss(vae.decode(z).sample, x)
        _optimise(opt, mse, params)
        phase.record(mse.item())
    vae.eval()
    return phase.summary()


@torch.no_grad()
def encode_pool(vae: Any, rng: np.random.Generator, n: int, chunk: int = 256,
                world: data.World = data.WORLDS["classic"]) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Phase 2. Encode `n` fixed images once: posterior means, stds and captions."""
    means, stds, captions = [], [], []
    for _ in tqdm(range(0, n, chunk), desc="encode", dynamic_ncols=True):
        images, caps = data.make_batch(rng, chunk, world=world)
        dist = vae.encode(to_tensor(images)).latent_dist
        means.append(dist.mean)
        stds.append(dist.std)
        captions += caps
    return torch.cat(means)[:n], torch.cat(stds)[:n], captions[:n]


def train_unet(unet: Any, text_encoder: Any, tokenizer: Any, pool: tuple[torch.Tensor, torch.Tensor, list[str]],
               scaling: float, rng: np.random.Generator, steps: int, minutes: float, batch: int,
               log: LossLog, lr: float = 1e-3) -> dict:
    """Phase 3. Epsilon-prediction DDPM training of UNet + text encoder on the encoded pool."""
    means, stds, captions = pool
    unique = sorted(set(captions)) + [""]
    ids = tokenizer(unique, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    index = {c: i for i, c in enumerate(unique)}
    cap_idx = torch.tensor([index[c] for c in captions])
    empty = len(unique) - 1
    noise_sched = make_scheduler()
    alphas = noise_sched.alphas_cumprod
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-2)
    unet.train()
    text_encoder.train()
    order = np.empty(0, np.int64)
    phase = _Phase("unet", opt, lr, steps, minutes, 200, log, "loss", 4)
    for _ in phase:
        if len(order) < batch:  # a new seeded epoch order
            order = np.concatenate([order, rng.permutation(len(captions))])
        idx, order = torch.from_numpy(order[:batch]), order[batch:]
        z = (means[idx] + stds[idx] * torch.randn_like(means[idx])) * scaling
        c = cap_idx[idx].clone()
        c[torch.from_numpy(rng.random(batch) < 0.1)] = empty  # caption dropout for classifier-free guidance
        states = text_encoder(ids[c])[0]
        noise = torch.randn_like(z)
        t = torch.from_numpy(rng.integers(0, len(alphas), batch))
        a = alphas[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * z + (1 - a).sqrt() * noise
        loss = torch.nn.functional.mse_loss(unet(noisy, t, states).sample, noise)
        _optimise(opt, loss, params)
        phase.record(loss.item())
    unet.eval()
    text_encoder.eval()
    return phase.summary()


def model_card(args: argparse.Namespace, stats: dict, scaling: float, counts: dict[str, int]) -> str:
    """The README.md stored with the weights."""
    cmd = "python -m t2vzero.default_model.train " + " ".join(sys.argv[1:])
    factor = args.latent_factor
    arch = ARCHITECTURES[factor]
    return f"""# t2vzero built-in default model

A tiny Stable-Diffusion-architecture text-to-image model trained from scratch (no pretrained weights)
on synthetic images, so that `t2vzero` works offline out of the box. It only knows captions of the form
`a {{colour}} {{shape}} on a {{colour}} background` with colours {", ".join(data.COLOURS)} and shapes
{", ".join(data.SHAPES)} (object and background colours differ), at 64x64 pixels.

## Reproduce

    {cmd}

Seed {args.seed}; data order fixed by the seed. Phases stop at their step count, or earlier at their
wall-clock cap; this run: VAE {stats['vae']['steps']} steps, decoder {stats.get('decoder', {}).get('steps', 0)} steps,
UNet {stats['unet']['steps']} steps
(the model is bit-for-bit reproducible when no cap is hit; PyTorch CPU kernels may still differ across versions).
Software: torch {torch.__version__}, diffusers {_version('diffusers')}, transformers {_version('transformers')}.

## Data

`t2vzero/default_model/data.py`, world `{args.world}`: one filled circle / square / triangle ({_world(args.world)})
in one of 8 palette colours on a plain background of another, anti-aliased, 64x64 RGB.
Fresh images every VAE step; the UNet sees a fixed pool of {args.pool} encoded images.

## Architecture ({sum(counts.values()) / 1e6:.2f} M parameters, stored as {args.dtype})

- VAE: `AutoencoderKL`, blocks {arch.vae_blocks}, x{factor} downsampling, 4 latent channels, 1 layer/block,
  GroupNorm 16; {counts['vae'] / 1e6:.2f} M params; latent scaling factor {scaling:.4f} (1/std of latents).
- UNet: `UNet2DConditionModel`, blocks {arch.unet_blocks},
  {" + ".join(arch.unet_down)} / {" + ".join(arch.unet_up)},
  1 layer/block, 8 heads, cross-attention dim 64, sample size {data.RESOLUTION // factor};
  {counts['unet'] / 1e6:.2f} M params.
- Text encoder: `CLIPTextModel`, 3 layers, width 64, 4 heads, 77 positions; {counts['text_encoder'] / 1e6:.2f} M
  params; tokenizer: CLIP BPE over the caption words (`t2vzero.tiny.write_clip_tokenizer_files`).
- Scheduler: `DDIMScheduler`, SD 1.x schedule (scaled_linear 0.00085-0.012, 1000 steps), epsilon prediction.

## Training

- VAE: MSE + 1e-6 KL, AdamW lr 1e-3 (50-step warm-up, cosine to 5 %), batch {args.ae_batch}, grad clip 1.
  {stats['vae']['steps']} steps in {stats['vae']['minutes']:.1f} min; final MSE (mean of last 100 steps,
  pixels in [-1, 1]) {stats['vae']['final_mse']:.5f}.
- Decoder (and post-quant conv) alone, encoder frozen: MSE, AdamW lr {args.dec_lr} (20-step warm-up,
  cosine to 5 %), batch {args.ae_batch}, grad clip 1. {_phase(stats, 'decoder')}
- UNet + text encoder jointly: epsilon MSE, uniform timesteps, 10 % empty-caption dropout, AdamW lr 1e-3
  (wd 0.01, 200-step warm-up, cosine to 5 %), batch {args.unet_batch}, grad clip 1.
  {stats['unet']['steps']} steps in {stats['unet']['minutes']:.1f} min; final loss (mean of last 100 steps)
  {stats['unet']['final_loss']:.4f}.
- Total wall time {stats['total_minutes']:.1f} min on {torch.get_num_threads()} CPU threads.
  Loss log: `train_log.jsonl`.

## Use

`StableDiffusionPipeline.from_pretrained(dir, safety_checker=None, torch_dtype=torch.float32)`;
generation defaults (size, DDIM steps, guidance, video motion) are in `t2vzero.json`.
"""


def fine_tune_card(args: argparse.Namespace, stats: dict) -> str:
    """The starting model's card with a section on this fine-tune appended."""
    previous = (args.init / "README.md").read_text(encoding="utf-8") if (args.init / "README.md").is_file() else ""
    cmd = "python -m t2vzero.default_model.train " + " ".join(sys.argv[1:])
    done = []
    if "decoder" in stats:
        done.append(f"the decoder alone (encoder frozen, so the latent space and the UNet stay valid) on fresh "
                    f"images of the world, MSE, AdamW peak lr {args.dec_lr:g}, batch {args.ae_batch}: "
                    f"{_phase(stats, 'decoder')}")
    if "unet" in stats:
        st = stats["unet"]
        done.append(f"the UNet and text encoder on a fresh pool of {args.pool} encoded images of the world: "
                    f"epsilon MSE, AdamW peak lr {args.unet_lr:g} (200-step warm-up, cosine to 5 %), batch "
                    f"{args.unet_batch}; {st['steps']} steps in {st['minutes']:.1f} min, final loss (mean of "
                    f"last 100 steps) {st['final_loss']:.4f}.")
    steps = "\n".join(f"- {d}" for d in done)
    return f"""{previous.rstrip()}

## Fine-tune on the world `{args.world}`

    {cmd}

Started from the model above (`--init`), seed {args.seed}, world `{args.world}` ({_world(args.world)}); the VAE
encoder, latent scaling and tokenizer are unchanged. Trained:
{steps}

On {torch.get_num_threads()} CPU threads; torch {torch.__version__}, diffusers {_version('diffusers')},
transformers {_version('transformers')}.
"""


def _load_trained(folder: Path) -> tuple[Any, Any, Any, Any]:
    """VAE, text encoder, tokenizer and UNet of a trained model folder, in float32 for training."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    f32 = torch.float32
    return (AutoencoderKL.from_pretrained(folder / "vae", torch_dtype=f32),
            CLIPTextModel.from_pretrained(folder / "text_encoder", torch_dtype=f32),
            CLIPTokenizer.from_pretrained(folder / "tokenizer"),
            UNet2DConditionModel.from_pretrained(folder / "unet", torch_dtype=f32))


def _world(name: str) -> str:
    """The model card's words for a data world."""
    w = data.WORLDS[name]
    parts = [f"{w.min_size * 100:.0f}-{w.max_size * 100:.0f} % of the frame side",
             f"{w.turned * 100:.0f} % of squares and triangles turned to a random angle" if w.turned
             else "triangles upright",
             (f"reaching up to {w.outside * 100:.0f} % of its size past the frame's edge"
              + (f" in {w.crossing * 100:.0f} % of the images" if w.crossing < 1 else "")) if w.outside
             else "fully inside the frame"]
    return ", ".join(parts)


def _phase(stats: dict, name: str) -> str:
    """One sentence on how a phase ended, for the model card."""
    if name not in stats:
        return "Skipped (`--dec-steps 0`)."
    st = stats[name]
    return f"{st['steps']} steps in {st['minutes']:.1f} min; final MSE {st['final_mse']:.5f}."


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def _number(cast: Any, low: float, strict: bool = False) -> Any:
    """An argparse type: `cast` of the text, at least `low` (above it when `strict`)."""
    def parse(text: str) -> Any:
        value = cast(text)
        if not math.isfinite(value) or value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(f"must be {'>' if strict else '>='} {low}, got {text}")
        return value

    return parse


STEPS, COUNT, POSITIVE = _number(int, 1), _number(int, 1), _number(float, 0, strict=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="model directory to create")
    p.add_argument("--dec-steps", type=_number(int, 0), default=1200,
                   help="decoder-only steps after the VAE phase (0: none)")
    p.add_argument("--dec-minutes", type=POSITIVE, default=10.0, help="wall-clock cap of the decoder phase")
    p.add_argument("--dec-lr", type=POSITIVE, default=3e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--world", choices=sorted(data.WORLDS), default="classic",
                   help="what the images show: 'classic' (the shipped model's), 'camera' (larger, turned shapes "
                   "reaching past the edge, for zoom and rotation paths) or 'framed' (camera's shapes, 70 %% kept "
                   "whole)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument("--ae-steps", type=STEPS, default=2200)
    p.add_argument("--ae-minutes", type=POSITIVE, default=24.0, help="wall-clock cap of the VAE phase")
    p.add_argument("--ae-batch", type=COUNT, default=32)
    p.add_argument("--unet-steps", type=_number(int, 0), default=5400,
                   help="UNet steps (0 skips the phase; only with --init)")
    p.add_argument("--unet-minutes", type=POSITIVE, default=53.0, help="wall-clock cap of the UNet phase")
    p.add_argument("--unet-batch", type=COUNT, default=64)
    p.add_argument("--pool", type=COUNT, default=32768, help="number of encoded images the UNet trains on")
    p.add_argument("--dtype", choices=["float16", "float32"], default="float16", help="storage dtype")
    p.add_argument("--threads", type=COUNT, default=2)
    p.add_argument("--init", type=Path, default=None,
                   help="fine-tune a trained model folder instead of starting from scratch: its VAE encoder, "
                        "latent scale, tokenizer and defaults are kept (no VAE phase); its decoder "
                        "(--dec-steps) and UNet and text encoder (--unet-steps, 0 to skip) go on training on "
                        "--world")
    p.add_argument("--unet-lr", type=POSITIVE, default=1e-3, help="peak learning rate of the UNet phase")
    p.add_argument("--latent-factor", type=int, choices=sorted(ARCHITECTURES), default=None,
                   help="pixels per latent pixel from scratch: 8 (the shipped model's 8x8 latents) or 4 (16x16, "
                        "fine enough for zoom and rotation paths); default 8; --init keeps its model's")
    return p.parse_args(argv)


def _output_problem(out: Path, overwrite: bool) -> str | None:
    """Why `out` cannot receive a model, or None. Only an empty folder or an earlier model is replaced."""
    if out.exists() and not out.is_dir():
        return f"--out {out} is a file; give a directory path"
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            return f"{out} exists and is not empty (use --overwrite to replace a model there)"
        if not (out / "model_index.json").is_file():
            return f"{out} is not a model folder (no model_index.json); --overwrite only replaces a model"
    return None


def _replace(stage: Path, out: Path) -> None:
    """Put the finished model at `out`; an earlier one is moved aside first and deleted only after, so
    an interruption at any point leaves one complete model in place or beside it."""
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        out.rename(old)
    stage.rename(out)  # atomic on one filesystem: the model appears complete or not at all
    shutil.rmtree(old, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """Train and save; returns the process exit code."""
    args = parse_args(argv)
    out: Path = args.out.resolve()
    problem = _output_problem(out, args.overwrite)
    if problem is None and args.init is not None and not (args.init / "unet" / "config.json").is_file():
        problem = f"--init {args.init} is not a trained model folder (no unet/config.json); give one train wrote"
    if problem is None and args.init is not None and args.latent_factor is not None:
        problem = "--latent-factor applies from scratch; --init keeps its model's latent grid (drop one of them)"
    if problem is None and args.init is None and args.unet_steps == 0:
        problem = "--unet-steps 0 trains no UNet; from scratch the UNet phase must run (give --init DIR to skip it)"
    if problem is None and args.init is not None and args.unet_steps == 0 and args.dec_steps == 0:
        problem = "--unet-steps 0 and --dec-steps 0 with --init train nothing; give either some steps"
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if args.init is None and args.latent_factor is None:  # None until here, so that --init can refuse it
        args.latent_factor = 8
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t_start = time.monotonic()
    stage = out.parent / f".{out.name}.partial-{os.getpid()}"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(stage, ignore_errors=True)
        (stage / "checkpoints").mkdir(parents=True)
    except OSError as exc:
        print(f"error: cannot create {stage} ({exc.strerror or exc}); choose a writable --out", file=sys.stderr)
        return 2
    log = LossLog(stage / "train_log.jsonl")
    # Ctrl-C, `kill` (SIGTERM) and a closed terminal (SIGHUP) end the run alike: the partial folder is removed
    # and nothing lands at --out.
    try:
        with stop_on_signals():
            code = _train(args, stage, out, log, t_start)
    except (KeyboardInterrupt, Stopped) as stop:
        log.close()
        shutil.rmtree(stage, ignore_errors=True)
        how = stop.name if isinstance(stop, Stopped) else "Ctrl-C"
        print(f"\ntraining interrupted ({how}); nothing was saved", file=sys.stderr)
        return stop.exit_code if isinstance(stop, Stopped) else INTERRUPTED
    except BaseException:
        log.close()
        print(f"training failed; partial files left in {stage}", file=sys.stderr)
        raise
    if code == 0:
        print(f"saved {out} in {(time.monotonic() - t_start) / 60:.1f} min")
    return code


def _train(args: argparse.Namespace, stage: Path, out: Path, log: LossLog, t_start: float) -> int:
    """The three training phases into `stage`, then `stage` renamed to `out`; returns the exit code."""
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPTokenizer

    stats: dict[str, Any] = {}
    world = data.WORLDS[args.world]
    if args.init is not None:
        vae, text_encoder, tokenizer, unet = _load_trained(args.init)
    else:
        vae = build_vae(args.latent_factor)
        stats["vae"] = train_vae(vae, np.random.default_rng([args.seed, 1]), args.ae_steps, args.ae_minutes,
                                 args.ae_batch, log, world)
    if args.dec_steps > 0:  # the encoder stays frozen, so a fine-tuned UNet's latent space is untouched
        stats["decoder"] = finetune_decoder(vae, np.random.default_rng([args.seed, 4]), args.dec_steps,
                                            args.dec_minutes, args.ae_batch, args.dec_lr, log, world)
    if args.init is not None:
        scaling = float(vae.config.scaling_factor)  # the UNet learnt this latent scale: keep it
        if args.unet_steps > 0:
            pool = encode_pool(vae, np.random.default_rng([args.seed, 2]), args.pool, world=world)
            log.write(phase="encode", n=args.pool, scaling_factor=scaling, init=str(args.init))
    else:
        vae.save_pretrained(stage / "checkpoints" / "vae")  # lets a UNet-phase experiment skip phase 1
        pool = encode_pool(vae, np.random.default_rng([args.seed, 2]), args.pool, world=world)
        means, stds, _ = pool
        z = means + stds * torch.randn(means.shape, generator=torch.Generator().manual_seed(args.seed))
        scaling = float(1.0 / z.std())
        vae.register_to_config(scaling_factor=scaling)
        log.write(phase="encode", n=args.pool, scaling_factor=scaling, latent_mean=float(z.mean()))

        tok_dir = write_clip_tokenizer_files(stage / "checkpoints" / "tokenizer", data.caption_words(),
                                             MODEL_MAX_LENGTH)
        tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
        text_encoder = build_text_encoder(tokenizer)
        unet = build_unet(args.latent_factor)
    if args.unet_steps > 0:
        stats["unet"] = train_unet(unet, text_encoder, tokenizer, pool, scaling,
                                   np.random.default_rng([args.seed, 3]), args.unet_steps, args.unet_minutes,
                                   args.unet_batch, log, args.unet_lr)
    stats["total_minutes"] = (time.monotonic() - t_start) / 60
    log.write(phase="done", **{k: v for k, v in stats.items() if k != "total_minutes"},
              total_minutes=stats["total_minutes"])
    log.close()

    counts = {name: sum(p.numel() for p in m.parameters())
              for name, m in (("vae", vae), ("unet", unet), ("text_encoder", text_encoder))}
    dtype = getattr(torch, args.dtype)
    pipe = StableDiffusionPipeline(
        vae=vae.to(dtype), text_encoder=text_encoder.to(dtype), tokenizer=tokenizer, unet=unet.to(dtype),
        scheduler=make_scheduler(), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(stage, safe_serialization=True)
    defaults = {**GENERATION_DEFAULTS, "vocabulary": sorted(data.caption_words())}
    if args.init is not None and (args.init / "t2vzero.json").is_file():  # keep the defaults tuned for it
        defaults = json.loads((args.init / "t2vzero.json").read_text(encoding="utf-8"))
    (stage / "t2vzero.json").write_text(json.dumps(defaults, indent=2) + "\n", encoding="utf-8")
    card = (fine_tune_card(args, stats) if args.init is not None else model_card(args, stats, scaling, counts))
    (stage / "README.md").write_text(card, encoding="utf-8")
    shutil.rmtree(stage / "checkpoints")
    late = _output_problem(out, args.overwrite)  # someone may have written there meanwhile
    if late:
        print(f"error: {late}; the trained model is in {stage}", file=sys.stderr)
        return 2
    _replace(stage, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

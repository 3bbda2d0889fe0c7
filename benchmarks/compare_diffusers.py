"""Wall time and peak memory: t2vzero vs diffusers' deprecated TextToVideoZeroPipeline.

Both run in this one process, on the same random weights of the full Stable Diffusion 1.5
architecture (UNet 860M, VAE, CLIP ViT-L text encoder), same seed and settings, one after the
other, and the ratios are printed. Not a test: numbers depend on the machine.

    python benchmarks/compare_diffusers.py                # 256×256, 8 frames, 50 steps
    python benchmarks/compare_diffusers.py --steps 10     # quicker on a CPU
"""

from __future__ import annotations

import argparse
import gc
import threading
import time
from pathlib import Path


def peak_rss_during(fn):
    """Run fn(); return (result, seconds, peak resident memory above the start, in MiB)."""
    import torch

    def rss() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    gc.collect()
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start_mem = torch.cuda.memory_allocated()
    start_rss, peak, done = rss(), [0], threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    t = time.perf_counter()
    result = fn()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t
    done.set()
    watcher.join()
    used = (torch.cuda.max_memory_allocated() - start_mem) if cuda else max(peak[0], rss()) - start_rss
    return result, seconds, used / 2**20


def sd15_components(seed: int, tiny: bool):
    """Random weights in the SD 1.5 architecture (or the tiny test model with --tiny)."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from t2vzero.tiny import make_clip_tokenizer, make_tiny_components

    if tiny:
        return make_tiny_components(seed)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    )
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4, sample_size=512,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        scaling_factor=0.18215,
    )
    tokenizer = make_clip_tokenizer()
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=768, intermediate_size=3072, num_attention_heads=12,
        num_hidden_layers=12, max_position_embeddings=77, hidden_act="quick_gelu",
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    return {"unet": unet.eval(), "vae": vae.eval(), "text_encoder": text_encoder.eval(), "tokenizer": tokenizer,
            "scheduler": scheduler}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--chunk-size", type=int, default=4, help="also time t2vzero chunked")
    parser.add_argument("--tiny", action="store_true", help="the tiny test model (a smoke run of this script)")
    args = parser.parse_args()

    import numpy as np
    import torch
    from diffusers.pipelines.deprecated.text_to_video_synthesis.pipeline_text_to_video_zero import (
        TextToVideoZeroPipeline,
    )

    from t2vzero import TextToVideoZero
    from t2vzero.schedule import jump_steps

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.float16 if device == "cuda" else torch.float32
    components = sd15_components(0, args.tiny)
    for name in ("unet", "vae", "text_encoder"):
        components[name].to(device, dtype)
    ours = TextToVideoZero(**components)
    reference = TextToVideoZeroPipeline(**components, safety_checker=None, feature_extractor=None,
                                        requires_safety_checker=False)
    reference.set_progress_bar_config(disable=True)

    size = args.size if not args.tiny else 64
    # The reference takes t0/t1 as step counts from the end; give it the same steps ours snaps to.
    scheduler = components["scheduler"]
    scheduler.set_timesteps(args.steps)
    i1, i0 = jump_steps(scheduler.timesteps, 881, 941, scheduler.config.num_train_timesteps)
    last = len(scheduler.timesteps) - 1
    prompt = "a horse galloping on a beach"
    common = dict(video_length=args.frames, height=size, width=size, num_inference_steps=args.steps)

    def run_reference():
        return reference(prompt, generator=torch.Generator().manual_seed(0), t0=last - i0, t1=last - i1,
                         **common).images

    def run_ours(chunk=None):
        return ours(prompt, generator=torch.Generator().manual_seed(0), compat="diffusers", chunk_size=chunk,
                    progress=False, **common).frames[0]

    rows = []
    with torch.no_grad():
        ref, ref_s, ref_mb = peak_rss_during(run_reference)
        out, our_s, our_mb = peak_rss_during(run_ours)
        chunked, ch_s, ch_mb = peak_rss_during(lambda: run_ours(args.chunk_size))
    rows.append(("diffusers TextToVideoZeroPipeline", ref_s, ref_mb))
    rows.append(("t2vzero (compat=diffusers)", our_s, our_mb))
    rows.append((f"t2vzero, chunk_size={args.chunk_size}", ch_s, ch_mb))
    where = f"{device} {str(dtype).removeprefix('torch.')}, {torch.get_num_threads()} threads"
    print(f"{'tiny' if args.tiny else 'SD 1.5 architecture, random weights'}; {size}x{size}, {args.frames} frames, "
          f"{args.steps} DDIM steps, guidance 7.5; {where}")
    print(f"{'pipeline':36s} {'wall s':>8s} {'peak MiB':>9s} {'time ratio':>10s} {'mem ratio':>9s}")
    for name, s, mb in rows:
        print(f"{name:36s} {s:8.1f} {mb:9.0f} {ref_s / s:9.2f}x {ref_mb / max(mb, 1e-9):8.2f}x")
    print(f"max |t2vzero - diffusers| pixel difference: {np.abs(out - ref).max() * 255:.2f}/255; "
          f"chunked vs unchunked: {np.abs(chunked - out).max() * 255:.2f}/255")
    print("ratios are diffusers / t2vzero: above 1 means t2vzero is faster or smaller")


if __name__ == "__main__":
    main()

"""Wall time and peak memory: t2vzero vs diffusers' deprecated TextToVideoZeroPipeline.

Both run in this one process, on the same random weights of the full Stable Diffusion 1.5
architecture (UNet 860M, VAE, CLIP ViT-L text encoder), same seed and settings, one after the
other, and the ratios are printed. Not a test: numbers depend on the machine.

    python benchmarks/compare_diffusers.py                          # 256×256, 8 frames, 50 steps
    python benchmarks/compare_diffusers.py --steps 10 --size 128    # quicker on a CPU
    python benchmarks/compare_diffusers.py --device cuda --size 512 # fp16 on a GPU, with offloading rows

On a GPU, peak memory is `torch.cuda.max_memory_allocated` (VRAM); on a CPU, resident-set growth.
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
    parser.add_argument("--device", default=None, help="cpu or cuda [default: cuda when available]")
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled rows (compiling takes minutes)")
    parser.add_argument("--tiny", action="store_true", help="the tiny test model (a smoke run of this script)")
    args = parser.parse_args()

    import copy

    import numpy as np
    import torch
    from diffusers.pipelines.deprecated.text_to_video_synthesis.pipeline_text_to_video_zero import (
        TextToVideoZeroPipeline,
    )

    from t2vzero import TextToVideoZero
    from t2vzero.schedule import jump_steps

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    components = sd15_components(0, args.tiny)
    for name in ("unet", "vae", "text_encoder"):
        components[name].to(device, dtype)
    reference = TextToVideoZeroPipeline(**components, safety_checker=None, feature_extractor=None,
                                        requires_safety_checker=False)
    reference.set_progress_bar_config(disable=True)

    size = args.size if not args.tiny else 64
    # The reference takes t0/t1 as step counts from the end; give it the same steps ours snaps to.
    scheduler = components["scheduler"]
    scheduler.set_timesteps(args.steps)
    steps = jump_steps(scheduler.timesteps, 881, 941, scheduler.config.num_train_timesteps)
    last = len(scheduler.timesteps) - 1
    prompt = "a horse galloping on a beach"
    common = dict(height=size, width=size, num_inference_steps=args.steps)

    def run_reference(frame_ids=None):
        frames = args.frames if frame_ids is None else len(frame_ids)
        return reference(prompt, video_length=frames, generator=torch.Generator().manual_seed(0),
                         t0=last - steps.t0_index, t1=last - steps.t1_index, frame_ids=frame_ids, **common).images

    def reference_chunks(chunk):
        """diffusers' documented long-video recipe: frame 1 plus chunk-1 others per call, seed reset each time."""
        out = []
        for start in range(0, args.frames - 1, chunk - 1):
            ids = [0, *range(start + 1, min(start + chunk, args.frames))]
            images = run_reference(ids)
            out.extend(images if not out else images[1:])
        return np.stack(out)

    def ours(pipe, chunk=None):
        return lambda: pipe(prompt, video_length=args.frames, generator=torch.Generator().manual_seed(0),
                            compat="diffusers", chunk_size=chunk, progress=False, **common).frames[0]

    plain = TextToVideoZero(**components)
    rows = []
    with torch.no_grad():
        ref, ref_s, ref_mb = peak_rss_during(run_reference)
        rows.append(("diffusers TextToVideoZeroPipeline", ref, ref_s, ref_mb))
        for chunk in (2, 4):
            rows.append((f"diffusers chunk recipe, chunk {chunk}",
                         *peak_rss_during(lambda c=chunk: reference_chunks(c))))
        rows.append(("t2vzero (compat=diffusers)", *peak_rss_during(ours(plain))))
        for chunk in (2, 4):
            rows.append((f"t2vzero, chunk {chunk}", *peak_rss_during(ours(plain, chunk))))
        fast = TextToVideoZero(**{k: copy.deepcopy(v) for k, v in components.items()})
        fast.optimize(channels_last=True)
        rows.append(("t2vzero, channels_last", *peak_rss_during(ours(fast))))
        if not args.no_compile:
            fast.optimize(compile=True)
            _, warm_s, _ = peak_rss_during(ours(fast))  # compiles
            rows.append((f"t2vzero, compile + channels_last (compiled in {warm_s:.0f} s)",
                         *peak_rss_during(ours(fast))))
        del fast
        if device.startswith("cuda"):  # weights in CPU memory, moved to the GPU while they run
            for mode, chunk in (("model", None), ("sequential", 2)):
                lean = TextToVideoZero(**{k: copy.deepcopy(v) for k, v in components.items()})
                lean.optimize(offload=mode)
                label = f"t2vzero, offload {mode}" + (f", chunk {chunk}" if chunk else "")
                rows.append((label, *peak_rss_during(ours(lean, chunk))))
                del lean
    where = f"{device} {str(dtype).removeprefix('torch.')}, {torch.get_num_threads()} threads"
    print(f"{'tiny' if args.tiny else 'SD 1.5 architecture, random weights'}; {size}x{size}, {args.frames} frames, "
          f"{args.steps} DDIM steps, guidance 7.5; {where}")
    print(f"{'pipeline':52s} {'wall s':>8s} {'peak MiB':>9s} {'time / diffusers':>16s} {'mem / diffusers':>15s} "
          f"{'max |Δ| /255':>12s}")
    for name, frames, s, mb in rows:
        diff = np.abs(frames - ref).max() * 255 if frames.shape == ref.shape else float("nan")
        print(f"{name:52s} {s:8.1f} {mb:9.0f} {s / ref_s:15.2f}x {mb / max(ref_mb, 1e-9):14.2f}x {diff:12.2f}")
    print("ratios are t2vzero / diffusers: below 1 means t2vzero is faster or smaller; the chunk recipes draw "
          "other noise per chunk, so their frames differ by design")


if __name__ == "__main__":
    main()

"""Seconds per 512×512 image and peak GPU memory of the diffusers avatar backend (fp16).

    python benchmarks/sd_gpu.py --model PATH_OR_HUB_ID [--steps 30] [--images 3]
    python benchmarks/sd_gpu.py --random-sd15          # SD 1.5's shapes, random weights

Side by side in one run, on the same loaded pipeline:
  * ``diffusers``  — the plain pipeline called with the prompt string (diffusers' own encoding);
  * ``avatarkit``  — DiffusersImageGenerator.generate with a web UI prompt (weights, > 77 tokens
    chunked, a long negative prompt) plus PNG provenance, i.e. what users run;
and the same with attention slicing on. ``--random-sd15`` builds SD 1.5's architecture with
random weights (no download, nothing to install): speed and memory depend on shapes, not on
what the weights learned. Prints the card's name. Without a CUDA GPU it says so and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="diffusers folder, .safetensors/.ckpt file or hub id")
    src.add_argument("--random-sd15", action="store_true", help="SD 1.5 shapes, random weights")
    ap.add_argument("--config", help="for a checkpoint file offline: a diffusers config folder")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--images", type=int, default=3, help="timed images per variant")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    ap.add_argument("--sampler", default="DPM++ 2M Karras")
    ap.add_argument("--cpu-smoke-test", action="store_true", help="run on the CPU (no figures)")
    args = ap.parse_args()

    try:
        import torch
    except ImportError:
        print('torch is not installed: pip install "avatarkit[diffusers]". Nothing measured.')
        return 0
    cuda = torch.cuda.is_available() and not args.cpu_smoke_test
    if not cuda and not args.cpu_smoke_test:
        print("No CUDA GPU here: this benchmark measures GPU time and memory. Nothing measured.")
        return 0

    from avatarkit.imaging.preset import get_preset
    from avatarkit.providers.diffusers import DiffusersImageGenerator

    device = "cuda" if cuda else "cpu"
    if cuda:
        card = torch.cuda.get_device_name(0)
        total = torch.cuda.get_device_properties(0).total_memory / 2**30
        print(f"card: {card} ({total:.0f} GiB), torch {torch.__version__}")
    else:
        print("CPU smoke test: the figures below are not GPU figures")
    dtype = getattr(torch, args.dtype) if cuda else torch.float32

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    if args.random_sd15:
        pipe = _random_sd15(torch, dtype, device)
        gen = DiffusersImageGenerator.from_pipeline(
            pipe, name="random SD 1.5", scheduler=args.sampler, renderer_check=False
        )
    else:
        opts = {"scheduler": args.sampler, "renderer_check": False, "device": device,
                "dtype": args.dtype if cuda else "float32"}  # fmt: skip
        if args.config:
            opts["config"] = args.config
        gen = DiffusersImageGenerator(args.model, **opts)
        gen.load()
        pipe = gen._pipe
    sync()
    print(f"load: {time.perf_counter() - t0:.1f} s; model: {gen.model}")

    preset = get_preset("fantasy-portrait")
    prompt = preset.to_prompt("a", seed=1, steps=args.steps, width=args.size, height=args.size)
    plain_text = "portrait of a person as a fantasy character, detailed face"

    def plain(seed: int) -> None:
        g = torch.Generator("cpu").manual_seed(seed)
        pipe(plain_text, negative_prompt="blurry", num_inference_steps=args.steps,
             width=args.size, height=args.size, generator=g)  # fmt: skip

    def ours(seed: int) -> None:
        asyncio.run(gen.generate(prompt.model_copy(update={"seed": seed})))

    def measure(name: str, fn) -> float:
        fn(0)  # warm-up: kernels, cuDNN autotune
        sync()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        times = []
        for i in range(args.images):
            t = time.perf_counter()
            fn(i + 1)
            sync()
            times.append(time.perf_counter() - t)
        peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
        med = statistics.median(times)
        print(
            f"{name:<28} {med:6.2f} s/image  ({args.steps / med:5.1f} it/s)  peak {peak:5.2f} GiB"
        )
        return med

    print(f"{args.size}x{args.size}, {args.steps} steps, {args.sampler}, {args.dtype}, "
          f"median of {args.images}:")  # fmt: skip
    base = measure("diffusers (plain prompt)", plain)
    mine = measure("avatarkit (web UI prompt)", ours)
    pipe.enable_attention_slicing()
    sliced = measure("avatarkit + attention slicing", ours)
    pipe.disable_attention_slicing()
    print(f"ratios: avatarkit/diffusers {mine / base:.3f}; sliced/unsliced {sliced / mine:.3f}")
    return 0


def _random_sd15(torch, dtype, device):
    """Stable Diffusion 1.5's architecture with random weights, built on the GPU."""
    import json
    import tempfile
    from pathlib import Path

    from diffusers import (
        AutoencoderKL,
        DPMSolverMultistepScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    tmp = Path(tempfile.mkdtemp())
    # A small BPE vocabulary stands in for CLIP's (tokenising is not what is timed); the
    # embedding table still has CLIP's 49408 rows.
    letters = "abcdefghijklmnopqrstuvwxyz,.()"
    vocab = [t for c in letters for t in (c, c + "</w>")]
    vocab += ["<unk>", "<|startoftext|>", "<|endoftext|>"]
    (tmp / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (tmp / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer.from_pretrained(str(tmp), model_max_length=77)
    with torch.device(device):
        unet = UNet2DConditionModel(
            sample_size=64, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            cross_attention_dim=768, attention_head_dim=8,
        )  # fmt: skip
        vae = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
            sample_size=512,
        )  # fmt: skip
        te = CLIPTextModel(
            CLIPTextConfig(
                hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                num_hidden_layers=12, vocab_size=49408, max_position_embeddings=77,
                hidden_act="quick_gelu", bos_token_id=tok.bos_token_id,
                eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
            )
        )  # fmt: skip
    sched = DPMSolverMultistepScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
    )
    pipe = StableDiffusionPipeline(
        unet=unet, vae=vae, text_encoder=te, tokenizer=tok, scheduler=sched,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    return pipe.to(device, dtype)


if __name__ == "__main__":
    sys.exit(main())

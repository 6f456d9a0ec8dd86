"""A tiny random-weight Stable Diffusion 1.x pipeline written to a folder (no downloads)."""

from __future__ import annotations

import json
import string
from pathlib import Path

WORDS = ["a", "an", "the", "person", "portrait", "man", "woman", "red", "hat", "face", "blurry"]


def write_tokenizer(folder: Path) -> int:
    """Write a CLIP BPE vocab.json/merges.txt knowing single characters and a few words."""
    folder.mkdir(parents=True, exist_ok=True)
    chars = list(string.ascii_lowercase + string.digits + ",.!:'-_")
    vocab = [t for c in chars for t in (c, c + "</w>")]
    merges = ["#version: 0.2"]
    for word in WORDS:  # merge letters left to right: p e -> pe, pe r -> per, ...
        left = word[0]
        for i, ch in enumerate(word[1:], start=1):
            right = ch + ("</w>" if i == len(word) - 1 else "")
            merges.append(f"{left} {right}")
            left = left + right
            if left not in vocab:
                vocab.append(left)
    vocab += ["<unk>", "<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (folder / "merges.txt").write_text("\n".join(dict.fromkeys(merges)) + "\n")
    return len(vocab)


def build_tiny_sd(folder: Path) -> Path:
    """Build a random SD 1.x-shaped pipeline (hidden size 16) and save it to ``folder``."""
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    tok_dir = folder.parent / (folder.name + "-tokenizer")
    n = write_tokenizer(tok_dir)
    tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir), model_max_length=77)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16,
        norm_num_groups=4,
        attention_head_dim=2,
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 16),
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=32,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            hidden_size=16,
            intermediate_size=32,
            num_attention_heads=2,
            num_hidden_layers=2,
            vocab_size=n,
            max_position_embeddings=77,
            projection_dim=16,
        )
    )
    # A trained CLIP's final norm has a bias; a zero one makes every token's mean 0, which
    # the web UI's mean-restoring weighting cannot work with.
    norm = getattr(text_encoder, "text_model", text_encoder).final_layer_norm
    torch.nn.init.normal_(norm.bias, std=0.5)
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
    )
    pipe = StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(str(folder))
    return folder

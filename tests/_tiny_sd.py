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


def _unet_to_ldm(sd: dict, config: dict) -> dict:
    """Rename a diffusers UNet state dict to the original (LDM) checkpoint layout."""
    lpb = config["layers_per_block"]
    n = len(config["block_out_channels"])
    renames: list[tuple[str, str]] = [
        ("time_embedding.linear_1.", "time_embed.0."),
        ("time_embedding.linear_2.", "time_embed.2."),
        ("conv_in.", "input_blocks.0.0."),
        ("conv_norm_out.", "out.0."),
        ("conv_out.", "out.2."),
        ("mid_block.resnets.0.", "middle_block.0."),
        ("mid_block.attentions.0.", "middle_block.1."),
        ("mid_block.resnets.1.", "middle_block.2."),
    ]
    for i in range(n):
        for j in range(lpb):
            k = 1 + i * (lpb + 1) + j
            renames.append((f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{k}.0."))
            renames.append((f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{k}.1."))
        k = 1 + i * (lpb + 1) + lpb
        renames.append((f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{k}.0.op."))
        has_attn = config["up_block_types"][i].startswith("CrossAttn")
        for j in range(lpb + 1):
            k = i * (lpb + 1) + j
            renames.append((f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{k}.0."))
            renames.append((f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{k}.1."))
        k = i * (lpb + 1) + lpb
        renames.append(
            (f"up_blocks.{i}.upsamplers.0.", f"output_blocks.{k}.{2 if has_attn else 1}.")
        )
    resnet_parts = [
        ("norm1.", "in_layers.0."),
        ("conv1.", "in_layers.2."),
        ("time_emb_proj.", "emb_layers.1."),
        ("norm2.", "out_layers.0."),
        ("conv2.", "out_layers.3."),
        ("conv_shortcut.", "skip_connection."),
    ]
    out = {}
    for key, value in sd.items():
        new = key
        for a, b in renames:
            if new.startswith(a):
                new = b + new[len(a) :]
                break
        if ".resnets." in key or key.startswith("mid_block.resnets"):
            for a, b in resnet_parts:
                new = new.replace("." + a, "." + b)
        out["model.diffusion_model." + new] = value
    return out


def _vae_to_ldm(sd: dict, config: dict) -> dict:
    """Rename a diffusers AutoencoderKL state dict to the original checkpoint layout."""
    n = len(config["block_out_channels"])
    renames: list[tuple[str, str]] = [
        ("encoder.conv_norm_out.", "encoder.norm_out."),
        ("decoder.conv_norm_out.", "decoder.norm_out."),
        ("encoder.mid_block.resnets.0.", "encoder.mid.block_1."),
        ("encoder.mid_block.resnets.1.", "encoder.mid.block_2."),
        ("encoder.mid_block.attentions.0.", "encoder.mid.attn_1."),
        ("decoder.mid_block.resnets.0.", "decoder.mid.block_1."),
        ("decoder.mid_block.resnets.1.", "decoder.mid.block_2."),
        ("decoder.mid_block.attentions.0.", "decoder.mid.attn_1."),
    ]
    for i in range(n):
        renames.append((f"encoder.down_blocks.{i}.resnets.", f"encoder.down.{i}.block."))
        renames.append(
            (f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample.")
        )
        renames.append((f"decoder.up_blocks.{i}.resnets.", f"decoder.up.{n - 1 - i}.block."))
        renames.append(
            (f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{n - 1 - i}.upsample.")
        )
    attn = {
        "group_norm.": "norm.",
        "to_q.": "q.",
        "to_k.": "k.",
        "to_v.": "v.",
        "to_out.0.": "proj_out.",
    }
    out = {}
    for key, value in sd.items():
        new = key
        for a, b in renames:
            if new.startswith(a):
                new = b + new[len(a) :]
                break
        new = new.replace("conv_shortcut.", "nin_shortcut.")
        if ".attn_1." in new:
            for a, b in attn.items():
                new = new.replace(".attn_1." + a, ".attn_1." + b)
            if new.endswith("weight") and value.ndim == 2:
                value = value[:, :, None, None]  # LDM's attention uses 1×1 convolutions
        out["first_stage_model." + new] = value
    return out


def write_ldm_checkpoint(model_dir: Path, path: Path) -> Path:
    """Write the pipeline in ``model_dir`` as one original-layout ``.safetensors`` checkpoint,
    as DreamBooth training scripts and the web UI save them."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextModel

    unet = UNet2DConditionModel.from_pretrained(model_dir / "unet")
    vae = AutoencoderKL.from_pretrained(model_dir / "vae")
    te = CLIPTextModel.from_pretrained(model_dir / "text_encoder")
    state: dict[str, torch.Tensor] = {}
    state.update(_unet_to_ldm(unet.state_dict(), dict(unet.config)))
    state.update(_vae_to_ldm(vae.state_dict(), dict(vae.config)))
    for key, value in te.state_dict().items():
        key = key if key.startswith("text_model.") else "text_model." + key
        state["cond_stage_model.transformer." + key] = value
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def build_tiny_sdxl(folder: Path) -> Path:
    """Build a random SDXL-shaped pipeline (two text encoders of width 16) into ``folder``."""
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
    )

    tok_dir = folder.parent / (folder.name + "-tokenizer")
    n = write_tokenizer(tok_dir)
    tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir), model_max_length=77)
    # SDXL's second tokenizer pads with "!" instead of the end token.
    tokenizer_2 = CLIPTokenizer.from_pretrained(str(tok_dir), model_max_length=77, pad_token="!")
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=2,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=16 + 6 * 8,
        cross_attention_dim=32,
        norm_num_groups=4,
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

    def config(tok: CLIPTokenizer) -> CLIPTextConfig:
        return CLIPTextConfig(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tok.pad_token_id,
            hidden_size=16,
            intermediate_size=32,
            num_attention_heads=2,
            num_hidden_layers=2,
            vocab_size=n,
            max_position_embeddings=77,
            projection_dim=16,
        )

    text_encoder = CLIPTextModel(config(tokenizer))
    text_encoder_2 = CLIPTextModelWithProjection(config(tokenizer_2))
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
    )
    pipe = StableDiffusionXLPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        scheduler=scheduler,
    )
    pipe.save_pretrained(str(folder))
    return folder

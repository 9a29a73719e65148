"""Lesson 1's references agree with diffusers, and every convention the lesson states is true.

The notebook states these facts in prose; this file checks them against the installed
diffusers (and the weights registry), so a diffusers upgrade that changes one fails here first.
"""

from __future__ import annotations

import inspect
import json

import torch

from grader.exercises.controlnet import skip_shapes
from grader.reference import controlnet as ref
from grader.weights import CHECKPOINTS, PARTS, load_part, resolve
from grader.weights.resolve import reinitialise_


def _standins():
    return load_part("controlnet_model")[0], load_part("controlnet_sd15_unet_model")[0]


def test_reference_residual_step_is_the_models_own():
    """ref.control_residuals (a marked copy) equals ControlNetModel's outputs on the features it sees."""
    controlnet, _ = _standins()
    seen = []
    hooks = [conv.register_forward_pre_hook(lambda m, a: seen.append(a[0])) for conv in controlnet.controlnet_down_blocks]
    hooks.append(controlnet.controlnet_mid_block.register_forward_pre_hook(lambda m, a: seen.append(a[0])))
    x, t, text, cond = torch.randn(2, 4, 8, 12), torch.tensor([3, 800]), torch.randn(2, 5, 12), torch.rand(2, 3, 32, 48)
    with torch.no_grad():
        out = controlnet(x, t, text, cond, conditioning_scale=0.7)
    for h in hooks:
        h.remove()
    down, mid = ref.control_residuals(seen[:-1], seen[-1], controlnet.controlnet_down_blocks,
                                      controlnet.controlnet_mid_block, 0.7)
    for a, b in zip(down, out.down_block_res_samples, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(mid, out.mid_block_res_sample, rtol=0, atol=0)
    assert [tuple(s.shape) for s in seen[:-1]] == skip_shapes(controlnet.config, 2, 8, 12)


def test_zero_convolutions_and_conditioning_embedding_as_stated():
    from diffusers import ControlNetModel
    from diffusers.models.controlnets.controlnet import ControlNetConditioningEmbedding

    cn = ControlNetModel(**CHECKPOINTS["controlnet_canny"].standin_config)
    convs = list(cn.controlnet_down_blocks) + [cn.controlnet_mid_block]
    for conv in convs:
        assert conv.kernel_size == (1, 1) and conv.in_channels == conv.out_channels and conv.bias is not None
        assert conv.weight.abs().max() == 0 and conv.bias.abs().max() == 0
        assert conv.weight.requires_grad
    emb = cn.controlnet_cond_embedding
    assert emb.conv_out.weight.abs().max() == 0 and emb.conv_out.kernel_size == (3, 3)
    assert emb.conv_in.weight.abs().max() > 0 and all(b.weight.abs().max() > 0 for b in emb.blocks)
    assert [b.stride for b in emb.blocks] == [(1, 1), (2, 2)] * (len(emb.blocks) // 2)
    assert all(b.kernel_size == (3, 3) for b in emb.blocks) and emb.conv_in.kernel_size == (3, 3)
    # The paper's sentence (quoted in diffusers' docstring) against the code the weights were trained with.
    doc = ControlNetConditioningEmbedding.__doc__
    assert "four convolution layers with 4 × 4 kernels" in doc and "ReLU" in doc and "16, 32, 64, 128" in doc
    sig = inspect.signature(ControlNetConditioningEmbedding.__init__).parameters
    assert sig["block_out_channels"].default == (16, 32, 96, 256)
    assert inspect.signature(ControlNetModel.__init__).parameters[
        "conditioning_embedding_out_channels"].default == (16, 32, 96, 256)
    src = inspect.getsource(ControlNetConditioningEmbedding.forward)
    assert src.count("F.silu") == 2 and "relu" not in src
    assert src.strip().endswith("embedding = self.conv_out(embedding)\n\n        return embedding".strip())
    fwd = inspect.getsource(ControlNetModel.forward)
    assert "sample = sample + controlnet_cond" in fwd
    assert "down_block_res_samples = [sample * conditioning_scale for sample in down_block_res_samples]" in fwd
    assert "mid_block_res_sample = mid_block_res_sample * conditioning_scale" in fwd


def test_from_unet_copies_exactly_the_stated_groups():
    from diffusers import ControlNetModel

    _, unet = _standins()
    src = inspect.getsource(ControlNetModel.from_unet)
    for group in ("conv_in", "time_proj", "time_embedding", "class_embedding", "add_embedding", "down_blocks",
                  "mid_block"):
        assert f"controlnet.{group}.load_state_dict(unet.{group}.state_dict())" in src, group
    assert "up_blocks" not in src
    cn = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(4, 8, 16))
    u = unet.state_dict()
    for key, value in cn.state_dict().items():
        if key.startswith(ref.COPIED_PREFIXES):
            assert torch.equal(value, u[key]), key
        else:
            assert key.startswith(ref.NEW_PREFIXES), key
    # The solution's hint: strict=False loading reports exactly the new layers and the decoder.
    fresh = ControlNetModel(**{k: v for k, v in unet.config.items()
                               if k in inspect.signature(ControlNetModel.__init__).parameters},
                            conditioning_embedding_out_channels=(4, 8, 16))
    missing, unexpected = fresh.load_state_dict(unet.state_dict(), strict=False)
    assert missing and all(k.startswith(ref.NEW_PREFIXES) for k in missing)
    assert {k.split(".")[0] for k in unexpected} == {"up_blocks", "conv_norm_out", "conv_out"}


def test_unet_adds_residuals_to_skips_after_the_encoder_and_to_the_mid_output():
    from diffusers import UNet2DConditionModel

    src = inspect.getsource(UNet2DConditionModel.forward)
    assert "down_block_res_sample = down_block_res_sample + down_block_additional_residual" in src
    assert "sample = sample + mid_block_additional_residual" in src
    # the skip additions come after the encoder loop, the mid addition after the mid block
    assert src.index("down_block_res_samples += res_samples") < src.index("down_block_additional_residual\n")
    assert src.index("sample = self.mid_block(") < src.index("sample = sample + mid_block_additional_residual")
    assert "down_intrablock_additional_residuals" in src  # T2I-Adapter's in-encoder path exists beside it
    assert "res_samples = down_block_res_samples[-len(upsample_block.resnets) :]" in src


def test_sd15_sizes_stated_in_the_notebook():
    from diffusers import ControlNetModel, UNet2DConditionModel

    cfg = CHECKPOINTS["controlnet_canny"].real_config
    assert ref.skip_channels(cfg) == [320] * 4 + [640] * 3 + [1280] * 5  # 12 skips
    with torch.device("meta"):
        cn = ControlNetModel(**cfg)
        unet = UNet2DConditionModel(**CHECKPOINTS["controlnet_sd15_unet"].real_config)
    assert len(cn.controlnet_down_blocks) == 12
    total = sum(p.numel() for p in cn.parameters())
    new = sum(p.numel() for n, p in cn.named_parameters() if n.startswith("controlnet_"))
    unet_total = sum(p.numel() for p in unet.parameters())
    assert 361.0e6 < total < 361.5e6 and 859e6 < unet_total < 860e6
    assert 0.034 < new / total < 0.036 and 0.41 < total / unet_total < 0.43
    # SD1.5's ControlNet config is ControlNetModel's defaults except the text width (CLIP ViT-L: 768).
    defaults = {k: v.default for k, v in inspect.signature(ControlNetModel.__init__).parameters.items()}
    for key, value in cfg.items():
        assert defaults[key] == value or key == "cross_attention_dim", key
    assert cfg["cross_attention_dim"] == 768


def test_standins_fit_together_and_have_live_zero_convs():
    controlnet, unet = _standins()
    for conv in list(controlnet.controlnet_down_blocks) + [controlnet.controlnet_mid_block,
                                                           controlnet.controlnet_cond_embedding.conv_out]:
        assert conv.weight.abs().mean() > 0.05
        assert conv.bias.abs().mean() > 0.01
    layers = load_part("controlnet_new_layers")[0]
    for k, v in layers.state_dict().items():
        torch.testing.assert_close(v, controlnet.state_dict()["controlnet_" + k], rtol=0, atol=0)
    x, t, text = torch.randn(1, 4, 8, 8), torch.tensor([10]), torch.randn(1, 5, 12)
    cond = torch.rand(1, 3, 32, 32)  # 4x the latent side: two stride-2 convolutions
    with torch.no_grad():
        out = controlnet(x, t, text, cond)
        unet(x, t, text, down_block_additional_residuals=out.down_block_res_samples,
             mid_block_additional_residual=out.mid_block_res_sample)
    assert all(r.abs().mean() > 1e-2 for r in out.down_block_res_samples)


def test_new_layers_part_matches_the_real_checkpoint_layout():
    from diffusers import ControlNetModel

    cfg = CHECKPOINTS["controlnet_canny"].real_config
    part = PARTS["controlnet_new_layers"].build(cfg)
    with torch.device("meta"):
        cn = ControlNetModel(**cfg)
    real = {k[len("controlnet_"):]: v.shape for k, v in cn.state_dict().items() if k.startswith("controlnet_")}
    assert real == {k: v.shape for k, v in part.state_dict().items()}
    assert len(real) == 42


def _fp16_canny_like(folder):
    from diffusers import ControlNetModel

    model = ControlNetModel(**CHECKPOINTS["controlnet_canny"].standin_config)
    reinitialise_(model, seed=5)
    model.half().save_pretrained(folder, safe_serialization=True, variant="fp16")
    assert (folder / "diffusion_pytorch_model.fp16.safetensors").is_file()
    return model


def test_real_layout_at_the_repo_root_loads_from_an_explicit_dir(tmp_path, monkeypatch):
    ck = CHECKPOINTS["controlnet_canny"]
    model = _fp16_canny_like(tmp_path / ck.repo_id)
    monkeypatch.delenv("COURSE_STANDIN_ONLY", raising=False)
    source = resolve("controlnet_canny", weights_dir=tmp_path)
    assert source.kind == "real" and source.origin == "explicit directory"
    layers, _ = load_part("controlnet_new_layers", source=source)
    for k, v in layers.state_dict().items():
        assert v.dtype == torch.float32
        torch.testing.assert_close(v, model.state_dict()["controlnet_" + k].float(), rtol=0, atol=0)


def test_real_layout_at_the_repo_root_loads_from_the_hub_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants as hc

    ck = CHECKPOINTS["controlnet_canny"]
    repo = tmp_path / ("models--" + ck.repo_id.replace("/", "--"))
    model = _fp16_canny_like(repo / "snapshots" / ck.revision)  # subfolder "": files at the snapshot root
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("COURSE_STANDIN_ONLY", raising=False)
    monkeypatch.delenv("COURSE_WEIGHTS_DIR", raising=False)
    source = resolve("controlnet_canny")
    assert source.kind == "real" and source.origin == "Hugging Face cache"
    assert json.loads(source.config_path.read_text())["_class_name"] == "ControlNetModel"
    layers, _ = load_part("controlnet_new_layers", source=source)
    torch.testing.assert_close(layers["mid_block"].weight, model.controlnet_mid_block.weight.float(), rtol=0, atol=0)

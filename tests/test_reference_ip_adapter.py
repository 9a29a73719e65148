"""Lesson 3's references agree with diffusers, and every convention the lesson states is true.

The notebook states these facts in prose; this file is where they are checked against the
installed diffusers, so a diffusers upgrade that changes one fails here first. It also tests
the loading path of the raw IP-Adapter state-dict file (no config.json) on locally built files
in the real file's layout.
"""

import inspect

import pytest
import torch
import torch.nn.functional as F

from grader.exercises import ip_adapter as ex
from grader.reference import ip_adapter as ref
from grader.weights import CHECKPOINTS, CheckpointMismatch, load_part, resolve
from grader.checkpoints.ip_adapter import _build_ipa_image_proj, _build_ipa_layers

IPA, UNET = CHECKPOINTS["ip_adapter_sd15"], CHECKPOINTS["ip_adapter_sd15_unet"]


def _pair():
    sd, sources, unet = ex.load_adapter("cpu", standin=True, unet=True)
    assert {s.kind for s in sources} == {"stand-in"}
    return sd, unet


def _meta_unet(cfg):
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        return UNet2DConditionModel(**cfg)


# ---------------------------------------------------------------- 1. the projection
def test_image_projection_is_linear_reshape_then_layer_norm():
    from diffusers.models.embeddings import ImageProjection

    proj = ImageProjection(image_embed_dim=16, cross_attention_dim=12, num_image_text_embeds=4)
    assert proj.norm.eps == 1e-5 and proj.norm.elementwise_affine
    src = inspect.getsource(ImageProjection.forward)
    reshape = src.index("image_embeds.reshape(batch_size, self.num_image_text_embeds, -1)")
    assert reshape < src.index("self.norm(image_embeds)")
    # ... and the original repository's ImageProjModel is the same computation on the file's keys.
    sd, _ = _pair()
    e = torch.randn(3, sd["image_proj.proj.weight"].shape[1])
    C = sd["image_proj.norm.weight"].shape[0]
    mine = F.layer_norm((e @ sd["image_proj.proj.weight"].T + sd["image_proj.proj.bias"]).reshape(3, -1, C), (C,),
                        sd["image_proj.norm.weight"], sd["image_proj.norm.bias"])
    got = ref.image_projection(e, sd["image_proj.proj.weight"], sd["image_proj.proj.bias"],
                               sd["image_proj.norm.weight"], sd["image_proj.norm.bias"])
    torch.testing.assert_close(got, mine)


def test_loader_assumes_four_tokens_and_splits_the_flat_keys():
    from diffusers.loaders.unet import UNet2DConditionLoadersMixin

    src = inspect.getsource(UNet2DConditionLoadersMixin._convert_ip_adapter_image_proj_to_diffusers)
    assert 'if "proj.weight" in state_dict:' in src
    assert "num_image_text_embeds = 4" in src
    assert 'cross_attention_dim = state_dict["proj.weight"].shape[0] // 4' in src
    assert 'key.replace("proj", "image_embeds")' in src
    from diffusers.loaders.ip_adapter import IPAdapterMixin

    load = inspect.getsource(IPAdapterMixin.load_ip_adapter)
    assert 'state_dict["image_proj"][key.replace("image_proj.", "")]' in load
    assert 'state_dict["ip_adapter"][key.replace("ip_adapter.", "")]' in load
    nested = ref.split_state_dict({"image_proj.proj.weight": 1, "ip_adapter.3.to_k_ip.weight": 2, "other": 3})
    assert nested == {"image_proj": {"proj.weight": 1}, "ip_adapter": {"3.to_k_ip.weight": 2}}


def test_unconditional_image_prompt_is_a_zero_embedding():
    from diffusers import StableDiffusionPipeline

    src = inspect.getsource(StableDiffusionPipeline.encode_image)
    assert "uncond_image_embeds = torch.zeros_like(image_embeds)" in src


# ---------------------------------------------------------------- 2. decoupled cross-attention
def test_processor_conventions():
    from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0

    proc = IPAdapterAttnProcessor2_0(hidden_size=8, cross_attention_dim=12, num_tokens=4, scale=0.5)
    assert proc.num_tokens == [4] and proc.scale == [0.5]  # lists: one entry per adapter
    assert proc.to_k_ip[0].bias is None and tuple(proc.to_k_ip[0].weight.shape) == (8, 12)
    two = IPAdapterAttnProcessor2_0(hidden_size=8, cross_attention_dim=12, num_tokens=(4, 16), scale=[1.0, 0.3])
    assert len(two.to_k_ip) == len(two.to_v_ip) == 2
    src = inspect.getsource(IPAdapterAttnProcessor2_0.__call__)
    assert "end_pos = encoder_hidden_states.shape[1] - self.num_tokens[0]" in src      # [text; image]
    assert "encoder_hidden_states[:, :end_pos, :]" in src
    assert "if isinstance(encoder_hidden_states, tuple):" in src                        # the current form
    assert "elif scale == 0:" in src and "skip = True" in src                            # scale 0 skips
    assert src.index("hidden_states = hidden_states + scale * current_ip_hidden_states") < \
        src.index("hidden_states = attn.to_out[0](hidden_states)")                      # summed before to_out
    assert "ip_adapter_masks" in src


def test_tuple_form_equals_the_legacy_concatenated_form():
    """The reference (tuple form, split done by us) equals diffusers' own split of [text; image]."""
    import warnings

    _, unet = _pair()
    attn = unet.down_blocks[0].attentions[0].transformer_blocks[0].attn2
    C, D = attn.to_k.in_features, attn.to_q.out_features
    wk, wv = torch.randn(D, C) * 0.3, torch.randn(D, C) * 0.3
    x, ctx = torch.randn(2, 10, attn.to_q.in_features), torch.randn(2, 7 + 4, C)
    ours = ref.decoupled_cross_attention(attn, x, ctx, wk, wv, 0.7, 4)
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        legacy = ref.ip_processor(wk, wv, 0.7, 4)(attn, x, encoder_hidden_states=ctx)
    torch.testing.assert_close(ours, legacy, rtol=0, atol=0)
    assert any(issubclass(w.category, FutureWarning) and "tuple" in str(w.message) for w in caught)  # deprecated


def test_scale_zero_is_the_frozen_cross_attention():
    _, unet = _pair()
    attn = unet.up_blocks[1].attentions[0].transformer_blocks[0].attn2
    C, D = attn.to_k.in_features, attn.to_q.out_features
    x, ctx = torch.randn(2, 6, attn.to_q.in_features), torch.randn(2, 5 + 4, C)
    zero = ref.decoupled_cross_attention(attn, x, ctx, torch.randn(D, C), torch.randn(D, C), 0.0, 4)
    with torch.no_grad():
        torch.testing.assert_close(zero, attn(x, encoder_hidden_states=ctx[:, :5]))
    torch.testing.assert_close(zero, ref.text_cross_attention(attn, x, ctx[:, :5]))


def test_independent_decoupled_attention_matches_the_processor():
    """The exercise module's diagnosis helper (an independent implementation) is the reference."""
    _, unet = _pair()
    attn = unet.mid_block.attentions[0].transformer_blocks[0].attn2
    C, D = attn.to_k.in_features, attn.to_q.out_features
    wk, wv = torch.randn(D, C) * 0.3, torch.randn(D, C) * 0.3
    x, ctx = torch.randn(3, 4, attn.to_q.in_features), torch.randn(3, 6 + 4, C)
    with torch.no_grad():
        mine = ex._decoupled(attn, x, ctx[:, :6], ctx[:, 6:], wk, wv, image_scale=1.3)
    torch.testing.assert_close(mine, ref.decoupled_cross_attention(attn, x, ctx, wk, wv, 1.3, 4),
                               rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- 3. numbering
def test_loader_numbers_cross_attentions_1_3_5():
    from diffusers.loaders.unet import UNet2DConditionLoadersMixin

    src = inspect.getsource(UNet2DConditionLoadersMixin._convert_ip_adapter_attn_to_diffusers)
    assert "key_id = 1" in src and "key_id += 2" in src
    assert 'state_dict["ip_adapter"][f"{key_id}.to_k_ip.weight"]' in src
    assert 'name.endswith("attn1.processor")' in src


def test_unet_registers_down_up_mid_and_the_mid_block_is_last():
    sd15 = _meta_unet(UNET.real_config)
    children = [n for n, _ in sd15.named_children()]
    assert children.index("down_blocks") < children.index("up_blocks") < children.index("mid_block")
    names = list(sd15.attn_processors)
    ids = ref.ip_layer_ids(sd15)
    cross = [n for n in names if n.endswith("attn2.processor")]
    assert len(cross) == 16 and len(names) == 32
    assert ids[ids >= 0].tolist() == list(range(1, 32, 2))
    assert names[-1].startswith("mid_block") and ids[-1].item() == 31
    assert all(i == -1 for n, i in zip(names, ids.tolist()) if n.endswith("attn1.processor"))
    # attn1 and attn2 alternate, so the original repository's "position among all processors" is the id.
    assert all(i == pos for pos, i in enumerate(ids.tolist()) if i >= 0)


def test_mid_block_is_as_wide_as_up_blocks_1():
    """Why a down-mid-up mapping can still fit shapes: SD1.5 and the stand-in both have it."""
    for cfg in (UNET.real_config, UNET.standin_config):
        u = _meta_unet(cfg)
        mid = u.mid_block.attentions[0].transformer_blocks[0].attn2.to_q.out_features
        assert mid == u.up_blocks[1].attentions[0].transformer_blocks[0].attn2.to_q.out_features


def test_sdxl_layout():
    u = _meta_unet(ex.SDXL_UNET)
    ids = ref.ip_layer_ids(u)
    assert (ids >= 0).sum() == 70 and ids.max() == 139
    assert sum(p.numel() for p in u.parameters()) > 2.5e9  # the real SDXL UNet (2.57 B), on meta


def test_ids_agree_with_a_real_load_of_distinct_weights():
    """The twin-UNet tagging (ref.ip_layer_ids) against diffusers' loader on the stand-in itself."""
    sd, unet = _pair()
    ids = ref.ip_layer_ids(unet)
    loaded = ref.ip_adapter_attn_weights(unet, sd)
    for name, i in zip(unet.attn_processors, ids.tolist()):
        if i < 0:
            assert name not in loaded
        else:
            k, v = loaded[name]
            torch.testing.assert_close(k, sd[f"ip_adapter.{i}.to_k_ip.weight"], rtol=0, atol=0)
            torch.testing.assert_close(v, sd[f"ip_adapter.{i}.to_v_ip.weight"], rtol=0, atol=0)


# ---------------------------------------------------------------- 4. the UNet
def test_unet_with_the_loaders_mapping_equals_the_loaded_unet():
    sd, unet = _pair()
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([3, 700])
    text, emb = torch.randn(2, 5, 12), torch.randn(2, sd["image_proj.proj.weight"].shape[1])
    expected = ref.ip_adapter_unet(unet, sd, x, t, text, emb, 0.6)
    mapped = ref.unet_with_attn_weights(unet, ref.ip_adapter_attn_weights(unet, sd), sd, x, t, text, emb, 0.6)
    torch.testing.assert_close(mapped, expected, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        plain = unet(x, t, encoder_hidden_states=text).sample
    torch.testing.assert_close(ref.ip_adapter_unet(unet, sd, x, t, text, emb, 0.0), plain, rtol=1e-5, atol=1e-6)
    assert (expected - plain).norm() / plain.norm() > 1e-2  # the adapter matters in the stand-in


def test_tuple_passes_through_the_unet_untouched():
    """Step 3 of the notebook: the transformer blocks hand encoder_hidden_states to attn2 as given."""
    sd, unet = _pair()
    seen = []

    class Spy:
        def __call__(self, attn, hidden_states, encoder_hidden_states=None, **kwargs):
            seen.append(encoder_hidden_states)
            from diffusers.models.attention_processor import AttnProcessor2_0

            ctx = encoder_hidden_states[:, :5] if encoder_hidden_states is not None else None
            return AttnProcessor2_0()(attn, hidden_states, encoder_hidden_states=ctx)

    procs = {n: (Spy() if n.endswith("attn2.processor") else p) for n, p in unet.attn_processors.items()}
    unet.set_attn_processor(procs)
    ctx = torch.randn(1, 9, 12)
    with torch.no_grad():
        unet(torch.randn(1, 4, 8, 8), 5, encoder_hidden_states=ctx)
    assert len(seen) == 11 and all(s is ctx for s in seen)


# ---------------------------------------------------------------- the registry entries and the raw file
def test_real_unet_config_is_sd15():
    from diffusers import UNet2DConditionModel

    defaults = {k: v.default for k, v in inspect.signature(UNet2DConditionModel.__init__).parameters.items()}
    for key, value in UNET.real_config.items():
        if key == "cross_attention_dim":
            assert value == 768  # CLIP ViT-L/14's width; diffusers' default is 1280
        elif key == "sample_size":
            assert value == 64
        else:
            assert defaults[key] == value, key


def test_adapter_size_stated_in_the_notebook():
    """22.3 M parameters (the paper's "22M"), 44.6 MB in fp16."""
    with torch.device("meta"):
        n = sum(p.numel() for b in (_build_ipa_image_proj, _build_ipa_layers) for p in b(IPA.real_config).parameters())
    assert n == 3_150_336 + 19_169_280
    assert 44.6e6 < 2 * n < 44.7e6


def test_standin_state_dict_is_non_trivial_and_fits_the_standin_unet():
    sd, unet = _pair()
    for k, v in sd.items():
        assert v.std() > 0.05 and not torch.all(v == 1), k
    ids = ref.ip_layer_ids(unet)
    assert sorted(int(k.split(".")[1]) for k in sd if k.endswith("to_k_ip.weight")) == ids[ids >= 0].tolist()
    for p in unet.parameters():
        assert p.std() > 0.05 or p.numel() == 1


def _write_real_layout(folder, dtype=torch.float16):
    """A file in ip-adapter_sd15.safetensors' layout (real shapes, fp16), random values."""
    from safetensors.torch import save_file

    tensors = {}
    for prefix, build in (("image_proj.", _build_ipa_image_proj), ("ip_adapter.", _build_ipa_layers)):
        for k, v in build(IPA.real_config).state_dict().items():
            tensors[prefix + k] = torch.randn(v.shape, dtype=dtype) * 0.02
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / IPA.weights_name))
    return tensors


def test_raw_file_in_an_explicit_directory(tmp_path, monkeypatch):
    tensors = _write_real_layout(tmp_path / IPA.repo_id / IPA.subfolder)
    monkeypatch.delenv("COURSE_STANDIN_ONLY", raising=False)
    source = resolve("ip_adapter_sd15", weights_dir=tmp_path)
    assert source.kind == "real" and source.origin == "explicit directory"
    assert source.config["unet"]["cross_attention_dim"] == 768
    assert "REAL h94/IP-Adapter" in source.banner()
    proj, _ = load_part("ip_adapter_image_proj", source=source)
    layers, _ = load_part("ip_adapter_layers", source=source)
    assert proj.proj.weight.shape == (3072, 1024) and proj.proj.weight.dtype == torch.float32
    torch.testing.assert_close(layers["31"].to_k_ip.weight, tensors["ip_adapter.31.to_k_ip.weight"].float())


def test_raw_file_in_the_hub_cache_offline(tmp_path, monkeypatch):
    import huggingface_hub.constants as hc

    repo = tmp_path / "models--h94--IP-Adapter"
    sha = "0123456789abcdef0123456789abcdef01234567"
    _write_real_layout(repo / "snapshots" / sha / IPA.subfolder)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(sha)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("COURSE_STANDIN_ONLY", raising=False)
    monkeypatch.delenv("COURSE_WEIGHTS_DIR", raising=False)
    source = resolve("ip_adapter_sd15")
    assert source.kind == "real" and source.origin == "Hugging Face cache"
    load_part("ip_adapter_layers", source=source)


def test_raw_file_missing_a_layer_is_refused(tmp_path):
    from safetensors.torch import save_file

    tensors = _write_real_layout(tmp_path / IPA.repo_id / IPA.subfolder)
    del tensors["ip_adapter.31.to_v_ip.weight"]
    save_file(tensors, str(tmp_path / IPA.repo_id / IPA.subfolder / IPA.weights_name))
    source = resolve("ip_adapter_sd15", weights_dir=tmp_path, standin_only=False)
    with pytest.raises(CheckpointMismatch, match="missing"):
        load_part("ip_adapter_layers", source=source)


def test_real_adapter_without_real_unet_falls_back_to_a_standin_pair(tmp_path, monkeypatch):
    _write_real_layout(tmp_path / IPA.repo_id / IPA.subfolder)
    monkeypatch.delenv("COURSE_STANDIN_ONLY", raising=False)
    monkeypatch.setenv("COURSE_WEIGHTS_DIR", str(tmp_path))
    sd, sources, attn = ex.load_adapter("cpu")
    assert {s.kind for s in sources} == {"stand-in"}
    assert sd["ip_adapter.1.to_k_ip.weight"].shape == (attn.to_q.out_features, attn.to_k.in_features)


def test_down_mid_up_numbering_first_fails_three_layers_after_the_mid_block():
    """The notebook's "nasty detail": in SD1.5 the wrong order fits shapes for three layers."""
    sd15 = _meta_unet(UNET.real_config)
    assert 859e6 < sum(p.numel() for p in sd15.parameters()) < 860e6  # "the UNet's 860 M"
    names = [n for n in sd15.attn_processors if n.endswith("attn2.processor")]
    width = {n: sd15.get_submodule(n[: -len(".processor")]).to_q.out_features for n in names}
    by_id = {2 * i + 1: width[n] for i, n in enumerate(names)}           # diffusers' numbering
    rank = {"down_blocks": 0, "mid_block": 1, "up_blocks": 2}
    wrong_order = sorted(names, key=lambda n: (rank[n.split(".")[0]], names.index(n)))
    fits = [by_id[2 * i + 1] == width[n] for i, n in enumerate(wrong_order)]
    first_bad = fits.index(False)
    assert wrong_order[first_bad - 3].startswith("mid_block") and all(fits[:first_bad])
    assert wrong_order[first_bad].startswith("up_blocks.1.attentions.2")

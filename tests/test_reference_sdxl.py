"""Lesson 9's references agree with diffusers, and every convention the lesson states is true.

The notebook states these facts in prose; this file checks them against the installed diffusers
(StableDiffusionXLPipeline, StableDiffusionXLImg2ImgPipeline, UNet2DConditionModel with
addition_embed_type="text_time"), built from the stand-ins without any download.
"""

import inspect

import pytest
import torch

from grader import weights  # noqa: F401  (the registry first: grader.checkpoints.sdxl is one of its modules)
from grader.checkpoints import sdxl as ck
from grader.reference import sdxl as ref


@pytest.fixture(scope="module")
def pipes():
    return ck.standin_pipelines()


def _encoders(base):
    return base.tokenizer, base.tokenizer_2, base.text_encoder, base.text_encoder_2


PROMPTS = ["a cat on the mat", "an astronaut riding a horse on the moon, detailed oil painting at dusk"]


@pytest.mark.parametrize("negative,zeros,n", [(None, True, 1), (None, False, 2), ([""] * 2, True, 3),
                                              (["blurry", "ugly dog"], True, 1), (["blurry", ""], False, 2)])
def test_encode_prompt_cfg_is_the_pipelines_encode_prompt(pipes, negative, zeros, n):
    base, _ = pipes
    base.register_to_config(force_zeros_for_empty_prompt=zeros)
    try:
        with torch.no_grad():
            expected = base.encode_prompt(PROMPTS, device="cpu", num_images_per_prompt=n,
                                          do_classifier_free_guidance=True, negative_prompt=negative)
    finally:
        base.register_to_config(force_zeros_for_empty_prompt=True)
    got = ref.encode_prompt_cfg(*_encoders(base), PROMPTS, negative, n, zeros)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=0, atol=0)
    if negative is None and zeros:
        assert got[1].abs().max() == 0 and got[3].abs().max() == 0  # zeros, not an encoded ""
    if negative == [""] * 2:
        assert got[1].abs().max() > 0  # an explicit empty negative prompt is encoded


def test_stated_text_encoder_facts(pipes):
    base, _ = pipes
    tok, tok2, te, te2 = _encoders(base)
    # tokenizer_2 pads with "!" (id 0), tokenizer with <|endoftext|>, as SDXL's own pair does.
    assert tok2.pad_token == "!" and tok2.pad_token_id == 0 and tok.pad_token == tok.eos_token
    ids = ref.token_ids(tok, PROMPTS, "cpu")
    assert ids.shape == (2, tok.model_max_length)                  # padded and truncated to model_max_length
    with torch.no_grad():
        out = te2(ref.token_ids(tok2, PROMPTS, "cpu"), output_hidden_states=True)
        embeds, pooled = ref.encode_text(tok, tok2, te, te2, PROMPTS)
    assert len(out.hidden_states) == te2.config.num_hidden_layers + 1  # embeddings output + one per layer
    torch.testing.assert_close(pooled, out.text_embeds)                   # pooled = projected, from encoder 2
    torch.testing.assert_close(pooled, te2.text_projection(out2 := te2.text_model(
        ref.token_ids(tok2, PROMPTS, "cpu")).pooler_output).detach())
    assert out2.shape[-1] == te2.config.hidden_size
    # CLIP-L first on the feature axis; no final LayerNorm on the penultimate states.
    torch.testing.assert_close(embeds[..., te.config.hidden_size:], out.hidden_states[-2])
    assert not torch.allclose(out.hidden_states[-2], out.last_hidden_state)
    src = inspect.getsource(type(base).encode_prompt)
    assert "prompt_embeds.hidden_states[-2]" in src and "torch.concat(prompt_embeds_list, dim=-1)" in src
    assert "negative_prompt is None and self.config.force_zeros_for_empty_prompt" in src
    assert "repeat(1, num_images_per_prompt, 1)" in src
    defaults = inspect.signature(type(base).__init__).parameters
    assert defaults["force_zeros_for_empty_prompt"].default is True


def test_time_id_features_are_the_unets_add_time_proj():
    unet = weights.load_part("sdxl_unet")[0]
    assert unet.add_time_proj.flip_sin_to_cos is True and unet.add_time_proj.downscale_freq_shift == 0
    ids = torch.tensor([[1024.0, 1024, 0, 0, 1024, 1024], [512.0, 768, 16, 32, 896, 1152]])
    d = unet.config.addition_time_embed_dim
    expected = unet.add_time_proj(ids.flatten()).reshape(2, -1)
    torch.testing.assert_close(ref.time_id_features(ids, d), expected, rtol=0, atol=0)


def test_added_embedding_is_get_aug_embed():
    unet = weights.load_part("sdxl_unet")[0]
    P = unet.add_embedding.linear_1.in_features - 6 * unet.config.addition_time_embed_dim
    text, ids = torch.randn(3, P), torch.randint(0, 2048, (3, 6)).float()
    with torch.no_grad():
        expected = unet.get_aug_embed(torch.zeros(3, 1), None, {"text_embeds": text, "time_ids": ids})
        got = ref.added_embedding(unet.add_embedding, text, ids, unet.config.addition_time_embed_dim)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    src = inspect.getsource(type(unet).get_aug_embed)
    assert "torch.concat([text_embeds, time_embeds], dim=-1)" in src  # pooled text first
    assert unet.add_embedding.act.__class__.__name__ == "SiLU"


def test_added_embedding_keeps_the_unets_half_precision_like_get_aug_embed():
    import copy

    unet = copy.deepcopy(weights.load_part("sdxl_unet")[0]).half()
    P = unet.add_embedding.linear_1.in_features - 6 * unet.config.addition_time_embed_dim
    text, ids = torch.randn(2, P).half(), torch.randint(0, 2048, (2, 6)).float()
    with torch.no_grad():
        expected = unet.get_aug_embed(torch.zeros(2, 1, dtype=torch.float16), None, {"text_embeds": text, "time_ids": ids})
        got = ref.added_embedding(unet.add_embedding, text, ids, unet.config.addition_time_embed_dim)
    assert got.dtype == expected.dtype == torch.float16
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_stated_unet_config_facts():
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**ck.SDXL_UNET)
        refiner = UNet2DConditionModel(**ck.SDXL_REFINER_UNET)
    assert unet.add_embedding.linear_1.in_features == 2816 == 6 * 256 + 1280
    assert unet.add_embedding.linear_2.out_features == 1280 == 4 * 320
    assert refiner.add_embedding.linear_1.in_features == 2560 == 5 * 256 + 1280
    assert ck.SDXL_UNET["cross_attention_dim"] == 768 + 1280 and ck.SDXL_REFINER_UNET["cross_attention_dim"] == 1280
    # Three levels; no attention at the highest resolution; 2 and 10 transformer blocks per attention.
    per_level = [[len(a.transformer_blocks) for a in getattr(b, "attentions", [])] for b in unet.down_blocks]
    assert per_level == [[], [2, 2], [10, 10]]
    assert [len(a.transformer_blocks) for a in unet.mid_block.attentions] == [10]
    # attention_head_dim holds head counts: every head is 64 wide.
    heads = [a.transformer_blocks[0].attn1.heads for b in unet.down_blocks[1:] for a in b.attentions[:1]]
    assert heads == [10, 20]
    assert all(c // h == 64 for c, h in zip(ck.SDXL_UNET["block_out_channels"], ck.SDXL_UNET["attention_head_dim"]))
    n = sum(p.numel() for p in unet.parameters())
    assert 2.55e9 < n < 2.6e9  # "2.6 B" (paper: 2.6 B)
    assert "num_attention_heads = num_attention_heads or attention_head_dim" in inspect.getsource(
        UNet2DConditionModel.__init__)


def _record_unet(pipe):
    seen = []
    handle = pipe.unet.register_forward_pre_hook(
        lambda m, a, k: seen.append((float(a[1]), k["added_cond_kwargs"]["time_ids"].clone())), with_kwargs=True)
    return seen, handle


@pytest.mark.parametrize("scheduler,steps,f", [("euler", 10, 0.8), ("euler-karras", 12, 0.75), ("heun", 6, 0.7),
                                               ("heun", 7, 0.8), ("ddim", 9, 0.6)])
def test_handoff_and_time_ids_are_the_pipelines_own(pipes, scheduler, steps, f):
    from diffusers import DDIMScheduler, EulerDiscreteScheduler, HeunDiscreteScheduler

    base, refiner = pipes
    cfg = dict(ck.SDXL_SCHEDULER)
    make = {"euler": lambda: EulerDiscreteScheduler(**cfg),
            "euler-karras": lambda: EulerDiscreteScheduler(**dict(cfg, use_karras_sigmas=True)),
            "heun": lambda: HeunDiscreteScheduler(**{k: v for k, v in cfg.items() if k != "interpolation_type"}),
            "ddim": lambda: DDIMScheduler(**{k: v for k, v in cfg.items() if k not in ("interpolation_type",
                                                                                       "use_karras_sigmas")})}[scheduler]
    base.scheduler, refiner.scheduler = make(), make()
    seen_b, hb = _record_unet(base)
    seen_r, hr = _record_unet(refiner)
    try:
        with torch.no_grad():
            lat = base(prompt=PROMPTS[:1], num_inference_steps=steps, denoising_end=f, output_type="latent",
                       num_images_per_prompt=2, generator=torch.Generator().manual_seed(0)).images
            refiner(prompt=PROMPTS[:1] * 2, image=lat, num_inference_steps=steps, denoising_start=f, output_type="latent",
                    num_images_per_prompt=1, original_size=(512, 768), crops_coords_top_left=(16, 32),
                    aesthetic_score=7.0, negative_aesthetic_score=2.0)
    finally:
        hb.remove()
        hr.remove()
    s = make()
    s.set_timesteps(steps)
    b, r = ref.handoff(s.timesteps, f, 1000, s.order)
    assert [t for t, _ in seen_b] == b.tolist()
    assert [t for t, _ in seen_r] == r.tolist()
    H = base.default_sample_size * base.vae_scale_factor
    torch.testing.assert_close(seen_b[0][1], ref.cfg_time_ids((H, H), (0, 0), (H, H), 2), rtol=0, atol=0)
    torch.testing.assert_close(seen_r[0][1], ref.cfg_time_ids((512, 768), (16, 32), None, 2, 7.0, 2.0), rtol=0, atol=0)


def test_stated_refiner_facts():
    from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

    call = inspect.signature(StableDiffusionXLImg2ImgPipeline.__call__).parameters
    assert call["aesthetic_score"].default == 6.0 and call["negative_aesthetic_score"].default == 2.5
    src = inspect.getsource(StableDiffusionXLImg2ImgPipeline._get_add_time_ids)
    assert "original_size + crops_coords_top_left + (aesthetic_score,)" in src
    # the non-aesthetic branch builds the negative ids with the positive crop (a quirk the lesson names)
    assert "negative_original_size + crops_coords_top_left + negative_target_size" in src
    src = inspect.getsource(StableDiffusionXLImg2ImgPipeline.get_timesteps)
    assert "self.scheduler.order == 2 and num_inference_steps % 2 == 0" in src
    assert "int(\n                round(" in src or "int(round(" in src
    src = inspect.getsource(StableDiffusionXLImg2ImgPipeline.__call__)
    assert "add_noise = True if self.denoising_start is None else False" in src  # the handoff does not re-noise
    src = inspect.getsource(StableDiffusionXLPipeline.__call__)
    assert "ts >= discrete_timestep_cutoff" in src
    assert "torch.cat([negative_add_time_ids, add_time_ids], dim=0)" in src
    assert "original_size + crops_coords_top_left + target_size" in inspect.getsource(
        StableDiffusionXLPipeline._get_add_time_ids)


# ---------------------------------------------------------------- the stand-ins (transformers classes by path)
@pytest.mark.parametrize("name,cls", [("sdxl_text_encoder", "CLIPTextModel"),
                                      ("sdxl_text_encoder_2", "CLIPTextModelWithProjection")])
def test_text_encoder_standins_round_trip_through_from_pretrained(name, cls):
    import transformers

    from grader.weights.resolve import build_standin

    source = build_standin(weights.CHECKPOINTS[name])
    assert source.checkpoint.model_class == f"transformers:{cls}"
    theirs = getattr(transformers, cls).from_pretrained(source.config_path.parent, variant="fp16")
    ours = weights.load_part(name, source=source)[0]
    assert type(ours) is type(theirs)
    a, b = theirs.state_dict(), ours.state_dict()
    assert set(a) == set(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


@pytest.mark.parametrize("part", ["sdxl_text_encoder", "sdxl_text_encoder_2", "sdxl_add_embedding"])
def test_standins_have_no_trivial_parameters(part):
    module, source = weights.load_part(part)
    assert source.kind == "stand-in"
    for name, p in module.named_parameters():
        assert p.std() > 0.05 and not torch.all(p == 1), name


def test_hidden_tests_read_a_real_layout_add_embedding(tmp_path, monkeypatch):
    """A file laid out like the real unet/ (real config, fp16, only add_embedding.*): the hidden tests
    of added_embedding read it (2816 -> 1280, 256 features per number) and pass the solution."""
    import json

    from safetensors.torch import save_file

    from grader.exercises import lesson
    from grader.weights.resolve import reinitialise_
    from grader.cases import hidden_context
    from tests.notebook_code import namespace_with_wrong, solution_namespace

    ck_unet = weights.CHECKPOINTS["sdxl_unet"]
    folder = tmp_path / ck_unet.repo_id / ck_unet.subfolder
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(dict(ck.SDXL_UNET, _class_name="UNet2DConditionModel")))
    from diffusers.models.embeddings import TimestepEmbedding

    emb = TimestepEmbedding(2816, 1280)
    reinitialise_(emb, 3)
    save_file({f"add_embedding.{k}": v.half().contiguous() for k, v in emb.state_dict().items()},
              str(folder / ck_unet.weights_name))
    monkeypatch.setenv("COURSE_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("COURSE_STANDIN_ONLY", "0")
    module, source = weights.get("sdxl_add_embedding")
    assert source.kind == "real" and module.linear_1.in_features == 2816
    ex = lesson("09_sdxl").EXERCISES["added_embedding"]
    message = ex.hidden(solution_namespace("09_sdxl")["added_embedding"], seed=11)
    assert "hidden tests passed" in message and "REAL" in message, message
    cases = list(ex.cases(hidden_context(11, "cpu")))
    assert cases[0].label.endswith("(1280 pooled + 6 numbers x 256) -> 1280")
    wrong = namespace_with_wrong("09_sdxl", "added_embedding", "added_embedding__time_first")
    with pytest.raises(AssertionError, match="before the pooled text"):
        ex.hidden(wrong["added_embedding"], seed=11)

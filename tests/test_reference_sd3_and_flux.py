"""Lesson 11's references agree with diffusers, and every convention the lesson states is true.

The notebook states these facts in prose; this file checks them against the installed
diffusers (0.42.1) and transformers, so an upgrade that changes one fails here first.
"""

import inspect

import pytest
import torch

from grader.reference import sd3_and_flux as ref
from grader.weights import CHECKPOINTS, load_part
from grader.weights.resolve import reinitialise_


def _close(a, b, tol=1e-5):
    assert a.shape == b.shape, (a.shape, b.shape)
    assert ((a - b).norm() / b.norm()).item() < tol


# ---------------------------------------------------------------- SD3 joint attention and block
@pytest.mark.parametrize("heads,head_dim,pre_only,qk", [(2, 8, False, None), (3, 8, False, "rms_norm"),
                                                        (4, 4, True, None), (2, 16, True, "rms_norm")])
def test_joint_block_reference_matches_diffusers(heads, head_dim, pre_only, qk):
    from diffusers.models.attention import JointTransformerBlock

    blk = JointTransformerBlock(heads * head_dim, heads, head_dim, context_pre_only=pre_only, qk_norm=qk)
    reinitialise_(blk, heads)
    x, c, temb = torch.randn(2, 7, heads * head_dim), torch.randn(2, 5, heads * head_dim), torch.randn(2, heads * head_dim)
    with torch.no_grad():
        ec, ex = blk.eval()(x, c, temb)
        gc, gx = ref.joint_block(blk, x, c, temb)
        ax, ac = blk.attn(hidden_states=x, encoder_hidden_states=c)
        rx, rc = ref.joint_attention(blk.attn, x, c)
    _close(gx, ex)
    _close(rx, ax)
    _close(rc, ac)
    if pre_only:
        assert ec is None and gc is None
        assert blk.attn.to_add_out is None and blk.ff_context is None     # no text output, no text MLP
        assert type(blk.norm1_context).__name__ == "AdaLayerNormContinuous"
    else:
        _close(gc, ec)
    if qk == "rms_norm":   # per head: RMSNorm over head_dim, with a learned scale, eps 1e-6
        assert blk.attn.norm_q.weight.shape == (head_dim,) and blk.attn.norm_added_k.eps == 1e-6


def test_sd3_joint_sequence_is_image_then_text():
    from diffusers.models.attention_processor import JointAttnProcessor2_0

    src = inspect.getsource(JointAttnProcessor2_0.__call__)
    assert "torch.cat([query, encoder_hidden_states_query_proj], dim=2)" in src
    assert "hidden_states[:, : residual.shape[1]]" in src


def test_sd3_last_block_is_context_pre_only_and_only_the_last():
    model = load_part("sd3_model")[0]
    flags = [b.context_pre_only for b in model.transformer_blocks]
    assert flags == [False] * (len(flags) - 1) + [True]


def test_ada_layer_norm_continuous_chunks_scale_then_shift_and_ada_zero_shift_scale_gate():
    from diffusers.models.normalization import AdaLayerNormContinuous, AdaLayerNormZero

    D = 4
    cont = AdaLayerNormContinuous(D, D, elementwise_affine=False, eps=1e-6)
    with torch.no_grad():
        cont.linear.weight.zero_()
        cont.linear.bias.copy_(torch.cat([torch.full((D,), 2.0), torch.full((D,), 5.0)]))  # first chunk 2, second 5
    x = torch.randn(1, 3, D)
    out = cont(x, torch.zeros(1, D))
    normed = torch.nn.functional.layer_norm(x, (D,), eps=1e-6)
    torch.testing.assert_close(out, normed * 3.0 + 5.0)                  # (1 + scale=2), shift=5: scale first
    zero = AdaLayerNormZero(D)
    with torch.no_grad():
        zero.linear.weight.zero_()
        zero.linear.bias.copy_(torch.arange(6.0).repeat_interleave(D))
    nx, gate_msa, shift_mlp, scale_mlp, gate_mlp = zero(x, emb=torch.zeros(1, D))
    torch.testing.assert_close(nx, normed * 2.0 + 0.0)                   # shift 0, scale 1
    assert [gate_msa[0, 0].item(), shift_mlp[0, 0].item(), scale_mlp[0, 0].item(), gate_mlp[0, 0].item()] == [2, 3, 4, 5]


def test_ref_blocks_inside_sd3_model_reproduce_it():
    import types

    model = load_part("sd3_model")[0]
    x, c, pooled = torch.randn(2, 4, 6, 8), torch.randn(2, 7, 32), torch.randn(2, 64)
    t = torch.tensor([10.0, 900.0])
    with torch.no_grad():
        expected = model(hidden_states=x, encoder_hidden_states=c, pooled_projections=pooled, timestep=t).sample
        for blk in model.transformer_blocks:
            blk.forward = types.MethodType(lambda s, hidden_states, encoder_hidden_states, temb, **_:
                                           ref.joint_block(s, hidden_states, encoder_hidden_states, temb), blk)
        got = model(hidden_states=x, encoder_hidden_states=c, pooled_projections=pooled, timestep=t).sample
    _close(got, expected)


# ---------------------------------------------------------------- SD3 text conditioning
def test_sd3_text_embeds_is_encode_prompt_with_three_standin_encoders():
    from grader.checkpoints.sd3_and_flux import standin_sd3_pipeline

    pipe = standin_sd3_pipeline()
    assert type(pipe.text_encoder).__name__ == type(pipe.text_encoder_2).__name__ == "CLIPTextModelWithProjection"
    assert type(pipe.text_encoder_3).__name__ == "T5EncoderModel"
    prompt = ["a cat", "two dogs on a sofa"]
    with torch.no_grad():
        embeds, _, pooled, _ = pipe.encode_prompt(prompt, None, None, device=torch.device("cpu"),
                                                  do_classifier_free_guidance=False)
        states = []
        for enc, tok in ((pipe.text_encoder, pipe.tokenizer), (pipe.text_encoder_2, pipe.tokenizer_2)):
            out = enc(tok(prompt, max_length=77, truncation=True).input_ids, output_hidden_states=True)
            states += [out.hidden_states[-2], out.text_embeds]            # penultimate; projected pooled
        t5 = pipe.text_encoder_3(pipe.tokenizer_3(prompt, max_length=256, truncation=True).input_ids)[0]
    got, got_pooled = ref.sd3_text_embeds(states[0], states[1], states[2], states[3], t5)
    assert embeds.shape == (2, 77 + 256, 32) and pooled.shape == (2, 8 + 12)
    torch.testing.assert_close(got, embeds, rtol=0, atol=0)
    torch.testing.assert_close(got_pooled, pooled, rtol=0, atol=0)
    assert (embeds[:, :77, 20:] == 0).all()                             # CLIP features zero-padded on the right


def test_sd3_real_widths_give_333_tokens_and_pooled_2048():
    B = 1
    e, p = ref.sd3_text_embeds(torch.randn(B, 77, 768), torch.randn(B, 768), torch.randn(B, 77, 1280),
                               torch.randn(B, 1280), torch.randn(B, 256, 4096))
    assert e.shape == (1, 333, 4096) and p.shape == (1, 2048)
    cfg = CHECKPOINTS["sd35_large"].real_config
    assert cfg["pooled_projection_dim"] == 2048 and cfg["joint_attention_dim"] == 4096 and cfg["in_channels"] == 16
    assert cfg["caption_projection_dim"] == cfg["num_attention_heads"] * cfg["attention_head_dim"]
    sig = inspect.signature(__import__("diffusers").StableDiffusion3Pipeline.encode_prompt).parameters
    assert sig["max_sequence_length"].default == 256


# ---------------------------------------------------------------- Flux packing, ids, RoPE
@pytest.mark.parametrize("shape", [(1, 4, 4, 6), (2, 16, 8, 12), (3, 3, 6, 2)])
def test_pack_latents_matches_the_flux_pipeline(shape):
    from diffusers.pipelines.flux.pipeline_flux import FluxPipeline

    B, C, H, W = shape
    lat = torch.randn(*shape)
    packed, ids = ref.pack_latents(lat)
    torch.testing.assert_close(packed, FluxPipeline._pack_latents(lat, B, C, H, W), rtol=0, atol=0)
    torch.testing.assert_close(ids, FluxPipeline._prepare_latent_image_ids(B, H // 2, W // 2, "cpu", torch.float32))
    torch.testing.assert_close(FluxPipeline._unpack_latents(packed, H * 8, W * 8, 8), lat, rtol=0, atol=0)
    torch.testing.assert_close(ref.unpack_latents(packed, H, W), lat, rtol=0, atol=0)


@pytest.mark.parametrize("axes,theta", [((4, 4, 8), 10000.0), ((16, 56, 56), 10000.0), ((2, 6, 8), 256.0)])
def test_rope_matches_flux_pos_embed_and_apply_rotary_emb(axes, theta):
    from diffusers.models.embeddings import apply_rotary_emb
    from diffusers.models.transformers.transformer_flux import FluxPosEmbed

    ids = torch.cat([torch.zeros(3, 3), ref.pack_latents(torch.randn(1, 1, 6, 8))[1]])
    cos, sin = FluxPosEmbed(theta=theta, axes_dim=list(axes))(ids)
    rc, rs = ref.rope_freqs(ids, axes, theta)
    torch.testing.assert_close(rc, cos, rtol=0, atol=0)
    torch.testing.assert_close(rs, sin, rtol=0, atol=0)
    assert torch.equal(cos[:, 0::2], cos[:, 1::2])                      # interleaved pairs: each angle twice
    x = torch.randn(2, ids.shape[0], 3, sum(axes))
    torch.testing.assert_close(ref.flux_rope(x, ids, axes, theta), apply_rotary_emb(x, (cos, sin), sequence_dim=1))


def test_rope_scores_depend_only_on_the_offset():
    axes = (4, 6, 6)
    q, k = torch.randn(1, 1, 1, 16).double(), torch.randn(1, 1, 1, 16).double()

    def score(pq, pk):
        ids = torch.tensor([[0.0, *pq], [0.0, *pk]])
        cq, sq = ref.rope_freqs(ids, axes)
        rq = ref.apply_rope(q.expand(1, 2, 1, 16).float(), cq, sq)[0, 0, 0]
        rk = ref.apply_rope(k.expand(1, 2, 1, 16).float(), cq, sq)[0, 1, 0]
        return (rq * rk).sum().item()

    assert abs(score((1, 2), (3, 5)) - score((4, 4), (6, 7))) < 1e-5
    assert abs(score((0, 0), (0, 0)) - (q * k).sum().item()) < 1e-5     # zero ids (text): no rotation


def test_flux_defaults_and_conventions_in_the_source():
    from diffusers import FluxTransformer2DModel
    from diffusers.models.transformers import transformer_flux

    params = inspect.signature(FluxTransformer2DModel.__init__).parameters
    assert params["num_layers"].default == 19 and params["num_single_layers"].default == 38
    assert tuple(params["axes_dims_rope"].default) == (16, 56, 56) and params["in_channels"].default == 64
    assert sum(params["axes_dims_rope"].default) == params["attention_head_dim"].default == 128
    model_src = inspect.getsource(FluxTransformer2DModel.__init__)
    assert "FluxPosEmbed(theta=10000" in model_src
    fwd = inspect.getsource(FluxTransformer2DModel.forward)
    assert "timestep.to(hidden_states.dtype) * 1000" in fwd and "torch.cat((txt_ids, img_ids), dim=0)" in fwd
    proc = inspect.getsource(transformer_flux.FluxAttnProcessor.__call__)
    cat, rope = proc.index("torch.cat([encoder_query, query], dim=1)"), proc.index("apply_rotary_emb(query")
    assert cat < rope                                                    # [text; image], RoPE after the concatenation
    single = inspect.getsource(transformer_flux.FluxSingleTransformerBlock.forward)
    assert "torch.cat([encoder_hidden_states, hidden_states], dim=1)" in single
    assert transformer_flux.FluxSingleTransformerBlock(32, 2, 16).attn.norm_q.eps == 1e-6


@pytest.mark.parametrize("heads,head_dim,axes", [(2, 16, (4, 4, 8)), (3, 8, (2, 2, 4))])
def test_flux_block_references_match_diffusers(heads, head_dim, axes):
    from diffusers.models.transformers.transformer_flux import (FluxPosEmbed, FluxSingleTransformerBlock,
                                                                FluxTransformerBlock)

    D = heads * head_dim
    ids = torch.cat([torch.zeros(4, 3), ref.pack_latents(torch.randn(1, 1, 4, 6))[1]])
    rot = FluxPosEmbed(10000, list(axes))(ids)
    x, c, temb = torch.randn(2, 6, D), torch.randn(2, 4, D), torch.randn(2, D)
    for cls, fn in ((FluxTransformerBlock, ref.flux_double_block), (FluxSingleTransformerBlock, ref.flux_single_block)):
        blk = cls(D, heads, head_dim)
        reinitialise_(blk, heads)
        with torch.no_grad():
            ec, ex = blk.eval()(x, c, temb, rot)
            gc, gx = fn(blk, x, c, temb, rot)
        _close(gc, ec)
        _close(gx, ex)


def test_ref_blocks_inside_flux_model_reproduce_it():
    import types

    model = load_part("flux_model")[0]
    lat = torch.randn(1, 4, 6, 8)
    packed, img_ids = ref.pack_latents(lat)
    c, pooled, txt_ids = torch.randn(1, 5, 32), torch.randn(1, 32), torch.zeros(5, 3)
    kw = dict(hidden_states=packed, encoder_hidden_states=c, pooled_projections=pooled, timestep=torch.tensor([0.7]),
              img_ids=img_ids, txt_ids=txt_ids)
    with torch.no_grad():
        expected = model(**kw).sample
        for blocks, fn in ((model.transformer_blocks, ref.flux_double_block),
                           (model.single_transformer_blocks, ref.flux_single_block)):
            for blk in blocks:
                blk.forward = types.MethodType(
                    lambda s, hidden_states, encoder_hidden_states, temb, image_rotary_emb=None, fn=fn, **_:
                    fn(s, hidden_states, encoder_hidden_states, temb, image_rotary_emb), blk)
        got = model(**kw).sample
    _close(got, expected)


# ---------------------------------------------------------------- checkpoints
def test_real_flux_double_block_is_about_650_mb_in_bf16():
    from grader.weights import build_random

    with torch.device("meta"):
        from grader.checkpoints.sd3_and_flux import _build_flux_double

        blk = _build_flux_double(CHECKPOINTS["flux_schnell"].real_config)
    mb = sum(p.numel() for p in blk.parameters()) * 2 / 1e6
    assert 600 < mb < 700, mb
    assert callable(build_random)


@pytest.mark.parametrize("part", ["sd3_block", "flux_double_block", "flux_single_block", "sd3_model", "flux_model"])
def test_standins_have_no_trivial_parameters(part):
    module = load_part(part)[0]
    for name, p in module.named_parameters():
        assert p.std() > 0.05, name                                      # not constant (zeros or ones)
        assert (p != 0).all() or p.numel() > 10, name


def test_sd3_class_defaults_are_no_released_checkpoint_and_flux_pools_clip_pooler_output():
    from diffusers import SD3Transformer2DModel
    from diffusers.pipelines.flux import pipeline_flux

    defaults = {k: v.default for k, v in inspect.signature(SD3Transformer2DModel.__init__).parameters.items()}
    assert (defaults["num_layers"], defaults["num_attention_heads"], defaults["qk_norm"],
            defaults["pos_embed_max_size"]) == (18, 18, None, 96)
    real = CHECKPOINTS["sd35_large"].real_config
    assert (real["num_layers"], real["num_attention_heads"], real["qk_norm"], real["pos_embed_max_size"]) == \
        (38, 38, "rms_norm", 192)
    src = inspect.getsource(pipeline_flux.FluxPipeline._get_clip_prompt_embeds)
    assert "prompt_embeds.pooler_output" in src
    assert inspect.signature(pipeline_flux.FluxPipeline.__call__).parameters["max_sequence_length"].default == 512


def test_standin_text_encoders_are_saved_loaded_and_non_trivial(tmp_path, monkeypatch):
    from grader.checkpoints.sd3_and_flux import _build_text_encoders, standin_sd3_text_encoders

    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    parts = standin_sd3_text_encoders()
    folder = next((tmp_path / "standins").glob("sd3-text-encoders-*"))
    assert {p.name for p in folder.iterdir()} == {"text_encoder", "text_encoder_2", "text_encoder_3"}
    fresh = _build_text_encoders(0, 77)
    for name in ("text_encoder", "text_encoder_2", "text_encoder_3"):
        loaded, built = parts[name].state_dict(), fresh[name].state_dict()
        assert loaded.keys() == built.keys()
        assert all(torch.equal(loaded[k], built[k]) for k in loaded)      # deterministic, round-trips
        for k, p in parts[name].named_parameters():
            assert p.std() > 0.05, f"{name}.{k}"
    assert parts["text_encoder"].config.hidden_size == 8 and parts["text_encoder_2"].config.projection_dim == 12


def test_one_flux_block_is_read_through_the_shard_index_alone(tmp_path, monkeypatch):
    """The real FLUX.1 transformer is ~24 GB of shards: a double block must open only its own shards."""
    import json

    import grader.weights.load as load_module
    from diffusers import FluxTransformer2DModel
    from grader.weights import resolve

    ck = CHECKPOINTS["flux_schnell"]
    model = FluxTransformer2DModel(**ck.standin_config)
    reinitialise_(model, 5)
    folder = tmp_path / ck.repo_id / ck.subfolder                       # `hf download --local-dir` layout
    model.save_pretrained(folder, max_shard_size="40KB", safe_serialization=True)
    weight_map = json.loads((folder / ck.index_name).read_text())["weight_map"]
    shards = set(weight_map.values())
    wanted = {f for k, f in weight_map.items() if k.startswith("transformer_blocks.0.")}
    assert len(shards) > len(wanted) >= 1

    monkeypatch.delenv("COURSE_STANDIN_ONLY", raising=False)
    opened = []
    real_open = load_module.safe_open
    monkeypatch.setattr(load_module, "safe_open", lambda path, **kw: opened.append(path) or real_open(path, **kw))
    source = resolve("flux_schnell", weights_dir=tmp_path)
    block, _ = load_part("flux_double_block", source=source)
    assert source.kind == "real" and source.index_path is not None
    assert {p.rsplit("/", 1)[-1] for p in opened} == wanted
    expected = {k[len("transformer_blocks.0."):]: v for k, v in model.state_dict().items()
                if k.startswith("transformer_blocks.0.")}
    for k, v in block.state_dict().items():
        torch.testing.assert_close(v, expected[k], rtol=0, atol=0)


def test_standin_text_encoders_work_from_a_read_only_cache(tmp_path, monkeypatch):
    """The grading sandbox's filesystem is read-only and the grader prebuilds only CHECKPOINTS:
    the text encoders are then built in memory, identical to the saved ones."""
    import tempfile

    from grader.checkpoints.sd3_and_flux import standin_sd3_text_encoders

    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "saved"))
    saved = standin_sd3_text_encoders()

    def read_only(*a, **k):
        raise PermissionError("read-only file system")

    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "ro"))
    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    in_memory = standin_sd3_text_encoders()
    assert not (tmp_path / "ro" / "standins").exists() or not any((tmp_path / "ro" / "standins").iterdir())
    for name in ("text_encoder", "text_encoder_2", "text_encoder_3"):
        a, b = saved[name].state_dict(), in_memory[name].state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("part", ["sd3_model", "flux_model"])
def test_plug_in_models_from_a_read_only_cache_equal_the_saved_standins(part, tmp_path, monkeypatch):
    from grader.cases import public_context
    from grader.exercises.sd3_and_flux import _standin_model
    from grader.weights import load as load_module

    saved = _standin_model(public_context(), part)

    def read_only(*a, **k):
        raise OSError(30, "Read-only file system")

    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "ro"))
    monkeypatch.setattr(load_module, "load_part", read_only)
    load_module._cached.cache_clear()
    ctx = public_context()
    in_memory = _standin_model(ctx, part)
    load_module._cached.cache_clear()
    assert ctx.sources == []                                             # the in-memory path ran
    a, b = saved.state_dict(), in_memory.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

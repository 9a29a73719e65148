"""Lesson 12's references agree with diffusers, and every convention the lesson states is true.

Each fact the notebook states in prose is checked here against the installed diffusers (or,
for Decoupled-DMD, which diffusers does not have, against closed forms).
"""

import inspect

import pytest
import torch

from grader.reference import z_image as ref
from grader.weights import CHECKPOINTS, load_part


@pytest.fixture(scope="module")
def model():
    return load_part("z_image_model")[0]


def _unified_inputs(model, cap_lens=(5, 40), grid=(4, 6), seed=0):
    """Inputs of the main layers, captured from the model's own forward on a batch with padding."""
    g = torch.Generator().manual_seed(seed)
    H, W = grid
    x = [torch.randn(16, 1, 2 * H, 2 * W, generator=g) for _ in cap_lens]
    caps = [torch.randn(n, model.config.cap_feat_dim, generator=g) for n in cap_lens]
    t = torch.rand(len(cap_lens), generator=g)
    captured = {}

    def hook(mod, args, kwargs):
        captured.setdefault("args", args)

    h = model.layers[0].register_forward_pre_hook(hook, with_kwargs=True)
    with torch.no_grad():
        out = model(x, t, caps, return_dict=False)[0]
    h.remove()
    return captured["args"][:4], out, (x, t, caps)


# ---------------------------------------------------------------- config facts
def test_real_config_is_diffusers_default_and_head_dim_is_the_sum_of_the_rope_axes():
    from diffusers import ZImageTransformer2DModel

    sig = inspect.signature(ZImageTransformer2DModel.__init__).parameters
    real = CHECKPOINTS["z_image"].real_config
    for key in ("dim", "n_layers", "n_refiner_layers", "n_heads", "cap_feat_dim", "rope_theta", "axes_dims",
                "axes_lens", "t_scale", "in_channels"):
        assert list(sig[key].default) == list(real[key]) if isinstance(real[key], list) else sig[key].default == real[key]
    assert real["dim"] // real["n_heads"] == sum(real["axes_dims"]) == 128
    s = CHECKPOINTS["z_image"].standin_config
    assert s["dim"] // s["n_heads"] == sum(s["axes_dims"]) and s["n_heads"] > 1


def test_standin_parameters_are_all_non_trivial(model):
    assert model.x_pad_token.abs().min() > 0 and model.cap_pad_token.abs().min() > 0
    for name, p in model.named_parameters():
        assert p.std() > 0.05 or p.numel() == 1, name
    block = model.layers[0]
    assert block.adaLN_modulation[0].out_features == 4 * model.config.dim       # 4 chunks: no shift
    assert block.feed_forward.w1.out_features == int(model.config.dim / 3 * 8)   # SwiGLU width 8/3 D
    assert not model.context_refiner[0].modulation and model.noise_refiner[0].modulation


def test_real_model_size_from_its_config():
    from diffusers import ZImageTransformer2DModel

    with torch.device("meta"):
        m = ZImageTransformer2DModel(**CHECKPOINTS["z_image"].real_config)
    n = sum(p.numel() for p in m.parameters())
    assert 6.0e9 < n < 6.3e9, n   # the lesson says "about 6.2 B parameters, 12.3 GB in bf16"


# ---------------------------------------------------------------- 1-2. position ids and RoPE
@pytest.mark.parametrize("cap_len,fhw", [(5, (1, 4, 6)), (32, (1, 3, 3)), (40, (2, 4, 5)), (1, (1, 8, 4))])
def test_position_ids_are_the_models(model, cap_len, fhw):
    F_, H, W = fhw
    out = model.patchify_and_embed([torch.randn(16, F_, 2 * H, 2 * W)], [torch.randn(cap_len, 16)], 2, 1)
    img_ids, cap_ids = out[3][0], out[4][0]
    c, i = ref.position_ids(cap_len, F_, H, W)
    # the model keeps extra (0, 0, 0) ids after a padded caption and cuts them to the feature length
    assert torch.equal(cap_ids[: len(c)].long(), c)
    assert len(out[1][0]) == len(c) == ref.padded(cap_len)
    assert torch.equal(img_ids.long(), i)
    assert c[0].tolist() == [1, 0, 0] and i[0].tolist() == [len(c) + 1, 0, 0]


@pytest.mark.parametrize("axes,theta", [([8, 4, 4], 256.0), ([32, 48, 48], 256.0), ([4, 8, 4], 10000.0)])
def test_rope_freqs_and_rotation_are_the_models(axes, theta):
    from diffusers.models.transformers.transformer_z_image import RopeEmbedder, ZSingleStreamAttnProcessor

    emb = RopeEmbedder(theta=theta, axes_dims=axes, axes_lens=[1024, 512, 512])
    ids = torch.cat(ref.position_ids(7, 1, 5, 3))
    fc = emb(ids)
    assert (fc - ref.rope_freqs_cis(ids, axes, theta)).abs().max() < 1e-6
    # the processor's rotation, as it rotates q and k: interleaved pairs, view_as_complex
    x = torch.randn(1, len(ids), 2, sum(axes))
    src = inspect.getsource(ZSingleStreamAttnProcessor.__call__)
    assert "view_as_complex(x_in.float().reshape(*x_in.shape[:-1], -1, 2))" in src
    assert "x_out.type_as(x_in)" in src                            # bf16 in, bf16 out (the exercise's contract)
    assert ref.apply_rope_3d(x.bfloat16(), ids[None], axes, theta).dtype == torch.bfloat16
    xc = torch.view_as_complex(x.reshape(*x.shape[:-1], -1, 2))
    expected = torch.view_as_real(xc * fc[None, :, None]).flatten(3)
    torch.testing.assert_close(ref.rotate(x, fc[None]), expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ref.apply_rope_3d(x, ids[None], axes, theta), expected, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- 3. the block
def test_s3dit_block_is_the_models_block_with_padding_mask(model):
    (x, mask, freqs, adaln), _, _ = _unified_inputs(model)
    assert mask is not None and not mask.all()         # two captions of different length: padded batch
    for block in model.layers:
        with torch.no_grad():
            torch.testing.assert_close(ref.s3dit_block(block, x, mask, freqs, adaln),
                                       block(x, mask, freqs, adaln), rtol=1e-5, atol=1e-5)


def test_unified_sequence_is_image_then_caption(model):
    (x, mask, freqs, adaln), _, (xs, t, caps) = _unified_inputs(model, cap_lens=(5,), grid=(4, 4))
    # one item: 16 image tokens (padded to 32), then the caption (padded to 32)
    c, i = ref.position_ids(5, 1, 4, 4)
    expected = ref.rope_freqs_cis(torch.cat([i, c]), model.config.axes_dims, model.config.rope_theta)
    assert (freqs[0] - expected).abs().max() < 1e-6


def test_refiner_block_without_modulation(model):
    block = model.context_refiner[0]
    x = torch.randn(2, 32, model.config.dim)
    ids = ref.position_ids(20, 1, 1, 1)[0]
    freqs = ref.rope_freqs_cis(ids, model.config.axes_dims, 256.0)[None].expand(2, -1, -1)
    mask = torch.ones(2, 32, dtype=torch.bool)
    mask[1, 20:] = False
    with torch.no_grad():
        torch.testing.assert_close(ref.s3dit_block(block, x, mask, freqs), block(x, mask, freqs), rtol=1e-5, atol=1e-5)


def test_block_forward_facts():
    from diffusers.models.transformers.transformer_z_image import ZImageTransformerBlock

    src = inspect.getsource(ZImageTransformerBlock.forward)
    assert "scale_msa, gate_msa, scale_mlp, gate_mlp = mod.unsqueeze(1).chunk(4, dim=2)" in src
    assert "gate_msa.tanh()" in src and "1.0 + scale_msa" in src
    assert "x = x + gate_msa * self.attention_norm2(attn_out)" in src
    assert "SiLU" not in inspect.getsource(ZImageTransformerBlock.__init__)   # no SiLU before adaLN_modulation


# ---------------------------------------------------------------- 4. Qwen3 prompt embeddings
def test_qwen_tokenizer_pads_on_the_right_by_default():
    from transformers import Qwen2Tokenizer

    assert Qwen2Tokenizer.padding_side == "right"


def test_prompt_embeds_are_the_pipelines():
    from diffusers import ZImagePipeline

    te = load_part("z_image_text_encoder")[0]

    class Tok:  # a stand-in tokenizer: the pipeline's call with fixed ids (right padding, as Qwen's)
        def apply_chat_template(self, messages, **kw):
            assert kw == {"tokenize": False, "add_generation_prompt": True, "enable_thinking": True}
            return messages[0]["content"]

        def __call__(self, prompts, **kw):
            ids = torch.tensor([[3, 5, 7, 9, 11, 0, 0], [4, 6, 8, 10, 12, 14, 16]])
            mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0], [1] * 7])
            return type("T", (), {"input_ids": ids, "attention_mask": mask})()

    pipe = ZImagePipeline(scheduler=None, vae=None, text_encoder=te, tokenizer=Tok(), transformer=None)
    with torch.no_grad():
        got = pipe._encode_prompt(["a", "b"], device=torch.device("cpu"))
        ids = torch.tensor([[3, 5, 7, 9, 11, 0, 0], [4, 6, 8, 10, 12, 14, 16]])
        mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0], [1] * 7])
        expected = ref.prompt_embeds(te, ids, mask)
        # hidden_states[-1] is the final-normed output; [-2] is the second-to-last layer's raw output
        out = te(input_ids=ids, attention_mask=mask.bool(), output_hidden_states=True)
        assert len(out.hidden_states) == te.config.num_hidden_layers + 1
        torch.testing.assert_close(out.hidden_states[-1], out.last_hidden_state)
    assert [g.shape[0] for g in got] == [5, 7]
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e)


# ---------------------------------------------------------------- 5. one pipeline step
@pytest.mark.parametrize("scale,sigmas", [(0.0, [1.0, 0.625, 0.25]), (4.0, [0.875, 0.5, 0.125]), (1.5, [0.75, 0.375])])
def test_step_is_the_pipelines(model, scale, sigmas):
    from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline

    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
    pipe = ZImagePipeline(scheduler=sched, vae=None, text_encoder=None, tokenizer=None, transformer=model)
    pipe.set_progress_bar_config(disable=True)
    g = torch.Generator().manual_seed(1)
    lat = torch.randn(2, 16, 8, 12, generator=g)
    pos = [torch.randn(5, 16, generator=g), torch.randn(9, 16, generator=g)]
    neg = [torch.randn(3, 16, generator=g), torch.randn(4, 16, generator=g)]
    seen = []
    pipe(prompt_embeds=pos, negative_prompt_embeds=neg, latents=lat.clone(), sigmas=sigmas, guidance_scale=scale,
         height=64, width=96, output_type="latent", num_inference_steps=len(sigmas),
         callback_on_step_end=lambda p, i, t, kw: seen.append(kw["latents"].clone()) or {})
    assert torch.allclose(sched.sigmas[:-1], torch.tensor(sigmas))     # shift 1: the sigmas pass unchanged
    x = lat
    full = sigmas + [0.0]
    with torch.no_grad():
        for k in range(len(sigmas)):
            x = ref.zimage_step(model, x, full[k], full[k + 1], pos, neg, scale)
            torch.testing.assert_close(x, seen[k], rtol=1e-5, atol=1e-5)


def test_model_time_is_sensitive_at_the_ulp_level(model):
    """Why the step's cases use dyadic sigmas: one float32 ulp of the model's time moves the stand-in's output ~1e-4."""
    from grader.compare import errors

    lat = [torch.randn(16, 1, 8, 8)]
    cap = [torch.randn(5, 16)]
    with torch.no_grad():
        a = model(lat, torch.tensor([0.9]), cap, return_dict=False)[0][0]
        b = model(lat, torch.tensor([0.9]).nextafter(torch.tensor([1.0])), cap, return_dict=False)[0][0]
    assert errors(b, a)[0] > 1e-5


def test_pipeline_facts():
    from diffusers.pipelines.z_image import pipeline_z_image as pz

    src = inspect.getsource(pz.ZImagePipeline.__call__)
    assert "timestep = (1000 - timestep) / 1000" in src
    assert "pred = pos + current_guidance_scale * (pos - neg)" in src
    assert "noise_pred = -noise_pred" in src
    assert "return self._guidance_scale > 0" in inspect.getsource(pz.ZImagePipeline)
    assert inspect.signature(pz.ZImagePipeline.__call__).parameters["guidance_scale"].default == 5.0
    enc = inspect.getsource(pz.ZImagePipeline._encode_prompt)
    assert "enable_thinking=True" in enc and ".hidden_states[-2]" in enc


# ---------------------------------------------------------------- 6. Decoupled-DMD
def _mix(seed=0, K=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(K, 2, generator=g) * 2, 0.3 + torch.rand(K, generator=g), torch.softmax(torch.randn(K, generator=g), 0)


def test_mixture_score_is_the_lesson4_score_of_the_noised_mixture():
    from grader.reference.score_functions_and_sdes import gmm_score

    means, stds, w = _mix()
    x = torch.randn(6, 2, dtype=torch.float64)
    for t in (0.0, 0.3, 0.9):
        tt = torch.full((6,), t)
        expected = gmm_score(x, (1 - t) * means, torch.sqrt((1 - t) ** 2 * stds ** 2 + t ** 2), w)
        torch.testing.assert_close(ref.mixture_score(x, tt, means, stds, w), expected, rtol=1e-6, atol=1e-6)


def _scores():
    cond, unc, fake = _mix(1, 2), _mix(2, 4), _mix(3, 3)
    f = lambda m: (lambda x, t: ref.mixture_score(x, t, *m))  # noqa: E731
    return f(fake), f(cond), f(unc)


def test_decoupled_dmd_analytic_properties():
    fake, cond, unc = _scores()
    g = torch.Generator().manual_seed(5)
    x0, eps = torch.randn(8, 2, generator=g, dtype=torch.float64), torch.randn(8, 2, generator=g, dtype=torch.float64)
    t1, t2 = torch.rand(8, generator=g), torch.rand(8, generator=g)
    # equal noise levels: plain DMD with a CFG teacher, s_fake - (s_u + w (s_c - s_u))
    torch.testing.assert_close(ref.decoupled_dmd_grad(x0, eps, t1, t1, 4.0, fake, cond, unc),
                               ref.dmd_grad_cfg_teacher(x0, eps, t1, 4.0, fake, cond, unc))
    # w = 1: the CFG-augmentation term vanishes, whatever its noise level
    torch.testing.assert_close(ref.decoupled_dmd_grad(x0, eps, t1, t2, 1.0, fake, cond, unc),
                               fake(ref.renoise(x0, eps, t1), t1) - cond(ref.renoise(x0, eps, t1), t1))
    # a generator that already matches the conditional distribution: only the CA term is left
    only_ca = ref.decoupled_dmd_grad(x0, eps, t1, t2, 3.0, cond, cond, unc)
    xc = ref.renoise(x0, eps, t2)
    torch.testing.assert_close(only_ca, -2.0 * (cond(xc, t2) - unc(xc, t2)))


def test_dmd_descent_on_a_gaussian_moves_toward_the_guided_mean():
    # one Gaussian each: the DM term pulls the generator's mean onto the conditional mean
    real = (torch.tensor([[2.0, -1.0]]), torch.tensor([0.5]), torch.tensor([1.0]))
    fake = (torch.tensor([[0.0, 0.0]]), torch.tensor([0.5]), torch.tensor([1.0]))
    s = lambda m: (lambda x, t: ref.mixture_score(x, t, *m))  # noqa: E731
    x0 = torch.zeros(1, 2, dtype=torch.float64)
    t = torch.tensor([0.5])
    g = ref.decoupled_dmd_grad(x0, torch.zeros(1, 2, dtype=torch.float64), t, t, 1.0, s(fake), s(real), s(real))
    assert torch.dot(-g[0], torch.tensor([2.0, -1.0], dtype=torch.float64)) > 0


def test_exercise_score_inputs_are_the_reference_mixture_score():
    # the exercise module builds its score inputs itself (cases never call the reference): keep them equal
    from grader.exercises.z_image import ExactScore

    means, stds, w = _mix(4, 3)
    x, t = torch.randn(7, 2), torch.rand(7)
    torch.testing.assert_close(ExactScore(means, stds, w)(x, t), ref.mixture_score(x, t, means, stds, w))


def test_one_block_loads_through_a_shard_index(tmp_path, model, monkeypatch):
    """The real checkpoint's layout (sharded, with index), built locally: only block 0's tensors are read."""
    from grader.weights import resolve

    ck = CHECKPOINTS["z_image"]
    folder = tmp_path / ck.repo_id / ck.subfolder
    model.save_pretrained(folder, safe_serialization=True, max_shard_size="20KB")
    assert (folder / ck.index_name).is_file() and len(list(folder.glob("*.safetensors"))) > 1
    monkeypatch.delenv("COURSE_STANDIN_ONLY", raising=False)
    source = resolve("z_image", weights_dir=tmp_path)
    assert source.kind == "real" and source.index_path is not None
    for part, module in (("z_image_block", model.layers[0]), ("z_image_refiner_block", model.context_refiner[0])):
        got = load_part(part, source=source)[0].state_dict()
        for k, v in module.state_dict().items():
            torch.testing.assert_close(got[k], v, rtol=0, atol=0, msg=k)

"""Lesson 10 (Diffusion Transformers): public checks and hidden tests for every exercise.

Public checks: fixed small inputs on the CPU. Hidden tests: a seed drawn at grading time,
shapes the public checks do not use (non-square grids, batch > 1, other patch sizes),
the real DiT-XL/2 weights when present, and the GPU when there is one.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from .. import weights
from ..compare import ComparisonError, assert_close
from ..exercise import call
from ..reference import diffusion_transformers as ref
from ..weights.resolve import reinitialise_
from ..runtime import generator, randn
from . import build, device_for, passed, seed_for

LESSON = "10_diffusion_transformers"

_D = "diffusers.models"
FORBID_PATCHIFY = (f"{_D}.embeddings.PatchEmbed.forward", "torch.nn.Conv2d.forward",
                   "torch.nn.functional.conv2d", "torch.conv2d")
FORBID_POS = (f"{_D}.embeddings.get_2d_sincos_pos_embed", f"{_D}.embeddings.get_2d_sincos_pos_embed_from_grid",
              f"{_D}.embeddings.get_1d_sincos_pos_embed_from_grid")
FORBID_TIME = (f"{_D}.embeddings.get_timestep_embedding", f"{_D}.embeddings.Timesteps.forward")
FORBID_ADALN = (f"{_D}.normalization.AdaLayerNormZero.forward",)
FORBID_ATTN = (f"{_D}.attention_processor.Attention.forward", f"{_D}.attention_processor.AttnProcessor2_0.__call__",
               f"{_D}.attention_processor.AttnProcessor.__call__", "torch.nn.MultiheadAttention.forward")
FORBID_BLOCK = (FORBID_ADALN + FORBID_ATTN + FORBID_TIME + (
    f"{_D}.attention.BasicTransformerBlock.forward", f"{_D}.attention.FeedForward.forward",
    f"{_D}.activations.GELU.forward", f"{_D}.embeddings.CombinedTimestepLabelEmbeddings.forward",
    f"{_D}.embeddings.TimestepEmbedding.forward", f"{_D}.embeddings.LabelEmbedding.forward"))
FORBID_MODEL = FORBID_BLOCK + FORBID_POS + (
    f"{_D}.transformers.dit_transformer_2d.DiTTransformer2DModel.forward", f"{_D}.embeddings.PatchEmbed.forward")


# ---------------------------------------------------------------- 1. patchify
def _check_patchify(fn, hidden: bool) -> str:
    dev, seed = device_for(hidden), seed_for(hidden)
    embed, source = weights.get("dit_patch_embed", dev)
    w, b = embed.proj.weight.detach(), embed.proj.bias.detach()
    if hidden:
        cases = [((2, 4, 6, 10), w, b),
                 ((3, 3, 8, 12), randn(24, 3, 4, 4, seed=seed + 1, dev=dev, scale=0.2), randn(24, seed=seed + 2, dev=dev)),
                 ((1, 5, 3, 2), randn(7, 5, 1, 1, seed=seed + 3, dev=dev), randn(7, seed=seed + 4, dev=dev))]
    else:
        cases = [((1, 4, 8, 8), w, b)]
    for i, (shape, wt, bs) in enumerate(cases):
        x = randn(*shape, seed=seed + 10 + i, dev=dev)
        expected = ref.patchify(x, wt, bs)
        B, _, H, W = shape
        p = wt.shape[-1]
        label = f"x {shape}, patch size {p}"
        got = call(fn, "patchify", x, wt, bs, forbidden=FORBID_PATCHIFY, case=label)
        grid = expected.reshape(B, H // p, W // p, -1)
        assert_close(got, expected, name=f"patchify on {label}", variants={
            "the tokens in column-major order (w before h)": grid.transpose(1, 2).reshape(expected.shape),
            "each patch's rows and columns swapped before the projection": ref.patchify(x, wt.transpose(2, 3), bs),
            "the bias left out": expected - bs,
        })
    return passed("patchify", len(cases), source, hidden)


# ---------------------------------------------------------------- 2. unpatchify
def _check_unpatchify(fn, hidden: bool) -> str:
    dev, seed = device_for(hidden), seed_for(hidden)
    cases = [(2, 3, 5, 2, 8), (3, 2, 6, 4, 3), (1, 4, 4, 1, 5)] if hidden else [(1, 4, 4, 2, 8)]
    for i, (B, gh, gw, p, C) in enumerate(cases):
        tokens = randn(B, gh * gw, p * p * C, seed=seed + i, dev=dev)
        expected = ref.unpatchify(tokens, gh, gw, p, C)
        label = f"{B} x {gh}x{gw} grid, patch {p}, {C} channels"
        got = call(fn, "unpatchify", tokens, gh, gw, p, C, case=label)
        x6 = tokens.reshape(B, gh, gw, p, p, C)
        assert_close(got, expected, name=f"unpatchify on {label}", variants={
            "the two in-patch axes swapped (p and q)": torch.einsum("nhwpqc->nchqwp", x6).reshape(expected.shape),
            "channels first in each token's vector (C, p, q) instead of DiT's (p, q, C)":
                torch.einsum("nhwcpq->nchpwq", tokens.reshape(B, gh, gw, C, p, p)).reshape(expected.shape),
        })
    return passed("unpatchify", len(cases), None, hidden)


# ---------------------------------------------------------------- 3. 2D sin-cos position embedding
def _check_pos_embed(fn, hidden: bool) -> str:
    cases = [(1152, 16, 16, 16), (32, 3, 5, 4), (24, 6, 2, 8)] if hidden else [(16, 4, 4, 4)]
    for D, gh, gw, base in cases:
        expected = ref.sincos_pos_embed_2d(D, gh, gw, base)
        label = f"embed_dim {D}, {gh}x{gw} grid, base_size {base}"
        got = call(fn, "sincos_pos_embed_2d", D, gh, gw, base, forbidden=FORBID_POS, case=label)
        variants = {"the token grid read column by column (meshgrid indexing 'ij' or h and w swapped)":
                    expected.reshape(gh, gw, D).transpose(0, 1).reshape(gh * gw, D) if gh == gw else None,
                    "integer positions (the base_size/grid_size scaling left out)":
                    ref.sincos_pos_embed_2d(D, gh, gw, gh) if gh == gw and gh != base else None}
        assert_close(got, expected, name=f"sincos_pos_embed_2d with {label}", variants=variants, check_device=False)
    return passed("sincos_pos_embed_2d", len(cases), None, hidden)


# ---------------------------------------------------------------- 4. timestep embedding
def _check_timestep(fn, hidden: bool) -> str:
    from diffusers.models.embeddings import get_timestep_embedding

    dev, seed = device_for(hidden), seed_for(hidden)
    if hidden:
        g = generator(seed)
        cases = [(torch.rand(5, generator=g) * 1000, 256), (torch.randint(0, 1000, (3,), generator=g).float(), 64),
                 (torch.tensor([0.0, 0.5, 999.0]), 8)]
    else:
        cases = [(torch.tensor([0.0, 10.0, 999.0]), 32)]
    for t, dim in cases:
        t = t.to(dev)
        expected = ref.timestep_embedding(t, dim)
        label = f"{t.numel()} timesteps, dim {dim}"
        got = call(fn, "timestep_embedding", t, dim, forbidden=FORBID_TIME, case=label)
        assert_close(got, expected, name=f"timestep_embedding with {label}", variants={
            "downscale_freq_shift=0 (SD3/Flux's spacing; DiT uses 1)":
                get_timestep_embedding(t, dim, flip_sin_to_cos=True, downscale_freq_shift=0),
        })
    return passed("timestep_embedding", len(cases), None, hidden)


# ---------------------------------------------------------------- 5. adaLN-Zero
def _adaln_swapped(x, c, w, b):
    """The reference with shift and scale read in the other order (for the diagnosis)."""
    D = x.shape[-1]
    perm = torch.cat([torch.arange(D, 2 * D), torch.arange(0, D), torch.arange(2 * D, 6 * D)]).to(w.device)
    return ref.adaln_zero(x, c, w[perm], b[perm])[0]


def _check_adaln(fn, hidden: bool) -> str:
    dev, seed = device_for(hidden), seed_for(hidden)
    block, source = weights.get("dit_block", dev)
    w, b = block.norm1.linear.weight.detach(), block.norm1.linear.bias.detach()
    D = w.shape[1]
    cases = [(3, 7, w, b), (2, 5, randn(72, 12, seed=seed + 1, dev=dev, scale=0.3), randn(72, seed=seed + 2, dev=dev))] \
        if hidden else [(1, 4, w, b)]
    for i, (B, N, wt, bs) in enumerate(cases):
        D = wt.shape[1]
        x = randn(B, N, D, seed=seed + 10 + i, dev=dev) * 2 + 0.5
        c = randn(B, D, seed=seed + 20 + i, dev=dev)
        expected = ref.adaln_zero(x, c, wt, bs)
        label = f"x {(B, N, D)}"
        got = call(fn, "adaln_zero", x, c, wt, bs, forbidden=FORBID_ADALN, case=label)
        if not isinstance(got, (tuple, list)) or len(got) != 5:
            raise ComparisonError("adaln_zero: return a tuple of 5 tensors: "
                                  "(x_modulated, gate_msa, shift_mlp, scale_mlp, gate_mlp).")
        names = ("x_modulated", "gate_msa", "shift_mlp", "scale_mlp", "gate_mlp")
        mod = F.linear(F.silu(c), wt, bs)
        for k, (g_, e_, n_) in enumerate(zip(got, expected, names)):
            variants = {}
            if k == 0:
                normed = F.layer_norm(x, (D,), eps=1e-6)
                shift, scale = mod[:, :D, None].transpose(1, 2), mod[:, D:2 * D, None].transpose(1, 2)
                no_silu = F.linear(c, wt, bs)[:, None]
                variants = {"shift and scale swapped": _adaln_swapped(x, c, wt, bs),
                            "the 1 + left out of (1 + scale)": normed * scale + shift,
                            "no SiLU before the modulation linear":
                                normed * (1 + no_silu[..., D:2 * D]) + no_silu[..., :D]}
            else:
                variants = {f"chunk {j} of the six ({['shift_msa', 'scale_msa', 'gate_msa', 'shift_mlp', 'scale_mlp', 'gate_mlp'][j]})":
                            mod[:, j * D:(j + 1) * D] for j in range(6)}
            assert_close(g_, e_, name=f"adaln_zero {n_} on {label}", variants=variants)
    return passed("adaln_zero", len(cases), source, hidden)


# ---------------------------------------------------------------- 6. multi-head self-attention
def _mha(attn, x, *, scale: float | None = None, heads: int | None = None, project: bool = True):
    """Independent multi-head attention with knobs for the classic mistakes (diagnoses only)."""
    B, N, _ = x.shape
    h = heads or attn.heads
    q, k, v = attn.to_q(x), attn.to_k(x), attn.to_v(x)                          # (B, N, h*d)
    d = q.shape[-1] // h
    q, k, v = (t.reshape(B, N, h, d).transpose(1, 2) for t in (q, k, v))         # (B, h, N, d)
    w = (q @ k.transpose(-1, -2)) * (d ** -0.5 if scale is None else scale)       # (B, h, N, N)
    out = (w.softmax(-1) @ v).transpose(1, 2).reshape(B, N, h * d)               # (B, N, h*d)
    return attn.to_out[0](out) if project else out


def _check_attention(fn, hidden: bool) -> str:
    from diffusers.models.attention_processor import Attention

    dev, seed = device_for(hidden), seed_for(hidden)
    block, source = weights.get("dit_block", dev)
    attn = block.attn1
    cases = [(2, 9, attn)] if hidden else [(1, 5, attn)]
    if hidden:
        other = Attention(query_dim=15, heads=3, dim_head=5, bias=True).to(dev).eval()
        reinitialise_(other, seed % 1000)
        cases.append((3, 6, other))
    for i, (B, N, module) in enumerate(cases):
        D = module.to_q.in_features
        x = randn(B, N, D, seed=seed + i, dev=dev)
        expected = ref.self_attention(module, x)
        label = f"x {(B, N, D)}, {module.heads} heads"
        got = call(fn, "self_attention", module, x, forbidden=FORBID_ATTN, case=label)
        d = module.to_q.out_features // module.heads
        with torch.no_grad():
            assert_close(got, expected, name=f"self_attention on {label}", variants={
                "the 1/sqrt(head_dim) scale left out": _mha(module, x, scale=1.0),
                "scores divided by head_dim instead of its square root": _mha(module, x, scale=1.0 / d),
                "a single head over the full width": _mha(module, x, heads=1),
                "no output projection (to_out[0])": _mha(module, x, project=False),
            })
    return passed("self_attention", len(cases), source, hidden)


# ---------------------------------------------------------------- 7. DiT block
def _labels(B: int, block, seed: int, dev) -> torch.Tensor:
    n = block.norm1.emb.class_embedder.num_classes
    return torch.randint(0, n, (B,), generator=generator(seed)).to(dev)


def _without_attention_gate(block):
    probe = copy.deepcopy(block)
    D = probe.norm1.linear.in_features
    with torch.no_grad():
        probe.norm1.linear.weight[2 * D:3 * D] = 0   # gate_msa is chunk 2 of 6
        probe.norm1.linear.bias[2 * D:3 * D] = 0
    return probe


def _check_block(fn, hidden: bool) -> str:
    dev, seed = device_for(hidden), seed_for(hidden)
    block, source = weights.get("dit_block", dev)
    D = block.norm1.linear.in_features
    cases = [(3, 10, 1.0), (1, 16, 1.0), (2, 6, 0.01)] if hidden else [(1, 4, 1.0)]
    for i, (B, N, x_scale) in enumerate(cases):
        if x_scale != 1.0:
            # Probe: attention gate zeroed and a tiny residual, so the output is the MLP branch
            # alone and small activation mistakes (exact vs. tanh GELU) stand out.
            block = _without_attention_gate(block)
        x = randn(B, N, D, seed=seed + i, dev=dev, scale=x_scale)
        t = (torch.randint(0, 1000, (B,), generator=generator(seed + 100 + i))).to(dev)
        y = _labels(B, block, seed + 200 + i, dev)
        expected = ref.dit_block(block, x, t, y)
        label = f"x {(B, N, D)}, t {t.tolist()}, y {y.tolist()}"
        got = call(fn, "dit_block", block, x, t, y, forbidden=FORBID_BLOCK, case=label)
        assert_close(got, expected, name=f"dit_block on {label}")
    return passed("dit_block", len(cases), source, hidden)


# ---------------------------------------------------------------- 8. the whole DiT forward
def _check_forward(fn, hidden: bool) -> str:
    dev, seed = device_for(hidden), seed_for(hidden)
    # The public check stays instant: the whole real DiT-XL/2 (2.7 GB) only in hidden tests.
    model, source = weights.get("dit_model", dev, standin=not hidden)
    cfg = model.config
    S = cfg.sample_size
    cases = [2] if hidden else [1]
    for i, B in enumerate(cases):
        x = randn(B, cfg.in_channels, S, S, seed=seed + i, dev=dev)
        t = torch.randint(0, 1000, (B,), generator=generator(seed + 50 + i)).to(dev)
        y = _labels(B, model.transformer_blocks[0], seed + 60 + i, dev)
        expected = ref.dit_forward(model, x, t, y)
        label = f"x {tuple(x.shape)}, t {t.tolist()}, y {y.tolist()}"
        got = call(fn, "dit_forward", model, x, t, y, forbidden=FORBID_MODEL, case=label)
        assert_close(got, expected, name=f"dit_forward on {label}", variants={
            "the final layer's shift and scale swapped (DiT's proj_out_1 gives shift, then scale)":
                lambda: ref.final_layer_variant(model, x, t, y, swap_shift_scale=True),
        })
    return passed("dit_forward", len(cases), source, hidden)


EXERCISES = build(
    ("patchify", 2, _check_patchify), ("unpatchify", 2, _check_unpatchify),
    ("sincos_pos_embed_2d", 2, _check_pos_embed), ("timestep_embedding", 2, _check_timestep),
    ("adaln_zero", 2, _check_adaln), ("self_attention", 2, _check_attention),
    ("dit_block", 3, _check_block), ("dit_forward", 3, _check_forward),
)

"""Lesson 10 (Diffusion Transformers): public checks and hidden tests for every exercise.

Each exercise: ``cases`` (inputs from the context's seed; runs beside the student's code, so
no reference here) and ``judge`` (reference + comparison; trusted side only). Public checks:
fixed small inputs on the CPU. Hidden tests: the grader's seed, shapes the public checks do
not use (non-square grids, batch > 1, other patch sizes, other widths), the real DiT-XL/2
weights when present, and the GPU when there is one.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from ..compare import ComparisonError, assert_close
from ..reference import diffusion_transformers as ref
from ..weights.resolve import reinitialise_
from . import Case, Context, Exercise, exercises

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


#: fp16 cases: a strided conv and a matmul round at different places (fp16 keeps 11 bits of mantissa).
LOW_RTOL = {torch.float16: 3e-3, torch.bfloat16: 2e-2}


def _tol(t: torch.Tensor) -> dict:
    return dict(rtol=LOW_RTOL[t.dtype], max_tol=LOW_RTOL[t.dtype]) if t.dtype in LOW_RTOL else {}


# ---------------------------------------------------------------- 1. patchify
def _patchify_cases(ctx: Context):
    embed = ctx.weights("dit_patch_embed")
    w, b = embed.proj.weight.detach(), embed.proj.bias.detach()
    if ctx.hidden:
        cases = [((2, 4, 6, 10), w, b),
                 ((3, 3, 8, 12), ctx.randn(24, 3, 4, 4, offset=1, scale=0.2), ctx.randn(24, offset=2)),
                 ((1, 5, 3, 2), ctx.randn(7, 5, 1, 1, offset=3), ctx.randn(7, offset=4)),
                 # an fp16 model (DiT is released and run in fp16): the tokens stay fp16
                 ((2, 4, 4, 6), w.half(), b.half())]
    else:
        cases = [((1, 4, 8, 8), w, b), ((1, 4, 4, 4), w.half(), b.half())]
    for i, (shape, wt, bs) in enumerate(cases):
        x = ctx.randn(*shape, offset=10 + i).to(wt.dtype)
        kind = "" if wt.dtype == torch.float32 else f", {str(wt.dtype).split('.')[-1]}"
        yield Case(f"x {shape}{kind}, patch size {wt.shape[-1]}", (x, wt, bs))


def _patchify_judge(case: Case, got) -> None:
    x, wt, bs = case.args
    expected = ref.patchify(x, wt, bs)
    B, _, H, W = x.shape
    p = wt.shape[-1]
    grid = expected.reshape(B, H // p, W // p, -1)
    assert_close(got, expected, name=f"patchify on {case.label}", **_tol(x), variants={
        "the tokens in column-major order (w before h)": grid.transpose(1, 2).reshape(expected.shape),
        "each patch's rows and columns swapped before the projection": ref.patchify(x, wt.transpose(2, 3), bs),
        "the bias left out": expected - bs,
    })


# ---------------------------------------------------------------- 2. unpatchify
def _unpatchify_cases(ctx: Context):
    shapes = [(2, 3, 5, 2, 8), (3, 2, 6, 4, 3), (1, 4, 4, 1, 5)] if ctx.hidden else [(1, 4, 4, 2, 8)]
    for i, (B, gh, gw, p, C) in enumerate(shapes):
        tokens = ctx.randn(B, gh * gw, p * p * C, offset=i)
        yield Case(f"{B} x {gh}x{gw} grid, patch {p}, {C} channels", (tokens, gh, gw, p, C))


def _unpatchify_judge(case: Case, got) -> None:
    tokens, gh, gw, p, C = case.args
    B = tokens.shape[0]
    expected = ref.unpatchify(tokens, gh, gw, p, C)
    x6 = tokens.reshape(B, gh, gw, p, p, C)
    assert_close(got, expected, name=f"unpatchify on {case.label}", variants={
        "the two in-patch axes swapped (p and q)": torch.einsum("nhwpqc->nchqwp", x6).reshape(expected.shape),
        "channels first in each token's vector (C, p, q) instead of DiT's (p, q, C)":
            torch.einsum("nhwcpq->nchpwq", tokens.reshape(B, gh, gw, C, p, p)).reshape(expected.shape),
    })


# ---------------------------------------------------------------- 3. 2D sin-cos position embedding
def _pos_cases(ctx: Context):
    configs = [(1152, 16, 16, 16), (32, 3, 5, 4), (24, 6, 2, 8), (64, 4, 4, 16)] if ctx.hidden else [(16, 4, 4, 4)]
    for D, gh, gw, base in configs:
        yield Case(f"embed_dim {D}, {gh}x{gw} grid, base_size {base}", (D, gh, gw, base))


def _sincos_2d(D: int, gh: int, gw: int, base: int, *, freq_width: int | None = None, interleave: bool = False):
    """The 2D embedding with a derivation mistake: each half's frequencies 10000^(-2k / freq_width)
    (the right width is D/2), or sin/cos interleaved as in the Transformer paper (the code concatenates)."""
    half = D // 2
    width = freq_width or half
    omega = 1.0 / 10000 ** (torch.arange(half // 2, dtype=torch.float64) * 2 / width)

    def one(u):
        a = u[:, None] * omega[None, :]
        return torch.stack([a.sin(), a.cos()], -1).reshape(len(u), -1) if interleave else torch.cat([a.sin(), a.cos()], 1)

    rows = (torch.arange(gh, dtype=torch.float64) * base / gh)[:, None].expand(gh, gw).reshape(-1)
    cols = (torch.arange(gw, dtype=torch.float64) * base / gw)[None, :].expand(gh, gw).reshape(-1)
    return torch.cat([one(cols), one(rows)], 1).float()


def _pos_judge(case: Case, got) -> None:
    D, gh, gw, base = case.args
    expected = ref.sincos_pos_embed_2d(D, gh, gw, base)
    variants = {"each half's frequencies computed with d_model = D (the full width) instead of D/2, the width "
                "of the half that encodes one coordinate": _sincos_2d(D, gh, gw, base, freq_width=D),
                "sin and cos interleaved (the Transformer paper's layout) instead of all sines, then all cosines":
                _sincos_2d(D, gh, gw, base, interleave=True),"the token grid read column by column (meshgrid indexing 'ij' or h and w swapped)":
                expected.reshape(gh, gw, D).transpose(0, 1).reshape(gh * gw, D) if gh == gw else None,
                "integer positions (the base_size/grid_size scaling left out)":
                ref.sincos_pos_embed_2d(D, gh, gw, gh) if gh == gw and gh != base else None}
    assert_close(got, expected, name=f"sincos_pos_embed_2d with {case.label}", variants=variants, check_device=False)


# ---------------------------------------------------------------- 4. timestep embedding
def _time_cases(ctx: Context):
    if ctx.hidden:
        g = ctx.generator(0)
        # timesteps as pipelines pass them: float, int64 (DiTPipeline's), fp16 (an fp16 pipeline's)
        cases = [(torch.rand(5, generator=g) * 1000, 256), (torch.randint(0, 1000, (3,), generator=g), 64),
                 (torch.tensor([0.0, 0.5, 999.0]), 8), ((torch.rand(4, generator=g) * 1000).half(), 32)]
    else:
        cases = [(torch.tensor([0.0, 10.0, 999.0]), 32), (torch.tensor([3, 500]), 16),
                 (torch.tensor([1.0, 250.0]).half(), 16)]
    for t, dim in cases:
        yield Case(f"{t.numel()} {str(t.dtype).split('.')[-1]} timesteps, dim {dim}", (t.to(ctx.device), dim))


def _time_judge(case: Case, got) -> None:
    from diffusers.models.embeddings import get_timestep_embedding

    t, dim = case.args
    expected = ref.timestep_embedding(t, dim)
    assert_close(got, expected, name=f"timestep_embedding with {case.label}", variants={
        "downscale_freq_shift=0 (SD3/Flux's spacing; DiT uses 1)":
            get_timestep_embedding(t, dim, flip_sin_to_cos=True, downscale_freq_shift=0),
        "[sin | cos] (flip_sin_to_cos=False; DiT's Timesteps flips to [cos | sin])":
            get_timestep_embedding(t, dim, flip_sin_to_cos=False, downscale_freq_shift=1),
        "frequencies 10000^(+i/(d/2 - 1)) (the exponent's minus sign lost)":
            torch.cat([torch.cos(t.float()[:, None] * 10000.0 ** (torch.arange(dim // 2, device=t.device) / (dim // 2 - 1))),
                       torch.sin(t.float()[:, None] * 10000.0 ** (torch.arange(dim // 2, device=t.device) / (dim // 2 - 1)))], 1),
    })


# ---------------------------------------------------------------- 5. adaLN-Zero
def _adaln_swapped(x, c, w, b):
    """The reference with shift and scale read in the other order (for the diagnosis)."""
    D = x.shape[-1]
    perm = torch.cat([torch.arange(D, 2 * D), torch.arange(0, D), torch.arange(2 * D, 6 * D)]).to(w.device)
    return ref.adaln_zero(x, c, w[perm], b[perm])[0]


def _adaln_cases(ctx: Context):
    block = ctx.weights("dit_block")
    w, b = block.norm1.linear.weight.detach(), block.norm1.linear.bias.detach()
    configs = [(3, 7, w, b), (2, 5, ctx.randn(72, 12, offset=1, scale=0.3), ctx.randn(72, offset=2))] \
        if ctx.hidden else [(1, 4, w, b)]
    for i, (B, N, wt, bs) in enumerate(configs):
        D = wt.shape[1]
        x = ctx.randn(B, N, D, offset=10 + i) * 2 + 0.5
        c = ctx.randn(B, D, offset=20 + i)
        yield Case(f"x {(B, N, D)}", (x, c, wt, bs))


_ADALN_OUTPUTS = ("x_modulated", "gate_msa", "shift_mlp", "scale_mlp", "gate_mlp")
_CHUNKS = ("shift_msa", "scale_msa", "gate_msa", "shift_mlp", "scale_mlp", "gate_mlp")


def _adaln_judge(case: Case, got) -> None:
    x, c, wt, bs = case.args
    D = wt.shape[1]
    expected = ref.adaln_zero(x, c, wt, bs)
    if not isinstance(got, (tuple, list)) or len(got) != 5:
        raise ComparisonError("adaln_zero: return a tuple of 5 tensors: "
                              "(x_modulated, gate_msa, shift_mlp, scale_mlp, gate_mlp).")
    mod = F.linear(F.silu(c), wt, bs)
    for k, (g_, e_, n_) in enumerate(zip(got, expected, _ADALN_OUTPUTS)):
        if k == 0:
            normed = F.layer_norm(x, (D,), eps=1e-6)
            shift, scale = mod[:, :D, None].transpose(1, 2), mod[:, D:2 * D, None].transpose(1, 2)
            no_silu = F.linear(c, wt, bs)[:, None]
            variants = {"shift and scale swapped": _adaln_swapped(x, c, wt, bs),
                        "the 1 + left out of (1 + scale)": normed * scale + shift,
                        "no SiLU before the modulation linear":
                            normed * (1 + no_silu[..., D:2 * D]) + no_silu[..., :D]}
        else:
            variants = {f"chunk {j} of the six ({_CHUNKS[j]})": mod[:, j * D:(j + 1) * D] for j in range(6)}
        assert_close(g_, e_, name=f"adaln_zero {n_} on {case.label}", variants=variants)


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


def _attention_cases(ctx: Context):
    from diffusers.models.attention_processor import Attention

    attn = ctx.weights("dit_block").attn1
    configs = [(2, 9, attn)] if ctx.hidden else [(1, 5, attn)]
    if ctx.hidden:
        # Inner width (heads x head_dim = 15) differs from the query width (12): a submission
        # that reads the head size from x instead of from the projections fails here.
        other = Attention(query_dim=12, heads=3, dim_head=5, bias=True).to(ctx.device).eval()
        reinitialise_(other, ctx.seed % 1000)
        configs.append((3, 6, other))
    for i, (B, N, module) in enumerate(configs):
        D = module.to_q.in_features
        x = ctx.randn(B, N, D, offset=i)
        yield Case(f"x {(B, N, D)}, {module.heads} heads", (module, x))


def _attention_judge(case: Case, got) -> None:
    module, x = case.args
    expected = ref.self_attention(module, x)
    d = module.to_q.out_features // module.heads
    with torch.no_grad():
        assert_close(got, expected, name=f"self_attention on {case.label}", variants={
            "the 1/sqrt(head_dim) scale left out": lambda: _mha(module, x, scale=1.0),
            "scores divided by head_dim instead of its square root": lambda: _mha(module, x, scale=1.0 / d),
            "a single head over the full width": lambda: _mha(module, x, heads=1),
            "no output projection (to_out[0])": lambda: _mha(module, x, project=False),
        })


# ---------------------------------------------------------------- 7. DiT block
def _labels(B: int, block, ctx: Context, offset: int) -> torch.Tensor:
    n = block.norm1.emb.class_embedder.num_classes
    return ctx.randint(0, n, (B,), offset=offset)


def _without_attention_gate(block):
    probe = copy.deepcopy(block)
    D = probe.norm1.linear.in_features
    with torch.no_grad():
        probe.norm1.linear.weight[2 * D:3 * D] = 0   # gate_msa is chunk 2 of 6
        probe.norm1.linear.bias[2 * D:3 * D] = 0
    return probe


#: Another DiT architecture for hidden tests: other head count, head width, class count.
_OTHER_DIT = dict(num_attention_heads=3, attention_head_dim=4, in_channels=3, out_channels=6, num_layers=2,
                  sample_size=8, patch_size=4, activation_fn="gelu-approximate", num_embeds_ada_norm=5,
                  norm_type="ada_norm_zero", norm_elementwise_affine=False, norm_eps=1e-5, attention_bias=True)


def _other(build, ctx: Context, offset: int):
    """A seeded, fully re-initialised module of another size (hidden tests only)."""
    module = build(_OTHER_DIT).to(ctx.device).eval()
    reinitialise_(module, (ctx.seed + offset) % 100_000)
    return module


def _block_cases(ctx: Context):
    from ..checkpoints.diffusion_transformers import _build_dit_block

    block = ctx.weights("dit_block")
    configs = [(3, 10, 1.0, block), (1, 16, 1.0, block), (2, 6, 0.01, block)] if ctx.hidden else [(1, 4, 1.0, block)]
    if ctx.hidden:
        configs.append((2, 7, 1.0, _other(_build_dit_block, ctx, 31)))
    for i, (B, N, x_scale, block) in enumerate(configs):
        D = block.norm1.linear.in_features
        if x_scale != 1.0:
            # Probe: attention gate zeroed and a tiny residual, so the output is the MLP branch
            # alone and small activation mistakes (exact vs. tanh GELU) stand out.
            block = _without_attention_gate(block)
        x = ctx.randn(B, N, D, offset=i, scale=x_scale)
        t = ctx.randint(0, 1000, (B,), offset=100 + i)
        y = _labels(B, block, ctx, 200 + i)
        yield Case(f"x {(B, N, D)}, t {t.tolist()}, y {y.tolist()}", (block, x, t, y))


def _block_judge(case: Case, got) -> None:
    assert_close(got, ref.dit_block(*case.args), name=f"dit_block on {case.label}")


# ---------------------------------------------------------------- 8. the whole DiT forward
def _forward_cases(ctx: Context):
    from ..checkpoints.diffusion_transformers import _build_dit

    # The public check stays instant: the whole real DiT-XL/2 (2.7 GB) only in hidden tests.
    models = [ctx.weights("dit_model", standin=not ctx.hidden)]
    if ctx.hidden:
        models.append(_other(_build_dit, ctx, 41))   # patch 4, 3 heads, 3 channels, 2 blocks
    for i, (B, model) in enumerate(zip([2, 3] if ctx.hidden else [1], models)):
        cfg = model.config
        S = cfg.sample_size
        x = ctx.randn(B, cfg.in_channels, S, S, offset=i)
        t = ctx.randint(0, 1000, (B,), offset=50 + i)
        y = _labels(B, model.transformer_blocks[0], ctx, 60 + i)
        yield Case(f"x {tuple(x.shape)}, t {t.tolist()}, y {y.tolist()}", (model, x, t, y))


def _forward_judge(case: Case, got) -> None:
    model, x, t, y = case.args
    assert_close(got, ref.dit_forward(model, x, t, y), name=f"dit_forward on {case.label}", variants={
        "the final layer's shift and scale swapped (DiT's proj_out_1 gives shift, then scale)":
            lambda: ref.final_layer_variant(model, x, t, y, swap_shift_scale=True),
    })


EXERCISES = exercises(
    Exercise("patchify", 2, _patchify_cases, _patchify_judge, FORBID_PATCHIFY),
    Exercise("unpatchify", 2, _unpatchify_cases, _unpatchify_judge),
    Exercise("sincos_pos_embed_2d", 2, _pos_cases, _pos_judge, FORBID_POS),
    Exercise("timestep_embedding", 2, _time_cases, _time_judge, FORBID_TIME),
    Exercise("adaln_zero", 2, _adaln_cases, _adaln_judge, FORBID_ADALN),
    Exercise("self_attention", 2, _attention_cases, _attention_judge, FORBID_ATTN),
    Exercise("dit_block", 3, _block_cases, _block_judge, FORBID_BLOCK),
    Exercise("dit_forward", 3, _forward_cases, _forward_judge, FORBID_MODEL),
)

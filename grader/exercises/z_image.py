"""Lesson 12 (Z-Image): public checks and hidden tests for every exercise.

Each exercise: ``cases`` (inputs from the context's seed; runs beside the student's code, so
no reference here) and ``judge`` (reference + comparison; trusted side only). Public checks:
fixed small inputs on the CPU, covering every code path the hidden tests grade (caption and
image padding, a padded batch, the unmodulated refiner block, guidance on and off). Hidden
tests: the grader's seed, other caption lengths and grids, other head counts, widths, RoPE
axes and θ, guidance scales and noise levels, batch > 1, Z-Image-Turbo's real block 0 when
present, and the GPU when there is one.
"""

from __future__ import annotations

import torch

from ..compare import ComparisonError, assert_close
from ..reference import z_image as ref
from ..weights.resolve import reinitialise_
from . import Case, Context, Exercise, exercises

LESSON = "12_z_image"

_ZI = "diffusers.models.transformers.transformer_z_image"
FORBID_IDS = (f"{_ZI}.ZImageTransformer2DModel.patchify_and_embed", f"{_ZI}.ZImageTransformer2DModel._pad_with_ids",
              f"{_ZI}.ZImageTransformer2DModel.create_coordinate_grid")
FORBID_ROPE = (f"{_ZI}.RopeEmbedder.__call__", f"{_ZI}.RopeEmbedder.precompute_freqs_cis")
FORBID_BLOCK = FORBID_ROPE + (
    f"{_ZI}.ZImageTransformerBlock.forward", f"{_ZI}.ZSingleStreamAttnProcessor.__call__", f"{_ZI}.FeedForward.forward",
    "diffusers.models.attention_processor.Attention.forward", "diffusers.models.normalization.RMSNorm.forward",
    "diffusers.models.attention_dispatch.dispatch_attention_fn")
FORBID_ENCODE = ("diffusers.pipelines.z_image.pipeline_z_image.ZImagePipeline._encode_prompt",
                 "diffusers.pipelines.z_image.pipeline_z_image.ZImagePipeline.encode_prompt")
FORBID_STEP = ("diffusers.pipelines.z_image.pipeline_z_image.ZImagePipeline.__call__",
               "diffusers.schedulers.scheduling_flow_match_euler_discrete.FlowMatchEulerDiscreteScheduler.step")


# ---------------------------------------------------------------- 1. position ids
def _ids_cases(ctx: Context):
    configs = [(1, 1, 3, 5), (40, 2, 4, 4), (77, 1, 8, 12), (64, 1, 2, 16)] if ctx.hidden \
        else [(5, 1, 4, 6), (32, 2, 2, 8)]
    for L, f, h, w in configs:
        yield Case(f"caption of {L} tokens, {f}x{h}x{w} patch grid", (L, f, h, w))


def _as_ids(t, name: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        return t
    if t.is_floating_point() or t.is_complex():
        raise ComparisonError(f"{name}: position ids are integers; got a {t.dtype} tensor.")
    return t.long().cpu()


def _ids_judge(case: Case, got) -> None:
    L, f, h, w = case.args
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        raise ComparisonError("position_ids: return a tuple (cap_ids, img_ids).")
    cap, img = ref.position_ids(L, f, h, w)
    Lc = len(cap)
    n = f * h * w
    grid = ref._grid((f, h, w), (Lc + 1, 0, 0))
    pad = torch.zeros(len(img) - n, 3, dtype=torch.long)
    swapped = torch.stack(torch.meshgrid(torch.arange(Lc + 1, Lc + 1 + f), torch.arange(w), torch.arange(h),
                                         indexing="ij"), -1)[..., [0, 2, 1]].reshape(-1, 3)
    assert_close(_as_ids(got[0], "position_ids cap_ids"), cap, name=f"position_ids cap_ids for a {case.label}",
                 check_device=False, variants={
                     "caption positions counted from 0 (Z-Image starts them at 1)": cap - torch.tensor([1, 0, 0]),
                     "the caption's pad tokens given (0, 0, 0) (only image pads are; caption pads keep counting)":
                         torch.where((torch.arange(Lc) < L)[:, None], cap, torch.zeros_like(cap)),
                 })
    assert_close(_as_ids(got[1], "position_ids img_ids"), img, name=f"position_ids img_ids for a {case.label}",
                 check_device=False, variants={
                     "the image's frame axis starting after the unpadded caption (cap_len + 1, not padded length + 1)":
                         torch.cat([grid - torch.tensor([Lc - L, 0, 0]), pad]),
                     "the image's frame axis starting at the padded caption length (no + 1)":
                         torch.cat([grid - torch.tensor([1, 0, 0]), pad]),
                     "the grid read column by column (x before y)": torch.cat([swapped, pad]),
                 })


# ---------------------------------------------------------------- 2. 3D RoPE
def _rope_cases(ctx: Context):
    if ctx.hidden:
        configs = [(2, 3, [32, 48, 48], 256.0, 40), (1, 4, [4, 8, 4], 10000.0, 70), (3, 2, [8, 8, 16], 64.0, 19)]
    else:
        configs = [(2, 2, [8, 4, 4], 256.0, 12)]
    for i, (B, h, axes, theta, N) in enumerate(configs):
        x = ctx.randn(B, N, h, sum(axes), offset=i)
        # random positions per axis (frame/caption axis up to 300, spatial up to 64), one set per item
        ids = torch.stack([ctx.randint(0, 300, (B, N), offset=10 + i), ctx.randint(0, 64, (B, N), offset=20 + i),
                           ctx.randint(0, 64, (B, N), offset=30 + i)], dim=-1)
        yield Case(f"x {tuple(x.shape)}, axes_dims {axes}, theta {theta:g}", (x, ids, axes, theta))
    # Z-Image runs in bf16: diffusers rotates in float32 and casts back (x_out.type_as(x_in)), so bf16 in, bf16 out.
    x = ctx.randn(1, 24, 2, 16, offset=40).bfloat16()
    ids = torch.stack([ctx.randint(0, 300, (1, 24), offset=41), ctx.randint(0, 64, (1, 24), offset=42),
                       ctx.randint(0, 64, (1, 24), offset=43)], dim=-1)
    yield Case("x (1, 24, 2, 16) in bf16 (as Z-Image runs), axes_dims [8, 4, 4], theta 256",
               (x, ids, [8, 4, 4], 256.0), extra={"bf16": True})


def _rope_judge(case: Case, got) -> None:
    x, ids, axes, theta = case.args
    expected = ref.apply_rope_3d(x, ids, axes, theta)
    if case.extra.get("bf16"):   # bf16 keeps ~3 digits: rotating in bf16 instead of float32 is close enough too
        assert_close(got, expected, name=f"apply_rope_3d on {case.label}", rtol=1e-2, max_tol=2e-2)
        return
    half_spread = lambda: _rope_with(x, ids, axes, theta, lambda d: torch.arange(d // 2, dtype=torch.float64) / d)  # noqa: E731
    assert_close(got, expected, name=f"apply_rope_3d on {case.label}", variants={
        "x[j] paired with x[j + d/2] (the rotate-half layout); Z-Image pairs neighbours (x[2j], x[2j+1])":
            lambda: ref.rotate_half_variant(x, ids, axes, theta),
        "theta = 10000 (the language-model default; Z-Image's config says rope_theta)":
            (lambda: ref.apply_rope_3d(x, ids, axes, 10000.0)) if theta != 10000.0 else None,
        "the axes' position columns in reverse order": lambda: ref.apply_rope_3d(x, ids.flip(-1), axes, theta),
        "frequencies theta^(-j/d) instead of theta^(-2j/d)": half_spread,
    })


def _rope_with(x, ids, axes, theta, exponent):
    ang = []
    for a, d in enumerate(axes):
        ang.append(ids[..., a, None].double().cpu() * theta ** (-exponent(d)))
    ang = torch.cat(ang, -1).float()
    return ref.rotate(x, torch.polar(torch.ones_like(ang), ang).to(x.device))


# ---------------------------------------------------------------- 3. the S3-DiT block
def _axes_for(head_dim: int) -> list[int]:
    return {128: [32, 48, 48], 16: [8, 4, 4]}.get(head_dim, [head_dim // 2, head_dim // 4, head_dim // 4])


def _block_inputs(ctx: Context, block, B: int, lens: list[int], offset: int, with_mask: bool, cap: bool = False):
    """x (B, N, D), mask (B, N) or None, freqs_cis (B, N, d/2) as the model builds them (zeros past each length)."""
    D = block.dim
    N = max(lens)
    x = ctx.randn(B, N, D, offset=offset)
    d = D // block.attention.heads
    freqs = torch.zeros(B, N, d // 2, dtype=torch.complex64)
    for i, n in enumerate(lens):
        if cap:   # caption tokens: (1 + i, 0, 0)
            ids = torch.stack([torch.arange(1, n + 1), torch.zeros(n, dtype=torch.long), torch.zeros(n, dtype=torch.long)], -1)
        else:     # image tokens on a grid after a 32-token caption: (33, y, x)
            side = max(1, int(n ** 0.5))
            k = torch.arange(n)
            ids = torch.stack([torch.full((n,), 33), k // side, k % side], -1)
        ang = []
        for a, da in enumerate(_axes_for(d)):
            ang.append(ids[:, a, None].double() * 256.0 ** (-torch.arange(0, da, 2, dtype=torch.float64) / da))
        ang = torch.cat(ang, -1).float()
        freqs[i, :n] = torch.polar(torch.ones_like(ang), ang)
    mask = None
    if with_mask:
        mask = torch.zeros(B, N, dtype=torch.bool)
        for i, n in enumerate(lens):
            mask[i, :n] = True
        mask = mask.to(ctx.device)
    return x, mask, freqs.to(ctx.device)


def _block_cases(ctx: Context):
    from diffusers.models.transformers.transformer_z_image import ZImageTransformerBlock

    # Public checks stay instant: the real block (181 M parameters) only in hidden tests.
    main = ctx.weights("z_image_block", standin=not ctx.hidden)
    refiner = ctx.weights("z_image_refiner_block", standin=not ctx.hidden)
    if ctx.hidden:
        wide = ZImageTransformerBlock(0, 64, 4, 4, 1e-5, True).to(ctx.device).eval()
        reinitialise_(wide, ctx.seed % 1000)
        configs = [(main, 3, [24, 40, 33], True), (wide, 2, [20, 20], False), (refiner, 2, [17, 32], True),
                   (main, 1, [13], False)]
    else:
        configs = [(main, 2, [6, 9], True), (refiner, 1, [7], False)]
    for i, (block, B, lens, with_mask) in enumerate(configs):
        x, mask, freqs = _block_inputs(ctx, block, B, lens, 10 * i, with_mask, cap=not block.modulation)
        args = (block, x, mask, freqs)
        if block.modulation:
            adaln = ctx.randn(B, block.adaLN_modulation[0].in_features, offset=10 * i + 5)
            args = args + (adaln,)
        kind = "main block" if block.modulation else "context-refiner block (no modulation)"
        yield Case(f"{kind}, {block.attention.heads} heads, x {tuple(x.shape)}, "
                   f"{'padded batch ' + str(lens) if mask is not None else 'no padding mask'}", args)
    # Z-Image runs in bf16: bf16 in, bf16 out, judged against diffusers' own block in bf16.
    small = ZImageTransformerBlock(0, 64, 4, 4, 1e-5, True).eval()
    reinitialise_(small, ctx.seed % 1000 + 7)
    small = small.to(ctx.device, torch.bfloat16)
    x, mask, freqs = _block_inputs(ctx, small, 2, [9, 12], 70, True)
    adaln = ctx.randn(2, small.adaLN_modulation[0].in_features, offset=75).bfloat16()
    yield Case(f"main block in bf16 (as Z-Image runs), 4 heads, x {tuple(x.shape)}, padded batch [9, 12]",
               (small, x.bfloat16(), mask, freqs, adaln), extra={"bf16": True})


_BLOCK_MISTAKES = {
    "no_tanh": "the gates used without tanh",
    "no_one_plus": "the scales used as scale, not 1 + scale",
    "chunk_order": "the four chunks read as (scale_msa, scale_mlp, gate_msa, gate_mlp); diffusers' order is "
                   "(scale_msa, gate_msa, scale_mlp, gate_mlp)",
    "silu": "a SiLU before adaLN_modulation (DiT has one; Z-Image's block does not)",
    "no_post_norm": "the second RMSNorm of each sandwich (attention_norm2 / ffn_norm2) left out",
    "no_qk_norm": "no RMSNorm on q and k (norm_q / norm_k)",
    "rotate_half": "RoPE pairing x[j] with x[j + d/2] instead of neighbours (x[2j], x[2j+1])",
    "no_rope": "no RoPE on q and k",
}


def _block_judge(case: Case, got) -> None:
    block, x, mask, freqs = case.args[:4]
    adaln = case.args[4] if len(case.args) > 4 else None
    if case.extra.get("bf16"):   # bf16 keeps ~3 digits: the same operations in another order land within 2e-2
        with torch.no_grad():
            expected = block(x, mask, freqs, adaln)
        assert_close(got, expected, name=f"s3dit_block on {case.label}", rtol=2e-2, max_tol=3e-2)
        return
    with torch.no_grad():
        expected = ref.s3dit_block(block, x, mask, freqs, adaln)
        variants = {text: (lambda v=v: ref.s3dit_block(block, x, mask, freqs, adaln, variant=v))
                    for v, text in _BLOCK_MISTAKES.items()
                    if block.modulation or v not in ("no_tanh", "no_one_plus", "chunk_order", "silu")}
        if mask is not None:
            variants["no attention mask (pad tokens attended to)"] = lambda: ref.s3dit_block(block, x, None, freqs, adaln)
        assert_close(got, expected, name=f"s3dit_block on {case.label}", variants=variants)


# ---------------------------------------------------------------- 4. Qwen3 prompt embeddings
def _other_qwen3(ctx: Context):
    """A second tiny Qwen3 (5 layers, 3 heads sharing one key/value head): a hard-coded layer index fails here."""
    from ..checkpoints.z_image import build_qwen3

    te = build_qwen3(dict(vocab_size=64, hidden_size=24, intermediate_size=48, num_hidden_layers=5,
                          num_attention_heads=3, num_key_value_heads=1, head_dim=8, max_position_embeddings=128,
                          rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True))
    reinitialise_(te, ctx.seed % 1000)
    return te.to(ctx.device).eval()


def _encode_cases(ctx: Context):
    main = ctx.weights("z_image_text_encoder")
    configs = [(main, [9, 4, 12], 0), (main, [6], 2), (_other_qwen3(ctx), [3, 10], 1)] if ctx.hidden \
        else [(main, [5, 8], 0)]
    for i, (te, ls, extra) in enumerate(configs):
        V = te.config.vocab_size
        T = max(ls) + extra
        ids = ctx.randint(1, V, (len(ls), T), offset=i)
        mask = (torch.arange(T)[None] < torch.tensor(ls)[:, None]).long().to(ctx.device)
        ids = ids * mask   # right padding with id 0, as Qwen's tokenizer pads
        yield Case(f"{len(ls)} prompts of {ls} tokens padded to {T}, a {te.config.num_hidden_layers}-layer Qwen3",
                   (te, ids, mask))


def _encode_judge(case: Case, got) -> None:
    te, ids, mask = case.args
    with torch.no_grad():
        expected = ref.prompt_embeds(te, ids, mask)
        if not isinstance(got, (list, tuple)) or len(got) != len(expected):
            raise ComparisonError(f"encode_prompt: return a list of {len(expected)} tensors, one per prompt "
                                  f"(each of shape (L_i, D)).")
        T = ids.shape[1]
        for i, (g, e) in enumerate(zip(got, expected)):
            if isinstance(g, torch.Tensor) and g.ndim == 2 and g.shape[0] == T != e.shape[0]:
                raise ComparisonError(f"encode_prompt on {case.label}: prompt {i} has {T} rows, expected "
                                      f"{e.shape[0]}.\n  diagnosis: you kept the padding tokens; keep only the "
                                      f"positions where attention_mask is 1.")
            n = len(te.layers)
            assert_close(g, e, name=f"encode_prompt prompt {i} on {case.label}", variants={
                "hidden_states[-1] (the final, normed layer output)":
                    lambda: ref.prompt_embeds(te, ids, mask, layer=-1)[i],
                "hidden_states[-3] (one layer too early)": (lambda: ref.prompt_embeds(te, ids, mask, layer=-3)[i])
                if n >= 2 else None,
                "the final RMSNorm applied to hidden_states[-2]": lambda: te.norm(e),
            })


# ---------------------------------------------------------------- 5. one pipeline step
def _step_cases(ctx: Context):
    model = ctx.weights("z_image_model", standin=True)   # the real transformer is ~12 GB: stand-in only
    Dc = model.config.cap_feat_dim
    # Dyadic sigmas: 1 - sigma is then exact in float32 however it is computed. The stand-in's random
    # timestep MLP turns a one-ulp difference in the model's time (6e-8) into ~1e-4 of its output,
    # which would fail a correct answer that happened to round differently.
    if ctx.hidden:
        configs = [(2, (8, 12), [7, 3], [2, 5], 5.0, 0.875, 0.75), (1, (12, 8), [11], None, 0.0, 1.0, 0.5),
                   (3, (4, 4), [4, 9, 2], [1, 1, 6], 1.5, 0.375, 0.0)]
    else:
        configs = [(2, (4, 6), [5, 2], [3, 4], 3.0, 0.75, 0.5), (1, (4, 4), [5], None, 0.0, 0.5, 0.25)]
    for i, (B, (H, W), pl, nl, s, sig, sig_next) in enumerate(configs):
        lat = ctx.randn(B, model.config.in_channels, H, W, offset=10 * i)
        pos = [ctx.randn(n, Dc, offset=10 * i + 1 + k) for k, n in enumerate(pl)]
        neg = None if nl is None else [ctx.randn(n, Dc, offset=10 * i + 5 + k) for k, n in enumerate(nl)]
        yield Case(f"latents {tuple(lat.shape)}, sigma {sig} -> {sig_next}, guidance_scale {s}",
                   (model, lat, sig, sig_next, pos, neg, s))


def _step_judge(case: Case, got) -> None:
    args = case.args
    with torch.no_grad():
        expected = ref.zimage_step(*args)
        variants = {
            "the transformer given sigma instead of 1 - sigma": lambda: ref.zimage_step(*args, variant="sigma_as_time"),
            "the model output used as the velocity without negating it":
                lambda: ref.zimage_step(*args, variant="not_negated"),
        }
        if args[-1] > 0:
            variants["standard CFG neg + s (pos - neg); ZImagePipeline uses pos + s (pos - neg)"] = \
                lambda: ref.zimage_step(*args, variant="standard_cfg")
        assert_close(got, expected, name=f"zimage_step on {case.label}", variants=variants)


# ---------------------------------------------------------------- 6. Decoupled-DMD
class ExactScore:
    """The exact score of p_t for x_t = (1 - t) x0 + t eps, x0 from an isotropic Gaussian mixture.

    An input for the DMD exercise (a "perfect" score network): ``score(x (B, D), t (B,)) -> (B, D)``.
    """

    def __init__(self, means: torch.Tensor, stds: torch.Tensor, weights: torch.Tensor):
        self.means, self.stds, self.weights = means, stds, weights

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        xd, td = x.double(), t.double().to(x.device)[:, None]                       # (B, D), (B, 1)
        mu = (1 - td)[:, :, None] * self.means.double().to(x.device)[None]          # (B, K, D)
        var = (1 - td) ** 2 * self.stds.double().to(x.device)[None] ** 2 + td ** 2  # (B, K)
        diff = mu - xd[:, None]
        logc = -0.5 * (diff ** 2).sum(-1) / var - 0.5 * x.shape[-1] * var.log() + self.weights.double().to(x.device).log()
        return (logc.softmax(-1)[..., None] * diff / var[..., None]).sum(1).to(x.dtype)

    def __repr__(self) -> str:
        return f"ExactScore({len(self.means)} components in {self.means.shape[1]}D)"


def _mixture(ctx: Context, K: int, D: int, offset: int, spread: float = 2.0) -> ExactScore:
    means = ctx.randn(K, D, offset=offset, scale=spread).cpu()
    stds = 0.3 + ctx.rand(K, offset=offset + 1).cpu()
    w = torch.softmax(ctx.randn(K, offset=offset + 2).cpu(), 0)
    return ExactScore(means, stds, w)


def _dmd_cases(ctx: Context):
    configs = [(16, 2, 7.5, False), (5, 3, 1.0, False), (8, 2, 4.0, True)] if ctx.hidden else [(6, 2, 4.0, False)]
    for i, (B, D, w, same_t) in enumerate(configs):
        fake, cond, unc = _mixture(ctx, 3, D, 100 * i), _mixture(ctx, 2, D, 100 * i + 10), _mixture(ctx, 4, D, 100 * i + 20)
        x0 = ctx.randn(B, D, offset=100 * i + 30)
        eps = ctx.randn(B, D, offset=100 * i + 31)
        t_dm = 0.05 + 0.9 * ctx.rand(B, offset=100 * i + 32)
        t_ca = t_dm.clone() if same_t else 0.05 + 0.9 * ctx.rand(B, offset=100 * i + 33)
        yield Case(f"{B} samples in {D}D, guidance_scale {w}" + (", t_dm = t_ca" if same_t else ""),
                   (x0, eps, t_dm, t_ca, w, fake, cond, unc))


def _dmd_judge(case: Case, got) -> None:
    args = case.args
    expected = ref.decoupled_dmd_grad(*args)
    v = lambda name: (lambda: ref.decoupled_dmd_grad(*args, variant=name))  # noqa: E731
    same_t = torch.equal(args[2], args[3])
    w = args[4]
    assert_close(got, expected, name=f"decoupled_dmd_grad on {case.label}", variants={
        "both terms at t_dm (coupled): the CFG term must use its own noise level t_ca": None if same_t else v("coupled"),
        "t_dm and t_ca swapped": None if same_t else v("swapped"),
        "the CFG term scaled by w instead of (w - 1)": v("w_not_w_minus_1"),
        "the CFG-augmentation term with the wrong sign": None if w == 1.0 else v("ca_sign"),
    })


EXERCISES = exercises(
    Exercise("position_ids", 2, _ids_cases, _ids_judge, FORBID_IDS),
    Exercise("apply_rope_3d", 2, _rope_cases, _rope_judge, FORBID_ROPE),
    Exercise("s3dit_block", 4, _block_cases, _block_judge, FORBID_BLOCK),
    Exercise("encode_prompt", 2, _encode_cases, _encode_judge, FORBID_ENCODE),
    Exercise("zimage_step", 2, _step_cases, _step_judge, FORBID_STEP),
    Exercise("decoupled_dmd_grad", 2, _dmd_cases, _dmd_judge),
)

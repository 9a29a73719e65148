"""Lesson 6 (Consistency Models): public checks and hidden tests for every exercise.

Each exercise: ``cases`` (inputs from the context's seed; runs beside the student's code, so
no reference here) and ``judge`` (reference + comparison; trusted side only). Public checks:
fixed small inputs on the CPU. Hidden tests: the grader's seed, other sigma_min / sigma_max /
sigma_data / rho / step counts, batch > 1, non-square images, 2D to 5D toy points, the real
openai/diffusers-cd_imagenet64_l2 UNet when present, and the GPU when there is one.

Stochastic steps are made deterministic by passing the noise in: the reference draws it from a
seeded CPU generator inside diffusers' scheduler, the student's function receives the very
same draw. The losses are judged on their value and on the gradients they send to the online
and the target network (the target must receive none).

Also here, because the notebook and the cases both build them: :class:`ToyNet` (the toy
consistency network), :class:`LabelledUNet` (a class-conditional UNet as ``net(x, t)``) and
:class:`MixtureScore` (the exact score of a blurred Gaussian mixture, the distillation teacher).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..compare import ComparisonError, assert_close
from ..reference import consistency_models as ref
from ..weights.resolve import reinitialise_
from . import Case, Context, Exercise, exercises

LESSON = "06_consistency_models"

_CM = "diffusers.schedulers.scheduling_consistency_models.CMStochasticIterativeScheduler"
FORBID_SCALINGS = (f"{_CM}.get_scalings_for_boundary_condition", f"{_CM}.get_scalings")
FORBID_FUNCTION = FORBID_SCALINGS + (f"{_CM}.scale_model_input", f"{_CM}.sigma_to_t")
FORBID_STEP = FORBID_SCALINGS + (f"{_CM}.step",)


# ---------------------------------------------------------------- shared building blocks
class ToyNet(nn.Module):
    """A small MLP F(x_in, t) for points x (B, D): the time input t = 250 ln sigma enters as
    ln sigma and a few sines and cosines of it."""

    def __init__(self, dim: int = 2, width: int = 64, depth: int = 3, freqs: int = 4):
        super().__init__()
        self.freqs = freqs
        layers: list[nn.Module] = [nn.Linear(dim + 1 + 2 * freqs, width), nn.SiLU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(width, width), nn.SiLU()]
        self.mlp = nn.Sequential(*layers, nn.Linear(width, dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        s = (t.reshape(-1, 1) / 250.0).to(x.dtype)                             # (B, 1): ln sigma
        k = torch.arange(1, self.freqs + 1, device=x.device, dtype=x.dtype)    # (freqs,)
        emb = torch.cat([s, torch.sin(s * k), torch.cos(s * k)], dim=1)        # (B, 1 + 2 freqs)
        return self.mlp(torch.cat([x.flatten(1), emb], dim=1)).reshape(x.shape)


class LabelledUNet(nn.Module):
    """A class-conditional UNet2DModel as ``net(x_in, t)``: the labels are fixed per batch."""

    def __init__(self, unet: nn.Module, labels: torch.Tensor):
        super().__init__()
        self.unet = unet
        self.register_buffer("labels", labels)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.unet(x, t, class_labels=self.labels).sample


class MixtureScore(nn.Module):
    """score(x, sigma) = grad_x log p_sigma(x) of the mixture sum_k w_k N(mu_k, s_k^2 I) blurred by
    N(0, sigma^2 I): x (B, D), sigma (B,) -> (B, D). Closed form, with responsibilities from a softmax."""

    def __init__(self, means: torch.Tensor, stds: torch.Tensor, weights: torch.Tensor):
        super().__init__()
        self.register_buffer("means", means)
        self.register_buffer("stds", stds)
        self.register_buffer("weights", weights)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        D = x.shape[1]
        var = self.stds[None] ** 2 + sigma.reshape(-1, 1) ** 2                 # (B, K)
        diff = self.means[None] - x[:, None]                                   # (B, K, D)
        logits = torch.log(self.weights)[None] - 0.5 * (diff ** 2).sum(-1) / var - 0.5 * D * torch.log(var)
        resp = torch.softmax(logits, dim=1)                                    # (B, K)
        return (resp[..., None] * diff / var[..., None]).sum(1)               # (B, D)


def toy_mixture(device=None) -> MixtureScore:
    """The notebook's 2D data: six tight Gaussians on a circle of radius 1 (sigma_data about 0.71)."""
    angles = torch.arange(6) * (2 * math.pi / 6)
    means = torch.stack([angles.cos(), angles.sin()], dim=1)
    return MixtureScore(means, torch.full((6,), 0.08), torch.full((6,), 1 / 6)).to(device or "cpu")


def _toynet(dim: int, seed: int, device) -> ToyNet:
    net = ToyNet(dim, width=32, depth=2)
    reinitialise_(net, seed)
    return net.to(device).eval()


def _unet(ctx: Context, standin: bool | None = None) -> nn.Module:
    return ctx.weights("cm_unet", standin=standin).eval()


def _labelled(unet: nn.Module, B: int, ctx: Context, offset: int) -> LabelledUNet:
    labels = ctx.randint(0, unet.config.num_class_embeds, (B,), offset=offset)
    return LabelledUNet(unet, labels).eval()


def _grid(config: dict, n: int) -> torch.Tensor:
    """The sampling sigmas the scheduler would use for n steps (an input, not a reference)."""
    from diffusers import CMStochasticIterativeScheduler

    sched = CMStochasticIterativeScheduler(**config)
    sched.set_timesteps(n)
    return sched.sigmas


def _pair(cfg: tuple, B: int, ctx: Context, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample neighbours t_n < t_{n+1} of an N-point Karras grid (sigma_min, sigma_max, rho, N)."""
    smin, smax, rho, N = cfg
    i = torch.arange(N, dtype=torch.float64) / (N - 1)
    grid = (smin ** (1 / rho) + i * (smax ** (1 / rho) - smin ** (1 / rho))) ** rho   # ascending
    n = ctx.randint(0, N - 1, (B,), offset=offset).cpu()
    n[0] = 0                                                                  # the first pair: t_1 = sigma_min
    return grid[n].float().to(ctx.device), grid[n + 1].float().to(ctx.device)


def _tuple_of(got, n: int, what: str, name: str):
    if not isinstance(got, (tuple, list)) or len(got) != n:
        raise ComparisonError(f"{name}: return a tuple of {n} tensors: {what}.")
    return got


# ---------------------------------------------------------------- 1. the boundary scalings
def _scalings_cases(ctx: Context):
    if ctx.hidden:
        configs = [(0.01, 50.0, 1.0, 7.0, 5), (0.005, 80.0, 0.25, 5.0, 9), (0.002, 80.0, 0.5, 7.0, 40)]
    else:
        configs = [(0.002, 80.0, 0.5, 7.0, 4)]
    for i, (smin, smax, sd, rho, n) in enumerate(configs):
        grid = _grid(dict(sigma_min=smin, sigma_max=smax, sigma_data=sd, rho=rho, num_train_timesteps=max(n, 40)), n)
        extra = torch.tensor([smin * 1.5, 0.3 * sd, 2.0 * sd]) if not ctx.hidden else \
            smin + ctx.rand(4, offset=i).cpu() * 3 * sd
        sigma = torch.cat([grid, extra]).float().to(ctx.device)           # sigma_min itself is the grid's last entry
        yield Case(f"{sigma.numel()} sigmas in [{smin}, {smax}], sigma_data {sd}", (sigma, smin, sd))


def _scalings_judge(case: Case, got) -> None:
    sigma, smin, sd = case.args
    name = f"consistency_scalings on {case.label}"
    c_skip, c_out = _tuple_of(got, 2, "(c_skip, c_out)", name)
    e_skip, e_out = ref.boundary_scalings(sigma, smin, sd)
    edm_skip, edm_out = ref.edm_scalings(sigma, sd)
    assert_close(c_skip, e_skip, name=f"c_skip of {name}", variants={
        "EDM's c_skip = sigma_data^2 / (sigma^2 + sigma_data^2): sigma_min left out, so f(x, sigma_min) != x": edm_skip,
        "c_skip = sigma_min / sigma (not the paper's parameterisation)": smin / sigma,
        "c_out's formula (c_skip and c_out swapped)": e_out,
        "sigma_data instead of sigma_data^2 in the numerator": sd / ((sigma - smin) ** 2 + sd ** 2),
    })
    assert_close(c_out, e_out, name=f"c_out of {name}", variants={
        "EDM's c_out = sigma sigma_data / sqrt(sigma^2 + sigma_data^2): sigma_min left out, so f(x, sigma_min) != x":
            edm_out,
        "(sigma - sigma_min) also under the square root (the paper keeps sigma^2 + sigma_data^2 there)":
            (sigma - smin) * sd / ((sigma - smin) ** 2 + sd ** 2) ** 0.5,
        "c_skip's formula (c_skip and c_out swapped)": e_skip,
        "sigma_data left out of the numerator": (sigma - smin) / (sigma ** 2 + sd ** 2) ** 0.5,
        "no square root in the denominator": (sigma - smin) * sd / (sigma ** 2 + sd ** 2),
    })


# ---------------------------------------------------------------- 2. the consistency function
def _function_cases(ctx: Context):
    unet = _unet(ctx, standin=None if ctx.hidden else True)
    S = unet.config.sample_size
    if ctx.hidden:
        configs = [("unet", unet, (2, 3, S, S), 0.002, 0.5), ("unet", _unet(ctx, standin=True), (3, 3, 8, 12), 0.01, 1.0),
                   ("toy", 3, (20, 3), 0.005, 0.25), ("toy", 2, (64, 2), 0.002, 0.5)]
    else:
        configs = [("unet", unet, (2, 3, S, S), 0.002, 0.5), ("toy", 2, (6, 2), 0.002, 0.5)]
    for i, (kind, what, shape, smin, sd) in enumerate(configs):
        B = shape[0]
        sigma = (smin + ctx.rand(B, offset=10 + i).cpu() ** 3 * 40.0)
        sigma[0] = smin                                                   # the boundary: f(x, sigma_min) = x
        if B > 2:
            sigma[1] = 0.3 * sd                                           # sigma < 1: a negative time input
        sigma = sigma.float().to(ctx.device)
        x = ctx.randn(*shape, offset=20 + i) * (1 + _bcast(sigma, torch.empty(shape)).to(ctx.device))
        if kind == "unet":
            net = _labelled(what, B, ctx, 30 + i)
            label = f"UNet2DModel, x {shape}, sigma_min {smin}, sigma_data {sd}"
        else:
            net = _toynet(what, ctx.seed % 1000 + i, ctx.device)
            label = f"toy MLP, {B} points in {what}D, sigma_min {smin}, sigma_data {sd}"
        yield Case(label, (net, x, sigma, smin, sd))


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.reshape((-1,) + (1,) * (like.ndim - 1))


def _function_judge(case: Case, got) -> None:
    net, x, sigma, smin, sd = case.args
    with torch.no_grad():
        expected = ref.consistency_function(net, x, sigma, smin, sd)
        f = lambda **kw: lambda: ref.consistency_function(net, x, sigma, smin, sd, **kw)  # noqa: E731
        ln = torch.log(sigma)
        assert_close(got, expected, name=f"consistency_function on {case.label}", variants={
            "the network fed x itself (c_in = 1/sqrt(sigma^2 + sigma_data^2) left out)":
                f(c_in=torch.ones_like(sigma)),
            "the time input ln(sigma) / 4 (EDM's c_noise, without the consistency models' x 1000)": f(t=ln / 4),
            "the time input ln(sigma) (without the 250)": f(t=ln),
            "sigma itself as the network's time input (not 250 ln sigma)": f(t=sigma),
            "EDM's c_skip and c_out (no boundary condition at sigma_min)": f(scalings=ref.edm_scalings(sigma, sd)),
            "c_in = 1/sqrt((sigma - sigma_min)^2 + sigma_data^2) (the shift belongs to c_skip and c_out only)":
                f(c_in=1 / ((sigma - smin) ** 2 + sd ** 2).sqrt()),
        })


# ---------------------------------------------------------------- 3. one multistep consistency-sampling step
def _cfg(smin, smax, sd, rho, N) -> dict:
    return dict(sigma_min=smin, sigma_max=smax, sigma_data=sd, rho=rho, num_train_timesteps=N)


def _step_in_pipeline(fn, unet, config, steps, labels, seed, batch):
    """Harness: ConsistencyModelPipeline with the student's step in place of the scheduler's.

    Bookkeeping as the scheduler's own step does it: sigma and the next sigma from its
    schedule at its step index, the noise drawn from the pipeline's generator (randn_tensor),
    zeros for a one-step schedule. Returns every intermediate sample, (S, B, C, H, W).
    """
    from diffusers import CMStochasticIterativeScheduler, ConsistencyModelPipeline
    from diffusers.utils.torch_utils import randn_tensor

    pipe = ConsistencyModelPipeline(unet=unet, scheduler=CMStochasticIterativeScheduler(**config))
    pipe.set_progress_bar_config(disable=True)
    sched, out = pipe.scheduler, []

    def step(model_output, timestep, sample, generator=None, return_dict=True):
        if sched.step_index is None:
            sched._init_step_index(timestep)
        i = sched.step_index
        sigma, sigma_next = float(sched.sigmas[i]), float(sched.sigmas[i + 1])
        if len(sched.timesteps) > 1:
            noise = randn_tensor(model_output.shape, dtype=model_output.dtype, device=model_output.device,
                                 generator=generator)
        else:
            noise = torch.zeros_like(model_output)
        prev = fn(model_output, sample, sigma, sigma_next, noise, config["sigma_min"], config["sigma_max"],
                  config["sigma_data"])
        sched._step_index += 1
        out.append(prev.detach().clone() if isinstance(prev, torch.Tensor) else prev)
        return (prev,)

    sched.step = step
    kw = dict(timesteps=list(steps), num_inference_steps=None) if isinstance(steps, (list, tuple)) else dict(num_inference_steps=int(steps))
    pipe(batch_size=batch, class_labels=list(labels), generator=torch.Generator("cpu").manual_seed(seed),
         output_type="pt", **kw)
    if not all(isinstance(o, torch.Tensor) for o in out):
        raise ComparisonError("consistency_step: return a torch.Tensor (the next sample).")
    return torch.stack(out)


def _step_cases(ctx: Context):
    if ctx.hidden:
        configs = [(_cfg(0.01, 50.0, 1.0, 5.0, 201), 5, None, (3, 3, 6, 10)),
                   (_cfg(0.005, 80.0, 0.25, 7.0, 40), 40, 37, (2, 3, 4, 4)),     # sigma_next 0.0084, just above sigma_min
                   (_cfg(0.002, 80.0, 0.5, 7.0, 151), 3, 2, (4, 3, 5, 5)),       # the last step
                   (_cfg(0.002, 20.0, 0.5, 9.0, 18), 6, None, (16, 2))]
    else:
        configs = [(_cfg(0.002, 80.0, 0.5, 7.0, 40), 4, 1, (2, 3, 4, 4)), (_cfg(0.002, 80.0, 0.5, 7.0, 40), 2, 1, (2, 3, 4, 4))]
    for i, (config, n, index, shape) in enumerate(configs):
        sigmas = _grid(config, n)
        if index is None:
            index = int(ctx.randint(0, n - 1, (1,), offset=40 + i))
        sigma, sigma_next = float(sigmas[index]), float(sigmas[index + 1])
        sample = ctx.randn(*shape, offset=50 + i) * sigma
        model_output = ctx.randn(*shape, offset=60 + i) * 2.5                # denoised partly outside [-1, 1]
        noise_seed = (ctx.seed + 70 + i) % (2 ** 63)
        noise = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(noise_seed)).to(ctx.device)
        label = (f"x {shape}, sigma {sigma:.4g} -> {sigma_next:.4g} (step {index + 1} of {n}), sigma_min "
                 f"{config['sigma_min']}, sigma_max {config['sigma_max']}, sigma_data {config['sigma_data']}, "
                 f"rho {config['rho']}")
        yield Case(label, (model_output, sample, sigma, sigma_next, noise, config["sigma_min"], config["sigma_max"],
                           config["sigma_data"]), extra=dict(config=config, n=n, index=index, noise_seed=noise_seed))
    # The plug-in: the whole ConsistencyModelPipeline with the student's step (real UNet in hidden tests when present).
    if ctx.hidden:
        plugins = [(_unet(ctx), _cfg(0.002, 80.0, 0.5, 7.0, 40), [22, 0], 2),
                   (_unet(ctx, standin=True), _cfg(0.01, 40.0, 1.0, 5.0, 201), 3, 3)]
    else:
        plugins = [(_unet(ctx, standin=True), _cfg(0.002, 80.0, 0.5, 7.0, 40), 2, 1)]
    for j, (unet, config, steps, B) in enumerate(plugins):
        labels = ctx.randint(0, unet.config.num_class_embeds, (B,), offset=80 + j).tolist()
        seed = (ctx.seed + 90 + j) % (2 ** 63)
        what = f"timesteps {steps}" if isinstance(steps, list) else f"{steps} steps"
        label = (f"ConsistencyModelPipeline with your step, {B} x {unet.config.sample_size}^2 images, {what}, "
                 f"sigma_min {config['sigma_min']}, sigma_data {config['sigma_data']}")
        yield Case(label, (unet, config, steps, labels, seed, B), invoke=_step_in_pipeline,
                   extra=dict(plugin=True))


def _step_judge(case: Case, got) -> None:
    name = f"consistency_step on {case.label}"
    if case.extra.get("plugin"):
        unet, config, steps, labels, seed, B = case.args
        expected = ref.pipeline_samples(unet, config, steps, labels, seed, B)
        if isinstance(got, torch.Tensor) and got.shape == expected.shape:
            for s in range(expected.shape[0]):   # name the first step that goes wrong
                assert_close(got[s], expected[s], name=f"{name}: the sample after step {s + 1}")
        assert_close(got, expected, name=name)
        return
    model_output, sample, sigma, sigma_next, noise, smin, smax, sd = case.args
    e = case.extra
    sched = ref.sampling_scheduler(e["config"], e["n"])
    expected = ref.consistency_step(sched, e["index"], model_output, sample,
                                    torch.Generator("cpu").manual_seed(e["noise_seed"]))
    s = torch.tensor(sigma)
    c_skip, c_out = (c.item() for c in ref.boundary_scalings(s, smin, sd))
    denoised = c_out * model_output + c_skip * sample
    clamped = denoised.clamp(-1, 1)
    scale = math.sqrt(max(sigma_next ** 2 - smin ** 2, 0.0))
    edm_skip, edm_out = (c.item() for c in ref.edm_scalings(s, sd))
    assert_close(got, expected, name=name, variants={
        "no clamp of the denoised sample to [-1, 1]": denoised + scale * noise,
        "the new noise scaled by sigma_next (the scheduler adds sqrt(sigma_next^2 - sigma_min^2))":
            clamped + sigma_next * noise,
        "the new noise scaled by sigma_next^2 - sigma_min^2 (a variance, not a std)":
            clamped + (sigma_next ** 2 - smin ** 2) * noise,
        "an ODE/ancestral-style step from the current sample instead of re-noising the denoised one":
            sample + (sigma_next - sigma) * (sample - clamped) / sigma,
        "the noise added to the current sample, not to the denoised sample": sample + scale * noise,
        "EDM's scalings (get_scalings, no sigma_min shift)":
            (edm_out * model_output + edm_skip * sample).clamp(-1, 1) + scale * noise,
        "no noise at all (only the denoised sample)": clamped,
    })


# ---------------------------------------------------------------- 4./5. the two losses
def _loss_in_harness(fn, online, target, *args):
    """Harness: the student's loss, then its gradients on both networks (the target must get none)."""
    with torch.enable_grad():
        for p in list(online.parameters()) + list(target.parameters()):
            p.requires_grad_(True)
            p.grad = None
        loss = fn(online, target, *args)
        if not isinstance(loss, torch.Tensor):
            return loss
        if loss.requires_grad and loss.ndim == 0:   # a (B,) loss is reported by the judge, not crashed on here
            loss.backward()
    return {"loss": loss.detach(), "online_grad": _flat_grad(online), "target_grad": _flat_grad(target)}


def _flat_grad(net: nn.Module) -> torch.Tensor:
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                      for _, p in sorted(net.named_parameters())])


def _loss_configs(ctx: Context):
    """(kind, shape, sigma grid (sigma_min, sigma_max, rho, N), sigma_data)."""
    if ctx.hidden:
        return [("toy", (32, 2), (0.002, 20.0, 7.0, 18), 0.5), ("toy", (12, 5), (0.01, 50.0, 5.0, 40), 1.0),
                ("toy", (7, 3), (0.005, 80.0, 7.0, 150), 0.25), ("unet", (2, 3, 8, 12), (0.002, 80.0, 7.0, 40), 0.5)]
    # the second public case: image-shaped x0 (B, C, H, W), as the hidden UNet case, on the cheap toy MLP
    return [("toy", (8, 2), (0.002, 80.0, 7.0, 10), 0.5), ("toy", (3, 1, 2, 2), (0.002, 80.0, 7.0, 40), 0.5)]


def _nets(kind: str, shape: tuple, ctx: Context, i: int):
    if kind == "unet":
        unet = _unet(ctx, standin=True)
        online = _labelled(unet, shape[0], ctx, 100 + i)
        other = _unet(ctx, standin=True)
        reinitialise_(other, ctx.seed % 1000 + 7)
        target = LabelledUNet(other, online.labels.clone())
        return online.train(), target.train()
    D = math.prod(shape[1:])                         # ToyNet flattens each sample
    return _toynet(D, ctx.seed % 1000 + 10 * i, ctx.device), _toynet(D, ctx.seed % 1000 + 10 * i + 5, ctx.device)


def _data(kind: str, shape: tuple, ctx: Context, i: int) -> torch.Tensor:
    x0 = ctx.randn(*shape, offset=110 + i) * 0.5
    return x0.clamp(-1, 1) if kind == "unet" else x0


def _ct_cases(ctx: Context):
    for i, (kind, shape, grid, sd) in enumerate(_loss_configs(ctx)):
        online, target = _nets(kind, shape, ctx, i)
        x0 = _data(kind, shape, ctx, i)
        sigma_n, sigma_n1 = _pair(grid, shape[0], ctx, 120 + i)
        noise = ctx.randn(*shape, offset=130 + i)
        label = (f"{'UNet2DModel' if kind == 'unet' else 'toy MLP'}, x0 {shape}, {grid[3]}-point grid "
                 f"{grid[0]}..{grid[1]} (rho {grid[2]}), sigma_data {sd}")
        yield Case(label, (online, target, x0, sigma_n, sigma_n1, noise, grid[0], sd),
                   invoke=_loss_in_harness)


def _mixture_for(D: int, ctx: Context, i: int) -> MixtureScore:
    if D == 2 and not ctx.hidden:
        return toy_mixture(ctx.device)
    K = 3 + i
    means = ctx.randn(K, D, offset=140 + i)
    stds = 0.1 + 0.4 * ctx.rand(K, offset=150 + i)
    w = ctx.rand(K, offset=160 + i) + 0.2
    return MixtureScore(means, stds, w / w.sum())


def _cd_cases(ctx: Context):
    for i, (kind, shape, grid, sd) in enumerate(_loss_configs(ctx)):
        if kind == "unet" or len(shape) != 2:
            continue                                 # the exact teacher is the toy mixture's score: points (B, D)
        D = shape[1]
        online, target = _nets(kind, shape, ctx, i)
        score = _mixture_for(D, ctx, i)
        comp = ctx.randint(0, score.means.shape[0], (shape[0],), offset=170 + i)
        x0 = score.means[comp] + score.stds[comp, None] * ctx.randn(*shape, offset=180 + i)   # data from the mixture
        sigma_n, sigma_n1 = _pair(grid, shape[0], ctx, 190 + i)
        noise = ctx.randn(*shape, offset=200 + i)
        label = (f"toy MLP, {score.means.shape[0]}-component mixture in {D}D, {shape[0]} points, {grid[3]}-point "
                 f"grid {grid[0]}..{grid[1]} (rho {grid[2]}), sigma_data {sd}")
        yield Case(label, (online, target, score, x0, sigma_n, sigma_n1, noise, grid[0], sd),
                   invoke=_loss_in_harness)


def _loss_grads(loss_fn, online, target, *args) -> dict:
    import copy

    online, target = copy.deepcopy(online), copy.deepcopy(target)
    return _loss_in_harness(loss_fn, online, target, *args)


def _judge_loss(name: str, case: Case, got, expected: dict, variants: dict) -> None:
    label = f"{name} on {case.label}"
    if not isinstance(got, dict):
        kind = getattr(got, "course_type_name", type(got).__name__)
        raise ComparisonError(f"{label}: return the loss as a 0-d torch.Tensor (got {kind}).")
    loss = got["loss"]
    if isinstance(loss, torch.Tensor) and loss.ndim != 0:
        raise ComparisonError(f"{label}: the loss has shape {tuple(loss.shape)}; return one number "
                              f"(a 0-d tensor): average the distances over the batch.")
    assert_close(loss, expected["loss"], name=f"{label}: the loss value",
                 variants={k: (lambda v=v: v()["loss"]) for k, v in variants.items()})
    if got["target_grad"].abs().max() > 0:
        raise ComparisonError(f"{label}: gradients reach the target network. The target f_theta- is a "
                              f"constant in the loss (stop-gradient): compute it under torch.no_grad() or .detach() it.")
    if got["online_grad"].abs().max() == 0:
        raise ComparisonError(f"{label}: no gradient reaches the online network: the loss must be "
                              f"differentiable through f_theta(x_n+1, t_n+1) (no torch.no_grad() or .detach() there).")
    assert_close(got["online_grad"], expected["online_grad"], name=f"{label}: the gradient on the online network")


def _ct_variant(online, target, x0, sn, sn1, noise, smin, sd, *, swap=False, same=None, x0_target=False,
                reduce="mean", raw=False):
    def loss_fn(on, tg, *_):
        x_n1 = x0 + _bcast(sn1, x0) * noise
        x_n = x0 + _bcast(sn, x0) * noise
        if swap:
            x_n, x_n1, a, b = x_n1, x_n, sn1, sn
        else:
            a, b = sn, sn1
        if same == "online":
            tg = on
        if raw:
            pred = on(x_n1, ref.time_input(b))
        else:
            pred = ref.consistency_function(on, x_n1, b, smin, sd)
        with torch.no_grad():
            tgt = x0 if x0_target else ref.consistency_function(tg, x_n, a, smin, sd)
        d = ((pred - tgt) ** 2).flatten(1)
        return {"mean": d.mean(1).mean(), "sum": d.sum(1).mean(), "total": d.sum()}[reduce]
    return lambda: _loss_grads(loss_fn, online, target)


def _ct_judge(case: Case, got) -> None:
    online, target, x0, sn, sn1, noise, smin, sd = case.args
    expected = _loss_grads(ref.consistency_training_loss, online, target, x0, sn, sn1, noise, smin, sd)
    v = lambda **kw: _ct_variant(online, target, x0, sn, sn1, noise, smin, sd, **kw)  # noqa: E731
    _judge_loss("consistency_training_loss", case, got, expected, {
        "the two noise levels swapped (online network at t_n, target at t_n+1)": v(swap=True),
        "the online network as its own target (the target network theta- not used)": v(same="online"),
        "x0 as the target (that is denoising, not self-consistency)": v(x0_target=True),
        "the squared distance summed over each sample's elements instead of averaged": v(reduce="sum"),
        "the squared distance summed over the whole batch": v(reduce="total"),
        "the raw network output F instead of f = c_skip x + c_out F(c_in x, t)": v(raw=True),
    })


def _cd_variant(online, target, score, x0, sn, sn1, noise, smin, sd, *, start="n1", sign=1.0, no_t=False,
                x0_target=False, step_from="x_n1"):
    def loss_fn(on, tg, *_):
        x_n1 = x0 + _bcast(sn1, x0) * noise
        with torch.no_grad():
            if x0_target:
                tgt = x0
            else:
                at = sn1 if start == "n1" else sn
                slope = -(1.0 if no_t else _bcast(sn1, x0)) * score(x_n1, at)
                x_n = x_n1 + sign * _bcast(sn - sn1, x0) * slope
                if step_from == "noise":
                    x_n = x0 + _bcast(sn, x0) * noise
                tgt = ref.consistency_function(tg, x_n, sn, smin, sd)
        pred = ref.consistency_function(on, x_n1, sn1, smin, sd)
        return ((pred - tgt) ** 2).flatten(1).mean(1).mean()
    return lambda: _loss_grads(loss_fn, online, target)


def _cd_judge(case: Case, got) -> None:
    online, target, score, x0, sn, sn1, noise, smin, sd = case.args
    means, stds, w = score.means, score.stds, score.weights
    exact = lambda x, s: ref.mixture_score(x, s, means, stds, w)  # noqa: E731  (lesson 4's autograd score)
    expected = _loss_grads(lambda on, tg, *a: ref.consistency_distillation_loss(on, tg, exact, *a),
                           online, target, x0, sn, sn1, noise, smin, sd)
    v = lambda **kw: _cd_variant(online, target, exact, x0, sn, sn1, noise, smin, sd, **kw)  # noqa: E731
    _judge_loss("consistency_distillation_loss", case, got, expected, {
        "the ODE step taken forward (dx/dt = +t score, or the step's sign flipped)": v(sign=-1.0),
        "the ODE's factor t left out (dx/dt = -score)": v(no_t=True),
        "the teacher's score evaluated at t_n instead of t_n+1 (where the step starts)": v(start="n"),
        "the pair of noised samples x0 + t_n z (that is consistency training, no teacher)": v(step_from="noise"),
        "x0 as the target (that is denoising, not self-consistency)": v(x0_target=True),
    })


EXERCISES = exercises(
    Exercise("consistency_scalings", 2, _scalings_cases, _scalings_judge, FORBID_SCALINGS),
    Exercise("consistency_function", 3, _function_cases, _function_judge, FORBID_FUNCTION),
    Exercise("consistency_step", 3, _step_cases, _step_judge, FORBID_STEP),
    Exercise("consistency_training_loss", 3, _ct_cases, _ct_judge, FORBID_FUNCTION),
    Exercise("consistency_distillation_loss", 3, _cd_cases, _cd_judge, FORBID_FUNCTION),
)

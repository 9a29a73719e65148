"""One comparison for every check: says what differs and, where cheap, why.

A failing comparison reports, in order: type, shape, dtype and device; then the
relative L2 error and the worst element against the stated tolerance; then a diagnosis
of the classic mistakes (a known wrong variant, a transpose, a sign flip, a constant
factor, chunks in another order). It never prints the reference tensor.
"""

from __future__ import annotations

import itertools
from typing import Callable, Mapping, Union

import torch

#: Relative L2 error allowed in strict fp32 (DESIGN.md: rounding sits near 1e-6, bugs far above 1e-3).
RTOL = 1e-4
#: Largest single-element error allowed, as a fraction of the reference's largest magnitude.
MAX_TOL = 1e-3


class ComparisonError(AssertionError):
    """A student's tensor differs from the reference; the message is written for the student."""


def _fmt_index(flat: int, shape: torch.Size) -> tuple[int, ...]:
    idx = []
    for size in reversed(shape):
        idx.append(flat % size)
        flat //= size
    return tuple(reversed(idx))


def errors(actual: torch.Tensor, expected: torch.Tensor) -> tuple[float, float]:
    """(relative L2 error, max abs error / max |expected|), computed in float64."""
    a = actual.detach().double().cpu()
    e = expected.detach().double().cpu()
    scale = e.norm().item()
    diff = (a - e).norm().item()
    rel = diff / scale if scale > 0 else diff
    emax = e.abs().max().item() if e.numel() else 0.0
    amax = (a - e).abs().max().item() if e.numel() else 0.0
    return rel, (amax / emax if emax > 0 else amax)


def _close(a: torch.Tensor, e: torch.Tensor, tol: float = 1e-3) -> bool:
    if a.shape != e.shape:
        return False
    rel, _ = errors(a, e)
    return rel <= tol


#: A single number is always "the reference times a constant": no generic diagnosis for it.
MIN_DIAGNOSIS_ELEMENTS = 2
#: A chunk-order search tries at most this many orderings (6 chunks: the 15 swaps, not all 720).
MAX_ORDERINGS = 24


class _Explains:
    """Does a candidate explain the student's output? Only if it removes nearly all of the error:
    within 1e-3 of the output AND at most a tenth of the output's own distance to the reference
    (an answer off by 3e-4, e.g. tanh-approximate GELU, is not "the reference plus 4e-6")."""

    def __init__(self, actual: torch.Tensor, expected: torch.Tensor):
        self.a = actual
        rel, _ = errors(actual, expected)
        self.tol = min(1e-3, 0.1 * rel)

    def __call__(self, candidate: torch.Tensor) -> bool:
        return _close(self.a, candidate, self.tol)


Variant = Union[torch.Tensor, Callable[[], torch.Tensor], None]


def _orderings(n: int):
    """Chunk orders worth trying: all of them for up to 4 chunks, else each single swap."""
    if n <= 4:
        yield from (p for p in itertools.permutations(range(n)) if p != tuple(range(n)))
        return
    for i, j in itertools.combinations(range(n), 2):
        p = list(range(n))
        p[i], p[j] = p[j], p[i]
        yield tuple(p)


def diagnose(actual: torch.Tensor, expected: torch.Tensor, variants: Mapping[str, Variant] | None = None) -> str | None:
    """Name the classic mistake the output matches, or None. Same-shape inputs only.

    A diagnosis is offered only when it is the likely mistake (see :class:`_Explains`), and the
    search is bounded so that a failing check answers within a second or two.
    """
    a = actual.detach().double().cpu()
    e = expected.detach().double().cpu()
    explains = _Explains(a, e)
    for description, variant in (variants or {}).items():
        if callable(variant):  # expensive variants (a whole extra model forward) only on failure
            variant = variant()
        if variant is not None and tuple(variant.shape) == tuple(a.shape) and explains(variant.detach().double().cpu()):
            return f"your output matches what you get with {description}."
    if e.numel() < MIN_DIAGNOSIS_ELEMENTS:
        return None
    if explains(-e):
        return "your output is the reference with its sign flipped."
    denom = (e * e).sum().item()
    if denom > 0:
        k = (a * e).sum().item() / denom
        if abs(k - 1) > 1e-3 and abs(k) > 1e-6 and explains(k * e):
            return (f"your output is the reference times a constant factor of about {k:.4g} "
                    f"(1/{1 / k:.4g}): look for a missing or extra scale.")
    offset = (a - e).mean().item()
    if abs(offset) > 1e-6 and explains(e + offset):
        return f"your output is the reference plus a constant of about {offset:.4g}."
    for i, j in itertools.combinations(range(e.ndim), 2):
        if e.shape[i] == e.shape[j] and e.shape[i] > 1 and explains(e.transpose(i, j)):
            return f"your output matches the reference with dimensions {i} and {j} swapped (a transpose)."
    for d in range(e.ndim):
        if e.shape[d] > 1 and explains(e.flip(d)):
            return f"your output matches the reference reversed along dimension {d}."
    last = e.shape[-1] if e.ndim else 0
    for n in (2, 3, 4, 6):
        if last % n or last // n < 1 or n > 4 and last // n < 2:
            continue
        chunks = e.chunk(n, dim=-1)
        for perm in itertools.islice(_orderings(n), MAX_ORDERINGS):
            if explains(torch.cat([chunks[p] for p in perm], dim=-1)):
                return (f"your last dimension holds the right {n} chunks in the wrong order "
                        f"(order {list(perm)} instead of {list(range(n))}).")
    return None


def _broadcast_hint(actual: torch.Tensor, expected: torch.Tensor) -> str | None:
    """The classic broadcasting traps: a (B,) factor against (B, C, H, W), or a result blown up."""
    got, want = tuple(actual.shape), tuple(expected.shape)
    if actual.ndim < expected.ndim and got == want[:actual.ndim] and all(s == 1 for s in want[actual.ndim:]):
        trail = ", 1" * (expected.ndim - actual.ndim)
        return (f"a {got} tensor is missing its trailing size-1 dimensions: broadcast against (B, C, H, W) "
                f"it would line up with the LAST axis, not the batch. Reshape it to {got[:1] + (1,) * (expected.ndim - 1)} "
                f"(e.g. t[:, None, None, None] or t.view(-1{trail})).")
    try:
        grown = torch.broadcast_shapes(got, want) == actual.shape and actual.numel() > expected.numel()
    except RuntimeError:
        grown = False
    if grown:
        return (f"your result is larger than the reference, as if a {want} tensor had been broadcast against "
                f"another operand: e.g. a (B,) or (N,) tensor combined with a (B, 1) or (N, 1) one gives (B, B) / "
                f"(N, N). Print the shapes of the tensors you combine and make them line up explicitly.")
    return None


def _shape_hint(actual: torch.Tensor, expected: torch.Tensor) -> str | None:
    trap = _broadcast_hint(actual, expected)
    if trap or actual.numel() != expected.numel() or expected.ndim > 6:
        return trap
    for perm in itertools.islice(itertools.permutations(range(expected.ndim)), 120):
        if tuple(expected.shape[p] for p in perm) == tuple(actual.shape):
            if _close(actual, expected.permute(*perm)):
                return f"your values are right but laid out as the reference permuted by {list(perm)}."
    if _close(actual.reshape(expected.shape), expected):
        return "your values are right and in the right order: only the final shape is off (a reshape)."
    return "it has as many elements as the reference: check the order of your reshapes/permutes."


def _dtype_hint(actual: torch.Tensor, expected: torch.Tensor) -> str:
    low = (torch.float16, torch.bfloat16)
    if expected.dtype in low and actual.dtype == torch.float32:
        return (f" The answer keeps the input's precision ({expected.dtype} in, {expected.dtype} out, as the "
                f"docstring says): compute in float32 if you like, then cast back with .to(x.dtype).")
    if expected.dtype == torch.float32 and actual.dtype in low:
        return (" The answer is float32 for these inputs (see the docstring's dtype rule): upcast with .float() "
                "where the reference does.")
    if expected.dtype == torch.float32 and actual.dtype == torch.float64:
        return " A float64 constant (a numpy value or torch.tensor(..., dtype=float64)) promoted your result."
    return ""


def assert_close(
    actual: object,
    expected: torch.Tensor,
    *,
    name: str,
    rtol: float = RTOL,
    max_tol: float = MAX_TOL,
    variants: Mapping[str, Variant] | None = None,
    check_dtype: bool = True,
    check_device: bool = True,
) -> None:
    """Raise :class:`ComparisonError` unless ``actual`` matches ``expected`` to the tolerance.

    ``variants`` maps a description of a known mistake ("shift and scale swapped") to the
    output that mistake produces (or a function computing it, called only on failure); a
    match is reported as the diagnosis.
    """
    if not isinstance(actual, torch.Tensor):
        kind = getattr(actual, "course_type_name", type(actual).__name__)
        raise ComparisonError(f"{name}: expected a torch.Tensor, got {kind}.")
    if actual.shape != expected.shape:
        msg = f"{name}: shape {tuple(actual.shape)}, expected {tuple(expected.shape)}."
        hint = _shape_hint(actual, expected)
        raise ComparisonError(msg + (f"\n  diagnosis: {hint}" if hint else ""))
    if check_dtype and actual.dtype != expected.dtype:
        raise ComparisonError(f"{name}: dtype {actual.dtype}, expected {expected.dtype}." + _dtype_hint(actual, expected))
    if check_device and actual.device.type != expected.device.type:
        raise ComparisonError(
            f"{name}: tensor is on {actual.device}, expected {expected.device}: create new tensors "
            f"on the input's device (e.g. torch.arange(..., device=x.device))."
        )
    if not torch.isfinite(actual).all():
        bad = int((~torch.isfinite(actual)).sum())
        raise ComparisonError(f"{name}: {bad} of {actual.numel()} elements are NaN or infinite.")
    rel, rel_max = errors(actual, expected)
    if rel <= rtol and rel_max <= max_tol:
        return
    a = actual.detach().double().cpu()
    e = expected.detach().double().cpu()
    diff = (a - e).abs()
    worst = int(diff.argmax())
    where = _fmt_index(worst, e.shape)
    bound = max_tol * e.abs().max().item()
    outside = int((diff > bound).sum())
    lines = [
        f"{name}: values differ from the reference.",
        f"  shape {tuple(e.shape)}, {actual.dtype} on {actual.device}",
        f"  relative L2 error {rel:.2e} (tolerance {rtol:.0e}); largest error {diff.max().item():.3e} "
        f"= {rel_max:.2e} of the reference's largest value (tolerance {max_tol:.0e})",
        f"  worst element at index {where}: got {a.flatten()[worst].item():.6g}, "
        f"expected {e.flatten()[worst].item():.6g}",
        f"  {outside} of {e.numel()} elements outside tolerance",
    ]
    hint = diagnose(actual, expected, variants)
    if hint:
        lines.append(f"  diagnosis: {hint}")
    raise ComparisonError("\n".join(lines))

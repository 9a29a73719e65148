"""Calling a submission: fresh copies of inputs, strict fp32, forbidden references, clear errors."""

from __future__ import annotations

import copy
import os
from typing import Any, Iterable

import torch

from .guard import ReferenceCallError, forbid
from .runtime import strict_fp32


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


class SubmissionError(AssertionError):
    """The submission is missing, not callable, unfinished, or raised: message for the student."""


def _fresh(value: Any) -> Any:
    # The student may modify inputs in place; the reference and later cases must not see it.
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, torch.nn.Module):
        return copy.deepcopy(value)
    return value


_NO_HARNESS = object()


def call(fn: Any, name: str, *args: Any, forbidden: Iterable[str] = (), case: str = "",
         user_fn: Any = _NO_HARNESS, **kwargs: Any) -> Any:
    """Call the student's ``fn`` on fresh copies of ``args``; turn every failure into a message.

    ``user_fn`` is the student's own function when ``fn`` is a harness around it (a case's
    ``invoke``): the missing/not-callable checks and messages are about that one.
    """
    own = fn if user_fn is _NO_HARNESS else user_fn
    where = f" ({case})" if case else ""
    if own is None:
        raise SubmissionError(f"{name}: not defined. Run the cell that defines `{name}` first.")
    if not callable(own):
        raise SubmissionError(f"{name}: expected a function, got {type(own).__name__}.")
    args = tuple(_fresh(a) for a in args)
    kwargs = {k: _fresh(v) for k, v in kwargs.items()}
    try:
        with strict_fp32(), forbid(forbidden, name), torch.no_grad():
            return fn(*args, **kwargs)
    except ReferenceCallError:
        raise
    except NotImplementedError as exc:
        raise SubmissionError(_not_implemented(name, own, exc)) from None
    except SubmissionError:
        raise
    except Exception as exc:  # the student's bug, reported with the input that triggered it
        inner = _innermost(exc)
        via = f" (in `{inner}`)" if inner not in (getattr(own, "__name__", name), name, "<module>", "<lambda>") else ""
        raise SubmissionError(f"{name}{where} raised {type(exc).__name__}{via}: {exc}{_broadcast_note(exc)}") from exc


def _broadcast_note(exc: BaseException) -> str:
    """torch's "size of tensor a (3) must match ... at non-singleton dimension 3" is, in this course,
    nearly always a per-sample (B,) tensor meeting a (B, C, H, W) one: say so."""
    if isinstance(exc, RuntimeError) and "must match the size of tensor" in str(exc):
        return ("\n  diagnosis: two tensors do not broadcast. If one is a per-sample (B,) value (timestep, sigma, "
                "alpha), it lines up with the LAST axis of a (B, C, H, W) tensor: reshape it to (B, 1, 1, 1) "
                "first (e.g. s[:, None, None, None] or s.view(-1, *[1] * (x.ndim - 1))).")
    return ""


def _innermost(exc: BaseException) -> str:
    """The function that raised, for messages: the student's own, not torch's internals."""
    tb, found = exc.__traceback__, "<module>"
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if "site-packages" not in filename and not filename.startswith(_PACKAGE_DIR):
            found = tb.tb_frame.f_code.co_name
        tb = tb.tb_next
    return found


def _not_implemented(name: str, fn: Any, exc: BaseException) -> str:
    """Name the unfinished function: often an earlier exercise that this one calls."""
    where = _innermost(exc)
    own = getattr(fn, "__name__", name)
    if where not in (own, name, "<module>"):
        return (f"{name}: it calls `{where}`, which is not implemented yet "
                f"(raises NotImplementedError): finish that one first.")
    return f"{name}: not implemented yet (it raises NotImplementedError)."

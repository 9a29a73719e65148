"""The comparison helper: what it reports and which mistakes it names."""

import pytest
import torch

from grader.compare import ComparisonError, assert_close

E = torch.randn(2, 6, 6, 12, generator=torch.Generator().manual_seed(0))


def _message(actual, expected=E, **kw):
    with pytest.raises(ComparisonError) as err:
        assert_close(actual, expected, name="x", **kw)
    return str(err.value)


def test_rounding_passes():
    assert_close(E * (1 + 1e-7), E, name="x")


def test_shape_comes_first_and_permutation_is_named():
    msg = _message(E.permute(0, 3, 1, 2))
    assert msg.startswith("x: shape (2, 12, 6, 6), expected (2, 6, 6, 12)")
    assert "permuted by [0, 3, 1, 2]" in msg


@pytest.mark.parametrize("actual,needle", [
    pytest.param(-E, "sign flipped", id="sign"),
    pytest.param(E * 8 ** 0.5, "constant factor of about 2.828", id="scale_sqrt_d"),
    pytest.param(E + 0.5, "plus a constant", id="offset"),
    pytest.param(E.transpose(1, 2), "dimensions 1 and 2 swapped", id="transpose"),
    pytest.param(torch.cat(E.chunk(2, -1)[::-1], -1), "2 chunks in the wrong order", id="chunks"),
    pytest.param(E.flip(1), "reversed along dimension 1", id="flip"),
])
def test_diagnosis(actual, needle):
    msg = _message(actual)
    assert needle in msg
    assert "tolerance 1e-04" in msg and "worst element at index" in msg


def test_named_variant_wins():
    wrong = E * 3 + 1
    assert "with shift and scale swapped" in _message(wrong, variants={"shift and scale swapped": wrong})


def test_dtype_device_and_nan_and_type():
    assert "dtype torch.float64" in _message(E.double())
    assert "NaN" in _message(E.clone().fill_(float("nan")))
    assert "expected a torch.Tensor, got list" in _message([1, 2])


def test_relative_tolerance_scales_with_the_tensor():
    big = E * 1e4
    assert_close(big + 1e-3 * torch.randn_like(big), big, name="x")  # 1e-7 relative: fine
    assert "values differ" in _message(big * (1 + 1e-3), big)


def test_no_diagnosis_for_a_single_number():
    from grader.compare import diagnose

    assert diagnose(torch.tensor([1.02]), torch.tensor([1.0])) is None


def test_a_small_error_is_not_called_a_constant_offset():
    """tanh-approximate vs exact GELU: off by ~1e-4, not 'the reference plus 4e-06'."""
    from grader.compare import diagnose

    x = torch.linspace(-3, 3, 1000)
    exact = torch.nn.functional.gelu(x)
    approx = torch.nn.functional.gelu(x, approximate="tanh")
    assert diagnose(approx, exact) is None


def test_a_real_offset_is_still_diagnosed():
    from grader.compare import diagnose

    e = torch.randn(64)
    assert "plus a constant" in diagnose(e + 0.5, e)


def test_six_chunk_diagnosis_is_bounded(monkeypatch):
    """A wrong sincos_pos_embed_2d once took 36 s to report (all 720 orderings of six chunks of a
    large tensor). The search now tries a bounded number of candidates: counted, not timed."""
    import grader.compare as compare

    calls = []
    real = compare._close
    monkeypatch.setattr(compare, "_close", lambda *a, **k: calls.append(1) or real(*a, **k))
    e = torch.randn(256, 1152, dtype=torch.float64)
    compare.diagnose(torch.randn(256, 1152), e)
    assert len(calls) <= 64, len(calls)


@pytest.mark.parametrize("got, want, says", [
    ((3,), (3, 1, 1, 1), "(3, 1, 1, 1)"),          # a (B,) factor that would line up with W, not B
    ((8, 8, 8, 8), (8, 8), "broadcast"),            # lesson 1's gradient blown up by broadcasting
    ((4, 4), (4, 1), "broadcast"),
])
def test_shape_mismatch_names_the_broadcasting_trap(got, want, says):
    with pytest.raises(ComparisonError) as err:
        assert_close(torch.ones(got), torch.ones(want), name="x")
    assert says in str(err.value) and "diagnosis" in str(err.value)


def test_dtype_mismatch_states_the_precision_contract():
    with pytest.raises(ComparisonError, match=r"float16 in, torch.float16 out.*\.to\(x\.dtype\)"):
        assert_close(torch.ones(3), torch.ones(3, dtype=torch.float16), name="x")


def test_a_broadcast_error_inside_the_submission_is_explained():
    from grader.exercise import SubmissionError, call

    with pytest.raises(SubmissionError, match=r"must match.*\n  diagnosis: .*\(B, 1, 1, 1\)"):
        call(lambda x, t: x * t, "vp_perturb", torch.zeros(3, 4, 5, 6), torch.zeros(3))

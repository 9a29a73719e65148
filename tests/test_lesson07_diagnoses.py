"""Lesson 7's public checks name the classic mistakes (generic pass/fail cases: test_hidden_tests.py)."""

from __future__ import annotations

import pytest

from grader.exercises import lesson
from tests.notebook_code import public_diagnosis

LESSON = "07_latent_consistency_and_turbo"
EXERCISES = lesson(LESSON).EXERCISES


@pytest.mark.parametrize("mistake,expected", [
    ("lcm_scalings__unscaled_timestep", "timestep_scaling ignored"),
    ("lcm_scalings__consistency_model_sigma_min", "lesson 6's continuous-time form"),
    ("lcm_scalings__swapped", "c_skip and c_out swapped"),
    ("lcm_timesteps__fixed_stride", "fixed stride"),
    ("lcm_timesteps__ascending", "ascending"),
    ("lcm_timesteps__no_minus_one", "i*k - 1"),
    ("lcm_step__no_boundary_scalings", "boundary scalings left out"),
    ("lcm_step__renoise_with_eps", "deterministic DDIM step"),
    ("lcm_step__renoise_to_current_t", "current timestep"),
    ("lcm_time_embedding__w_is_guidance_scale", "guidance_scale - 1"),
    ("lcm_time_embedding__cos_first", "[cos | sin]"),
    ("lcm_time_embedding__no_times_1000", "1000"),
    ("lcm_time_embedding__denominator_half", "half - 1"),
    ("lcm_time_embedding__cond_proj_ignored", "cond_proj unused"),
    ("fuse_lora__no_alpha_over_rank", "alpha / rank factor left out"),
    ("fuse_lora__first_rank_for_all", "first module's"),
    ("fuse_lora__linear_layers_only", "Conv2d"),
    ("add_losses__hinge_signs_swapped", "hinge signs swapped"),
    ("add_losses__no_c_t", "c(t)"),
    ("add_losses__mse_mean", "averaged over elements"),
    ("add_losses__generator_hinge", "hinge for the generator"),
    ("add_losses__returns_shape_one", "0-d tensor"),
])
def test_public_check_diagnoses_the_classic_mistake(mistake, expected):
    message = public_diagnosis(LESSON, mistake)
    assert expected in message, message


def test_public_checks_cover_every_path_the_hidden_tests_grade():
    """A custom timestep_scaling and the last step are in the public checks, not only in the hidden ones."""
    for mistake, expected in (("lcm_scalings__scaling_fixed_at_10", "lcm_scalings"),
                              ("lcm_step__scaling_fixed_at_10", "timestep_scaling 10 instead of the one given"),
                              ("lcm_step__noisy_last_step", "the last step"),
                              ("lcm_time_embedding__odd_width_not_padded", "time_cond_proj_dim 5")):
        assert expected in public_diagnosis(LESSON, mistake)


def test_cases_and_harnesses_never_call_a_reference(monkeypatch):
    """The untrusted side (cases and their invoke harnesses) builds inputs and runs the student's code only."""
    from grader.cases import hidden_context, public_context
    from grader.reference import latent_consistency_and_turbo as ref
    from tests.notebook_code import solution_namespace

    ns = solution_namespace(LESSON)
    for attr in [a for a in dir(ref) if not a.startswith("_") and callable(getattr(ref, a))]:
        monkeypatch.setattr(ref, attr, lambda *a, **k: (_ for _ in ()).throw(AssertionError("reference called")))
    for name, ex in EXERCISES.items():
        for ctx in (public_context(), hidden_context(7, "cpu")):
            for case in ex.cases(ctx):
                ex.call(ns[name], case)

"""Lesson 10's hidden tests in-process: the solution passes, every wrong implementation fails."""

from __future__ import annotations

import pytest

from grader.exercises import lesson
from tests.notebook_code import namespace_with_wrong, solution_namespace, wrong_implementations

LESSON = "10_diffusion_transformers"
EXERCISES = lesson(LESSON).EXERCISES
WRONG = wrong_implementations(LESSON)


@pytest.mark.parametrize("name", list(EXERCISES))
def test_solution_passes_public_and_hidden(name):
    ns = solution_namespace(LESSON)
    assert "public checks passed" in EXERCISES[name].public(ns[name])
    assert "hidden tests passed" in EXERCISES[name].hidden(ns[name])


@pytest.mark.parametrize("exercise,name", [pytest.param(e, n, id=n) for e, m, n in WRONG])
def test_hidden_test_rejects_wrong_implementation(exercise, name):
    ns = namespace_with_wrong(LESSON, exercise, name)
    with pytest.raises(AssertionError) as err:
        EXERCISES[exercise].hidden(ns[exercise])
    assert exercise in str(err.value)  # the message names the exercise it is about


def test_every_exercise_has_at_least_five_wrong_implementations():
    counts = {name: sum(1 for e, _, _ in WRONG if e == name) for name in EXERCISES}
    assert all(n >= 5 for n in counts.values()), counts


def test_unimplemented_stub_fails_with_a_clear_message():
    def stub(*args):
        raise NotImplementedError()

    for name, ex in EXERCISES.items():
        with pytest.raises(AssertionError, match="not implemented yet"):
            ex.hidden(stub)


@pytest.mark.parametrize("mistake,expected", [
    ("patchify__tokens_column_major", "column-major"),
    ("adaln_zero__shift_scale_swapped", "shift and scale swapped"),
    ("adaln_zero__no_one_plus", "1 +"),
    ("self_attention__missing_sqrt_d", "1/sqrt(head_dim)"),
    ("timestep_embedding__sin_first", "wrong order"),
    ("timestep_embedding__freq_shift_zero", "downscale_freq_shift=0"),
    ("dit_forward__final_shift_scale_swapped", "shift and scale swapped"),
    ("patchify__calls_conv2d", "calls"),
    ("dit_block__calls_block_forward", "calls"),
])
def test_public_check_diagnoses_the_classic_mistake(mistake, expected):
    exercise = mistake.split("__")[0]
    ns = namespace_with_wrong(LESSON, exercise, mistake)
    with pytest.raises(AssertionError) as err:
        EXERCISES[exercise].public(ns[exercise])
    assert expected in str(err.value), str(err.value)
    assert "def " not in str(err.value)  # never the reference's code

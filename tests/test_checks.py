"""What a student sees from a check, a Validate and a demo cell (grader.checks), in-process."""

from __future__ import annotations

import re

import pytest

from grader.checks import STRICT_DEMOS_ENV, VALIDATE_ENV, CheckFailed, LessonChecks, demo_message
from tests.notebook_code import solution_namespace

LESSON = "10_diffusion_transformers"


@pytest.fixture(scope="module")
def checks():
    return LessonChecks(LESSON)


def _stub(*_a, **_k):
    raise NotImplementedError()


def test_a_pass_is_one_line_and_the_cell_echoes_nothing(checks, capsys):
    ns = solution_namespace(LESSON)
    assert checks.run("patchify", ns) is None          # no bare True/False under the verdict
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("PASS  patchify: ") and "public checks" in out[0]
    assert checks.run("unpatchify", ns) is None
    again = capsys.readouterr().out.strip().splitlines()
    assert len(again) == 1, again                      # banners were shown once, by the first check


def test_a_banner_shown_by_the_setup_cell_is_not_repeated(capsys):
    fresh = LessonChecks(LESSON)
    ns = solution_namespace(LESSON)
    passed, lines = fresh.verdict("patchify", ns)
    banners = [l.strip() for l in lines[1:]]
    assert passed and banners and all(b.startswith("weights:") for b in banners)
    other = LessonChecks(LESSON)
    other.show(*banners)
    assert capsys.readouterr().out.splitlines() == banners
    # the verdict lines carry their elapsed time: compare them without it
    untimed = lambda ls: [re.sub(r"\(\d+\.\d+ s\)", "", l) for l in ls]  # noqa: E731
    assert untimed(other.verdict("patchify", ns)[1]) == untimed(lines[:1])


def test_a_failure_gives_the_diagnosis_not_a_traceback(checks, capsys):
    checks.run("patchify", {"patchify": _stub})
    out = capsys.readouterr().out
    assert out.startswith("FAIL  patchify") and "NotImplementedError" in out and "Traceback" not in out


def test_validate_is_silent_in_a_students_session(checks, capsys, monkeypatch):
    monkeypatch.delenv(VALIDATE_ENV, raising=False)
    assert checks.validate("patchify", {"patchify": _stub}) is None
    assert capsys.readouterr().out == ""


def test_validate_fails_the_cell_under_nbgrader_validate(checks, monkeypatch):
    monkeypatch.setenv(VALIDATE_ENV, "1")
    with pytest.raises(CheckFailed, match="FAIL  patchify") as err:
        checks.validate("patchify", {"patchify": _stub})
    assert err.value._render_traceback_()[0].startswith("CheckFailed: FAIL  patchify")
    checks.validate("patchify", solution_namespace(LESSON))


def _unfinished_demo():
    def dit_block(x):
        raise NotImplementedError()
    return dit_block(1)


@pytest.mark.parametrize("make, says", [
    (_unfinished_demo, "`dit_block` is not finished yet"),
    (lambda: undefined_name, "is not defined"),  # noqa: F821
    (lambda: [][1], "demo stopped: IndexError"),
], ids=["not_implemented", "name_error", "other_error"])
def test_a_demo_says_what_is_missing_and_the_notebook_goes_on(checks, capsys, monkeypatch, make, says):
    monkeypatch.delenv(STRICT_DEMOS_ENV, raising=False)
    with checks.demo("dit_block"):
        make()
    out = capsys.readouterr().out
    assert says in out and "Traceback" not in out


def test_a_demo_failure_is_an_error_in_the_source_notebooks(checks, monkeypatch):
    monkeypatch.setenv(STRICT_DEMOS_ENV, "1")
    with pytest.raises(NotImplementedError):
        with checks.demo("dit_block"):
            _unfinished_demo()


def test_demo_message_hides_library_frames():
    import torch

    try:
        torch.zeros(2, 3) @ torch.zeros(2, 3)
    except RuntimeError as exc:
        text = demo_message(exc, ("dit_block",))
    assert "site-packages" not in text and "checks.run('dit_block')" in text

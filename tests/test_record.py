"""Trusted grading's two sides: the kernel records, the trusted process judges (grader.record, grader.verify).

The verdict equals the in-process hidden test's; nothing the untrusted side writes can earn a
point it did not compute, crash the judge, or make it read outside the record folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from grader.exercises import lesson
from grader.record import MAX_JSON_BYTES, read_entries, write_entry
from grader.verify import judge_job
from tests.hostile_cases import AFTER, CASES
from tests.notebook_code import answer_cells, trusted_verdicts, wrong_implementations, wrong_module

LESSON = "10_diffusion_transformers"
EXERCISES = lesson(LESSON).EXERCISES
PRELUDE = "import math\nimport torch\nimport torch.nn.functional as F\n"


def _verdicts(cells, tmp_path: Path):
    return trusted_verdicts(LESSON, cells, tmp_path, seed_base=1234)


def test_solution_passes_every_exercise(tmp_path):
    verdicts = _verdicts([PRELUDE, *answer_cells(LESSON).values()], tmp_path)
    assert all(v["passed"] for v in verdicts.values()), verdicts
    assert all("hidden tests passed" in v["message"] for v in verdicts.values())


@pytest.mark.parametrize("exercise,name", [pytest.param(e, n, id=n) for e, _, n in wrong_implementations(LESSON)[::4]])
def test_wrong_implementation_fails_its_exercise(exercise, name, tmp_path):
    src = Path(wrong_module(LESSON).__file__).read_text()
    cells = [PRELUDE, *answer_cells(LESSON).values(), src, f"{exercise} = {name}"]
    verdicts = _verdicts(cells, tmp_path)
    assert not verdicts[exercise]["passed"]
    assert verdicts["unpatchify" if exercise != "unpatchify" else "patchify"]["passed"]


# The attack that scored full marks against the old recorder: read the checker's frames and heap.
STACK_WALKER = CASES["walks_the_checker_stack"][len(AFTER):]


def test_no_reference_exists_where_the_student_code_runs(tmp_path):
    """The sys._getframe / gc attack that scored full marks against the old recorder."""
    verdicts = _verdicts([PRELUDE, *answer_cells(LESSON).values(), STACK_WALKER], tmp_path)
    assert not verdicts["patchify"]["passed"]
    assert verdicts["unpatchify"]["passed"]


def test_cases_never_call_a_reference(monkeypatch):
    """The untrusted side builds inputs only: every reference function raises while cases are built."""
    from grader.cases import hidden_context, public_context
    from grader.reference import diffusion_transformers as ref

    for attr in [a for a in dir(ref) if not a.startswith("_") and callable(getattr(ref, a))]:
        monkeypatch.setattr(ref, attr, lambda *a, **k: (_ for _ in ()).throw(AssertionError("reference called")))
    for ex in EXERCISES.values():
        for ctx in (public_context(), hidden_context(7, "cpu")):
            assert list(ex.cases(ctx))


def _solution_record(tmp_path: Path) -> tuple[Path, dict]:
    _verdicts([PRELUDE, *answer_cells(LESSON).values()], tmp_path)
    return tmp_path / "rec", {name: 1234 + i for i, name in enumerate(EXERCISES)}


def test_forged_records_earn_nothing(tmp_path):
    record, seeds = _solution_record(tmp_path)
    for f in record.glob("patchify.*"):
        f.unlink()
    for i in range(3):   # claims of the right shape, the wrong values
        write_entry(str(record), "patchify", i, {"label": "x (2, 4, 6, 10), patch size 2", "status": "ok",
                                                 "value": torch.zeros(2, 15, 8)})
    verdicts = judge_job(LESSON, record, seeds)
    assert not verdicts["patchify"].passed and verdicts["unpatchify"].passed


@pytest.mark.parametrize("attack", ["symlink", "fifo", "oversized", "deep", "garbage", "directory", "hardlink"])
def test_hostile_record_files_read_as_no_result(tmp_path, attack):
    record, seeds = _solution_record(tmp_path)
    target = record / "unpatchify.0.json"
    outside = tmp_path / "outside.json"
    outside.write_text((record / "unpatchify.0.json").read_text())   # a valid record, outside the folder
    target.unlink()
    if attack == "symlink":
        target.symlink_to(outside)
    elif attack == "hardlink":
        os.link(outside, target)   # the reader cannot tell; it is a valid record of the same case
    elif attack == "fifo":
        os.mkfifo(target)          # opening it for reading would block a naive reader forever
    elif attack == "oversized":
        with target.open("w") as f:
            f.write('{"label": "' + "x" * (MAX_JSON_BYTES + 10) + '"}')
    elif attack == "deep":
        target.write_text("[" * 100_000 + "]" * 100_000)
    elif attack == "garbage":
        target.write_bytes(os.urandom(4096))
    elif attack == "directory":
        target.mkdir()
    verdicts = judge_job(LESSON, record, seeds)
    if attack == "hardlink":
        assert verdicts["unpatchify"].passed
    else:
        assert not verdicts["unpatchify"].passed
        assert "no result" in verdicts["unpatchify"].message
    assert verdicts["patchify"].passed


def test_a_symlinked_record_folder_is_not_followed(tmp_path):
    record, seeds = _solution_record(tmp_path)
    moved = tmp_path / "elsewhere"
    record.rename(moved)
    record.symlink_to(moved)
    verdicts = judge_job(LESSON, record, seeds)
    assert not any(v.passed for v in verdicts.values())


def test_huge_tensor_file_is_refused(tmp_path):
    record, seeds = _solution_record(tmp_path)
    with (record / "unpatchify.0.safetensors").open("r+b") as f:
        f.truncate(300 << 20)     # past the per-file cap (sparse: costs no disk)
    assert read_entries(str(record), "unpatchify", 1)[0] is None


def test_label_mismatch_is_reported(tmp_path):
    record, seeds = _solution_record(tmp_path)
    path = record / "unpatchify.0.json"
    entry = json.loads(path.read_text())
    entry["label"] = "something else"
    path.write_text(json.dumps(entry))
    v = judge_job(LESSON, record, seeds)["unpatchify"]
    assert not v.passed and "do not match" in v.message


def test_values_round_trip(tmp_path):
    import numpy as np

    value = {"a": (torch.arange(6.0).reshape(2, 3), [1, 2.5, True, None, "s"]), "b": np.arange(4, dtype=np.uint8)}
    write_entry(str(tmp_path), "ex", 0, {"label": "l", "status": "ok", "value": value})
    (entry,) = read_entries(str(tmp_path), "ex", 1)
    got = entry["value"]
    assert torch.equal(got["a"][0], value["a"][0]) and got["a"][1] == [1, 2.5, True, None, "s"]
    assert isinstance(got["b"], np.ndarray) and got["b"].dtype == np.uint8 and (got["b"] == value["b"]).all()

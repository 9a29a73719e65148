"""release/, solutions/ and the example submissions are build products: they must not drift."""

from __future__ import annotations

import filecmp
import shutil

import pytest

from grader.cli import release
from tests import make_examples
from tests.notebook_code import REPO

LESSONS = sorted(p.name for p in (REPO / "source").iterdir() if p.is_dir())


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory):
    root = tmp_path_factory.mktemp("rebuild")
    shutil.copytree(REPO / "source", root / "source")
    release(LESSONS, root=root)
    return root


@pytest.mark.parametrize("lesson", LESSONS)
@pytest.mark.parametrize("folder", ["release", "solutions"])
def test_committed_build_matches_a_fresh_one(rebuilt, lesson, folder):
    fresh, committed = rebuilt / folder / lesson, REPO / folder / lesson
    cmp = filecmp.dircmp(fresh, committed)
    assert not (cmp.left_only or cmp.right_only), f"files differ: {cmp.left_only} {cmp.right_only}"
    for name in cmp.common_files:
        assert (fresh / name).read_bytes() == (committed / name).read_bytes(), (
            f"{folder}/{lesson}/{name} is stale: run `course release {lesson}`")


def test_example_submissions_are_current():
    assert make_examples.main(["--check"]) == 0, "run `python -m tests.make_examples`"


def test_source_notebooks_carry_no_outputs():
    import nbformat

    for path in (REPO / "source").glob("*/*.ipynb"):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{path.name}: {cell.source[:40]}"

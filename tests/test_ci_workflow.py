"""The shipped GitHub Actions workflow: its commands run here (sharded autograde, then merge)."""

from __future__ import annotations

import re

import pytest

from grader.cli import main
from tests.notebook_code import REPO

WORKFLOW = REPO / ".github" / "workflows" / "autograde.yml"
LESSON = "10_diffusion_transformers"


def test_workflow_runs_the_commands_tested_here():
    text = WORKFLOW.read_text()
    assert re.search(r'course autograde "submissions/\$ASSIGNMENT" -a "\$ASSIGNMENT" \\\s*\n\s*-o "reports/shard-\$\{\{ '
                     r'matrix.shard \}\}" --shard \$\{\{ matrix.shard \}\}/4 -j 2 --no-progress', text)
    assert "course merge reports/shard-* -o reports/gradebook" in text
    assert "pip install torch==2.13.0" in text


@pytest.mark.slow
@pytest.mark.extended
def test_shards_cover_the_batch_once_and_merge(tmp_path, capsys):
    examples = REPO / "tests" / "submissions" / LESSON
    for i in (1, 2):
        assert main(["autograde", str(examples), "-a", LESSON, "-o", str(tmp_path / f"shard-{i}"),
                     "--shard", f"{i}/2", "-j", "2", "--no-progress"]) == 0
    graded = [sorted(p.stem for p in (tmp_path / f"shard-{i}" / "results").glob("*.json")) for i in (1, 2)]
    assert sorted(graded[0] + graded[1]) == ["broken", "correct", "partly_wrong"]
    assert not set(graded[0]) & set(graded[1])
    assert main(["merge", str(tmp_path / "shard-1"), str(tmp_path / "shard-2"), "-o", str(tmp_path / "all")]) == 0
    rows = (tmp_path / "all" / "grades.csv").read_text().splitlines()
    assert len(rows) == 4 and any(r.startswith("correct,") and ",18.0,18.0," in r for r in rows)

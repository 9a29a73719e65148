"""What a student can plant in the exchange is never followed by the instructor's side.

A student owns their inbound/ folder and can change it after `submit`; `collect` then runs as
the instructor (often root). nbgrader's own copy follows links (grader/exchange.py); the
unreadable-notebook hook quotes the submitted file into a page the student receives.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from nbgrader.coursedir import CourseDirectory

from grader.exchange import SafeExchangeCollect
from grader.feedback import unreadable_notebook_hook

SECRET = "root:$6$hash-that-must-not-leak"


@pytest.fixture
def planted(tmp_path):
    secret_dir = tmp_path / "instructor-only"
    secret_dir.mkdir()
    (secret_dir / "shadow").write_text(SECRET)
    sub = tmp_path / "inbound" / "bob+05_flow_matching+2026-12-04 10:00:00.000000 UTC+abc"
    sub.mkdir(parents=True)
    (sub / "flow_matching.ipynb").write_text('{"cells": []}')
    (sub / "timestamp.txt").write_text("2026-12-04 10:00:00.000000 UTC")
    (sub / "evil.ipynb").symlink_to(secret_dir / "shadow")
    (sub / "folder_link").symlink_to(secret_dir)
    os.mkfifo(sub / "pipe.ipynb")                      # copying it would block collect
    (sub / "nested").mkdir()
    (sub / "nested" / "notes.txt").write_text("mine")
    return tmp_path, sub


def _collector(root):
    return SafeExchangeCollect(coursedir=CourseDirectory(root=str(root)))


def _all_text(folder: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file())


def test_collect_copies_plain_files_and_never_follows_a_link(planted):
    root, sub = planted
    dest = root / "submitted" / "bob" / "05_flow_matching"
    _collector(root).do_copy(str(sub), str(dest))
    names = sorted(str(p.relative_to(dest)) for p in dest.rglob("*"))
    assert names == ["flow_matching.ipynb", "nested", "nested/notes.txt", "timestamp.txt"]
    assert SECRET not in _all_text(dest)


def test_collect_refuses_a_submission_folder_that_is_a_link(planted):
    root, sub = planted
    link = sub.parent / "mallory+05_flow_matching+2026-12-04 10:00:00.000000 UTC+def"
    link.symlink_to(root / "instructor-only")
    with pytest.raises(RuntimeError, match="not a plain folder"):
        _collector(root).do_copy(str(link), str(root / "submitted" / "mallory" / "05_flow_matching"))
    assert not (root / "submitted" / "mallory").exists()


def test_the_config_collects_with_it():
    from traitlets.config.loader import PyFileConfigLoader

    from tests.notebook_code import REPO

    config = PyFileConfigLoader("nbgrader_config.py", path=str(REPO)).load_config()
    assert config.ExchangeFactory.collect == "grader.exchange.SafeExchangeCollect"


@pytest.mark.parametrize("plant", ["notebook_link", "timestamp_link"])
def test_the_unreadable_notebook_page_never_quotes_a_planted_link(tmp_path, plant):
    secret = tmp_path / "shadow"
    secret.write_text('{"cells": [' + SECRET)       # invalid JSON: the page would show an excerpt
    folder = tmp_path / "submitted" / "bob" / "05_flow_matching"
    folder.mkdir(parents=True)
    nb = folder / "flow_matching.ipynb"
    if plant == "notebook_link":
        nb.symlink_to(secret)
    else:
        nb.write_text("{not json")
        (folder / "timestamp.txt").symlink_to(secret)
    unreadable_notebook_hook(assignment="05_flow_matching", student="bob", notebooks=[str(nb)])
    page_dir = tmp_path / "feedback" / "bob" / "05_flow_matching"
    assert (page_dir / "flow_matching.html").is_file()
    assert SECRET not in _all_text(page_dir)

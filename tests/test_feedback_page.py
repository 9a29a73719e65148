"""The feedback page a student reads (grader/feedback.py, the course's feedback template):
tracebacks trimmed to the student's frames, MathJax inlined for offline reading, and a page for
a submission that is not a readable notebook. In-process and fast; the pages nbgrader and
`course autograde` actually write are checked in test_pipeline_lesson10.py and
test_plain_nbgrader.py, on the runs those files already make.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from grader.feedback import (
    MARKER,
    diagnose,
    mathjax_script,
    scrub_paths,
    strip_ansi,
    trim_traceback,
    unreadable_notebook_hook,
    write_unreadable_page,
)
from tests.notebook_code import REPO

LESSON = "10_diffusion_transformers"
BROKEN = REPO / "tests" / "submissions" / LESSON / "broken.ipynb"
SITE = "/srv/course/.venv/lib/python3.11/site-packages"


def _cell(n: int, line: int, func: str = "") -> str:
    where = f", in \x1b[36m{func}\x1b[39m\x1b[34m(x)\x1b[39m" if func else ""
    return (f"\x1b[36mCell\x1b[39m\x1b[36m \x1b[39m\x1b[32mIn[{n}]\x1b[39m\x1b[32m, line {line}\x1b[39m{where}\n"
            f"\x1b[32m---> \x1b[39m\x1b[32m{line}\x1b[39m y = f(x)\n")


def _lib(path: str, line: int = 1778) -> str:
    return (f"\x1b[36mFile \x1b[39m\x1b[32m{path}:{line}\x1b[39m, in \x1b[36mModule._call_impl\x1b[39m"
            f"\x1b[34m(self, *args)\x1b[39m\n\x1b[32m-> \x1b[39m\x1b[32m{line}\x1b[39m return forward(*args)\n")


# IPython's entries for a demo cell that calls diffusers' DiT with the student's block inside
# (the shape of lesson 10's last demo on the release notebook), paths as on a grading server.
TRACEBACK = [
    "\x1b[31m---------------------------------------------------------------------------\x1b[39m",
    "\x1b[31mNotImplementedError\x1b[39m                       Traceback (most recent call last)",
    _cell(30, 15),
    _lib(f"{SITE}/torch/nn/modules/module.py"),
    _lib(f"{SITE}/torch/nn/modules/module.py", 1789),
    _lib(f"{SITE}/diffusers/models/transformers/dit_transformer_2d.py", 197),
    _cell(30, 14, "<lambda>"),
    _cell(24, 13, "dit_block"),
    _lib("/srv/course/grader/compare.py", 40),
    "\x1b[31mNotImplementedError\x1b[39m: /tmp/course-autograde-x1/s-bob/autograded/bob/10/weights.pt missing",
]


def test_traceback_keeps_the_students_cells_and_counts_library_frames():
    out = [strip_ansi(e).rstrip("\n") for e in trim_traceback(TRACEBACK)]
    assert [e.split(",")[0] for e in out if e.startswith("Cell")] == ["Cell In[30]", "Cell In[30]", "Cell In[24]"]
    assert "… 3 library frames hidden (torch, diffusers)" in out
    assert "… 1 library frame hidden (grader)" in out
    assert out[-1] == "NotImplementedError: weights.pt missing"  # the exception line, its path shortened
    assert out[:2] == [strip_ansi(e) for e in TRACEBACK[:2]]  # IPython's header as it was
    assert not [e for e in out if "/srv/" in e or "/tmp/" in e or "site-packages" in e]


def test_traceback_without_library_frames_is_unchanged():
    tb = [TRACEBACK[0], TRACEBACK[1], _cell(5, 5), _cell(2, 10, "patchify"), "NotImplementedError: "]
    assert trim_traceback(tb) == tb


def test_a_syntax_error_keeps_its_caret():
    tb = ["  \x1b[36mCell\x1b[39m\x1b[36m \x1b[39m\x1b[32mIn[3]\x1b[39m\x1b[32m, line 1\x1b[39m\n    def f(:\n          ^\n",
          "\x1b[31mSyntaxError\x1b[39m: invalid syntax\n"]
    assert trim_traceback(tb) == tb


@pytest.mark.parametrize("text, expected", [
    ("/work/main/.venv/lib/python3.11/site-packages/torch/x.py:12: UserWarning: slow",
     "x.py:12: UserWarning: slow"),
    ("No such file or directory: '/tmp/course-autograde-a/s-bob/data.png'", "No such file or directory: 'data.png'"),
    ("see https://pytorch.org/docs/stable/nn.html for more", "see https://pytorch.org/docs/stable/nn.html for more"),
    ("ratio 3/4 of (B, N/2, D)", "ratio 3/4 of (B, N/2, D)"),
])
def test_scrub_paths_shortens_absolute_paths_only(text, expected):
    assert scrub_paths(text) == expected


def test_mathjax_is_a_single_self_contained_file():
    js = mathjax_script()
    assert len(js) > 1_000_000 and "MathJax" in js
    assert "</script" not in js.lower()


def test_broken_example_page_says_what_where_and_how_to_fix(tmp_path):
    page = write_unreadable_page(BROKEN, tmp_path / "feedback" / "diffusion_transformers.html", LESSON, 18)
    html = page.read_text()
    what, excerpt = diagnose(BROKEN)
    err = _json_error(BROKEN)
    assert what.startswith(f"the notebook file is not valid JSON: line {err.lineno} column {err.colno}: {err.msg}")
    assert "cut short" in what  # the example is a truncated file
    assert f"{err.lineno:>6} | " in excerpt and excerpt.splitlines()[-1].strip().endswith("^")
    assert MARKER in html and "(Score: 0 / 18)" in html and "Revert Notebook to Checkpoint" in html
    assert "fresh copy" in html and "text editor" in html
    assert not re.search(r"<(script|link)\b", html)  # nothing to load: it works anywhere, offline


def _json_error(path: Path) -> json.JSONDecodeError:
    with pytest.raises(json.JSONDecodeError) as info:
        json.loads(path.read_text())
    return info.value


@pytest.mark.parametrize("content, says", [
    (b"\xff\xfe\x00binary", "not UTF-8 text"),
    (b"", "the file is empty"),
    (b'{"nbformat": 4}', "not a Jupyter notebook"),
    (b'{"cells": [\n<<<<<<< HEAD\n]}\n>>>>>>> theirs\n', "merge-conflict markers"),
])
def test_each_kind_of_unreadable_file_is_named(tmp_path, content, says):
    path = tmp_path / "nb.ipynb"
    path.write_bytes(content)
    assert says in diagnose(path)[0]


def test_autograde_hook_writes_the_page_beside_what_release_feedback_reads(tmp_path):
    """Plain `nbgrader autograde` (Autograde.pre_convert_hook): the page lands where
    generate_feedback's pages go, with the timestamp and secret release_feedback needs; once the
    student resubmits a readable notebook, the page goes."""
    sub = tmp_path / "submitted" / "bob" / LESSON
    sub.mkdir(parents=True)
    nb = sub / "diffusion_transformers.ipynb"
    nb.write_bytes(BROKEN.read_bytes())
    (sub / "timestamp.txt").write_text("2026-12-04 10:00:00.000000 UTC")
    (sub / "submission_secret.txt").write_text("s3cret")
    (tmp_path / "source" / LESSON).mkdir(parents=True)
    (tmp_path / "source" / LESSON / nb.name).write_bytes((REPO / "source" / LESSON / nb.name).read_bytes())
    unreadable_notebook_hook(assignment=LESSON, student="bob", notebooks=[str(nb)], root=str(tmp_path))
    feedback = tmp_path / "feedback" / "bob" / LESSON
    html = (feedback / "diffusion_transformers.html").read_text()
    assert "not valid JSON" in html and "(Score: 0 / 18)" in html
    assert (feedback / "timestamp.txt").read_text().startswith("2026-12-04")
    assert (feedback / "submission_secret.txt").read_text() == "s3cret"

    nb.write_bytes((REPO / "tests" / "submissions" / LESSON / "correct.ipynb").read_bytes())
    unreadable_notebook_hook(assignment=LESSON, student="bob", notebooks=[str(nb)], root=str(tmp_path))
    assert not (feedback / "diffusion_transformers.html").exists()


def _render_feedback(nb) -> str:
    """nbgrader_config.py's feedback preprocessors (those that need no gradebook) and page
    template, on a notebook whose cells carry scores as GetGrades leaves them."""
    import nbformat
    from nbconvert import HTMLExporter
    from traitlets.config import Config
    from traitlets.config.loader import PyFileConfigLoader

    from grader.feedback import nbgrader_templates
    from grader.nbgrader_plugins import InlineMathJax, ScrubGradedOutputs, TrimTracebacks

    cfg = PyFileConfigLoader("nbgrader_config.py", path=str(REPO)).load_config()
    c = Config({"HTMLExporter": dict(cfg.GenerateFeedback.HTMLExporter)})
    c.HTMLExporter.template_name = "feedback"  # what nbgrader's API sets
    c.HTMLExporter.extra_template_paths = [  # where nbgrader's GenerateFeedback finds bootstrap.min.css
        str(Path(nbgrader_templates()).parent / "static" / "node_modules" / "bootstrap" / "dist" / "css")]
    named = {f"{k.__module__}.{k.__name__}" for k in (ScrubGradedOutputs, TrimTracebacks, InlineMathJax)}
    assert named <= set(cfg.GenerateFeedback.preprocessors)  # dotted strings: formgrader shows the config as JSON
    resources = {"nbgrader": {"notebook": "the_speed_landscape", "score": 3.0, "max_score": 12.0, "late_penalty": 0}}
    for pre in (ScrubGradedOutputs, TrimTracebacks, InlineMathJax):
        nb, resources = pre().preprocess(nb, resources)
    return HTMLExporter(config=c).from_notebook_node(nbformat.from_dict(nb), resources=resources)[0]


def test_page_names_exercises_renders_math_offline_and_trims_a_lesson8_notebook():
    import nbformat

    nb = nbformat.read(REPO / "source" / "08_the_speed_landscape" / "the_speed_landscape.ipynb", as_version=4)
    demo = next(c for c in nb.cells if c.cell_type == "code"
                and not {"grade", "solution"} & {k for k, v in c.metadata.get("nbgrader", {}).items() if v})
    demo.outputs = [nbformat.v4.new_output("error", ename="NotImplementedError", evalue="", traceback=TRACEBACK)]
    for c in nb.cells:
        meta = c.metadata.get("nbgrader", {})
        if meta.get("grade") or meta.get("task"):
            meta["score"] = 3.0 if meta["grade_id"] == "heun_step_hidden" else 0.0
    page = _render_feedback(nb)
    toc = page[page.index('<div id="toc">'):page.index("</ol>", page.index('<div id="toc">'))]
    assert ">heun_step</a> — 3 / 3</li>" in toc and ">spaced_timesteps</a> — 0 / 2</li>" in toc
    assert ">when_to_use</a> (written, graded by hand) — 0 / 2</li>" in toc
    assert "Hidden tests: <b>dpmpp_2m_step</b>" in page and "Test cell" not in page
    assert "(Score: 3.0 / 12.0)" in page
    assert not re.findall(r"<(?:script|link|img)\b[^>]*\b(?:src|href)\s*=\s*[\"']?(?:https?:)?//", page)
    assert mathjax_script()[-300:] in page and "window.MathJax" in page and "$" in page
    assert "3 library frames hidden (torch, diffusers)" in page and SITE not in page

"""What a student reads in a feedback page, apart from nbgrader's own layout.

- :func:`trim_traceback`: an error output of a demo or answer cell keeps the exception and the
  frames of the student's notebook cells; runs of library frames (torch, diffusers, the
  course's own package) become one line, and no server path is shown.
- :func:`mathjax_script`: MathJax 3 (``tex-svg-full.js`` from the ``django-static-mathjax``
  package, Apache-2.0) to inline into the page, so formulas render offline: nbgrader's
  feedback template loads MathJax 2 from a CDN, and ``release_feedback`` copies only the
  ``.html`` file, so nothing beside the page would travel with it.
- :func:`unreadable_page`: the page a student gets when the submitted file could not be read
  as a notebook at all (nbgrader itself writes none): what was wrong, where, and how to fix it.

Imported in-process by nbgrader from nbgrader_config.py: keep imports light (no torch).
"""

from __future__ import annotations

import functools
import html
import json
import os
import re
import stat
from pathlib import Path

from .untrusted import read_regular

TEMPLATES = Path(__file__).resolve().parent / "templates"  # feedback/course_feedback.html.j2


def nbgrader_templates() -> str:
    """nbgrader's own template folder (its feedback page, which the course's extends)."""
    import nbgrader

    return os.path.join(os.path.dirname(nbgrader.__file__), "server_extensions", "formgrader", "templates")


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# A frame IPython prints for code typed in a notebook cell ("Cell In[5], line 3"; older
# IPython: "Input In [5]" or the kernel's temporary file for the cell).
_CELL_FRAME = re.compile(r"^\s*(Cell In\s*\[|Input In \[|File \S*ipykernel_\d+[/\\])")
_FILE_FRAME = re.compile(r"^\s*File \s*(\S+?)(:\d+|, line \d+|$)")
# An absolute path (two or more components) anywhere in a line; not the "//host/..." of a URL.
_ABS_PATH = re.compile(r"(?<![\w.:/\\])/(?:[^\s/'\"():,;\[\]<>]+/)+([^\s/'\"():,;\[\]<>]+)")


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def scrub_paths(text: str) -> str:
    """Every absolute path shortened to its last component: no server layout in the page."""
    return _ABS_PATH.sub(r"\1", text)


def _package(path: str) -> str:
    """The library a frame's file belongs to, by name only."""
    m = re.search(r"(?:site|dist)-packages/([^/]+)", path) or re.search(r"/python3(?:\.\d+)?/([^/]+)", path)
    name = m.group(1) if m else ("grader" if "/grader/" in path else Path(path).stem)
    return re.sub(r"\.py$", "", name)


def trim_traceback(traceback: list[str]) -> list[str]:
    """IPython's traceback entries (one per frame, ANSI-coloured) trimmed for a student.

    Frames of notebook cells and every entry that is not a frame (the header, the exception
    line, "During handling of the above exception") are kept with their paths shortened; each
    run of library frames becomes ``… N library frames hidden (torch, diffusers)``.
    """
    out: list[str] = []
    hidden: list[str] = []

    def flush() -> None:
        if hidden:
            names = ", ".join(dict.fromkeys(hidden))
            n = len(hidden)
            out.append(f"\x1b[90m… {n} library frame{'s' if n > 1 else ''} hidden ({names})\x1b[39m\n")
            hidden.clear()

    for entry in traceback:
        entry = entry if isinstance(entry, str) else str(entry)
        plain = strip_ansi(entry)
        if not _CELL_FRAME.match(plain):
            m = _FILE_FRAME.match(plain)
            if m:
                hidden.append(_package(m.group(1)))
                continue
        flush()
        out.append(scrub_paths(entry))
    flush()
    return out


@functools.lru_cache(maxsize=1)
def mathjax_script() -> str:
    """The text of a self-contained MathJax 3 build: TeX input, SVG output (fonts are SVG paths
    inside the file, so nothing is fetched), every TeX extension included (none autoloaded)."""
    import mathjax  # the django-static-mathjax distribution; it needs no Django to be read

    path = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5" / "tex-svg-full.js"
    text = path.read_text(encoding="utf-8")
    # Inlined inside <script>: a closing tag in the text would end the element early.
    if re.search(r"</script", text, re.I):
        raise ValueError(f"{path} contains '</script' and cannot be inlined")
    return text


# Same delimiters and numbering as nbconvert's MathJax 2 configuration, in MathJax 3's form.
MATHJAX_CONFIG = """window.MathJax = {
  tex: {inlineMath: [['$', '$'], ['\\\\(', '\\\\)']], displayMath: [['$$', '$$'], ['\\\\[', '\\\\]']],
        processEscapes: true, processEnvironments: true, tags: 'ams'},
  svg: {fontCache: 'global'},
  startup: {typeset: true}
};"""


# ---------------------------------------------------------------- a file that is not a notebook
MARKER = '<meta name="course-feedback" content="unreadable-notebook">'


def _excerpt(text: str, lineno: int, colno: int, width: int = 100) -> str:
    """The lines around a JSON error with a caret under the column; long lines cut around it."""
    lines = text.splitlines() or [""]
    lineno = min(max(lineno, 1), len(lines))
    start = max(0, colno - 1 - width // 2)  # the same window on every line shown

    def cut(line: str) -> str:
        return ("…" if start else "") + line[start:start + width] + ("…" if len(line) > start + width else "")

    rows = [f"{n:>6} | {cut(lines[n - 1])}" for n in range(max(1, lineno - 2), lineno + 1)]
    rows.append(" " * 6 + " | " + " " * ((1 if start else 0) + colno - 1 - start) + "^")
    return "\n".join(rows)


def diagnose(path: Path) -> tuple[str, str]:
    """(what is wrong, an excerpt of where) for a submitted file that is not a readable notebook."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return (f"the file is not UTF-8 text (byte {exc.start}: {exc.reason}); a notebook is a JSON text "
                "file, so this is probably another kind of file saved with a .ipynb name", "")
    if not text.strip():
        return "the file is empty (the upload or the copy was cut short?)", ""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        what = f"the notebook file is not valid JSON: line {exc.lineno} column {exc.colno}: {exc.msg}"
        if re.search(r"^(<<<<<<<|>>>>>>>) ", text, re.M):
            what += " (it contains merge-conflict markers, <<<<<<< and >>>>>>>)"
        elif not text.rstrip().endswith("}"):
            what += " (the file stops in the middle of the notebook: it was cut short, by an interrupted save, upload or copy)"
        return what, _excerpt(text, exc.lineno, exc.colno)
    if not isinstance(data, dict) or "cells" not in data:
        return "the file is JSON but not a Jupyter notebook (it has no \"cells\")", ""
    return "the file is JSON but nbformat cannot read it as a notebook", ""


_FIX = """<ol>
<li>Do not edit a <code>.ipynb</code> file in a text editor: open it in JupyterLab, which always saves valid notebooks.</li>
<li>If JupyterLab still has your work open, save it there (<b>File &gt; Save Notebook</b>) and submit again.
If the notebook was damaged after an earlier save, <b>File &gt; Revert Notebook to Checkpoint</b> brings that save back.</li>
<li>Otherwise fetch a fresh copy of the assignment's notebook, copy your answers into its answer cells
(the ones that say <code>YOUR CODE HERE</code>), save it in JupyterLab and submit that.</li>
<li>Before submitting, check that the file opens in JupyterLab, or run
<code>python -m json.tool NOTEBOOK.ipynb &gt; /dev/null</code> (no output means valid JSON)
or <code>course check NOTEBOOK.ipynb</code>.</li>
</ol>"""


def unreadable_page(notebook: str, assignment: str, what: str, excerpt: str = "",
                    max_score: float | None = None) -> str:
    """A self-contained HTML page (no script, no external resource) for an unreadable submission."""
    e = html.escape
    score = f" (Score: 0 / {max_score:g})" if max_score is not None else ""
    where = f"<p>Where:</p>\n<pre>{e(excerpt)}</pre>\n" if excerpt else ""
    return f"""<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8" />
{MARKER}
<title>{e(notebook)}: not graded</title>
<style>
body {{ font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 52em; margin: 2em auto;
        padding: 0 1em; line-height: 1.5; color: #222; }}
h1 {{ font-size: 1.4em; }} .what {{ border-left: 4px solid #d2413a; padding: 0.2em 0.8em; background: #fdf3f2; }}
pre {{ background: #f6f6f6; padding: 0.8em; overflow-x: auto; }}
</style>
</head>
<body>
<h1>{e(notebook)}{e(score)}</h1>
<p>Assignment <code>{e(assignment)}</code>: your submission could not be graded, because the file you
submitted could not be read as a notebook. Nothing in it was run.</p>
<p class="what"><b>What was wrong:</b> {e(what)}.</p>
{where}<h2>How to fix it</h2>
{_FIX}
</body>
</html>
"""


def write_unreadable_page(submitted: Path, dest: Path, assignment: str, max_score: float | None = None) -> Path:
    """Write the page for ``submitted`` (a file that is not a readable notebook) to ``dest``."""
    what, excerpt = diagnose(submitted)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".html.tmp")
    tmp.write_text(unreadable_page(dest.stem + ".ipynb", assignment, what, excerpt, max_score), encoding="utf-8")
    os.replace(tmp, dest)
    return dest


def _max_score(source: Path) -> float | None:
    try:
        nb = json.loads(source.read_text(encoding="utf-8"))
        return sum(float(c.get("metadata", {}).get("nbgrader", {}).get("points", 0) or 0)
                   for c in nb["cells"] if c.get("metadata", {}).get("nbgrader", {}).get("grade"))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _plain_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _copy_extras(folder: Path, dest: Path) -> None:
    """The timestamp and secret release_feedback needs, if they are plain files (never a link)."""
    for extra in ("timestamp.txt", "submission_secret.txt"):
        data = read_regular(folder / extra, 4096)
        if data is not None:
            (dest / extra).write_bytes(data)


def unreadable_notebook_hook(assignment, student, notebooks, *, root: str | None = None, **_) -> None:
    """``Autograde.pre_convert_hook`` for plain ``nbgrader autograde``: before nbgrader tries a
    submission, write the feedback page of each of its notebooks that is not a readable notebook
    (nbgrader then fails on it, as before, and ``generate_feedback`` skips it), with the
    timestamp and secret ``release_feedback`` needs; remove such a page once the notebook is
    readable again. Paths: ``<root>/submitted/<student>/<assignment>/<nb>.ipynb`` →
    ``<root>/feedback/<student>/<assignment>/<nb>.html`` (``root`` defaults to the course folder
    above ``submitted/``, so the config names the hook by a dotted string: formgrader shows the
    config as JSON).
    """
    from .submission import InvalidSubmission, read_notebook

    for nb in notebooks:
        nb = Path(nb)
        student_id, assignment_id = nb.parent.parent.name, nb.parent.name
        course = Path(root) if root else nb.parents[3]
        dest = course / "feedback" / student_id / assignment_id / (nb.stem + ".html")
        source = course / "source" / assignment_id / nb.name
        if not _plain_file(nb):
            # Never follow what a student planted (a link to a secret would be quoted on the page).
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(unreadable_page(nb.name, assignment_id, "the submitted notebook is not a regular "
                                            "file (a link or a special file)", "", _max_score(source)),
                            encoding="utf-8")
            _copy_extras(nb.parent, dest.parent)
            continue
        try:
            read_notebook(nb)
        except InvalidSubmission:
            write_unreadable_page(nb, dest, assignment_id, _max_score(source))
            _copy_extras(nb.parent, dest.parent)
            continue
        if dest.is_file() and MARKER in dest.read_text(encoding="utf-8", errors="replace")[:2000]:
            dest.unlink()

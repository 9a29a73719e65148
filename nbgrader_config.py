"""nbgrader configuration for Series 7: plain `nbgrader ...` commands work from the repo root.

The course root is this folder; each top-level directory is one CourseDirectory setting.
"""

import os

c = get_config()  # noqa: F821 (provided by nbgrader)

here = os.path.dirname(os.path.abspath(__file__))
c.CourseDirectory.root = os.environ.get("COURSE_ROOT", here)
c.CourseDirectory.course_id = "series7"
c.CourseDirectory.source_directory = "source"
c.CourseDirectory.release_directory = "release"
c.CourseDirectory.solution_directory = "solutions"
c.CourseDirectory.autograded_directory = "autograded"
c.CourseDirectory.submitted_directory = "submitted"
c.CourseDirectory.feedback_directory = "feedback"
# Authoring leftovers must not be copied into release/ (generate_assignment copies every file).
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", ".OTTER_LOG", "*.py", "*.md"]
c.CourseDirectory.db_url = os.environ.get("COURSE_DB_URL", "sqlite:///" + os.path.join(c.CourseDirectory.root, "gradebook.db"))

# Stand-in weights and a hidden test on a 28-block real model both finish well inside this.
c.Execute.timeout = int(os.environ.get("COURSE_CELL_TIMEOUT", "60"))
# nbgrader's Execute always continues past errors (its own allow_errors, not configurable).
c.Execute.interrupt_on_timeout = True
# Only the kernels nbgrader starts to grade get this flag: public checks (ungraded, ~2 s of
# otter import) are skipped there; a student's or instructor's own kernel never sees it.
c.Execute.extra_arguments = ["--IPKernelApp.exec_lines=['import os; os.environ[\"COURSE_AUTOGRADING\"] = \"1\"']"]

# solutions/: no outputs (reproducible, no base64 images), no hidden tests, no solution markers.
from nbgrader.preprocessors import (  # noqa: E402
    ClearHiddenTests,
    ClearMarkScheme,
    ClearOutput,
    IncludeHeaderFooter,
    LockCells,
)

from grader.nbgrader_plugins import ScrubGradedOutputs, StripSolutionMarkers  # noqa: E402

c.GenerateSolution.preprocessors = [
    IncludeHeaderFooter, LockCells, ClearOutput, ClearMarkScheme,
    ClearHiddenTests,          # before StripSolutionMarkers: both edit the same source lines
    StripSolutionMarkers,
]

# feedback/: hidden test code removed, and tracebacks that would quote it rewritten.
from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor  # noqa: E402
from nbgrader.preprocessors import GetGrades  # noqa: E402

from grader.nbgrader_plugins import InlineMathJax, TrimTracebacks  # noqa: E402

c.GenerateFeedback.preprocessors = [
    GetGrades,                 # first: reads scores from the cells as graded
    ClearHiddenTests,
    ScrubGradedOutputs,
    TrimTracebacks,            # demo and answer cells: the student's frames, no server paths
    InlineMathJax,
    CSSHTMLHeaderPreprocessor,
]
# The page (grader/templates/feedback/course_feedback.html.j2): exercises named in the contents
# and headings, MathJax inlined (offline). Scoped to GenerateFeedback: formgrader's HTMLExporter
# keeps its own template. nbgrader's own feedback templates stay on the path (the page extends them).
from grader.feedback import TEMPLATES, nbgrader_templates  # noqa: E402

c.GenerateFeedback.HTMLExporter.extra_template_basedirs = [str(TEMPLATES), nbgrader_templates()]
c.GenerateFeedback.HTMLExporter.template_file = "course_feedback.html.j2"

# Grading you can trust (README "Trusted grading"): the submission is rebuilt on the source
# notebook before anything runs; the kernel runs once, in grader.sandbox, and its hidden-test
# cells only record what the student's functions return; each graded cell's verdict is
# decided in this process (grader.verify) and written into the cell before SaveAutoGrades.
from nbconvert.preprocessors import ClearMetadataPreprocessor  # noqa: E402
from nbgrader.preprocessors import (  # noqa: E402
    AssignLatePenalties,
    CheckCellMetadata,
    DeduplicateIds,
    IgnorePattern,
    LimitOutput,
    OverwriteCells,
    OverwriteKernelspec,
    SaveAutoGrades,
)

from grader.nbgrader_plugins import NormaliseSubmission, SandboxedExecute, TrustedGrade  # noqa: E402

_sanitize = [
    NormaliseSubmission,       # first: it rebuilds the notebook on the source, so nbgrader's own steps
                               # never see crafted metadata; before OverwriteCells in any case
    ClearOutput, DeduplicateIds, OverwriteKernelspec,
    OverwriteCells, CheckCellMetadata,
]
_autograde = [
    SandboxedExecute,
    TrustedGrade,              # after the kernel is gone, before anything reads the outputs
    IgnorePattern, ClearMetadataPreprocessor, LimitOutput,
    SaveAutoGrades,
    AssignLatePenalties, CheckCellMetadata,
]
# A submitted file that is not a readable notebook (invalid JSON...) fails autograde as before;
# this hook first writes that student's feedback page saying what is wrong and how to fix it.
import functools  # noqa: E402

from grader.feedback import unreadable_notebook_hook  # noqa: E402

c.Autograde.pre_convert_hook = functools.partial(unreadable_notebook_hook, root=c.CourseDirectory.root)
# COURSE_ISOLATION=off restores nbgrader's defaults: only to measure the overhead, never for a class.
if os.environ.get("COURSE_ISOLATION", "on") != "off":
    c.Autograde.sanitize_preprocessors = _sanitize
    c.Autograde.autograde_preprocessors = _autograde

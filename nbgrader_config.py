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
# nbgrader's add_submission flushes a half-built submission under SQLAlchemy 2 (three SAWarnings
# per autograde): build it first, flush once (grader/nbgrader_gradebook.py says why not a pin).
from grader.nbgrader_gradebook import build_submissions_before_flushing  # noqa: E402

build_submissions_before_flushing()

# Stand-in weights and a hidden test on a 28-block real model both finish well inside this.
c.Execute.timeout = int(os.environ.get("COURSE_CELL_TIMEOUT", "60"))
# nbgrader's Execute always continues past errors (its own allow_errors, not configurable).
c.Execute.interrupt_on_timeout = True
# Only the kernels nbgrader starts to grade get this flag: public checks (ungraded, ~2 s of
# otter import) are skipped there; a student's or instructor's own kernel never sees it.
c.Execute.extra_arguments = ["--IPKernelApp.exec_lines=['import os; os.environ[\"COURSE_AUTOGRADING\"] = \"1\"']"]
# Validate (the notebook toolbar's button, `nbgrader validate`) starts its kernel through the same
# Execute class but does not grade: without the flag there, each graded cell's checks.validate(...)
# runs the public check, and Validate reports the failures instead of "Success!" on a stub.
c.Validator.Execute.extra_arguments = []

# solutions/: no outputs (reproducible, no base64 images), no hidden tests, no solution markers.
# Preprocessors are named by dotted strings, not imported classes: nbconvert imports them when
# it registers them, and the config stays plain data that formgrader can show as JSON.
c.GenerateSolution.preprocessors = [
    "nbgrader.preprocessors.IncludeHeaderFooter",
    "nbgrader.preprocessors.LockCells",
    "nbgrader.preprocessors.ClearOutput",
    "nbgrader.preprocessors.ClearMarkScheme",
    "nbgrader.preprocessors.ClearHiddenTests",        # before StripSolutionMarkers: both edit the same source lines
    "grader.nbgrader_plugins.StripSolutionMarkers",
]

# feedback/: hidden test code removed, and tracebacks that would quote it rewritten.
c.GenerateFeedback.preprocessors = [
    "nbgrader.preprocessors.GetGrades",               # first: reads scores from the cells as graded
    "grader.nbgrader_plugins.ClearHiddenTestsFromFeedback",
    "grader.nbgrader_plugins.ScrubGradedOutputs",
    "grader.nbgrader_plugins.TrimTracebacks",         # demo and answer cells: the student's frames, no server paths
    "grader.nbgrader_plugins.InlineMathJax",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
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
_sanitize = [
    "grader.nbgrader_plugins.NormaliseSubmission",  # first: it rebuilds the notebook on the source, so nbgrader's
                                                    # own steps never see crafted metadata; before OverwriteCells in any case
    "nbgrader.preprocessors.ClearOutput",
    "nbgrader.preprocessors.DeduplicateIds",
    "nbgrader.preprocessors.OverwriteKernelspec",
    "nbgrader.preprocessors.OverwriteCells",
    "nbgrader.preprocessors.CheckCellMetadata",
]
_autograde = [
    "grader.nbgrader_plugins.SandboxedExecute",
    "grader.nbgrader_plugins.TrustedGrade",         # after the kernel is gone, before anything reads the outputs
    "nbgrader.preprocessors.IgnorePattern",
    "nbconvert.preprocessors.ClearMetadataPreprocessor",
    "nbgrader.preprocessors.LimitOutput",
    "nbgrader.preprocessors.SaveAutoGrades",
    "nbgrader.preprocessors.AssignLatePenalties",
    "nbgrader.preprocessors.CheckCellMetadata",
]
# A submitted file that is not a readable notebook (invalid JSON...) fails autograde as before;
# this hook first writes that student's feedback page saying what is wrong and how to fix it.
c.Autograde.pre_convert_hook = "grader.feedback.unreadable_notebook_hook"
# COURSE_ISOLATION=off restores nbgrader's defaults: only to measure the overhead, never for a class.
if os.environ.get("COURSE_ISOLATION", "on") != "off":
    c.Autograde.sanitize_preprocessors = _sanitize
    c.Autograde.autograde_preprocessors = _autograde

# ---------------------------------------------------------------- the exchange (README "Distributing and collecting")
# release_assignment / collect / release_feedback (instructor) and fetch_assignment / submit /
# fetch_feedback (students, their own Unix accounts on the same server) meet in one shared folder.
# It must exist and be world-writable with the sticky bit (`sudo mkdir -p … && sudo chmod 1777 …`);
# nbgrader makes series7/{outbound 755, inbound 2733, feedback 711} inside it. Students' own
# config names the same folder and course_id (README). COURSE_EXCHANGE: elsewhere (a test's temp folder).
c.Exchange.root = os.environ.get("COURSE_EXCHANGE", "/srv/nbgrader/exchange")
# collect runs as the instructor over folders students own: never follow a link they planted.
c.ExchangeFactory.collect = "grader.exchange.SafeExchangeCollect"
# release/ and solutions/ are committed, so plain `nbgrader generate_assignment LESSON` would only
# say "Skipping existing assignment" and record nothing in the gradebook. Regenerating them is
# byte-identical (tests/test_release_drift.py), the formgrader's Generate button forces too, and
# nbgrader still refuses to change graded cells once there are submissions.
c.GenerateAssignment.force = True
c.GenerateSolution.force = True

# ---------------------------------------------------------------- late submissions (grader/late.py)
# nbgrader compares each submission's timestamp.txt (written by `nbgrader collect`) with the
# assignment's due date in the gradebook (`nbgrader db assignment add LESSON --duedate="2026-12-11 23:59 Europe/Berlin"`;
# `course autograde --due` for a batch) and asks this plugin for the penalty. One policy for plain
# nbgrader, formgrader and `course autograde`. Methods: "none" (nbgrader's default: never penalise),
# "zero" (nbgrader's: a late submission scores 0), "per_day" (percent_per_day of the score for each
# started day late, at most max_percent, nothing within grace_minutes). No timestamp.txt: not late.
c.AssignLatePenalties.plugin_class = "grader.late.CourseLatePenalty"  # a name, not the class: formgrader shows the config as JSON
c.CourseLatePenalty.penalty_method = "per_day"
c.CourseLatePenalty.percent_per_day = 10.0
c.CourseLatePenalty.max_percent = 50.0
c.CourseLatePenalty.grace_minutes = 15.0

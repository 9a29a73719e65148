"""Gradebook out: a roster in nbgrader's gradebook, timestamps and a due date with the course's late
policy (the same penalty through plain nbgrader and `course autograde`), and a CSV Canvas imports.

The default tier builds the gradebook with nbgrader's own API and runs nbgrader's own
``AssignLatePenalties`` on it (seconds); the real autograde of an on-time and a late submission
through both paths is ``extended`` (~3 min on 2 quiet cores; 6 min 40 s measured under load).
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import nbformat
import pytest

from grader.autograde import Result, _graded_cells, _task_cells, write_csv
from grader.export import CANVAS_HEADER, course_config, from_gradebook, from_results, title, write_canvas, write_long
from grader.late import CourseLatePenalty, configured_plugin, late_penalty, read_timestamp
from grader.roster import Person, import_roster, read_roster, students
from tests.notebook_code import REPO

LESSON8 = "08_the_speed_landscape"
DUE = datetime(2026, 12, 2, 12, 0, 0)
ROSTER = "id,first_name,last_name,email\nalice,Alice,Liddell,alice@example.org\nbob,Bob,Builder,bob@example.org\n" \
         "carol,Carol,Danvers,carol@example.org\n"


@pytest.fixture(scope="module")
def empty_gradebook(tmp_path_factory) -> Path:
    """A new nbgrader gradebook, made once: creating one runs its migrations (seconds); copies are instant."""
    from nbgrader.api import Gradebook

    path = tmp_path_factory.mktemp("empty") / "gradebook.db"
    Gradebook(f"sqlite:///{path}").close()
    return path


def _copy_db(src: Path, tmp_path: Path) -> str:
    shutil.copy(src, tmp_path / "gradebook.db")
    return f"sqlite:///{tmp_path / 'gradebook.db'}"


def _csv(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


# ---------------------------------------------------------------- the late policy
@pytest.mark.parametrize("seconds, expected", [
    pytest.param(0, 0.0, id="on_time"),
    pytest.param(10 * 60, 0.0, id="inside_grace"),
    pytest.param(3600, 1.2, id="one_hour_is_one_started_day"),
    pytest.param(86400 + 1, 2.4, id="just_over_a_day_is_two"),
    pytest.param(30 * 86400, 6.0, id="capped_at_half"),
])
def test_per_day_penalty_counts_started_days_and_is_capped(seconds, expected):
    assert late_penalty(12.0, seconds, percent_per_day=10, max_percent=50, grace_minutes=15) == pytest.approx(expected)


def test_nbgraders_builtin_methods_are_kept():
    assert late_penalty(12.0, 3600, method="zero") == 12.0
    assert late_penalty(12.0, 3600, method="none") == 0.0


def test_nbgrader_config_installs_the_course_plugin():
    """Plain nbgrader's AssignLatePenalties and `course autograde`'s in-process nbgrader read one config."""
    plugin = configured_plugin(course_config())
    assert isinstance(plugin, CourseLatePenalty)
    assert (plugin.penalty_method, plugin.percent_per_day, plugin.max_percent) == ("per_day", 10.0, 50.0)


def test_a_submission_without_timestamp_is_on_time_and_says_so(tmp_path):
    stamp, note = read_timestamp(tmp_path)
    assert stamp is None and "no timestamp.txt" in note and "on time" in note
    (tmp_path / "timestamp.txt").write_text("yesterday-ish")
    stamp, note = read_timestamp(tmp_path)
    assert stamp is None and "not a plain file holding one date" in note and "yesterday" not in note
    (tmp_path / "timestamp.txt").write_text("2026-12-02 13:00:00 Europe/Berlin\n")  # what nbgrader collect writes
    assert read_timestamp(tmp_path) == (datetime(2026, 12, 2, 12, 0, 0), "")


def _link_to_secret(folder, secret):
    (folder / "timestamp.txt").symlink_to(secret)


def _fifo(folder, secret):
    os.mkfifo(folder / "timestamp.txt")  # an open() that follows it would block the batch


def _huge(folder, secret):
    with open(folder / "timestamp.txt", "wb") as f:
        f.write(b"2026-12-02 13:00:00 UTC " + b"x" * 50_000_000)


def _hard_link(folder, secret):
    os.link(secret, folder / "timestamp.txt")


@pytest.mark.parametrize("plant", [_link_to_secret, _fifo, _huge, _hard_link],
                         ids=["symlink_to_a_secret", "fifo", "huge_file", "hard_link_to_a_secret"])
def test_a_planted_timestamp_is_neither_followed_nor_quoted(tmp_path, plant):
    """timestamp.txt lives in a folder the student wrote (the exchange): hostile like a record file."""
    secret = tmp_path / "secret"
    secret.write_text("2026-12-02 13:00:00 UTC\nroot:$6$hash-that-must-not-leak")
    folder = tmp_path / "submission"
    folder.mkdir()
    plant(folder, secret)
    stamp, note = read_timestamp(folder)
    assert "hash-that-must-not-leak" not in note and "xxxx" not in note
    assert stamp is None or plant is _hard_link


# ---------------------------------------------------------------- the roster
def test_roster_reads_ours_canvas_and_moodle_exports(tmp_path):
    ours = tmp_path / "ours.csv"
    ours.write_text(ROSTER)
    assert read_roster(ours)[0] == Person("alice", "Alice", "Liddell", "alice@example.org")

    canvas = tmp_path / "canvas.csv"
    canvas.write_text('\ufeffStudent,ID,SIS User ID,SIS Login ID,Section,Lesson 1 (77)\n'
                      '    Points Possible,,,,,16\n'
                      '"Liddell, Alice",1201,S-001,alice,Section A,\n'
                      '"Student, Test",999,,,Section A,\n')
    (alice,) = read_roster(canvas)
    assert alice == Person("alice", "Alice", "Liddell", "", "1201")

    moodle = tmp_path / "moodle.csv"
    moodle.write_text("First name,Surname,ID number,Institution,Department,Email address\n"
                      "Bob,Builder,bob,,,bob@example.org\n")
    assert read_roster(moodle) == [Person("bob", "Bob", "Builder", "bob@example.org")]

    bad = tmp_path / "bad.csv"
    bad.write_text("name,mail\nx,y\n")
    with pytest.raises(ValueError, match="no student id column"):
        read_roster(bad)


def test_roster_import_adds_then_updates_in_nbgraders_gradebook(tmp_path, empty_gradebook):
    db = _copy_db(empty_gradebook, tmp_path)
    (tmp_path / "r.csv").write_text(ROSTER)
    assert import_roster(read_roster(tmp_path / "r.csv"), db) == (3, 0)
    (tmp_path / "r.csv").write_text("id,first_name,last_name,email\nbob,Robert,Builder,rob@example.org\n")
    assert import_roster(read_roster(tmp_path / "r.csv"), db) == (0, 1)
    roster = students(db)
    assert set(roster) == {"alice", "bob", "carol"}
    assert (roster["bob"].first_name, roster["bob"].email, roster["alice"].email) == \
        ("Robert", "rob@example.org", "alice@example.org")


def test_roster_cli_imports_and_lists(tmp_path, capsys, empty_gradebook):
    from grader.cli import main

    (tmp_path / "r.csv").write_text(ROSTER)
    db = _copy_db(empty_gradebook, tmp_path)
    assert main(["roster", "import", str(tmp_path / "r.csv"), "--db", db]) == 0
    assert main(["roster", "list", "--db", db]) == 0
    out = capsys.readouterr().out
    assert "3 added, 0 updated" in out and "Liddell, Alice" in out and "carol@example.org" in out


# ---------------------------------------------------------------- a gradebook built with nbgrader's API
@pytest.fixture(scope="module")
def lesson8_gradebook(tmp_path_factory, empty_gradebook) -> Path:
    """Lesson 8's cells (4 autograded exercises, 10 points; a hand-graded task, 2 points) in a gradebook
    with a due date; alice on time, bob 1 h late, carol on the roster without a submission. Scores
    are set as SaveAutoGrades would, then nbgrader's AssignLatePenalties stores its penalty."""
    from nbgrader.api import Gradebook
    from nbgrader.preprocessors import AssignLatePenalties

    source = nbformat.read(next((REPO / "source" / LESSON8).glob("*.ipynb")), as_version=4)
    graded, tasks = _graded_cells(source), _task_cells(source)
    nbname = next((REPO / "source" / LESSON8).glob("*.ipynb")).stem
    tmp_path = tmp_path_factory.mktemp("lesson8")
    db = _copy_db(empty_gradebook, tmp_path)
    (tmp_path / "r.csv").write_text(ROSTER)
    import_roster(read_roster(tmp_path / "r.csv"), db)
    with Gradebook(db) as gb:
        gb.update_or_create_assignment(LESSON8, duedate=DUE)
        gb.add_notebook(nbname, LESSON8)
        for name, pts in graded.items():
            gb.add_grade_cell(f"{name}_hidden", nbname, LESSON8, max_score=pts, cell_type="code")
        for name, pts in tasks.items():
            gb.add_task_cell(name, nbname, LESSON8, max_score=pts, cell_type="markdown")
        for student, stamp in (("alice", DUE - timedelta(hours=2)), ("bob", DUE + timedelta(hours=1))):
            gb.add_submission(LESSON8, student, timestamp=stamp)
            for name in graded:
                g = gb.find_grade(f"{name}_hidden", nbname, LESSON8, student)
                g.auto_score, g.needs_manual_grade = (0.0 if name == "heun_step" else graded[name]), False
            gb.db.commit()
    config = course_config()
    for student in ("alice", "bob"):
        resources = {"nbgrader": {"notebook": nbname, "assignment": LESSON8, "student": student, "db_url": db}}
        AssignLatePenalties(config=config).preprocess(nbformat.v4.new_notebook(), resources)
    return tmp_path / "gradebook.db"


def test_late_penalty_is_nbgraders_and_export_agrees(tmp_path, lesson8_gradebook):
    from nbgrader.api import Gradebook

    db = _copy_db(lesson8_gradebook, tmp_path)
    with Gradebook(db) as gb:
        stored = {s: gb.find_submission(LESSON8, s).late_submission_penalty for s in ("alice", "bob")}
        rows, maxima, roster = from_gradebook(gb)
    by = {r.student: r for r in rows}
    # 7 of 10 autograded points, 1 h late: one started day at 10 %.
    assert stored == {"alice": 0.0, "bob": pytest.approx(0.7)}
    assert (by["alice"].score, by["alice"].late_penalty, by["alice"].final_score) == (7.0, 0.0, 7.0)
    assert (by["bob"].score, by["bob"].late_penalty, by["bob"].final_score) == (7.0, pytest.approx(0.7), pytest.approx(6.3))
    assert by["bob"].late_seconds == 3600 and by["carol"].status == "missing"
    assert by["alice"].status == "pending" and by["alice"].pending == 2.0  # the written task, before formgrader
    assert sum(maxima[LESSON8].values()) == 12.0


def test_nbgrader_export_has_names_emails_timestamps_and_the_same_penalty(tmp_path, lesson8_gradebook):
    """`nbgrader export` (its own CSV) from that gradebook: no more empty name/email/timestamp columns."""
    db = _copy_db(lesson8_gradebook, tmp_path)
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"],
               COURSE_ROOT=str(tmp_path), COURSE_DB_URL=db)
    for args in (["export", "--to", str(tmp_path / "nb.csv")],
                 ["export", "--exporter=grader.export.CanvasExportPlugin", "--to", str(tmp_path / "canvas.csv")]):
        done = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    with open(tmp_path / "nb.csv", newline="") as f:
        rows = {r["student_id"]: r for r in csv.DictReader(f)}
    canvas = _csv(tmp_path / "canvas.csv")
    assert (rows["bob"]["first_name"], rows["bob"]["email"]) == ("Bob", "bob@example.org")
    assert rows["bob"]["timestamp"].startswith("2026-12-02 13:00")
    assert float(rows["bob"]["late_submission_penalty"]) == pytest.approx(0.7)
    assert float(rows["bob"]["score"]) == pytest.approx(6.3)
    assert canvas[0][:5] == CANVAS_HEADER and canvas[1][0] == "Points Possible"
    assert {r[0]: r[5] for r in canvas[2:]} == {"Builder, Bob": "6.3", "Danvers, Carol": "", "Liddell, Alice": "7"}


def test_canvas_csv_has_header_points_row_exercises_and_roster_names(tmp_path, lesson8_gradebook):
    from nbgrader.api import Gradebook

    db = _copy_db(lesson8_gradebook, tmp_path)
    with Gradebook(db) as gb:
        rows, maxima, roster = from_gradebook(gb)
    out = tmp_path / "canvas.csv"
    write_canvas(rows, maxima, roster, out, per_exercise=True, canvas_ids={LESSON8: "4711"})
    table = _csv(out)
    header, points, body = table[0], table[1], table[2:]
    total = f"{title(LESSON8)} (4711)"
    assert header[:5] == CANVAS_HEADER and header[5] == total == "Lesson 8: the speed landscape (4711)"
    assert f"{title(LESSON8)}: heun_step" in header and f"{title(LESSON8)}: when_to_use_task" in header
    assert points[0] == "Points Possible" and points[5] == "12" and all(p for p in points[5:])
    rows_by = {r[0]: dict(zip(header, r)) for r in body}
    assert list(rows_by) == ["Builder, Bob", "Danvers, Carol", "Liddell, Alice"]  # Canvas sorts by "Last, First"
    assert rows_by["Liddell, Alice"]["SIS Login ID"] == "alice"
    assert rows_by["Builder, Bob"][total] == "6.3"                              # late penalty applied
    assert rows_by["Liddell, Alice"][f"{title(LESSON8)}: heun_step"] == "0"
    assert rows_by["Liddell, Alice"][f"{title(LESSON8)}: when_to_use_task"] == ""  # pending, not 0
    assert rows_by["Danvers, Carol"][total] == ""                               # no submission: Canvas keeps its grade
    write_canvas(rows, maxima, roster, out, missing="zero")
    assert {r[0]: r[5] for r in _csv(out)[2:]}["Danvers, Carol"] == "0"


def test_manual_points_count_once_graded_in_formgrader(tmp_path, lesson8_gradebook):
    """Lesson 8's 2 hand-graded points: pending in the export until formgrader sets them, then in the total."""
    from nbgrader.api import Gradebook

    db = _copy_db(lesson8_gradebook, tmp_path)
    with Gradebook(db) as gb:
        nbname = gb.find_assignment(LESSON8).notebooks[0].name
        g = gb.find_grade("when_to_use_task", nbname, LESSON8, "bob")
        g.manual_score, g.needs_manual_grade = 2.0, False  # what formgrader writes
        gb.db.commit()
        rows, maxima, roster = from_gradebook(gb)
    bob = {r.student: r for r in rows}["bob"]
    assert (bob.status, bob.score, bob.late_penalty) == ("graded", 9.0, pytest.approx(0.9))
    out = tmp_path / "long.csv"
    write_long(rows, maxima, roster, out)
    with open(out, newline="") as f:
        long = list(csv.DictReader(f))
    task = {r["student"]: r for r in long if r["item"] == "when_to_use_task"}
    assert (task["bob"]["score"], task["bob"]["status"]) == ("2", "graded")
    assert (task["alice"]["score"], task["alice"]["status"]) == ("", "pending")
    totals = {r["student"]: r for r in long if r["item"] == "(total)"}
    assert totals["bob"]["email"] == "bob@example.org" and totals["bob"]["final_score"] == "8.1"
    assert totals["bob"]["late_by"] == "01:00" and totals["carol"]["status"] == "missing"


def test_results_export_names_students_and_keeps_the_graders_penalty(tmp_path):
    """`course autograde` folders export the same way: penalty as nbgrader stored it, roster names, pending task."""
    import json
    from dataclasses import asdict

    (tmp_path / "out" / "results").mkdir(parents=True)
    ex = {"spaced_timesteps": {"score": 2.0, "max_score": 2.0, "message": ""},
          "when_to_use_task": {"score": None, "max_score": 2.0, "manual": True, "message": "pending"}}
    for r in (Result("alice", LESSON8, "a.ipynb", "graded", 2.0, 4.0, ex, timestamp="2026-12-02 10:00:00"),
              Result("bob", LESSON8, "b.ipynb", "graded", 2.0, 4.0, ex, timestamp="2026-12-03 12:00:00",
                     late_seconds=86400.0, late_penalty=0.2)):
        (tmp_path / "out" / "results" / f"{r.student}.json").write_text(json.dumps(asdict(r)))
    (tmp_path / "r.csv").write_text(ROSTER)
    roster = {p.id: p for p in read_roster(tmp_path / "r.csv")}
    rows, maxima = from_results([tmp_path / "out"], roster)
    write_canvas(rows, maxima, roster, tmp_path / "c.csv")
    assert {r[0]: r[5] for r in _csv(tmp_path / "c.csv")[2:]} == \
        {"Builder, Bob": "1.8", "Danvers, Carol": "", "Liddell, Alice": "2"}
    from grader.autograde import load_results

    write_csv(load_results([tmp_path / "out"]), tmp_path / "grades.csv", roster)
    with open(tmp_path / "grades.csv", newline="") as f:
        g = {r["student"]: r for r in csv.DictReader(f)}
    assert (g["bob"]["email"], g["bob"]["late_penalty"], g["bob"]["final_score"], g["bob"]["late_by"]) == \
        ("bob@example.org", "0.2", "1.8", "1d 00:00")
    assert g["alice"]["when_to_use_task"] == "" and g["alice"]["timestamp"] == "2026-12-02 10:00:00"


# ---------------------------------------------------------------- both real grading paths
LESSON = "04_score_functions_and_sdes"


@pytest.mark.slow
@pytest.mark.extended
def test_on_time_and_late_submissions_get_the_same_penalty_in_nbgrader_and_course_autograde(tmp_path):
    """Roster import, then an on-time and a late copy of the correct lesson 4 graded by plain
    `nbgrader autograde` and by `course autograde`: identical scores, timestamps and penalties (3-7 min)."""
    from grader.autograde import _write_config
    from grader.cli import main

    nbname = next((REPO / "source" / LESSON).glob("*.ipynb")).name
    stamps = {"alice": "2026-12-02 11:00:00 UTC", "bob": "2026-12-04 09:30:00 UTC"}  # on time; 1 d 21.5 h late
    course = tmp_path / "course"
    shutil.copytree(REPO / "source" / LESSON, course / "source" / LESSON,
                    ignore=shutil.ignore_patterns(".OTTER_LOG", ".ipynb_checkpoints", "__pycache__"))
    _write_config(course)
    for student, stamp in stamps.items():
        folder = course / "submitted" / student / LESSON
        folder.mkdir(parents=True)
        shutil.copy(REPO / "tests" / "submissions" / LESSON / "correct.ipynb", folder / nbname)
        (folder / "timestamp.txt").write_text(stamp + "\n")
    (tmp_path / "roster.csv").write_text(ROSTER)
    db = f"sqlite:///{course / 'gradebook.db'}"
    assert main(["roster", "import", str(tmp_path / "roster.csv"), "--db", db]) == 0

    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"],
               COURSE_ROOT=str(course))
    for args in (["generate_assignment", LESSON], ["db", "assignment", "add", LESSON, "--duedate=2026-12-02 12:00:00 UTC"],
                 ["autograde", LESSON], ["export", "--to", "nbgrader.csv"]):
        done = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, env=env,
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, (args, done.stdout[-3000:], done.stderr[-3000:])
    with open(course / "nbgrader.csv", newline="") as f:
        nb_rows = {r["student_id"]: r for r in csv.DictReader(f)}

    out = tmp_path / "out"
    assert main(["autograde", str(course / "submitted"), "-a", LESSON, "-o", str(out), "--db", db,
                 "--no-progress"]) == 0  # due date and roster from the course gradebook
    with open(out / "grades.csv", newline="") as f:
        ours = {r["student"]: r for r in csv.DictReader(f)}

    full = 15.0
    assert float(nb_rows["alice"]["late_submission_penalty"]) == float(ours["alice"]["late_penalty"]) == 0
    assert float(nb_rows["bob"]["late_submission_penalty"]) == float(ours["bob"]["late_penalty"]) == \
        pytest.approx(late_penalty(full, 45.5 * 3600)) == pytest.approx(3.0)
    for s in stamps:
        assert float(nb_rows[s]["raw_score"]) == float(ours[s]["score"]) == full
        assert float(nb_rows[s]["score"]) == pytest.approx(float(ours[s]["final_score"]))
        assert nb_rows[s]["timestamp"][:19] == ours[s]["timestamp"][:19] == stamps[s][:19]
        assert (ours[s]["first_name"], ours[s]["email"]) == (nb_rows[s]["first_name"], nb_rows[s]["email"])
    assert ours["bob"]["late_by"] == "1d 21:30" and ours["alice"]["email"] == "alice@example.org"

    assert main(["export", "--format", "canvas", "--db", db, "-o", str(tmp_path / "canvas.csv")]) == 0
    canvas = {r[0]: r[5] for r in _csv(tmp_path / "canvas.csv")[2:]}
    assert canvas == {"Builder, Bob": "12", "Danvers, Carol": "", "Liddell, Alice": "15"}


def test_course_export_cli_writes_canvas_and_long_csv_and_lists_pending(tmp_path, capsys, lesson8_gradebook):
    from grader.cli import main

    db = _copy_db(lesson8_gradebook, tmp_path)
    assert main(["export", "--db", db, "-o", str(tmp_path / "canvas.csv")]) == 0
    assert main(["export", "--format", "long", "--db", db, "-o", str(tmp_path / "scores.csv")]) == 0
    out = capsys.readouterr().out
    assert "1 late (penalty applied), 1 without a submission (empty in Canvas)" in out
    assert "hand-graded points still pending" in out and "alice/08_the_speed_landscape" in out
    assert _csv(tmp_path / "canvas.csv")[1][:6] == ["Points Possible", "", "", "", "", "12"]
    assert _csv(tmp_path / "scores.csv")[0][:6] == ["student", "first_name", "last_name", "email", "assignment", "item"]


@pytest.mark.parametrize("text", ["=HYPERLINK(\"http://x\",\"y\")", "+1+cmd|' /C calc'!A0", "@SUM(A1)", "-2+3"])
def test_student_text_is_never_a_formula_in_a_csv(tmp_path, text):
    """Ids and notes (a student's exception message) reach the CSVs an instructor opens in a spreadsheet."""
    from grader.spreadsheet import SafeWriter

    with open(tmp_path / "g.csv", "w", newline="") as f:
        SafeWriter(f).writerow([text, 3, "-1.5", "plain"])
    (row,) = list(csv.reader(open(tmp_path / "g.csv")))
    assert row == ["'" + text, "3", "-1.5", "plain"]

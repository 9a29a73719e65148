"""nbgrader_config.py loads as plain data and nbgrader's gradebook writes without warnings.

The commands' own logs are checked in tests/test_plain_nbgrader.py; these are the in-process
halves, in a second.
"""

from __future__ import annotations

import json
import warnings

from traitlets.config.loader import PyFileConfigLoader

from tests.notebook_code import REPO


def _config():
    return PyFileConfigLoader("nbgrader_config.py", path=str(REPO)).load_config()


def test_config_is_plain_data_that_formgrader_can_show_as_json():
    """formgrader's Manage Assignments page json.dumps the config ("config is not serializable" otherwise)."""
    config = _config()
    json.dumps(config)
    feedback = config.GenerateFeedback.preprocessors
    assert feedback[0] == "nbgrader.preprocessors.GetGrades"
    assert all(isinstance(name, str) for name in feedback + config.Autograde.autograde_preprocessors)


def test_every_configured_preprocessor_name_imports():
    from traitlets.utils.importstring import import_item

    config = _config()
    names = (config.GenerateSolution.preprocessors + config.GenerateFeedback.preprocessors
             + config.Autograde.sanitize_preprocessors + config.Autograde.autograde_preprocessors)
    assert "grader.nbgrader_plugins.TrustedGrade" in names
    for name in names:
        assert isinstance(import_item(name), type), name


def test_gradebook_adds_a_submission_without_sqlalchemy_warnings(tmp_path):
    """nbgrader's add_submission under SQLAlchemy 2 warned three times per autograde (grader/nbgrader_gradebook.py)."""
    _config()  # installs the fix, as every nbgrader command does
    from nbgrader.api import Gradebook
    from sqlalchemy.exc import SAWarning

    with Gradebook(f"sqlite:///{tmp_path / 'gradebook.db'}") as gb:
        gb.add_assignment("lesson")
        gb.add_notebook("nb", "lesson")
        gb.add_grade_cell("check", "nb", "lesson", max_score=2, cell_type="code")
        gb.add_student("alice")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            gb.update_or_create_submission("lesson", "alice")
        assert not [w for w in caught if issubclass(w.category, SAWarning)], [str(w.message) for w in caught]
        submission = gb.find_submission("lesson", "alice")
        assert [nb.name for nb in submission.notebooks] == ["nb"]
        assert gb.find_grade("check", "nb", "lesson", "alice").max_score == 2


def test_validate_kernels_run_the_public_checks_and_grading_kernels_skip_them():
    """The grading flag (public checks skipped) reaches autograde's kernels, never Validate's:
    there checks.validate(...) must run the public checks, or Validate says "Success!" on a stub."""
    from nbgrader.preprocessors import Execute
    from nbgrader.validator import Validator

    config = _config()
    assert "COURSE_AUTOGRADING" in " ".join(Execute(config=config).extra_arguments)
    assert Execute(parent=Validator(config=config)).extra_arguments == []

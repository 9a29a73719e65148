"""A real browser: what a student and an instructor see in JupyterLab, not what an API returns.

Headless Chromium (Debian's ``chromium`` and ``chromium-driver``, installed by .ci/run) drives a
``jupyter lab`` started on a copy of the course: a release notebook runs its setup and one
check cell and shows the check's diagnosis; formgrader lists the assignments; the notebook
toolbar's Validate button (nbgrader's labextension, POST /assignments/validate) tells the truth.
Skipped where Chromium, its driver or selenium are missing (a self-learner's laptop).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.notebook_code import REPO

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
try:
    import selenium  # noqa: F401
except ImportError:
    selenium = None
if not (CHROMIUM and CHROMEDRIVER and selenium):
    pytest.skip("needs Debian's chromium and chromium-driver and the selenium package (.ci/run installs them)",
                allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

# The lesson to open and check: its setup loads no weights.
LESSON = "05_flow_matching"
NOTEBOOK = "flow_matching.ipynb"
EXERCISE = "flow_interpolate"
# The lesson to validate: Validate runs the whole notebook, and this one runs fastest top to bottom.
VALIDATE = "10_diffusion_transformers/diffusion_transformers.ipynb"
LESSONS = sorted(p.name for p in (REPO / "source").iterdir() if p.is_dir() and p.name[:2].isdigit())
SUCCESS = "Success! Your notebook passes all the tests."
# Waits are bounds on a loaded 2-core machine, never assertions on speed.
WAIT = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """``jupyter lab`` on a copy of the course (cwd = course root: Validate reads its nbgrader_config.py there)."""
    tmp = tmp_path_factory.mktemp("browser")
    course = tmp / "course"
    course.mkdir()
    for folder in ("source", "release", "solutions"):
        shutil.copytree(REPO / folder, course / folder)
    shutil.copy(REPO / "nbgrader_config.py", course)
    port = _free_port()
    env = dict(os.environ,
               PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"],
               # the kernels and nbgrader import this checkout's grader/ (a worktree, or CI's editable install)
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
               # no user settings, workspaces or runtime files from the machine's own Jupyter
               JUPYTER_CONFIG_DIR=str(tmp / "jupyter-config"), JUPYTER_RUNTIME_DIR=str(tmp / "jupyter-runtime"))
    env.pop("COURSE_ROOT", None)
    log = open(tmp / "lab.log", "w")
    args = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
            "--IdentityProvider.token=", "--ServerApp.password=", f"--ServerApp.root_dir={course}"]
    if os.geteuid() == 0:
        args.append("--allow-root")
    proc = subprocess.Popen(args, cwd=course, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + WAIT
        while True:
            if proc.poll() is not None:
                pytest.fail("jupyter lab exited:\n" + (tmp / "lab.log").read_text()[-3000:])
            try:
                with urllib.request.urlopen(url + "/api/status", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("jupyter lab did not answer:\n" + (tmp / "lab.log").read_text()[-3000:])
            time.sleep(0.5)
        yield url, course, tmp / "lab.log"
    finally:
        proc.send_signal(signal.SIGTERM)  # jupyter's own shutdown, no prompt: stops its kernels
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the server and its kernels: the session started here
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    options.add_argument("--headless=new")
    if os.geteuid() == 0:
        # Chromium refuses to start as root with its sandbox on (crbug.com/638180); CI runs as root.
        options.add_argument("--no-sandbox")
    # Containers give /dev/shm 64 MB, too little for a renderer; use /tmp instead.
    options.add_argument("--disable-dev-shm-usage")
    options.add_argument("--window-size=1400,1000")
    # The driver is given: selenium must not look for (download) one.
    os.environ.setdefault("SE_OFFLINE", "true")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def _open_notebook(driver, url: str, path: str):
    driver.get(f"{url}/lab/tree/{path}?reset")  # ?reset: only this document open
    wait = WebDriverWait(driver, WAIT)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".jp-NotebookPanel .jp-Notebook .jp-Cell")) > 4)
    # the kernel is up before anything runs (the toolbar's status circle)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".jp-NotebookPanel .jp-Notebook-ExecutionIndicator[data-status='idle']"))
    return driver.find_element(By.CSS_SELECTOR, ".jp-NotebookPanel:not(.lm-mod-hidden)")


def _cells(panel):
    return panel.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell")


def _validate(driver, panel) -> str:
    """Click the toolbar's Validate; the text of nbgrader's "Validation Results" dialog."""
    panel.find_element(By.CSS_SELECTOR, ".validate-button").click()
    # The dialog opens once the server has answered (results, or "Validation failed: ...").
    WebDriverWait(driver, WAIT).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".jp-Dialog"))
    text = driver.find_element(By.CSS_SELECTOR, ".jp-Dialog").text
    driver.find_element(By.CSS_SELECTOR, ".jp-Dialog .jp-mod-accept").click()
    return text


def test_release_notebook_runs_setup_and_check_and_shows_the_diagnosis(lab, browser):
    url, _, log = lab
    panel = _open_notebook(browser, url, f"release/{LESSON}/{NOTEBOOK}")
    cells = _cells(panel)
    assert f'checks.run("{EXERCISE}")' in cells[4].text  # the check cell below the answer cell
    cells[0].click()
    # Shift+Enter from the top: title, setup, prose, the untouched answer cell, its check.
    for _ in range(5):
        ActionChains(browser).key_down(Keys.SHIFT).send_keys(Keys.ENTER).key_up(Keys.SHIFT).perform()
    try:
        WebDriverWait(browser, WAIT).until(lambda d: f"FAIL  {EXERCISE}" in _cells(panel)[4].text)
    except TimeoutException:
        pytest.fail(f"no verdict under the check cell; it shows:\n{_cells(panel)[4].text}\n"
                    f"server log:\n{log.read_text()[-3000:]}")
    shown = _cells(panel)[4].text
    assert f"{EXERCISE}: not implemented yet (it raises NotImplementedError)." in shown
    assert "Traceback" not in shown
    assert "references: diffusers' FlowMatchEulerDiscreteScheduler" in _cells(panel)[1].text


def test_formgrader_lists_every_lesson(lab, browser):
    url, _, _ = lab
    browser.get(f"{url}/formgrader")
    try:
        WebDriverWait(browser, WAIT).until(
            lambda d: all(name in d.find_element(By.TAG_NAME, "body").text for name in LESSONS))
    except TimeoutException:
        pytest.fail("formgrader's list misses lessons:\n" + browser.find_element(By.TAG_NAME, "body").text)
    assert browser.current_url.endswith("/formgrader/manage_assignments")
    assert len(LESSONS) == 12


def test_validate_reports_failures_on_the_untouched_release_notebook(lab, browser):
    url, _, _ = lab
    panel = _open_notebook(browser, url, f"release/{VALIDATE}")
    shown = _validate(browser, panel)
    assert "Validation Results" in shown, shown
    assert SUCCESS not in shown, shown
    assert "The following cell failed" in shown, shown
    assert "patchify: not implemented yet" in shown, shown  # the public check's diagnosis, via checks.validate


def test_validate_passes_the_fully_correct_notebook(lab, browser):
    url, _, _ = lab
    panel = _open_notebook(browser, url, f"solutions/{VALIDATE}")
    shown = _validate(browser, panel)
    assert "Validation Results" in shown, shown
    assert SUCCESS in shown, shown

"""grader.pictures: the real-weights branch runs a pipeline once per picture; a rerun reads the cache.

The real pipelines cannot run here (no pretrained weights, no hub): a fake tiny pipeline stands in
for them, which is all the branch and the cache need.
"""

from __future__ import annotations

import pytest
from PIL import Image

from grader import pictures

RUNS = [{"label": "scale 0.5", "scale": 0.5, "seed": 0}, {"label": "scale 1.0", "scale": 1.0, "seed": 0}]


class FakePipeline:
    """Paints a flat picture whose colour encodes the run's scale; counts its calls."""

    def __init__(self):
        self.calls = []

    def __call__(self, run):
        self.calls.append(run)
        return Image.new("RGB", (8, 8), (int(255 * run["scale"] / 2), 0, 0))


def _loader(pipe, loads):
    def load():
        loads.append(1)
        return pipe
    return load


def test_real_branch_generates_each_picture_once_then_reads_the_cache(tmp_path):
    pipe, loads = FakePipeline(), []
    first = pictures.gallery("01_x", "canny", RUNS, _loader(pipe, loads), lambda p, run: p(run), folder=tmp_path)
    assert first.made_now == 2 and len(pipe.calls) == 2 and loads == [1]
    assert first.captions == ["scale 0.5", "scale 1.0"]
    assert [im.getpixel((0, 0))[0] for im in first.images] == [63, 127]

    again = pictures.gallery("01_x", "canny", RUNS, _loader(pipe, loads), lambda p, run: p(run), folder=tmp_path)
    assert again.made_now == 0 and len(pipe.calls) == 2 and loads == [1]      # no pipeline loaded, none run
    assert [im.getpixel((0, 0)) for im in again.images] == [im.getpixel((0, 0)) for im in first.images]


def test_without_real_weights_nothing_is_made_and_nothing_written(tmp_path):
    made = pictures.gallery("01_x", "canny", RUNS, lambda: None, lambda p, run: pytest.fail("ran"), folder=tmp_path)
    assert made is None and not any(tmp_path.iterdir())


def test_a_changed_setting_makes_a_new_picture_and_keeps_the_others(tmp_path):
    pipe = FakePipeline()
    pictures.gallery("01_x", "canny", RUNS, lambda: pipe, lambda p, run: p(run), folder=tmp_path)
    changed = [RUNS[0], {**RUNS[1], "scale": 1.5}]
    result = pictures.gallery("01_x", "canny", changed, lambda: pipe, lambda p, run: p(run), folder=tmp_path)
    assert result.made_now == 1 and pipe.calls[-1]["scale"] == 1.5
    assert pictures.picture_key("canny", RUNS[1]) != pictures.picture_key("canny", changed[1])


def test_a_cache_without_real_weights_still_shows_its_pictures(tmp_path):
    pipe = FakePipeline()
    pictures.gallery("01_x", "canny", RUNS, lambda: pipe, lambda p, run: p(run), folder=tmp_path)
    cached = pictures.gallery("01_x", "canny", RUNS, lambda: None, lambda p, run: pytest.fail("ran"), folder=tmp_path)
    assert cached is not None and cached.made_now == 0 and len(cached.images) == 2


def test_show_says_in_one_line_what_the_real_model_would_show(capsys):
    pictures.show(None, "Canny edges followed at scale 1, ignored at 0.")
    out = capsys.readouterr().out.strip().splitlines()
    assert out == ["(no real weights on this machine) Canny edges followed at scale 1, ignored at 0."]


def test_the_loaders_find_no_real_weights_here_and_touch_nothing(monkeypatch):
    monkeypatch.setenv("COURSE_STANDIN_ONLY", "1")
    assert not pictures.real_weights("controlnet_canny")
    assert pictures.controlnet_pipeline() is None
    assert pictures.ip_adapter_pipeline() is None

"""Issue #14, item 1: clips cheap enough to render ahead of people, queries posted ahead of them,
and the learned behaviour in the report (video + strip of frames)."""

from __future__ import annotations

import ctypes.util
import os

import go_right_env  # noqa: F401 - registers the toy env
import numpy as np
import pytest
from test_loop import toy_config

from prefrl.control.loop import PreferenceLoop


def _skip_without_offscreen_gl() -> None:
    if os.environ.get("MUJOCO_GL", "osmesa") == "osmesa" and ctypes.util.find_library("OSMesa") is None:
        pytest.skip("MuJoCo off-screen rendering needs libOSMesa: apt-get install libosmesa6 and set MUJOCO_GL=osmesa")


def test_people_find_queries_waiting_ahead_of_the_schedule_within_the_budget(tmp_path):
    loop = PreferenceLoop(toy_config(tmp_path, teacher="human", labels=30, initial_fraction=0.2, human_queue_ahead=10))
    loop.initial_labels()
    assert loop.counters.queries_posted == 6 and loop.queue_shortfall() == 4
    for q in loop.store.queries("pending"):  # people answered everything posted so far
        loop.store.lease_query("ann")
        loop.store.answer_query(q.id, "ann", 1.0)
    assert loop.queue_shortfall() == 10
    loop.ask(loop.queue_shortfall())
    assert loop.store.count_queries(status="pending") == 10 and loop.queue_shortfall() == 0
    loop.counters.queries_posted = 25  # near the end of the budget: never more than it allows
    for q in loop.store.queries("pending"):
        loop.store.lease_query("ann")
        loop.store.answer_query(q.id, "ann", 1.0)
    assert loop.queue_shortfall() == 5


@pytest.mark.parametrize("overrides", [dict(teacher="human", human_queue_ahead=0), dict(teacher="rational")])
def test_only_people_get_queries_ahead_of_the_schedule(tmp_path, overrides):
    loop = PreferenceLoop(toy_config(tmp_path, labels=30, **overrides))
    assert loop.queue_shortfall() == 0


def test_human_queue_ahead_is_checked(tmp_path):
    with pytest.raises(ValueError, match="human_queue_ahead"):
        toy_config(tmp_path, human_queue_ahead=-1)


def test_clip_quality_changes_the_look_not_the_physics():
    _skip_without_offscreen_gl()
    from prefrl.control.render import make_render_env, tune_offscreen

    fast, default = make_render_env("HalfCheetah-v5"), make_render_env("HalfCheetah-v5", quality="default")
    try:
        m = fast.unwrapped.model
        assert m.vis.quality.offsamples == 0 and not m.light_castshadow.any() and not m.mat_reflectance.any()
        assert default.unwrapped.model.light_castshadow.any()  # the model's own look has shadows
        rng = np.random.default_rng(0)
        fast.reset(seed=0)
        default.reset(seed=0)
        for _ in range(20):
            action = rng.uniform(-1, 1, 6)
            fast.step(action)
            default.step(action)
        np.testing.assert_array_equal(fast.unwrapped.data.qpos, default.unwrapped.data.qpos)
        frame = fast.render()
        assert frame.shape == (160, 240, 3) and frame.std() > 10  # a picture, not a blank
        with pytest.raises(ValueError, match="render quality"):
            tune_offscreen(fast, "pretty")
    finally:
        fast.close()
        default.close()


def test_frames_stream_into_the_encoder_as_they_come(tmp_path):
    import imageio_ffmpeg

    from prefrl.control.render import write_strip, write_video

    made = []

    def frames():
        for t in range(25):
            frame = np.full((40, 60, 3), 10 * t, np.uint8)
            made.append(frame)
            yield frame

    path = write_video(frames(), tmp_path / "a.mp4", fps=20)
    assert imageio_ffmpeg.count_frames_and_secs(str(path))[0] == 25
    with pytest.raises(ValueError, match="no frames"):
        write_video(iter(()), tmp_path / "b.mp4")
    strip = write_strip(made, tmp_path / "s.png", n=5)
    from PIL import Image

    img = np.asarray(Image.open(strip))
    assert img.shape == (40, 300, 3)
    assert [int(img[0, 60 * i, 0]) for i in range(5)] == [0, 60, 120, 180, 240]  # frames 0, 6, 12, 18, 24


def test_record_episode_writes_the_video_and_a_strip(tmp_path):
    _skip_without_offscreen_gl()
    import imageio_ffmpeg

    from prefrl.control.render import record_episode

    path, _ = record_episode("HalfCheetah-v5", lambda o: np.zeros(6), tmp_path / "ep.mp4", max_steps=12,
                             strip=tmp_path / "ep.png", strip_frames=4)
    assert imageio_ffmpeg.count_frames_and_secs(str(path))[0] == 13  # the first frame and one per step
    from PIL import Image

    assert Image.open(tmp_path / "ep.png").size == (4 * 240, 160)


def test_the_report_shows_the_recorded_behaviour(tmp_path):
    """The final policy's one recording (video + strip of its frames) is what the report shows, once."""
    from prefrl.control import run_state
    from prefrl.control.evaluation import CLIP_NAME, STRIP_NAME
    from prefrl.control.render import write_strip, write_video

    loop = PreferenceLoop(toy_config(tmp_path, teacher="human", steps=128 * 2, labels=6))
    loop.run()
    assert "frames of the episode" not in (loop.run_dir / "report.html").read_text()  # the toy env cannot render
    frames = [np.full((16, 16, 3), 20 * t, np.uint8) for t in range(10)]
    write_video(frames, loop.run_dir / CLIP_NAME)
    write_strip(frames, loop.run_dir / STRIP_NAME, n=4)
    loop.history.clip = {"path": str(loop.run_dir / CLIP_NAME), "strip": str(loop.run_dir / STRIP_NAME), "return": 1.0, "steps": 9}
    run_state.write_run_outputs(loop)
    page = (loop.run_dir / "report.html").read_text()
    assert page.count("<video") == 1 and "data:video/mp4;base64," in page
    assert page.count('alt="frames of the episode" style="max-width:100%" src="data:image/png;base64,') == 1
    assert "behaviour.mp4" not in page

"""The default renderer: a real MuJoCo clip, rendered in a child process, reached through the app."""

from __future__ import annotations

import ctypes.util
import os
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from labelapp_helpers import Labeller

from prefrl.app.clips import ProcessRenderer
from prefrl.app.server import AppConfig, create_app
from prefrl.data.types import Segment


def halfcheetah_segment(steps: int = 6) -> Segment:
    from prefrl.control.envs import make_env

    env = make_env("HalfCheetah-v5", seed=0)
    obs, info = env.reset(seed=0)
    states, observations, actions = [], [], []
    for _ in range(steps):
        states.append(info["sim_state"])
        observations.append(obs)
        actions.append(env.action_space.sample())
        obs, _, _, _, info = env.step(actions[-1])
    env.close()
    return Segment(obs=np.array(observations), actions=np.array(actions), sim_states=np.array(states),
                   env_id="HalfCheetah-v5")


@pytest.mark.timeout(300)
def test_the_default_renderer_renders_a_mujoco_clip_in_a_child_process(store, tmp_path):
    if os.environ.get("MUJOCO_GL", "osmesa") == "osmesa" and ctypes.util.find_library("OSMesa") is None:
        pytest.skip("MuJoCo off-screen rendering needs libOSMesa: apt-get install libosmesa6, or set MUJOCO_GL=egl")
    left, right = store.add_segments([halfcheetah_segment(), halfcheetah_segment(4)])
    store.add_query(left_id=left, right_id=right)
    app = create_app(store, AppConfig(clips_dir=tmp_path / "clips", allowed_hosts=("testserver",)))
    with TestClient(app) as client:  # the lifespan starts the worker and stops the child at the end
        token = store.add_labeller("ann")
        client.post("/login", data={"token": token})
        ann = Labeller(client, "ann")
        q = ann.next()
        deadline = time.monotonic() + 240
        while (r := client.get(q["left"]["clip_url"])).status_code == 202:
            assert time.monotonic() < deadline, "clip not rendered in time"
            time.sleep(0.5)
        assert r.status_code == 200 and r.content[4:8] == b"ftyp" and len(r.content) > 1000
        assert isinstance(app.state.clips.renderer, ProcessRenderer)


def test_a_clip_shows_every_other_halfcheetah_step_at_real_speed(tmp_path):
    # HalfCheetah steps at 20 Hz; a labelling clip shows at most CLIP_MAX_FPS = 10 frames a second,
    # so 30 steps (1.5 s) are 15 frames played at 10 fps: the same 1.5 s, half the frames to render.
    if os.environ.get("MUJOCO_GL", "osmesa") == "osmesa" and ctypes.util.find_library("OSMesa") is None:
        pytest.skip("MuJoCo off-screen rendering needs libOSMesa: apt-get install libosmesa6, or set MUJOCO_GL=egl")
    import av

    from prefrl.app.clips import SimRenderer
    from prefrl.control.render import clip_stride

    assert [clip_stride(f) for f in (5, 10, 20, 30, 125)] == [1, 1, 2, 3, 13]
    renderer = SimRenderer()
    try:
        renderer(halfcheetah_segment(30), tmp_path / "c.mp4")
    finally:
        renderer.close()
    with av.open(str(tmp_path / "c.mp4")) as video:
        stream = video.streams.video[0]
        frames = list(video.decode(stream))
        assert (stream.width, stream.height) == (240, 160) and float(stream.average_rate) == 10.0
    assert len(frames) == 15
    assert not np.array_equal(frames[0].to_ndarray(), frames[-1].to_ndarray())  # it moves

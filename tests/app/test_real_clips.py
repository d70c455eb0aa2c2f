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

"""Video clips: a stored segment re-rendered from its simulator states, or a whole episode.

MuJoCo renders off-screen with ``MUJOCO_GL=osmesa`` (Debian package ``libosmesa6``); a
segment's frames come from restoring its saved qpos‖qvel one step at a time. Atari
segments need no simulator: their frames are the last channel of each stacked
observation. MP4s are written by imageio-ffmpeg (``.gif`` works too, by extension).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from prefrl.data.types import Segment

#: Frame size of rendered clips (small: they are shown side by side in the web app).
WIDTH, HEIGHT = 240, 160
DEFAULT_FPS = 20


def _use_offscreen_gl() -> None:
    # Must be set before MuJoCo creates a GL context; respect an explicit choice (egl, glfw).
    os.environ.setdefault("MUJOCO_GL", "osmesa")
    if os.environ["MUJOCO_GL"] == "osmesa":
        os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")


def write_video(frames: Sequence[np.ndarray], path: str | Path, fps: float = DEFAULT_FPS) -> Path:
    """Write (H, W, 3) or (H, W) uint8 frames to ``path`` (mp4 via ffmpeg, or gif)."""
    import imageio.v2 as imageio

    if len(frames) == 0:
        raise ValueError("no frames to write")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = [_to_rgb(f) for f in frames]
    if path.suffix.lower() == ".gif":
        imageio.mimsave(path, rgb, duration=1.0 / fps, loop=0)
    else:
        # macro_block_size=1 keeps 84×84 Atari frames unpadded; yuv420p for browser playback.
        with imageio.get_writer(path, fps=fps, codec="libx264", macro_block_size=1, pixelformat="yuv420p") as w:
            for frame in rgb:
                w.append_data(frame)
    return path


def _to_rgb(frame: np.ndarray) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        frame = np.clip(frame, 0, 255).astype(np.uint8)
    if frame.ndim == 2:
        frame = np.repeat(frame[:, :, None], 3, axis=2)
    if frame.shape[0] % 2 or frame.shape[1] % 2:  # yuv420p wants even sizes
        frame = np.pad(frame, ((0, frame.shape[0] % 2), (0, frame.shape[1] % 2), (0, 0)), mode="edge")
    return frame


def make_render_env(env_id: str, width: int = WIDTH, height: int = HEIGHT) -> Any:
    """A single env that renders ``rgb_array`` frames of ``width``×``height`` (MuJoCo kwargs)."""
    _use_offscreen_gl()
    from prefrl.control.envs import is_atari, make_env

    if is_atari(env_id):
        return make_env(env_id, seed=0, render_mode="rgb_array")
    import gymnasium as gym

    from prefrl.control.envs import resolve_env_id

    name = resolve_env_id(env_id)
    try:
        try:
            env = gym.make(name, render_mode="rgb_array", width=width, height=height)
        except TypeError:  # not a MuJoCo env: no width/height kwargs
            env = gym.make(name, render_mode="rgb_array")
    except gym.error.DependencyNotInstalled as e:  # classic control renders with pygame
        raise ValueError(f"environment {env_id!r} cannot render: {e}") from None
    return env


def check_renderable(env_id: str) -> None:
    """``ValueError`` naming the problem unless ``env_id`` renders ``rgb_array`` frames here (before a long run)."""
    env = make_render_env(env_id)
    try:
        env.reset(seed=0)
        try:
            frame = env.render()
        except Exception as e:  # noqa: BLE001 - a GL or display backend that fails to start
            raise ValueError(f"environment {env_id!r} cannot render: {type(e).__name__}: {e}") from None
        if frame is None or np.asarray(frame).ndim not in (2, 3):
            raise ValueError(f"environment {env_id!r} renders no rgb_array frames")
    finally:
        env.close()


def segment_frames(segment: Segment, env: Any = None) -> list[np.ndarray]:
    """Frames of a stored segment: from its sim states (MuJoCo/classic) or its stacked obs (Atari)."""
    obs = np.asarray(segment.obs)
    if segment.sim_states is None:
        if obs.dtype == np.uint8 and obs.ndim == 4:  # (T, C, H, W) frame stack: last channel is the newest
            return [frame for frame in obs[:, -1]]
        raise ValueError(
            f"segment {segment.id} has no sim_states and no image observations: it cannot be rendered"
        )
    from prefrl.control.envs import restore

    own_env = env is None
    if own_env:
        if not segment.env_id:
            raise ValueError(f"segment {segment.id} has no env_id: cannot build an env to render it")
        env = make_render_env(segment.env_id)
    try:
        env.reset(seed=0)
        frames = []
        for state in np.asarray(segment.sim_states):
            restore(env, state)
            frames.append(np.asarray(env.render()).copy())
        return frames
    finally:
        if own_env:
            env.close()


def _fps_for(env_id: str) -> float:
    try:
        env = make_render_env(env_id)
    except Exception:  # noqa: BLE001 - unknown env: fall back to the default rate
        return DEFAULT_FPS
    try:
        dt = getattr(env.unwrapped, "dt", None)
        return float(1.0 / dt) if dt else float(env.metadata.get("render_fps") or DEFAULT_FPS)
    finally:
        env.close()


def render_segment(segment: Segment, path: str | Path, fps: float | None = None) -> Path:
    """Render a stored segment's clip to ``path`` (mp4 or gif) — what the web app shows labellers.

    Args:
        segment: with ``sim_states`` (T, D) and ``env_id``, or Atari frame-stack observations.
        path: output file; parent folders are created.
        fps: frames per second; default real time (1 / env dt) for MuJoCo, else 20.
    """
    frames = segment_frames(segment)
    if fps is None:
        fps = _fps_for(segment.env_id) if segment.sim_states is not None else DEFAULT_FPS
    return write_video(frames, path, fps=fps)


def record_episode(
    env_id: str,
    act: Callable[[np.ndarray], Any],
    path: str | Path,
    *,
    seed: int = 0,
    max_steps: int = 1000,
    env_kwargs: dict[str, Any] | None = None,
) -> tuple[Path, float]:
    """Run one episode with ``act(obs) -> action`` and save its frames; returns (path, true return).

    The env is the one training and :meth:`PPOAgent.evaluate` use (:func:`make_env` with ``env_kwargs``:
    ``fixed_horizon``, ``drop_ctrl_cost``), seeded the same way, so the video's return is that of the
    evaluation episode with the same ``seed``.
    """
    from prefrl.control.envs import make_env

    _use_offscreen_gl()
    kwargs = {**(env_kwargs or {}), "record_sim_state": False}
    try:
        env = make_env(env_id, seed=seed, render_mode="rgb_array", render_size=(WIDTH, HEIGHT), **kwargs)
    except ValueError:
        raise
    except Exception as e:  # noqa: BLE001 - a missing renderer (pygame) or GL backend
        raise ValueError(f"environment {env_id!r} cannot render: {type(e).__name__}: {e}") from None
    try:
        obs, _ = env.reset()  # make_env reset it with ``seed``; the vector env of evaluate() resets once more
        frames, total = [np.asarray(env.render()).copy()], 0.0
        for _ in range(max_steps):
            obs, reward, terminated, truncated, _ = env.step(act(obs))
            total += float(reward)
            frames.append(np.asarray(env.render()).copy())
            if terminated or truncated:
                break
        dt = getattr(env.unwrapped, "dt", None)
        fps = 1.0 / dt if dt else float(env.metadata.get("render_fps") or DEFAULT_FPS)
    finally:
        env.close()
    return write_video(frames, path, fps=min(fps, 60.0)), total

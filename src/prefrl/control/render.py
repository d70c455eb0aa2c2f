"""Video clips: a stored segment re-rendered from its simulator states, or a whole episode.

MuJoCo renders off-screen with ``MUJOCO_GL=osmesa`` (Debian package ``libosmesa6``); a
segment's frames come from restoring its saved qpos‖qvel one step at a time. Atari
segments need no simulator: their frames are the last channel of each stacked
observation. MP4s are encoded with libx264 in this process by PyAV (``.gif`` works too, by
extension, through imageio), frames streamed to the encoder as they are rendered.

Software GL pays for MuJoCo's default look: a 4096² shadow map, a reflective floor drawn twice
and 4× multisampling made a 240×160 HalfCheetah frame cost ~300 ms on OSMesa. Clips and report
videos (``quality="clip"``) render without them (~6–8 ms a frame); ``"default"`` keeps the
model's own look. Measured in docs/benchmarks.md, "People in the loop".
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from prefrl.data.types import Segment

#: Frame size of rendered clips (small: they are shown side by side in the web app).
WIDTH, HEIGHT = 240, 160
DEFAULT_FPS = 20
#: Labelling clips show at most this many frames a second (every k-th simulator state, played at real
#: speed): a frame is most of a clip's cost (~6 ms of OSMesa each at 240×160), and 10 frames a second
#: still show a gait, a fall or a turn (docs/benchmarks.md, "People in the loop"). Report videos keep every frame.
CLIP_MAX_FPS = 10.0
#: x264 preset of labelling clips: the fastest, one thread (3× faster than the default at 240×160,
#: files ~2× larger, ~30 KB a clip); long videos (a report's episode) keep x264's default (smaller).
CLIP_PRESET = "ultrafast"
X264_CRF = 25  # x264's constant quality

RenderQuality = Literal["clip", "default"]


def tune_offscreen(env: Any, quality: RenderQuality = "clip") -> None:
    """Cheaper MuJoCo offscreen rendering for ``env`` (call before its first ``render()``).

    ``"clip"``: no shadows, no reflections, no multisampling. ``"default"``: the model's own settings.
    Only the visual model changes (lights, materials, render quality), never the physics; envs
    without a MuJoCo model are left alone.
    """
    if quality not in ("clip", "default"):
        raise ValueError(f"render quality must be 'clip' or 'default', got {quality!r}")
    model = getattr(env.unwrapped, "model", None)
    if quality == "default" or model is None or not hasattr(model, "vis"):
        return
    model.vis.quality.offsamples = 0
    model.light_castshadow[:] = 0
    model.mat_reflectance[:] = 0.0


def _use_offscreen_gl() -> None:
    # Must be set before MuJoCo creates a GL context; respect an explicit choice (egl, glfw).
    os.environ.setdefault("MUJOCO_GL", "osmesa")
    if os.environ["MUJOCO_GL"] == "osmesa":
        os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")


def write_video(
    frames: Iterable[np.ndarray], path: str | Path, fps: float = DEFAULT_FPS, preset: str | None = CLIP_PRESET
) -> Path:
    """Write (H, W, 3) or (H, W) uint8 frames to ``path`` (H.264 mp4 via PyAV, or gif).

    ``frames`` may be a generator: each frame is encoded as it comes (libx264 through PyAV, in this
    process), so no frame list is kept. ``preset``: x264's (``None``: its default).
    """
    path = Path(path)
    it = iter(frames)
    first = next(it, None)
    if first is None:
        raise ValueError("no frames to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    first = _to_rgb(first)
    if path.suffix.lower() == ".gif":
        import imageio.v2 as imageio

        imageio.mimsave(path, [first, *(_to_rgb(f) for f in it)], duration=1.0 / fps, loop=0)
        return path
    from fractions import Fraction

    import av  # PyAV: libx264 in this process (an ffmpeg child per clip cost ~40–60 ms of CPU to start)

    height, width = first.shape[:2]
    # Encoded into a sibling file, renamed at the end: a failed clip leaves nothing half-written at ``path``.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part{path.suffix}")
    try:
        with av.open(str(tmp), "w") as container:
            stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"  # yuv420p: browser playback
            stream.options = {"crf": str(X264_CRF), **({"preset": preset} if preset else {})}
            stream.codec_context.thread_count = 1
            frame = first
            while frame is not None:
                if frame.shape != first.shape:
                    raise ValueError(f"frame of shape {frame.shape} in a video of {first.shape} frames")
                for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                    container.mux(packet)
                nxt = next(it, None)
                frame = None if nxt is None else _to_rgb(nxt)
            for packet in stream.encode():  # flush the encoder
                container.mux(packet)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
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


def make_render_env(env_id: str, width: int = WIDTH, height: int = HEIGHT, quality: RenderQuality = "clip") -> Any:
    """A single env that renders ``rgb_array`` frames of ``width``×``height`` (MuJoCo kwargs) at ``quality``
    (:func:`tune_offscreen`)."""
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
    tune_offscreen(env, quality)
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


def clip_stride(fps: float, max_fps: float = CLIP_MAX_FPS) -> int:
    """Every how many steps a clip of a ``fps`` env shows a frame, so that it shows at most ``max_fps``."""
    return max(1, int(np.ceil(fps / max_fps - 1e-9)))


def segment_frames(segment: Segment, env: Any = None, stride: int = 1) -> list[np.ndarray]:
    """Frames of a stored segment: from its sim states (MuJoCo/classic) or its stacked obs (Atari);
    every ``stride``-th step (the first included)."""
    return list(iter_segment_frames(segment, env, stride))


def iter_segment_frames(segment: Segment, env: Any = None, stride: int = 1) -> Iterator[np.ndarray]:
    """:func:`segment_frames` one frame at a time (to stream them to an encoder).

    Raises ``ValueError`` before the first frame when the segment cannot be rendered.
    """
    if not isinstance(stride, int) or isinstance(stride, bool) or stride < 1:
        raise ValueError(f"stride must be an int ≥ 1, got {stride!r}")
    obs = np.asarray(segment.obs)
    if segment.sim_states is None:
        if obs.dtype == np.uint8 and obs.ndim == 4:  # (T, C, H, W) frame stack: last channel is the newest
            return iter(list(obs[::stride, -1]))
        raise ValueError(
            f"segment {segment.id} has no sim_states and no image observations: it cannot be rendered"
        )
    own_env = env is None
    if own_env:
        if not segment.env_id:
            raise ValueError(f"segment {segment.id} has no env_id: cannot build an env to render it")
        env = make_render_env(segment.env_id)
    return _replay(segment, env, own_env, stride)


def _replay(segment: Segment, env: Any, own_env: bool, stride: int = 1) -> Iterator[np.ndarray]:
    from prefrl.control.envs import restore

    try:
        env.reset(seed=0)
        for state in np.asarray(segment.sim_states)[::stride]:
            restore(env, state)
            yield np.asarray(env.render()).copy()
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
        fps: the env's steps per second; default real time (1 / env dt) for MuJoCo, else 20. A
            simulated env's clip shows every :func:`clip_stride`-th step, at real speed.
    """
    if fps is None:
        fps = _fps_for(segment.env_id) if segment.sim_states is not None else DEFAULT_FPS
    stride = clip_stride(fps) if segment.sim_states is not None else 1  # Atari frames cost nothing to render
    return write_video(iter_segment_frames(segment, stride=stride), path, fps=fps / stride)


def write_strip(frames: Sequence[np.ndarray], path: str | Path, n: int = 8) -> Path:
    """A PNG of ``n`` frames taken evenly from ``frames``, side by side (a strip for a report)."""
    from PIL import Image

    if len(frames) == 0:
        raise ValueError("no frames for a strip")
    idx = np.unique(np.linspace(0, len(frames) - 1, num=min(n, len(frames))).round().astype(int))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate([_to_rgb(frames[i]) for i in idx], axis=1)).save(path, optimize=True)
    return path


def record_episode(
    env_id: str,
    act: Callable[[np.ndarray], Any],
    path: str | Path,
    *,
    seed: int = 0,
    max_steps: int = 1000,
    env_kwargs: dict[str, Any] | None = None,
    strip: str | Path | None = None,
    strip_frames: int = 8,
) -> tuple[Path, float]:
    """Run one episode with ``act(obs) -> action`` and save its frames; returns (path, true return).

    The env is the one training and :meth:`PPOAgent.evaluate` use (:func:`make_env` with ``env_kwargs``:
    ``fixed_horizon``, ``drop_ctrl_cost``), seeded the same way, so the video's return is that of the
    evaluation episode with the same ``seed``. Frames are streamed to the encoder; with ``strip``, a PNG
    of ``strip_frames`` frames spread over the episode is written there too (:func:`write_strip`).
    """
    from prefrl.control.envs import make_env

    _use_offscreen_gl()
    kwargs = {**(env_kwargs or {}), "record_sim_state": False}
    try:
        env = make_env(env_id, seed=seed, render_mode="rgb_array", render_size=(WIDTH, HEIGHT), **kwargs)
        tune_offscreen(env, "clip")
    except ValueError:
        raise
    except Exception as e:  # noqa: BLE001 - a missing renderer (pygame) or GL backend
        raise ValueError(f"environment {env_id!r} cannot render: {type(e).__name__}: {e}") from None
    total, kept = 0.0, []
    every = max(1, max_steps // (8 * max(strip_frames, 1)))  # frames kept for the strip, not the whole episode

    def frames() -> Iterator[np.ndarray]:
        nonlocal total
        obs, _ = env.reset()  # make_env reset it with ``seed``; the vector env of evaluate() resets once more
        for t in range(max_steps + 1):
            frame = np.asarray(env.render()).copy()
            if t % every == 0:
                kept.append(frame)
            yield frame
            if t == max_steps:
                return
            obs, reward, terminated, truncated, _ = env.step(act(obs))
            total += float(reward)
            if terminated or truncated:
                kept.append(np.asarray(env.render()).copy())
                yield kept[-1]
                return

    try:
        dt = getattr(env.unwrapped, "dt", None)
        fps = 1.0 / dt if dt else float(env.metadata.get("render_fps") or DEFAULT_FPS)
        out = write_video(frames(), path, fps=min(fps, 60.0), preset=None)
    finally:
        env.close()
    if strip is not None:
        write_strip(kept, strip, strip_frames)
    return out, total

"""Where a labelling clip's render time goes, and clips/s, before and after (issue #14, item 1).

Stores ``--clips`` HalfCheetah segments (random actions, 30 steps = 1.5 s each, as ``control train``
cuts them) in a fresh SQLite store, then renders them the way the app's render worker does, with
one env (one GL context) kept for all clips, in two ways:

- per phase, one after the other: read the segment from the store (DB), restore + MuJoCo render
  of every frame, copy the frame out, encode the MP4 (x264 via imageio-ffmpeg);
- end to end, as :class:`prefrl.app.clips.SimRenderer` does: clips/s.

Settings compared: ``before`` = the model's own visual quality (4096² shadow map, reflections,
4× multisampling) and imageio's default x264 preset; ``shadows`` = 1024² shadows and reflections
kept, no multisampling, x264 ultrafast; ``clip`` = no shadows, reflections or multisampling,
ultrafast, frames streamed to the encoder as they render; ``10fps`` (the labelling default now) =
``clip`` showing every other HalfCheetah step (``render.CLIP_MAX_FPS``). CPU ms/clip: this process
and its ffmpeg children, end to end (the figure that says how many clips a core renders).

    MUJOCO_GL=osmesa OMP_NUM_THREADS=1 .venv/bin/python benchmarks/clip_render.py --clips 8

Prints a markdown table (ms per clip, clips/s, KB per clip, load average); ``--out FILE`` appends it.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("MUJOCO_GL", "osmesa")


def make_segments(env_id: str, n: int, steps: int) -> list:
    import gymnasium as gym

    from prefrl.data.types import Segment

    env = gym.make(env_id)
    env.reset(seed=0)
    base, rng, out = env.unwrapped, np.random.default_rng(0), []
    for _ in range(n):
        obs, acts, states = [], [], []
        for _ in range(steps):
            action = rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
            o, *_ = env.step(action)
            obs.append(o)
            acts.append(action)
            states.append(np.concatenate([base.data.qpos, base.data.qvel]))
        out.append(Segment(obs=np.asarray(obs, np.float32), actions=np.asarray(acts), env_id=env_id,
                           sim_states=np.asarray(states)))
    env.close()
    return out


def encode_before(frames: list[np.ndarray], path: Path, fps: float) -> None:
    import imageio.v2 as imageio

    with imageio.get_writer(path, fps=fps, codec="libx264", macro_block_size=1, pixelformat="yuv420p") as w:
        for frame in frames:
            w.append_data(frame)


def cpu_seconds() -> float:
    """CPU time of this process and its waited-for children (the ffmpeg encoders)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run(setting: str, store, ids: list[int], env_id: str, tmp: Path) -> str:
    from prefrl.control.envs import restore
    from prefrl.control.render import clip_stride, make_render_env, write_video

    env = make_render_env(env_id, quality="default" if setting in ("before", "shadows") else "clip")
    if setting == "shadows":
        env.unwrapped.model.vis.quality.offsamples = 0
        env.unwrapped.model.vis.quality.shadowsize = 1024
    env.reset(seed=0)
    env.render()  # the GL context is made on the first frame: not timed
    stride = clip_stride(1.0 / env.unwrapped.dt) if setting == "10fps" else 1
    fps = 1.0 / env.unwrapped.dt / stride
    t_db = t_render = t_copy = t_encode = 0.0
    sizes = []
    for i, segment_id in enumerate(ids):
        t0 = time.perf_counter()
        segment = store.get_segment(segment_id)
        t1 = time.perf_counter()
        env.reset(seed=0)
        frames = []
        for state in segment.sim_states[::stride]:
            a = time.perf_counter()
            restore(env, state)
            image = env.render()
            b = time.perf_counter()
            frames.append(np.asarray(image).copy())
            t_render += b - a
            t_copy += time.perf_counter() - b
        path = tmp / f"{setting}-{i}.mp4"
        t2 = time.perf_counter()
        (encode_before if setting == "before" else write_video)(frames, path, fps)
        t_encode += time.perf_counter() - t2
        t_db += t1 - t0
        sizes.append(path.stat().st_size)
    n = len(ids)
    # End to end, as the app's worker does (streamed for the new settings).
    t0, c0 = time.perf_counter(), cpu_seconds()
    for i, segment_id in enumerate(ids):
        segment = store.get_segment(segment_id)
        if setting == "before":
            env.reset(seed=0)
            frames = []
            for state in segment.sim_states:
                restore(env, state)
                frames.append(np.asarray(env.render()).copy())
            encode_before(frames, tmp / f"e-{setting}-{i}.mp4", fps)
        else:
            from prefrl.control.render import iter_segment_frames

            write_video(iter_segment_frames(segment, env=env, stride=stride), tmp / f"e-{setting}-{i}.mp4", fps)
    clips_per_s, cpu_ms = n / (time.perf_counter() - t0), 1000 * (cpu_seconds() - c0) / n
    env.close()
    ms = lambda t: f"{1000 * t / n:.0f}"  # noqa: E731 - per clip
    return (f"| {env_id} | {setting} | {n} | {ms(t_db)} | {ms(t_render)} | {ms(t_copy)} | {ms(t_encode)} | "
            f"{clips_per_s:.2f} | {cpu_ms:.0f} | {np.mean(sizes) / 1024:.0f} | {os.getloadavg()[0]:.1f} |")


HEADER = ("| env | setting | clips | DB ms | MuJoCo render ms | frame copy ms | encode ms | end to end clips/s "
          "| CPU ms/clip | KB/clip | load (1 min) |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="HalfCheetah-v5")
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--steps", type=int, default=30, help="Frames per clip (HalfCheetah: 1.5 s at 20 fps).")
    parser.add_argument("--settings", nargs="+", default=["before", "shadows", "clip", "10fps"],
                        choices=["before", "shadows", "clip", "10fps"])
    parser.add_argument("--out", type=Path, default=None, help="Append the table to this markdown file.")
    args = parser.parse_args()
    from prefrl.data.store import PreferenceStore

    print(HEADER, flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp, PreferenceStore(Path(tmp) / "s.sqlite") as store:
        ids = store.add_segments(make_segments(args.env, args.clips, args.steps))
        for setting in args.settings:
            rows.append(run(setting, store, ids, args.env, Path(tmp)))
            print(rows[-1], flush=True)
    if args.out is not None:
        with open(args.out, "a") as f:
            f.write(HEADER + "\n" + "\n".join(rows) + "\n")


if __name__ == "__main__":
    main()

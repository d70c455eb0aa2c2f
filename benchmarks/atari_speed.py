"""Atari at a usable speed (issue #13 item 5): the whole Pong loop, before and after, and where its time goes.

Runs ``prefrl control train --env ALE/Pong-v5 --labels 500 --steps 200000`` (the README's command,
synthetic ``rational`` teacher; ``--initial-fraction`` of the labels up front) in a fresh process per
configuration for ``--seconds`` of wall clock,
and prints one markdown row per configuration: env steps/s by wall clock and by the process's CPU
time (the machine is shared: the load average is printed too), for the up-front phase (untrained
rollouts, the first labels, the first reward round) and for the loop after it, the share of each
phase, and the checkpoint's size. ``before`` is the configuration the README's command had before
the Atari preset (the ``ControlConfig`` defaults with the Nature CNN policy); ``after`` is what the
command runs now (``prefrl.control.presets.ATARI``). ``--write`` replaces the "Atari speed" table in
docs/benchmarks_control.md.

    .venv/bin/python benchmarks/atari_speed.py --seconds 600 --configs after before --write
    .venv/bin/python benchmarks/atari_speed.py --configs after --baseline-src /work/main/src --ceilings --write

``--baseline-src`` measures another checkout's code the same way (its row first); ``--ceilings`` times each
part of the loop alone (env stepping both ways, the PPO update, the policy's forward, reward scoring),
the ceiling the whole loop cannot beat on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from _docs import write_section  # benchmarks/ is sys.path[0] when run as a script

CHILD = r"""
import dataclasses, io, json, os, resource, signal, sys, tempfile, time, zlib
import torch
torch.set_num_threads(1)
from prefrl.control.config import ControlConfig
from prefrl.control.loop import PreferenceLoop
from prefrl.control.presets import atari_config
name, seconds, initial_fraction = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
tmp = tempfile.mkdtemp()
common = dict(labels=500, steps=200_000, run_dir=tmp + "/run", progress=False, eval_episodes=0, clip_steps=0,
              checkpoint_minutes=1e6, initial_fraction=initial_fraction)
if name == "before":
    cfg = ControlConfig(env_id="ALE/Pong-v5", policy_cnn="nature", **common)
elif name.startswith(("single", "split")):  # the preset, the loop in one process / split across an actor and a learner
    cfg = atari_config(**common, actors=int(name.startswith("split")))
    if "-epoch" in name:  # e.g. split-1-epoch: the paper's one pass per sample instead of cleanrl's 4 epochs
        cfg = dataclasses.replace(cfg, ppo=dataclasses.replace(cfg.ppo, update_epochs=int(name.split("-")[1])))
else:
    cfg = atari_config(**common)
loop = PreferenceLoop(cfg)
phases = {}
def timed(obj, attr, phase):
    fn = getattr(obj, attr)
    def wrapper(*a, **k):
        t0 = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            phases[phase] = phases.get(phase, 0.0) + time.perf_counter() - t0
    setattr(obj, attr, wrapper)
timed(loop.agent, "collect", "collect (env + policy)")
timed(loop, "ask", "ask (select queries)")
timed(loop, "answer_pending", "teacher + store")
timed(loop, "train_reward", "reward training")
timed(loop.reward, "predict", "reward prediction")
timed(loop.agent, "update", "PPO update")
class Stop(Exception):
    pass
def stop(*_):
    raise Stop()
signal.signal(signal.SIGALRM, stop)
signal.setitimer(signal.ITIMER_REAL, seconds)
def cpu():
    # this process, its waited-for children and the live actor process (actors=1), in CPU-seconds
    total = sum(sum(resource.getrusage(who)[:2]) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    proc = getattr(loop.agent, "process", None)
    if proc is not None and proc.pid:
        try:
            fields = open(f"/proc/{proc.pid}/stat").read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            pass
    return total
t0, c0 = time.perf_counter(), cpu()
mark = {}
orig_initial = loop.initial_labels
def initial(*a, **k):
    orig_initial(*a, **k)
    mark.update(wall=time.perf_counter() - t0, cpu=cpu() - c0, steps=loop.counters.global_step, phases=dict(phases))
loop.initial_labels = initial
try:
    loop.run()
except Stop:
    pass
signal.setitimer(signal.ITIMER_REAL, 0)
wall, cpu_s, steps = time.perf_counter() - t0, cpu() - c0, loop.counters.global_step
buf = io.BytesIO()
from prefrl.control.run_state import loop_state
torch.save(loop_state(loop), buf)
out = {"name": name, "wall": wall, "cpu": cpu_s, "steps": steps, "initial": mark, "phases": phases,
       "iterations": loop.counters.iteration, "labels": loop.counters.queries_posted,
       "checkpoint_mb": len(zlib.compress(buf.getbuffer(), 1)) / 1e6, "checkpoint_raw_mb": len(buf.getvalue()) / 1e6}
print("RESULT", json.dumps(out))
"""

MARK_BEGIN, MARK_END = "<!-- atari_speed:begin -->", "<!-- atari_speed:end -->"
CEIL_BEGIN, CEIL_END = "<!-- atari_ceilings:begin -->", "<!-- atari_ceilings:end -->"
DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks_control.md"


def run(name: str, seconds: float, initial_fraction: float, src: str | None = None, label: str | None = None) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if src:  # another checkout's code (its src/ first on the path), e.g. main before a change
        env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", CHILD, name, str(seconds), str(initial_fraction)], env=env, capture_output=True, text=True,
                          timeout=seconds + 900, check=True)  # fmt: skip
    out = json.loads(proc.stdout.split("RESULT", 1)[1])
    if label:
        out["name"] = label
    return out


CEILINGS = r"""
import json, resource, sys, time
import numpy as np, torch, gymnasium as gym
torch.set_num_threads(1)
from prefrl.control.envs import make_vec_env
from prefrl.control.policies import ActorCritic
from prefrl.reward.ensemble import RewardEnsemble
cpu = lambda: sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
out = {}
def env_rate(envs, steps=400):
    envs.reset(seed=0)
    rng = np.random.default_rng(0)
    t0, c0 = time.perf_counter(), cpu()
    for _ in range(steps):
        envs.step(rng.integers(0, 6, envs.num_envs))
    return steps * envs.num_envs / (cpu() - c0), steps * envs.num_envs / (time.perf_counter() - t0)
import inspect
if "ale_vector" in inspect.signature(make_vec_env).parameters:
    out["env: Gymnasium wrappers, 8 envs"] = env_rate(make_vec_env("ALE/Pong-v5", 8, 0, record_sim_state=False, ale_vector=False))
    out["env: ale-py vector env, 8 envs"] = env_rate(make_vec_env("ALE/Pong-v5", 8, 0))
else:  # a checkout from before ale-py's vector env
    out["env: Gymnasium wrappers, 8 envs"] = env_rate(make_vec_env("ALE/Pong-v5", 8, 0, record_sim_state=False))
space = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
obs = torch.randint(0, 255, (1024, 4, 84, 84), dtype=torch.uint8)
pol = ActorCritic(space, gym.spaces.Discrete(6), (64, 64), "a3c")
opt = torch.optim.Adam(pol.parameters(), lr=2.5e-4)
act = torch.randint(0, 6, (1024,))
def ppo_step(idx):
    _, lp, ent, v = pol.get_action_and_value(obs[idx], act[idx])
    (-(lp.mean()) + v.pow(2).mean() - 0.01 * ent.mean()).backward()
    opt.step(); opt.zero_grad(set_to_none=True)
ppo_step(torch.arange(256))
t0, c0 = time.perf_counter(), cpu()
for _ in range(4):  # the preset's update: 4 epochs of 4 minibatches over 8 × 128 steps
    perm = torch.randperm(1024)
    for i in range(0, 1024, 256):
        ppo_step(perm[i:i + 256])
out["PPO update alone (A3C, 4 epochs × 4 minibatches of 256)"] = (1024 / (cpu() - c0), 1024 / (time.perf_counter() - t0))
with torch.no_grad():
    t0, c0 = time.perf_counter(), cpu()
    for t in range(128):
        pol(obs[8 * t: 8 * t + 8])
out["policy forward in the env loop (8 frame stacks a step)"] = (1024 / (cpu() - c0), 1024 / (time.perf_counter() - t0))
ens = RewardEnsemble((4, 84, 84), (), 3, seed=0)
ens.predict_members(obs[:64].numpy())
t0, c0 = time.perf_counter(), cpu()
ens.predict_members(obs.numpy())
out["reward scoring (3 CNN members, every step)"] = (1024 / (cpu() - c0), 1024 / (time.perf_counter() - t0))
print("RESULT", json.dumps(out))
"""


def ceilings(src: str | None = None) -> dict:
    """Env steps per CPU-second (and per wall second) of each part of the loop alone, one process, one thread."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if src:
        env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", CEILINGS], env=env, capture_output=True, text=True, timeout=1800, check=True)
    return json.loads(proc.stdout.split("RESULT", 1)[1])


def row(r: dict) -> str:
    ini = r["initial"]
    loop_steps = r["steps"] - ini.get("steps", r["steps"])
    loop_wall, loop_cpu = r["wall"] - ini.get("wall", r["wall"]), r["cpu"] - ini.get("cpu", r["cpu"])
    steady = (f"{loop_steps / loop_wall:.0f} / {loop_steps / loop_cpu:.0f}" if loop_steps and loop_wall > 0
              else "never reached")  # fmt: skip
    first = (f"{ini['wall']:.0f} s ({ini['steps']} steps)" if ini else f"not done in {r['wall']:.0f} s")
    after = {k: v - ini.get("phases", {}).get(k, 0.0) for k, v in r["phases"].items()} if ini else r["phases"]
    total = sum(after.values()) or 1.0
    split = ", ".join(f"{k} {100 * v / total:.0f} %" for k, v in sorted(after.items(), key=lambda kv: -kv[1]) if v > 0)
    return (f"| {r['name']} | {r['steps'] / r['wall']:.0f} / {r['steps'] / r['cpu']:.0f} | {first} | {steady} | "
            f"{split} | {r['checkpoint_raw_mb']:.0f} MB → {r['checkpoint_mb']:.1f} MB |")  # fmt: skip


HEADER = ("| configuration | whole run so far: env steps/s wall / CPU | up-front phase | after it: env steps/s wall / CPU "
          "| where the time goes after the up-front phase | checkpoint (torch.save → zlib) |\n|---|---|---|---|---|---|")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=600.0, help="wall clock per configuration")
    p.add_argument("--configs", nargs="*", default=["after", "before"], choices=["after", "single", "split", "split-2-epochs", "split-1-epoch", "before"],
                   help="after: the Atari preset as it is; single / split: the preset with actors=0 / actors=1 (the loop "
                        "in one process / an actor process collecting while the learner learns); split-E-epoch(s): split "
                        "with E PPO epochs instead of 4; before: the defaults before the preset")  # fmt: skip
    p.add_argument("--initial-fraction", type=float, default=0.05,
                   help="share of the 500 labels asked up front (the run's default 0.25 keeps 'before' in its first "
                        "reward round for over 20 minutes here, so the loop after it is never measured)")
    p.add_argument("--baseline-src", help="also run 'after' with this checkout's src/ (e.g. /work/main/src before a "
                                          "change), as the row 'after, BASELINE'")  # fmt: skip
    p.add_argument("--ceilings", action="store_true", help="time each part of the loop alone (env, PPO update, policy "
                                                           "forward, reward scoring): the ceiling of the whole loop")  # fmt: skip
    p.add_argument("--write", action="store_true", help="rewrite the table(s) in docs/benchmarks_control.md")
    a = p.parse_args()
    load0 = os.getloadavg()[0]
    rows = []
    runs = [(name, None, None) for name in a.configs]
    if a.baseline_src:
        runs.insert(0, ("after", a.baseline_src, f"after, {a.baseline_src}"))
    for name, src, label in runs:
        r = run(name, a.seconds, a.initial_fraction, src, label)
        rows.append(row(r))
        print(json.dumps(r), file=sys.stderr, flush=True)
    if rows:
        table = f"{HEADER}\n" + "\n".join(rows)
        note = (f"load average {load0:.1f} before, {os.getloadavg()[0]:.1f} after; {a.seconds:.0f} s of wall clock per "
                f"configuration; --initial-fraction {a.initial_fraction}")
        print(table + "\n\n" + note)
        if a.write:
            write_section(DOC, MARK_BEGIN, MARK_END, f"{table}\n\n{note}")
    if a.ceilings:
        load1 = os.getloadavg()[0]
        parts = ceilings()
        base = ceilings(a.baseline_src) if a.baseline_src else None
        head = "| part of the loop, alone | env steps per CPU-second / per wall second |" + (" baseline |" if base else "")
        lines = [head, "|---|---|" + ("---|" if base else "")]
        for k, (c, w) in parts.items():
            extra = f" {base[k][0]:.0f} / {base[k][1]:.0f} |" if base and k in base else (" |" if base else "")
            lines.append(f"| {k} | {c:.0f} / {w:.0f} |{extra}")
        table = "\n".join(lines) + f"\n\nload average {load1:.1f} before, {os.getloadavg()[0]:.1f} after"
        print(table)
        if a.write:
            write_section(DOC, CEIL_BEGIN, CEIL_END, table)


if __name__ == "__main__":
    main()

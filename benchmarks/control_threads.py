"""Torch intra-op threads vs the whole preference loop's speed (issue #13 item 2).

Runs ``make demo``'s configuration (``prefrl.control.presets.demo_config``) cut to ``--steps`` env
steps (labels scaled) once per thread setting, each in a fresh process with ``OMP_NUM_THREADS``
unset, and prints one markdown row per setting: env steps/s by wall clock and by CPU time. ``0`` is
torch's default (one thread per core). A run past ``--timeout`` seconds is reported as such.

    .venv/bin/python benchmarks/control_threads.py --steps 20480 --threads 1 2 0
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time

CHILD = """
import dataclasses, sys, tempfile, time
import torch
from prefrl.control.loop import train
from prefrl.control.presets import demo_config
threads, steps = int(sys.argv[1]), int(sys.argv[2])
if threads:
    torch.set_num_threads(threads)
with tempfile.TemporaryDirectory() as tmp:
    cfg = demo_config(run_dir=tmp + "/run", progress=False)
    cfg = dataclasses.replace(cfg, steps=steps, labels=max(8, round(cfg.labels * steps / cfg.steps)),
                              ppo=dataclasses.replace(cfg.ppo, total_steps=steps))
    t0 = time.perf_counter()
    train(cfg)
    print("WALL", time.perf_counter() - t0, "THREADS", torch.get_num_threads())
"""


def run(threads: int, steps: int, timeout: float) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    try:
        out = subprocess.run([sys.executable, "-c", CHILD, str(threads), str(steps)], env=env, capture_output=True,
                             text=True, timeout=timeout, check=True).stdout  # fmt: skip
    except subprocess.TimeoutExpired:
        return f"| {threads or 'default'} | — | — | did not finish in {timeout:.0f} s |"
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    loop_wall = float(out.split("WALL")[1].split()[0])
    used = out.split("THREADS")[1].split()[0]
    label = f"default ({used})" if threads == 0 else str(threads)
    return f"| {label} | {steps / loop_wall:.0f} | {steps / cpu:.0f} | {loop_wall:.0f} s loop, {wall:.0f} s with start-up |"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20_480)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2, 0], help="0 = torch's default")
    p.add_argument("--timeout", type=float, default=900.0)
    a = p.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    print("| torch threads | env steps/s (wall) | env steps/s (CPU) | time |")
    print("|---|---|---|---|")
    for t in a.threads:
        print(run(t, a.steps, a.timeout), flush=True)
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

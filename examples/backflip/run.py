"""Hopper learns a backflip from a judge alone (Christiano et al. 2017, §3.2), as one `control train` run.

    MUJOCO_GL=osmesa .venv/bin/python examples/backflip/run.py --out runs/backflip            # the full run
    MUJOCO_GL=osmesa .venv/bin/python examples/backflip/run.py --out /tmp/bf --quick          # smoke (~1 min)

It only assembles the command line: ``prefrl control train --env Hopper-v5 --teacher judge
--judge examples/backflip/judge.py:score_segment …``; the run's report.html has the return curves,
the number of comparisons and (``prefrl control eval RUN --video flip.mp4``) a video of the policy.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def command(out: Path, quick: bool, labels: int, steps: int, seed: int) -> list[str]:
    if quick:
        labels, steps = 40, 8192
    return [sys.executable, "-m", "prefrl", "control", "train", "--env", "Hopper-v5", "--teacher", "judge",
            "--judge", f"{HERE / 'judge.py'}:score_segment", "--labels", str(labels), "--steps", str(steps),
            "--fixed-horizon", "1000", "--seed", str(seed), "--run-dir", str(out)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="Run directory (must not exist).")
    parser.add_argument("--labels", type=int, default=900, help="Comparisons (the paper: 900 for the backflip).")
    parser.add_argument("--steps", type=int, default=2_000_000, help="Env steps.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="A tiny budget, to check that it runs.")
    args = parser.parse_args()
    cmd = command(args.out, args.quick, args.labels, args.steps, args.seed)
    print(" ".join(cmd), flush=True)
    sys.exit(subprocess.call(cmd))


if __name__ == "__main__":
    main()

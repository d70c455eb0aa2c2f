"""What the LM-vs-TRL benchmarks share: one fresh subprocess per measured run, its peak RSS.

Imports nothing from prefrl: the workers also run in the TRL venv.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB (Linux ``ru_maxrss`` is in KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def summarise(step_s: list[float], tokens: list[float], warmup: int, cpu_s: list[float] | None = None) -> dict:
    """Median step time, mean generated tokens per step and seconds per 1,000 generated tokens over the
    steps after ``warmup`` (wall clock, and CPU time of the process when ``cpu_s`` is given); peak RSS."""
    s, t = step_s[warmup:] or step_s, tokens[warmup:] or tokens
    out = {
        "step_s": statistics.median(s),
        "tokens_per_step": statistics.mean(t),
        "s_per_1k_tokens": 1000.0 * sum(s) / max(sum(t), 1.0),
        "peak_rss_mb": peak_rss_mb(),
        "steps": len(step_s),
    }
    if cpu_s is not None:
        c = cpu_s[warmup:] or cpu_s
        out["cpu_step_s"] = statistics.median(c)
        out["cpu_s_per_1k_tokens"] = 1000.0 * sum(c) / max(sum(t), 1.0)
        # the spread of the measured steps (each step's CPU s / 1k tokens): how far one step is from another
        per_step = [1000.0 * ci / max(ti, 1.0) for ci, ti in zip(c, t, strict=False)]
        out["cpu_s_per_1k_range"] = [min(per_step), max(per_step)]
    return out


def spread(res: dict) -> str:
    """``lo–hi`` of a result's per-step CPU s / 1k tokens (:func:`summarise`), for a table cell."""
    lo, hi = res.get("cpu_s_per_1k_range", [float("nan")] * 2)
    return f"{lo:.1f}–{hi:.1f}"


def time_prefrl_steps(step, prompts: list, per_step: int, rows: int, steps: int, warmup: int) -> dict:
    """``steps`` calls of a prefrl trainer's ``step`` on consecutive slices of ``per_step`` prompts
    (``rows`` completions each step): :func:`summarise` of its own clock and the process's CPU time, plus
    the median seconds per phase (sampling with the policy's log-probs, scoring, updates)."""
    import time

    times, cpu, tokens, phases = [], [], [], []
    for s in range(steps):
        c0 = time.process_time()
        m = step(prompts[s * per_step : (s + 1) * per_step])
        cpu.append(time.process_time() - c0)
        times.append(m["time/step_s"])
        tokens.append(m["response/length"] * rows)
        phases.append([m["time/rollout_s"], m["time/score_s"], m["time/update_s"]])
    res = summarise(times, tokens, warmup, cpu)
    measured = phases[warmup:] or phases
    res["phases_s"] = [statistics.median(col) for col in zip(*measured, strict=True)]
    return res


def run_worker(python: str, script: str, argv: list[str], src: str | None = None) -> dict:
    """Run ``python script argv…`` on one thread and return the JSON on its last stdout line.

    prefrl is imported from ``src`` (default: this checkout's ``src/``), e.g. an older revision's
    for a before/after measurement.
    """
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": src or str(ROOT / "src"),
        "TOKENIZERS_PARALLELISM": "false",
    }
    proc = subprocess.run([python, script, *argv], capture_output=True, text=True, env=env, timeout=3000)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {argv[:3]} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cached_run(results_file: str | None, key: str, run) -> dict:  # noqa: ANN001 - run: () -> dict
    """``run()``'s result, or the one saved under ``key`` in the JSONL ``results_file`` by an earlier,
    interrupted invocation (each finished run is appended there: a long benchmark resumes)."""
    if results_file:
        path = Path(results_file)
        if path.exists():
            for line in path.read_text().splitlines():
                row = json.loads(line)
                if row["key"] == key:
                    return row["result"]
    res = run()
    if results_file:
        with open(results_file, "a") as f:
            f.write(json.dumps({"key": key, "result": res}) + "\n")
    return res

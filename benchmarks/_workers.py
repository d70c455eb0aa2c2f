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


#: The phases of an RL step whose CPU time both sides report (``cpu_phases_s``); ``update`` is the rest of the step.
PHASES = ("sampling", "scoring", "reward", "update")


class PhaseClock:
    """CPU seconds per phase of one step, from wrapping the functions that do each phase.

    ``wrap(owner, name, phase)`` replaces ``owner.name`` by a timed call (``phase`` a name, or a function of
    the call's arguments giving one; with ``when``, only calls for which ``when()`` is true count, e.g.
    no-grad calls of a log-prob function that the update also uses; a call inside an already timed call is
    not counted twice). :meth:`split` returns the step's phases with
    the untimed remainder as ``update``, and starts the next step.
    """

    def __init__(self) -> None:
        self.spent: dict[str, float] = {}
        self._depth = 0

    def wrap(self, owner, name: str, phase, when=None) -> None:  # noqa: ANN001 - any object, any callable
        import time

        inner = getattr(owner, name)

        def timed(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            if self._depth or (when is not None and not when()):
                return inner(*args, **kwargs)
            self._depth += 1
            c0 = time.process_time()
            try:
                return inner(*args, **kwargs)
            finally:
                self._depth -= 1
                key = phase(*args, **kwargs) if callable(phase) else phase
                self.spent[key] = self.spent.get(key, 0.0) + time.process_time() - c0

        setattr(owner, name, timed)

    def split(self, step_cpu_s: float) -> list[float]:
        """[sampling, scoring, reward, update] CPU s of the step that took ``step_cpu_s``."""
        out = [self.spent.get(p, 0.0) for p in PHASES[:-1]]
        self.spent = {}
        return [*out, step_cpu_s - sum(out)]


def median_phases(phases: list[list[float]], warmup: int) -> list[float]:
    """Per-phase median over the measured steps (after ``warmup``)."""
    measured = phases[warmup:] or phases
    return [statistics.median(col) for col in zip(*measured, strict=True)]


def phase_cell(res: dict) -> str:
    """``sampling / scoring / reward / update`` CPU s per step of a result, for a table cell."""
    ph = res.get("cpu_phases_s")
    return " / ".join(f"{x:.1f}" for x in ph) if ph else "–"


def time_prefrl_steps(trainer, prompts: list, per_step: int, rows: int, steps: int, warmup: int) -> dict:
    """``steps`` calls of a prefrl trainer's ``step`` on consecutive slices of ``per_step`` prompts
    (``rows`` completions each step): :func:`summarise` of its own clock and the process's CPU time, plus
    the median seconds per phase by the wall clock (sampling with the policy's log-probs, scoring, updates)
    and by CPU time (:class:`PhaseClock`: sampling, reference/critic scoring, reward model, update)."""
    import time

    clock = PhaseClock()
    clock.wrap(trainer, "rollout", "sampling")
    # reference log-probs (and PPO's critic values, whose graph its one-epoch update reuses)
    clock.wrap(trainer, "_score_rollouts" if hasattr(trainer, "_score_rollouts") else "_score_policy", "scoring")
    clock.wrap(trainer, "_task_scores", "reward")
    times, cpu, tokens, phases, cpu_phases = [], [], [], [], []
    for s in range(steps):
        c0 = time.process_time()
        m = trainer.step(prompts[s * per_step : (s + 1) * per_step])
        cpu.append(time.process_time() - c0)
        cpu_phases.append(clock.split(cpu[-1]))
        times.append(m["time/step_s"])
        tokens.append(m["response/length"] * rows)
        phases.append([m["time/rollout_s"], m["time/score_s"], m["time/update_s"]])
    res = summarise(times, tokens, warmup, cpu)
    res["phases_s"] = median_phases(phases, warmup)
    res["cpu_phases_s"] = median_phases(cpu_phases, warmup)
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

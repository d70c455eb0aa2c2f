"""Time from an answer to the next pair playable, while the run trains (issue #14 must-show).

Starts ``prefrl control train --teacher human --serve --labellers l1,…,lN`` on ``--env``
(HalfCheetah-v5 by default; MuJoCo clips rendered by the app's render worker), reads the login
links it prints, and drives N labellers in one headless Chromium (one browser context each,
Playwright's async API). Timing starts when a labeller's first pair is playable (the run's warm-up: its first rollouts,
the up-front queries, the first clips). Each labeller then answers at the paper's pace, one answer every ``--pace``
seconds (3): it waits for a pair whose two clips are loaded and playable (a ``src`` set and
``readyState ≥ 2``: removing a video's ``src`` keeps its old ``readyState``, so without the first
check the previous pair's clips counted as the new pair's),
waits out the rest of its 3 s, presses ←, and times how long the next pair takes to become
playable. After ``--seconds`` the run is stopped and the store is checked: every answer a labeller
gave is in it exactly once (none lost, none duplicated).

    MUJOCO_GL=osmesa OMP_NUM_THREADS=1 .venv/bin/python benchmarks/labelling_latency.py --labellers 1 8 --seconds 120

Prints one markdown row per labeller count (p50 / p95 / max latency, as the driver measures it, from
before it sends the key press to after Playwright reports the pair playable; the same in the page's
own clock, split into its parts; answers, lost, duplicated; clips the render worker finished per second
while people labelled; the cores the training process, the app with its render processes and the
browser used over the window; load average); ``--out FILE`` appends them. Needs /usr/bin/chromium
and the playwright package.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
# In the page's clock, for the last answer: key press → next pair playable (the first animation frame
# the predicate holds on, without Playwright's round trips), and its parts: key press → the answer
# request leaves, the request (Chromium's resource timing: the server's time plus the loopback), its
# response → the pair playable.
KEYDOWN = "document.addEventListener('keydown', () => { window.__keydown = performance.now(); }, true)"
PHASES = ("() => { const a = performance.getEntriesByType('resource').filter(e => e.name.endsWith('/api/answer')).pop();"
          " return a && window.__keydown ? [window.__playable - window.__keydown, a.startTime - window.__keydown,"
          " a.responseEnd - a.startTime, window.__playable - a.responseEnd] : null; }")
PLAYABLE = ("(old => { const d = document.getElementById('app').dataset; const ok = d.queryId > 0 && d.queryId !== old"
            " && [...document.querySelectorAll('video')].length === 2"
            " && [...document.querySelectorAll('video')].every(v => v.getAttribute('src') && v.readyState >= 2);"
            " if (ok) window.__playable = performance.now(); return ok; })")


def start_run(env_id: str, n: int, run_dir: Path, steps: int, labels: int) -> tuple[subprocess.Popen, dict[str, str]]:
    names = [f"l{i + 1}" for i in range(n)]
    cmd = [sys.executable, "-m", "prefrl", "control", "train", "--env", env_id, "--teacher", "human", "--serve",
           "--labellers", ",".join(names), "--port", "0", "--labels", str(labels), "--steps", str(steps),
           "--run-dir", str(run_dir), "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS="1", MUJOCO_GL=os.environ.get("MUJOCO_GL", "osmesa"))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    links: dict[str, str] = {}
    deadline = time.monotonic() + 300
    while len(links) < n and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the run ended before printing its links (exit {proc.wait()})")
        match = re.match(r"Login link for (\w+): (\S+)", line)
        if match:
            links[match.group(1)] = match.group(2)
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # keep the pipe drained
    return proc, links


async def labeller(browser, link: str, pace: float, seconds: float, latencies: list[float], answered: list[int],
                   window: list[float], phases: list[list[float]]) -> None:
    context = await browser.new_context(bypass_csp=True)  # bypass_csp: the wait predicate only
    await context.add_init_script(KEYDOWN)
    page = await context.new_page()
    await page.goto(link)
    await page.get_by_role("button", name="Log in").click()
    await page.wait_for_url(link.split("/login")[0] + "/")
    # Warm-up, not timed: the run collects its first segments and posts the up-front queries, and the
    # first clips are rendered. The labeller's window starts when its first pair is playable.
    await page.wait_for_function(PLAYABLE, arg="", polling="raf", timeout=600_000)
    window.append(time.time())
    until = time.monotonic() + seconds
    shown, t_answer = "", None
    while time.monotonic() < until:
        try:
            await page.wait_for_function(PLAYABLE, arg=shown, polling="raf", timeout=max(1.0, until - time.monotonic()) * 1000)
        except Exception:  # noqa: BLE001 - nothing playable before the end
            break
        if t_answer is not None:
            latencies.append(time.perf_counter() - t_answer)
            measured = await page.evaluate(PHASES)
            if measured:
                phases.append(measured)
        shown = await page.locator("#app").get_attribute("data-query-id")
        wait = pace - (time.perf_counter() - t_answer) if t_answer is not None else pace
        if wait > 0:
            await asyncio.sleep(wait)
        if time.monotonic() >= until:
            break
        t_answer = time.perf_counter()
        await page.keyboard.press("ArrowLeft")
        answered.append(int(shown))
    window.append(time.time())
    # An answer still in flight when the window ends is given time to be stored (the page counts it
    # once the server has acknowledged it); one that never is, is lost.
    with contextlib.suppress(Exception):
        await page.wait_for_function("n => Number(document.getElementById('counter').textContent) >= n",
                                     arg=len(answered), timeout=30_000)
    await context.close()


async def drive(links: dict[str, str], pace: float, seconds: float) -> tuple[list[float], dict[str, list[int]], list[float], list]:
    from playwright.async_api import async_playwright

    latencies: list[float] = []
    phases: list[list[float]] = []
    window: list[float] = []  # wall-clock starts and ends of the labellers' timed windows
    answered = {name: [] for name in links}
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        await asyncio.gather(*(labeller(browser, link, pace, seconds, latencies, answered[name], window, phases)
                               for name, link in links.items()))
        await browser.close()
    return latencies, answered, window, phases


class CpuSampler(threading.Thread):
    """Every second: (time, CPU s of the training process, of its children — the app and its render
    processes —, of the browser — this process's other descendants). Differences over the timed
    window say where the cores went."""

    def __init__(self, run_pid: int) -> None:
        super().__init__(daemon=True)
        self.run_pid, self.samples, self.stop = run_pid, [], threading.Event()

    @staticmethod
    def _cpu(procs) -> float:
        total = 0.0
        for p in procs:
            with contextlib.suppress(Exception):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    def run(self) -> None:
        import psutil

        run, me = psutil.Process(self.run_pid), psutil.Process()
        while not self.stop.wait(1.0):
            with contextlib.suppress(Exception):
                app = run.children(recursive=True)
                mine = {p.pid for p in [run, *app]}
                browser = [p for p in me.children(recursive=True) if p.pid not in mine]
                self.samples.append((time.time(), self._cpu([run]), self._cpu(app), self._cpu(browser)))

    def cores(self, start: float, end: float) -> tuple[float, float, float]:
        """Mean cores used over [start, end] by the training process, the app with its renders, the browser."""
        inside = [s for s in self.samples if start <= s[0] <= end]
        if len(inside) < 2:
            return (float("nan"),) * 3
        (t0, *a), (t1, *b) = inside[0], inside[-1]
        return tuple((y - x) / (t1 - t0) for x, y in zip(a, b))


def check_store(run_dir: Path, answered: dict[str, list[int]]) -> tuple[int, int]:
    """(lost, duplicated): answers given in the browser that are not in the store, and extra comparisons of a query."""
    from prefrl.data.store import PreferenceStore

    lost = duplicated = 0
    with PreferenceStore(run_dir / "preferences.sqlite") as store:
        for name, qids in answered.items():
            for qid in qids:
                mine = [c for c in store.comparisons(query_id=qid) if c.labeller == name]
                lost += not mine
                duplicated += max(len(store.comparisons(query_id=qid)) - 1, 0)
    return lost, duplicated


def bench(env_id: str, n: int, seconds: float, pace: float, steps: int, labels: int) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        proc, links = start_run(env_id, n, run_dir, steps, labels)
        sampler = CpuSampler(proc.pid)
        sampler.start()
        try:
            latencies, answered, window, phases = asyncio.run(drive(links, pace, seconds))
        finally:
            sampler.stop.set()
            proc.terminate()
            proc.wait(timeout=60)
        lost, duplicated = check_store(run_dir, answered)
        # Clips the render worker finished while people labelled (what the pace asked of it, or all it could).
        start, end = min(window), max(window)
        done = [p.stat().st_mtime for p in (run_dir / "clips").glob("*.mp4")]
        clips_per_s = sum(start <= t <= end for t in done) / max(end - start, 1e-9)
        cores = " / ".join(f"{c:.2f}" for c in sampler.cores(start, end))
    load = os.getloadavg()[0]
    lat = np.asarray(latencies) * 1000 if latencies else np.full(1, np.nan)
    n_answers = sum(len(v) for v in answered.values())
    split = ("{} = {} + {} + {}".format(*(f"{a:.0f} ({b:.0f})" for a, b in zip(*np.percentile(phases, [50, 95], axis=0))))
             if phases else "—")
    return (f"| {env_id} | {n} | {seconds:.0f} | {n_answers} | {np.percentile(lat, 50):.0f} | "
            f"{np.percentile(lat, 95):.0f} | {lat.max():.0f} | {split} | {lost} | {duplicated} | {clips_per_s:.2f} | "
            f"{cores} | {load:.1f} |")


HEADER = ("| env | labellers | seconds | answers | p50 ms | p95 ms | max ms | page clock: key→playable = key→request + request "
          "+ →playable ms, p50 (p95) "
          "| lost | duplicated | clips rendered/s | cores: training / app + renders / browser | load (1 min) |\n"
          "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|---:|")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="HalfCheetah-v5")
    parser.add_argument("--labellers", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--seconds", type=float, default=120.0, help="Labelling time per labeller count.")
    parser.add_argument("--pace", type=float, default=3.0, help="Seconds between a labeller's answers.")
    parser.add_argument("--steps", type=int, default=1_000_000, help="The run's budget (it is stopped after --seconds).")
    parser.add_argument("--labels", type=int, default=700)
    parser.add_argument("--out", type=Path, default=None, help="Append the rows to this markdown file.")
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        sys.exit(f"needs {CHROMIUM}: apt-get install chromium")
    print(HEADER, flush=True)
    rows = []
    for n in args.labellers:
        rows.append(bench(args.env, n, args.seconds, args.pace, args.steps, args.labels))
        print(rows[-1], flush=True)
    if args.out is not None:
        with open(args.out, "a") as f:
            f.write("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()

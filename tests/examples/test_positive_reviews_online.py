"""examples/positive_reviews/online_methods.py in its quick mode on a tiny model: GRPO, RLOO and online DPO
train against run.py's reward model, are evaluated like PPO and DPO, and their docs section survives run.py's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "positive_reviews" / "online_methods.py"


def test_online_methods_quick_trains_evaluates_and_writes_its_docs_section(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "positive_reviews.md").write_text(
        "# Positive reviews\n\n| policy | gold | KL |\n|---|---|---|\n| dpo | +0.500 ± 0.030 | 6.00 ± 0.20 |\n"
        "| ppo | +0.600 ± 0.030 | 12.00 ± 0.40 |\n\n<!-- online_methods.py: GRPO, RLOO and online DPO (issue #15) -->\n"
        "| policy | gold | KL | steps run | s / step |\n|---|---|---|---|---|\n"
        "| online-dpo-gold | +0.700 ± 0.040 | 12.50 ± 0.30 | 16 | 93 |\n"
    )  # an earlier run's section, with a row this run does not redo  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--model", "tiny", "--quick", "--out", str(tmp_path / "run"), "--steps", "2",
         "--docs", str(docs)],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "run" / "new_methods.jsonl").read_text().splitlines()]
    assert [r["name"] for r in rows] == ["online-dpo", "grpo", "rloo", "reference"]
    assert all(r["steps"] == 2 and r["n"] == 8 for r in rows[:3])  # quick budget: 8 held-out prompts × 1 sample
    assert (tmp_path / "run" / "online-dpo" / "prefs.db").exists()  # the online-DPO teacher answered through a store
    text = (docs / "positive_reviews.md").read_text()
    assert "## GRPO, RLOO and online DPO" in text and "| rloo |" in text
    assert "| online-dpo-gold | +0.700 ± 0.040 | 12.50 ± 0.30 | 16 | 93 |" in text  # kept, and said so
    assert "Kept from this section's earlier version (not re-run): online-dpo-gold." in text
    # the best row within 10 nats is picked over both tables: ppo's +0.6 is over budget, dpo's +0.5 within
    assert "Highest held-out gold at sequence KL ≤ 10 nats: dpo" in text
    assert (docs / "positive_reviews" / "frontier_online.png").stat().st_size > 10_000  # the plot with every method
    assert "(positive_reviews/frontier_online.png)" in text

    sys.path.insert(0, str(SCRIPT.parent))
    import run as pr  # noqa: E402

    summary = {"budget_name": "quick", "model": "tiny", "wall_s": 60.0, "budget": vars(pr.QUICK), "pairs": {"pairs": 1,
               "teacher_agreement_with_gold": 1.0}, "eval": {}, "best_of_n": [{"n": 1, "gold": 0.0, "gold_se": 0.0,
               "kl": 0.0}], "ppo_gold_gain": 0.0, "dpo_gold_gain": 0.0, "ppo_steps_per_s": 1.0, "sample_prompts": []}  # fmt: skip
    pr.write_docs(summary, {}, [], docs)  # run.py rewrites its own part and keeps online_methods.py's section
    assert "## GRPO, RLOO and online DPO" in (docs / "positive_reviews.md").read_text()

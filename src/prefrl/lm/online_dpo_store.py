"""Online DPO's rounds in the preference store: post the fresh pairs, wait for answers, read them back.

The store is the run's ledger, so a killed run loses nothing and asks nothing twice:

- a round's pairs are stored together with their queries in one transaction
  (:meth:`~prefrl.data.queue.QueryQueue.add_text_queries`), each pair's ``meta`` naming the run
  and the round (``{"online_dpo": run_id, "round": r, …}``); a resumed round finds its pairs
  there (:func:`round_pairs`) instead of sampling new ones;
- a query is answered once (the store refuses a second answer), by whichever teacher leases it;
- the trainer keeps the id of the last answer it trained on (in ``trainer_state.pt``), and each
  round trains on the run's answers after it (:func:`new_answers`), late answers to an earlier
  round's pairs included.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from prefrl.data.types import Comparison, TextPair, utcnow
from prefrl.lm.data import PreferenceExample

__all__ = ["RUN_KEY", "AnswerBatch", "round_pairs", "post_round", "wait_for_answers", "new_answers"]

#: The key of a pair's ``meta`` that names the online-DPO run it belongs to.
RUN_KEY = "online_dpo"


def round_pairs(store: Any, run_id: str, round_no: int) -> list[TextPair]:
    """The pairs run ``run_id`` posted for round ``round_no`` (empty if it has not posted them yet)."""
    return store.text_pairs(meta={RUN_KEY: run_id, "round": int(round_no)})


def post_round(
    store: Any,
    run_id: str,
    round_no: int,
    prompts: Sequence[str],
    responses_a: Sequence[str],
    responses_b: Sequence[str],
    *,
    policy_step: int,
    labeller: str | None,
) -> list[TextPair]:
    """Store one pair per prompt and queue it for ``labeller`` (None = anyone), in one transaction."""
    pairs = [
        TextPair(prompt, a, b, meta={RUN_KEY: run_id, "round": int(round_no), "index": i, "policy_step": policy_step})
        for i, (prompt, a, b) in enumerate(zip(prompts, responses_a, responses_b, strict=True))
    ]
    store.add_text_queries(pairs, labeller=labeller)
    return pairs


def _settled_answer(store: Any, pair_id: int, settle_s: float) -> Comparison | None:
    comps = store.comparisons_of(text_pair_id=pair_id)
    if not comps:
        return None
    newest = comps[-1]
    return newest if newest.created_at <= utcnow() - timedelta(seconds=settle_s) else None


def wait_for_answers(
    store: Any,
    pairs: Sequence[TextPair],
    timeout_s: float,
    settle_s: float,
    poll_s: float = 0.5,
    on_change: Callable[[int], Any] | None = None,
) -> int:
    """Wait until every pair has an answer at least ``settle_s`` old, or ``timeout_s`` has passed;
    returns how many still have none (they stay queued). ``on_change(n)`` hears each new count
    of pairs still waiting (the progress bar shows it)."""
    deadline = time.monotonic() + timeout_s
    waiting = [p for p in pairs if p.id is not None]
    shown = None
    while True:
        waiting = [p for p in waiting if _settled_answer(store, int(p.id), settle_s) is None]  # type: ignore[arg-type]
        if on_change is not None and len(waiting) != shown:
            shown = len(waiting)
            on_change(shown)
        if not waiting or time.monotonic() >= deadline:
            return len(waiting)
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))


@dataclass
class AnswerBatch:
    """The run's answers after the last one trained on, as DPO examples."""

    examples: list[PreferenceExample] = field(default_factory=list)
    ties: int = 0  # μ = 0.5: "equally good", no ranking for DPO
    incomparable: int = 0  # μ = None: "can't tell" / skipped
    last_id: int | None = None  # the newest answer read (the next round reads after it)


def new_answers(store: Any, run_id: str, since_id: int, settle_s: float) -> AnswerBatch:
    """The run's settled, comparable answers with an id above ``since_id``, oldest first.

    Reading stops at the first answer younger than ``settle_s`` (it may still be undone), so no
    answer is skipped: it is read by a later round. Answers of labellers excluded from training
    (:meth:`~prefrl.data.records.RecordStore.exclude_labeller`) are passed over.
    """
    out = AnswerBatch(last_id=since_id)
    cutoff = utcnow() - timedelta(seconds=settle_s)
    excluded = set(store.excluded_labellers())
    pairs: dict[int, TextPair] = {}
    for comp in store.comparisons(kind="text", since_id=since_id):
        if comp.created_at > cutoff:
            break
        out.last_id = comp.id
        if comp.text_pair_id not in pairs:
            pairs[comp.text_pair_id] = store.get_text_pair(comp.text_pair_id)
        pair = pairs[comp.text_pair_id]
        if pair.meta.get(RUN_KEY) != run_id or comp.labeller in excluded:
            continue
        if comp.mu is None:
            out.incomparable += 1
        elif comp.mu == 0.5:
            out.ties += 1
        else:
            chosen, rejected = (pair.response_a, pair.response_b) if comp.mu == 1.0 else (pair.response_b, pair.response_a)
            out.examples.append(PreferenceExample(pair.prompt, chosen, rejected))
    return out

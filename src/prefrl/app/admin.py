"""The admin's view of labelling: progress, agreement, and the quality of each labeller."""

from __future__ import annotations

from prefrl.app import stats
from prefrl.data.store import PreferenceStore

__all__ = ["admin_stats", "LOOKS_RANDOM_MIN_ANSWERS"]

#: Answers compared with a reference before a labeller can be flagged as looking random.
LOOKS_RANDOM_MIN_ANSWERS = 10


def admin_stats(store: PreferenceStore) -> dict:
    """Progress, agreement figures and one row per labeller (registered, or with answers)."""
    comparisons = store.comparisons(include_incomparable=True)
    human = [c for c in comparisons if c.labeller]
    seg_ids = sorted({i for c in human for i in (c.left_id, c.right_id) if i is not None})
    returns: dict[int, float | None] = {}
    if seg_ids:
        for seg in store.get_segments(seg_ids):
            returns[int(seg.id)] = seg.true_return
    inter, repeated = stats.inter_labeller_agreement(human)
    oracle = stats.oracle_agreement(human, returns.get)
    per_label = stats.seconds_per_label(human)
    consensus = stats.consensus_agreement(human)
    oracle_of = stats.oracle_agreement_by_labeller(human, returns.get)
    excluded = set(store.excluded_labellers())
    roles = {lab.name: lab.role for lab in store.labellers()}
    answered_by = dict.fromkeys(c.labeller for c in human)  # removed people and judges keep a row
    labellers = []
    for name in [*roles, *(n for n in answered_by if n not in roles)]:
        mine = [c for c in human if c.labeller == name]
        agree_c, agree_o = consensus.get(name, stats.Agreement(0, 0)), oracle_of.get(name, stats.Agreement(0, 0))
        # the oracle is the better reference where enough of the labeller's pairs have one
        reference = agree_o if agree_o.total >= LOOKS_RANDOM_MIN_ANSWERS else agree_c
        labellers.append({"name": name, "role": roles.get(name), "answers": len(mine),
                          "cant_tell": sum(c.mu is None for c in mine),
                          "seconds_per_label": per_label.get(name),
                          "consensus_agreement": {"rate": agree_c.rate, "answers": agree_c.total},
                          "oracle_agreement": {"rate": agree_o.rate, "answers": agree_o.total},
                          "looks_random": stats.looks_random(reference, LOOKS_RANDOM_MIN_ANSWERS),
                          "excluded": name in excluded})
    # the store counts a lapsed lease as pending: anyone may lease it again
    progress = {status: store.count_queries(status) for status in ("pending", "leased", "answered")}
    progress["total"] = store.count_queries()
    return {
        "progress": progress,
        "comparisons": {"total": len(comparisons), "human": len(human)},
        "labellers": labellers,
        "inter_labeller_agreement": {"rate": inter.rate, "pairs_of_answers": inter.total,
                                     "repeated_items": repeated},
        "oracle_agreement": {"rate": oracle.rate, "answers": oracle.total},
    }

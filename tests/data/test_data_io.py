"""JSONL dump and load between stores, and TRL preference rows."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import numpy as np
import pytest

from prefrl.data import Comparison, PreferenceStore, Segment, TextPair
from prefrl.data.io import export_jsonl, export_trl_preferences, import_jsonl


def _fill(store: PreferenceStore) -> None:
    rng = np.random.default_rng(0)
    segs = [
        Segment(
            obs=rng.standard_normal((4, 3)).astype(np.float32),
            actions=rng.integers(0, 5, size=4),
            true_rewards=rng.standard_normal(4),
            sim_states=rng.standard_normal((4, 6)),
            env_id="Hopper-v5",
            policy_version=2,
            episode=k,
            start_step=10 * k,
            meta={"k": k},
        )
        for k in range(3)
    ]
    segs.append(Segment(obs=rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8), actions=np.array([1, 0])))
    unused = Segment(obs=np.zeros((1, 1)), actions=np.zeros(1))
    a, b, c, img = store.add_segments(segs)
    store.add_segment(unused)
    tp = store.add_text_pair(TextPair("Say hi", "hello ✓", "go away", meta={"gold": [1.0, 0.0]}))
    stamp = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)
    store.add_comparisons(
        [
            Comparison(mu=1.0, teacher="synthetic", left_id=a, right_id=b, created_at=stamp),
            Comparison(mu=None, teacher="human", left_id=b, right_id=c, labeller="alice"),
            Comparison(mu=0.5, teacher="human", left_id=c, right_id=img, labeller="bob"),
            Comparison(mu=0.0, teacher="vader", text_pair_id=tp),
        ]
    )


def test_dump_and_load_round_trip(tmp_path) -> None:
    src = PreferenceStore(tmp_path / "a.db")
    dst = PreferenceStore(tmp_path / "b.db")
    _fill(src)
    dst.add_segment(Segment(obs=np.ones((2, 2)), actions=np.ones(2)))  # so that ids must be remapped
    counts = export_jsonl(src, tmp_path / "dump.jsonl")
    assert (counts.segments, counts.text_pairs, counts.comparisons) == (
        4,
        1,
        4,
    )  # the unused segment is left out
    loaded = import_jsonl(dst, tmp_path / "dump.jsonl")
    assert loaded == counts
    assert dst.count_segments() == 5 and dst.count_comparisons() == 4

    src_c, dst_c = src.comparisons(), dst.comparisons()
    for x, y in zip(src_c, dst_c):
        assert (x.mu, x.teacher, x.labeller, x.created_at) == (y.mu, y.teacher, y.labeller, y.created_at)
    for (l1, r1, mu1), (l2, r2, mu2) in zip(src.training_pairs(), dst.training_pairs()):
        assert mu1 == mu2 and l2.id != l1.id
        for s1, s2 in ((l1, l2), (r1, r2)):
            for name in ("obs", "actions", "true_rewards", "sim_states"):
                v1, v2 = getattr(s1, name), getattr(s2, name)
                assert (v1 is None) == (v2 is None)
                if v1 is not None:
                    assert v1.dtype == v2.dtype and v1.shape == v2.shape and np.array_equal(v1, v2)
            assert (s1.env_id, s1.episode, s1.start_step, s1.meta) == (
                s2.env_id,
                s2.episode,
                s2.start_step,
                s2.meta,
            )
    assert dst.text_preferences() == [
        (TextPair("Say hi", "hello ✓", "go away", {"gold": [1.0, 0.0]}, id=1), 0.0)
    ]

    # Incremental export: only what came after since_id.
    last = src_c[-2].id
    assert export_jsonl(src, tmp_path / "tail.jsonl", since_id=last).comparisons == 1


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda rows: rows[-1].update(mu=0.3), "mu"),
        (lambda rows: rows[-1].update(text_pair_id=99), "text_pair_id"),
        (lambda rows: rows[0].update(obs={"npy_zlib_b64": "bm90IHpsaWI="}), "obs"),
        (lambda rows: rows[0].pop("actions"), "actions"),
        (lambda rows: rows[1].update(id=rows[0]["id"]), "appears twice"),
        (lambda rows: rows[-1].update(created_at="yesterday"), "created_at"),
        (lambda rows: rows[-1].update(type="vote"), "record type"),
    ],
)
def test_bad_dump_writes_nothing(tmp_path, mutate, message: str) -> None:
    src = PreferenceStore(tmp_path / "a.db")
    _fill(src)
    export_jsonl(src, tmp_path / "dump.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "dump.jsonl").read_text().splitlines()]
    mutate(rows)
    (tmp_path / "bad.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    dst = PreferenceStore(tmp_path / "b.db")
    with pytest.raises(ValueError, match=message):
        import_jsonl(dst, tmp_path / "bad.jsonl")
    assert (dst.count_segments(), dst.count_text_pairs(), dst.count_comparisons()) == (0, 0, 0)


def test_trl_preferences(tmp_path) -> None:
    store = PreferenceStore(tmp_path / "a.db")
    p1, p2, p3 = store.add_text_pairs(
        [TextPair("q1", "a1", "b1"), TextPair("q2", "a2", "b2"), TextPair("q3", "a3", "b3")]
    )
    store.add_text_comparison(p1, 1.0, "t")
    store.add_text_comparison(p2, 0.0, "t")
    store.add_text_comparison(p3, 0.5, "t")
    store.add_text_comparison(p3, None, "t")
    assert export_trl_preferences(store, tmp_path / "prefs.jsonl") == 2
    rows = [json.loads(line) for line in (tmp_path / "prefs.jsonl").read_text().splitlines()]
    assert rows == [
        {"prompt": "q1", "chosen": "a1", "rejected": "b1"},
        {"prompt": "q2", "chosen": "b2", "rejected": "a2"},
    ]
    assert export_trl_preferences(store, tmp_path / "ties.jsonl", include_ties=True) == 3
    last = json.loads((tmp_path / "ties.jsonl").read_text().splitlines()[-1])
    assert last == {"prompt": "q3", "chosen": "a3", "rejected": "b3", "mu": 0.5}

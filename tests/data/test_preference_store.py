"""PreferenceStore: exact round trips, validation with nothing written, atomicity, leases, undo, labellers."""

from __future__ import annotations

import sqlite3
import time
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from prefrl.data import Comparison, LeaseError, PreferenceStore, Segment, TextPair
from prefrl.data.store import decode_array, encode_array


def make_segment(rng: np.random.Generator, t: int = 6, **kwargs) -> Segment:
    fields = dict(
        obs=rng.standard_normal((t, 4)).astype(np.float32),
        actions=rng.integers(0, 3, size=t),
        true_rewards=rng.standard_normal(t),
        sim_states=rng.standard_normal((t, 7)),
        env_id="CartPole-v1",
        policy_version=3,
        episode=11,
        start_step=40,
        meta={"note": "x", "nested": {"k": [1, 2.5, None]}},
    )
    fields.update(kwargs)
    return Segment(**fields)


def assert_same_segment(a: Segment, b: Segment) -> None:
    for name in ("obs", "actions", "true_rewards", "sim_states"):
        x, y = getattr(a, name), getattr(b, name)
        if x is None:
            assert y is None, name
            continue
        x = np.asarray(x)
        assert y.dtype == x.dtype, name
        assert y.shape == x.shape, name
        np.testing.assert_array_equal(y, x, err_msg=name)
    for name in ("env_id", "policy_version", "episode", "start_step", "meta"):
        assert getattr(b, name) == getattr(a, name), name


def counts(store: PreferenceStore) -> tuple[int, int, int, int]:
    return store.count_segments(), store.count_comparisons(), store.count_text_pairs(), store.count_queries()


# ---- segments ---------------------------------------------------------------------------


def test_segment_round_trip_every_field(store: PreferenceStore) -> None:
    rng = np.random.default_rng(0)
    seg = make_segment(rng)
    seg_id = store.add_segment(seg)
    assert seg.id == seg_id
    back = store.get_segment(seg_id)
    assert back.id == seg_id
    assert_same_segment(seg, back)
    assert back.obs.flags.writeable


def test_image_and_unusual_arrays_round_trip(store: PreferenceStore) -> None:
    rng = np.random.default_rng(1)
    image = Segment(
        obs=rng.integers(0, 256, size=(5, 84, 84, 3), dtype=np.uint8),
        actions=np.array([0, 3, 1, 1, 2], dtype=np.int32),
        true_rewards=np.array([0.0, 1.0, 0.0, -1.0, 0.5], dtype=np.float64),
        env_id="ALE/Pong-v5",
    )
    odd = Segment(
        obs=np.asfortranarray(rng.standard_normal((3, 5))).astype(">f4"),  # big-endian, Fortran order
        actions=np.array([[True, False], [False, True], [True, True]]),
        true_rewards=None,
        sim_states=np.arange(6, dtype=np.int16).reshape(3, 2),
    )
    ids = store.add_segments([image, odd])
    back = store.get_segments(ids)
    assert_same_segment(image, back[0])
    assert_same_segment(odd, back[1])
    assert back[1].obs.dtype == np.dtype(">f4")


def test_get_segments_keeps_order_and_repeats(store: PreferenceStore) -> None:
    rng = np.random.default_rng(2)
    segs = [make_segment(rng, episode=i) for i in range(4)]
    ids = store.add_segments(segs)
    assert len(set(ids)) == 4 and store.count_segments() == 4
    order = [ids[2], ids[0], ids[2], ids[3]]
    assert [s.episode for s in store.get_segments(order)] == [2, 0, 2, 3]
    with pytest.raises(KeyError, match="segment"):
        store.get_segments([ids[0], max(ids) + 100])


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda s: s.obs.__setitem__((1, 2), np.nan), "obs"),
        (lambda s: s.true_rewards.__setitem__(0, np.inf), "true_rewards"),
        (lambda s: setattr(s, "actions", s.actions[:-1]), "actions"),
        (lambda s: setattr(s, "sim_states", s.sim_states[:-2]), "sim_states"),
        (lambda s: setattr(s, "true_rewards", np.zeros((len(s), 2))), "true_rewards"),
        (lambda s: setattr(s, "obs", np.array([object()] * len(s))), "obs"),
        (lambda s: setattr(s, "meta", {"bad": object()}), "meta"),
        (lambda s: setattr(s, "episode", 1.5), "episode"),
        (lambda s: setattr(s, "env_id", None), "env_id"),
    ],
)
def test_bad_segment_is_refused_and_nothing_written(store: PreferenceStore, change, field: str) -> None:
    rng = np.random.default_rng(3)
    store.add_segment(make_segment(rng))
    good, bad = make_segment(rng), make_segment(rng)
    change(bad)
    before = counts(store)
    with pytest.raises(ValueError, match=field):
        store.add_segments([good, bad])
    assert counts(store) == before
    assert good.id is None


# ---- comparisons ------------------------------------------------------------------------


@pytest.fixture
def two_segments(store: PreferenceStore) -> tuple[int, int]:
    rng = np.random.default_rng(4)
    a, b = store.add_segments([make_segment(rng, episode=0), make_segment(rng, episode=1)])
    return a, b


def test_comparison_round_trip(store: PreferenceStore, two_segments) -> None:
    a, b = two_segments
    before = datetime.now(timezone.utc)
    cid = store.add_comparison(a, b, 0.5, "synthetic:rational", labeller="alice")
    (comp,) = store.comparisons()
    assert (comp.id, comp.left_id, comp.right_id, comp.text_pair_id) == (cid, a, b, None)
    assert (comp.mu, comp.teacher, comp.labeller) == (0.5, "synthetic:rational", "alice")
    assert comp.created_at.tzinfo is not None and comp.created_at.utcoffset() == timedelta(0)
    assert (
        before - timedelta(seconds=1) <= comp.created_at <= datetime.now(timezone.utc) + timedelta(seconds=1)
    )
    assert store.get_comparison(cid) == comp

    # created_at given by the caller survives exactly (microseconds, converted to UTC).
    stamp = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=timezone(timedelta(hours=2)))
    (cid2,) = store.add_comparisons(
        [Comparison(mu=0.0, teacher="t", left_id=b, right_id=a, created_at=stamp)]
    )
    got = store.get_comparison(cid2)
    assert got.created_at == stamp and got.created_at.tzinfo == timezone.utc


@pytest.mark.parametrize("mu", [2, -1, 0.3, float("nan"), "left"])
def test_bad_mu_is_refused(store: PreferenceStore, two_segments, mu) -> None:
    a, b = two_segments
    with pytest.raises(ValueError, match="mu"):
        store.add_comparison(a, b, mu, "t")
    assert store.count_comparisons() == 0


def test_bad_comparisons_are_refused_and_nothing_written(store: PreferenceStore, two_segments) -> None:
    a, b = two_segments
    store.add_comparison(a, b, 1.0, "t")
    good = Comparison(mu=1.0, teacher="t", left_id=a, right_id=b)
    cases = [
        (Comparison(mu=1.0, teacher="t", left_id=a, right_id=b + 1000), "right_id"),
        (Comparison(mu=1.0, teacher="t", left_id=a + 1000, right_id=b), "left_id"),
        (Comparison(mu=1.0, teacher="t", left_id=a, right_id=a), "same segment"),
        (Comparison(mu=0.7, teacher="t", left_id=a, right_id=b), "mu"),
        (Comparison(mu=1.0, teacher="t", text_pair_id=999), "text_pair_id"),
        (Comparison(mu=1.0, teacher="t", left_id=a, right_id=b, text_pair_id=1), "text_pair_id"),
        (Comparison(mu=1.0, teacher="t", left_id=a), "right_id"),
        (Comparison(mu=1.0, teacher="", left_id=a, right_id=b), "teacher"),
    ]
    for bad, message in cases:
        before = counts(store)
        with pytest.raises(ValueError, match=message):
            store.add_comparisons([good, good, bad])
        assert counts(store) == before, message
    with pytest.raises(ValueError, match="right_id"):
        store.add_comparison(a, 12345, 1.0, "t")
    assert store.count_comparisons() == 1


def test_failure_inside_the_transaction_rolls_back(store: PreferenceStore, two_segments, monkeypatch) -> None:
    """Skip the up-front id check so that the database itself rejects the 3rd row after 2 inserts."""
    a, b = two_segments
    monkeypatch.setattr(PreferenceStore, "_check_references", classmethod(lambda cls, conn, rows: None))
    batch = [Comparison(mu=1.0, teacher="t", left_id=a, right_id=b)] * 2
    batch = batch + [Comparison(mu=1.0, teacher="t", left_id=a, right_id=b + 1000)]
    with pytest.raises(Exception, match="(?i)foreign key"):
        store.add_comparisons(batch)
    assert store.count_comparisons() == 0


def test_incomparable_is_stored_but_not_trained_on(store: PreferenceStore, two_segments) -> None:
    a, b = two_segments
    first = store.add_comparison(a, b, 1.0, "t")
    store.add_comparison(a, b, None, "t")
    third = store.add_comparison(b, a, 0.0, "t")
    assert store.count_comparisons() == 3
    assert store.count_comparisons(include_incomparable=False) == 2
    assert [c.mu for c in store.comparisons()] == [1.0, None, 0.0]
    assert [c.mu for c in store.comparisons(include_incomparable=False)] == [1.0, 0.0]
    pairs = store.training_pairs()
    assert [(left.id, right.id, mu) for left, right, mu in pairs] == [(a, b, 1.0), (b, a, 0.0)]
    assert_same_segment(store.get_segment(a), pairs[0][0])
    assert [(left.id, right.id, mu) for left, right, mu in store.training_pairs(since_id=first)] == [
        (b, a, 0.0)
    ]
    assert store.training_pairs(since_id=third) == []
    assert [c.id for c in store.comparisons(since_id=first)][-1] == third


# ---- text pairs -------------------------------------------------------------------------


def test_text_pairs_round_trip_and_preferences(store: PreferenceStore) -> None:
    pairs = [
        TextPair("Write a haiku", "Old pond, a frog", "I can't", meta={"gold": [0.9, 0.1]}),
        TextPair("Say hi ✓", "hi", "hello\nthere", meta={}),
    ]
    ids = store.add_text_pairs(pairs)
    assert [p.id for p in pairs] == ids and store.count_text_pairs() == 2
    assert store.get_text_pair(ids[0]) == pairs[0]
    assert store.get_text_pair(ids[1]) == pairs[1]
    store.add_text_comparison(ids[0], 1.0, "vader")
    store.add_text_comparison(ids[1], None, "human", labeller="bob")
    store.add_text_comparison(ids[1], 0.0, "human", labeller="bob")
    prefs = store.text_preferences()
    assert prefs == [(pairs[0], 1.0), (pairs[1], 0.0)]
    assert store.training_pairs() == []  # text comparisons are not segment pairs
    with pytest.raises(ValueError, match="text_pair_id"):
        store.add_text_comparison(999, 1.0, "t")
    with pytest.raises(ValueError, match="response_b"):
        store.add_text_pairs([TextPair("p", "a", "b"), TextPair("p", "a", None)])  # type: ignore[arg-type]
    assert store.count_text_pairs() == 2 and store.count_comparisons() == 3
    with pytest.raises(KeyError):
        store.get_text_pair(999)


# ---- queries ----------------------------------------------------------------------------


def test_lease_order_restriction_and_live_lease(store: PreferenceStore, two_segments) -> None:
    a, b = two_segments
    tp = store.add_text_pair(TextPair("p", "x", "y"))
    low = store.add_query(a, b, priority=0.1)
    high = store.add_query(text_pair_id=tp, priority=5.0)
    only_carol = store.add_query(b, a, priority=9.0, labeller="carol")
    assert store.count_queries() == 3 and store.count_queries("pending") == 3

    q = store.lease_query("alice", lease_seconds=60)
    assert q is not None and q.id == high and q.status == "leased" and q.leased_to == "alice"
    assert q.text_pair_id == tp and q.lease_expires_at > datetime.now(timezone.utc)
    assert store.lease_query("alice").id == high  # a live lease is handed back, not a second one
    assert store.lease_query("bob").id == low
    assert store.lease_query("dave") is None  # the rest is carol's
    assert store.lease_query("carol").id == only_carol
    assert store.count_queries("leased") == 3 and store.count_queries("pending") == 0


def test_bad_queries_are_refused(store: PreferenceStore, two_segments) -> None:
    a, b = two_segments
    for kwargs, field in [
        ({"left_id": a, "right_id": a}, "same segment"),
        ({"left_id": a, "right_id": 999}, "right_id"),
        ({"text_pair_id": 999}, "text_pair_id"),
        ({}, "left_id"),
        ({"left_id": a, "right_id": b, "priority": float("nan")}, "priority"),
    ]:
        with pytest.raises(ValueError, match=field):
            store.add_query(**kwargs)
    assert store.count_queries() == 0
    with pytest.raises(ValueError, match="lease_seconds"):
        store.lease_query("alice", lease_seconds=0)
    with pytest.raises(ValueError, match="status"):
        store.count_queries("done")  # type: ignore[arg-type]


def test_answer_query_and_replay_refused(store: PreferenceStore, two_segments) -> None:
    a, b = two_segments
    qid = store.add_query(a, b)
    store.lease_query("alice")
    with pytest.raises(LeaseError, match="not leased to 'bob'"):
        store.answer_query(qid, "bob", 1.0)
    with pytest.raises(ValueError, match="mu"):
        store.answer_query(qid, "alice", 3)
    comp = store.answer_query(qid, "alice", 0.0)
    assert (comp.left_id, comp.right_id, comp.mu, comp.labeller, comp.teacher) == (
        a,
        b,
        0.0,
        "alice",
        "human",
    )
    assert store.get_comparison(comp.id) == comp
    assert store.get_query(qid).status == "answered"
    with pytest.raises(LeaseError, match="already answered"):
        store.answer_query(qid, "alice", 0.0)
    assert store.count_comparisons() == 1
    assert store.lease_query("alice") is None
    assert [c.id for c in store.comparisons(query_id=qid)] == [comp.id]


def test_expired_lease_is_free_again(store: PreferenceStore, two_segments) -> None:
    a, b = two_segments
    qid = store.add_query(a, b)
    # long enough that a loaded machine still sees the lease live for the next two lines
    assert store.lease_query("alice", lease_seconds=0.5).id == qid
    assert store.lease_query("bob") is None  # alice's lease is live
    assert store.count_queries("leased") == 1 and store.count_queries("pending") == 0
    time.sleep(0.6)
    # A lapsed lease counts as pending again.
    assert store.count_queries("leased") == 0 and store.count_queries("pending") == 1
    assert [q.id for q in store.queries("pending")] == [qid] and store.get_query(qid).status == "pending"
    with pytest.raises(LeaseError, match="expired"):
        store.answer_query(qid, "alice", 1.0)
    assert store.lease_query("bob", lease_seconds=60).id == qid
    with pytest.raises(LeaseError, match="not leased to 'alice'"):
        store.answer_query(qid, "alice", 1.0)
    store.answer_query(qid, "bob", None)  # "can't tell" still answers the query
    assert store.count_comparisons() == 1 and store.count_comparisons(include_incomparable=False) == 0
    assert store.count_queries("answered") == 1


def test_release_query(store: PreferenceStore, two_segments) -> None:
    a, b = two_segments
    qid = store.add_query(a, b)
    store.lease_query("alice")
    with pytest.raises(LeaseError):
        store.release_query(qid, "bob")
    store.release_query(qid, "alice")
    assert store.get_query(qid).status == "pending"
    with pytest.raises(LeaseError):
        store.release_query(qid, "alice")
    assert store.lease_query("bob").id == qid


def test_undo_answer(store: PreferenceStore, two_segments) -> None:
    a, b = two_segments
    qid = store.add_query(a, b)
    store.lease_query("alice")
    comp = store.answer_query(qid, "alice", 1.0)
    with pytest.raises(LeaseError, match="not made by 'bob'"):
        store.undo_answer(comp.id, "bob")
    query = store.undo_answer(comp.id, "alice", window_seconds=30)
    assert query is not None and query.id == qid and query.status == "pending" and query.leased_to is None
    assert store.count_comparisons() == 0
    with pytest.raises(LeaseError, match="no comparison"):
        store.undo_answer(comp.id, "alice")  # undone twice

    # Answer again, then wait past the window: undo is refused and nothing changes.
    assert store.lease_query("alice").id == qid
    comp2 = store.answer_query(qid, "alice", 0.5)
    time.sleep(0.1)
    with pytest.raises(LeaseError, match="window"):
        store.undo_answer(comp2.id, "alice", window_seconds=0.05)
    assert store.count_comparisons() == 1 and store.get_query(qid).status == "answered"

    # A comparison that did not come from a query can be undone too.
    direct = store.add_comparison(a, b, 0.0, "human", labeller="alice")
    assert store.undo_answer(direct, "alice") is None
    assert [c.id for c in store.comparisons()] == [comp2.id]


def test_comparisons_by_labeller_and_item(store: PreferenceStore, two_segments) -> None:
    a, b = two_segments
    ids = [store.add_comparison(a, b, 1.0, "human", labeller=name) for name in ("alice", "bob", "alice")]
    store.add_comparison(b, a, 0.0, "human", labeller="bob")
    recent = store.comparisons(labeller="alice", newest_first=True, limit=1)
    assert [c.id for c in recent] == [ids[2]]
    assert [c.id for c in store.comparisons(labeller="alice")] == [ids[0], ids[2]]
    assert [c.labeller for c in store.comparisons_of(left_id=b, right_id=a)] == [
        "alice",
        "bob",
        "alice",
        "bob",
    ]
    assert len(store.comparisons(teacher="human", kind="segment")) == 4
    assert store.comparisons(kind="text") == []


# ---- labellers --------------------------------------------------------------------------


def test_labellers_and_tokens(store: PreferenceStore) -> None:
    token = store.add_labeller("alice")
    admin_token = store.add_labeller("root", role="admin")
    assert len(token) >= 40 and token != admin_token
    who = store.authenticate(token)
    assert who is not None and (who.name, who.role) == ("alice", "labeller")
    assert store.authenticate(admin_token).role == "admin"
    assert store.authenticate(token + "x") is None and store.authenticate("") is None
    with pytest.raises(ValueError, match="already exists"):
        store.add_labeller("alice", role="admin")
    with pytest.raises(ValueError, match="role"):
        store.add_labeller("eve", role="root")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="name"):
        store.add_labeller("  ")
    assert [lab.name for lab in store.labellers()] == ["alice", "root"]


def test_token_is_stored_only_as_hash(tmp_path) -> None:
    path = tmp_path / "prefs.db"
    with PreferenceStore(path) as store:
        token = store.add_labeller("alice")
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("prefs.db"))
    assert token.encode() not in raw
    with sqlite3.connect(path) as conn:
        (stored,) = conn.execute("SELECT token_hash FROM labellers").fetchone()
    assert stored != token and len(stored) == 64


# ---- opening stores ---------------------------------------------------------------------


def test_plain_path_is_a_wal_sqlite_file_that_persists(tmp_path) -> None:
    path = tmp_path / "sub" / "prefs.db"
    rng = np.random.default_rng(5)
    seg = make_segment(rng)
    with PreferenceStore(path) as store:
        assert store.url == f"sqlite:///{path}"
        seg_id = store.add_segment(seg)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with PreferenceStore(f"sqlite:///{path}") as again:
        assert again.count_segments() == 1
        assert_same_segment(seg, again.get_segment(seg_id))


def test_in_memory_store(tmp_path) -> None:
    with PreferenceStore(":memory:") as store:
        a, b = store.add_segments([make_segment(np.random.default_rng(6)) for _ in range(2)])
        store.add_comparison(a, b, 1.0, "t")
        assert store.count_comparisons() == 1


def test_bad_url_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="url"):
        PreferenceStore("nosuchdialect://x")


def test_encode_array_is_compact_and_exact() -> None:
    frames = np.zeros((50, 84, 84, 3), dtype=np.uint8)
    frames[:, 10:20, 10:20] = 255
    blob = encode_array(frames)
    assert len(blob) < frames.nbytes / 50
    np.testing.assert_array_equal(decode_array(blob), frames)
    with pytest.raises(ValueError, match="obs"):
        encode_array(np.array([{}, {}]), field_name="obs")


def test_newer_schema_is_refused(tmp_path) -> None:
    path = tmp_path / "prefs.db"
    PreferenceStore(path).close()
    with sqlite3.connect(path) as conn:
        (version,) = conn.execute("SELECT value FROM prefrl_schema WHERE key = 'version'").fetchone()
        conn.execute("UPDATE prefrl_schema SET value = ? WHERE key = 'version'", (str(int(version) + 1),))
    with pytest.raises(RuntimeError, match="newer"):
        PreferenceStore(path)


def test_login_tokens_redeem_once_and_can_be_reissued(tmp_path):
    store = PreferenceStore(tmp_path / "tokens.db")
    token = store.add_labeller("zoe")
    assert store.redeem_token(token).name == "zoe"
    assert store.redeem_token(token) is None and store.authenticate(token) is None  # one-time
    fresh = store.reissue_token("zoe")
    assert fresh != token and store.redeem_token(fresh).name == "zoe"
    with pytest.raises(KeyError):
        store.reissue_token("nobody")


def test_out_of_range_numbers_are_refused_before_the_database(store: PreferenceStore, two_segments) -> None:
    a, b = two_segments
    qid = store.add_query(a, b)
    store.lease_query("alice")
    for call in (lambda: store.get_query(2**63), lambda: store.answer_query(2**64, "alice", 1.0),
                 lambda: store.release_query(2**31, "alice"), lambda: store.undo_answer(2**63, "alice"),
                 lambda: store.get_segments([a, 2**70]), lambda: store.comparisons(since_id=2**64),
                 lambda: store.add_comparison(a, 2**63, 1.0, "t"),
                 lambda: store.lease_query("bob", lease_seconds=1e300)):
        with pytest.raises(ValueError, match="range|at most"):
            call()
    with pytest.raises(ValueError, match="policy_version"):
        store.add_segment(make_segment(np.random.default_rng(0), policy_version=2**63))
    assert store.get_query(qid).leased_to == "alice" and store.count_comparisons() == 0


def test_undo_that_fails_changes_nothing(store: PreferenceStore, two_segments) -> None:
    a, b = two_segments
    q1, q2 = store.add_query(a, b, priority=2.0), store.add_query(b, a, priority=1.0)
    store.lease_query("alice")
    comp = store.answer_query(q1, "alice", 1.0)
    assert store.lease_query("alice").id == q2
    with pytest.raises(LeaseError, match="release_query_id: no query"):
        store.undo_answer(comp.id, "alice", release_query_id=999)
    assert store.count_comparisons() == 1 and store.get_query(q1).status == "answered"
    assert store.get_query(q2).status == "leased"
    # one transaction: the answer is undone and the displayed lease given back together
    query = store.undo_answer(comp.id, "alice", release_query_id=q2)
    assert query.id == q1 and query.status == "pending" and store.get_query(q2).status == "pending"
    assert store.lease_query("alice").id == q1


def test_sessions_end_on_logout_new_token_disable_and_remove(store: PreferenceStore) -> None:
    store.add_labeller("ann")
    key = store.session_key("ann")
    assert store.check_session("ann", key).name == "ann"
    assert store.check_session("ann", "wrong") is None and store.check_session("ghost", key) is None
    store.end_sessions("ann")
    assert store.check_session("ann", key) is None
    for end in (lambda: store.reissue_token("ann"), lambda: store.set_labeller_disabled("ann")):
        key = store.session_key("ann")
        end()
        assert store.check_session("ann", key) is None
    with pytest.raises(KeyError):
        store.session_key("ann")  # disabled: no new session either
    store.set_labeller_disabled("ann", disabled=False)
    key = store.session_key("ann")
    store.remove_labeller("ann")
    assert store.check_session("ann", key) is None and store.labellers() == []
    for call in (lambda: store.end_sessions("ann"), lambda: store.remove_labeller("ann"),
                 lambda: store.set_labeller_disabled("ann"), lambda: store.get_labeller("ann")):
        with pytest.raises(KeyError, match="ann"):
            call()


def test_a_schema_1_database_is_upgraded_in_place(tmp_path) -> None:
    path = tmp_path / "old.db"
    with PreferenceStore(path) as store:
        token = store.add_labeller("ann")
    with sqlite3.connect(path) as conn:  # what prefrl 0.1 wrote: no session_key, no disabled
        conn.execute("ALTER TABLE labellers DROP COLUMN session_key")
        conn.execute("ALTER TABLE labellers DROP COLUMN disabled")
        conn.execute("UPDATE prefrl_schema SET value = '1' WHERE key = 'version'")
    with PreferenceStore(path) as store:
        (ann,) = store.labellers()
        assert ann.name == "ann" and not ann.disabled
        assert store.redeem_token(token).name == "ann"
        key = store.session_key("ann")
        assert key and store.check_session("ann", key) is not None
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM prefrl_schema WHERE key = 'version'").fetchone() == ("2",)


def test_excluded_labellers_answers_stay_but_do_not_train(store: PreferenceStore, two_segments) -> None:
    a, b = two_segments
    tp = store.add_text_pair(TextPair("p", "x", "y"))
    store.add_comparison(a, b, 1.0, "human", labeller="ann")
    store.add_comparison(a, b, 0.0, "ai", labeller="ai_judge")  # not a registered labeller
    store.add_comparison(a, b, 1.0, "synthetic")  # no labeller: never excluded
    store.add_text_comparison(tp, 0.0, "ai", labeller="ai_judge")
    store.exclude_labeller("ai_judge")
    store.exclude_labeller("ai_judge")  # twice is once
    assert store.excluded_labellers() == ["ai_judge"]
    assert [mu for _, _, mu in store.training_pairs()] == [1.0, 1.0] and store.text_preferences() == []
    assert store.count_comparisons() == 4 and len(store.comparisons(labeller="ai_judge")) == 2
    with pytest.raises(KeyError, match="nobody"):
        store.exclude_labeller("nobody")
    store.include_labeller("ai_judge")
    assert len(store.training_pairs()) == 3 and len(store.text_preferences()) == 1


def test_queries_of_one_labellers_queue(store: PreferenceStore, two_segments) -> None:
    a, b = two_segments
    mine = store.add_query(a, b, priority=1.0, labeller="ann")
    anyone = store.add_query(b, a, priority=2.0)
    store.add_query(a, b, priority=3.0, labeller="bob")
    assert [q.id for q in store.queries("pending", labeller="ann")] == [anyone, mine]
    assert store.lease_query("ann").id == anyone  # the same order as leasing


def test_answer_and_undo_with_the_next_lease_are_one_transaction(store: PreferenceStore, two_segments,
                                                                  monkeypatch) -> None:
    from prefrl.data import queue

    a, b = two_segments
    q1, q2 = store.add_query(a, b, priority=2.0), store.add_query(b, a, priority=1.0)
    assert store.lease_query("alice").id == q1
    comp, nxt = store.answer_and_lease_next(q1, "alice", 1.0, lease_seconds=60)
    assert comp.id is not None and comp.mu == 1.0 and nxt.id == q2 and nxt.leased_to == "alice"
    assert store.undo_and_lease_next(comp.id, "alice", release_query_id=q2).id == q1  # the undone pair again
    assert store.count_comparisons() == 0 and store.get_query(q2).status == "pending"

    def broken_lease(*args):
        raise RuntimeError("lease failed")

    monkeypatch.setattr(queue, "_lease", broken_lease)
    with pytest.raises(RuntimeError, match="lease failed"):
        store.answer_and_lease_next(q1, "alice", 0.0)
    assert store.count_comparisons() == 0 and store.get_query(q1).leased_to == "alice"  # nothing stored
    monkeypatch.undo()
    comp = store.answer_query(q1, "alice", 0.0)
    monkeypatch.setattr(queue, "_lease", broken_lease)
    with pytest.raises(RuntimeError, match="lease failed"):
        store.undo_and_lease_next(comp.id, "alice")
    assert [c.id for c in store.comparisons()] == [comp.id] and store.get_query(q1).status == "answered"


def test_training_pairs_with_a_segment_cache_decode_each_segment_once(store: PreferenceStore, two_segments, monkeypatch) -> None:
    from prefrl.data import records

    a, b = two_segments
    (c,) = store.add_segments([make_segment(np.random.default_rng(5), episode=2)])
    decoded: list[int] = []
    real = records._load_segments

    def counting(conn, ids):
        decoded.extend(ids)
        return real(conn, ids)

    monkeypatch.setattr(records, "_load_segments", counting)
    cache: dict = {}
    store.add_comparison(a, b, 1.0, "t", labeller="ann")
    first = store.training_pairs(segment_cache=cache)
    store.add_comparison(b, c, 0.0, "t")
    second = store.training_pairs(segment_cache=cache)
    assert sorted(decoded) == [a, b, c]  # b read once, in the first call
    assert [(left.id, right.id, mu) for left, right, mu in second] == [(a, b, 1.0), (b, c, 0.0)]
    assert second[0][0] is first[0][0]
    assert_same_segment(second[1][1], store.get_segment(c))
    store.exclude_labeller("ann")  # the comparisons are read every time: exclusions apply at once
    assert [(left.id, right.id) for left, right, _ in store.training_pairs(segment_cache=cache)] == [(b, c)]

"""Several writers at once lose nothing; two labellers never hold a live lease on one query."""

from __future__ import annotations

import multiprocessing as mp
import threading
from collections import Counter

import numpy as np

from prefrl.data import LeaseError, PreferenceStore, Segment

N_PROCS = 4
PER_PROC = 250


def _write_comparisons(url: str, worker: int, n: int, start: mp.Barrier) -> None:
    start.wait(timeout=60)  # all processes open the new database and hammer it at the same moment
    with PreferenceStore(url) as store:
        left, right = _seed_segments(store, 2)
        for i in range(n):
            mu = (1.0, 0.0, 0.5, None)[i % 4]
            store.add_comparison(left, right, mu, teacher=f"worker-{worker}", labeller=f"{worker}:{i}")


def _seed_segments(store: PreferenceStore, n: int) -> list[int]:
    rng = np.random.default_rng(0)
    segs = [
        Segment(obs=rng.standard_normal((3, 2)).astype(np.float32), actions=np.arange(3)) for _ in range(n)
    ]
    return store.add_segments(segs)


def test_processes_writing_at_once_lose_nothing(store_url: str) -> None:
    """4 spawned processes create the schema of an empty database at once, then write 250 comparisons each."""
    ctx = mp.get_context("spawn")
    start = ctx.Barrier(N_PROCS)
    procs = [
        ctx.Process(target=_write_comparisons, args=(store_url, w, PER_PROC, start)) for w in range(N_PROCS)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    assert [p.exitcode for p in procs] == [0] * N_PROCS
    with PreferenceStore(store_url) as store:
        comps = store.comparisons()
        assert store.count_comparisons() == N_PROCS * PER_PROC
    assert len({c.id for c in comps}) == N_PROCS * PER_PROC
    # Every write landed exactly once, with its own fields.
    assert Counter(c.labeller for c in comps) == Counter(
        f"{w}:{i}" for w in range(N_PROCS) for i in range(PER_PROC)
    )
    assert Counter(c.teacher for c in comps) == {f"worker-{w}": PER_PROC for w in range(N_PROCS)}
    # Each worker compared its own two segments.
    assert len({(c.left_id, c.right_id) for c in comps}) == N_PROCS


def test_concurrent_labellers_answer_each_query_exactly_once(store_url: str) -> None:
    n_queries, n_threads = 200, 8
    store = PreferenceStore(store_url)
    try:
        ids = _seed_segments(store, 20)
        rng = np.random.default_rng(1)
        for _ in range(n_queries):
            left, right = rng.choice(ids, size=2, replace=False)
            store.add_query(int(left), int(right), priority=float(rng.random()))
        answered: list[tuple[int, str]] = []
        errors: list[BaseException] = []
        lock = threading.Lock()
        start = threading.Barrier(n_threads)

        def labeller(name: str) -> None:
            try:
                start.wait(timeout=30)
                while (query := store.lease_query(name, lease_seconds=60)) is not None:
                    try:
                        comp = store.answer_query(query.id, name, 1.0)
                    except LeaseError as err:  # must not happen: the lease was live and ours
                        errors.append(err)
                        return
                    with lock:
                        answered.append((query.id, comp.labeller))
            except BaseException as err:  # surface thread failures in the main thread
                errors.append(err)

        threads = [threading.Thread(target=labeller, args=(f"person-{k}",)) for k in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=240)
        assert not errors, errors[:3]
        comps = store.comparisons()
        assert len(comps) == n_queries == len(answered)
        assert sorted(qid for qid, _ in answered) == list(range(1, n_queries + 1))
        assert store.count_queries("answered") == n_queries and store.count_queries("pending") == 0
        assert len({name for _, name in answered}) > 1  # the work really was shared
    finally:
        store.close()


def test_racing_for_one_query_gives_one_live_lease(store_url: str) -> None:
    """Many threads race for a single query again and again: each round exactly one wins."""
    store = PreferenceStore(store_url)
    try:
        left, right = _seed_segments(store, 2)
        n_threads = 6
        for _ in range(5):
            qid = store.add_query(left, right, priority=1.0)
            winners: list[str] = []
            start = threading.Barrier(n_threads)

            def grab(name: str, winners: list[str] = winners, start: threading.Barrier = start) -> None:
                start.wait(timeout=30)
                query = store.lease_query(name, lease_seconds=60)
                if query is not None:
                    winners.append(name)

            threads = [threading.Thread(target=grab, args=(f"p{k}",)) for k in range(n_threads)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=60)
            assert len(winners) == 1
            store.answer_query(qid, winners[0], 0.5)
        assert store.count_comparisons() == 5
    finally:
        store.close()


def _fork_child_writes(store: PreferenceStore, left: int, right: int) -> None:
    # The parent's pooled connection (socket / SQLite handle) must not be handed out here.
    assert store._engine.pool.checkedin() == 0, "child inherited the parent's pooled connections"
    store.add_comparison(left, right, 1.0, teacher="child")


def test_forked_child_gets_its_own_connections(store_url: str) -> None:
    """A store opened before a fork keeps working in the parent and in the child."""
    store = PreferenceStore(store_url)
    try:
        left, right = _seed_segments(store, 2)
        store.add_comparison(left, right, 0.0, teacher="parent")  # the pool now holds a connection
        ctx = mp.get_context("fork")
        child = ctx.Process(target=_fork_child_writes, args=(store, left, right))
        child.start()
        child.join(timeout=60)
        assert child.exitcode == 0
        store.add_comparison(left, right, 0.5, teacher="parent")
        assert [c.teacher for c in store.comparisons()] == ["parent", "child", "parent"]
    finally:
        store.close()

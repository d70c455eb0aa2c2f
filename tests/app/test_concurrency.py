"""8 labellers answer 200 queries in parallel through the HTTP API of a real uvicorn server.

Every answered lease must give exactly one stored comparison: none lost, none duplicated,
replays refused — with one SQLite store behind the server.
"""

from __future__ import annotations

import re
import threading
from collections import Counter

import httpx
import numpy as np
from labelapp_helpers import make_segment

N_LABELLERS, N_QUERIES = 8, 200


def test_parallel_labellers_store_exactly_one_answer_per_lease(store, live_server):
    seg_ids = store.add_segments([make_segment(float(i)) for i in range(2 * N_QUERIES)])
    pair_of = {}
    for i in range(N_QUERIES):
        qid = store.add_query(left_id=seg_ids[2 * i], right_id=seg_ids[2 * i + 1], priority=float(i % 7))
        pair_of[qid] = (seg_ids[2 * i], seg_ids[2 * i + 1])
    tokens = {f"lab{i}": store.add_labeller(f"lab{i}") for i in range(N_LABELLERS)}
    answered: dict[str, list[tuple[int, int, float]]] = {name: [] for name in tokens}
    errors: list[str] = []
    start = threading.Barrier(N_LABELLERS)

    def labeller(name: str, token: str, seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            with httpx.Client(base_url=live_server, follow_redirects=True, timeout=60) as client:
                page = client.post("/login", data={"token": token})
                csrf = re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1)
                h = {"X-CSRF-Token": csrf}
                start.wait()
                query = client.post("/api/next", json={}, headers=h).json()["query"]
                while query is not None:
                    qid = query["id"]
                    if rng.random() < 0.1:  # sometimes give the pair back: someone else answers it
                        assert client.post("/api/release", json={"query_id": qid}, headers=h).status_code == 200
                        query = client.post("/api/next", json={}, headers=h).json()["query"]
                        continue
                    mu = [1, 0, 0.5, None][int(rng.integers(4))]
                    r = client.post("/api/answer", json={"query_id": qid, "mu": mu}, headers=h)
                    assert r.status_code == 200, r.text
                    data = r.json()
                    answered[name].append((qid, data["comparison"]["id"], mu))
                    if rng.random() < 0.2:  # a replayed request must be refused
                        again = client.post("/api/answer", json={"query_id": qid, "mu": mu}, headers=h)
                        assert again.status_code == 409, again.text
                    query = data["next"]
        except Exception as e:  # noqa: BLE001 - reported below with the thread's name
            errors.append(f"{name}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=labeller, args=(n, t, i)) for i, (n, t) in enumerate(tokens.items())]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors

    all_answers = [a for lst in answered.values() for a in lst]
    query_ids = [qid for qid, _, _ in all_answers]
    assert len(query_ids) == N_QUERIES and set(query_ids) == set(pair_of)  # none lost, none twice
    stored = store.comparisons()
    assert len(stored) == N_QUERIES == store.count_queries("answered")
    assert Counter((c.left_id, c.right_id) for c in stored) == Counter(pair_of.values())
    by_id = {c.id: c for c in stored}
    for name, lst in answered.items():
        for qid, cid, mu in lst:
            c = by_id[cid]  # the comparison the server reported is the one stored
            assert (c.left_id, c.right_id) == pair_of[qid] and c.labeller == name and c.mu == mu
    assert sum(len(lst) > 0 for lst in answered.values()) >= 2  # the work really was shared

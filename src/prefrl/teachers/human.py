"""The human teacher: pairs go to people through the store's query queue and the web app.

People answer at their own pace, so this teacher is *asynchronous*. The intended use is a
``post`` / ``collect`` pair:

1. ``post(pairs, priorities)`` saves any unsaved segments, adds one query per pair
   (higher priority is shown first, e.g. ensemble disagreement) and returns the query ids.
2. People lease and answer queries in ``prefrl label serve`` (each shown query is leased
   for a few minutes, then returns to the pool).
3. ``collect()`` returns the answers that have arrived since the last call, without
   blocking, as :class:`HumanAnswer` records ``(query_id, left, right, mu)``; ``mu is None``
   means the person chose *can't tell* (keep it out of training).

An answer is handed out only once its *undo window* (``settle_seconds``, 30 s like the web
app's undo) has passed, so an answer the labeller takes back is never reported; each
query's answer is reported exactly once.

``answer(pairs, timeout=…)`` implements the :class:`~prefrl.teachers.base.Teacher` protocol
for drop-in use: it posts the pairs, waits up to ``timeout`` seconds for answers, and
returns ``None`` for pairs not answered by then (indistinguishable from *can't tell*, and
the unanswered queries stay in the queue — their later answers come from ``collect``).

In the control loop (``--teacher human``) this teacher is the loop's teacher like any other:
the loop posts queries to the store and pumps the queue through its teacher
(:func:`~prefrl.teachers.queue.answer_queries`); ``lease_as`` is ``None`` because people lease
their own queries in the web app, so the pump leaves the queue to them, and the loop trains on
whatever they have answered so far (``store.training_pairs()``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from prefrl.data.store import PreferenceStore
from prefrl.data.types import Segment, TextPair, utcnow


@dataclass
class HumanAnswer:
    """One person's answer to a posted query. ``left``/``right`` are segments, or ``text`` a text pair."""

    query_id: int
    mu: float | None
    labeller: str | None
    left: Segment | None = None
    right: Segment | None = None
    text: TextPair | None = None


class HumanTeacher:
    """Posts pairs as labelling queries and collects people's answers from the store.

    Args:
        store: the shared preference store (the web app must serve the same one).
        labeller: restrict posted queries to this labeller (``None`` = anyone may answer).
        settle_seconds: an answer is reported only after this long (the undo window).
        poll_seconds: how often ``answer`` polls the store while waiting.
    """

    name = "human"
    lease_as = None
    """People lease their own queries in the web app; a pump takes nothing for them."""
    compares = None

    def __init__(self, store: PreferenceStore, labeller: str | None = None, settle_seconds: float = 30.0,
                 poll_seconds: float = 0.5) -> None:
        if settle_seconds < 0:
            raise ValueError(f"settle_seconds must be ≥ 0, got {settle_seconds}")
        if poll_seconds <= 0:
            raise ValueError(f"poll_seconds must be > 0, got {poll_seconds}")
        self.store = store
        self.labeller = labeller
        self.settle_seconds = float(settle_seconds)
        self.poll_seconds = float(poll_seconds)
        self._outstanding: dict[int, tuple[Segment, Segment] | TextPair] = {}

    @property
    def n_outstanding(self) -> int:
        """Posted queries whose answers have not been collected yet."""
        return len(self._outstanding)

    def _priorities(self, n: int, priorities: Sequence[float] | None) -> list[float]:
        if priorities is None:
            return [0.0] * n
        if len(priorities) != n:
            raise ValueError(f"priorities has {len(priorities)} entries but there are {n} pairs")
        return [float(p) for p in priorities]

    def post(self, pairs: Sequence[tuple[Segment, Segment]], priorities: Sequence[float] | None = None) -> list[int]:
        """Queue segment pairs for people; saves segments without an id first. Returns query ids."""
        prios = self._priorities(len(pairs), priorities)
        for i, pair in enumerate(pairs):
            if len(pair) != 2 or not all(isinstance(s, Segment) for s in pair):
                raise ValueError(f"pairs[{i}] must be a (Segment, Segment) tuple")
        unsaved = list({id(s): s for pair in pairs for s in pair if s.id is None}.values())
        if unsaved:
            for seg, seg_id in zip(unsaved, self.store.add_segments(unsaved)):
                seg.id = int(seg_id)
        ids = []
        for (left, right), prio in zip(pairs, prios):
            qid = self.store.add_query(left_id=left.id, right_id=right.id, priority=prio, labeller=self.labeller)
            self._outstanding[qid] = (left, right)
            ids.append(qid)
        return ids

    def post_text(self, pairs: Sequence[TextPair], priorities: Sequence[float] | None = None) -> list[int]:
        """Queue text pairs (prompt + two responses) for people. Returns query ids."""
        prios = self._priorities(len(pairs), priorities)
        for i, pair in enumerate(pairs):
            if not isinstance(pair, TextPair):
                raise ValueError(f"pairs[{i}] must be a TextPair, got {type(pair).__name__}")
        ids = []
        for pair, prio in zip(pairs, prios):
            if pair.id is None:
                self.store.add_text_pair(pair)
            qid = self.store.add_query(text_pair_id=pair.id, priority=prio, labeller=self.labeller)
            self._outstanding[qid] = pair
            ids.append(qid)
        return ids

    def collect(self) -> list[HumanAnswer]:
        """Answers that arrived (and settled) since the last call, oldest query first. Never blocks."""
        if not self._outstanding:
            return []
        cutoff = utcnow() - timedelta(seconds=self.settle_seconds)
        answered = [q.id for q in self.store.queries("answered") if q.id in self._outstanding]
        out: list[HumanAnswer] = []
        for qid in sorted(answered):
            comps = self.store.comparisons(query_id=qid, newest_first=True, limit=1)
            if not comps or comps[0].created_at > cutoff:
                continue  # still within its undo window (or undone a moment ago)
            comp = comps[0]
            item = self._outstanding.pop(qid)
            if isinstance(item, TextPair):
                out.append(HumanAnswer(qid, comp.mu, comp.labeller, text=item))
            else:
                out.append(HumanAnswer(qid, comp.mu, comp.labeller, left=item[0], right=item[1]))
        return out

    def answer(self, pairs: Sequence[tuple[Segment, Segment]], timeout: float = 0.0) -> list[float | None]:
        """Teacher protocol: post, wait up to ``timeout`` s, μ per pair (``None`` = unanswered or can't tell)."""
        if timeout < 0:
            raise ValueError(f"timeout must be ≥ 0, got {timeout}")
        ids = self.post(pairs)
        wanted = set(ids)
        got: dict[int, float | None] = {}
        deadline = time.monotonic() + timeout
        held: list[HumanAnswer] = []
        while True:
            for ans in self.collect():
                if ans.query_id in wanted:
                    got[ans.query_id] = ans.mu
                else:
                    held.append(ans)  # someone else's earlier post: hand back to the next collect
            if len(got) == len(ids) or time.monotonic() >= deadline:
                break
            time.sleep(min(self.poll_seconds, max(0.0, deadline - time.monotonic())))
        for ans in held:  # keep them for a later collect()
            self._outstanding[ans.query_id] = ans.text if ans.text is not None else (ans.left, ans.right)
        return [got.get(qid) for qid in ids]

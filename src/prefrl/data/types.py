"""The records of preference learning: trajectory segments, text pairs and comparisons,
and the labelling queries and labellers the store keeps beside them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal, get_args

import numpy as np

QueryStatus = Literal["pending", "leased", "answered"]
LabellerRole = Literal["labeller", "admin"]
QUERY_STATUSES: tuple[str, ...] = get_args(QueryStatus)
LABELLER_ROLES: tuple[str, ...] = get_args(LabellerRole)

#: Allowed preference masses on the *left* item: left better, right better, equally good.
MU_VALUES = (1.0, 0.0, 0.5)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def check_mu(mu: float | None, *, field_name: str = "mu") -> float | None:
    """Validate a preference label; ``None`` means *incomparable* (can't tell / skipped)."""
    if mu is None:
        return None
    try:
        value = float(mu)
    except (TypeError, ValueError):
        raise ValueError(f"{field_name} must be one of 1, 0, 0.5 or None, got {mu!r}") from None
    if math.isnan(value) or value not in MU_VALUES:
        raise ValueError(f"{field_name} must be one of 1, 0, 0.5 or None, got {mu!r}")
    return value


@dataclass
class Segment:
    """A short piece of trajectory σ = ((o_0, a_0), …, (o_{k−1}, a_{k−1})) shown to a teacher.

    Attributes:
        obs: (T, *obs_shape) observations.
        actions: (T, *act_shape) actions (a Discrete action is stored as shape (T,)).
        true_rewards: (T,) hidden env rewards, kept only for synthetic teachers and evaluation.
        sim_states: (T, D) simulator states (e.g. MuJoCo qpos‖qvel) to re-render the clip later.
        env_id, policy_version, episode, start_step: provenance.
        id: assigned by the store when saved.
        member_rewards: (M, T) raw per-step rewards of each reward-model member, as the reward model
            scored the steps when they were collected (the policy's reward of that rollout), after
            ``member_rewards_round`` reward rounds. Query selection sums them instead of running the
            networks again while they are recent enough; a cache of the run, never stored.
    """

    obs: np.ndarray
    actions: np.ndarray
    true_rewards: np.ndarray | None = None
    sim_states: np.ndarray | None = None
    env_id: str = ""
    policy_version: int = 0
    episode: int = 0
    start_step: int = 0
    id: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    member_rewards: np.ndarray | None = field(default=None, repr=False, compare=False)
    member_rewards_round: int = field(default=-1, repr=False, compare=False)

    def __len__(self) -> int:
        return int(self.obs.shape[0])

    @property
    def true_return(self) -> float | None:
        return None if self.true_rewards is None else float(np.sum(self.true_rewards))

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field when the segment is malformed."""
        obs = np.asarray(self.obs)
        actions = np.asarray(self.actions)
        if obs.ndim < 1 or obs.shape[0] == 0:
            raise ValueError("obs must have a leading time axis of length ≥ 1")
        if actions.shape[:1] != obs.shape[:1]:
            raise ValueError(f"actions has length {actions.shape[:1]} but obs has length {obs.shape[0]}")
        for name, arr in (
            ("obs", obs),
            ("actions", actions),
            ("true_rewards", self.true_rewards),
            ("sim_states", self.sim_states),
        ):
            if arr is None:
                continue
            arr = np.asarray(arr)
            if name in ("true_rewards", "sim_states") and arr.shape[:1] != obs.shape[:1]:
                raise ValueError(f"{name} has length {arr.shape[:1]} but obs has length {obs.shape[0]}")
            if name == "true_rewards" and arr.ndim != 1:
                raise ValueError(f"true_rewards must be (T,), got shape {arr.shape}")
            if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
                raise ValueError(f"{name} contains NaN or infinite values")


@dataclass
class TextPair:
    """A prompt with two responses to compare (the language-model side of the store)."""

    prompt: str
    response_a: str
    response_b: str
    meta: dict[str, Any] = field(default_factory=dict)
    id: int | None = None

    def validate(self) -> None:
        for name in ("prompt", "response_a", "response_b"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string, got {type(getattr(self, name)).__name__}")


@dataclass
class Comparison:
    """A teacher's answer (σ¹, σ², μ). μ is the preference mass on the left item.

    μ ∈ {1, 0, 0.5}, or ``None`` for *incomparable* (kept in the store, excluded from
    training). Exactly one of (left_id, right_id) segment ids or ``text_pair_id`` is set.
    """

    mu: float | None
    teacher: str
    left_id: int | None = None
    right_id: int | None = None
    text_pair_id: int | None = None
    created_at: datetime = field(default_factory=utcnow)
    labeller: str | None = None
    id: int | None = None


@dataclass
class Query:
    """A pair waiting for a person's answer, as handed out by :meth:`PreferenceStore.lease_query`.

    Attributes:
        id: the query's id in the store.
        left_id, right_id: the segments to compare (a control query), or
        text_pair_id: the text pair to compare (a language-model query).
        priority: higher is asked first (e.g. ensemble disagreement).
        status: "pending" (free), "leased" (someone is labelling it) or "answered".
        leased_to: labeller holding (or who last held) the lease.
        lease_expires_at: UTC time at which the lease lapses and the query is free again.
        created_at: UTC time the query was added.
        labeller: only this labeller may lease it; ``None`` means anyone.
    """

    id: int
    left_id: int | None
    right_id: int | None
    text_pair_id: int | None
    priority: float
    status: QueryStatus
    leased_to: str | None
    lease_expires_at: datetime | None
    created_at: datetime
    labeller: str | None = None


@dataclass
class Labeller:
    """A person allowed to label. Only a hash of their token is stored.

    ``disabled``: may not log in, and every session of theirs is refused (their answers stay).
    """

    id: int
    name: str
    role: LabellerRole
    created_at: datetime
    disabled: bool = False

"""Particle-based state entropy: the k-NN estimate, and PEBBLE's intrinsic reward for unsupervised pre-training.

Lee et al. 2021 (PEBBLE, §4.1) pre-train the policy, before any label is asked, to maximise the
entropy H(s) of the states it visits, so that the first queries compare diverse behaviours. H(s)
is estimated from particles (Singh et al. 2003; Kozachenko & Leonenko 1987): with ε_i the distance
from s_i to its k-th nearest neighbour among N samples in d dimensions,

    Ĥ = ψ(N) − ψ(k) + log V_d + (d/N)·Σ_i log ε_i,    V_d = π^{d/2} / Γ(d/2 + 1),

so each state's share of it, r_int(s_i) = log(c + ε_i), is the intrinsic reward (c = 1 as in PEBBLE).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from prefrl.rl.replay import ReplayBatch, ReplayBuffer

__all__ = ["knn_distances", "knn_entropy", "StateEntropyReward"]


def knn_distances(
    x: torch.Tensor, k: int, reference: torch.Tensor | None = None, chunk: int = 1024
) -> torch.Tensor:
    """Euclidean distance from each row of ``x`` (N, D) to its k-th nearest row of ``reference`` (M, D) → (N,).

    Without ``reference`` the neighbours are the other rows of ``x`` (a point is not its own neighbour).
    Computed ``chunk`` rows at a time so the (chunk, M) distance matrix stays small.
    """
    if x.dim() != 2:
        raise ValueError(f"x must have shape (N, D), got {tuple(x.shape)}")
    exclude_self = reference is None
    reference = x if reference is None else reference
    if reference.dim() != 2 or reference.shape[1] != x.shape[1]:
        raise ValueError(f"reference has shape {tuple(reference.shape)}, x has {tuple(x.shape)}")
    kth = k + 1 if exclude_self else k  # with self in the reference, the 0th neighbour is the point itself
    if not 1 <= kth <= reference.shape[0]:
        raise ValueError(f"k={k} needs at least {kth} reference points, got {reference.shape[0]}")
    out = []
    for start in range(0, x.shape[0], chunk):
        dist = torch.cdist(x[start : start + chunk], reference)  # (chunk, M)
        out.append(dist.topk(kth, dim=1, largest=False).values[:, -1])
    return torch.cat(out)


def knn_entropy(x: torch.Tensor, k: int = 3) -> float:
    """Kozachenko–Leonenko estimate (nats) of the differential entropy of the distribution ``x`` (N, D) is drawn from."""
    n, d = x.shape
    log_eps = torch.log(knn_distances(x.double(), k)).mean().item()
    log_unit_ball = 0.5 * d * math.log(math.pi) - math.lgamma(0.5 * d + 1)
    return _digamma(n) - _digamma(k) + log_unit_ball + d * log_eps


def _digamma(n: int) -> float:
    return float(torch.digamma(torch.tensor(float(n), dtype=torch.float64)))


class StateEntropyReward:
    """PEBBLE's intrinsic reward r_int(s') = log(1 + ε_k(s')) / std, ε_k against a sample of the replay buffer.

    Called on a minibatch (a ``batch_reward`` of :func:`prefrl.rl.sac.run_sac`): the k-th neighbour
    distance of each next state among ``reference_size`` states drawn from ``buffer``, divided by a
    running standard deviation of the rewards seen so far (PEBBLE normalises the same way).
    """

    def __init__(
        self, buffer: ReplayBuffer, rng: np.random.Generator, k: int = 5, reference_size: int = 10_000
    ) -> None:
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        self.buffer, self.rng, self.k, self.reference_size = buffer, rng, k, reference_size
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def __call__(self, batch: ReplayBatch) -> torch.Tensor:
        n = len(self.buffer)
        idx = self.rng.choice(n, size=min(n, self.reference_size), replace=False)
        reference = torch.as_tensor(self.buffer.next_obs[idx], device=batch.next_obs.device)
        flat = batch.next_obs.reshape(batch.next_obs.shape[0], -1)
        reward = torch.log1p(knn_distances(flat, min(self.k, len(idx)), reference.reshape(len(idx), -1)))  # (B,)
        self._update_stats(reward)
        return reward / max(math.sqrt(self.m2 / max(self.count - 1, 1)), 1e-8)

    def state_dict(self) -> dict[str, float]:
        """The running statistics of the normaliser (what a resumed pre-training phase continues from)."""
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.count, self.mean, self.m2 = int(state["count"]), float(state["mean"]), float(state["m2"])

    def _update_stats(self, x: torch.Tensor) -> None:
        # Chan et al.'s parallel update of the running mean and sum of squared deviations
        b, b_mean = x.numel(), x.mean().item()
        b_m2 = ((x - b_mean) ** 2).sum().item()
        delta, total = b_mean - self.mean, self.count + b
        self.mean += delta * b / total
        self.m2 += b_m2 + delta**2 * self.count * b / total
        self.count = total

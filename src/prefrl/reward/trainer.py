"""Fitting the reward ensemble to preference labels (Christiano et al. 2017, §2.2.3 and Appendix A).

One call of :meth:`RewardTrainer.train` is one round: the comparisons are stacked into
tensors once, a fraction 1/e is held out for validation (shared by the members), each
member trains on its own bootstrap resample of the rest with the Bradley-Terry loss of
:func:`prefrl.losses.bradley_terry_loss` on its raw segment returns, and the L2
coefficient is adapted every few epochs so that the validation loss stays between 1.1
and 1.5 times the training loss.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr

from prefrl.data.types import Segment, check_mu
from prefrl.losses import bradley_terry_loss
from prefrl.reward.ensemble import RewardEnsemble, stack_segments
from prefrl.reward.trainer_config import RewardTrainerConfig

__all__ = ["RewardTrainerConfig", "RewardTrainer", "stack_segments"]

Pair = tuple[Segment, Segment, float]


@dataclass
class _Stacked:
    """All comparisons of a round as tensors, built once."""

    obs_left: torch.Tensor  # (P, T, *obs_shape)
    act_left: torch.Tensor  # (P, T, *act_shape)
    obs_right: torch.Tensor
    act_right: torch.Tensor
    mask_left: torch.Tensor  # (P, T) 1 for real steps, 0 for padding
    mask_right: torch.Tensor
    mu: torch.Tensor  # (P,)
    returns: tuple[torch.Tensor, torch.Tensor] | None = None  # raw (M, P) left/right returns, when computed once


class RewardTrainer:
    """Trains a :class:`RewardEnsemble` on comparisons, round after round.

    The Adam state and the adaptive L2 coefficient persist across rounds; save them with
    :meth:`state_dict` (the ensemble's own ``state_dict`` holds weights and normalisation).
    """

    def __init__(
        self,
        ensemble: RewardEnsemble,
        cfg: RewardTrainerConfig | None = None,
        rng: np.random.Generator | None = None,
    ) -> None:
        self.ensemble = ensemble
        self.cfg = cfg or RewardTrainerConfig()
        self.rng = rng if rng is not None else np.random.default_rng(self.cfg.seed)
        self.l2 = float(self.cfg.l2)
        self.rounds = 0
        self._last_metrics: dict[str, float] = {}
        self.optimizer = torch.optim.Adam(ensemble.parameters(), lr=self.cfg.lr)

    # ------------------------------------------------------------------ one round
    def train(
        self,
        pairs: Sequence[Pair],
        progress: Callable[[int, dict[str, float]], None] | None = None,
    ) -> dict[str, float]:
        """Fit the ensemble to ``pairs`` of (left, right, μ); returns the round's metrics.

        Pairs with μ = ``None`` (incomparable) are dropped. ``progress(epoch, metrics)``
        is called after every evaluation (each ``eval_every`` epochs, for progress bars).

        Returns ``reward/train_loss`` and ``reward/val_loss`` (mean member Bradley-Terry
        loss, dropout off), ``reward/accuracy`` (validation pairs with μ ∈ {0, 1} whose
        side the ensemble mean prefers; NaN without any), ``reward/l2``, and when every
        segment has true rewards ``reward/true_agreement`` (fraction of all pairs with
        unequal true returns where the ensemble prefers the truly better side) and
        ``reward/rank_correlation`` (Spearman between predicted and true returns of the
        distinct segments in ``pairs``).
        """
        cfg = self.cfg
        kept = [(left, right, check_mu(mu)) for left, right, mu in pairs if mu is not None]
        if not kept:
            raise ValueError("train needs at least one comparison with mu in {1, 0, 0.5}")
        n = len(kept)
        order = self.rng.permutation(n)
        n_val = min(int(n * cfg.val_fraction), n - 1)
        val_idx, train_idx = order[:n_val], order[n_val:]
        n_train = len(train_idx)
        m = self.ensemble.n_members
        if cfg.bootstrap:
            member_idx = train_idx[self.rng.integers(0, n_train, size=(m, n_train))]  # (M, n_train)
        else:
            member_idx = np.tile(train_idx, (m, 1))

        measured = True
        if cfg.steps_per_round is not None:
            # Measuring (and renormalising) is most of a short round's cost: every eval_every rounds.
            measured = self.rounds % cfg.eval_every == 0 or not self._last_metrics
            metrics = self._train_steps(kept, member_idx, train_idx, val_idx, progress, measured)
        else:
            data = self._stack(kept)
            metrics = self._train_epochs(data, member_idx, train_idx, val_idx, progress)
            metrics.update(self._truth_metrics(kept, data))
        metrics["reward/n_train"] = float(n_train)
        metrics["reward/n_val"] = float(n_val)
        if cfg.normalisation_segments > 0 and measured:
            self._renormalise(kept)
        self._last_metrics = dict(metrics)
        self.rounds += 1
        return metrics

    def _train_epochs(self, data: _Stacked, member_idx: np.ndarray, train_idx: np.ndarray, val_idx: np.ndarray,
                      progress: Callable[[int, dict[str, float]], None] | None) -> dict[str, float]:  # fmt: skip
        """``cfg.epochs`` shuffled passes over each member's resample, evaluating every ``eval_every``."""
        cfg, m, n_train = self.cfg, self.ensemble.n_members, len(train_idx)
        metrics: dict[str, float] = {}
        for epoch in range(cfg.epochs):
            self.ensemble.train()
            shuffled = np.take_along_axis(member_idx, self.rng.random((m, n_train)).argsort(axis=1), axis=1)
            for start in range(0, n_train, cfg.batch_size):
                self._step(data, torch.from_numpy(shuffled[:, start : start + cfg.batch_size]))  # (M, b)
            if (epoch + 1) % cfg.eval_every != 0 and epoch != cfg.epochs - 1:
                continue
            metrics = self._evaluate_and_adapt(data, train_idx, val_idx)
            if progress is not None:
                progress(epoch, metrics)
        return metrics

    def _train_steps(self, kept: Sequence[Pair], member_idx: np.ndarray, train_idx: np.ndarray, val_idx: np.ndarray,
                     progress: Callable[[int, dict[str, float]], None] | None, measured: bool = True) -> dict[str, float]:  # fmt: skip
        """``cfg.steps_per_round`` minibatches drawn from each member's resample, then (when ``measured``) one evaluation.

        Only the pairs a minibatch draws are stacked (subsampled to ``frames_per_segment`` steps), and
        the evaluation reads at most ``eval_pairs`` per split: a round's cost does not grow with the data.
        Unmeasured rounds report the last measured round's metrics.
        """
        cfg, m = self.cfg, self.ensemble.n_members
        b = min(cfg.batch_size, len(train_idx))
        self.ensemble.train()
        steps = cfg.initial_steps if self.rounds == 0 and cfg.initial_steps is not None else cfg.steps_per_round
        for _ in range(steps or 0):
            mb_pairs = np.take_along_axis(member_idx, self.rng.integers(0, member_idx.shape[1], size=(m, b)), axis=1)
            rows, local = np.unique(mb_pairs, return_inverse=True)  # stack each drawn pair once
            data = self._stack([kept[i] for i in rows], cfg.frames_per_segment)
            self._step(data, torch.from_numpy(local.reshape(m, b)))
        if not measured:
            return dict(self._last_metrics)
        sub_train, sub_val = (self._eval_subset(idx) for idx in (train_idx, val_idx))
        subset = [kept[i] for i in np.concatenate([sub_train, sub_val])]
        data = self._stack(subset)
        data.returns = self._shared_returns(data, np.arange(len(subset)))  # one pass for losses and truth metrics
        metrics = self._evaluate_and_adapt(data, np.arange(len(sub_train)), len(sub_train) + np.arange(len(sub_val)))
        metrics.update(self._truth_metrics(subset, data))
        if progress is not None:
            progress(0, metrics)
        return metrics

    def _eval_subset(self, idx: np.ndarray) -> np.ndarray:
        n = self.cfg.eval_pairs
        return idx if n is None or len(idx) <= n else self.rng.choice(idx, n, replace=False)

    def _step(self, data: _Stacked, mb_idx: torch.Tensor) -> None:
        """One Adam step on each member's Bradley-Terry loss over its minibatch rows ``mb_idx`` (M, b) + L2."""
        loss = self._member_loss(data, mb_idx) + self.l2 * self._weight_penalty()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def _evaluate_and_adapt(self, data: _Stacked, train_idx: np.ndarray, val_idx: np.ndarray) -> dict[str, float]:
        metrics = self._evaluate(data, train_idx, val_idx)
        if self.cfg.adaptive_l2 and len(val_idx) > 0:
            self._adapt_l2(metrics["reward/train_loss"], metrics["reward/val_loss"])
        metrics["reward/l2"] = self.l2
        return metrics

    # ------------------------------------------------------------------ pieces
    def _stack(self, kept: Sequence[Pair], frames: int | None = None) -> _Stacked:
        """The pairs as tensors; with ``frames`` k, k random steps of each segment, weighted length / k in the mask."""
        device = self.ensemble.norm_offset.device
        left, right = [p[0] for p in kept], [p[1] for p in kept]
        if frames is None:
            (obs_l, act_l, mask_l), (obs_r, act_r, mask_r) = stack_segments(left), stack_segments(right)
        else:
            (obs_l, act_l, mask_l), (obs_r, act_r, mask_r) = (_subsampled(segs, frames, self.rng) for segs in (left, right))
        mu = torch.tensor([p[2] for p in kept], dtype=torch.float32)
        tensors = [t.to(device) for t in (obs_l, act_l, obs_r, act_r, mask_l, mask_r, mu)]
        return _Stacked(*tensors[:4], mask_left=tensors[4], mask_right=tensors[5], mu=tensors[6])

    def _member_returns(self, data: _Stacked, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw returns of each member on its own pairs idx (M, b) → left, right (M, b)."""
        returns = []
        for obs, act, mask in (
            (data.obs_left, data.act_left, data.mask_left),
            (data.obs_right, data.act_right, data.mask_right),
        ):
            r = self.ensemble.member_rewards_per_member(obs[idx], act[idx], normalised=False)  # (M, b, T)
            returns.append((r * mask[idx]).sum(dim=-1))
        return returns[0], returns[1]

    def _member_loss(self, data: _Stacked, idx: torch.Tensor) -> torch.Tensor:
        """Sum over members of each member's mean Bradley-Terry loss on its minibatch."""
        r_left, r_right = self._member_returns(data, idx)
        loss = bradley_terry_loss(r_left, r_right, data.mu[idx], self.cfg.random_response)
        return loss * self.ensemble.n_members

    def _weight_penalty(self) -> torch.Tensor:
        """Σ w² over weight matrices and conv kernels (biases and batch norm excluded)."""
        squares = [p.pow(2).sum() for name, p in self.ensemble.named_parameters() if p.dim() >= 2 and "bias" not in name]
        return torch.stack(squares).sum()

    @torch.no_grad()
    def _shared_returns(self, data: _Stacked, idx: np.ndarray, batch: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw returns of every member on the same pairs idx (k,) → left, right (M, k), eval mode."""
        self.ensemble.eval()
        lefts, rights = [], []
        for start in range(0, len(idx), batch):
            b_idx = torch.from_numpy(idx[start : start + batch])
            lefts.append(self.ensemble.segment_returns(data.obs_left[b_idx], data.act_left[b_idx], False,
                                                       data.mask_left[b_idx]))
            rights.append(self.ensemble.segment_returns(data.obs_right[b_idx], data.act_right[b_idx], False,
                                                        data.mask_right[b_idx]))
        m = self.ensemble.n_members
        if not lefts:
            return torch.zeros(m, 0), torch.zeros(m, 0)
        return torch.cat(lefts, dim=1), torch.cat(rights, dim=1)

    def _evaluate(self, data: _Stacked, train_idx: np.ndarray, val_idx: np.ndarray) -> dict[str, float]:
        out: dict[str, float] = {}
        for split, idx in (("train", train_idx), ("val", val_idx)):
            if len(idx) == 0:
                out[f"reward/{split}_loss"] = float("nan")
                continue
            r_l, r_r = self._returns_of(data, idx)
            mu = data.mu[torch.from_numpy(idx)].expand_as(r_l)
            out[f"reward/{split}_loss"] = float(bradley_terry_loss(r_l, r_r, mu, self.cfg.random_response))
            if split == "val":
                out["reward/accuracy"] = _accuracy(r_l.mean(0), r_r.mean(0), data.mu[torch.from_numpy(idx)])
        out.setdefault("reward/accuracy", float("nan"))
        return out

    def _adapt_l2(self, train_loss: float, val_loss: float) -> None:
        """Keep val loss within [low, high] × train loss (Christiano et al. 2017, App. A)."""
        cfg = self.cfg
        if not (math.isfinite(train_loss) and math.isfinite(val_loss)) or train_loss <= 0:
            return
        ratio = val_loss / train_loss
        if ratio > cfg.l2_ratio_high:
            self.l2 = max(self.l2, cfg.l2_min) * cfg.l2_factor
        elif ratio < cfg.l2_ratio_low:
            self.l2 = self.l2 / cfg.l2_factor
        self.l2 = min(max(self.l2, cfg.l2_min), cfg.l2_max)

    def _returns_of(self, data: _Stacked, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`_shared_returns` of rows ``idx``, read from the round's cache of every row when there is one."""
        cache = getattr(data, "returns", None)
        if cache is None:
            return self._shared_returns(data, idx)
        rows = torch.from_numpy(np.asarray(idx, dtype=np.int64))
        return cache[0][:, rows], cache[1][:, rows]

    def _truth_metrics(self, kept: Sequence[Pair], data: _Stacked) -> dict[str, float]:
        if any(s.true_rewards is None for left, right, _ in kept for s in (left, right)):
            return {}
        r_l, r_r = self._returns_of(data, np.arange(len(kept)))
        pred_l, pred_r = r_l.mean(0).cpu().numpy(), r_r.mean(0).cpu().numpy()
        true_l = np.array([float(np.sum(p[0].true_rewards)) for p in kept])
        true_r = np.array([float(np.sum(p[1].true_rewards)) for p in kept])
        decided = true_l != true_r
        agreement = float(np.mean((pred_l > pred_r)[decided] == (true_l > true_r)[decided])) if decided.any() else float("nan")
        # Each distinct segment once (pairs may share segments).
        seen: dict[int, tuple[float, float]] = {}
        for i, (left, right, _) in enumerate(kept):
            seen.setdefault(id(left), (pred_l[i], true_l[i]))
            seen.setdefault(id(right), (pred_r[i], true_r[i]))
        pred, true = np.array(list(seen.values())).T
        # Undefined (NaN) with fewer than 3 segments or a constant side (e.g. CartPole: every segment
        # returns its length), said here rather than by scipy's ConstantInputWarning on the console.
        defined = len(seen) > 2 and np.ptp(pred) > 0 and np.ptp(true) > 0
        rank = float(spearmanr(pred, true).statistic) if defined else float("nan")
        return {"reward/true_agreement": agreement, "reward/rank_correlation": rank}

    def _renormalise(self, kept: Sequence[Pair]) -> None:
        recent: dict[int, Segment] = {}
        for left, right, _ in reversed(kept):
            for seg in (right, left):
                if len(recent) < self.cfg.normalisation_segments:
                    recent.setdefault(id(seg), seg)
        obs, act, mask = stack_segments(list(recent.values()))
        keep = mask.bool()
        self.ensemble.update_normalisation(obs[keep].numpy(), act[keep].numpy())

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        """Optimizer state, current L2 coefficient, round counter and numpy rng state."""
        return {
            # A copy: Optimizer.state_dict() hands out the live moment tensors.
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "l2": self.l2,
            "rounds": self.rounds,
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.l2 = float(state["l2"])
        self.rounds = int(state["rounds"])
        self.rng.bit_generator.state = state["rng"]


def _subsampled(segments: Sequence[Segment], k: int, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
    """:func:`stack_segments` of k random distinct steps per segment (all of a shorter one), kept in order.

    The mask holds each kept step's weight length / k, so Σ mask·r̂ is an unbiased estimate of the
    segment's predicted return (the Bradley-Terry model compares returns; k of 25 frames cuts the
    CNN's cost per pair 25 / k-fold).
    """
    obs, act, weights = [], [], []
    for seg in segments:
        n = len(seg)
        keep = np.sort(rng.choice(n, k, replace=False)) if n > k else np.arange(n)
        obs.append(np.asarray(seg.obs)[keep])
        act.append(np.asarray(seg.actions)[keep])
        weights.append(np.full(len(keep), n / len(keep), np.float32))
    t_max = max(len(w) for w in weights)
    obs_t = np.zeros((len(obs), t_max, *obs[0].shape[1:]), obs[0].dtype)
    act_t = np.zeros((len(act), t_max, *act[0].shape[1:]), act[0].dtype)
    mask = np.zeros((len(obs), t_max), np.float32)
    for i, (o, a, w) in enumerate(zip(obs, act, weights)):
        obs_t[i, : len(o)], act_t[i, : len(a)], mask[i, : len(w)] = o, a, w
    return torch.from_numpy(obs_t), torch.from_numpy(act_t), torch.from_numpy(mask)


def _accuracy(pred_left: torch.Tensor, pred_right: torch.Tensor, mu: torch.Tensor) -> float:
    """Fraction of pairs with μ ∈ {0, 1} where the predicted better side is the labelled one."""
    decided = mu != 0.5
    if not bool(decided.any()):
        return float("nan")
    correct = (pred_left > pred_right) == (mu > 0.5)
    return float(correct[decided].float().mean())

"""Gold (hidden env reward) vs proxy (learned reward): the diagnostics the loop logs and reports."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["proxy_vs_true", "segment_return_scatter"]


def proxy_vs_true(members: np.ndarray, true_rewards: np.ndarray) -> dict[str, float]:
    """Proxy vs gold on the policy's own steps; ``members``: (M, B) per-member rewards, ``true_rewards``: (B,).

    ``reward/ensemble_std`` is the members' disagreement on these samples: where it grows,
    the policy visits states the reward model was not trained on.
    """
    proxy = members.mean(axis=0)
    out = {
        "reward/proxy_mean": float(proxy.mean()),
        "reward/true_mean": float(true_rewards.mean()),
        "reward/ensemble_std": float(members.std(axis=0).mean()) if members.shape[0] > 1 else 0.0,
    }
    if proxy.std() > 0 and true_rewards.std() > 0:
        out["reward/proxy_true_corr"] = float(np.corrcoef(proxy, true_rewards)[0, 1])
    return out


def segment_return_scatter(ensemble: Any, segments: list[Any], max_segments: int = 256) -> list[tuple[float, float]]:
    """(predicted, true) returns of the last ``max_segments`` segments that carry true rewards."""
    segments = [s for s in segments if s.true_rewards is not None][-max_segments:]
    if not segments:
        return []
    obs = np.stack([s.obs for s in segments])  # (B, T, *obs_shape)
    act = np.stack([s.actions for s in segments])  # (B, T, *act_shape)
    b, t = obs.shape[:2]
    pred = ensemble.predict(obs.reshape(b * t, *obs.shape[2:]), act.reshape(b * t, *act.shape[2:]))
    pred_returns = np.asarray(pred).reshape(b, t).sum(axis=1)
    return [(float(p), float(s.true_return)) for p, s in zip(pred_returns, segments)]

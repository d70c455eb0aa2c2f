"""KL to the reference at every granularity: per token, per sequence, and over token position.

Cohen et al. 2024 ("RL, but don't do anything I wouldn't do", arXiv 2410.06213) show an
agent that, under a per-episode KL budget, spends its KL on the first tokens and little
afterwards. The per-token mean hides that; the sequence sum and the profile over
position show it. Every function here takes per-token log-probabilities of the sampled
tokens under the policy and the reference, and a mask of valid (response) tokens.
"""

from __future__ import annotations

import torch

from prefrl.losses import KLEstimator, kl_estimate

__all__ = ["kl_metrics", "kl_summary", "kl_position_profile", "front_loaded_fraction"]


def _check(kl: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if kl.dim() != 2:
        raise ValueError(f"per-token KL must be (B, T), got shape {tuple(kl.shape)}")
    if mask.shape != kl.shape:
        raise ValueError(f"mask has shape {tuple(mask.shape)} but KL has shape {tuple(kl.shape)}")
    return mask.to(kl.dtype)


def kl_position_profile(kl: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean per-token KL at each response position t over the sequences that reach t: (T,)."""
    m = _check(kl, mask)
    return (kl * m).sum(0) / m.sum(0).clamp(min=1.0)


def front_loaded_fraction(kl: torch.Tensor, mask: torch.Tensor, head: float = 0.25) -> torch.Tensor:
    """Share of each sequence's summed KL spent in its first ``head`` fraction of tokens: (B,).

    Only positive KL mass is counted (k1 samples can be negative). A uniform spread gives
    about ``head``; values near 1 flag "spend it all up front".
    """
    m = _check(kl, mask)
    lengths = m.sum(1)  # (B,)
    positions = torch.arange(kl.shape[1], device=kl.device, dtype=kl.dtype).expand_as(kl)
    # a token is in the head when its index is below ceil(head * length)
    in_head = (positions < torch.ceil(head * lengths).unsqueeze(1)).to(kl.dtype) * m
    mass = kl.clamp(min=0) * m
    return (mass * in_head).sum(1) / mass.sum(1).clamp(min=1e-12)


def kl_summary(kl: torch.Tensor, mask: torch.Tensor, prefix: str = "objective") -> dict[str, float]:
    """Per-token and per-sequence statistics of per-token KL estimates ``kl`` (B, T).

    Returns ``{prefix}/kl`` (sequence sum, batch mean), ``{prefix}/kl_seq_max``,
    ``{prefix}/kl_token`` (mean over all valid tokens) and ``{prefix}/kl_front_loaded``
    (mean share of sequence KL in the first quarter of tokens).
    """
    m = _check(kl, mask)
    kl_seq = (kl * m).sum(1)
    return {
        f"{prefix}/kl": kl_seq.mean().item(),
        f"{prefix}/kl_seq_max": kl_seq.max().item(),
        f"{prefix}/kl_token": ((kl * m).sum() / m.sum().clamp(min=1.0)).item(),
        f"{prefix}/kl_front_loaded": front_loaded_fraction(kl, mask).mean().item(),
    }


def kl_metrics(
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    estimator: KLEstimator = "k1",
    prefix: str = "objective",
) -> dict[str, float]:
    """:func:`kl_summary` of KL(π ‖ π_ref) estimated from sampled tokens' log-probabilities.

    Args:
        logprobs, ref_logprobs: (B, T) log-probabilities of the sampled tokens.
        mask: (B, T) 1 for response tokens.
        estimator: ``k1``/``k2``/``k3`` (see :func:`prefrl.losses.kl_estimate`).
        prefix: metric namespace; use e.g. ``"original_ref"`` for KL to the original
            reference after a reference reset.
    """
    return kl_summary(kl_estimate(logprobs, ref_logprobs, estimator), mask, prefix)

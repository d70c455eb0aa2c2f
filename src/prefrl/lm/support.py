"""A support constraint: the policy may only emit tokens the reference itself might emit.

Cohen et al. 2024 ask for "don't do anything I *mightn't* do" rather than a KL penalty,
which a policy can satisfy on average while emitting tokens the reference would almost
never produce. A practical nod to that idea is to restrict sampling to the reference's
top-p / min-p support at every step, and to *measure* how often an unconstrained
policy leaves that support (the measurement is the point: the constraint is no proof).
"""

from __future__ import annotations

import torch

__all__ = ["reference_support_mask", "support_violation_rate", "ReferenceSupportProcessor"]


def reference_support_mask(ref_logits: torch.Tensor, top_p: float | None = None, min_p: float | None = None) -> torch.Tensor:
    """Boolean mask (…, V) of the tokens inside the reference's support.

    - top-p (nucleus, Holtzman et al. 2020): the smallest set of most likely tokens whose
      probability mass reaches ``top_p``.
    - min-p (Nguyen et al. 2024): tokens with probability ≥ ``min_p`` × the top token's.
    With both, a token must pass both. The most likely token is always in the support.
    """
    if top_p is None and min_p is None:
        raise ValueError("give top_p, min_p or both")
    probs = torch.softmax(ref_logits.float(), dim=-1)
    mask = torch.ones_like(probs, dtype=torch.bool)
    if top_p is not None:
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        sorted_p, order = probs.sort(dim=-1, descending=True)
        # keep a token when the mass strictly before it is below top_p
        before = sorted_p.cumsum(-1) - sorted_p
        keep_sorted = before < top_p
        mask &= torch.zeros_like(mask).scatter(-1, order, keep_sorted)
    if min_p is not None:
        if not 0.0 <= min_p <= 1.0:
            raise ValueError(f"min_p must be in [0, 1], got {min_p}")
        mask &= probs >= min_p * probs.max(dim=-1, keepdim=True).values
    return mask


def support_violation_rate(
    tokens: torch.Tensor,
    ref_logits: torch.Tensor,
    mask: torch.Tensor | None = None,
    top_p: float | None = 0.95,
    min_p: float | None = None,
) -> float:
    """Fraction of sampled tokens outside the reference's support.

    Args:
        tokens: (B, T) sampled token ids.
        ref_logits: (B, T, V) the reference's logits for the position of each token.
        mask: (B, T) 1 for response tokens.
    """
    if ref_logits.shape[:2] != tokens.shape:
        raise ValueError(f"ref_logits has shape {tuple(ref_logits.shape)}; its first two axes must equal tokens' {tuple(tokens.shape)}")
    inside = reference_support_mask(ref_logits, top_p, min_p).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    valid = torch.ones_like(tokens, dtype=torch.bool) if mask is None else mask.bool()
    return float((~inside & valid).sum() / valid.sum().clamp(min=1))


class ReferenceSupportProcessor:
    """A ``transformers`` logits processor that masks tokens outside the reference's support.

    Pass it in ``generate(..., logits_processor=LogitsProcessorList([...]))``. It runs the
    reference on the sequence so far at every step (with its own KV cache), so sampling
    costs one extra reference forward per token.
    """

    def __init__(
        self,
        ref_model: torch.nn.Module,
        prompt_attention_mask: torch.Tensor,
        top_p: float | None = 0.95,
        min_p: float | None = None,
    ) -> None:
        if top_p is None and min_p is None:
            raise ValueError("give top_p, min_p or both")
        self.ref_model = ref_model
        # Padding cannot be told from EOS by token id (SmolLM2's pad is its EOS), so the
        # prompt's attention mask is given once and extended by ones for generated tokens.
        self.attention_mask = prompt_attention_mask.long()
        self.top_p, self.min_p = top_p, min_p
        self._past = None
        self._seen = 0

    @torch.no_grad()
    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        extra = input_ids.shape[1] - self.attention_mask.shape[1]
        if extra > 0:
            ones = self.attention_mask.new_ones(self.attention_mask.shape[0], extra)
            self.attention_mask = torch.cat([self.attention_mask, ones], dim=1)
        mask = self.attention_mask[:, : input_ids.shape[1]]
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        new = slice(self._seen if self._past is not None else 0, None)
        out = self.ref_model(
            input_ids=input_ids[:, new],
            attention_mask=mask,
            position_ids=position_ids[:, new],
            past_key_values=self._past,
            use_cache=True,
        )
        self._past, self._seen = out.past_key_values, input_ids.shape[1]
        ref_logits = out.logits[:, -1, : scores.shape[-1]]
        allowed = reference_support_mask(ref_logits, self.top_p, self.min_p)
        return scores.masked_fill(~allowed, float("-inf"))

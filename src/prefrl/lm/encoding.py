"""Turning text into model inputs: prompt‖completion tokens, padding, masks, packed preference pairs.

- tokenisation of prompt + completion pairs and padding (left or right) into batches;
- position ids from the attention mask, so left-padded rows score like right-padded ones;
- the last real token of each row, read from the mask (SmolLM2's pad token is its EOS);
- preference pairs packed one row per pair (prompt‖chosen‖rejected), so the shared
  prompt goes through the model once instead of twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch

__all__ = [
    "position_ids_from_mask",
    "last_token_index",
    "pad_sequences",
    "with_final_eos",
    "encode_prompt_completion",
    "collate_prompt_completion",
    "collate_shared_prompts",
    "encode_prompt_rows",
    "pack_preference_pairs",
    "additive_attention_mask",
]

# ---------------------------------------------------------------- masks and padding


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) positions counting only real tokens: 0 at each row's first non-pad token.

    Without this, a left-padded row would see its tokens at positions shifted by the
    pad count, and score differently from the same row right-padded.
    """
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B,) index of the last non-pad token of each row, for left or right padding.

    Read from the mask, never from pad ids: SmolLM2's pad token is its EOS token, so a
    response that ends in EOS would otherwise be cut one token early
    (TRL issues #2778, #3750). Rows with no real token get index 0.
    """
    if attention_mask.dim() != 2:
        raise ValueError(f"attention_mask must be (B, T), got shape {tuple(attention_mask.shape)}")
    t = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (attention_mask.long() * (t + 1)).argmax(-1)


def pad_sequences(
    sequences: Sequence[Sequence[int]],
    pad_id: int,
    side: Literal["left", "right"] = "right",
    pad_value: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad token-id lists into ``(ids (B, T), mask (B, T))``; ``pad_value`` overrides ``pad_id``."""
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    if len(sequences) == 0:
        raise ValueError("pad_sequences needs at least one sequence")
    fill = pad_id if pad_value is None else pad_value
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), fill, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, seq in enumerate(sequences):
        n = len(seq)
        if n == 0:
            continue
        sl = slice(0, n) if side == "right" else slice(width - n, width)
        ids[i, sl] = torch.as_tensor(list(seq), dtype=torch.long)
        mask[i, sl] = 1
    return ids, mask


def with_final_eos(tokenizer: Any, completion_ids: Sequence[int]) -> list[int]:
    """The one end-of-sequence rule: a scored completion ends with EOS as its last token.

    Every stage applies it (SFT, reward-model training, DPO, and scoring at use time: PPO,
    ``evaluate``, best-of-n), so a reward model reads its score at the same token in training
    and in use (#12 item 4). What a chat template writes after the final EOS (ChatML's
    ``"<|im_end|>\n"`` newline) is dropped; a completion without an EOS at its end (decoded
    samples, plain-text data) gets one appended.
    """
    ids = list(completion_ids)
    eos = tokenizer.eos_token_id
    if eos is None:
        return ids
    if eos in ids:
        last = len(ids) - 1 - ids[::-1].index(eos)
        if not tokenizer.decode(ids[last + 1 :]).strip():
            return ids[: last + 1]
    return ids + [eos]


def encode_prompt_completion(
    tokenizer: Any, prompt: str, completion: str, max_length: int | None = None, add_eos: bool = True
) -> tuple[list[int], list[int]]:
    """Token ids of prompt‖completion and a 0/1 list marking the completion tokens.

    Prompt and completion are tokenised separately so the boundary is exact. The completion
    ends as :func:`with_final_eos` says (unless ``add_eos=False``). When ``max_length`` is
    exceeded the prompt is cut from the left first (keeping its end, next to the
    response), then the completion from the right.
    """
    prompt_ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    completion_ids = list(tokenizer(completion, add_special_tokens=False)["input_ids"])
    if add_eos:
        completion_ids = with_final_eos(tokenizer, completion_ids)
    if max_length is not None:
        if max_length < 2:
            raise ValueError(f"max_length must be at least 2, got {max_length}")
        excess = len(prompt_ids) + len(completion_ids) - max_length
        if excess > 0:
            cut = min(excess, max(len(prompt_ids) - 1, 0))
            prompt_ids = prompt_ids[cut:]
            excess -= cut
        if excess > 0:
            completion_ids = completion_ids[: len(completion_ids) - excess]
    return prompt_ids + completion_ids, [0] * len(prompt_ids) + [1] * len(completion_ids)


def collate_prompt_completion(
    tokenizer: Any,
    prompts: Sequence[str],
    completions: Sequence[str],
    max_length: int | None = None,
    side: Literal["left", "right"] = "right",
    encoded: Sequence[tuple[list[int], list[int]]] | None = None,
) -> dict[str, torch.Tensor]:
    """Batch of prompt‖completion: ``input_ids``, ``attention_mask``, ``completion_mask`` (B, T).

    ``encoded``: the rows' :func:`encode_prompt_rows` when the caller has them already (not tokenised again).
    """
    if encoded is None:
        encoded = encode_prompt_rows(tokenizer, prompts, completions, max_length)
    ids, mask = pad_sequences([e[0] for e in encoded], tokenizer.pad_token_id, side)
    completion_mask, _ = pad_sequences([e[1] for e in encoded], 0, side, pad_value=0)
    return {"input_ids": ids, "attention_mask": mask, "completion_mask": completion_mask}


def encode_prompt_rows(
    tokenizer: Any, prompts: Sequence[str], completions: Sequence[str], max_length: int | None = None
) -> list[tuple[list[int], list[int]]]:
    """:func:`encode_prompt_completion` of each (prompt, completion) row."""
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    return [encode_prompt_completion(tokenizer, p, c, max_length) for p, c in zip(prompts, completions)]


def collate_shared_prompts(
    tokenizer: Any,
    prompts: Sequence[str],
    completions: Sequence[str],
    max_length: int | None = None,
    encoded: Sequence[tuple[list[int], list[int]]] | None = None,
) -> dict[str, torch.Tensor] | None:
    """The rows of :func:`collate_prompt_completion` with each distinct prompt once, for a prompt computed once.

    Tokenisation and truncation are :func:`encode_prompt_completion`'s. Rows whose prompt tokens are equal
    (e.g. the k completions of one prompt) share one prompt row. Returns ``None`` when no two rows share a
    prompt or a prompt is empty (use :func:`collate_prompt_completion`). Keys: ``prompt_ids`` /
    ``prompt_mask`` (U, P) left-padded; ``group`` (B,) the prompt row of each row; ``completion_ids`` /
    ``completion_mask`` (B, C) right-padded, each with at least its EOS. ``encoded``: as in
    :func:`collate_prompt_completion`.
    """
    if encoded is None:
        encoded = encode_prompt_rows(tokenizer, prompts, completions, max_length)
    rows: dict[tuple[int, ...], int] = {}
    group, tails = [], []
    for ids, cmask in encoded:
        n_p = len(ids) - sum(cmask)
        if n_p == 0 or n_p == len(ids):
            return None
        group.append(rows.setdefault(tuple(ids[:n_p]), len(rows)))
        tails.append(ids[n_p:])
    if len(rows) == len(group):
        return None
    prompt_ids, prompt_mask = pad_sequences(list(rows), tokenizer.pad_token_id, "left")
    completion_ids, completion_mask = pad_sequences(tails, tokenizer.pad_token_id, "right")
    return {
        "prompt_ids": prompt_ids,
        "prompt_mask": prompt_mask,
        "group": torch.tensor(group, dtype=torch.long),
        "completion_ids": completion_ids,
        "completion_mask": completion_mask,
    }


# ---------------------------------------------------------------- preference pairs, one row each


def pack_preference_pairs(
    tokenizer: Any,
    prompts: Sequence[str],
    chosen: Sequence[str],
    rejected: Sequence[str],
    max_length: int | None = None,
) -> dict[str, torch.Tensor] | None:
    """Pack each pair as one row prompt‖chosen‖rejected; the prompt is computed once, not twice.

    The rejected tokens may attend to the prompt and to earlier rejected tokens but not
    to the chosen ones, and their positions restart after the prompt, so every token
    sees exactly what it would in its own prompt‖response row: the log-probabilities and
    last hidden states are those of the two-row batch (up to float rounding) while the
    prompt's tokens go through the model once. Tokenisation and truncation are those of
    :func:`encode_prompt_completion`. Prompts are left-padded so that every row's
    responses start at the same column; leftover width is padding on the right.

    Returns ``None`` (use :func:`collate_prompt_completion` instead) when truncation cut
    a pair's prompt differently for its two responses, or a prompt is empty.

    Keys (B pairs, T columns; sequence s < B is chosen of pair s, s ≥ B rejected of s − B):
        ``input_ids``, ``position_ids`` (B, T); ``attention_allowed`` (B, 1, T, T) bool;
        ``keep`` (B, T) bool, the columns whose logits score some token;
        ``target_row`` / ``target_label`` / ``target_seq`` (K,): for each scored token,
        its row among the kept logits (row-major order), its id and its sequence;
        ``last_row`` / ``last_col`` (2B,): where each sequence's last token sits.
    """
    if not (len(prompts) == len(chosen) == len(rejected)) or len(prompts) == 0:
        raise ValueError(f"{len(prompts)} prompts, {len(chosen)} chosen, {len(rejected)} rejected")
    pairs = []
    for p, c, r in zip(prompts, chosen, rejected):
        ids_c, mask_c = encode_prompt_completion(tokenizer, p, c, max_length)
        ids_r, mask_r = encode_prompt_completion(tokenizer, p, r, max_length)
        n_c, n_r = len(ids_c) - sum(mask_c), len(ids_r) - sum(mask_r)  # prompt lengths
        if n_c == 0 or ids_c[:n_c] != ids_r[:n_r]:
            return None
        pairs.append((ids_c[:n_c], ids_c[n_c:], ids_r[n_r:]))
    b = len(pairs)
    p_max = max(len(p) for p, _, _ in pairs)
    width = p_max + max(len(c) + len(r) for _, c, r in pairs)
    input_ids = torch.full((b, width), int(tokenizer.pad_token_id), dtype=torch.long)
    position_ids = torch.zeros((b, width), dtype=torch.long)
    segment = torch.zeros((b, width), dtype=torch.long)  # 0 pad, 1 prompt, 2 chosen, 3 rejected
    keep = torch.zeros((b, width), dtype=torch.bool)
    targets: list[tuple[int, int, int, int]] = []  # (row, predicting column, label, sequence)
    last_col = [0] * (2 * b)
    for i, (prompt, ch, rj) in enumerate(pairs):
        n_p = len(prompt)
        input_ids[i, p_max - n_p : p_max] = torch.tensor(prompt)
        position_ids[i, p_max - n_p : p_max] = torch.arange(n_p)
        segment[i, p_max - n_p : p_max] = 1
        start = p_max
        for seg, (resp, seq) in enumerate(((ch, i), (rj, b + i)), start=2):
            cols = slice(start, start + len(resp))
            input_ids[i, cols] = torch.tensor(resp, dtype=torch.long)
            position_ids[i, cols] = torch.arange(n_p, n_p + len(resp))
            segment[i, cols] = seg
            for k, token in enumerate(resp):
                # the first response token is predicted from the prompt's last one
                targets.append((i, p_max - 1 if k == 0 else start + k - 1, token, seq))
            last_col[seq] = start + len(resp) - 1 if resp else p_max - 1
            start += len(resp)
    for i, col, _, _ in targets:
        keep[i, col] = True
    flat = (keep.flatten().long().cumsum(0) - 1).view(b, width)  # kept row of each column
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    seg_q, seg_k = segment[:, :, None], segment[:, None, :]
    allowed = causal & (seg_k != 0) & ((seg_k == 1) | (seg_k == seg_q))  # (B, T, T)
    allowed |= torch.eye(width, dtype=torch.bool) & (seg_q == 0)  # pad attends to itself: no empty row
    t = torch.tensor(targets, dtype=torch.long).view(-1, 4)
    return {
        "input_ids": input_ids,
        "position_ids": position_ids,
        "attention_allowed": allowed[:, None],  # (B, 1, T, T)
        "keep": keep,
        "target_row": flat[t[:, 0], t[:, 1]],
        "target_label": t[:, 2],
        "target_seq": t[:, 3],
        "last_row": torch.arange(2 * b) % b,
        "last_col": torch.tensor(last_col, dtype=torch.long),
    }


def additive_attention_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """0 where attention is allowed, the dtype's most negative value elsewhere (eager and SDPA both add it)."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
        ~allowed, torch.finfo(dtype).min
    )

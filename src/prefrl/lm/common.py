"""Training utilities shared by the LM stages (SFT, RM, DPO, PPO, best-of-n).

- tokenisation of prompt + completion pairs and padding (left or right) into batches;
- position ids from the attention mask, so left-padded rows score like right-padded ones;
- per-token and per-completion log-probabilities under a causal LM, the LM head applied
  only where a completion token is scored;
- preference pairs packed one row per pair (prompt‖chosen‖rejected), so the shared
  prompt goes through the model once instead of twice;
- deterministic, resumable batch order sharded over ``accelerate`` processes;
- checkpoints: HF model + tokenizer, plus optimizer, scheduler, step and RNG states;
- a progress bar and TensorBoard writer behind one ``log`` call.
"""

from __future__ import annotations

import functools
import json
import math
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from prefrl.lm.configs import TrainArgs, config_to_dict, doc

__all__ = [
    "position_ids_from_mask",
    "last_token_index",
    "pad_sequences",
    "encode_prompt_completion",
    "collate_prompt_completion",
    "logprobs_from_logits",
    "token_logprobs",
    "completion_logprobs",
    "pack_preference_pairs",
    "packed_pair_logprobs",
    "batch_indices",
    "steps_per_epoch",
    "rng_state",
    "set_rng_state",
    "save_training_state",
    "load_training_state",
    "TRAINING_STATE_FILE",
    "TrainLogger",
    "unwrap",
    "seed_everything",
    "doc",
    "TrainArgs",
    "run_training",
    "linear_schedule",
    "make_adamw",
    "release_free_memory",
    "mean_metrics",
    "cross_entropy_on_completion",
    "config_to_dict",
]

TRAINING_STATE_FILE = "training_state.pt"


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


def encode_prompt_completion(
    tokenizer: Any, prompt: str, completion: str, max_length: int | None = None, add_eos: bool = True
) -> tuple[list[int], list[int]]:
    """Token ids of prompt‖completion and a 0/1 list marking the completion tokens.

    Prompt and completion are tokenised separately so the boundary is exact. An EOS is
    appended to the completion unless it already ends with one. When ``max_length`` is
    exceeded the prompt is cut from the left first (keeping its end, next to the
    response), then the completion from the right.
    """
    prompt_ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    completion_ids = list(tokenizer(completion, add_special_tokens=False)["input_ids"])
    eos = tokenizer.eos_token_id
    if add_eos and eos is not None and (not completion_ids or completion_ids[-1] != eos):
        # chat-rendered completions end in "<|im_end|>\n": the EOS is already there
        if eos not in completion_ids[-2:]:
            completion_ids.append(eos)
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
) -> dict[str, torch.Tensor]:
    """Batch of prompt‖completion: ``input_ids``, ``attention_mask``, ``completion_mask`` (B, T)."""
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    encoded = [encode_prompt_completion(tokenizer, p, c, max_length) for p, c in zip(prompts, completions)]
    ids, mask = pad_sequences([e[0] for e in encoded], tokenizer.pad_token_id, side)
    completion_mask, _ = pad_sequences([e[1] for e in encoded], 0, side, pad_value=0)
    return {"input_ids": ids, "attention_mask": mask, "completion_mask": completion_mask}


# ---------------------------------------------------------------- log-probabilities


def logprobs_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[labels]: (B, T, V), (B, T) → (B, T), without a (B, T, V) log-softmax copy."""
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} disagree")
    logits = logits.float()
    picked = torch.gather(logits, -1, labels.unsqueeze(-1)).squeeze(-1)  # (B, T)
    return picked - torch.logsumexp(logits, dim=-1)


def token_logprobs(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """(B, T − 1): log π(x_{t+1} | x_{≤t}) for every position, under padding-aware positions.

    Entry t is the log-probability of token t + 1. Calls ``model(...)`` (so DDP hooks
    run) with position ids from the mask.
    """
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        use_cache=False,
    )
    logits = out.logits[:, :-1, :]  # (B, T-1, V)
    if temperature != 1.0:
        logits = logits / temperature
    return logprobs_from_logits(logits, input_ids[:, 1:])


def _kept_logits(model: Any, keep: torch.Tensor, **inputs: Any) -> torch.Tensor:
    """(N, V) logits at the N positions where ``keep`` (B, T) is True, from one ``model(...)`` call.

    Transformers ≥ 5 projects only those hidden states through the LM head
    (``logits_to_keep`` as a boolean mask), so the (B, T, V) logits never exist; older
    versions compute all logits and the kept rows are selected afterwards. The call goes
    through ``model(...)`` either way, so DDP hooks run.
    """
    if _has_masked_logits_to_keep():
        return model(**inputs, use_cache=False, logits_to_keep=keep).logits  # (N, V)
    return model(**inputs, use_cache=False).logits[keep]  # (B, T, V) → (N, V)


@functools.cache
def _has_masked_logits_to_keep() -> bool:
    try:
        from transformers.modeling_utils import slice_logits_to_keep
    except ImportError:
        return False
    probe = slice_logits_to_keep(torch.zeros(1, 2, 1), torch.tensor([[False, True]]))
    return tuple(probe.shape) == (1, 1)


def _sequence_logprobs(
    logits: torch.Tensor, rows: torch.Tensor, labels: torch.Tensor, seq: torch.Tensor, n_seq: int
) -> torch.Tensor:
    """Σ log softmax(logits[rows])[labels] per sequence ``seq``: (N, V), (K,), (K,), (K,) → (n_seq,).

    gather − logsumexp in float32 (no log-softmax copy of the logits); a logit row may
    score several targets (a packed prompt's last token predicts both responses' first).
    """
    logits = logits.float()
    lse = torch.logsumexp(logits, dim=-1)  # (N,)
    token_lp = logits[rows, labels] - lse[rows]  # (K,)
    return token_lp.new_zeros(n_seq).index_add(0, seq, token_lp)


def completion_logprobs(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    completion_mask: torch.Tensor,
    average: bool = False,
) -> torch.Tensor:
    """(B,) summed (or, with ``average``, mean) log π(completion | prompt) over completion tokens.

    Equal to summing :func:`token_logprobs` over the completion, but the LM head runs
    only at positions whose next token is a completion token (see :func:`_kept_logits`).
    """
    target = (completion_mask[:, 1:] * attention_mask[:, 1:]).bool()  # (B, T-1): token t+1 is scored
    keep = torch.zeros_like(attention_mask, dtype=torch.bool)
    keep[:, :-1] = target  # (B, T): position t predicts token t+1
    logits = _kept_logits(
        model,
        keep,
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
    )
    row_of, _ = keep.nonzero(as_tuple=True)  # kept rows are in row-major order
    labels = input_ids[:, 1:][target]  # (N,)
    n = torch.arange(row_of.shape[0], device=row_of.device)
    total = _sequence_logprobs(logits, n, labels, row_of, input_ids.shape[0])
    if average:
        return total / target.sum(-1).clamp(min=1).to(total.dtype)
    return total


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


def packed_pair_logprobs(model: Any, packed: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """(2B,) summed log π(response | prompt) of :func:`pack_preference_pairs` rows: chosen then rejected.

    One ``model(...)`` call over the packed rows with the pair mask; the LM head runs only
    at the kept columns. Equals :func:`completion_logprobs` on the two-row batch.
    """
    dtype = next(p for p in model.parameters()).dtype
    logits = _kept_logits(
        model,
        packed["keep"],
        input_ids=packed["input_ids"],
        attention_mask=additive_attention_mask(packed["attention_allowed"], dtype),
        position_ids=packed["position_ids"],
    )  # (N, V)
    n_seq = 2 * packed["input_ids"].shape[0]
    return _sequence_logprobs(
        logits, packed["target_row"], packed["target_label"], packed["target_seq"], n_seq
    )


# ---------------------------------------------------------------- batch order


def steps_per_epoch(n_examples: int, batch_size: int) -> int:
    """Optimizer steps in one pass over the data (the last batch may be short)."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    return max(1, math.ceil(n_examples / batch_size))


def batch_indices(
    n_examples: int,
    batch_size: int,
    seed: int,
    start_step: int = 0,
    process_index: int = 0,
    num_processes: int = 1,
    shuffle: bool = True,
) -> Iterator[list[int]]:
    """Endless global batches of example indices, this process's shard of each.

    Epoch e is a permutation drawn from ``torch.Generator().manual_seed(seed + e)``, so
    the order depends only on (seed, step): resuming at ``start_step`` replays exactly
    the batches a run without interruption would have seen. Every process sees the
    same global batch and takes rows ``process_index::num_processes``.
    """
    if n_examples <= 0:
        raise ValueError("no training examples")
    per_epoch = steps_per_epoch(n_examples, batch_size)
    step = start_step
    while True:
        epoch, k = divmod(step, per_epoch)
        if shuffle:
            order = torch.randperm(n_examples, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
        else:
            order = list(range(n_examples))
        batch = order[k * batch_size : (k + 1) * batch_size]
        # a short last batch may leave a process without rows: it repeats one rather than
        # skipping the step, which would leave the other processes waiting in all-reduce
        yield batch[process_index::num_processes] or batch[:1]
        step += 1


# ---------------------------------------------------------------- RNG and checkpoints


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch global RNGs (entry points only)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Global RNG states of Python, NumPy and torch (CPU, and CUDA when present)."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_training_state(
    directory: str | Path,
    step: int,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``training_state.pt`` (step, optimizer, scheduler, RNG, ``extra``) next to a model.

    Written to a temporary name then renamed, so an interrupted save leaves the previous
    state intact.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {
        "step": int(step),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "rng": rng_state(),
        "extra": dict(extra or {}),
    }
    tmp = directory / (TRAINING_STATE_FILE + ".tmp")
    torch.save(state, tmp)
    tmp.replace(directory / TRAINING_STATE_FILE)
    return directory / TRAINING_STATE_FILE


def load_training_state(
    directory: str | Path,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Load :func:`save_training_state`'s file into ``optimizer``/``scheduler``; returns the dict."""
    path = Path(directory) / TRAINING_STATE_FILE
    if not path.exists():
        raise FileNotFoundError(f"cannot resume: {path} does not exist")
    state = torch.load(path, map_location="cpu", weights_only=False)
    if optimizer is not None and state.get("optimizer") is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    if restore_rng and state.get("rng") is not None:
        set_rng_state(state["rng"])
    return state


def unwrap(model: Any) -> Any:
    """The module inside DDP / ``accelerate`` wrappers."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    return model


# ---------------------------------------------------------------- logging


class TrainLogger:
    """Progress bar + TensorBoard scalars behind one call; silent on non-main processes.

    Args:
        log_dir: TensorBoard directory (``None``: no event files).
        total: number of steps, for the bar.
        desc: bar label.
        enabled: False on non-main processes.
        initial: step to start the bar at (when resuming).
    """

    def __init__(
        self,
        log_dir: str | Path | None,
        total: int,
        desc: str = "train",
        enabled: bool = True,
        initial: int = 0,
    ) -> None:
        self.enabled = enabled
        self.writer = None
        self.bar = None
        self.history: list[dict[str, float]] = []
        if not enabled:
            return
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, leave=False)
        if log_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(log_dir))

    def log(self, metrics: Mapping[str, float], step: int, advance: int = 1) -> None:
        """Record ``metrics`` at ``step`` and move the bar by ``advance``."""
        clean = {k: float(v) for k, v in metrics.items()}
        self.history.append({"step": float(step), **clean})
        if not self.enabled:
            return
        if self.writer is not None:
            for key, value in clean.items():
                self.writer.add_scalar(key, value, step)
        if self.bar is not None:
            shown = {k.split("/")[-1]: f"{v:.3g}" for k, v in list(clean.items())[:4]}
            self.bar.set_postfix(shown, refresh=False)
            self.bar.update(advance)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()


def mean_metrics(rows: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Key-wise mean of metric dicts (keys missing from a row are skipped for it)."""
    keys = {k for r in rows for k in r}
    out = {}
    for k in keys:
        vals = [r[k] for r in rows if k in r and not (isinstance(r[k], float) and math.isnan(r[k]))]
        if vals:
            out[k] = float(np.mean(vals))
    return out


def cross_entropy_on_completion(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy; labels of -100 (prompt, padding) are ignored. (B, T, V), (B, T)."""
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1), ignore_index=-100
    )


# ---------------------------------------------------------------- shared training loop


def linear_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int) -> Any:
    """Linear warm-up to the peak learning rate, then linear decay to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def make_adamw(
    params: Sequence[torch.nn.Parameter], lr: float, weight_decay: float, eps: float = 1e-8
) -> torch.optim.AdamW:
    """AdamW with the fused kernel where torch has one for the parameters' device (CPU, CUDA).

    Same update as the default multi-tensor AdamW (to float rounding) in one pass per
    tensor: no parameter-sized temporaries (the ``foreach`` version allocates several,
    e.g. ~0.5 GB for SmolLM2-135M in fp32) and about 3x faster on CPU. Hugging Face's
    Trainer (and so TRL) defaults to the same kernel (``adamw_torch_fused``).
    """
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, eps=eps, fused=True)
    except (RuntimeError, ValueError):  # a device or dtype without the fused kernel
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, eps=eps)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


def release_free_memory() -> None:
    """Return the heap's free pages to the OS (glibc ``malloc_trim``; a no-op elsewhere).

    CPU tensors come from ``malloc``. Activations and gradients freed every step leave
    holes in the heap that glibc keeps mapped and refills with differently sized blocks,
    so without this the peak resident memory of a training step sits ~50–100 MB higher
    (SmolLM2-135M, full fine-tuning; docs/benchmarks_lm.md). The training loop calls it
    once the old gradients are freed and again after the update.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


LossFn = Callable[[Any, list[int], Any], tuple[torch.Tensor, dict[str, float]]]
SaveFn = Callable[[Any, Path], None]


def _check_resume_matches(cfg: TrainArgs) -> None:
    """Fail clearly when a resumed run would train other parameters than its checkpoint did.

    The optimizer state holds one entry per trainable parameter, so a different
    ``train_top_layers`` would otherwise surface as torch's parameter-group size mismatch.
    """
    saved_path = Path(cfg.resume) / "prefrl_config.json"
    if not saved_path.exists():
        return
    saved = json.loads(saved_path.read_text()).get("train_top_layers", 0)
    if saved != cfg.train_top_layers:
        raise ValueError(
            f"resume: {cfg.resume} was trained with train_top_layers={saved}, not {cfg.train_top_layers}; "
            "resume with the same value"
        )


def run_training(
    cfg: TrainArgs,
    model: torch.nn.Module,
    n_examples: int,
    loss_fn: LossFn,
    save_fn: SaveFn,
    desc: str,
    accelerator: Any = None,
) -> dict[str, Any]:
    """The loop shared by SFT, RM and DPO: seed → batches → loss → update → log → checkpoint.

    ``loss_fn(model, batch_indices, device) -> (loss, metrics)`` computes one batch (this
    process's shard); ``save_fn(model, directory)`` writes the unwrapped model in HF
    format. With ``cfg.resume`` the optimizer, scheduler, step counter and RNG are
    restored from the checkpoint and the batch order continues where it stopped
    (the caller has already loaded the model weights from it).

    Returns ``{"step", "history", "output_dir"}``.
    """
    from accelerate import Accelerator

    acc = accelerator if accelerator is not None else Accelerator()
    out = Path(cfg.output_dir)
    total = cfg.total_steps(n_examples)
    if cfg.resume is not None:
        _check_resume_matches(cfg)
    if cfg.train_top_layers:
        from prefrl.lm.models import freeze_all_but_top_layers

        freeze_all_but_top_layers(model, cfg.train_top_layers)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    optimizer = make_adamw(params, cfg.learning_rate, cfg.weight_decay)
    scheduler = linear_schedule(optimizer, cfg.warmup_steps, total)
    start = 0
    if cfg.resume is not None:
        state = load_training_state(cfg.resume, optimizer, scheduler)
        start = int(state["step"])
    else:
        seed_everything(cfg.seed + acc.process_index)
    model, optimizer = acc.prepare(model, optimizer)
    batches = batch_indices(n_examples, cfg.batch_size, cfg.seed, start, acc.process_index, acc.num_processes)
    logger = TrainLogger(out / "runs", total, desc, enabled=acc.is_main_process, initial=start)

    def checkpoint(directory: Path, step: int) -> None:
        acc.wait_for_everyone()
        if acc.is_main_process:
            directory.mkdir(parents=True, exist_ok=True)
            save_fn(acc.unwrap_model(model), directory)
            save_training_state(directory, step, optimizer, scheduler, {"config": config_to_dict(cfg)})
            (directory / "prefrl_config.json").write_text(json.dumps(config_to_dict(cfg), indent=2))
        acc.wait_for_everyone()

    step = start
    t0 = time.perf_counter()
    window: list[dict[str, float]] = []
    for step in range(start + 1, total + 1):
        model.train()
        # free last step's gradients before the forward, not after it: otherwise they are
        # alive next to the activations and the peak memory grows by their size
        optimizer.zero_grad(set_to_none=True)
        release_free_memory()  # the freed gradients' pages, before the activations fill their holes
        loss, metrics = loss_fn(model, next(batches), acc.device)
        acc.backward(loss)
        if cfg.max_grad_norm > 0:
            metrics["charts/grad_norm"] = float(acc.clip_grad_norm_(model.parameters(), cfg.max_grad_norm))
        optimizer.step()
        scheduler.step()
        release_free_memory()
        metrics["charts/learning_rate"] = scheduler.get_last_lr()[0]
        window.append(metrics)
        if step % cfg.log_every == 0 or step == total:
            row = mean_metrics(window)
            if acc.num_processes > 1:
                keys = sorted(row)
                vals = acc.reduce(torch.tensor([row[k] for k in keys], device=acc.device), "mean")
                row = dict(zip(keys, vals.tolist()))
            row["charts/sps"] = len(window) / max(time.perf_counter() - t0, 1e-9)
            logger.log(row, step, advance=len(window))
            window, t0 = [], time.perf_counter()
        if cfg.save_every and step % cfg.save_every == 0 and step < total:
            checkpoint(out / f"checkpoint-{step}", step)
    logger.close()
    checkpoint(out, step)
    return {"step": step, "history": logger.history, "output_dir": out}

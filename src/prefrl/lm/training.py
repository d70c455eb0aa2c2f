"""The training loop SFT, the reward model and DPO share, and its parts.

- deterministic, resumable batch order sharded over ``accelerate`` processes;
- AdamW (fused kernel) and the linear warm-up/decay schedule;
- randomness from the run's own streams: batch order from seeded ``torch.Generator``s,
  dropout from a :class:`~prefrl.utils.rng.PrivateTorchRNG` swapped in around each step,
  so the global torch RNG is never seeded or saved;
- checkpoint state (optimizer, scheduler, step, private RNG) next to an HF model;
- one :class:`~prefrl.utils.metrics.MetricsSink` for the progress bar, TensorBoard and JSONL.

:func:`run_training` reads top to bottom: build → resume → batches → loss → update → log →
checkpoint.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from prefrl.lm.launch import make_accelerator
from prefrl.lm.train_config import TrainArgs, config_to_dict
from prefrl.utils.files import atomic_write
from prefrl.utils.metrics import MetricsSink, mean_metrics
from prefrl.utils.rng import PrivateTorchRNG

__all__ = [
    "steps_per_epoch",
    "batch_indices",
    "save_training_state",
    "load_training_state",
    "TRAINING_STATE_FILE",
    "unwrap",
    "linear_schedule",
    "make_adamw",
    "release_free_memory",
    "run_training",
    "LossFn",
    "SaveFn",
    "StopFn",
]

TRAINING_STATE_FILE = "training_state.pt"


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


# ---------------------------------------------------------------- checkpoint state


def save_training_state(
    directory: str | Path,
    step: int,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    extra: Mapping[str, Any] | None = None,
    rng: PrivateTorchRNG | None = None,
) -> Path:
    """Write ``training_state.pt`` (step, optimizer, scheduler, private RNG, ``extra``) next to a model.

    Written atomically (:func:`prefrl.utils.files.atomic_write`), so an interrupted save leaves
    the previous state intact. The global torch RNG is neither read nor saved.
    """
    state = {
        "step": int(step),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "rng": None if rng is None else rng.state_dict(),
        "extra": dict(extra or {}),
    }
    path = Path(directory) / TRAINING_STATE_FILE
    atomic_write(path, lambda tmp: torch.save(state, tmp))
    return path


def load_training_state(
    directory: str | Path,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    rng: PrivateTorchRNG | None = None,
) -> dict[str, Any]:
    """Load :func:`save_training_state`'s file into ``optimizer``/``scheduler``/``rng``; returns the dict."""
    path = Path(directory) / TRAINING_STATE_FILE
    if not path.exists():
        raise FileNotFoundError(f"cannot resume: {path} does not exist")
    state = torch.load(path, map_location="cpu", weights_only=False)
    if optimizer is not None and state.get("optimizer") is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    saved_rng = state.get("rng")
    if rng is not None and isinstance(saved_rng, dict) and "cpu" in saved_rng:
        rng.load_state_dict(saved_rng)
    return state


def unwrap(model: Any) -> Any:
    """The module inside DDP / ``accelerate`` wrappers."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    return model


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
#: ``save_fn(model, directory, final)``: write the unwrapped model; ``final`` marks the end-of-run save.
SaveFn = Callable[[Any, Path, bool], None]
#: ``stop(row) -> bool``: called with each logged row; True ends the run after that step.
StopFn = Callable[[dict[str, float]], bool]


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
    stop: StopFn | None = None,
) -> dict[str, Any]:
    """The loop shared by SFT, RM and DPO: build → resume → batches → loss → update → log → checkpoint.

    ``loss_fn(model, batch_indices, device) -> (loss, metrics)`` computes one batch (this
    process's shard); ``save_fn(model, directory, final)`` writes the unwrapped model in HF
    format (``final`` is True only for the end-of-run save into ``cfg.output_dir``). Dropout
    draws from the run's own RNG stream, seeded with ``cfg.seed`` + process index. With
    ``cfg.resume`` the optimizer, scheduler, step counter and that stream are restored from
    the checkpoint and the batch order continues where it stopped (the caller has already
    loaded the model weights from it). ``stop(row)`` (optional) sees every logged row (every
    ``cfg.log_every`` steps) and
    ends the run early by returning True; the final checkpoint is written either way.

    Returns ``{"step", "history", "output_dir"}``.
    """
    acc = accelerator if accelerator is not None else make_accelerator()
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
    dropout_rng = PrivateTorchRNG(cfg.seed + acc.process_index, acc.device)
    start = 0
    if cfg.resume is not None:
        state = load_training_state(cfg.resume, optimizer, scheduler, dropout_rng)
        start = int(state["step"])
    model, optimizer = acc.prepare(model, optimizer)
    batches = batch_indices(n_examples, cfg.batch_size, cfg.seed, start, acc.process_index, acc.num_processes)
    sink = MetricsSink(
        out / "runs", out / "metrics.jsonl", total=total, desc=desc, initial=start, enabled=acc.is_main_process
    )

    def checkpoint(directory: Path, step: int, final: bool) -> None:
        acc.wait_for_everyone()
        if acc.is_main_process:
            directory.mkdir(parents=True, exist_ok=True)
            save_fn(acc.unwrap_model(model), directory, final)
            save_training_state(directory, step, optimizer, scheduler, {"config": config_to_dict(cfg)}, dropout_rng)
            atomic_write(directory / "prefrl_config.json", json.dumps(config_to_dict(cfg), indent=2))
        acc.wait_for_everyone()

    step = start
    t0 = time.perf_counter()
    window: list[dict[str, float]] = []
    shard_rows: list[list[int]] = []  # the example indices this process trained on, per step
    for step in range(start + 1, total + 1):
        model.train()
        # free last step's gradients before the forward, not after it: otherwise they are
        # alive next to the activations and the peak memory grows by their size
        optimizer.zero_grad(set_to_none=True)
        release_free_memory()  # the freed gradients' pages, before the activations fill their holes
        rows = next(batches)
        shard_rows.append(rows)
        with dropout_rng.active():
            loss, metrics = loss_fn(model, rows, acc.device)
            acc.backward(loss)
        if cfg.max_grad_norm > 0:
            metrics["charts/grad_norm"] = float(acc.clip_grad_norm_(model.parameters(), cfg.max_grad_norm))
        optimizer.step()
        scheduler.step()
        release_free_memory()
        metrics["charts/learning_rate"] = scheduler.get_last_lr()[0]
        window.append(metrics)
        stopping = False
        if step % cfg.log_every == 0 or step == total:
            row = mean_metrics(window)
            if acc.num_processes > 1:
                keys = sorted(row)
                vals = acc.reduce(torch.tensor([row[k] for k in keys], device=acc.device), "mean")
                row = dict(zip(keys, vals.tolist()))
            row["charts/sps"] = len(window) / max(time.perf_counter() - t0, 1e-9)
            row = sink.log(row, step, advance=len(window))
            window, t0 = [], time.perf_counter()
            stopping = stop is not None and bool(stop(row))
        if stopping:
            break
        if cfg.save_every and step % cfg.save_every == 0 and step < total:
            checkpoint(out / f"checkpoint-{step}", step, final=False)
    sink.close()
    checkpoint(out, step, final=True)
    result = {"step": step, "history": sink.history, "output_dir": out, "num_processes": acc.num_processes}
    if acc.num_processes > 1:  # evidence that the processes formed one run: shards and synchronised weights
        from accelerate.utils import gather_object

        checksum = float(sum(p.detach().double().sum() for p in acc.unwrap_model(model).parameters()))
        per_rank = gather_object([(checksum, shard_rows)])
        result["rank_param_checksums"] = [c for c, _ in per_rank]
        result["rank_rows"] = [r for _, r in per_rank]
    return result

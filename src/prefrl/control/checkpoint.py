"""Atomic checkpoints of a control run, and the RNG states that make a resume continue.

A checkpoint is one ``torch.save`` file written to a temporary name in the same directory,
flushed and fsync'ed, then moved over the old one with ``os.replace`` — so a run killed
mid-write (SIGKILL, power loss) leaves either the old or the new checkpoint, never half
of one. Comparisons are not in the checkpoint: they live in the run's store.
"""

from __future__ import annotations

import os
import pickle
import random
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_NAME = "checkpoint.pt"
#: Bumped when the layout of the checkpoint dict changes.
CHECKPOINT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable or not a prefrl control checkpoint."""


def checkpoint_path(run_dir: str | os.PathLike[str]) -> Path:
    return Path(run_dir) / CHECKPOINT_NAME


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (tmp file in the same dir → fsync → os.replace)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def save_checkpoint(run_dir: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Save ``state`` (plus the version tag) atomically as ``RUN_DIR/checkpoint.pt``."""
    import io

    buffer = io.BytesIO()
    torch.save({"version": CHECKPOINT_VERSION, **state}, buffer)
    path = checkpoint_path(run_dir)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def load_checkpoint(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Load ``RUN_DIR/checkpoint.pt``; raise ``CheckpointError`` naming the problem (never a traceback soup)."""
    path = checkpoint_path(run_dir)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        # Our own file: it holds numpy RNG states and Segments, so weights_only=False.
        state = torch.load(path, map_location="cpu", weights_only=False)
    except (pickle.UnpicklingError, EOFError, RuntimeError, zipfile.BadZipFile, OSError, ValueError, AttributeError) as e:
        raise CheckpointError(f"checkpoint {path} is corrupted or unreadable: {type(e).__name__}: {e}") from e
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"checkpoint {path} is not a prefrl control checkpoint (version {CHECKPOINT_VERSION})")
    return state


def rng_states(rng: np.random.Generator) -> dict[str, Any]:
    """The loop's numpy Generator plus the global RNGs an entry point seeded."""
    return {
        "numpy_generator": rng.bit_generator.state,
        "numpy_global": np.random.get_state(),
        "python": random.getstate(),
        "torch": torch.get_rng_state(),
    }


def restore_rng_states(rng: np.random.Generator, states: dict[str, Any]) -> None:
    rng.bit_generator.state = states["numpy_generator"]
    np.random.set_state(states["numpy_global"])
    random.setstate(states["python"])
    torch.set_rng_state(states["torch"])

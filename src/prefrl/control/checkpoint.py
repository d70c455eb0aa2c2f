"""Atomic checkpoints of a control run, and the RNG states that make a resume continue.

A checkpoint is one ``torch.save`` file written with :func:`prefrl.utils.files.atomic_write`
(temporary name in the same directory, fsync, ``os.replace``) — so a run killed mid-write
(SIGKILL, power loss) leaves either the old or the new checkpoint, never half of one.
Comparisons are not in the checkpoint: they live in the run's store. The file is zlib-compressed
(level 1): an Atari run's pool of frame stacks shrinks ≈ 20-fold (docs/benchmarks_control.md);
plain ``torch.save`` files of older runs still load.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prefrl.utils.files import atomic_write

CHECKPOINT_NAME = "checkpoint.pt"
#: Bumped when the layout of the checkpoint dict changes.
CHECKPOINT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable or not a prefrl control checkpoint."""


def checkpoint_path(run_dir: str | os.PathLike[str]) -> Path:
    return Path(run_dir) / CHECKPOINT_NAME


def save_checkpoint(run_dir: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Save ``state`` (plus the version tag), zlib-compressed, atomically as ``RUN_DIR/checkpoint.pt``."""
    buffer = io.BytesIO()
    torch.save({"version": CHECKPOINT_VERSION, **state}, buffer)
    path = checkpoint_path(run_dir)
    atomic_write(path, zlib.compress(buffer.getbuffer(), 1))
    return path


def load_checkpoint(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Load ``RUN_DIR/checkpoint.pt``; raise ``CheckpointError`` naming the problem (never a traceback soup)."""
    path = checkpoint_path(run_dir)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        # Our own file: it holds numpy RNG states and Segments, so weights_only=False.
        raw = path.read_bytes()
        if not raw.startswith(b"PK"):  # torch.save's zip archive: a checkpoint of before the compression
            raw = zlib.decompress(raw)
        state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=False)
    except (pickle.UnpicklingError, EOFError, RuntimeError, zipfile.BadZipFile, OSError, ValueError, AttributeError,
            zlib.error) as e:  # fmt: skip
        raise CheckpointError(f"checkpoint {path} is corrupted or unreadable: {type(e).__name__}: {e}") from e
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"checkpoint {path} is not a prefrl control checkpoint (version {CHECKPOINT_VERSION})")
    return state


def rng_states(rng: np.random.Generator) -> dict[str, Any]:
    """The loop's own numpy Generator (the library never draws from, seeds or saves a global RNG)."""
    return {"numpy_generator": rng.bit_generator.state}


def restore_rng_states(rng: np.random.Generator, states: dict[str, Any]) -> None:
    """Restore :func:`rng_states`; the global states older checkpoints also saved are ignored."""
    rng.bit_generator.state = states["numpy_generator"]

"""Randomness without the global RNG: library code draws from generators it owns.

Users' code and tests around prefrl must stay reproducible, so the library never seeds,
saves or restores torch's *global* RNG. Two helpers cover the places where a third-party
routine can only draw from the global one:

- :func:`seeded_global_rng`: a block in which the global RNG is seeded (e.g. a Hugging Face
  model's or a LoRA adapter's initialisation) and afterwards put back as it was;
- :class:`PrivateTorchRNG`: a stream of our own for code that draws from the global RNG on
  every call (dropout in a training step); it is swapped in around each use and its state
  is saved in checkpoints, so a resumed run is bit-exact.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

__all__ = ["seeded_global_rng", "PrivateTorchRNG"]


def _cuda_devices(device: torch.device | str | None) -> list[int]:
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type != "cuda" or not torch.cuda.is_available():
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


@contextlib.contextmanager
def seeded_global_rng(seed: int, device: torch.device | str | None = None) -> Iterator[None]:
    """Run the block with the global torch RNG seeded to ``seed``; restore it afterwards."""
    with torch.random.fork_rng(devices=_cuda_devices(device)):
        torch.manual_seed(seed)
        yield


class PrivateTorchRNG:
    """A torch RNG stream (CPU, plus one CUDA device) that is active only inside :meth:`active`.

    Args:
        seed: seeds the stream.
        device: the device whose CUDA stream is also kept (CPU: none).
    """

    def __init__(self, seed: int, device: torch.device | str | None = None) -> None:
        self._devices = _cuda_devices(device)
        with torch.random.fork_rng(devices=self._devices):
            torch.manual_seed(seed)
            self._state = self._capture()

    def _capture(self) -> dict[str, Any]:
        state: dict[str, Any] = {"cpu": torch.get_rng_state()}
        if self._devices:
            state["cuda"] = torch.cuda.get_rng_state(self._devices[0])
        return state

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Draws from the global RNG inside the block come from this stream; the global state is untouched."""
        with torch.random.fork_rng(devices=self._devices):
            torch.set_rng_state(self._state["cpu"])
            if self._devices and "cuda" in self._state:
                torch.cuda.set_rng_state(self._state["cuda"], self._devices[0])
            try:
                yield
            finally:
                self._state = self._capture()

    def state_dict(self) -> dict[str, Any]:
        return {k: v.clone() for k, v in self._state.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._state = {k: v.clone() for k, v in state.items()}

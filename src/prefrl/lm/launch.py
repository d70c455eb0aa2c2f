"""Multi-process launches: which ones form one run, and a clear refusal of those that do not.

SFT, the reward model and DPO run data-parallel under ``accelerate launch`` (#12 item 2)::

    accelerate launch --multi_gpu --num_processes 2 -m prefrl lm dpo …

On a machine without CUDA the processes join one CPU run over gloo (accelerate otherwise needs
``ACCELERATE_USE_CPU=1`` for that). A launch that would silently not be one run is refused in
one line: processes that each see ``num_processes=1`` (unsynchronised copies writing the same
output), or accelerate's simple launcher, which starts a single process whatever
``--num_processes`` says (``--cpu``, or no ``--multi_gpu``). PPO, generate, evaluate,
best-of-n and pairs run in one process and refuse a multi-process launch. Torch-free at import.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["LaunchError", "check_launch", "require_single_process", "make_accelerator", "MULTI_PROCESS_HOWTO"]


class LaunchError(ValueError):
    """A multi-process launch whose processes would not form one run (#12 item 2)."""


MULTI_PROCESS_HOWTO = "accelerate launch --multi_gpu --num_processes N -m prefrl lm …  (on a CPU too: prefrl then uses gloo)"


def _single_process_launch_of_many() -> bool:
    """accelerate's simple launcher asked for several processes (it sets MASTER_PORT) but ran one."""
    return (
        "ACCELERATE_USE_CPU" in os.environ
        and "MASTER_PORT" in os.environ
        and "WORLD_SIZE" not in os.environ
        and "LOCAL_RANK" not in os.environ
    )


def check_launch(num_processes: int) -> None:
    """Refuse a launch whose world size is not what accelerate was asked for, in one line.

    ``num_processes`` is what the :class:`accelerate.Accelerator` of this process sees.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world != num_processes:
        raise LaunchError(
            f"accelerate started {world} processes but each runs alone (num_processes={num_processes}): "
            f"they would train unsynchronised copies. Launch with: {MULTI_PROCESS_HOWTO}"
        )
    if world == 1 and _single_process_launch_of_many():
        raise LaunchError(
            "accelerate launch was asked for several processes but started one (--cpu, or no --multi_gpu, "
            f"runs a single process). Launch with: {MULTI_PROCESS_HOWTO}"
        )


def require_single_process(command: str) -> None:
    """Refuse to run ``command`` (which has no data-parallel mode) under a multi-process launch."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 or _single_process_launch_of_many():
        raise LaunchError(f"{command} runs in one process; start it without accelerate launch")


def make_accelerator() -> Any:
    """The :class:`accelerate.Accelerator` of this launch, checked with :func:`check_launch`.

    Under a multi-process launch on a machine without CUDA the processes join one CPU run
    (gloo), which accelerate otherwise does only with ``ACCELERATE_USE_CPU=1``.
    """
    import torch
    from accelerate import Accelerator

    world = int(os.environ.get("WORLD_SIZE", "1"))
    acc = Accelerator(cpu=world > 1 and not torch.cuda.is_available())
    check_launch(acc.num_processes)
    return acc

"""Config dataclass helpers shared by every family (torch-free).

A field documented with :func:`doc` carries its help text in ``metadata["help"]``; the CLI
(:func:`prefrl.cli.options.command_from_config`) turns each field into an option with that help,
its default, and — for ``Literal`` types from :mod:`prefrl.names` — its choices. So a knob's
default and help live in one place: the field.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

__all__ = ["doc"]


def doc(text: str, **kwargs: Any) -> Any:
    """A dataclass field whose help text (``metadata["help"]``) becomes the CLI's ``--help``.

    ``aliases`` (a tuple of old option spellings, e.g. ``("--ppo-epochs",)``) keeps deprecated
    names working on the CLI for one release.
    """
    metadata = {"help": text}
    if "aliases" in kwargs:
        metadata["aliases"] = tuple(kwargs.pop("aliases"))
    return field(metadata=metadata, **kwargs)

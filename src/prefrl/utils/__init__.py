"""prefrl.utils — the plumbing every layer shares, imported from its submodules.

- :mod:`prefrl.utils.files`: :func:`~prefrl.utils.files.atomic_write` (the one atomic writer).
- :mod:`prefrl.utils.metrics`: :class:`~prefrl.utils.metrics.MetricsSink` (the one metrics sink:
  TensorBoard + JSONL + progress bar, one NaN policy).

This package sits at the bottom of the layers with :mod:`prefrl.losses`: it imports nothing of ours.
"""

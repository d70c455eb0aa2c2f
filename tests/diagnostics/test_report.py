"""Plot and table helpers of prefrl.diagnostics.report."""

from __future__ import annotations

import math

import numpy as np
import pytest

from prefrl.diagnostics.report import format_value, markdown_table, plot_kl_profiles, plot_metric_curves


def _is_png(path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_kl_profiles_writes_a_png(tmp_path):
    path = plot_kl_profiles({"a": [1.0, 0.2, 0.1], "b": np.array([0.3, 0.3])}, tmp_path / "sub" / "p.png", max_positions=2)
    assert path.exists() and _is_png(path)


def test_plot_kl_profiles_refuses_bad_input(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        plot_kl_profiles({}, tmp_path / "p.png")
    with pytest.raises(ValueError, match="1-D"):
        plot_kl_profiles({"a": np.zeros((2, 2))}, tmp_path / "p.png")


def test_plot_metric_curves_skips_missing_and_nan(tmp_path):
    hist = {
        "run1": [{"step": 1, "x": 0.1, "y": 1.0}, {"step": 2, "x": math.nan}, {"step": 3, "x": 0.3, "y": None}],
        "run2": [{"step": 1, "x": 0.2}],
    }
    path = plot_metric_curves(hist, ["x", "y", "z"], tmp_path / "c.png", title="t")
    assert _is_png(path)
    with pytest.raises(ValueError, match="keys"):
        plot_metric_curves(hist, [], tmp_path / "c.png")
    with pytest.raises(ValueError, match="histories"):
        plot_metric_curves({}, ["x"], tmp_path / "c.png")


def test_format_value():
    assert format_value(None) == "–"
    assert format_value(float("nan")) == "–"
    assert format_value(0.123456) == "0.123"
    assert format_value(12345.6, digits=2) == "1.2e+04"
    assert format_value(3) == "3"
    assert format_value(np.int64(4)) == "4"
    assert format_value(True) == "True"
    assert format_value("base") == "base"


def test_markdown_table():
    rows = [{"run": "a", "r": 0.5, "kl": 1.23456}, {"run": "b", "r": None}]
    table = markdown_table(rows, ["run", "r", "kl"], headers=["run", "reward", "KL"])
    lines = table.strip().splitlines()
    assert lines[0] == "| run | reward | KL |"
    assert lines[1] == "|---|---|---|"
    assert lines[2] == "| a | 0.5 | 1.23 |"
    assert lines[3] == "| b | – | – |"
    with pytest.raises(ValueError, match="headers"):
        markdown_table(rows, ["run"], headers=["a", "b"])
    with pytest.raises(ValueError, match="columns"):
        markdown_table(rows, [])

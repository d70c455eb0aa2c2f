"""Gold vs proxy: best-of-n curves, Gao et al. fits, the divergence monitor, ensemble aggregation."""

import math

import numpy as np
import pytest
import torch

from prefrl.diagnostics.overoptimisation import (
    GoldProxyMonitor,
    best_of_n_values,
    bon_kl,
    fit_gao,
    plot_gold_vs_proxy,
)
from prefrl.reward.uncertainty import aggregate_members, disagreement


def test_bon_kl_values():
    assert bon_kl(1) == 0.0
    assert bon_kl(2) == pytest.approx(math.log(2) - 0.5)
    np.testing.assert_allclose(bon_kl(np.array([4, 16])), [math.log(4) - 0.75, math.log(16) - 15 / 16])
    with pytest.raises(ValueError):
        bon_kl(0)


def test_best_of_n_values_is_exact_against_brute_force():
    rng = np.random.default_rng(0)
    proxy, gold = rng.normal(size=(3, 6)), rng.normal(size=(3, 6))
    from itertools import combinations

    for n in (1, 2, 4, 6):
        brute = np.mean(
            [np.mean([g[list(c)][np.argmax(p[list(c)])] for c in combinations(range(6), n)]) for p, g in zip(proxy, gold)]
        )
        assert best_of_n_values(proxy, gold, [n])[0] == pytest.approx(brute)


def _toy_bon(rng):
    """Samples with a true quality u and an exploitable feature v the proxy over-rewards."""
    u, v = rng.normal(size=(2, 400, 256))
    proxy = u + v
    gold = u + v - 0.8 * v**2  # the proxy is right for small v, wrong for large v
    return proxy, gold


def test_fitted_best_of_n_peak_matches_measured_peak():
    proxy, gold = _toy_bon(np.random.default_rng(0))
    ns = np.array([1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256])
    gold_n = best_of_n_values(proxy, gold, ns)
    proxy_n = best_of_n_values(proxy, proxy, ns)
    d = np.sqrt(bon_kl(ns))
    fit = fit_gao(d, gold_n, "bon")
    measured = int(np.argmax(gold_n))
    assert 0 < measured < len(ns) - 1  # the toy really overoptimises: gold rises, then falls
    assert np.all(np.diff(proxy_n) > 0)  # while the proxy keeps rising
    fitted = int(np.argmin(np.abs(d - fit.peak)))
    assert abs(fitted - measured) <= 1, (ns[fitted], ns[measured])


def test_rl_form_fits_its_own_curve():
    d = np.linspace(0.1, 5, 30)
    gold = d * (1.2 - 0.6 * np.log(d))
    fit = fit_gao(d, gold, "rl", gold_at_zero=0.0)
    assert fit.alpha == pytest.approx(1.2) and fit.beta == pytest.approx(0.6)
    assert fit.peak == pytest.approx(math.exp(1.2 / 0.6 - 1))


def test_monitor_warns_when_proxy_rises_and_gold_falls():
    mon = GoldProxyMonitor(window=5)
    for t in range(5):
        assert not mon.record(t, proxy=t, gold=t)
    with pytest.warns(RuntimeWarning, match="overoptimisation"):
        for t in range(5, 12):
            mon.record(t, proxy=t, gold=10 - t)
    assert mon.diverging()
    assert mon.metrics()["objective/gold_proxy_diverging"] == 1.0


def test_monitor_does_not_flag_noise():
    """Batch means that only wander: a slope's sign alone (the old rule) flagged about a quarter of the steps."""
    rng = np.random.default_rng(0)
    mon = GoldProxyMonitor(window=10)
    flags = sign_rule = 0
    for t in range(300):
        flags += mon.record(t, proxy=rng.normal(0, 0.3), gold=rng.normal(0, 0.1))
        if t >= 9:
            x = np.arange(10)
            sign_rule += np.polyfit(x, mon.proxy[-10:], 1)[0] > 0 and np.polyfit(x, mon.gold[-10:], 1)[0] < 0
    assert sign_rule > 50  # the old rule on the same series
    assert flags <= 10


def _run(mon: GoldProxyMonitor, gold_gain_per_proxy: float, steps: int = 30, seed: int = 0) -> list[dict]:
    """A policy whose proxy rises by 0.05 a step; at the start gold = 0.5·proxy + noise per sample,
    later the gold gains ``gold_gain_per_proxy`` per unit of proxy gained."""
    rng = np.random.default_rng(seed)
    out = []
    for t in range(steps):
        shift = 0.05 * t
        base = rng.normal(0, 1, size=64)
        proxy = base + shift
        gold = 0.5 * base + gold_gain_per_proxy * shift + rng.normal(0, 0.2, size=64)
        mon.record(t, proxy=proxy.mean(), gold=gold.mean(), proxy_samples=proxy, gold_samples=gold)
        out.append(mon.metrics())
    return out


def test_gold_transfer_reads_how_much_of_the_proxy_gain_is_real():
    honest = _run(GoldProxyMonitor(window=10), gold_gain_per_proxy=0.5)[-1]  # what the start's relation predicts
    assert honest["objective/gold_proxy_corr0"] == pytest.approx(0.93, abs=0.03)
    assert honest["objective/gold_transfer"] == pytest.approx(1.0, abs=0.25)
    assert honest["objective/gold_proxy_diverging"] == 0.0
    assert not any(m["objective/gold_proxy_diverging"] for m in _run(GoldProxyMonitor(window=10), 0.5))
    with pytest.warns(RuntimeWarning, match="of the gold its gain predicts reached the gold"):
        flat = _run(GoldProxyMonitor(window=10), gold_gain_per_proxy=0.0)  # the proxy rises, the gold does not
    assert abs(flat[-1]["objective/gold_transfer"]) < 0.25
    assert all(m["objective/gold_proxy_diverging"] for m in flat[20:])  # on from the first defined transfer
    with pytest.warns(RuntimeWarning, match="gold reward falls"):  # a sharp fall shows in the window first
        falling = _run(GoldProxyMonitor(window=10), gold_gain_per_proxy=-0.3)
    assert falling[-1]["objective/gold_transfer"] < 0
    assert falling[-1]["objective/gold_proxy_diverging"] == 1.0
    # undefined until there are two windows, so left out of the metrics
    assert "objective/gold_transfer" not in _run(GoldProxyMonitor(window=10), 0.5, steps=15)[-1]


def test_monitor_state_round_trips():
    mon = GoldProxyMonitor(window=10)
    with pytest.warns(RuntimeWarning, match="overoptimisation"):
        _run(mon, gold_gain_per_proxy=0.0, steps=25)
    again = GoldProxyMonitor(window=10)
    again.load_state_dict(mon.state_dict())
    assert again.metrics() == mon.metrics() and len(again.start_proxy) == 640
    with pytest.raises(ValueError, match="3 proxy samples but 2 gold"):
        GoldProxyMonitor().record(0, 0.0, 0.0, proxy_samples=[1, 2, 3], gold_samples=[1, 2])


def test_worst_case_aggregation_lowers_the_gold_proxy_gap():
    """Members = gold + errors where each member occasionally hugely over-rates a sample."""
    rng = np.random.default_rng(1)
    prompts, n, members = 300, 64, 4
    gold = rng.normal(size=(prompts, n))
    spikes = (rng.random(size=(members, prompts, n)) < 0.03) * rng.exponential(4.0, size=(members, prompts, n))
    scores = torch.tensor(gold[None] + 0.3 * rng.normal(size=(members, prompts, n)) + spikes)
    mean_proxy = aggregate_members(scores, "mean").numpy()
    gaps = {}
    golds = {}
    for how in ("mean", "min", "mean_minus_std"):
        objective = aggregate_members(scores, how, lam=1.0).numpy()
        golds[how] = best_of_n_values(objective, gold, [n])[0]
        gaps[how] = best_of_n_values(objective, mean_proxy, [n])[0] - golds[how]
    assert gaps["min"] < gaps["mean"] and gaps["mean_minus_std"] < gaps["mean"]
    assert golds["min"] > golds["mean"]
    assert disagreement(scores).shape == (prompts, n)
    with pytest.raises(ValueError, match="unknown aggregation"):
        aggregate_members(scores, "median")


def test_plot_writes_png(tmp_path):
    d = np.array([0.0, 0.5, 1.0, 1.5])
    path = plot_gold_vs_proxy({"bon": (d, d - d**2, d)}, tmp_path / "p.png", fits={"bon": fit_gao(d, d - d**2)})
    assert path.stat().st_size > 1000

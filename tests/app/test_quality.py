"""Labeller quality for the admin (issue #14 item 6): agreement of each labeller with the consensus
and with the oracle, time per label, a flag for one who looks random, and `prefrl label exclude`
that keeps a labeller's answers but leaves them out of reward training."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from labelapp_helpers import login, make_segment
from test_auth_stats import comp
from typer.testing import CliRunner

from prefrl.app.stats import Agreement, chance_probability, consensus_agreement, looks_random
from prefrl.cli import app as cli_app
from prefrl.data.types import Comparison


def test_consensus_agreement_by_hand():
    cs = [
        comp(1, 2, 1.0, "a"), comp(2, 1, 0.0, "b"), comp(1, 2, 0.0, "c"),  # a, b say left; c says right
        comp(3, 4, 1.0, "a"), comp(3, 4, 0.0, "b"),                         # a vs b: each has a 1-vote "majority"
        comp(5, 6, 1.0, "a"), comp(5, 6, 1.0, "b"), comp(5, 6, None, "c"),  # c can't tell: not counted for c
        comp(7, 8, 1.0, "a"), comp(7, 8, 1.0, "b"), comp(7, 8, 0.0, "c"), comp(7, 8, 0.0, "d"),  # tie for each
        comp(9, 10, 1.0, "a"),                                              # nobody else: not counted
    ]
    got = {name: (a.agree, a.total) for name, a in consensus_agreement(cs).items()}
    # item (1,2): a vs {b:1, c:0} tie → skip; b vs {a:1, c:0} tie → skip; c vs {a:1, b:1} → 1 ≠ 0
    # item (3,4): a vs {b:0} → disagree; b vs {a:1} → disagree
    # item (5,6): a vs {b:1} agree; b vs {a:1} agree
    # item (7,8): a vs {b:1, c:0, d:0} → 0: disagree; b likewise; c vs {a:1, b:1, d:0} → 1: disagree; d likewise
    assert got == {"a": (1, 3), "b": (1, 3), "c": (0, 2), "d": (0, 1)}


def test_chance_probability_and_looks_random_by_hand():
    assert chance_probability(Agreement(3, 3)) == pytest.approx(1 / 8)
    assert chance_probability(Agreement(2, 3)) == pytest.approx(4 / 8)  # P(X ≥ 2) = (3 + 1) / 8
    assert chance_probability(Agreement(0, 4)) == 1.0
    assert looks_random(Agreement(10, 20)) and looks_random(Agreement(13, 20))  # P(X≥13) ≈ 0.13
    assert not looks_random(Agreement(15, 20))  # P(X ≥ 15) ≈ 0.021
    assert not looks_random(Agreement(4, 9))  # too few answers to tell


T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.fixture
def labelled(store):
    """20 segment pairs with true returns; two careful labellers and one who agrees on exactly half."""
    for name in ("ann", "bob", "rando"):
        store.add_labeller(name)
    comparisons = []
    for i in range(20):
        left, right = store.add_segments([make_segment(float(i % 3 + 1)), make_segment(float(i % 3 + 1) - 5)])
        for j, name in enumerate(("ann", "bob", "rando")):
            mu = 1.0 if name != "rando" or i % 2 == 0 else 0.0  # left is better; rando is right half the time
            comparisons.append(Comparison(mu=mu, teacher="human", left_id=left, right_id=right, labeller=name,
                                          created_at=T0 + timedelta(seconds=4 * i + j)))
    store.add_comparisons(comparisons)
    return store


def test_admin_sees_agreement_time_and_the_random_looking_labeller(make_app, labelled):
    app = make_app()
    admin = login(app, labelled, "root", role="admin")
    s = admin.client.get("/api/admin/stats").json()
    by = {lab["name"]: lab for lab in s["labellers"]}
    # where rando says "right", ann's others (bob, rando) tie: those 10 items are not counted for ann
    assert by["ann"]["consensus_agreement"] == {"rate": 1.0, "answers": 10}
    assert by["ann"]["oracle_agreement"] == {"rate": 1.0, "answers": 20}
    assert by["rando"]["oracle_agreement"] == {"rate": 0.5, "answers": 20}
    assert by["rando"]["consensus_agreement"] == {"rate": 0.5, "answers": 20}
    assert by["rando"]["looks_random"] and not by["ann"]["looks_random"] and not by["bob"]["looks_random"]
    assert by["ann"]["seconds_per_label"] == 4.0 and not by["rando"]["excluded"]
    page = admin.client.get("/admin")
    assert page.status_code == 200 and "looks random" in page.text


def test_exclude_keeps_answers_but_leaves_them_out_of_training(make_app, labelled):
    store = labelled
    assert len(store.training_pairs()) == 60
    r = CliRunner().invoke(cli_app, ["label", "exclude", "rando", "--store", store.url])
    assert r.exit_code == 0 and "20 answers kept" in r.output
    assert store.count_comparisons() == 60 and len(store.comparisons(labeller="rando")) == 20  # kept
    assert len(store.training_pairs()) == 40 and all(mu == 1.0 for _, _, mu in store.training_pairs())
    admin = login(make_app(), store, "root", role="admin")
    by = {lab["name"]: lab for lab in admin.client.get("/api/admin/stats").json()["labellers"]}
    assert by["rando"]["excluded"] and by["rando"]["answers"] == 20
    assert CliRunner().invoke(cli_app, ["label", "include", "rando", "--store", store.url]).exit_code == 0
    assert len(store.training_pairs()) == 60
    bad = CliRunner().invoke(cli_app, ["label", "exclude", "nobody", "--store", store.url])
    assert bad.exit_code == 2 and "nobody" in bad.output
    assert CliRunner().invoke(cli_app, ["label", "include", "ann", "--store", store.url]).exit_code == 2

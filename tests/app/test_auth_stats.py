"""Session signing, CSRF tokens, and the admin agreement statistics (hand-computed cases)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from prefrl.app.auth import SessionSigner
from prefrl.app.stats import (
    inter_labeller_agreement,
    item_key,
    oracle_agreement,
    rational_mu,
    seconds_per_label,
)
from prefrl.data.types import Comparison


def test_sessions_roundtrip_and_tampering_fails():
    signer = SessionSigner(b"k" * 32, max_age_seconds=100)
    cookie, session = signer.issue("ann", "admin", now=1000.0)
    back = signer.verify(cookie, now=1050.0)
    assert back == session and back.is_admin and back.csrf_token == session.csrf_token
    assert signer.verify(cookie, now=1101.0) is None  # expired
    body, sig = cookie.split(".")
    assert signer.verify(body + "." + sig[:-1] + ("A" if sig[-1] != "A" else "B"), now=1050.0) is None
    import base64
    import json
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload["r"] = "admin"
    payload["l"] = "mallory"
    forged = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode() + "." + sig
    assert signer.verify(forged, now=1050.0) is None
    assert SessionSigner(b"j" * 32).verify(cookie, now=1050.0) is None  # another key
    for junk in (None, "", "a.b.c", "....", "x" * 5000):
        assert signer.verify(junk) is None
    assert signer.check_csrf(session, session.csrf_token)
    assert not signer.check_csrf(session, None) and not signer.check_csrf(session, "nope")
    _, other = signer.issue("ann", "admin", now=1000.0)
    assert other.csrf_token != session.csrf_token  # one CSRF token per session
    with pytest.raises(ValueError, match="secret"):
        SessionSigner(b"short")
    with pytest.raises(ValueError, match="role"):
        signer.issue("ann", "root")


T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def comp(left, right, mu, labeller, t=0.0, text=None, cid=None):
    if text is not None:
        return Comparison(mu=mu, teacher="human", text_pair_id=text, labeller=labeller,
                          created_at=T0 + timedelta(seconds=t), id=cid)
    return Comparison(mu=mu, teacher="human", left_id=left, right_id=right, labeller=labeller,
                      created_at=T0 + timedelta(seconds=t), id=cid)


def test_item_key_flips_mu_of_reversed_pairs():
    assert item_key(comp(3, 7, 1.0, "a")) == (("seg", 3, 7), 1.0)
    assert item_key(comp(7, 3, 1.0, "a")) == (("seg", 3, 7), 0.0)
    assert item_key(comp(7, 3, None, "a")) == (("seg", 3, 7), None)
    assert item_key(comp(None, None, 0.5, "a", text=4)) == (("text", 4), 0.5)


def test_inter_labeller_agreement_by_hand():
    cs = [
        comp(1, 2, 1.0, "a"), comp(2, 1, 0.0, "b"), comp(1, 2, 0.5, "c"),  # a=b agree, c differs: 1 of 3
        comp(3, 4, 0.0, "a"), comp(4, 3, 1.0, "b"),                         # agree: 1 of 1
        comp(5, 6, 1.0, "a"),                                               # single: not counted
        comp(None, None, 1.0, "a", text=9), comp(None, None, 0.0, "b", text=9),  # disagree: 0 of 1
        comp(7, 8, 1.0, None),                                              # synthetic: ignored
    ]
    agreement, repeated = inter_labeller_agreement(cs)
    assert repeated == 3 and (agreement.agree, agreement.total) == (2, 5) and agreement.rate == 0.4
    assert inter_labeller_agreement([])[0].rate is None


def test_oracle_agreement_and_rational_answer():
    returns = {1: 5.0, 2: 1.0, 3: 2.0, 4: 2.0, 5: None}
    cs = [comp(1, 2, 1.0, "a"), comp(2, 1, 1.0, "a"), comp(3, 4, 0.5, "a"), comp(1, 5, 1.0, "a"),
          comp(1, 2, None, "a")]
    agreement = oracle_agreement(cs, returns.get)
    assert (agreement.agree, agreement.total) == (2, 3)
    assert [rational_mu(1, 0), rational_mu(0, 1), rational_mu(2, 2)] == [1.0, 0.0, 0.5]


def test_seconds_per_label_median_and_breaks():
    cs = [comp(1, 2, 1.0, "a", t) for t in (0, 4, 10, 1000, 1003)] + [comp(1, 2, 1.0, "b", 0)]
    assert seconds_per_label(cs, max_gap_seconds=300) == {"a": 4.0}  # gaps 4, 6, 3 (990 is a break)
    with pytest.raises(ValueError, match="max_gap_seconds"):
        seconds_per_label(cs, max_gap_seconds=0)

"""Sessions, CSRF tokens and the login rate limit of the labelling app.

A labeller logs in once with the token that ``prefrl label add-labeller`` printed (the
store keeps only its hash). The server then hands out a *signed* session cookie: the
payload (labeller name, role, issue time, a random nonce, and the labeller's session key in
the store) is HMAC-SHA256-signed with a server secret, so a forged or edited cookie fails
verification. The cookie is ``HttpOnly`` and ``SameSite=Strict``. A signature alone is not
enough: the server also asks the store whether the labeller still exists, is enabled and
still has that session key (:meth:`PreferenceStore.check_session`), so logout, a new login
link, disabling or removing a labeller end every session of theirs at once.

Every state-changing request must also carry the session's CSRF token in the
``X-CSRF-Token`` header (double submit: the token is derived from the session nonce with
the same secret, embedded in the page, and a cross-site form post cannot set a header).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass

#: Name of the session cookie.
SESSION_COOKIE = "prefrl_session"
#: Header that must carry the CSRF token on POST requests.
CSRF_HEADER = "X-CSRF-Token"
#: Roles a labeller can have.
ROLES = ("labeller", "admin")


@dataclass(frozen=True)
class Session:
    """A verified login: who, with which role, since when (unix seconds), its CSRF token, and
    the labeller's session key it was issued under."""

    labeller: str
    role: str
    issued_at: float
    nonce: str
    csrf_token: str
    session_key: str = ""

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionSigner:
    """Issues and verifies signed session cookies and their CSRF tokens.

    Args:
        secret: HMAC key (≥ 16 bytes). A random one is drawn when ``None``; sessions then
            end when the server restarts, which is acceptable for a labelling tool.
        max_age_seconds: a cookie older than this is refused (default 12 h).
    """

    def __init__(self, secret: bytes | None = None, max_age_seconds: float = 12 * 3600.0) -> None:
        if secret is None:
            secret = secrets.token_bytes(32)
        if not isinstance(secret, bytes) or len(secret) < 16:
            raise ValueError("secret must be at least 16 bytes")
        if max_age_seconds <= 0:
            raise ValueError(f"max_age_seconds must be > 0, got {max_age_seconds}")
        self._secret = secret
        self.max_age_seconds = float(max_age_seconds)

    def _mac(self, purpose: str, payload: bytes) -> bytes:
        return hmac.new(self._secret, purpose.encode() + b"\x00" + payload, hashlib.sha256).digest()

    def csrf_token_for(self, nonce: str) -> str:
        """The CSRF token bound to one session nonce."""
        return _b64(self._mac("csrf", nonce.encode()))

    def issue(
        self, labeller: str, role: str, now: float | None = None, session_key: str = ""
    ) -> tuple[str, Session]:
        """Return ``(cookie_value, session)`` for a freshly authenticated labeller."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        issued_at = time.time() if now is None else float(now)
        nonce = secrets.token_urlsafe(16)
        data = {"l": labeller, "r": role, "t": issued_at, "n": nonce, "k": session_key}
        payload = json.dumps(data, separators=(",", ":")).encode()
        cookie = _b64(payload) + "." + _b64(self._mac("session", payload))
        return cookie, Session(labeller, role, issued_at, nonce, self.csrf_token_for(nonce), session_key)

    def verify(self, cookie: str | None, now: float | None = None) -> Session | None:
        """Return the session of a valid, unexpired cookie, else ``None`` (never raises)."""
        if not cookie or len(cookie) > 4096 or cookie.count(".") != 1:
            return None
        body, sig = cookie.split(".")
        try:
            payload = _unb64(body)
            given = _unb64(sig)
        except (ValueError, TypeError):
            return None
        # Compare the canonical encodings: base64 ignores the padding bits of the last
        # character, so several strings decode to the same bytes; only one is accepted.
        if _b64(given) != sig or not hmac.compare_digest(sig, _b64(self._mac("session", payload))):
            return None
        try:
            data = json.loads(payload)
            labeller, role, issued_at, nonce = str(data["l"]), str(data["r"]), float(data["t"]), str(data["n"])
            session_key = str(data.get("k", ""))
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
        now = time.time() if now is None else float(now)
        if role not in ROLES or not (issued_at <= now + 60.0 and now - issued_at <= self.max_age_seconds):
            return None
        return Session(labeller, role, issued_at, nonce, self.csrf_token_for(nonce), session_key)

    def check_csrf(self, session: Session, token: str | None) -> bool:
        """Constant-time comparison of a request's CSRF header with the session's token."""
        return bool(token) and hmac.compare_digest(str(token), session.csrf_token)


class LoginLimiter:
    """At most ``max_failures`` failed logins per client address in any ``window_seconds``.

    A blocked client is refused before its token is even looked at, so a correct token sent
    while blocked is not spent. Successful logins do not count.
    """

    def __init__(self, max_failures: int = 10, window_seconds: float = 60.0) -> None:
        if max_failures < 1 or window_seconds <= 0:
            raise ValueError(f"need max_failures ≥ 1 and window_seconds > 0, got {max_failures}, {window_seconds}")
        self.max_failures = int(max_failures)
        self.window_seconds = float(window_seconds)
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> deque[float]:
        times = self._failures.setdefault(client, deque())
        while times and now - times[0] >= self.window_seconds:
            times.popleft()
        return times

    def retry_after(self, client: str, now: float | None = None) -> float | None:
        """Seconds until ``client`` may try again, or ``None`` when it may try now."""
        now = time.monotonic() if now is None else now
        with self._lock:
            times = self._recent(client, now)
            if len(times) < self.max_failures:
                if not times:
                    self._failures.pop(client, None)  # keep the table as small as the attackers
                return None
            return self.window_seconds - (now - times[0])

    def failed(self, client: str, now: float | None = None) -> None:
        """Count one failed login of ``client``."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._recent(client, now).append(now)

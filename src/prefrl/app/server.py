"""The labelling web app: one comparison at a time, answered by button or keyboard.

``create_app(store, cfg)`` builds a FastAPI app over a :class:`~prefrl.data.store.PreferenceStore`.
Pages are server-rendered (Jinja2) and a small vanilla-JS file (``static/label.js``)
fetches the next pair as JSON, so there is no page reload and no CDN.

Endpoints (all JSON errors are ``{"detail": "..."}``):

- ``GET /login?token=…`` exchange a labeller token for a session cookie, redirect to ``/``.
- ``GET /`` the labelling page (the login form without a session); ``GET /admin`` progress.
- ``POST /api/next`` lease the next query of this labeller's queue → ``{"query": {...} | null}``.
- ``POST /api/answer`` ``{"query_id": int, "mu": 1 | 0 | 0.5 | null}`` → the stored
  comparison and the next query. ``null`` = can't tell.
- ``POST /api/undo`` ``{"comparison_id": int, "current_query_id": int | null}`` undo an answer
  given within the undo window; the current lease is released so the undone pair comes back.
- ``POST /api/release`` ``{"query_id": int}`` give a lease back; ``POST /logout``.
- ``GET /clips/{segment_id}.mp4`` the clip of a segment shown to this labeller, rendered on
  first request and cached on disk per segment id.
- ``GET /api/admin/stats`` (admin) progress, time per label, agreement figures.

Every POST needs the session cookie and the ``X-CSRF-Token`` header; an ``Origin``
header, when present, must match the host. Bodies over ``max_body_bytes`` → 413.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from prefrl.app import stats
from prefrl.app.auth import CSRF_HEADER, SESSION_COOKIE, Session, SessionSigner
from prefrl.data.schema import MAX_ID
from prefrl.data.store import LeaseError, PreferenceStore, Query
from prefrl.data.types import Comparison, Segment, check_mu, utcnow
from prefrl.utils.files import atomic_write

APP_DIR = Path(__file__).resolve().parent

#: Renders one segment to an MP4 file at the given path.
Renderer = Callable[[Segment, Path], None]


class RedactTokenFilter(logging.Filter):
    """Blank out ``token=…`` in access-log lines so login tokens never reach log files."""

    _pattern = re.compile(r"(token=)[^&\s]*")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self._pattern.sub(r"\1[redacted]", a) if isinstance(a, str) else a
                                for a in record.args)
        if isinstance(record.msg, str):
            record.msg = self._pattern.sub(r"\1[redacted]", record.msg)
        return True


def default_renderer(segment: Segment, path: Path) -> None:
    """Render with :func:`prefrl.control.render.render_segment` (imported lazily: MuJoCo is heavy)."""
    from prefrl.control.render import render_segment

    render_segment(segment, path)


@dataclass
class AppConfig:
    """Settings of the labelling server."""

    clips_dir: Path = Path("clips")
    """Where rendered MP4 clips are cached, one file per segment id."""
    lease_seconds: float = 300.0
    """How long a shown query stays reserved for its labeller before it returns to the pool."""
    undo_window_seconds: float = 30.0
    """How long after answering a labeller may undo that answer."""
    max_body_bytes: int = 16 * 1024
    """Request bodies larger than this are refused with 413."""
    session_max_age_seconds: float = 12 * 3600.0
    """Lifetime of a login session cookie."""
    secure_cookie: bool = False
    """Set the cookie's ``Secure`` flag (turn on behind HTTPS)."""
    secret: bytes | None = field(default=None, repr=False)
    """HMAC key for session cookies; random per process when ``None``."""

    def __post_init__(self) -> None:
        self.clips_dir = Path(self.clips_dir)
        for name in ("lease_seconds", "undo_window_seconds", "session_max_age_seconds"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if not isinstance(self.max_body_bytes, int) or self.max_body_bytes < 256:
            raise ValueError(f"max_body_bytes must be an int ≥ 256, got {self.max_body_bytes!r}")


class _BodyTooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """ASGI middleware: refuse bodies over ``max_bytes`` with 413, whether or not they declare a length."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_large = int(value) > self.max_bytes
                except ValueError:
                    too_large = True
                if too_large:
                    await self._refuse(send)
                    return
        seen = 0
        started = False

        async def limited_receive() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Callable) -> None:
        body = json.dumps({"detail": f"request body larger than {self.max_bytes} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; media-src 'self'; "
    "style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _check_id(value: Any, name: str) -> int:
    """A positive id the database can hold, or 422 naming the field (before any store call)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_ID:
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "…"
        raise HTTPException(422, f"{name} must be an id from 1 to {MAX_ID}, got {shown}")
    return value


def _int_field(body: dict, name: str, *, required: bool = True) -> int | None:
    value = body.get(name)
    if value is None and not required:
        return None
    return _check_id(value, name)


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def parse_json_object(raw: bytes) -> dict:
    """A request body as a JSON object, or 400 saying why (malformed, NaN/Infinity, nested too deep)."""
    try:
        body = json.loads(raw, parse_constant=_refuse_constant)
    except RecursionError:  # the C parser recurses once per level: 8,000 "[" fit in 16 KiB
        raise HTTPException(400, "request body is not valid JSON: nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise HTTPException(400, f"request body is not valid JSON ({e})") from None
    if not isinstance(body, dict):
        raise HTTPException(400, "request body must be a JSON object")
    return body


class ClipCache:
    """Renders each segment's clip at most once, on demand, into ``clips_dir/<id>.mp4``."""

    def __init__(self, store: PreferenceStore, clips_dir: Path, renderer: Renderer) -> None:
        self.store = store
        self.clips_dir = Path(clips_dir)
        self.renderer = renderer
        self._locks: dict[int, threading.Lock] = defaultdict(threading.Lock)
        self._guard = threading.Lock()
        #: Number of renders done by this process.
        self.renders = 0

    def path(self, segment_id: int) -> Path:
        """The cached clip path of a segment, rendering it first if needed."""
        target = self.clips_dir / f"{int(segment_id)}.mp4"
        if target.exists():
            return target
        with self._guard:
            lock = self._locks[int(segment_id)]
        with lock:  # two viewers of one new clip render it once
            if target.exists():
                return target
            segment = self.store.get_segment(int(segment_id))

            def render(tmp: Path) -> None:
                # Encoders (ffmpeg) pick the container by suffix, and atomic_write's name ends in .tmp.
                video = tmp.with_name(tmp.name + ".mp4")
                try:
                    self.renderer(segment, video)
                    if not video.exists() or video.stat().st_size == 0:
                        raise RuntimeError(f"renderer wrote no clip for segment {segment_id}")
                    video.replace(tmp)
                finally:
                    video.unlink(missing_ok=True)

            atomic_write(target, render)
            self.renders += 1
        return target


def create_app(
    store: PreferenceStore, cfg: AppConfig | None = None, renderer: Renderer | None = None
) -> FastAPI:
    """Build the labelling app over ``store``; ``renderer`` defaults to the control renderer."""
    cfg = cfg or AppConfig()
    signer = SessionSigner(cfg.secret, cfg.session_max_age_seconds)
    clips = ClipCache(store, cfg.clips_dir, renderer or default_renderer)
    templates = Jinja2Templates(directory=str(APP_DIR / "templates"))
    # Segments handed to each labeller in a query: only those clips may be requested
    # (and hence rendered), so a labeller cannot make the server render the whole store.
    shown: dict[str, set[int]] = defaultdict(set)
    shown_lock = threading.Lock()

    app = FastAPI(title="prefrl labelling", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.store = store
    app.state.config = cfg
    app.state.clips = clips
    app.state.signer = signer
    app.mount("/static", StaticFiles(directory=str(APP_DIR / "static")), name="static")
    app.add_middleware(BodyLimitMiddleware, max_bytes=cfg.max_body_bytes)

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Callable) -> Response:
        response = await call_next(request)
        for key, value in _SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        return response

    # -- helpers ------------------------------------------------------------------------
    def current_session(request: Request) -> Session | None:
        return signer.verify(request.cookies.get(SESSION_COOKIE))

    def require_session(request: Request, *, admin: bool = False) -> Session:
        session = current_session(request)
        if session is None:
            raise HTTPException(401, "not logged in: open your login link first")
        if admin and not session.is_admin:
            raise HTTPException(403, "admin role required")
        return session

    def check_same_origin(request: Request) -> None:
        origin = request.headers.get("origin")
        if origin is not None:
            host = request.headers.get("host", "")
            parts = urlsplit(origin)
            if origin == "null" or parts.netloc != host or parts.scheme not in ("http", "https"):
                raise HTTPException(403, f"cross-origin request refused (Origin {origin!r}, host {host!r})")
        if request.headers.get("sec-fetch-site") == "cross-site":
            raise HTTPException(403, "cross-site request refused")

    def require_post_session(request: Request) -> Session:
        check_same_origin(request)
        session = require_session(request)
        if not signer.check_csrf(session, request.headers.get(CSRF_HEADER)):
            raise HTTPException(403, f"missing or wrong CSRF token (send the {CSRF_HEADER} header)")
        return session

    async def json_body(request: Request) -> dict:
        if not request.headers.get("content-type", "").split(";")[0].strip() == "application/json":
            raise HTTPException(415, "request body must be application/json")
        return parse_json_object(await request.body())

    def query_json(query: Query, labeller: str) -> dict:
        out: dict[str, Any] = {
            "id": int(query.id),
            "priority": float(query.priority),
            "lease_seconds": cfg.lease_seconds,
        }
        if query.lease_expires_at is not None:
            out["lease_expires_at"] = query.lease_expires_at.isoformat()
        if query.text_pair_id is not None:
            pair = store.get_text_pair(int(query.text_pair_id))
            out.update(kind="text", text_pair_id=int(query.text_pair_id), prompt=pair.prompt,
                       left={"text": pair.response_a}, right={"text": pair.response_b})
        else:
            left_id, right_id = int(query.left_id), int(query.right_id)
            with shown_lock:
                shown[labeller].update((left_id, right_id))
            segs = store.get_segments([left_id, right_id])
            out["kind"] = "segments"
            for side, seg in zip(("left", "right"), segs):
                out[side] = {"segment_id": int(seg.id), "clip_url": f"/clips/{int(seg.id)}.mp4",
                             "length": len(seg), "env_id": seg.env_id}
        return out

    def _raise_unknown_query(query_id: int) -> None:
        try:
            store.get_query(query_id)
        except KeyError:
            raise HTTPException(404, f"unknown query {query_id}") from None

    def lease_next(session: Session) -> dict | None:
        query = store.lease_query(session.labeller, lease_seconds=cfg.lease_seconds)
        return None if query is None else query_json(query, session.labeller)

    def comparison_json(c: Comparison) -> dict:
        return {"id": int(c.id), "mu": c.mu, "left_id": c.left_id, "right_id": c.right_id,
                "text_pair_id": c.text_pair_id, "labeller": c.labeller}

    # -- pages ----------------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse)
    def index(request: Request) -> Response:
        session = current_session(request)
        if session is None:
            return templates.TemplateResponse(request, "login.html", {"error": None}, status_code=200)
        return templates.TemplateResponse(request, "label.html", {
            "session": session, "csrf_token": session.csrf_token,
            "undo_window": int(cfg.undo_window_seconds), "lease_minutes": f"{cfg.lease_seconds / 60:g}"})

    @app.get("/login")
    def login(request: Request, token: str = "") -> Response:
        labeller = store.redeem_token(token) if 0 < len(token) <= 512 else None  # one-time link
        if labeller is None:
            return templates.TemplateResponse(
                request, "login.html", {"error": "That login link is not valid or was already used; ask for a new one (prefrl label login-link NAME)."}, status_code=401)
        cookie, _ = signer.issue(labeller.name, labeller.role)
        response = RedirectResponse("/admin" if labeller.role == "admin" else "/", status_code=303)
        response.set_cookie(SESSION_COOKIE, cookie, max_age=int(cfg.session_max_age_seconds), httponly=True,
                            samesite="strict", secure=cfg.secure_cookie, path="/")
        return response

    @app.post("/logout")
    def logout(request: Request) -> Response:
        require_post_session(request)
        response = JSONResponse({"ok": True})
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @app.get("/admin", response_class=HTMLResponse)
    def admin_page(request: Request) -> Response:
        session = current_session(request)
        if session is None:
            return templates.TemplateResponse(request, "login.html", {"error": None}, status_code=401)
        if not session.is_admin:
            raise HTTPException(403, "admin role required")
        return templates.TemplateResponse(request, "admin.html", {
            "session": session, "csrf_token": session.csrf_token, "stats": admin_stats()})

    @app.get("/healthz")
    def healthz() -> dict:
        return {"ok": True}

    # -- labelling API ---------------------------------------------------------------------
    @app.post("/api/next")
    def api_next(request: Request) -> dict:
        session = require_post_session(request)
        return {"query": lease_next(session)}

    @app.post("/api/answer")
    async def api_answer(request: Request) -> dict:
        session = require_post_session(request)
        body = await json_body(request)
        query_id = _int_field(body, "query_id")
        if "mu" not in body:
            raise HTTPException(422, "mu is required: 1 (left better), 0 (right better), 0.5 (equal) or null")
        mu = body["mu"]
        if isinstance(mu, bool) or not (mu is None or isinstance(mu, (int, float))):
            raise HTTPException(422, f"mu must be one of 1, 0, 0.5 or null, got {mu!r}")
        try:
            mu = check_mu(mu)
        except ValueError as e:
            raise HTTPException(422, str(e)) from None
        return await _run_sync(lambda: _answer(session, query_id, mu))

    def _answer(session: Session, query_id: int, mu: float | None) -> dict:
        try:
            comparison = store.answer_query(query_id, session.labeller, mu)
        except LeaseError as e:
            _raise_unknown_query(query_id)
            raise HTTPException(409, f"query {query_id} cannot be answered: {e}") from None
        return {"comparison": comparison_json(comparison), "undo_seconds": cfg.undo_window_seconds,
                "next": lease_next(session)}

    @app.post("/api/undo")
    async def api_undo(request: Request) -> dict:
        session = require_post_session(request)
        body = await json_body(request)
        comparison_id = _int_field(body, "comparison_id")
        current = _int_field(body, "current_query_id", required=False)

        def run() -> dict:
            if current is not None:
                _raise_unknown_query(current)
            try:  # one transaction: the displayed pair is given back so the undone one returns first
                store.undo_answer(comparison_id, session.labeller, window_seconds=cfg.undo_window_seconds,
                                  release_query_id=current)
            except LeaseError as e:
                try:
                    store.get_comparison(comparison_id)
                except KeyError:
                    raise HTTPException(404, f"unknown comparison {comparison_id}") from None
                raise HTTPException(409, f"cannot undo comparison {comparison_id}: {e}") from None
            return {"undone": comparison_id, "next": lease_next(session)}

        return await _run_sync(run)

    @app.post("/api/release")
    async def api_release(request: Request) -> dict:
        session = require_post_session(request)
        body = await json_body(request)
        query_id = _int_field(body, "query_id")
        try:
            store.release_query(query_id, session.labeller)
        except LeaseError as e:
            _raise_unknown_query(query_id)
            raise HTTPException(409, f"cannot release query {query_id}: {e}") from None
        return {"released": query_id}

    @app.get("/clips/{segment_id}.mp4")
    def clip(segment_id: int, request: Request) -> Response:
        session = require_session(request)
        segment_id = _check_id(segment_id, "segment_id")
        with shown_lock:
            allowed = session.is_admin or segment_id in shown[session.labeller]
        if not allowed:
            raise HTTPException(404, f"no clip {segment_id} in your queue")
        try:
            path = clips.path(segment_id)
        except KeyError:
            raise HTTPException(404, f"unknown segment {segment_id}") from None
        except ImportError as e:
            raise HTTPException(503, f"no clip renderer available ({e}); start the server with a renderer") from None
        except Exception as e:  # a renderer failure must not look like a missing clip
            raise HTTPException(500, f"rendering segment {segment_id} failed: {type(e).__name__}: {e}") from None
        return FileResponse(path, media_type="video/mp4", headers={"Cache-Control": "private, max-age=3600"})

    # -- admin ------------------------------------------------------------------------------
    def admin_stats() -> dict:
        comparisons = store.comparisons(include_incomparable=True)
        human = [c for c in comparisons if c.labeller]
        seg_ids = sorted({i for c in human for i in (c.left_id, c.right_id) if i is not None})
        returns: dict[int, float | None] = {}
        if seg_ids:
            for seg in store.get_segments(seg_ids):
                returns[int(seg.id)] = seg.true_return
        inter, repeated = stats.inter_labeller_agreement(human)
        oracle = stats.oracle_agreement(human, returns.get)
        per_label = stats.seconds_per_label(human)
        labellers = []
        for lab in store.labellers():
            mine = [c for c in human if c.labeller == lab.name]
            labellers.append({"name": lab.name, "role": lab.role, "answers": len(mine),
                              "cant_tell": sum(c.mu is None for c in mine),
                              "seconds_per_label": per_label.get(lab.name)})
        # A lapsed lease is stored as "leased" but is free again: count it as pending.
        now = utcnow()
        leased = store.queries("leased")
        live = sum(q.lease_expires_at is not None and q.lease_expires_at > now for q in leased)
        progress = {"pending": store.count_queries("pending") + len(leased) - live, "leased": live,
                    "answered": store.count_queries("answered"), "total": store.count_queries()}
        return {
            "progress": progress,
            "comparisons": {"total": len(comparisons), "human": len(human)},
            "labellers": labellers,
            "inter_labeller_agreement": {"rate": inter.rate, "pairs_of_answers": inter.total,
                                         "repeated_items": repeated},
            "oracle_agreement": {"rate": oracle.rate, "answers": oracle.total},
        }

    @app.get("/api/admin/stats")
    def api_admin_stats(request: Request) -> dict:
        require_session(request, admin=True)
        return admin_stats()

    return app


async def _run_sync(fn: Callable[[], dict]) -> dict:
    """Run blocking store work in the thread pool (the store is synchronous SQLAlchemy)."""
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(fn)

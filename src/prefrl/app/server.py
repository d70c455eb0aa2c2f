"""The labelling web app: one comparison at a time, answered by button or keyboard.

``create_app(store, cfg)`` builds a FastAPI app over a :class:`~prefrl.data.store.PreferenceStore`.
Pages are server-rendered (Jinja2) and a small vanilla-JS file (``static/label.js``)
fetches the next pair as JSON, so there is no page reload and no CDN.

Endpoints (all JSON errors are ``{"detail": "..."}``):

- ``GET /login?token=…`` the page a login link opens: one button (spends nothing);
  ``POST /login`` (form field ``token``) exchanges the one-time token for a session cookie.
- ``GET /`` the labelling page (the login form without a session); ``GET /admin`` progress.
- ``POST /api/next`` lease the next query of this labeller's queue → ``{"query": {...} | null}``.
- ``POST /api/answer`` ``{"query_id": int, "mu": 1 | 0 | 0.5 | null, "next_query_id": int?}`` →
  the stored comparison and the next query (``next_query_id`` when it is still free: the pair
  whose clips the page has loaded ahead). ``null`` = can't tell.
- ``POST /api/upcoming`` ``{"current_query_id": int | null}`` → ``{"upcoming": {"id", "clips"} | null}``:
  the pair this labeller's page should load ahead (a hint held in memory, not a lease; each
  labeller gets a different one), so that after an answer the next pair plays from memory.
- ``POST /api/undo`` ``{"comparison_id": int, "current_query_id": int | null}`` undo an answer
  given within the undo window; the current lease is released so the undone pair comes back.
- ``POST /api/release`` ``{"query_id": int}`` give a lease back; ``POST /logout``.
- ``GET /clips/{segment_id}.mp4`` the clip of a segment shown to this labeller, rendered ahead by
  the render worker and cached on disk per segment id; 202 + ``Retry-After`` while not ready.
- ``GET /api/admin/stats`` (admin) progress, time per label, agreement figures.

Every POST but the login needs the session cookie and the ``X-CSRF-Token`` header; an
``Origin`` header, when present, must match the host. A session lasts while the store says so
(:meth:`~prefrl.data.store.PreferenceStore.check_session`). Requests for a host not in
``allowed_hosts`` → 400; bodies over ``max_body_bytes`` → 413; ids out of range → 422 and
malformed JSON → 400, before anything is stored.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import threading
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from prefrl.app.admin import admin_stats
from prefrl.app.auth import CSRF_HEADER, SESSION_COOKIE, LoginLimiter, Session, SessionSigner
from prefrl.app.clips import ClipCache, ProcessRenderer, Renderer, RenderWorker
from prefrl.app.config import AppConfig
from prefrl.app.inputs import check_id, client_address, int_field, parse_json_object
from prefrl.app.middleware import SECURITY_HEADERS, BodyLimitMiddleware, HostCheckMiddleware
from prefrl.data.store import LeaseError, PreferenceStore, Query
from prefrl.data.types import Comparison, check_mu

__all__ = ["create_app", "AppConfig", "ClipCache", "Renderer"]

APP_DIR = Path(__file__).resolve().parent


def create_app(
    store: PreferenceStore, cfg: AppConfig | None = None, renderer: Renderer | None = None
) -> FastAPI:
    """Build the labelling app over ``store``; ``renderer`` defaults to a :class:`ProcessRenderer`
    (MuJoCo clips from the saved simulator states, rendered in a child process)."""
    cfg = cfg or AppConfig()
    signer = SessionSigner(cfg.secret, cfg.session_max_age_seconds)
    limiter = LoginLimiter(cfg.login_max_failures, cfg.login_window_seconds)
    own_renderer = ProcessRenderer(cfg.render_processes) if renderer is None else None
    clips = ClipCache(store, cfg.clips_dir, renderer or own_renderer)
    # A renderer passed in may not be thread-safe: it gets one thread.
    worker = RenderWorker(clips, store, prerender=cfg.prerender_queries,
                          threads=cfg.render_processes if own_renderer is not None else 1)
    templates = Jinja2Templates(directory=str(APP_DIR / "templates"))
    # Segments handed to each labeller in a query: only those clips may be requested
    # (and hence rendered), so a labeller cannot make the server render the whole store.
    shown: dict[str, set[int]] = defaultdict(set)
    shown_lock = threading.Lock()
    # The pair each labeller's page loads ahead, kept apart from the others' (a hint, not a lease).
    upcoming: dict[str, int] = {}
    # Segment id → (length, env_id) for the query JSON: segments never change once stored.
    segment_info: dict[int, tuple[int, str]] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Rendering starts with the server (or at the first clip asked for, when no lifespan runs).
        worker.start()
        yield
        worker.stop()
        if own_renderer is not None:
            own_renderer.close()

    app = FastAPI(title="prefrl labelling", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.store = store
    app.state.config = cfg
    app.state.clips = clips
    app.state.render_worker = worker
    app.state.signer = signer
    app.mount("/static", StaticFiles(directory=str(APP_DIR / "static")), name="static")
    app.add_middleware(BodyLimitMiddleware, max_bytes=cfg.max_body_bytes)
    app.add_middleware(HostCheckMiddleware, allowed_hosts=cfg.allowed_hosts)  # outermost: checked first

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Callable) -> Response:
        response = await call_next(request)
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        return response

    # -- helpers ------------------------------------------------------------------------
    def current_session(request: Request) -> Session | None:
        """The request's session while it lasts: a valid signature, and a labeller in the store who
        is enabled and whose sessions have not been ended since (logout, new link, removal)."""
        session = signer.verify(request.cookies.get(SESSION_COOKIE))
        if session is None:
            return None
        labeller = store.check_session(session.labeller, session.session_key)
        return None if labeller is None else dataclasses.replace(session, role=labeller.role)

    def require_session(request: Request, *, admin: bool = False) -> Session:
        session = current_session(request)
        if session is None:
            raise HTTPException(401, "not logged in: open your login link first")
        if admin and not session.is_admin:
            raise HTTPException(403, "admin role required")
        return session

    def check_same_origin(request: Request) -> None:
        origin = request.headers.get("origin")
        fetch_site = request.headers.get("sec-fetch-site")
        # Under "Referrer-Policy: no-referrer" a browser sends "Origin: null" with a form post; it
        # still says where the post came from in Sec-Fetch-Site, which no page can forge.
        if origin is not None and not (origin == "null" and fetch_site == "same-origin"):
            host = request.headers.get("host", "")
            parts = urlsplit(origin)
            if origin == "null" or parts.netloc != host or parts.scheme not in ("http", "https"):
                raise HTTPException(403, f"cross-origin request refused (Origin {origin!r}, host {host!r})")
        if fetch_site == "cross-site":
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
            info = segments_info([left_id, right_id])
            out["kind"] = "segments"
            for side, seg_id in zip(("left", "right"), (left_id, right_id)):
                length, env_id = info[seg_id]
                out[side] = {"segment_id": seg_id, "clip_url": f"/clips/{seg_id}.mp4", "length": length,
                             "env_id": env_id}
        return out

    def segments_info(ids: list[int]) -> dict[int, tuple[int, str]]:
        missing = [i for i in ids if i not in segment_info]
        if missing:  # read once per segment (its arrays too), off the answer's path when loaded ahead
            for seg in store.get_segments(missing):
                segment_info[int(seg.id)] = (len(seg), seg.env_id)
        return {i: segment_info[i] for i in ids}

    def upcoming_json(labeller: str, current_id: int | None) -> dict | None:
        """The next free segment pair in this labeller's queue that no other labeller's page is loading."""
        with shown_lock:
            others = {qid for name, qid in upcoming.items() if name != labeller}
        for q in store.queries("pending", limit=len(others) + 2, labeller=labeller):
            if q.left_id is None or q.id == current_id or q.id in others:
                continue
            left_id, right_id = int(q.left_id), int(q.right_id)
            with shown_lock:
                upcoming[labeller] = int(q.id)
                shown[labeller].update((left_id, right_id))
            segments_info([left_id, right_id])
            return {"id": int(q.id), "clips": [f"/clips/{left_id}.mp4", f"/clips/{right_id}.mp4"]}
        with shown_lock:
            upcoming.pop(labeller, None)
        return None

    def _raise_unknown_query(query_id: int) -> None:
        try:
            store.get_query(query_id)
        except KeyError:
            raise HTTPException(404, f"unknown query {query_id}") from None

    def lease_next(session: Session) -> dict | None:
        return next_json(store.lease_query(session.labeller, lease_seconds=cfg.lease_seconds), session)

    def next_json(query: Query | None, session: Session) -> dict | None:
        if query is None:
            return None
        if query.left_id is not None and cfg.prerender_queries > 0:
            worker.wake()  # the queue moved on: render the next pairs now
        return query_json(query, session.labeller)

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

    def login_page(request: Request, error: str | None, status: int, **context: Any) -> Response:
        return templates.TemplateResponse(request, "login.html", {"error": error, **context}, status_code=status)

    def refuse_login(request: Request, client: str) -> Response:
        limiter.failed(client)
        return login_page(request, "That login link is not valid or was already used; ask for a new one "
                          "(prefrl label login-link NAME).", 401)

    def throttled(request: Request, client: str) -> Response | None:
        wait = limiter.retry_after(client)
        if wait is None:
            return None
        response = login_page(request, f"Too many failed logins from here; try again in {math.ceil(wait)} s.", 429)
        response.headers["Retry-After"] = str(math.ceil(wait))
        return response

    @app.get("/login")
    def login_link(request: Request, token: str = "") -> Response:
        """The page a login link opens: one button that logs in. Opening it spends nothing, so a
        link preview or a prefetch cannot use up the one-time token."""
        client = client_address(request)
        refused = throttled(request, client)
        if refused is not None:
            return refused
        labeller = store.authenticate(token) if 0 < len(token) <= 512 else None
        if labeller is None:
            return refuse_login(request, client)
        return login_page(request, None, 200, token=token, name=labeller.name)

    @app.post("/login")
    async def login(request: Request) -> Response:
        """Exchange a one-time token (form field ``token``) for a session cookie."""
        check_same_origin(request)  # no login CSRF: another site cannot log a browser in as someone
        form = await request.form()
        token = form.get("token")
        token = token if isinstance(token, str) else ""
        return await run_in_threadpool(redeem, request, token)

    def redeem(request: Request, token: str) -> Response:
        client = client_address(request)
        refused = throttled(request, client)
        if refused is not None:
            return refused
        labeller = store.redeem_token(token) if 0 < len(token) <= 512 else None  # one-time link
        if labeller is None:
            return refuse_login(request, client)
        try:
            key = store.session_key(labeller.name)
        except KeyError:  # disabled or removed in between
            return refuse_login(request, client)
        cookie, _ = signer.issue(labeller.name, labeller.role, session_key=key)
        response = RedirectResponse("/admin" if labeller.role == "admin" else "/", status_code=303)
        response.set_cookie(SESSION_COOKIE, cookie, max_age=int(cfg.session_max_age_seconds), httponly=True,
                            samesite="strict", secure=cfg.secure_cookie, path="/")
        return response

    @app.post("/logout")
    def logout(request: Request) -> Response:
        """End every session of this labeller (on every device), not only this browser's cookie."""
        session = require_post_session(request)
        try:
            store.end_sessions(session.labeller)
        except KeyError:
            pass  # removed meanwhile: no session of theirs is left anyway
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
            "session": session, "csrf_token": session.csrf_token, "stats": admin_stats(store)})

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"ok": True}

    # -- labelling API ---------------------------------------------------------------------
    @app.post("/api/next")
    def api_next(request: Request) -> dict:
        session = require_post_session(request)
        return {"query": lease_next(session)}

    @app.post("/api/answer")
    async def api_answer(request: Request) -> dict:
        session = await run_in_threadpool(require_post_session, request)
        body = await json_body(request)
        query_id = int_field(body, "query_id")
        if "mu" not in body:
            raise HTTPException(422, "mu is required: 1 (left better), 0 (right better), 0.5 (equal) or null")
        mu = body["mu"]
        if isinstance(mu, bool) or not (mu is None or isinstance(mu, (int, float))):
            raise HTTPException(422, f"mu must be one of 1, 0, 0.5 or null, got {mu!r}")
        try:
            mu = check_mu(mu)
        except ValueError as e:
            raise HTTPException(422, str(e)) from None
        prefer = int_field(body, "next_query_id", required=False)
        return await run_in_threadpool(_answer, session, query_id, mu, prefer)

    def _answer(session: Session, query_id: int, mu: float | None, prefer: int | None = None) -> dict:
        try:  # one transaction: the answer is stored and the next pair leased, or neither
            comparison, query = store.answer_and_lease_next(query_id, session.labeller, mu, cfg.lease_seconds,
                                                            prefer_query_id=prefer)
        except LeaseError as e:
            _raise_unknown_query(query_id)
            raise HTTPException(409, f"query {query_id} cannot be answered: {e}") from None
        return {"comparison": comparison_json(comparison), "undo_seconds": cfg.undo_window_seconds,
                "next": next_json(query, session)}

    @app.post("/api/upcoming")
    async def api_upcoming(request: Request) -> dict:
        session = await run_in_threadpool(require_post_session, request)
        current = int_field(await json_body(request), "current_query_id", required=False)
        return {"upcoming": await run_in_threadpool(upcoming_json, session.labeller, current)}

    @app.post("/api/undo")
    async def api_undo(request: Request) -> dict:
        session = await run_in_threadpool(require_post_session, request)
        body = await json_body(request)
        comparison_id = int_field(body, "comparison_id")
        current = int_field(body, "current_query_id", required=False)

        def run() -> dict:
            if current is not None:
                _raise_unknown_query(current)
            try:  # one transaction: undone, the displayed pair given back, the next pair (the undone one) leased
                query = store.undo_and_lease_next(comparison_id, session.labeller, cfg.undo_window_seconds,
                                                  cfg.lease_seconds, release_query_id=current)
            except LeaseError as e:
                try:
                    store.get_comparison(comparison_id)
                except KeyError:
                    raise HTTPException(404, f"unknown comparison {comparison_id}") from None
                raise HTTPException(409, f"cannot undo comparison {comparison_id}: {e}") from None
            return {"undone": comparison_id, "next": next_json(query, session)}

        return await run_in_threadpool(run)

    @app.post("/api/release")
    async def api_release(request: Request) -> dict:
        session = await run_in_threadpool(require_post_session, request)
        body = await json_body(request)
        query_id = int_field(body, "query_id")

        def run() -> dict:
            try:
                store.release_query(query_id, session.labeller)
            except LeaseError as e:
                _raise_unknown_query(query_id)
                raise HTTPException(409, f"cannot release query {query_id}: {e}") from None
            return {"released": query_id}

        return await run_in_threadpool(run)

    @app.get("/clips/{segment_id}.mp4")
    async def clip(segment_id: int, request: Request) -> Response:
        """The clip if rendered (or rendered within ``clip_wait_seconds``), else 202 + Retry-After.

        The route holds no thread while it waits: the render worker does the work, so one
        labeller's burst of clip requests cannot stall anyone else's requests."""
        session = await run_in_threadpool(require_session, request)
        segment_id = check_id(segment_id, "segment_id")
        with shown_lock:
            allowed = session.is_admin or segment_id in shown[session.labeller]
        if not allowed:
            raise HTTPException(404, f"no clip {segment_id} in your queue")
        path = clips.cached(segment_id)
        if path is None:
            worker.request(segment_id)
            path = await worker.wait(segment_id, cfg.clip_wait_seconds)
        error = worker.failure(segment_id) if path is None else None
        if isinstance(error, KeyError):
            raise HTTPException(404, f"unknown segment {segment_id}")
        if isinstance(error, ImportError):
            raise HTTPException(503, f"no clip renderer available ({error}); start the server with a renderer")
        if error is not None:  # a renderer failure must not look like a missing clip
            raise HTTPException(500, f"rendering segment {segment_id} failed: {type(error).__name__}: {error}")
        if path is None:
            return JSONResponse({"detail": f"clip {segment_id} is being rendered; retry shortly"}, status_code=202,
                                headers={"Retry-After": "1"})
        return FileResponse(path, media_type="video/mp4", headers={"Cache-Control": "private, max-age=3600"})

    # -- admin ------------------------------------------------------------------------------
    @app.get("/api/admin/stats")
    def api_admin_stats(request: Request) -> dict:
        require_session(request, admin=True)
        return admin_stats(store)

    return app


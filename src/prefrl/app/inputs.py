"""What a request may carry, checked before anything reaches the store: ids in range, JSON
objects that parse (not too deep, no NaN), and who sent it. Each refusal is an HTTP 4xx that
names the field."""

from __future__ import annotations

import json
from typing import Any

from fastapi import HTTPException, Request

from prefrl.data.schema import MAX_ID

__all__ = ["check_id", "int_field", "parse_json_object", "client_address"]


def check_id(value: Any, name: str) -> int:
    """A positive id the database can hold, or 422 naming the field (before any store call)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_ID:
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "…"
        raise HTTPException(422, f"{name} must be an id from 1 to {MAX_ID}, got {shown}")
    return value


def int_field(body: dict, name: str, *, required: bool = True) -> int | None:
    """``body[name]`` as an id (:func:`check_id`); ``None`` if absent and not ``required``."""
    value = body.get(name)
    if value is None and not required:
        return None
    return check_id(value, name)


def client_address(request: Request) -> str:
    """Who a request comes from, for the login rate limit (the peer address; one proxy = one client)."""
    return request.client.host if request.client is not None else "unknown"


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

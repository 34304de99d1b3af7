"""The ollama client: which models a local ollama server holds in GPU memory (GET /api/ps)
and until when, so that the GPU policy (gpu.py) knows when memory is due to free.

Nothing here raises when ollama is not running or answers oddly: the answer is then None
(not reachable) or the models it could read.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

OLLAMA_DEFAULT_PORT = "11434"
# ollama reports keep_alive=-1 ("keep forever") as an expiry centuries away; anything past
# this horizon is treated as "held until stopped" rather than a release worth waiting for.
HELD_INDEFINITELY = timedelta(days=30)


@dataclass(frozen=True)
class OllamaModel:
    name: str
    size_vram_bytes: int
    expires_at: datetime | None  # timezone-aware; None when ollama gave none (or the zero time)


def ollama_base_url(host: str | None = None) -> str:
    """The base URL of the ollama API, following ollama's own reading of OLLAMA_HOST.

    OLLAMA_HOST may be "host", "host:port", ":port", or a URL; "0.0.0.0" (how servers are
    told to listen on all interfaces) means "this machine" to a client.
    """
    s = (host if host is not None else os.environ.get("OLLAMA_HOST", "")).strip()
    default_port = OLLAMA_DEFAULT_PORT
    if "://" in s:
        scheme, rest = s.split("://", 1)
        default_port = {"http": "80", "https": "443"}.get(scheme, default_port)
    else:
        scheme, rest = "http", s
    rest = rest.split("/", 1)[0]
    parts = urlsplit(f"//{rest}")
    try:
        port = str(parts.port) if parts.port is not None else default_port
    except ValueError:
        port = default_port
    name = parts.hostname or "127.0.0.1"
    if name in ("0.0.0.0", "::"):
        name = "127.0.0.1"
    if ":" in name:
        name = f"[{name}]"
    return f"{scheme}://{name}:{port}"


_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):?(\d{2}))?$"
)


def parse_rfc3339(text: str) -> datetime | None:
    """An RFC 3339 timestamp as an aware datetime; None for the Go zero time or junk.

    Hand-rolled because ollama (Go) writes nanoseconds ("...:31.837530123-07:00"), which
    datetime.fromisoformat rejects before Python 3.11. A missing offset is taken as UTC.
    """
    m = _RFC3339.match(text.strip())
    if not m:
        return None
    y, mo, d, h, mi, s, frac, _z, sign, oh, om = m.groups()
    if int(y) <= 1:  # Go's time.Time{}: "no expiry known"
        return None
    tz = timezone.utc
    if sign:
        delta = timedelta(hours=int(oh), minutes=int(om))
        tz = timezone(delta if sign == "+" else -delta)
    micro = int((frac or "0")[:6].ljust(6, "0"))
    try:
        return datetime(int(y), int(mo), int(d), int(h), int(mi), min(int(s), 59), micro, tzinfo=tz)
    except ValueError:
        return None


def parse_ollama_ps(payload: Any) -> list[OllamaModel]:
    """The models in an /api/ps response body (already JSON-decoded); tolerant of gaps."""
    models = payload.get("models") if isinstance(payload, dict) else None
    out = []
    for m in models or []:
        if not isinstance(m, dict):
            continue
        expires = m.get("expires_at")
        try:
            vram = int(m.get("size_vram") or 0)
        except (TypeError, ValueError):
            vram = 0
        out.append(
            OllamaModel(
                name=str(m.get("name") or m.get("model") or "?"),
                size_vram_bytes=vram,
                expires_at=parse_rfc3339(expires) if isinstance(expires, str) else None,
            )
        )
    return out


# No proxies: the ollama that matters holds *this* machine's GPUs, and an http_proxy meant
# for the internet must not intercept a request to localhost.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def ollama_models(host: str | None = None, timeout: float = 0.5) -> list[OllamaModel] | None:
    """The models ollama has loaded (GET /api/ps); None when ollama is not reachable.

    Never raises and never takes much longer than `timeout` in total: the request runs in a
    daemon thread that is abandoned at the deadline, because a socket timeout alone bounds
    each read and the connect, not name resolution or a server that trickles bytes.
    """
    url = ollama_base_url(host) + "/api/ps"
    result: list[list[OllamaModel] | None] = [None]

    def fetch() -> None:
        with contextlib.suppress(Exception), _OPENER.open(url, timeout=timeout) as resp:
            result[0] = parse_ollama_ps(json.loads(resp.read(1 << 20)))

    t = threading.Thread(target=fetch, name="ollama-ps", daemon=True)
    t.start()
    t.join(timeout)
    return result[0] if not t.is_alive() else None

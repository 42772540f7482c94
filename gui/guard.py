"""The local server's gate: requests must be addressed to this app, and browser requests must come from its page.

Two checks, an ASGI middleware in front of Gradio's routes (:class:`LocalOnly`):

- **Host**: when the app listens on a loopback address (the default, 127.0.0.1), a request whose
  ``Host`` header is not a loopback name (``127.0.0.1``, ``localhost``, ``[::1]``) with the app's
  port is refused. A web page that rebinds its own domain name to 127.0.0.1 (DNS rebinding) sends
  its domain in ``Host``, so it cannot drive the app.
- **Origin**: a request that carries an ``Origin`` header (browsers send one with every cross-site
  POST, upload and fetch) must come from the app's own page: its scheme-less ``host:port`` must be
  the ``Host`` the request was sent to. Another site's page cannot upload files or start jobs.
  Requests without ``Origin`` (``curl``, ``gradio_client``, the browser's own navigation) pass.

Refused requests get ``403`` and a one-line reason; nothing behind the gate runs for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


def split_host(value: str) -> tuple[str, int | None]:
    """``"Host"`` header text -> (lower-case name without brackets, port or None); ("", None) if unreadable."""
    try:
        parts = urlsplit(f"//{value.strip()}")
        return (parts.hostname or "").lower(), parts.port
    except ValueError:
        return "", None


@dataclass
class HostGuard:
    """What the gate accepts: the address the app listens on and, once the server has started, its port.

    ``loopback``: the app listens on a loopback address only (Host is then checked). ``port``: None
    until known (any port is accepted until then: the server's own start-up requests come first).
    """

    loopback: bool = True
    port: int | None = None
    refused: list[str] = field(default_factory=list)  # the reasons, newest last (for tests and logs)

    def reason(self, host: str | None, origin: str | None) -> str | None:
        """Why a request with these headers is refused, or None when it may pass."""
        name, port = split_host(host or "")
        if self.loopback:
            if name not in LOOPBACK_NAMES:
                return f"Host {host!r} is not this app's address (it listens on this computer only)"
            if self.port is not None and port not in (self.port, None):
                return f"Host {host!r} is not this app's port {self.port}"
        if origin is not None:
            if origin == "null":
                return "a request from a page without an origin (a file or sandboxed frame)"
            o_name, o_port = split_host(urlsplit(origin).netloc) if "//" in origin else ("", None)
            if (o_name, o_port) != (name, port):
                return f"a request from another site ({origin}) than this app's page"
        return None


class LocalOnly:
    """ASGI middleware: refuse (403) HTTP and websocket requests that :meth:`HostGuard.reason` refuses."""

    def __init__(self, app, guard: HostGuard):
        self.app, self.guard = app, guard

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        why = self.guard.reason(headers.get("host"), headers.get("origin"))
        if why is None:
            await self.app(scope, receive, send)
            return
        self.guard.refused.append(why)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        body = f"Fixative refused this request: {why}.\n".encode()
        await send({"type": "http.response.start", "status": 403,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def middleware(guard: HostGuard):
    """The Starlette ``Middleware`` entry for ``FastAPI(middleware=[...])`` (Gradio's ``app_kwargs``)."""
    from starlette.middleware import Middleware

    return Middleware(LocalOnly, guard=guard)

"""HTTP JSON recommendation endpoint over a trained run (FastAPI + uvicorn, the `serve` extra).

    GET  /health                       -> {"status": "ok", "run": ..., "domains": [...], "synthetic": false}
    POST /recommend  {"user_id": "u1", "k": 10, "domain": "food", "why": false}
    POST /recommend  {"history": ["B00..", ...], "k": 10, "domain": "kitchen"}

Bound to 127.0.0.1 unless told otherwise. Requests are validated strictly (JSON types as
written: no "5" for 5, no true for 1; k and history bounds; known domains; text that is valid
UTF-8) and the body is capped at 64 KiB by the bytes that arrive, chunked or not, before it is
parsed. Every malformed body is a 4xx, and no error reply repeats what the client sent.

Slow and idle clients: a connection must deliver a whole request head within HEADER_TIMEOUT_S of
being opened or of its last response, and a body within BODY_TIMEOUT_S of its head, or it is closed
(a body cut off gets a 408); at most MAX_CONNECTIONS are served at once (past that, 503). Closed
idle connections are logged as one line per burst, not one per connection.
"""

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from llm4cdsr.data.dataset import SYNTHETIC_NOTE

if TYPE_CHECKING:
    from llm4cdsr.recommender import TrainedRecommender as Recommender

MAX_BODY_BYTES = 64 * 1024
MAX_K = 200
MAX_HISTORY = 1000
HEADER_TIMEOUT_S = 10.0
BODY_TIMEOUT_S = 30.0
MAX_CONNECTIONS = 128

log = logging.getLogger("llm4cdsr.serve")


def create_app(recommender: "Recommender", max_k: int = MAX_K, max_history: int = MAX_HISTORY, max_body_bytes: int = MAX_BODY_BYTES,
               body_timeout_s: float = BODY_TIMEOUT_S):
    try:
        from fastapi import FastAPI, HTTPException, Request
        from fastapi.exceptions import RequestValidationError
        from fastapi.responses import JSONResponse
        from pydantic import BaseModel, Field, field_validator, model_validator
    except ImportError as e:  # the serve extra is optional
        raise RuntimeError("`llm4cdsr serve` needs the serve extra: pip install 'llm4cdsr[serve]'") from e

    domains = list(recommender.domains)

    class RecommendRequest(BaseModel):
        model_config = {"extra": "forbid", "strict": True}
        user_id: str | None = Field(default=None, max_length=256)
        history: list[str] | None = Field(default=None, max_length=max_history)
        k: int = Field(default=10, ge=1, le=max_k)
        domain: str | None = None
        why: bool = False
        exclude_seen: bool = True

        @field_validator("user_id", "domain")
        @classmethod
        def _text(cls, value: str | None) -> str | None:
            if value is not None:
                _utf8(value)
            return value

        @field_validator("history")
        @classmethod
        def _texts(cls, value: list[str] | None) -> list[str] | None:
            for item in value or ():
                _utf8(item)
            return value

        @model_validator(mode="after")
        def _one_source(self):
            if (self.user_id is None) == (self.history is None):
                raise ValueError("give exactly one of user_id or history")
            if self.domain is not None and self.domain not in domains:
                raise ValueError(f"domain must be one of {domains}")
            return self

    fields = set(RecommendRequest.model_fields)
    app = FastAPI(title="llm4cdsr", version="1")
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes, timeout_s=body_timeout_s)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        # FastAPI's own reply carries each error's "input" (the client's value, however large,
        # and text JSON cannot encode, which turned a 422 into a 500) and "ctx"; this one says
        # where and what only. A field name the model does not know is the client's text too.
        errors = [{"loc": [part if isinstance(part, int) or part in fields or part == "body" else "(unknown field)"
                           for part in e.get("loc", ())],
                   "msg": str(e.get("msg", "invalid"))[:200], "type": str(e.get("type", ""))} for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.get("/health")
    def health() -> dict[str, Any]:
        out = {"status": "ok", "run": str(recommender.run_name), "domains": domains,
               "synthetic": bool(getattr(recommender, "synthetic", False))}
        if out["synthetic"]:
            out["note"] = SYNTHETIC_NOTE
        return out

    # A plain (sync) endpoint: FastAPI runs it in its thread pool, so torch work never blocks the loop.
    @app.post("/recommend")
    def recommend(req: RecommendRequest) -> dict[str, Any]:
        try:
            if req.user_id is not None:
                recs = recommender.recommend(req.user_id, k=req.k, domain=req.domain, exclude_seen=req.exclude_seen)
            else:
                recs = recommender.recommend_history(req.history, k=req.k, domain=req.domain, exclude_seen=req.exclude_seen)
        except KeyError as e:  # the message names the id: not repeated to the client
            raise HTTPException(status_code=404, detail="unknown user_id: not in this run's dataset") from e
        except ValueError as e:
            raise HTTPException(status_code=422, detail=_without(str(e), req)) from e
        out: dict[str, Any] = {"items": recs.drop(columns="user_id").to_dict("records")}
        if req.history is not None:  # which of the client's ids the run does not know (left out)
            out["unknown_history_ids"] = list(getattr(recs, "attrs", {}).get("unknown_history_ids", []))
        if req.why and req.user_id is not None:
            out["profile"] = recommender.profile_text(req.user_id)
        return out

    return app


def _utf8(text: str) -> None:
    """JSON may carry lone surrogates ("\\ud800"), which are no text: refused as a 422."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (a lone surrogate is not)") from None


def _without(message: str, req) -> str:
    """`message` with every value the client sent blanked out."""
    for value in [req.user_id, req.domain, *(req.history or [])]:
        if value:
            message = message.replace(repr(value), "(given)").replace(value, "(given)")
    return message[:300]


class BodyLimit:
    """ASGI middleware: refuse a request body over `max_bytes` with a 413, counting the bytes as they
    arrive (a chunked body has no Content-Length to check), and hand the app the body it read."""

    def __init__(self, app, max_bytes: int, timeout_s: float = BODY_TIMEOUT_S):
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or ()).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            return await self._refuse(send, 413 if length.isdigit() else 400)
        chunks, size = [], 0
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:  # a body that trickles in holds a connection and a task: it has a deadline
                message = await asyncio.wait_for(receive(), max(deadline - time.monotonic(), 0.0))
            except asyncio.TimeoutError:
                return await self._refuse(send, 408)
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await self._refuse(send, 413)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        delivered = False

        async def replay():
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, send, status: int) -> None:
        detail = {413: f"request body over {self.max_bytes} bytes", 408: f"request body not received within {self.timeout_s:g} s"}.get(
            status, "malformed Content-Length")
        payload = ('{"detail": "%s"}' % detail).encode()
        # The rest of the body is never read: the connection closes after this reply.
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": payload})


class BurstLog:
    """One log line per burst of closed idle connections (a flood of them would otherwise write a line
    each): the first drop is logged, later ones are counted and logged at most every `every_s`."""

    def __init__(self, every_s: float = 10.0):
        self.every_s = every_s
        self.pending = 0
        self.last = -float("inf")

    def drop(self, timeout_s: float) -> None:
        self.pending += 1
        now = time.monotonic()
        if now - self.last >= self.every_s:
            log.warning("closed %d connection(s) that sent no whole request head within %g s", self.pending, timeout_s)
            self.pending, self.last = 0, now


def deadline_protocol(header_timeout_s: float = HEADER_TIMEOUT_S, drops: BurstLog | None = None):
    """uvicorn's h11 protocol with a deadline for each request head: a connection that has not
    delivered a whole head within `header_timeout_s` of opening, or of its last response, is closed.
    uvicorn's keep-alive timer alone is reset by any byte, so a client that sends a byte now and then
    (or nothing at all on a new connection) would hold its connection forever."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    drops = drops or BurstLog()

    class DeadlineH11Protocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.cycle is not None and not self.cycle.response_complete:
                self._disarm()  # a whole head arrived: the app (and BodyLimit's deadline) has the request

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(header_timeout_s, self._expire)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expire(self) -> None:
            self._deadline = None
            if (self.cycle is None or self.cycle.response_complete) and not self.transport.is_closing():
                drops.drop(header_timeout_s)
                self.transport.close()

    return DeadlineH11Protocol


def server_config(app, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info",
                  header_timeout_s: float = HEADER_TIMEOUT_S, max_connections: int = MAX_CONNECTIONS):
    """The uvicorn config `serve` runs: the deadline protocol, a connection limit (503 past it) and a
    short keep-alive."""
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, log_level=log_level, http=deadline_protocol(header_timeout_s),
                          limit_concurrency=max_connections, timeout_keep_alive=5)


def serve(recommender: "Recommender", host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    import uvicorn

    uvicorn.Server(server_config(create_app(recommender), host=host, port=port, log_level=log_level)).run()

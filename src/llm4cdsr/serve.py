"""HTTP JSON recommendation endpoint over a trained run (FastAPI + uvicorn, the `serve` extra).

    GET  /health                       -> {"status": "ok", "run": ..., "domains": [...], "synthetic": false}
    POST /recommend  {"user_id": "u1", "k": 10, "domain": "food", "why": false}
    POST /recommend  {"history": ["B00..", ...], "k": 10, "domain": "kitchen"}

Bound to 127.0.0.1 unless told otherwise. Requests are validated strictly (JSON types as
written: no "5" for 5, no true for 1; k and history bounds; known domains; text that is valid
UTF-8) and the body is capped at 64 KiB by the bytes that arrive, chunked or not, before it is
parsed. Every malformed body is a 4xx, and no error reply repeats what the client sent.
"""

from typing import TYPE_CHECKING, Any

from llm4cdsr.data.dataset import SYNTHETIC_NOTE

if TYPE_CHECKING:
    from llm4cdsr.recommender import TrainedRecommender as Recommender

MAX_BODY_BYTES = 64 * 1024
MAX_K = 200
MAX_HISTORY = 1000


def create_app(recommender: "Recommender", max_k: int = MAX_K, max_history: int = MAX_HISTORY, max_body_bytes: int = MAX_BODY_BYTES):
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
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)

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

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or ()).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            return await self._refuse(send, 413 if length.isdigit() else 400)
        chunks, size = [], 0
        while True:
            message = await receive()
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
        detail = f"request body over {self.max_bytes} bytes" if status == 413 else "malformed Content-Length"
        payload = ('{"detail": "%s"}' % detail).encode()
        # The rest of the body is never read: the connection closes after this reply.
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": payload})


def serve(recommender: "Recommender", host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    import uvicorn

    uvicorn.run(create_app(recommender), host=host, port=port, log_level=log_level)

"""HTTP JSON recommendation endpoint over a trained run (FastAPI + uvicorn, the `serve` extra).

    GET  /health                       -> {"status": "ok", "run": ..., "domains": [...]}
    POST /recommend  {"user_id": "u1", "k": 10, "domain": "food", "why": false}
    POST /recommend  {"history": ["B00..", ...], "k": 10, "domain": "kitchen"}

Bound to 127.0.0.1 unless told otherwise. Requests are validated (types, k and history bounds,
known domains) and the body size is capped before it is parsed.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llm4cdsr.api import Recommender

MAX_BODY_BYTES = 64 * 1024
MAX_K = 200
MAX_HISTORY = 1000


def create_app(recommender: "Recommender", max_k: int = MAX_K, max_history: int = MAX_HISTORY, max_body_bytes: int = MAX_BODY_BYTES):
    try:
        from fastapi import FastAPI, HTTPException, Request
        from fastapi.responses import JSONResponse
        from pydantic import BaseModel, Field, model_validator
    except ImportError as e:  # the serve extra is optional
        raise RuntimeError("`llm4cdsr serve` needs the serve extra: pip install 'llm4cdsr[serve]'") from e

    domains = list(recommender.domains)

    class RecommendRequest(BaseModel):
        model_config = {"extra": "forbid"}
        user_id: str | None = Field(default=None, max_length=256)
        history: list[str] | None = Field(default=None, max_length=max_history)
        k: int = Field(default=10, ge=1, le=max_k)
        domain: str | None = None
        why: bool = False
        exclude_seen: bool = True

        @model_validator(mode="after")
        def _one_source(self):
            if (self.user_id is None) == (self.history is None):
                raise ValueError("give exactly one of user_id or history")
            if self.domain is not None and self.domain not in domains:
                raise ValueError(f"domain must be one of {domains}")
            return self

    app = FastAPI(title="llm4cdsr", version="1")

    @app.middleware("http")
    async def _limit_body(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_body_bytes:
            return JSONResponse({"detail": f"request body over {max_body_bytes} bytes"}, status_code=413)
        return await call_next(request)

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "run": str(recommender.run_name), "domains": domains}

    # A plain (sync) endpoint: FastAPI runs it in its thread pool, so torch work never blocks the loop.
    @app.post("/recommend")
    def recommend(req: RecommendRequest) -> dict[str, Any]:
        try:
            if req.user_id is not None:
                recs = recommender.recommend(req.user_id, k=req.k, domain=req.domain, exclude_seen=req.exclude_seen)
            else:
                recs = recommender.recommend_history(req.history, k=req.k, domain=req.domain, exclude_seen=req.exclude_seen)
        except KeyError as e:
            raise HTTPException(status_code=404, detail=str(e.args[0]) if e.args else "not found") from e
        except ValueError as e:
            raise HTTPException(status_code=422, detail=str(e)) from e
        out: dict[str, Any] = {"items": recs}
        if req.why and req.user_id is not None:
            out["profile"] = recommender.profile_text(req.user_id)
        return out

    return app


def serve(recommender: "Recommender", host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    import uvicorn

    uvicorn.run(create_app(recommender), host=host, port=port, log_level=log_level)

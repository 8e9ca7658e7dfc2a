"""Serve a saved routed system over HTTP (FastAPI + uvicorn).

    python -m r2r.serve SYSTEM_DIR --host 127.0.0.1 --port 8000 [--device auto]
    r2r serve SYSTEM_DIR ...

POST /rerank (and /v1/rerank) takes the Cohere/Jina request shape: {"query": "...",
"documents": ["text", ...] or [{"text": "...", "score": 12.1}, ...] (score: the first
stage's, fused where the system has fusion.json), "top_n": 3, "return_documents": false,
"domain": "legal" (optional: that expert, skipping the router)} and answers {"results":
[{"index", "relevance_score"[, "document": {"text"}]}, ...] best first, "expert",
"probabilities", "fused"}. GET /health is 200 once the model is loaded (it loads before the
server accepts), GET /metrics is Prometheus text, /docs the OpenAPI page.
Concurrent requests are batched: for up to --max-wait-ms, or until --max-batch-tokens
(characters / 4), requests are gathered into one `rerank_batch` call on the single model
thread. Bad input is a 4xx `{"error": "<field>: <what>"}` that never reaches the model.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Literal

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, Field

from r2r.devices import resolve_device
from r2r.routing.system import RerankResult, RoutedReranker

ENDPOINTS = ("/rerank", "/v1/rerank", "/health", "/metrics")


@dataclass(frozen=True)
class Limits:
    """What one request may hold (the CLI's defaults), and how requests are batched."""

    max_documents: int = 1000
    max_body_bytes: int = 4 * 1024 * 1024
    max_text_chars: int = 20_000  # per query and per document
    long_text: Literal["truncate", "refuse"] = "truncate"
    max_batch_tokens: int = 32_768  # estimated: characters / 4, summed over a batch's pairs
    max_wait_ms: float = 5.0  # how long the first request of a batch waits for others


class BadRequest(Exception):
    """A request refused before the model: its HTTP status and `field: what`."""

    def __init__(self, status: int, field: str, what: str) -> None:
        super().__init__(f"{field}: {what}")
        self.status = status


@dataclass(frozen=True)
class Job:
    """One validated request, as the batcher scores it."""

    query: str
    documents: tuple[str, ...]
    scores: tuple[float, ...] | None  # the first stage's, one per document
    domain: str | None  # skips the router
    top_n: int | None
    return_documents: bool

    @property
    def tokens(self) -> int:
        # Cheap: every pair repeats the query; ~4 characters a token.
        return sum(len(self.query) + len(d) for d in self.documents) // 4 + 1


def parse_request(body: bytes, limits: Limits, experts: Sequence[str], *, oracle: bool) -> Job:
    """A request body -> a `Job`, or `BadRequest` naming the field."""
    try:
        row = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BadRequest(400, "body", f"not valid JSON ({err})") from None
    except RecursionError:
        raise BadRequest(400, "body", "nested too deeply") from None
    if not isinstance(row, dict):
        raise BadRequest(400, "body", "must be a JSON object")
    query = text(row.get("query"), "query", limits)
    docs = row.get("documents")
    if not isinstance(docs, list) or not docs:
        raise BadRequest(422, "documents", "must be a non-empty list")
    if len(docs) > limits.max_documents:
        raise BadRequest(422, "documents", f"{len(docs)} documents; at most {limits.max_documents}")
    documents, scores = [], []
    for k, doc in enumerate(docs):
        where = f"documents[{k}]"
        if isinstance(doc, dict):
            documents.append(text(doc.get("text"), f"{where}.text", limits))
            scores.append(score(doc.get("score"), f"{where}.score"))
        elif isinstance(doc, str):
            documents.append(text(doc, where, limits))
            scores.append(None)
        else:
            raise BadRequest(422, where, 'must be a string or {"text": ...}')
    given = [s is not None for s in scores]
    if any(given) and not all(given):
        k = given.index(False)
        raise BadRequest(422, f"documents[{k}].score", "missing (give every document's or none)")
    top_n = row.get("top_n")
    if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1):
        raise BadRequest(422, "top_n", "must be an integer of at least 1")
    return_documents = row.get("return_documents", False)
    if not isinstance(return_documents, bool):
        raise BadRequest(422, "return_documents", "must be true or false")
    domain = row.get("domain")
    if domain is not None and domain not in experts:
        raise BadRequest(422, "domain", f"{domain!r} is not an expert (experts: {list(experts)})")
    if domain is None and oracle:
        raise BadRequest(422, "domain", "required: this system's router is the oracle")
    return Job(
        query,
        tuple(documents),
        tuple(scores) if all(given) else None,
        domain,
        top_n,
        return_documents,
    )


def text(value: Any, field: str, limits: Limits) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(422, field, "must be a non-empty string")
    if len(value) > limits.max_text_chars:
        if limits.long_text == "refuse":
            raise BadRequest(
                422, field, f"{len(value)} characters; at most {limits.max_text_chars}"
            )
        return value[: limits.max_text_chars]
    return value


def score(value: Any, field: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadRequest(422, field, "must be a finite number")
    return float(value)


def response(job: Job, result: RerankResult) -> dict[str, Any]:
    results = []
    for r in result.ranking[: job.top_n]:
        row: dict[str, Any] = {"index": r.index, "relevance_score": r.score}
        if job.return_documents:
            row["document"] = {"text": job.documents[r.index]}
        results.append(row)
    return {
        "results": results,
        "expert": result.expert,
        "probabilities": dict(result.probabilities),
        "fused": result.fused,
    }


class Metrics:
    """The service's Prometheus metrics, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "r2r_requests", "HTTP requests", ["endpoint", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "r2r_request_seconds", "Request latency", ["endpoint"], registry=self.registry
        )
        self.batch_requests = Histogram(
            "r2r_batch_requests",
            "Requests per model call",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=self.registry,
        )
        self.batch_pairs = Histogram(
            "r2r_batch_pairs",
            "Query-document pairs per model call",
            buckets=(1, 10, 100, 1000, 10_000),
            registry=self.registry,
        )
        self.experts = Counter(
            "r2r_expert_queries",
            "Queries per expert (none: the bare backbone)",
            ["expert"],
            registry=self.registry,
        )


@dataclass
class Batcher:
    """Gathers concurrent jobs into one call of `score` (jobs -> results) on one thread."""

    score: Callable[[list[Job]], list[RerankResult]]
    limits: Limits
    metrics: Metrics
    queue: asyncio.Queue[tuple[Job, asyncio.Future[RerankResult]]] = field(
        default_factory=asyncio.Queue
    )
    # One model thread: the model is in memory once and runs one batch at a time.
    executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="r2r-model")
    )

    async def submit(self, job: Job) -> RerankResult:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((job, future))
        return await future

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        waiting = None  # a job that did not fit the last batch opens the next
        while True:
            batch = [waiting or await self.queue.get()]
            waiting = None
            tokens = batch[0][0].tokens
            deadline = loop.time() + self.limits.max_wait_ms / 1000
            while (left := deadline - loop.time()) > 0 or not self.queue.empty():
                try:
                    item = self.queue.get_nowait()
                except asyncio.QueueEmpty:
                    try:
                        item = await asyncio.wait_for(self.queue.get(), max(left, 0))
                    except asyncio.TimeoutError:
                        break
                if tokens + item[0].tokens > self.limits.max_batch_tokens:
                    waiting = item
                    break
                batch.append(item)
                tokens += item[0].tokens
            await self.run_batch(loop, batch)

    async def run_batch(
        self,
        loop: asyncio.AbstractEventLoop,
        batch: list[tuple[Job, asyncio.Future[RerankResult]]],
    ) -> None:
        jobs = [job for job, _ in batch]
        self.metrics.batch_requests.observe(len(jobs))
        self.metrics.batch_pairs.observe(sum(len(job.documents) for job in jobs))
        try:
            results = await loop.run_in_executor(self.executor, self.score, jobs)
            for result in results:
                self.metrics.experts.labels(str(result.expert).lower()).inc()
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():  # a client that left has cancelled its future
                    future.set_result(result)
        except Exception as err:  # each waiting request gets the error; the batcher goes on
            for _, future in batch:
                if not future.done():
                    future.set_exception(err)


def scorer(system: RoutedReranker) -> Callable[[list[Job]], list[RerankResult]]:
    """Jobs -> results through one `rerank_batch` (all ranked; each job cuts its top_n)."""

    def score(jobs: list[Job]) -> list[RerankResult]:
        return system.rerank_batch(
            [(job.query, job.documents) for job in jobs],
            None,
            first_stage_scores=[job.scores for job in jobs],
            experts=[job.domain for job in jobs],
        )

    return score


class RerankBody(BaseModel):
    """The request (documented here; validated by `parse_request`)."""

    query: str
    documents: list[str | dict[str, Any]] = Field(
        description='strings, or objects {"text": ..., "score": first-stage score}'
    )
    top_n: int | None = None
    return_documents: bool = False
    domain: str | None = Field(None, description="an expert's name: skips the router")


class ResultOut(BaseModel):
    index: int
    relevance_score: float
    document: dict[str, str] | None = None


class RerankOut(BaseModel):
    results: list[ResultOut]
    expert: str | None
    probabilities: dict[str, float]
    fused: bool


def create_app(system: RoutedReranker, limits: Limits = Limits()) -> FastAPI:
    """The service around a loaded `system`."""
    metrics = Metrics()
    batcher = Batcher(scorer(system), limits, metrics)
    oracle = system.router.kind == "oracle"

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(batcher.run())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        batcher.executor.shutdown(wait=True)

    app = FastAPI(title="r2r", description=__doc__.split("\n\n")[0], lifespan=lifespan)

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, err: BadRequest) -> JSONResponse:
        return JSONResponse({"error": str(err)}, status_code=err.status)

    @app.middleware("http")
    async def count(request: Request, call_next: Callable) -> Response:
        endpoint = request.url.path if request.url.path in ENDPOINTS else "other"
        start = time.perf_counter()
        out = await call_next(request)
        metrics.latency.labels(endpoint).observe(time.perf_counter() - start)
        metrics.requests.labels(endpoint, str(out.status_code)).inc()
        return out

    async def rerank(request: Request) -> dict[str, Any] | JSONResponse:
        body = await read_body(request, limits.max_body_bytes)
        job = parse_request(body, limits, system.experts, oracle=oracle)
        try:
            result = await batcher.submit(job)
        except Exception as err:  # the model failed: a JSON 500, and the server goes on
            return JSONResponse({"error": f"model: {err}"}, status_code=500)
        return response(job, result)

    docs = {
        "response_model": RerankOut,
        "response_model_exclude_none": True,
        "openapi_extra": {
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": RerankBody.model_json_schema()}},
            }
        },
    }
    app.post("/rerank", **docs)(rerank)
    app.post("/v1/rerank", **docs)(rerank)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ready"}  # the system is loaded before the server accepts

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused past `limit` bytes: by its Content-Length before reading, and by what
    actually arrives (a chunked body has no length)."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > limit):
        raise BadRequest(413, "body", f"over {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BadRequest(413, "body", f"over {limit} bytes")
    return bytes(body)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="r2r serve",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("system", type=Path, help="a saved system folder (system.json)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="default %(default)s")
    parser.add_argument(
        "--device", default="cpu", help="cpu, cuda, cuda:N or auto (CUDA where available)"
    )
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        default=None,
        help="the backbone's dtype (default: the one the system was saved with)",
    )
    parser.add_argument(
        "--graceful-timeout",
        type=int,
        default=None,
        help="on SIGTERM, seconds to wait for the requests in flight before cutting them "
        "(default: wait for all)",
    )
    parser.add_argument("--log-level", default="info", help="uvicorn's (default %(default)s)")
    for name in ("max_documents", "max_body_bytes", "max_text_chars", "max_batch_tokens"):
        flag = f"--{name.replace('_', '-')}"
        parser.add_argument(
            flag, type=int, default=getattr(Limits, name), help="default %(default)s"
        )
    parser.add_argument(
        "--max-wait-ms", type=float, default=Limits.max_wait_ms, help="default %(default)s"
    )
    parser.add_argument(
        "--long-text",
        choices=("truncate", "refuse"),
        default=Limits.long_text,
        help="a query or document over --max-text-chars (default %(default)s)",
    )
    args = parser.parse_args(argv)
    for name in ("max_documents", "max_body_bytes", "max_text_chars", "max_batch_tokens"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.max_wait_ms < 0:
        parser.error("--max-wait-ms must be at least 0")
    if args.graceful_timeout is not None and args.graceful_timeout < 0:
        parser.error("--graceful-timeout must be at least 0")
    limits = Limits(
        args.max_documents,
        args.max_body_bytes,
        args.max_text_chars,
        args.long_text,
        args.max_batch_tokens,
        args.max_wait_ms,
    )
    try:
        device = resolve_device(args.device)
    except ValueError as err:
        parser.error(f"--device: {err}")
    try:  # the model loads before the server accepts: /health answers only when ready
        system = RoutedReranker.load(args.system, device=device, dtype=args.dtype)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # uvicorn handles SIGTERM and SIGINT (stop accepting, finish the requests in flight), then
    # raises the signal again under the handler found before it: so SIGTERM ends in exit 0.
    signal.signal(signal.SIGTERM, stopped)
    uvicorn.run(
        create_app(system, limits),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        timeout_graceful_shutdown=args.graceful_timeout,
    )
    return 0


def stopped(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


if __name__ == "__main__":
    raise SystemExit(main())

"""`python -m r2r.serve`: a saved system over real HTTP on 127.0.0.1, in a subprocess."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch
from omegaconf import OmegaConf

from r2r.cli import main as cli_main
from r2r.fusion import Fusion
from r2r.models.backbones import load_tiny
from r2r.models.experts import ExpertBank, add_lora, save_adapter
from r2r.models.templates import QWEN3_RERANKER
from r2r.routing import RandomRouter
from r2r.routing.system import RerankResult, RoutedReranker
from r2r.serve import BadRequest, Batcher, Job, Limits, Metrics, parse_request
from tests.routing.test_rerank_cli import TINY  # the tiny backbone's saved config

ROOT = Path(__file__).resolve().parents[1]
DOMAINS = ("legal", "medical")
DOCS = ["the court granted bail", "aspirin 75 mg daily", "the appeal was dismissed", "dividend"]
LIMITS = ["--max-documents", "8", "--max-body-bytes", "4000", "--max-text-chars", "300"]


def tiny():
    return load_tiny("qwen", template=QWEN3_RERANKER, seed=0)


def build_system(root: Path) -> Path:
    """Two random tiny-Qwen LoRA experts, a seeded random router and fusion weights, saved."""
    cfg = OmegaConf.merge(
        OmegaConf.load(ROOT / "conf" / "config.yaml"),
        OmegaConf.load(ROOT / "conf" / "backbone" / "tiny_qwen.yaml"),
    )
    adapters = {}
    for k, domain in enumerate(DOMAINS):
        model = add_lora(tiny().model, **{**OmegaConf.to_container(cfg.lora), "r": 4, "alpha": 8})
        gen = torch.Generator().manual_seed(k)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_" in name:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
        adapters[domain] = save_adapter(model, root / "experts" / domain)
    bank = ExpertBank(
        tiny(),
        adapters,
        inputs=OmegaConf.to_container(cfg.inputs),
        batch_size=cfg.datamodule.eval_batch_size,
        scorer=OmegaConf.to_container(cfg.scorer),
    )
    fusion = Fusion("interpolate", {"legal": 0.3, "medical": 0.5}, 60, "ndcg@10")
    system = RoutedReranker(
        bank, RandomRouter(DOMAINS, seed=0), threshold=0.0, backbone_config=TINY, fusion=fusion
    )
    return system.save(root / "system")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(folder: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    command = [sys.executable, "-m", "r2r.serve", str(folder), "--host", "127.0.0.1"]
    proc = subprocess.Popen(
        [*command, "--port", str(port), "--log-level", "warning", *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited {proc.returncode}: {proc.stdout.read().decode()}")
        try:
            if httpx.get(f"{url}/health", timeout=1).json() == {"status": "ready"}:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the server did not become ready within 60 s")


@pytest.fixture(scope="module")
def system_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_system(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def system(system_dir: Path) -> RoutedReranker:
    return RoutedReranker.load(system_dir)


@pytest.fixture(scope="module")
def served(system_dir: Path) -> Iterator[tuple[subprocess.Popen, str]]:
    # A longer batching window than the default, so concurrent requests surely share one.
    proc, url = start(system_dir, *LIMITS, "--max-wait-ms", "20")
    yield proc, url
    if proc.poll() is None:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def server(served: tuple[subprocess.Popen, str]) -> str:
    return served[1]


def expected(system: RoutedReranker, body: dict) -> dict:
    docs = [d if isinstance(d, str) else d["text"] for d in body["documents"]]
    scores = (
        [d["score"] for d in body["documents"]] if isinstance(body["documents"][0], dict) else None
    )
    want = system.rerank(
        body["query"],
        docs,
        body.get("top_n"),
        first_stage_scores=scores,
        expert=body.get("domain"),
    )
    results = [{"index": r.index, "relevance_score": r.score} for r in want.ranking]
    if body.get("return_documents"):
        for row in results:
            row["document"] = {"text": docs[row["index"]]}
    return {
        "results": results,
        "expert": want.expert,
        "probabilities": dict(want.probabilities),
        "fused": want.fused,
    }


def same(got: dict, want: dict) -> None:
    assert [r["index"] for r in got["results"]] == [r["index"] for r in want["results"]]
    assert [r["relevance_score"] for r in got["results"]] == pytest.approx(
        [r["relevance_score"] for r in want["results"]], abs=1e-5
    )
    assert [r.get("document") for r in got["results"]] == [
        r.get("document") for r in want["results"]
    ]
    assert {k: got[k] for k in ("expert", "fused")} == {k: want[k] for k in ("expert", "fused")}
    # A router's probabilities from a batch of queries round apart in the last float bits.
    assert got["probabilities"] == pytest.approx(want["probabilities"], abs=1e-6)


BODIES = [
    {"query": "bail granted to the accused", "documents": DOCS},
    {"query": "aspirin dose", "documents": DOCS, "top_n": 2, "return_documents": True},
    {"query": "aspirin dose", "documents": DOCS, "domain": "legal", "top_n": 3},
    {"query": "aspirin dose", "documents": DOCS, "domain": "medical"},
    {
        "query": "appeal heard",
        "documents": [{"text": d, "score": s} for d, s in zip(DOCS, [3.0, 1, 7.5, 0], strict=True)],
        "return_documents": True,
    },
]


@pytest.mark.parametrize("path", ["/rerank", "/v1/rerank"])
@pytest.mark.parametrize("body", BODIES)
def test_rerank_equals_the_python_api(
    server: str, system: RoutedReranker, path: str, body: dict
) -> None:
    got = httpx.post(server + path, json=body, timeout=30)
    assert got.status_code == 200, got.text
    same(got.json(), expected(system, body))
    if "domain" in body:
        assert got.json()["expert"] == body["domain"]
    if isinstance(body["documents"][0], dict):
        assert got.json()["fused"] is True


GOOD = {"query": "q", "documents": ["a", "b"]}


# Each bad request (started with LIMITS) and the start of its error: (body, status, error).
BAD_INPUTS = [
    (b"{not json", 400, "body: not valid JSON"),
    (b"[1, 2]", 400, "body: must be a JSON object"),
    (b"[" * 3000, 400, "body: nested too deeply"),
    (b'{"query": "q", "documents": ["\xff"]}', 400, "body: not valid JSON"),
    ({"documents": ["a"]}, 422, "query: must be a non-empty string"),
    ({"query": "  ", "documents": ["a"]}, 422, "query: must be a non-empty string"),
    ({"query": 3, "documents": ["a"]}, 422, "query: must be a non-empty string"),
    ({"query": "q", "documents": []}, 422, "documents: must be a non-empty list"),
    ({"query": "q", "documents": "a"}, 422, "documents: must be a non-empty list"),
    ({"query": "q", "documents": ["a", 5]}, 422, "documents[1]: must be a string or"),
    ({"query": "q", "documents": [{"txt": "a"}]}, 422, "documents[0].text: must be a non"),
    ({"query": "q", "documents": ["d"] * 9}, 422, "documents: 9 documents; at most 8"),
    ({**GOOD, "top_n": 0}, 422, "top_n: must be an integer of at least 1"),
    ({**GOOD, "top_n": "2"}, 422, "top_n: must be an integer of at least 1"),
    ({**GOOD, "return_documents": "yes"}, 422, "return_documents: must be true or false"),
    ({**GOOD, "domain": "tax"}, 422, "domain: 'tax' is not an expert"),
    (
        {"query": "q", "documents": [{"text": "a", "score": 1}, {"text": "b"}]},
        422,
        "documents[1].score: missing",
    ),
    (
        {"query": "q", "documents": [{"text": "a", "score": True}]},
        422,
        "documents[0].score: must be a finite number",
    ),
    ({"query": "q", "documents": ["x" * 5000]}, 413, "body: over 4000 bytes"),
]


def check_bad_input(server: str, content: bytes | dict, status: int, error: str) -> None:
    kwargs = {"content": content} if isinstance(content, bytes) else {"json": content}
    got = httpx.post(f"{server}/rerank", timeout=30, **kwargs)
    assert got.status_code == status, got.text
    assert got.json()["error"].startswith(error)
    assert httpx.post(f"{server}/rerank", json=GOOD, timeout=30).status_code == 200


@pytest.mark.parametrize(("content", "status", "error"), BAD_INPUTS)
def test_bad_input_is_a_4xx_json_error_and_the_server_goes_on(
    server: str, content: bytes | dict, status: int, error: str
) -> None:
    check_bad_input(server, content, status, error)


def test_a_body_over_the_limit_is_refused_without_a_content_length(server: str) -> None:
    def chunks() -> Iterator[bytes]:  # a chunked upload: no Content-Length to check
        yield b'{"query": "q", "documents": ["'
        for _ in range(10):
            yield b"x" * 500
        yield b'"]}'

    got = httpx.post(f"{server}/rerank", content=chunks(), timeout=30)
    assert (got.status_code, got.json()) == (413, {"error": "body: over 4000 bytes"})


def test_long_texts_are_truncated_by_default(server: str, system: RoutedReranker) -> None:
    body = {"query": "q", "documents": ["y" * 400, "z"], "return_documents": True}
    got = httpx.post(f"{server}/rerank", json=body, timeout=30).json()
    same(got, expected(system, {**body, "documents": ["y" * 300, "z"]}))


def test_openapi_documents_the_endpoints(server: str) -> None:
    spec = httpx.get(f"{server}/openapi.json", timeout=30).json()
    assert {"/rerank", "/v1/rerank", "/health", "/metrics"} <= set(spec["paths"])
    body = spec["paths"]["/v1/rerank"]["post"]["requestBody"]["content"]["application/json"]
    assert {"query", "documents"} <= set(body["schema"]["required"])
    assert httpx.get(f"{server}/docs", timeout=30).status_code == 200


def check_concurrent_clients(server: str, system: RoutedReranker) -> None:
    """32 clients x 10 requests at once: every answer equals the Python API's, and some
    model calls held several requests (the server's own metrics say so). Run on the
    system `python run.py debug=fast` saves (test_pipeline), once per suite."""
    bodies = [
        {"query": f"query {i} about bail", "documents": DOCS[: 1 + i % 4], "top_n": 2}
        for i in range(8)
    ]
    wants = [expected(system, body) for body in bodies]
    before = httpx.get(f"{server}/metrics", timeout=30).text

    def client(k: int) -> int:
        with httpx.Client(base_url=server, timeout=60) as http:
            for i in range(10):
                j = (k + i) % len(bodies)
                got = http.post("/v1/rerank", json=bodies[j])
                assert got.status_code == 200, got.text
                same(got.json(), wants[j])
        return 10

    with ThreadPoolExecutor(32) as pool:
        assert sum(pool.map(client, range(32))) == 320
    metrics = httpx.get(f"{server}/metrics", timeout=30).text
    values, old = metric_values(metrics), metric_values(before)
    calls = values["r2r_batch_requests_count"] - old.get("r2r_batch_requests_count", 0)
    requests = values["r2r_batch_requests_sum"] - old.get("r2r_batch_requests_sum", 0)
    # Fewer model calls than requests: some batches held several requests.
    assert 0 < calls < requests
    ok = 'r2r_requests_total{endpoint="/v1/rerank",status="200"}'
    assert values[ok] - old.get(ok, 0) == 320
    assert "r2r_expert_queries_total" in metrics
    assert "r2r_request_seconds_bucket" in metrics


def metric_values(text: str) -> dict[str, float]:
    return {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line.startswith("r2r_") and " " in line
    }


class HeldRequest:
    """A /rerank request held in flight: its chunked upload pauses after the first chunk
    until `release`; `answer` then holds its response, or the transport error."""

    def __init__(self, url: str) -> None:
        self.resume, started, self.answer = threading.Event(), threading.Event(), {}

        def body() -> Iterator[bytes]:
            yield b'{"query": "bail", "documents": ["the court granted bail", '
            started.set()
            self.resume.wait(30)
            yield b'"aspirin"]}'

        def post() -> None:
            try:
                self.answer["response"] = httpx.post(f"{url}/rerank", content=body(), timeout=30)
            except httpx.HTTPError as err:
                self.answer["error"] = err

        self.thread = threading.Thread(target=post)
        self.thread.start()
        assert started.wait(30)
        time.sleep(0.3)

    def release(self) -> None:
        self.resume.set()
        self.thread.join(timeout=30)


def check_sigterm(proc: subprocess.Popen, url: str) -> None:
    """SIGTERM while a request is in flight (held there by pausing its chunked upload across
    the signal): no new connections, the request is answered, exit 0."""
    held = HeldRequest(url)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    with pytest.raises(httpx.ConnectError):  # no new connections once shutting down
        httpx.get(f"{url}/health", timeout=5)
    assert proc.poll() is None  # still finishing the request in flight
    held.release()
    assert proc.wait(timeout=30) == 0, proc.stdout.read().decode()
    assert held.answer["response"].status_code == 200
    assert len(held.answer["response"].json()["results"]) == 2


def test_sigterm_finishes_the_request_in_flight_and_exits_0(served: tuple) -> None:
    check_sigterm(*served)  # last in this file: it stops the module's server


def test_long_texts_can_be_refused() -> None:
    refuse = Limits(max_text_chars=5, long_text="refuse")
    with pytest.raises(BadRequest, match=r"documents\[1\]: 6 characters; at most 5") as err:
        parse_request(
            b'{"query": "q", "documents": ["a", "bbbbbb"]}', refuse, DOMAINS, oracle=False
        )
    assert err.value.status == 422
    job = parse_request(b'{"query": "qqqqqqq", "documents": ["a"]}', Limits(max_text_chars=5),
                        DOMAINS, oracle=False)  # fmt: skip
    assert job.query == "qqqqq"


def test_an_oracle_system_needs_each_requests_domain() -> None:
    body = b'{"query": "q", "documents": ["a"]}'
    with pytest.raises(BadRequest, match="domain: required: this system's router is the oracle"):
        parse_request(body, Limits(), DOMAINS, oracle=True)
    job = parse_request(body[:-1] + b', "domain": "legal"}', Limits(), DOMAINS, oracle=True)
    assert job.domain == "legal"


def test_the_batcher_gathers_jobs_up_to_the_token_budget() -> None:
    job = Job("q" * 40, ("d" * 40,) * 2, None, None, None, False)  # 40 + 1 tokens
    calls: list[int] = []

    def score(jobs: list[Job]) -> list[RerankResult]:
        calls.append(len(jobs))
        if len(calls) == 2:
            raise RuntimeError("out of memory")
        return [RerankResult(str(len(calls)), {}, ())] * len(jobs)

    async def serve() -> list:
        batcher = Batcher(score, Limits(max_batch_tokens=100, max_wait_ms=50), Metrics())
        task = asyncio.create_task(batcher.run())
        got = await asyncio.gather(*(batcher.submit(job) for _ in range(5)), return_exceptions=True)
        task.cancel()
        return [r.expert if isinstance(r, RerankResult) else str(r) for r in got]

    # Two jobs fit 100 tokens: 5 concurrent jobs take three model calls, in arrival order; a
    # failed call fails its own jobs only.
    assert asyncio.run(serve()) == ["1", "1", "out of memory", "out of memory", "3"]
    assert calls == [2, 2, 1]


def test_the_r2r_command_dispatches_serve(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli_main(["serve", "--help"])
    assert done.value.code == 0
    assert "usage: r2r serve" in capsys.readouterr().out
    assert cli_main(["serve", "/no/such/system"]) == 2
    assert "holds no system.json" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["serve", "/no/such/system", "--max-documents", "0"])
    assert "--max-documents must be at least 1" in capsys.readouterr().err


def test_a_system_loads_in_another_dtype(system_dir: Path, system: RoutedReranker) -> None:
    """`r2r serve --dtype bfloat16` on a system saved in float32: the backbone in bf16, the
    same expert and nearly the same scores; a bad name fails before the weights load."""
    half = RoutedReranker.load(system_dir, dtype="bfloat16")
    weights = dict(half.bank.model.named_parameters())
    # The backbone in bf16; peft keeps the LoRA weights in float32 (its autocast default).
    assert {p.dtype for n, p in weights.items() if "lora_" not in n} == {torch.bfloat16}
    want, got = system.rerank("bail granted", DOCS), half.rerank("bail granted", DOCS)
    assert got.expert == want.expert
    by_index = {r.index: r.score for r in got.ranking}
    assert [by_index[r.index] for r in want.ranking] == pytest.approx(
        [r.score for r in want.ranking], abs=0.05
    )
    with pytest.raises(ValueError, match="backbone dtype 'float64'"):
        RoutedReranker.load(system_dir, dtype="float64")
    with pytest.raises(ValueError, match="pass dtype or backbone, not both"):
        RoutedReranker.load(system_dir, backbone=tiny(), dtype="bfloat16")


def test_a_graceful_timeout_cuts_a_request_held_past_it(system_dir: Path) -> None:
    """`--graceful-timeout 1`: SIGTERM with an upload paused in flight; the server stops
    waiting after a second, cuts the request (a 500) and exits 0."""
    proc, url = start(system_dir, "--graceful-timeout", "1")
    held = HeldRequest(url)
    try:
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, proc.stdout.read().decode()
        assert time.monotonic() - signalled < 15  # not held by the paused request
    finally:
        held.release()
        if proc.poll() is None:
            proc.kill()
    # uvicorn cancels the request and answers 500 where the connection is still open.
    answer = held.answer
    assert answer["response"].status_code == 500 if "response" in answer else answer["error"]


def test_a_negative_graceful_timeout_is_refused(system_dir: Path) -> None:
    with pytest.raises(SystemExit) as err:
        cli_main(["serve", str(system_dir), "--graceful-timeout", "-1"])
    assert err.value.code == 2

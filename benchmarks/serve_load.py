"""Load on `r2r serve`: N concurrent clients over real HTTP on loopback against one request at
a time through `RoutedReranker.rerank` in-process, on the same requests.

    python run.py                                   # saves outputs/<date>/<time>/system
    python benchmarks/serve_load.py outputs/<date>/<time>/system --clients 32 --requests 10

Requests are the test candidate lists of the run's own data (the query and its candidates'
texts, as a RAG application sends them), drawn in a seeded order. The server is started as a
subprocess on a free 127.0.0.1 port (`--serve-arg` passes options through, e.g.
`--serve-arg=--max-wait-ms=10`) and stopped with SIGTERM. Prints throughput, p50/p95/p99
latency, the batch sizes the server reports in /metrics, the throughput ratio against
in-process reranking one request at a time, and the ceiling of that ratio on this machine
(the same requests in-process, `--clients` per `rerank_batch` call: no HTTP, no batching
wait); writes benchmarks/results/serve-load-<name>.json.
Traffic goes to 127.0.0.1 only, and every loop is bounded in count (`--requests` per client)
and in time (`--timeout` per request).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from hydra import compose, initialize_config_dir

from r2r.config import register_resolvers
from r2r.files import write_json_atomic
from r2r.pipeline import prepare
from r2r.routing.system import RoutedReranker

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def requests_of(overrides: list[str], count: int, seed: int) -> list[dict[str, Any]]:
    """`count` requests drawn (seeded, with repeats when the lists are fewer) from the test
    candidate lists of the setup `overrides` name (the run's own data)."""
    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=[
                f"paths.root={ROOT}",
                f"paths.output={tempfile.mkdtemp(prefix='serve-load-')}",
                "progress.interval_s=null",
                *overrides,
            ],
        )
    job = prepare(cfg, [])
    lists = job.data.candidate_lists("test")
    rng = random.Random(seed)
    chosen = [lists[rng.randrange(len(lists))] for _ in range(count)]
    return [{"query": c.query.text, "documents": [p.content for p in c.passages]} for c in chosen]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def wait_ready(url: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode} before it was ready")
        try:
            if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the server was not ready within {timeout} s")


def batch_sizes(metrics: str) -> dict[str, float]:
    """Mean batch size from any `*batch*_sum` / `*batch*_count` pair in /metrics."""
    found: dict[str, float] = {}
    for name, value in re.findall(
        r"^(\w*batch\w*_(?:sum|count))(?:\{[^}]*\})? (\S+)$", metrics, re.M
    ):
        found[name] = found.get(name, 0.0) + float(value)
    out = {}
    for name, total in found.items():
        if name.endswith("_sum") and (count := found.get(name[:-4] + "_count")):
            out[name[:-4]] = total / count
    return out


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("system", type=Path, help="a saved system folder (outputs/.../system)")
    p.add_argument("--clients", type=int, default=32, help="concurrent HTTP clients")
    p.add_argument("--requests", type=int, default=10, help="requests per client")
    p.add_argument("--inprocess", type=int, default=64, help="requests timed in-process")
    p.add_argument(
        "--setup",
        nargs="*",
        default=["experiment=tiny_synthetic"],
        help="Hydra overrides naming the data the requests come from",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per request at most")
    p.add_argument("--serve-arg", action="append", default=[], help="an option for r2r.serve")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args()

    total = args.clients * args.requests
    pool = requests_of(args.setup, max(total, args.inprocess), args.seed)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    command = [
        sys.executable,
        "-m",
        "r2r.serve",
        str(args.system),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *args.serve_arg,
    ]
    server = subprocess.Popen(command, env=env)
    try:
        wait_ready(url, server, timeout=300)
        latencies: list[float] = []
        errors: list[str] = []
        lock = threading.Lock()

        def client(k: int) -> None:
            with httpx.Client(base_url=url, timeout=args.timeout) as http:
                for i in range(args.requests):
                    body = pool[k * args.requests + i]
                    start = time.perf_counter()
                    response = http.post("/rerank", json=body)
                    elapsed = time.perf_counter() - start
                    with lock:
                        latencies.append(elapsed)
                        if response.status_code != 200:
                            errors.append(f"{response.status_code}: {response.text[:200]}")

        threads = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        served_seconds = time.perf_counter() - started
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=120)

    system = RoutedReranker.load(args.system)
    system.rerank(**pool[0])  # warm-up
    started = time.perf_counter()
    for body in pool[: args.inprocess]:
        system.rerank(body["query"], body["documents"])
    alone_seconds = (time.perf_counter() - started) / args.inprocess
    # The most batching can give on this machine: the same requests in-process, `clients`
    # per rerank_batch call (no HTTP, no waiting for a batch to fill).
    batched = [pool[i : i + args.clients] for i in range(0, args.inprocess, args.clients)]
    started = time.perf_counter()
    for bodies in batched:
        system.rerank_batch([(b["query"], b["documents"]) for b in bodies])
    batch_seconds = (time.perf_counter() - started) / sum(map(len, batched))

    served_rps = total / served_seconds
    result = {
        "system": str(args.system),
        "clients": args.clients,
        "requests": total,
        "errors": errors,
        "served_requests_per_s": served_rps,
        "latency_s": {q: percentile(latencies, q) for q in (50, 95, 99)},
        "mean_batch_sizes": batch_sizes(metrics),
        "inprocess_one_at_a_time_requests_per_s": 1 / alone_seconds,
        "throughput_ratio": served_rps * alone_seconds,
        # Ceiling of the ratio here: in-process batches of `clients` requests.
        "inprocess_batched_requests_per_s": 1 / batch_seconds,
        "batching_ceiling_ratio": alone_seconds / batch_seconds,
        "serve_args": args.serve_arg,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "server_exit_code": server.returncode,
    }
    print(
        f"{args.clients} clients x {args.requests} requests: {served_rps:.1f} req/s served "
        f"({len(errors)} errors), p50 {result['latency_s'][50] * 1000:.0f} ms, p95 "
        f"{result['latency_s'][95] * 1000:.0f} ms, p99 {result['latency_s'][99] * 1000:.0f} ms; "
        f"in-process one at a time {1 / alone_seconds:.1f} req/s; ratio "
        f"{result['throughput_ratio']:.2f}x; in-process batches of {args.clients} "
        f"{1 / batch_seconds:.1f} req/s (the ceiling of the ratio here: "
        f"{result['batching_ceiling_ratio']:.2f}x); mean batch sizes {result['mean_batch_sizes']}; "
        f"server exit {server.returncode}"
    )
    path = args.out / f"serve-load-{args.system.parent.name or 'system'}.json"
    write_json_atomic(path, result)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

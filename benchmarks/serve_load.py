"""Load benchmark of `sparsebert serve`: C concurrent clients on loopback send POST /v1/embeddings requests of mixed
lengths, with dynamic batching on and then off (`--no-batching`), each against a fresh server process; reports
throughput, p50/p99 latency, errors and the mean engine batch size (from the server's /metrics), as a Markdown
table and a plot.

    python benchmarks/serve_load.py MODEL.sbert [--clients 64] [--requests 1280] [--threads 2]
        [--markdown serve.md] [--json serve.json] [--plot serve.png]

Bounded in count (--requests in all, per mode) and time (--timeout seconds per mode); traffic goes to 127.0.0.1
only. Needs the serve extra (`pip install "sparsebert[serve]"`), httpx, and matplotlib for --plot.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from sparsebert.bench.environment import cpu_brand, git_commit

WORDS = ("sparse encoders answer search queries on ordinary processors while pruned weights skip most of the "
         "multiplications that dense runtimes still perform for every token of every request").split()


# Word counts of the request mixes: "search" is retrieval traffic, three queries (2-16 words) to one passage
# (30-120 words); "passages" draws 4-120 words uniformly (about 6-160 tokens, 89 on average with MiniLM).
MIXES = {"search": ((0.75, 2, 16), (0.25, 30, 120)), "passages": ((1.0, 4, 120),)}


def texts_of_mixed_lengths(count: int, mix: str = "search", seed: int = 0) -> list[str]:
    """``count`` texts whose lengths follow ``mix`` (MIXES), shuffled: short and long requests interleaved."""
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        pick, low, high = rng.random(), 0, 0
        for share, low, high in MIXES[mix]:
            if pick < share:
                break
            pick -= share
        texts.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high))))
    return texts


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, port: int, threads: int, batching: bool, extra: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "sparsebert", "serve", model, "--host", "127.0.0.1", "--port", str(port),
           "--threads", str(threads), *extra] + ([] if batching else ["--no-batching"])
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited ({proc.returncode}): {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the server did not become healthy within 120 s")


def stop_server(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def batch_size_totals(metrics_text: str) -> tuple[float, float]:
    """(sum, count) of the server's batch-size histogram (the metric whose name ends in batch_size)."""
    def total(part: str) -> float:
        found = re.findall(rf"^\w*batch_size_{part}(?:\{{[^}}]*\}})? ([0-9.e+-]+)$", metrics_text, re.M)
        return sum(float(v) for v in found)
    return total("sum"), total("count")


async def drive(base: str, model_name: str, texts: list[str], clients: int, timeout: float) -> dict:
    """``clients`` concurrent clients share the request list; each sends its next request when its last one
    returned (closed loop). Each client first connects and sends one untimed request; the clock starts when all
    have (so connection set-up is not counted). Returns latencies (s), errors and wall time."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for t in texts:
        queue.put_nowait(t)
    latencies: list[float] = []
    errors: list[str] = []
    ready, go = [0], asyncio.Event()

    async def post(http: httpx.AsyncClient, text: str) -> str | None:
        try:
            r = await http.post("/v1/embeddings", json={"model": model_name, "input": text})
            return None if r.status_code == 200 and len(r.json()["data"]) == 1 else f"HTTP {r.status_code}"
        except httpx.HTTPError as exc:
            return type(exc).__name__

    async def client() -> None:
        # One connection per simulated client, as separate users have: a pool shared by 64 clients costs the load
        # generator more CPU than the server when responses arrive in bursts (batches).
        async with httpx.AsyncClient(base_url=base, timeout=timeout) as http:
            warm = await post(http, texts[0])
            if warm is not None:
                errors.append(f"warm-up: {warm}")
            ready[0] += 1
            if ready[0] == clients:
                go.set()
            await go.wait()
            while True:
                try:
                    text = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                start = time.perf_counter()
                error = await post(http, text)
                if error is None:
                    latencies.append(time.perf_counter() - start)
                else:
                    errors.append(error)

    tasks = asyncio.gather(*(client() for _ in range(clients)))
    await asyncio.wait_for(go.wait(), timeout)
    start = time.perf_counter()
    await asyncio.wait_for(tasks, timeout)
    wall = time.perf_counter() - start
    return {"latencies": latencies, "errors": errors, "wall": wall}


def measure(model: str, texts: list[str], clients: int, threads: int, batching: bool, timeout: float,
            extra: list[str]) -> dict:
    port = free_port()
    proc = start_server(model, port, threads, batching, extra)
    base = f"http://127.0.0.1:{port}"
    try:
        name = httpx.get(f"{base}/info", timeout=10).json().get("model_id", Path(model).stem)
        asyncio.run(drive(base, name, texts[:clients], clients, timeout))  # warm-up: every client once
        before = batch_size_totals(httpx.get(f"{base}/metrics", timeout=10).text)
        run = asyncio.run(drive(base, name, texts, clients, timeout))
        after = batch_size_totals(httpx.get(f"{base}/metrics", timeout=10).text)
    finally:
        exit_code = stop_server(proc)
    lat = sorted(run["latencies"])
    return {
        "batching": batching, "requests": len(texts), "ok": len(lat), "errors": len(run["errors"]),
        "error_kinds": sorted(set(run["errors"])), "wall_s": run["wall"], "throughput_rps": len(lat) / run["wall"],
        "p50_ms": 1e3 * statistics.median(lat) if lat else None,
        "p99_ms": 1e3 * lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else None,
        # Sequences per engine call during the timed run (its warm-up requests included: one per client).
        "mean_batch_size": (after[0] - before[0]) / (after[1] - before[1]) if after[1] > before[1] else None,
        "server_exit": exit_code,
    }


def markdown(results: list[dict], command: str, header: str) -> str:
    on, off = (next(r for r in results if r["batching"] is b) for b in (True, False))
    rows = ["| dynamic batching | requests ok | errors | throughput (req/s) | p50 latency | p99 latency | mean batch |",
            "|---|---|---|---|---|---|---|"]
    for r in (off, on):
        batch = f"{r['mean_batch_size']:.1f}" if r["mean_batch_size"] is not None else "—"
        rows.append(f"| {'on' if r['batching'] else 'off'} | {r['ok']} / {r['requests']} | {r['errors']} | "
                    f"{r['throughput_rps']:.1f} | {r['p50_ms']:.0f} ms | {r['p99_ms']:.0f} ms | {batch} |")
    gain = on["throughput_rps"] / off["throughput_rps"]
    return "\n".join([header, "", *rows, "", f"Dynamic batching: {gain:.2f}x the throughput of one request per "
                      "engine call.", "", f"Reproduce with: `{command}`", ""])


def plot(results: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    labels = ["batching off", "batching on"]
    ordered = sorted(results, key=lambda r: r["batching"])
    a.bar(labels, [r["throughput_rps"] for r in ordered], color=["#999999", "#1f77b4"])
    a.set_ylabel("requests / s")
    a.set_title("throughput")
    width = 0.35
    xs = range(2)
    b.bar([x - width / 2 for x in xs], [r["p50_ms"] for r in ordered], width, label="p50")
    b.bar([x + width / 2 for x in xs], [r["p99_ms"] for r in ordered], width, label="p99")
    b.set_xticks(list(xs), labels)
    b.set_ylabel("ms")
    b.set_title("latency")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--requests", type=int, default=1280, help="requests per mode (default 1280)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per mode at most (default 600)")
    p.add_argument("--mix", choices=tuple(MIXES), default="search",
                   help="request lengths: search (3 queries of 2-16 words to 1 passage of 30-120; default) or "
                        "passages (4-120 words)")
    p.add_argument("--server-args", default="", help="more `sparsebert serve` options, e.g. '--max-wait-ms 2'")
    p.add_argument("--markdown")
    p.add_argument("--json")
    p.add_argument("--plot")
    args = p.parse_args(argv)
    texts = texts_of_mixed_lengths(args.requests, args.mix)
    extra = shlex.split(args.server_args)
    results = [measure(args.model, texts, args.clients, args.threads, b, args.timeout, extra) for b in (False, True)]
    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    mix = ", ".join(f"{share:.0%} of {low}-{high} words" for share, low, high in MIXES[args.mix])
    header = (f"`sparsebert serve` under load: {args.clients} concurrent clients on loopback, {args.requests} "
              f"`/v1/embeddings` requests per mode ({args.mix} mix: {mix}), {Path(args.model).name}, "
              f"{args.threads} engine threads, {cpu_brand()}, commit {git_commit() or '?'}, "
              f"{time.strftime('%Y-%m-%d')}")
    text = markdown(results, command, header)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"command": command, "results": results}, indent=2))
    if args.plot:
        plot(results, args.plot)
    return 0 if all(r["errors"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

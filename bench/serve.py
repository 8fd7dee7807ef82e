"""Load test of `bastion serve`: throughput and p50/p99 latency, with and without the runtime defense.

The service runs in a subprocess on 127.0.0.1 (an ephemeral port); clients in this process send
POST /v1/predict requests of real test inputs with 1, 16 and 64 concurrent connections, bounded by a
request count and a time limit per cell. Workloads: JSON bodies of 1 and 32 inputs, and .npy bodies of
32 inputs (no per-number parsing). The raw-model floor is measured in the same run, in this
process, before any server starts: the bare model's forward and the defense's ``decide`` on batches.

Goals (issue 9): the defense adds <= 3x latency at p99 (defended p99 / bare p99, same concurrency and
request size), and the service sustains the bare model's batch throughput within 20% (best bare
service inputs/s >= 0.8 x raw forward inputs/s at the micro-batch size the service reached).

Usage: python bench/serve.py --run runs/demo-quick [--requests 400] [--seconds 8] [--out bench/results]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch

from bastion.artifacts.bundle import export_bundle, load_bundle
from bastion.artifacts.results import environment
from bastion.data import load_dataset
from bastion.io import atomic_write_json


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def raw_floor(bundle_dir: Path, x: torch.Tensor, batch: int, repeats: int) -> dict[str, Any]:
    """Inputs/s of the bare forward and of the defense's decide at one batch size, and 1-input latency."""
    bundle = load_bundle(bundle_dir)
    assert bundle.defense is not None
    xb = x[:batch]

    def rate(fn: Any) -> float:
        with torch.inference_mode():
            fn(xb)
            started = time.perf_counter()
            for _ in range(repeats):
                fn(xb)
            return batch * repeats / (time.perf_counter() - started)

    def p99_single(fn: Any) -> float:
        times = []
        with torch.inference_mode():
            for i in range(200):
                started = time.perf_counter()
                fn(x[i % len(x)][None])
                times.append(time.perf_counter() - started)
        return percentile(times, 0.99)

    return {
        "batch": batch,
        "forward_inputs_per_s": rate(bundle.model),
        "decide_inputs_per_s": rate(bundle.defense.decide),
        "forward_p99_s": p99_single(bundle.model),
        "decide_p99_s": p99_single(bundle.defense.decide),
    }


class Server:
    """`python -m bastion serve BUNDLE` in a subprocess on 127.0.0.1."""

    def __init__(self, bundle: Path, defend: bool, threads: int) -> None:
        self.port = free_port()
        cmd = [sys.executable, "-m", "bastion", "serve", str(bundle), "--port", str(self.port), "--max-queue", "4096"]
        cmd += ["--threads", str(threads)]
        if not defend:
            cmd.append("--no-defense")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Server:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stderr.read().decode() if self.proc.stderr else ''}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server did not become ready within 120 s")

    def metrics(self) -> dict[str, float]:
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        out = {}
        for line in text.splitlines():
            if line.startswith(("bastion_batch_rows_sum ", "bastion_batch_rows_count ")):
                name, value = line.split()
                out[name] = float(value)
        return out

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Connection:
    """A minimal HTTP/1.1 keep-alive client over asyncio streams: the load generator must cost far less
    than the service it measures (httpx's async pool became the bottleneck at 64 connections)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, request: bytes) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        self.writer.write(request)
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = next(
            int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
        )
        await self.reader.readexactly(length)
        return status

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            await self.writer.wait_closed()


def http_post(body: bytes, ctype: str = "application/json") -> bytes:
    head = f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\n"
    head += f"Content-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


def encode(x: torch.Tensor, fmt: str) -> bytes:
    """One request body of the inputs x: JSON nested lists, or a .npy array."""
    if fmt == "json":
        return http_post(json.dumps({"inputs": x.tolist()}).encode())
    buf = io.BytesIO()
    np.save(buf, x.numpy())
    return http_post(buf.getvalue(), "application/x-npy")


async def load(port: int, requests: list[bytes], clients: int, n_requests: int, seconds: float) -> dict[str, Any]:
    """``clients`` connections sending requests back to back until n_requests or the time limit."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    sent = 0
    deadline = time.perf_counter() + seconds

    async def worker(k: int) -> None:
        nonlocal sent
        connection = Connection(port)
        try:
            while sent < n_requests and time.perf_counter() < deadline:
                sent += 1
                started = time.perf_counter()
                try:
                    status = str(await connection.post(requests[(k + sent) % len(requests)]))
                except (OSError, asyncio.IncompleteReadError) as exc:
                    status = type(exc).__name__
                    await connection.close()
                    connection = Connection(port)
                if status == "200":
                    latencies.append(time.perf_counter() - started)
                else:
                    errors[status] = errors.get(status, 0) + 1
        finally:
            await connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(clients)))
    wall = time.perf_counter() - started
    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": errors,
        "wall_s": wall,
        "requests_per_s": len(latencies) / wall,
        "p50_s": statistics.median(latencies) if latencies else None,
        "p99_s": percentile(latencies, 0.99) if latencies else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/demo-quick", help="run folder with a saved defense")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument(
        "--workloads", nargs="+", default=["json:1", "json:32", "npy:32"], help="BODY:INPUTS_PER_REQUEST"
    )
    parser.add_argument("--requests", type=int, default=400, help="per cell")
    parser.add_argument("--seconds", type=float, default=8.0, help="per cell")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, service and raw floor alike")
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    workloads = [(w.split(":")[0], int(w.split(":")[1])) for w in args.workloads]

    run = Path(args.run)
    if not run.is_dir():
        sys.exit(f"{run} does not exist: create it with `bastion demo --quick --out {run}`")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bastion-bench-serve-") as tmp:
        bundle_dir, digest = export_bundle(run, Path(tmp) / "bundle")
        bundle = load_bundle(bundle_dir)
        data = load_dataset(bundle.manifest["provenance"]["data"], seed=int(bundle.manifest["provenance"]["seed"]))
        x = data.test.x
        floors = {k: raw_floor(bundle_dir, x, min(k, len(x)), repeats=max(20, 2000 // k)) for k in (1, 32, 256)}
        cells: list[dict[str, Any]] = []
        for defend in (True, False):
            with Server(bundle_dir, defend, args.threads) as server:
                for fmt, k in workloads:
                    requests = [encode(x[i : i + k], fmt) for i in range(0, len(x) - k + 1, k)]
                    for clients in args.clients:
                        before = server.metrics()
                        cell = asyncio.run(load(server.port, requests, clients, args.requests, args.seconds))
                        after = server.metrics()
                        calls = after["bastion_batch_rows_count"] - before.get("bastion_batch_rows_count", 0)
                        rows = after["bastion_batch_rows_sum"] - before.get("bastion_batch_rows_sum", 0)
                        cell.update(
                            defense=defend,
                            format=fmt,
                            inputs_per_request=k,
                            inputs_per_s=cell["requests_per_s"] * k,
                            mean_batch_rows=rows / calls if calls else None,
                        )
                        cells.append(cell)
                        print(
                            f"defense={defend!s:5} {fmt:4} k={k:3} clients={clients:3}: "
                            f"{cell['inputs_per_s']:8.0f} inputs/s p99 {1000 * (cell['p99_s'] or 0):7.1f} ms "
                            f"errors {cell['errors']}",
                            flush=True,
                        )

    def find(defend: bool, fmt: str, k: int, clients: int) -> dict[str, Any]:
        match = (defend, fmt, k, clients)
        return next(c for c in cells if (c["defense"], c["format"], c["inputs_per_request"], c["clients"]) == match)

    ratios = []
    for fmt, k in workloads:
        for clients in args.clients:
            d, b = find(True, fmt, k, clients), find(False, fmt, k, clients)
            ratio = d["p99_s"] / b["p99_s"] if d["p99_s"] and b["p99_s"] else None
            ratios.append({"format": fmt, "inputs_per_request": k, "clients": clients, "p99_ratio": ratio})
    best_bare = max((c for c in cells if not c["defense"]), key=lambda c: c["inputs_per_s"])
    floor_batch = min(floors, key=lambda b: abs(b - (best_bare["mean_batch_rows"] or 1)))
    throughput_ratio = best_bare["inputs_per_s"] / floors[floor_batch]["forward_inputs_per_s"]
    best_defended = max((c for c in cells if c["defense"]), key=lambda c: c["inputs_per_s"])
    defended_batch = min(floors, key=lambda b: abs(b - (best_defended["mean_batch_rows"] or 1)))
    defended_ratio = best_defended["inputs_per_s"] / floors[defended_batch]["decide_inputs_per_s"]
    result = {
        "benchmark": "serve",
        "environment": environment(),
        "load_average": os.getloadavg(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "run": str(run),
        "bundle_digest": digest,
        "settings": vars(args),
        "raw_floor": floors,
        "cells": cells,
        "p99_ratio_defended_over_bare": ratios,
        "throughput": {
            "best_bare_service_inputs_per_s": best_bare["inputs_per_s"],
            "at": {k: best_bare[k] for k in ("format", "inputs_per_request", "clients", "mean_batch_rows")},
            "raw_forward_inputs_per_s": floors[floor_batch]["forward_inputs_per_s"],
            "raw_batch": floor_batch,
            "ratio": throughput_ratio,
        },
        "throughput_defended": {
            "best_defended_service_inputs_per_s": best_defended["inputs_per_s"],
            "raw_decide_inputs_per_s": floors[defended_batch]["decide_inputs_per_s"],
            "raw_batch": defended_batch,
            "ratio": defended_ratio,
        },
        "goals": {
            "p99_ratio_le_3": all(r["p99_ratio"] is not None and r["p99_ratio"] <= 3 for r in ratios),
            "throughput_within_20pct": throughput_ratio >= 0.8,
            "no_errors": all(not c["errors"] for c in cells),
        },
        "wall_time_s": time.perf_counter() - started,
    }
    out = Path(args.out)
    atomic_write_json(out / "serve.json", result)

    print()
    print(f"raw floor ({torch.get_num_threads()} torch threads): batch | forward inputs/s | decide inputs/s")
    for b, f in floors.items():
        print(f"  {b:5d} | {f['forward_inputs_per_s']:14.0f} | {f['decide_inputs_per_s']:13.0f}")
    print(
        "body | inputs/req | clients | bare inputs/s | bare p50/p99 ms "
        "| defended inputs/s | defended p50/p99 ms | p99 x"
    )
    for r in ratios:
        fmt, k, clients = r["format"], r["inputs_per_request"], r["clients"]
        b, d = find(False, fmt, k, clients), find(True, fmt, k, clients)
        print(
            f"{fmt:4} | {k:10d} | {clients:7d} | {b['inputs_per_s']:13.0f} "
            f"| {1000 * b['p50_s']:6.1f} / {1000 * b['p99_s']:6.1f} "
            f"| {d['inputs_per_s']:17.0f} | {1000 * d['p50_s']:8.1f} / {1000 * d['p99_s']:8.1f} | {r['p99_ratio']:.2f}"
        )
    t = result["throughput"]
    print(
        f"service/raw throughput: {t['best_bare_service_inputs_per_s']:.0f} / {t['raw_forward_inputs_per_s']:.0f} "
        f"inputs/s = {t['ratio']:.2f} (raw batch {t['raw_batch']})"
    )
    td = result["throughput_defended"]
    print(
        f"defended service/raw decide: {td['best_defended_service_inputs_per_s']:.0f} / "
        f"{td['raw_decide_inputs_per_s']:.0f} inputs/s = {td['ratio']:.2f} (raw batch {td['raw_batch']})"
    )
    print(f"goals: {result['goals']}  load average {os.getloadavg()[0]:.1f}")
    print(f"wrote {out / 'serve.json'} in {result['wall_time_s']:.0f}s")


if __name__ == "__main__":
    main()

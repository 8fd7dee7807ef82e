"""Prometheus metrics of one service instance (its own registry, so several apps can share a process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Requests, latency, per-decision input counts, batch sizes and queue depth."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "bastion_requests", "HTTP requests by route and status code", ["route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "bastion_request_latency_seconds",
            "Request latency by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.inputs = Counter(
            "bastion_inputs",
            "Inputs answered, by decision (accept / flag / reject)",
            ["decision"],
            registry=self.registry,
        )
        self.batch_rows = Histogram(
            "bastion_batch_rows",
            "Inputs per model call after micro-batching",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "bastion_queue_wait_seconds",
            "Time a request waited before its model call",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge("bastion_queue_depth", "Requests waiting for a model call", registry=self.registry)
        self.rejected_requests = Counter(
            "bastion_refused_requests",
            "Requests refused for load: queue full or timeout",
            ["reason"],
            registry=self.registry,
        )
        self.audit_errors = Counter(
            "bastion_audit_errors", "Flagged inputs that could not be written to the audit log", registry=self.registry
        )
        for decision in ("accept", "flag", "reject"):
            self.inputs.labels(decision=decision)

    def render(self) -> bytes:
        return generate_latest(self.registry)

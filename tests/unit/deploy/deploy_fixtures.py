"""Shared helpers of the deployment tests: a small flow schema, valid records, a live server."""

from __future__ import annotations

import threading
import time

import numpy as np
import pandas as pd

from bastion.data.tabular import Feature, FeatureKind, LinearRelation, TabularSchema

TABULAR = TabularSchema(
    name="flows",
    features=(
        Feature(name="proto", kind=FeatureKind.CATEGORICAL, values=("tcp", "udp"), mutable=False),
        Feature(name="sent", kind=FeatureKind.INTEGER, bounds=(0, 1000)),
        Feature(name="total", kind=FeatureKind.INTEGER, bounds=(0, 1000)),
        Feature(name="rate", kind=FeatureKind.CONTINUOUS, bounds=(0, 1)),
        Feature(name="flag", kind=FeatureKind.BINARY),
    ),
    label="label",
    classes=("benign", "malicious"),
    benign=0,
    relations=(LinearRelation.less_equal("sent", "total", name="sent <= total"),),
)

FLOW = {"proto": "tcp", "sent": 10, "total": 20, "rate": 0.5, "flag": 1}


def flow_records(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    total = rng.integers(0, 1001, n)
    return pd.DataFrame(
        {
            "proto": rng.choice(["tcp", "udp"], n).astype(object),
            "sent": (total * rng.random(n)).astype(np.int64),
            "total": total.astype(np.int64),
            "rate": rng.random(n),
            "flag": rng.integers(0, 2, n).astype(np.int64),
        }
    )


class LiveServer:
    """The service on a real socket: uvicorn in a thread, bound to 127.0.0.1 on an ephemeral port."""

    def __init__(self, app) -> None:
        import uvicorn

        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.port = 0

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the service did not start")
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

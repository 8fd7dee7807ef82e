"""The service on a real 127.0.0.1 socket: schema-driven fuzzing, disconnects, concurrent load."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from deploy_fixtures import LiveServer  # noqa: E402

from bastion.service import ServiceSettings, create_app  # noqa: E402
from bastion.service.engine import Predictor  # noqa: E402

FUZZ = settings(max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def live(image_bundle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, object]]:
    settings_ = ServiceSettings(
        max_inputs=8, max_body_bytes=64_000, audit_log=tmp_path_factory.mktemp("audit") / "audit.jsonl"
    )
    app = create_app(image_bundle, settings_)
    with LiveServer(app) as server:
        yield server, app


def test_openapi_driven_fuzzing_never_gives_a_server_error(live) -> None:
    schemathesis = pytest.importorskip("schemathesis")
    server, app = live
    schema = schemathesis.openapi.from_dict(app.app.openapi())
    seen: set[int] = set()
    positive, negative = schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE
    plan = (("/v1/predict", "POST", 30, (positive, negative)), ("/v1/model", "GET", 3, (positive,)))
    for path, method, n, modes in plan:  # GETs take no parameters: nothing to negate
        operation = schema[path][method]
        for mode in modes:

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(FUZZ, max_examples=n)
            def check(case) -> None:
                response = case.call(base_url=server.url, timeout=30)
                seen.add(response.status_code)
                assert response.status_code < 500, (case.body, response.text)

            check()
    assert 200 in seen and 422 in seen


_leaf = st.one_of(
    st.floats(),  # NaN, infinities, huge and subnormal values included
    st.floats(min_value=0, max_value=1),
    st.integers(),
    st.booleans(),
    st.text(max_size=3),
    st.none(),
)
_image = st.lists(st.lists(st.lists(_leaf, min_size=7, max_size=9), min_size=8, max_size=8), min_size=1, max_size=2)
_body = st.one_of(
    st.fixed_dictionaries({"inputs": st.lists(_image, min_size=0, max_size=10)}),
    st.dictionaries(st.text(max_size=8), st.lists(_image, max_size=2), max_size=3),
    st.recursive(st.none() | st.floats() | st.text(max_size=5), lambda c: st.lists(c) | st.dictionaries(st.text(), c)),
)


@given(body=_body, raw=st.binary(max_size=200), ctype=st.sampled_from(["application/json", "text/plain", ""]))
@FUZZ
def test_near_valid_and_raw_bodies_never_give_a_server_error(live, body, raw: bytes, ctype: str) -> None:
    server, _ = live
    with httpx.Client(base_url=server.url, timeout=30) as client:
        text = json.dumps(body, allow_nan=True).encode()
        for content in (text, raw):
            r = client.post("/v1/predict", content=content, headers={"content-type": ctype} if ctype else {})
            assert r.status_code < 500, (content[:200], r.text)
            if r.status_code == 200:
                assert len(r.json()["outputs"]) == len(body["inputs"])


def _raw_request(port: int, data: bytes) -> None:
    """Send bytes and hang up without reading the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)


def _predict_bytes(body: bytes, declared: int | None = None) -> bytes:
    length = len(body) if declared is None else declared
    head = f"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    return head.encode() + body


def test_service_keeps_answering_after_clients_disconnect(image_bundle, monkeypatch: pytest.MonkeyPatch) -> None:
    original = Predictor.__call__
    calls: list[int] = []

    def slow(self, x):
        calls.append(len(x))
        time.sleep(0.2)
        return original(self, x)

    monkeypatch.setattr(Predictor, "__call__", slow)
    body = json.dumps({"inputs": [[[[0.0] * 8] * 8]]}).encode()
    with LiveServer(create_app(image_bundle, ServiceSettings())) as server:
        _raw_request(server.port, _predict_bytes(body[:20], declared=len(body)))  # body cut off mid-way
        _raw_request(server.port, _predict_bytes(b"", declared=10_000)[:40])  # headers cut off mid-way
        _raw_request(server.port, _predict_bytes(body))  # full request, gone before the (slow) answer
        time.sleep(0.3)
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert client.get("/healthz").status_code == 200
            r = client.post("/v1/predict", content=body, headers={"content-type": "application/json"})
            assert r.status_code == 200 and len(r.json()["outputs"]) == 1
            assert client.get("/readyz").status_code == 200


def test_concurrent_clients_get_no_errors_and_share_model_calls(live) -> None:
    server, _ = live
    body = {"inputs": [[[[0.0] * 8] * 8]]}

    def client_session(_: int) -> list[int]:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            return [client.post("/v1/predict", json=body).status_code for _ in range(3)]

    with ThreadPoolExecutor(32) as pool:
        codes = [c for session in pool.map(client_session, range(32)) for c in session]
    assert codes == [200] * 96
    metrics = httpx.get(f"{server.url}/metrics").text
    rows = _sample(metrics, "bastion_batch_rows_sum")
    calls = _sample(metrics, "bastion_batch_rows_count")
    assert rows >= 96 and calls < rows  # micro-batching merged concurrent requests


def _sample(text: str, name: str) -> float:
    return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


def test_audit_log_rotation_bounds_disk_use(tmp_path: Path) -> None:
    from bastion.service.audit import AuditLog

    log = AuditLog(tmp_path / "audit.jsonl", max_bytes=2048, backups=2)
    for i in range(200):
        log.write([{"i": i, "pad": "x" * 50}])
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]
    assert all((tmp_path / f).stat().st_size <= 2048 for f in files)
    kept = [json.loads(line)["i"] for f in reversed(files) for line in (tmp_path / f).read_text().splitlines()]
    assert kept == list(range(200 - len(kept), 200))  # newest records, in order, every line whole


def test_a_trickled_body_times_out_with_408(image_bundle) -> None:
    with LiveServer(create_app(image_bundle, ServiceSettings(timeout_s=0.3))) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(_predict_bytes(b'{"inputs": [', declared=100))
            answer = s.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408") and b"not received within 0.3 s" in answer


def test_docs_pages_render_in_a_browser_without_network(live) -> None:
    """Headless Chromium (no route to the internet here) renders Swagger UI and ReDoc from the service's
    own assets: a page that still pointed at a CDN would come out blank."""
    import shutil
    import subprocess

    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("headless Chromium not installed (Debian package 'chromium'; .ci/run tries to install it)")
    server, _ = live
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=20000", "--dump-dom"]
    for page, rendered in (("/docs", 'class="opblock opblock-post'), ("/redoc", "Download OpenAPI specification")):
        dom = subprocess.run([chromium, *flags, server.url + page], capture_output=True, text=True, timeout=120).stdout
        assert rendered in dom and "/v1/predict" in dom, (page, dom[:1000])

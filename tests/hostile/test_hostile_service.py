"""The HTTP service under hostile requests: 4xx never 5xx, limits answered with the documented status,
slow-header clients dropped, an invalid port refused before anything prints "serving"."""

from __future__ import annotations

import io
import socket
import struct
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from bastion.artifacts.bundle import export_bundle, load_bundle
from bastion.cli import app as cli_app
from bastion.errors import ConfigError
from bastion.service.app import ServiceSettings, check_port, create_app, header_timeout_protocol

fastapi_testclient = pytest.importorskip("fastapi.testclient")


@pytest.fixture
def bundle(tiny_run: Path, tmp_path: Path):
    out, _ = export_bundle(tiny_run, tmp_path / "bundle")
    return load_bundle(out)


@pytest.fixture
def client(bundle):
    with fastapi_testclient.TestClient(create_app(bundle, ServiceSettings(max_inputs=4))) as c:
        yield c


def _npy_with_header(shape: tuple[int, ...], data_bytes: int) -> bytes:
    header = repr({"descr": "<f4", "fortran_order": False, "shape": shape}).encode()
    header += b" " * (-(len(header) + 11) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + b"\0" * data_bytes


@pytest.mark.parametrize(
    ("shape", "status"),
    [((10**12, 1, 8, 8), 413), ((2, 1, 8, 8), 422), ((1, 10**9, 8, 8), 422), ((3, 1, 8, 8), 422)],
)
def test_npy_header_is_checked_against_the_body_before_allocating(client, shape, status: int) -> None:
    body = _npy_with_header(shape, 1000)
    r = client.post("/v1/predict", content=body, headers={"content-type": "application/x-npy"})
    assert r.status_code == status, r.text
    assert r.json()["detail"][0]["loc"] == ["body"]


def test_valid_npy_still_answers(client) -> None:
    buf = io.BytesIO()
    np.save(buf, np.zeros((2, 1, 8, 8), dtype=np.float32))
    r = client.post("/v1/predict", content=buf.getvalue(), headers={"content-type": "application/x-npy"})
    assert r.status_code == 200 and len(r.json()["outputs"]) == 2


def test_too_many_files_is_413(client) -> None:
    files = [("files", (f"{i}.pgm", b"P5 8 8 255\n" + bytes(64), "image/x-portable-graymap")) for i in range(6)]
    r = client.post("/v1/predict", files=files)
    assert r.status_code == 413, r.text


def test_eps_upload_is_refused_without_running_a_decoder(client) -> None:
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n"
    r = client.post("/v1/predict", files=[("files", ("x.eps", eps, "application/postscript"))])
    assert r.status_code == 422 and "accepted format" in r.json()["detail"][0]["msg"]


def test_a_nan_anomaly_score_is_rejected_and_audited(bundle, tmp_path: Path, monkeypatch) -> None:
    assert bundle.defense is not None and bundle.defense.detector is not None
    monkeypatch.setattr(bundle.defense.detector, "score", lambda x: torch.full((len(x),), float("nan")))
    audit = tmp_path / "audit.jsonl"
    with fastapi_testclient.TestClient(create_app(bundle, ServiceSettings(audit_log=audit))) as c:
        r = c.post("/v1/predict", json={"inputs": [[[[0.0] * 8] * 8]]})
    assert r.status_code == 200
    (out,) = r.json()["outputs"]
    assert out["decision"] == "reject" and out["label"] is None
    assert '"decision":"reject"' in audit.read_text()


@pytest.mark.parametrize("port", [-1, 65536, 99999])
def test_invalid_port_is_a_clear_error(port: int, bundle) -> None:
    with pytest.raises(ConfigError, match="--port"):
        check_port(port)
    result = CliRunner().invoke(cli_app, ["serve", str(bundle.path), "--port", str(port)])
    assert result.exit_code == 2 and "--port" in result.output and "serving" not in result.output


def test_slow_header_connections_are_dropped(bundle) -> None:
    import uvicorn

    config = uvicorn.Config(
        create_app(bundle, ServiceSettings()),
        host="127.0.0.1",
        port=0,
        log_level="warning",
        http=header_timeout_protocol(0.2),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            assert thread.is_alive()
            time.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # headers never finished
            assert sock.recv(1024) == b""  # closed by the server (the 30 s socket timeout would raise)
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:  # a normal request still works
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert sock.recv(1024).startswith(b"HTTP/1.1 200")
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_a_manifest_advertising_another_shape_is_refused(tiny_run: Path, tmp_path: Path) -> None:
    import json

    from bastion.artifacts.bundle import write_sums
    from bastion.errors import CheckpointError

    out, _ = export_bundle(tiny_run, tmp_path / "b")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["input_shape"] = [3, 32, 32]
    (out / "manifest.json").write_text(json.dumps(manifest))
    write_sums(out)  # consistent checksums: only the content disagrees
    with pytest.raises(CheckpointError, match="input_shape is \\[3, 32, 32\\] but model/model.json says \\[1, 8, 8\\]"):
        load_bundle(out)

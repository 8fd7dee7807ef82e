"""The HTTP service through FastAPI's TestClient: answers, input forms, limits, auth, metrics, audit."""

from __future__ import annotations

import io
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi")
from deploy_fixtures import FLOW
from fastapi.testclient import TestClient

from bastion.service import ServiceSettings, create_app
from bastion.service.engine import Predictor

TOKEN = "s3cret-token-of-32-characters-xx"


@pytest.fixture
def client(image_bundle, tmp_path: Path):
    settings = ServiceSettings(audit_log=tmp_path / "audit.jsonl", max_inputs=8, max_body_bytes=64_000)
    with TestClient(create_app(image_bundle, settings)) as c:
        yield c


def test_predictions_match_the_bundle_defense(client: TestClient, image_bundle, digits, tmp_path: Path) -> None:
    x = digits.test.x[:8]
    r = client.post("/v1/predict", json={"inputs": x.tolist()})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "progressive-trades" and body["defended"] is True
    assert r.headers["x-request-id"] == body["request_id"]
    want = image_bundle.defense.decide(x)
    for i, out in enumerate(body["outputs"]):
        assert out["decision"] == want.action_names()[i]
        assert out["label"] == (None if out["decision"] == "reject" else int(want.labels[i]))
        assert out["anomaly_score"] == pytest.approx(float(want.scores[i]), rel=1e-5)
        assert sum(out["probabilities"]) == pytest.approx(1, abs=1e-5) and out["votes"] is None
    # A constant grey image is far from every digit: rejected, and written to the audit log with its input.
    r = client.post("/v1/predict", json={"inputs": [[[[0.5] * 8] * 8]]})
    (out,) = r.json()["outputs"]
    assert out["decision"] == "reject" and out["label"] is None and out["class_name"] is None
    lines = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert lines[-1]["request_id"] == r.json()["request_id"] and lines[-1]["input"] == [[[0.5] * 8] * 8]
    flagged_in_first = sum(o["decision"] != "accept" for o in body["outputs"])
    assert len(lines) == flagged_in_first + 1


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


def test_image_uploads_decode_like_json_inputs(client: TestClient, digits) -> None:
    pixels = (digits.test.x[0, 0].numpy() * 255).round().astype(np.uint8)
    ppm = b"P5 8 8 255\n" + pixels.tobytes()
    files = [("files", ("a.png", _png(pixels), "image/png")), ("files", ("b.pgm", ppm, "image/x-portable-graymap"))]
    r = client.post("/v1/predict", files=files)
    assert r.status_code == 200, r.text
    as_json = client.post("/v1/predict", json={"inputs": [(pixels / 255.0)[None].tolist()]}).json()["outputs"][0]
    for out in r.json()["outputs"]:
        assert out["probabilities"] == pytest.approx(as_json["probabilities"], abs=1e-6)
    big = np.zeros((32, 32), dtype=np.uint8)  # resized to the model's 8x8, as the folder readers do
    assert client.post("/v1/predict", files=[("files", ("c.png", _png(big), "image/png"))]).status_code == 200
    colour = np.zeros((8, 8, 3), dtype=np.uint8)
    r = client.post("/v1/predict", files=[("files", ("d.png", _png(colour), "image/png"))])
    assert r.status_code == 422 and "3-channel image for a 1-channel model" in r.json()["detail"][0]["msg"]
    r = client.post("/v1/predict", files=[("files", ("e.png", b"not an image", "image/png"))])
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "files", 0]


@pytest.mark.parametrize(
    ("body", "status", "loc", "words"),
    [
        ({"inputs": [[[[0.5] * 8] * 8]], "model": "x"}, 422, ["body", "model"], "unknown field"),
        ({}, 422, ["body", "inputs"], "missing field"),
        ({"inputs": []}, 422, ["body", "inputs"], "non-empty list"),
        ({"inputs": [[[[0.5] * 7] * 8]]}, 422, ["body", "inputs", 0, 0, 0], "length 8"),
        ({"inputs": [[[["0.5"] * 8] * 8]]}, 422, ["body", "inputs", 0, 0, 0, 0], "expected a number, got str"),
        ({"inputs": [[[[True] * 8] * 8]]}, 422, ["body", "inputs", 0, 0, 0, 0], "got bool"),
        ({"inputs": [[[[1.5] * 8] * 8]]}, 422, ["body", "inputs", 0], "values must lie in [0, 1]"),
        ({"inputs": [[[[10**400] * 8] * 8]]}, 422, ["body", "inputs", 0], "too large"),
        ({"inputs": [{"a": 1}]}, 422, ["body", "inputs", 0], "not objects"),
        ({"inputs": [[[[0.5] * 8] * 8]] * 9}, 413, ["body", "inputs"], "limit of 8"),
        ([1, 2], 422, ["body"], "expected a JSON object"),
    ],
)
def test_bad_json_gets_a_4xx_naming_the_field(client: TestClient, body, status, loc, words) -> None:
    r = client.post("/v1/predict", content=json.dumps(body), headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    (item,) = r.json()["detail"]
    assert item["loc"] == loc and words in item["msg"]


def test_malformed_bodies_and_limits(client: TestClient) -> None:
    def post(content: bytes | object, ctype: str = "application/json"):
        return client.post("/v1/predict", content=content, headers={"content-type": ctype})

    assert post(b'{"inputs": [[[NaN' + b"]]]}").status_code == 422
    assert post(b"[" * 50_000).status_code == 422  # nesting bomb: RecursionError -> 422, not 500
    assert post(b"\xff\xfe").status_code == 422
    assert post(b"x" * 70_000).status_code == 413  # declared length over the limit
    chunks = (b" " * 10_000 for _ in range(8))  # chunked: no declared length, counted while read
    assert post(chunks).status_code == 413
    assert post(b"inputs", "text/plain").status_code == 415
    assert client.post("/v1/predict", data={"other": "1"}, files=[("files", ("a", b"x"))]).status_code == 422


def test_bearer_token_is_required_when_configured(image_bundle) -> None:
    with TestClient(create_app(image_bundle, ServiceSettings(token=TOKEN))) as c:
        body = {"inputs": [[[[0.0] * 8] * 8]]}
        assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": f"Basic {TOKEN}"}):
            r = c.post("/v1/predict", json=body, headers=headers)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert c.get("/metrics").status_code == 401 and c.get("/v1/model").status_code == 401
        ok = {"authorization": f"Bearer {TOKEN}"}
        assert c.post("/v1/predict", json=body, headers=ok).status_code == 200
        info = c.get("/v1/model", headers=ok).json()
        assert TOKEN not in json.dumps(info) and info["service"]["auth"] is True


def test_model_info_and_metrics(client: TestClient, image_bundle) -> None:
    info = client.get("/v1/model").json()
    assert info["input_shape"] == [1, 8, 8] and info["bundle_digest"] == image_bundle.digest
    assert info["service"]["max_inputs"] == 8 and info["defense"]["detector"]["kind"] == "MahalanobisDetector"
    client.post("/v1/predict", json={"inputs": [[[[0.5] * 8] * 8]] * 3})
    client.post("/v1/predict", json={"inputs": [], "x": 1})
    client.get("/no-such-path")
    text = client.get("/metrics").text
    assert 'bastion_requests_total{route="/v1/predict",status="200"} 1.0' in text
    assert 'bastion_requests_total{route="/v1/predict",status="422"} 1.0' in text
    assert 'bastion_requests_total{route="other",status="404"} 1.0' in text
    assert 'bastion_inputs_total{decision="reject"} 3.0' in text
    assert 'bastion_request_latency_seconds_count{route="/v1/predict"} 2.0' in text


def test_tabular_named_fields_are_validated_against_the_schema(tabular_bundle) -> None:
    with TestClient(create_app(tabular_bundle)) as c:
        info = c.get("/v1/model").json()
        assert [f["name"] for f in info["feature_schema"]] == ["proto", "sent", "total", "rate", "flag"]
        r = c.post("/v1/predict", json={"inputs": [FLOW, {**FLOW, "proto": "udp"}]})
        assert r.status_code == 200, r.text
        outs = r.json()["outputs"]
        assert [o["decision"] for o in outs] == ["accept", "accept"] and outs[0]["anomaly_score"] is None
        x = torch.as_tensor(tabular_bundle.spec.domain.preprocessor.transform(__import__("pandas").DataFrame([FLOW])))
        same = c.post("/v1/predict", json={"inputs": x.tolist()}).json()["outputs"][0]  # model-space rows too
        assert same["probabilities"] == pytest.approx(outs[0]["probabilities"], abs=1e-6)
        cases = [
            ({**FLOW, "bytes": 3}, ["body", "inputs", 0, "bytes"], "unknown field"),
            ({k: v for k, v in FLOW.items() if k != "rate"}, ["body", "inputs", 0, "rate"], "missing field"),
            ({**FLOW, "sent": "10"}, ["body", "inputs", 0, "sent"], "expected a finite number"),
            ({**FLOW, "proto": 6}, ["body", "inputs", 0, "proto"], "expected a category text"),
            ({**FLOW, "proto": "icmp"}, ["body", "inputs", 0], "unknown category 'icmp'"),
            ({**FLOW, "sent": 30}, ["body", "inputs", 0], "relation 'sent <= total'"),
            ({**FLOW, "sent": 2.5}, ["body", "inputs", 0], "not an integer"),
        ]
        for record, loc, words in cases:
            r = c.post("/v1/predict", json={"inputs": [FLOW, record]})
            loc = [*loc[:2], 1, *loc[3:]]
            assert r.status_code == 422 and r.json()["detail"][0]["loc"] == loc, (record, r.text)
            assert words in r.json()["detail"][0]["msg"]


def test_serving_without_the_defense_accepts_everything(image_bundle) -> None:
    with TestClient(create_app(image_bundle, ServiceSettings(defend=False))) as c:
        body = c.post("/v1/predict", json={"inputs": [[[[0.5] * 8] * 8]]}).json()
        assert body["defended"] is False
        assert body["outputs"][0]["decision"] == "accept" and body["outputs"][0]["anomaly_score"] is None


def test_full_queue_gives_503_and_slow_inference_504(image_bundle, monkeypatch: pytest.MonkeyPatch) -> None:
    original = Predictor.__call__

    def slow(self, x):
        time.sleep(0.3)
        return original(self, x)

    monkeypatch.setattr(Predictor, "__call__", slow)
    body = {"inputs": [[[[0.0] * 8] * 8]]}
    with TestClient(create_app(image_bundle, ServiceSettings(max_queue=1, batch_rows=1))) as c:
        with ThreadPoolExecutor(6) as pool:
            codes = sorted(r.status_code for r in pool.map(lambda _: c.post("/v1/predict", json=body), range(6)))
        assert 503 in codes and 200 in codes and set(codes) <= {200, 503}, codes
        assert "queue_full" in c.get("/metrics").text
        assert c.post("/v1/predict", json=body).status_code == 200  # capacity comes back
    with TestClient(create_app(image_bundle, ServiceSettings(timeout_s=0.05))) as c:
        r = c.post("/v1/predict", json=body)
        assert r.status_code == 504 and "within 0.05 s" in r.json()["detail"][0]["msg"]


def test_ensemble_votes_are_reported(image_bundle, digits) -> None:
    from bastion.defenses.ensemble import AdaptiveEnsemble
    from bastion.defenses.pipeline import Defense

    ensemble = AdaptiveEnsemble([image_bundle.model, image_bundle.model])
    outs = Predictor(Defense(ensemble, domain=image_bundle.spec.domain), image_bundle.spec)(digits.test.x[:4])
    labels = image_bundle.model(digits.test.x[:4]).argmax(1).tolist()
    assert [o["votes"] for o in outs] == [[y, y] for y in labels]


def test_a_failing_audit_log_does_not_fail_the_request(image_bundle, tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    with TestClient(create_app(image_bundle, ServiceSettings(audit_log=audit))) as c:
        audit.mkdir()  # writes now fail with IsADirectoryError
        r = c.post("/v1/predict", json={"inputs": [[[[0.5] * 8] * 8]]})
        assert r.status_code == 200 and r.json()["outputs"][0]["decision"] == "reject"
        assert "bastion_audit_errors_total 1.0" in c.get("/metrics").text


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    return buf.getvalue()


def test_npy_bodies_match_json_and_refuse_anything_else(client: TestClient, digits) -> None:
    x = digits.test.x[:4].numpy()

    def post(content: bytes):
        return client.post("/v1/predict", content=content, headers={"content-type": "application/x-npy"})

    r = post(_npy(x))
    assert r.status_code == 200, r.text
    as_json = client.post("/v1/predict", json={"inputs": x.tolist()}).json()["outputs"]
    got, want = ([o["probabilities"] for o in outs] for outs in (r.json()["outputs"], as_json))
    assert np.allclose(got, want, atol=1e-6)
    nan = x.copy()
    nan[2, 0, 3, 3] = np.nan
    cases = [
        (_npy(x.astype(np.float16)), 422, "float32 or float64"),
        (_npy(x[:, :, :7]), 422, "expected shape (N, 1, 8, 8)"),
        (_npy(np.array([{"a": 1}], dtype=object)), 422, "allow_pickle=False"),  # never unpickled
        (_npy(nan), 422, "inputs[2]: NaN"),
        (_npy(np.concatenate([x, x, x])), 413, "limit of 8"),
        (_npy(x)[:60], 422, "unreadable"),
        (b"PK\x03\x04 a zip", 422, "magic number"),
    ]
    for content, status, words in cases:
        r = post(content)
        assert r.status_code == status and words in r.json()["detail"][0]["msg"], (words, r.text)

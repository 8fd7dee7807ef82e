"""The service's self-description and input forms: offline /docs, the OpenAPI schema built from the bundle's
spec, every fault of a record reported, and text/csv records."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("fastapi")
from deploy_fixtures import FLOW
from fastapi.testclient import TestClient

from bastion.data.tabular import Feature, FeatureKind, TabularPreprocessor, TabularSchema
from bastion.service import ServiceSettings, create_app
from bastion.service.inputs import MAX_PROBLEMS
from bastion.service.schemas import record_model, request_model

CSV = {"content-type": "text/csv"}


@pytest.fixture(scope="module")
def tabular_client(tabular_bundle):
    with TestClient(create_app(tabular_bundle, ServiceSettings(max_inputs=80))) as c:
        yield c


@pytest.fixture(scope="module")
def image_client(image_bundle):
    with TestClient(create_app(image_bundle, ServiceSettings(max_inputs=8))) as c:
        yield c


def _urls(page: str) -> list[str]:
    return re.findall(r"""(?:src|href|url)\s*[=:(]\s*["']([^"']+)["']""", page)


def test_docs_pages_use_only_assets_the_service_serves(image_client: TestClient) -> None:
    for page, kinds in (("/docs", {"javascript", "css", "png"}), ("/redoc", {"javascript", "png"})):
        r = image_client.get(page)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        urls = _urls(r.text)
        assert urls, r.text
        for url in urls:
            assert not re.match(r"(https?:)?//", url), f"{page} loads {url} from the network"
        assets = [u for u in urls if u.startswith("/docs-assets/")]
        assert {a.rsplit(".", 1)[1].replace("js", "javascript") for a in assets} == kinds, urls
        for asset in assets:
            got = image_client.get(asset)
            assert got.status_code == 200 and len(got.content) > 1000, asset
            want = "image/png" if asset.endswith(".png") else asset.rsplit(".", 1)[1].replace("js", "javascript")
            assert want in got.headers["content-type"], (asset, got.headers["content-type"])
        assert "/openapi.json" in urls or "'/openapi.json'" in r.text or '"/openapi.json"' in r.text
    assert image_client.get("/openapi.json").json()["openapi"].startswith("3.1")
    assert image_client.get("/docs-assets/no-such-file.js").status_code == 404
    assert image_client.get("/docs/oauth2-redirect").status_code == 200


def _json_schema(client: TestClient) -> tuple[dict, dict]:
    doc = client.get("/openapi.json").json()
    body = doc["paths"]["/v1/predict"]["post"]["requestBody"]["content"]
    return body, doc["components"]["schemas"]


def test_openapi_names_every_tabular_field_with_its_type(tabular_client: TestClient, tabular_bundle) -> None:
    body, components = _json_schema(tabular_client)
    assert set(body) == {"application/json", "application/x-npy", "text/csv"}
    inputs = body["application/json"]["schema"]["properties"]["inputs"]
    assert (inputs["minItems"], inputs["maxItems"]) == (1, 80)
    record = components["TabularRecord"]
    assert record["additionalProperties"] is False
    assert record["required"] == ["proto", "sent", "total", "rate", "flag"]
    props = record["properties"]
    assert props["proto"]["enum"] == ["tcp", "udp"] and "immutable" in props["proto"]["description"]
    assert (props["sent"]["type"], props["sent"]["minimum"], props["sent"]["maximum"]) == ("integer", 0, 1000)
    assert (props["rate"]["type"], props["rate"]["minimum"], props["rate"]["maximum"]) == ("number", 0, 1)
    assert props["flag"]["enum"] == [0, 1]
    width = tabular_bundle.spec.input_shape[0]
    rows = [s for s in inputs["items"]["anyOf"] if s.get("type") == "array"]
    assert [(r["minItems"], r["maxItems"]) for r in rows] == [(width, width)]  # model-space rows too
    assert {"$ref": "#/components/schemas/TabularRecord"} in inputs["items"]["anyOf"]

    jsonschema_rs = pytest.importorskip("jsonschema_rs")  # schemathesis' validator (dev extra)
    validator = jsonschema_rs.Draft202012Validator(
        {**body["application/json"]["schema"], "components": {"schemas": components}}
    )
    assert validator.is_valid({"inputs": [FLOW]})
    for bad in ({**FLOW, "proto": "icmp"}, {**FLOW, "extra": 1}, {**FLOW, "sent": 2000}, {**FLOW, "flag": 2}):
        assert not validator.is_valid({"inputs": [bad]}), bad
    assert not validator.is_valid({"inputs": [FLOW] * 81})


def test_openapi_image_inputs_have_the_exact_shape_and_pixel_box(image_client: TestClient) -> None:
    body, _ = _json_schema(image_client)
    assert set(body) == {"application/json", "application/x-npy", "multipart/form-data"}
    level = body["application/json"]["schema"]["properties"]["inputs"]["items"]
    sizes = []
    while level.get("type") == "array":
        sizes.append((level["minItems"], level["maxItems"]))
        level = level["items"]
    assert sizes == [(1, 1), (8, 8), (8, 8)] and (level["minimum"], level["maximum"]) == (0, 1)


def test_record_model_covers_open_categories_discrete_grids_and_fitted_ranges() -> None:
    schema = TabularSchema(
        name="t",
        features=(
            Feature(name="service", kind=FeatureKind.CATEGORICAL),  # categories learned in training
            Feature(name="level", kind=FeatureKind.DISCRETE, values=(-1, 0, 1)),
            Feature(name="Flow Bytes/s", kind=FeatureKind.INTEGER, bounds=(0, math.inf)),
        ),
        label="label",
        classes=("benign", "attack"),
        benign=0,
    )
    df = pd.DataFrame({"service": ["http", "ftp"], "level": [0, 1], "Flow Bytes/s": [5, 900]})
    pre = TabularPreprocessor(schema).fit(df)
    model = record_model(pre.schema_, pre.ranges_)
    props = model.model_json_schema()["properties"]
    assert props["service"]["type"] == "string" and "enum" not in props["service"]
    assert "ftp, http" in props["service"]["description"]
    assert props["level"]["enum"] == [-1, 0, 1]
    assert props["Flow Bytes/s"]["minimum"] == 0 and "maximum" not in props["Flow Bytes/s"]
    assert "training range [0, 900]" in props["Flow Bytes/s"]["description"]
    record = {"service": "smtp", "level": 1, "Flow Bytes/s": 10**6}  # unseen category and beyond range: accepted
    assert model.model_validate(record).model_dump(by_alias=True) == record
    with pytest.raises(ValueError, match="Flow Bytes/s"):
        model.model_validate({**record, "Flow Bytes/s": -1})


def test_request_model_validates_like_the_handler(tabular_bundle) -> None:
    model = request_model(tabular_bundle.spec, 4)
    model.model_validate({"inputs": [FLOW, {**FLOW, "proto": "udp"}]})
    for body in ({"inputs": []}, {"inputs": [FLOW] * 5}, {"inputs": [FLOW], "x": 1}, {"inputs": [{**FLOW, "rate": 2}]}):
        with pytest.raises(ValueError):
            model.model_validate(body)


def test_a_record_with_several_faults_reports_every_one(tabular_client: TestClient) -> None:
    first = {k: v for k, v in FLOW.items() if k != "flag"} | {"sent": 2.5, "proto": "icmp", "rate": "x", "bytes": 1}
    second = {**FLOW, "sent": 30, "total": 1001}  # over its bound, and sent <= total would hold: one fault
    third = {**FLOW, "sent": "many", "total": 5}  # the relation is not judged on an unreadable value
    r = tabular_client.post("/v1/predict", json={"inputs": [FLOW, first, second, third]})
    assert r.status_code == 422, r.text
    found = [(tuple(d["loc"]), d["msg"]) for d in r.json()["detail"]]
    want = [
        (("body", "inputs", 1, "bytes"), "inputs[1].bytes: unknown field"),
        (("body", "inputs", 1, "rate"), "inputs[1].rate: expected a finite number, got 'x'"),
        (("body", "inputs", 1, "flag"), "inputs[1].flag: missing field"),
        (("body", "inputs", 1), "inputs[1]: column 'proto': unknown category 'icmp'"),
        (("body", "inputs", 1), "inputs[1]: column 'sent': 2.5 is not an integer"),
        (("body", "inputs", 2), "inputs[2]: column 'total': 1001 is outside bounds [0, 1000]"),
        (("body", "inputs", 3, "sent"), "inputs[3].sent: expected a finite number, got 'many'"),
    ]
    assert len(found) == len(want), found
    for loc, words in want:
        assert any(loc == got_loc and msg.startswith(words) for got_loc, msg in found), (loc, words, found)

    many = [{**FLOW, "rate": 5}] * (MAX_PROBLEMS + 10)
    detail = tabular_client.post("/v1/predict", json={"inputs": many}).json()["detail"]
    assert len(detail) == MAX_PROBLEMS + 1 and detail[-1]["msg"] == "10 more problem(s) not listed"


def _csv(client: TestClient, text: str, ctype: str = "text/csv"):
    return client.post("/v1/predict", content=text.encode(), headers={"content-type": ctype})


def test_csv_records_answer_like_json_records(tabular_client: TestClient) -> None:
    records = [FLOW, {**FLOW, "proto": "udp", "sent": 0, "rate": 0.25, "flag": 0}]
    want = [o["probabilities"] for o in tabular_client.post("/v1/predict", json={"inputs": records}).json()["outputs"]]
    lines = [",".join(str(r[k]) for k in ("proto", "sent", "total", "rate", "flag")) for r in records]
    bodies = {
        "features only": "\n".join(lines),
        "features + label, CRLF, blank lines": "\r\n".join([lines[0] + ",malicious", "", lines[1] + ",benign", ""]),
        "header in another order": "rate,label,flag,proto,total,sent\n"
        + "\n".join(f"{r['rate']},benign,{r['flag']},{r['proto']},{r['total']},{r['sent']}" for r in records),
    }
    for what, text in bodies.items():
        r = _csv(tabular_client, text)
        assert r.status_code == 200, (what, r.text)
        got = [o["probabilities"] for o in r.json()["outputs"]]
        assert np.allclose(got, want, atol=1e-6), what
    quoted = _csv(tabular_client, '"tcp", 10 ,20,0.5,1', "text/csv; charset=utf-8; header=absent")
    assert quoted.status_code == 200, quoted.text


def test_csv_errors_name_each_line_and_field(tabular_client: TestClient, image_client: TestClient) -> None:
    text = "tcp,10,20,0.5,1\ntcp,10,20\n\nicmp,abc,20,?,1\nudp,30,20,0.5,1"
    r = _csv(tabular_client, text)
    assert r.status_code == 422
    found = [(d["loc"], d["msg"]) for d in r.json()["detail"]]
    assert found[0] == (
        ["body", "line", 2],
        "line 2: expected 5 (the features) or 6 (the features and the label) fields, found 3",
    )
    assert (["body", "line", 4, "sent"], "line 4, column 'sent': expected a finite number, got 'abc'") in found
    assert (["body", "line", 4, "rate"], "line 4, column 'rate': missing value") in found
    assert (["body", "line", 4], "line 4: column 'proto': unknown category 'icmp'") in found
    assert any(loc == ["body", "line", 5] and "relation 'sent <= total'" in msg for loc, msg in found)
    assert len(found) == 5, found

    cases = [
        ("proto,sent,total,rate,flag,bytes\ntcp,1,2,0.5,1,0", "text/csv", 422, "column 'bytes' is not in schema"),
        ("proto,sent,total,rate\ntcp,1,2,0.5", "text/csv", 422, "missing column(s) 'flag'"),
        ("proto,sent,total,rate,flag", "text/csv", 422, "a header line but no records"),
        ("proto,sent,total,rate,flag", "text/csv; header=absent", 422, "line 1, column 'sent': expected a finite"),
        ("tcp,10,20,0.5,1", "text/csv; header=maybe", 415, "header=maybe"),
        ("tcp,10,20,0.5,1", "text/csv; charset=latin-1", 415, "charset=latin-1"),
        ("\n \n", "text/csv", 422, "no records"),
        ("tcp,10,20,0.5,1\n" * 81, "text/csv", 413, "81 records exceed the limit of 80"),
    ]
    for text, ctype, status, words in cases:
        r = _csv(tabular_client, text, ctype)
        assert r.status_code == status and words in r.json()["detail"][0]["msg"], (text, r.text)
    r = tabular_client.post("/v1/predict", content=b"tcp,\xff,20,0.5,1", headers=CSV)
    assert r.status_code == 422 and "not valid UTF-8" in r.json()["detail"][0]["msg"]
    r = _csv(image_client, "0.5," * 63 + "0.5")
    assert r.status_code == 415 and "text/csv bodies are for tabular models" in r.json()["detail"][0]["msg"]


def test_records_outside_the_constraint_set_are_named_as_such(tabular_bundle, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from bastion.service.inputs import RequestError, parse_csv, parse_json

    domain = tabular_bundle.spec.domain
    monkeypatch.setattr(domain, "is_feasible", lambda x, *_: torch.zeros(len(x), dtype=torch.bool))
    with pytest.raises(RequestError) as caught:
        parse_csv(b"tcp,10,20,0.5,1", tabular_bundle.spec, max_inputs=4)
    assert caught.value.detail()[0]["loc"] == ["body", "line", 1]
    assert caught.value.msg.startswith("line 1: outside the model's input domain (the record passes the schema")
    row = torch.as_tensor(domain.preprocessor.transform(pd.DataFrame([FLOW])))[0].tolist()
    with pytest.raises(RequestError, match=r"inputs\[0\]: .*send an object with named fields"):
        parse_json({"inputs": [row, FLOW]}, tabular_bundle.spec, max_inputs=4)
    with pytest.raises(RequestError, match=r"inputs\[0\]: .*breaks a rule of the model's constraint set"):
        parse_json({"inputs": [FLOW, row]}, tabular_bundle.spec, max_inputs=4)

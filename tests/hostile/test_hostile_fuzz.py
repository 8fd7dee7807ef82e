"""Property tests: fuzzed SPEC strings, config documents and request bodies only ever give a BastionError
(or, over HTTP, a 4xx); never another exception, never a 5xx."""

from __future__ import annotations

import contextlib
import json
import string
from pathlib import Path

import pytest
from hostile_fixtures import make_run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.app.config import EvalConfig, TrainConfig
from bastion.app.experiment import ExperimentConfig
from bastion.config import load_yaml
from bastion.data.sources import DATASETS, load_dataset
from bastion.defenses.config import DefenseConfig
from bastion.defenses.store import load_defense
from bastion.errors import BastionError

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)

# -- SPEC strings ---------------------------------------------------------------------------------------

option_text = st.text(alphabet=string.ascii_letters + string.digits + "=&?-._%:/ ", max_size=24)


@FUZZ
@given(name=st.one_of(st.sampled_from(DATASETS.names()), st.text(max_size=10)), options=option_text)
def test_fuzzed_specs_give_only_bastion_errors(tmp_path_factory, name: str, options: str) -> None:
    empty = tmp_path_factory.mktemp("spec")
    for spec in (f"{name}:{empty}?{options}", f"{name}?{options}", f"{name}:{options}"):
        if spec.startswith("digits") and not options:
            continue  # the bundled dataset loads: a valid input, not a hostile one
        with contextlib.suppress(BastionError):
            load_dataset(spec)


# -- config documents -----------------------------------------------------------------------------------


def _config_docs(cls: type) -> st.SearchStrategy[dict]:
    keys = st.sampled_from([*cls.model_fields, "unknown_key"])
    return st.dictionaries(keys, json_value, max_size=5)


@FUZZ
@given(
    doc=st.one_of(_config_docs(TrainConfig), _config_docs(EvalConfig), _config_docs(DefenseConfig)),
    cls=st.sampled_from([TrainConfig, EvalConfig, DefenseConfig, ExperimentConfig]),
)
def test_fuzzed_config_documents_give_only_config_errors(doc: dict, cls: type) -> None:
    with contextlib.suppress(BastionError):
        cls.parse(doc)


@FUZZ
@given(text=st.text(alphabet=string.printable + "é\u2028", max_size=80))
def test_fuzzed_yaml_text_gives_only_config_errors(text: str) -> None:
    with contextlib.suppress(BastionError):
        load_yaml(text, "fuzz.yaml")


@pytest.fixture(scope="module")
def defense_dir(tmp_path_factory, digits, tiny_arch, tiny_model) -> Path:
    return make_run(tmp_path_factory.mktemp("fz"), digits, tiny_arch, tiny_model) / "defenses" / "mlp"


@FUZZ
@given(
    transforms=json_value,
    policy=json_value,
    detector=st.one_of(json_value, st.just("keep")),
    fmt=st.sampled_from([1, 2, 3, "2", None]),
)
def test_fuzzed_defense_documents_give_only_bastion_errors(
    defense_dir: Path, tiny_model, transforms, policy, detector, fmt
) -> None:
    path = defense_dir / "defense.json"
    original = path.read_text()
    doc = json.loads(original)
    doc.update(format=fmt, transforms=transforms, policy=policy)
    if detector != "keep":
        doc["detector"] = detector
    try:
        path.write_text(json.dumps(doc))
        load_defense(defense_dir, tiny_model)
    except BastionError:
        pass
    finally:
        path.write_text(original)


# -- request bodies -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(tmp_path_factory, digits, tiny_arch, tiny_model):
    from fastapi.testclient import TestClient

    from bastion.artifacts.bundle import export_bundle, load_bundle
    from bastion.service.app import ServiceSettings, create_app

    root = tmp_path_factory.mktemp("svc")
    out, _ = export_bundle(make_run(root / "run", digits, tiny_arch, tiny_model), root / "bundle")
    with TestClient(create_app(load_bundle(out), ServiceSettings(max_inputs=8))) as c:
        yield c


def _near_valid_image() -> st.SearchStrategy:
    row = st.lists(json_leaf, min_size=7, max_size=9)
    return st.lists(st.lists(st.lists(row, min_size=7, max_size=9), min_size=1, max_size=2), min_size=0, max_size=3)


@FUZZ
@given(
    body=st.one_of(
        st.builds(lambda x: {"inputs": x}, _near_valid_image()),
        st.builds(lambda x: {"inputs": x}, json_value),
        json_value,
    )
)
def test_fuzzed_json_bodies_are_never_5xx(client, body) -> None:
    r = client.post(
        "/v1/predict", content=json.dumps(body, allow_nan=True), headers={"content-type": "application/json"}
    )
    assert r.status_code < 500, r.text


@FUZZ
@given(
    raw=st.one_of(st.binary(max_size=300), st.builds(lambda b: b"\x93NUMPY" + b, st.binary(max_size=300))),
    ctype=st.sampled_from(
        ["application/x-npy", "application/json", "multipart/form-data; boundary=x", "text/plain", ""]
    ),
)
def test_fuzzed_raw_bodies_are_never_5xx(client, raw: bytes, ctype: str) -> None:
    r = client.post("/v1/predict", content=raw, headers={"content-type": ctype})
    assert r.status_code < 500, r.text


@FUZZ
@given(files=st.lists(st.binary(max_size=200), min_size=0, max_size=10))
def test_fuzzed_uploads_are_never_5xx(client, files: list[bytes]) -> None:
    r = client.post("/v1/predict", files=[("files", (f"{i}.png", data, "image/png")) for i, data in enumerate(files)])
    assert r.status_code < 500, r.text

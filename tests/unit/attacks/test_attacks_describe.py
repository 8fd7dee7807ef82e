"""Attacks are recorded as stable data (class, hyperparameters), never as reprs with memory addresses."""

from __future__ import annotations

import json
import re

from torch import nn

from bastion.app.runtime import threat_record
from bastion.attacks import PGD
from bastion.attacks.adaptive import Transfer
from bastion.evaluation.suites import SUITES, build_suite

ADDRESS = re.compile(r"0x[0-9a-fA-F]{6,}")


def test_two_runs_record_the_same_attacks_without_addresses() -> None:
    for name in SUITES.names():
        first = threat_record("linf", [0.1], name, build_suite(name))["attacks"]
        second = threat_record("linf", [0.1], name, build_suite(name))["attacks"]
        text = json.dumps(first, sort_keys=True)
        assert first == second and not ADDRESS.search(text), (name, text)
        for description in first.values():
            assert isinstance(description["class"], str)


def test_nested_attacks_losses_and_modules_are_described_by_name() -> None:
    def my_loss(logits, y):  # pragma: no cover - never called
        return logits

    attack = Transfer(base=PGD(n_steps=3, loss=my_loss), source=nn.Linear(2, 2))
    d = attack.describe()
    assert d["class"] == "Transfer" and d["source"] == {"class": "Linear"}
    assert d["base"]["class"] == "PGD" and d["base"]["n_steps"] == 3 and d["base"]["loss"] == "my_loss"
    assert not ADDRESS.search(json.dumps(d)) and "0x" not in repr(d)

"""Attacks: one file each, math only; the base class owns the contract."""

from bastion.attacks.base import Attack, AttackResult, evaluating
from bastion.attacks.fgsm import FGSM
from bastion.attacks.losses import cross_entropy, dlr, kl_to_reference, margin
from bastion.attacks.pgd import PGD
from bastion.attacks.search import CoordinateSearch
from bastion.registry import Registry

ATTACKS: Registry[Attack] = Registry("attack")
ATTACKS.register("fgsm")(FGSM)
ATTACKS.register("pgd")(PGD)
ATTACKS.register("search")(CoordinateSearch)

__all__ = [
    "ATTACKS",
    "FGSM",
    "PGD",
    "Attack",
    "AttackResult",
    "CoordinateSearch",
    "cross_entropy",
    "dlr",
    "evaluating",
    "kl_to_reference",
    "margin",
]

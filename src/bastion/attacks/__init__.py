"""Attacks: one file each, math only; the base class owns the contract."""

from bastion.attacks.adaptive import AdaptivePGD, Transfer, bpda, bpda_pgd, detector_aware_pgd, eot_pgd, transfer_pgd
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
ATTACKS.register("bpda-pgd")(bpda_pgd)
ATTACKS.register("eot-pgd")(eot_pgd)
ATTACKS.register("detector-aware-pgd")(detector_aware_pgd)
ATTACKS.register("transfer-pgd")(transfer_pgd)

__all__ = [
    "ATTACKS",
    "FGSM",
    "PGD",
    "AdaptivePGD",
    "Attack",
    "AttackResult",
    "CoordinateSearch",
    "Transfer",
    "bpda",
    "cross_entropy",
    "dlr",
    "evaluating",
    "kl_to_reference",
    "margin",
]

"""Attacks: one file each, math only; the base class owns the contract."""

from functools import partial

from bastion.attacks.adaptive import AdaptivePGD, Transfer, bpda, bpda_pgd, detector_aware_pgd, eot_pgd, transfer_pgd
from bastion.attacks.apgd import APGD, APGDT
from bastion.attacks.base import Attack, AttackResult, Perturbation, evaluating
from bastion.attacks.cw import CW
from bastion.attacks.deepfool import DeepFool
from bastion.attacks.fgsm import FGSM
from bastion.attacks.losses import cross_entropy, dlr, dlr_targeted, kl_to_reference, margin
from bastion.attacks.mifgsm import MIFGSM
from bastion.attacks.pgd import PGD
from bastion.attacks.search import CoordinateSearch
from bastion.attacks.square import Square
from bastion.registry import Registry

ATTACKS: Registry[Attack] = Registry("attack")
ATTACKS.register("fgsm")(FGSM)
ATTACKS.register("pgd")(PGD)
ATTACKS.register("search")(CoordinateSearch)
ATTACKS.register("bpda-pgd")(bpda_pgd)
ATTACKS.register("eot-pgd")(eot_pgd)
ATTACKS.register("detector-aware-pgd")(detector_aware_pgd)
ATTACKS.register("transfer-pgd")(transfer_pgd)
ATTACKS.register("mifgsm")(MIFGSM)
ATTACKS.register("apgd")(APGD)
ATTACKS.register("apgd-ce")(partial(APGD, loss=cross_entropy))
ATTACKS.register("apgd-dlr")(partial(APGD, loss=dlr))
ATTACKS.register("apgd-margin")(partial(APGD, loss=margin))
ATTACKS.register("apgd-t")(APGDT)
ATTACKS.register("square")(Square)
ATTACKS.register("cw")(CW)
ATTACKS.register("deepfool")(DeepFool)

__all__ = [
    "APGD",
    "APGDT",
    "ATTACKS",
    "CW",
    "FGSM",
    "MIFGSM",
    "PGD",
    "AdaptivePGD",
    "Attack",
    "AttackResult",
    "CoordinateSearch",
    "DeepFool",
    "Perturbation",
    "Square",
    "Transfer",
    "bpda",
    "cross_entropy",
    "dlr",
    "dlr_targeted",
    "evaluating",
    "kl_to_reference",
    "margin",
]

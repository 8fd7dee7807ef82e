"""A user's own ``torch.nn.Module``, named ``module:PACKAGE.MODULE:FACTORY``, for evaluation.

The factory is imported and called with no arguments; it returns a module that maps inputs in the data's
own domain ([0, 1] pixels for images) to logits (N, C). Its normalisation lives inside it, as in every
bastion model, so attacks and budgets stay in input space. Unlike a bastion checkpoint (safetensors,
never code), this imports and runs the user's Python code: it is for models the user wrote or trusts.
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from bastion.errors import ConfigError

PREFIX = "module:"
_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
EXAMPLE = "module:mypackage.models:build_model"


def is_module_spec(text: str) -> bool:
    return text.startswith(PREFIX)


@dataclass(frozen=True)
class ModuleSpec:
    """``module:PACKAGE.MODULE:FACTORY`` parsed: the importable module and the factory's (dotted) name."""

    module: str
    factory: str

    @classmethod
    def parse(cls, text: str) -> ModuleSpec:
        """Raises ConfigError naming what is wrong and showing the expected form."""
        if not is_module_spec(text):
            raise ConfigError(f"model spec {text!r} does not start with {PREFIX!r}; expected {EXAMPLE}")
        parts = text[len(PREFIX) :].split(":")
        if len(parts) != 2 or not all(parts):
            raise ConfigError(
                f"model spec {text!r} must name a module and a factory, {PREFIX}PACKAGE.MODULE:FACTORY (e.g. {EXAMPLE})"
            )
        module, factory = parts
        for what, name in (("module", module), ("factory", factory)):
            if not _DOTTED.match(name):
                raise ConfigError(f"model spec {text!r}: {what} {name!r} is not a dotted Python name (e.g. {EXAMPLE})")
        return cls(module, factory)

    def __str__(self) -> str:
        return f"{PREFIX}{self.module}:{self.factory}"

    @property
    def name(self) -> str:
        """The model's name in results.json: the factory's own name."""
        return self.factory.rsplit(".", 1)[-1]


@contextmanager
def _importable_from(folder: Path) -> Iterator[None]:
    """Put ``folder`` first on sys.path while importing (``bastion`` as a console script does not have
    the working directory there, unlike ``python -m``)."""
    entry = str(folder)
    added = entry not in sys.path
    if added:
        sys.path.insert(0, entry)
    try:
        yield
    finally:
        if added and entry in sys.path:
            sys.path.remove(entry)


def import_factory(spec: ModuleSpec, root: Path | None = None) -> Any:
    """The factory object, imported with ``root`` (default: the working directory) importable.

    Raises:
        ConfigError: the module is not found, fails to import, or lacks the attribute, or it is not callable.
    """
    with _importable_from(root or Path.cwd()):
        try:
            module = importlib.import_module(spec.module)
        except ModuleNotFoundError as exc:
            if exc.name is not None and (spec.module == exc.name or spec.module.startswith(exc.name + ".")):
                raise ConfigError(
                    f"{spec}: no module named {exc.name!r} (run from the folder that holds it, or install it)"
                ) from None
            raise ConfigError(f"{spec}: importing {spec.module} failed: {exc}") from None
        except Exception as exc:  # the user's module raised while importing: show what it said
            raise ConfigError(f"{spec}: importing {spec.module} raised {type(exc).__name__}: {exc}") from None
    target: Any = module
    for part in spec.factory.split("."):
        if not hasattr(target, part):
            public = sorted(n for n in dir(target) if not n.startswith("_"))
            shown = ", ".join(public[:12]) + (", ..." if len(public) > 12 else "")
            raise ConfigError(f"{spec}: {spec.module} has no attribute {spec.factory!r} (it has: {shown or 'nothing'})")
        target = getattr(target, part)
    if not callable(target):
        raise ConfigError(f"{spec}: {spec.factory} = {target!r:.60} is not callable; name a function or class")
    return target


def build_module(spec: ModuleSpec, root: Path | None = None) -> nn.Module:
    """Import the factory and call it with no arguments.

    Raises:
        ConfigError: as :func:`import_factory`, or the call raised, or it returned something other than an
            ``nn.Module``.
    """
    factory = import_factory(spec, root)
    try:
        model = factory()
    except Exception as exc:
        raise ConfigError(f"{spec}: calling {spec.factory}() raised {type(exc).__name__}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"{spec}: {spec.factory}() returned {type(model).__module__}.{type(model).__qualname__}, not a "
            "torch.nn.Module (return the model, already built, mapping inputs to logits)"
        )
    return model


def check_module(model: nn.Module, x: Tensor, num_classes: int | None = None, *, what: str = "the model") -> int:
    """The model takes a batch of ``x`` (N, *S) and returns float logits (N, C); C = ``num_classes`` if given,
    else at least 2. Returns C.

    Runs two examples in eval mode without gradients; the model's training mode is restored.

    Raises:
        ConfigError: not an nn.Module, no parameters, the forward pass fails, or the output has the wrong
            type or shape (the message gives the input and output shapes and the expected one).
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{what} is a {type(model).__name__}, not a torch.nn.Module")
    if next(model.parameters(), None) is None:
        raise ConfigError(f"{what} has no parameters: nothing to attack through (is it the model, not a function?)")
    batch = x[:2]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(batch)
    except Exception as exc:
        raise ConfigError(
            f"{what} fails on a batch of shape {tuple(batch.shape)} in [{float(batch.min()):g}, "
            f"{float(batch.max()):g}]: {type(exc).__name__}: {exc}"
        ) from None
    finally:
        model.train(was_training)
    classes = "C" if num_classes is None else str(num_classes)
    if not isinstance(out, Tensor):
        raise ConfigError(f"{what} returned a {type(out).__name__}; it must return a logits tensor (N, {classes})")
    width = int(out.shape[1]) if out.dim() == 2 else 0
    if (
        out.dim() != 2
        or out.shape[0] != batch.shape[0]
        or not out.is_floating_point()
        or (num_classes is not None and width != num_classes)
        or width < 2
    ):
        raise ConfigError(
            f"{what} maps a batch of shape {tuple(batch.shape)} to {out.dtype} {tuple(out.shape)}; expected float "
            f"logits of shape ({batch.shape[0]}, {classes})"
            + (f" ({num_classes} classes)" if num_classes is not None else ", C >= 2 classes")
        )
    return width


def describe_module(model: nn.Module, spec: ModuleSpec | None = None) -> dict[str, Any]:
    """What results.json records about a user model: where it came from, its class and size."""
    cls = type(model)
    return {
        "source": str(spec) if spec is not None else None,
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "parameters": sum(p.numel() for p in model.parameters()),
    }

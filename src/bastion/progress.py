"""Progress inside the loops an evaluation spends its time in: the batches of one attack x eps cell, the
attacks of a worst-case sequence on one batch.

The library never prints: a loop calls :func:`advance`, and whoever entered :func:`listening` (the CLI,
a worker process) hears it. This is a context variable rather than an argument because these loops sit
several calls below every entry point (evaluate, the defense and tabular evaluations, the sanity checks)
and pass nothing else up; without a listener :func:`advance` costs one lookup.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class Step:
    """A loop's position: ``done`` of ``total`` ``unit`` finished, inside ``where`` (outermost first);
    ``current`` is what runs next, when the loop knows (an attack's name)."""

    where: tuple[str, ...]
    done: int
    total: int
    unit: str
    current: str = ""

    @property
    def label(self) -> str:
        """What loops, without the count: ``apgd-ce eps 0.1`` or ``eps 0.1, worst case, batch 2/4``."""
        return ", ".join(self.where) or "attack"

    def describe(self) -> str:
        running = f" (now {self.current})" if self.current and self.done < self.total else ""
        return f"{self.label}: {self.done}/{self.total} {self.unit}{running}"


StepHook = Callable[[Step], None]

_listener: ContextVar[StepHook | None] = ContextVar("bastion_progress_listener", default=None)
_where: ContextVar[tuple[str, ...]] = ContextVar("bastion_progress_where", default=())


@contextmanager
def listening(hook: StepHook | None) -> Iterator[None]:
    """Every :func:`advance` in this context goes to ``hook`` (None: nowhere)."""
    token = _listener.set(hook)
    try:
        yield
    finally:
        _listener.reset(token)


@contextmanager
def task(label: str, *, replace: bool = False) -> Iterator[None]:
    """Steps inside say they belong to ``label``; ``replace`` swaps the innermost label instead of nesting
    (a worst-case sequence runs the whole suite inside the grid's first cell)."""
    where = _where.get()
    token = _where.set((*(where[:-1] if replace else where), label))
    try:
        yield
    finally:
        _where.reset(token)


def advance(done: int, total: int, unit: str, current: str = "") -> None:
    """Tell the listener, if any, that ``done`` of ``total`` ``unit`` are finished (call with 0 at the start,
    so a listener can time the loop)."""
    hook = _listener.get()
    if hook is not None:
        hook(Step(_where.get(), done, total, unit, current))

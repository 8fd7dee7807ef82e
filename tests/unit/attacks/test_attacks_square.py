"""Square is score-based: it must never read a gradient, and it must respect its query budget."""

from __future__ import annotations

import pytest
import torch
from attack_fixtures import GradientFree, Linear, small_mlp
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.attacks import Square
from bastion.attacks.square import p_schedule
from bastion.goals import Misclassify
from bastion.threat import ThreatModel


def test_gradient_free_model_really_raises_on_backward() -> None:
    model = GradientFree(small_mlp(6, 5))
    x = torch.rand(2, 6, requires_grad=True)
    with pytest.raises(RuntimeError, match="never be read"):
        model(x).sum().backward()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_square_never_reads_gradients_and_respects_the_budget(norm, standard_model, digits) -> None:
    model = GradientFree(standard_model)
    x, y = digits.test.x[:24], digits.test.y[:24]
    threat = ThreatModel(norm=norm, eps=0.3 if norm == "linf" else 2.0, domain=digits.spec.domain)
    result = Square(n_queries=150)(model, x, Misclassify(y), threat, rng=torch.Generator().manual_seed(0))
    assert result.n_backward == 0
    assert result.n_queries is not None and int(result.n_queries.max()) <= 150 + 2
    assert threat.contains(result.x_adv, x).all()
    clean_correct = standard_model(x).argmax(1) == y
    assert result.success[clean_correct].float().mean() > 0.3, "a standard model falls to square at this budget"
    queried = result.n_queries[clean_correct & result.success]
    assert (queried < 152).any(), "an example that falls early stops using queries"


def test_p_schedule_halves_at_the_rescaled_checkpoints() -> None:
    assert p_schedule(0.8, 0, 10000) == 0.8
    assert p_schedule(0.8, 11, 10000) == 0.4
    assert p_schedule(0.8, 51, 10000) == 0.2
    assert p_schedule(0.8, 8001, 10000) == 0.8 / 512
    assert p_schedule(0.8, 3, 1000) == 0.4  # 3 of 1,000 is 30 of 10,000


class _Recorder(torch.nn.Module):
    """Logits that ignore the input (class 0 always wins, so Square never improves its first point);
    remembers every input it was asked to score."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return torch.tensor([[5.0, 0.0, 0.0]]).expand(len(x), -1)


def test_square_spends_no_query_on_an_unchanged_input() -> None:
    """On a 2x2 image the windows soon cover one pixel, so about every other sampled corner is where the
    pixel already is: such a candidate is the current point, whose score is known, and is not queried."""
    model = _Recorder()
    x, y = torch.full((3, 1, 2, 2), 0.5), torch.zeros(3, dtype=torch.long)
    threat = ThreatModel(norm="linf", eps=0.1)
    result = Square(n_queries=200)(model, x, Misclassify(y), threat, rng=torch.Generator().manual_seed(0))
    start = model.seen[0]  # the first scored point stays the best: the logits never change
    later = torch.cat(model.seen[1:-1])  # the last call is the base class's success check
    assert not (later.flatten(1)[:, None] == start.flatten(1)[None]).all(dim=2).any()
    assert result.n_queries is not None and (result.n_queries < 150).all()
    assert threat.contains(result.x_adv, x).all()


def test_square_stops_querying_an_example_whose_margin_does_not_move() -> None:
    """_Recorder's logits ignore the input, so no query can move the margin."""
    x, y = torch.full((3, 1, 8, 8), 0.5), torch.zeros(3, dtype=torch.long)
    threat = ThreatModel(norm="linf", eps=0.1)
    rng = torch.Generator().manual_seed(0)
    full = Square(n_queries=1000)(_Recorder(), x, Misclassify(y), threat, rng=rng)
    stalled = Square(n_queries=1000, stall_window=50)(_Recorder(), x, Misclassify(y), threat, rng=rng)
    assert full.n_queries is not None and (full.n_queries > 400).all()  # unmoved candidates are not queried
    assert stalled.n_queries is not None and (stalled.n_queries <= 51).all()


def _linear_race() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """Margin = 15 - w.delta (example 0) and 35 - w.delta (example 1) for a +-1 weight vector w over 400
    features: at eps 0.1 (max w.delta = 40) Square breaks example 1 only late, after ~1,700 queries."""
    signs = torch.randint(0, 2, (400,), generator=torch.Generator().manual_seed(123)).float() * 2 - 1
    model = Linear(torch.stack([torch.zeros(400), signs]), torch.tensor([15.0, -0.5 * float(signs.sum())]))
    x = torch.full((2, 400), 0.5)
    x[1] -= 0.05 * signs
    return model, x, torch.zeros(2, dtype=torch.long)


def test_square_stall_rule_keeps_an_example_still_making_steady_progress() -> None:
    model, x, y = _linear_race()
    threat = ThreatModel(norm="linf", eps=0.1)
    result = Square(n_queries=3000, stall_window=300)(
        model, x, Misclassify(y), threat, rng=torch.Generator().manual_seed(0)
    )
    assert result.success.all()
    assert result.n_queries is not None and int(result.n_queries[1]) > 1000, "example 1 falls late"
    assert threat.contains(result.x_adv, x).all()


@given(window=st.integers(1, 400), factor=st.floats(0.1, 10.0), seed=st.integers(0, 2**16))
@settings(max_examples=15, deadline=None)
def test_square_stall_rule_respects_budget_and_ball(window: int, factor: float, seed: int) -> None:
    model, x, y = _linear_race()
    threat = ThreatModel(norm="linf", eps=0.1)
    result = Square(n_queries=400, stall_window=window, stall_factor=factor)(
        model, x, Misclassify(y), threat, rng=torch.Generator().manual_seed(seed)
    )
    assert result.n_queries is not None and int(result.n_queries.max()) <= 400 + 2
    assert threat.contains(result.x_adv, x).all()


def _chunked_run(eps: float, caplog: pytest.LogCaptureFixture):
    model = small_mlp(8, 3)
    x = torch.rand(28, 8, generator=torch.Generator().manual_seed(1))
    y = model(x).argmax(1).detach()
    chunks = [torch.arange(0, 4), torch.arange(4, 12), torch.arange(12, 28)]
    threat = ThreatModel(norm="linf", eps=eps)
    square = Square(n_queries=200)
    with caplog.at_level("DEBUG", logger="bastion.attacks.square"):
        out = square.perturb_in_chunks(model, x, Misclassify(y), threat, torch.Generator().manual_seed(0), chunks)
    with torch.no_grad():
        broken = model(out.x_adv).argmax(1) != y
    joins = [r.args[3] for r in caplog.records if "joins" in r.getMessage()]
    assert out.n_queries is not None and (out.n_queries <= 200).all()
    assert threat.contains(out.x_adv, x).all()
    return x, out, broken, chunks, joins


def test_a_chunk_joins_a_square_run_as_soon_as_the_one_before_breaks_an_example(caplog) -> None:
    _, out, broken, chunks, joins = _chunked_run(0.6, caplog)
    assert broken[chunks[0]].any() and broken[chunks[1]].any(), "fixture: eps 0.6 must break in both chunks"
    assert len(joins) == 3 and joins[0] == 0
    assert joins[1] < 199 and joins[2] < joins[1] + 199  # before the previous chunk's budget was spent
    assert (out.n_queries > 0).all()


def test_a_chunk_that_breaks_nothing_keeps_the_next_one_out_of_the_square_run(caplog) -> None:
    x, out, broken, chunks, joins = _chunked_run(1e-4, caplog)
    assert not broken.any()
    assert joins == [0]
    assert (out.n_queries[chunks[0]] > 0).all()
    assert (out.n_queries[4:] == 0).all() and torch.equal(out.x_adv[4:], x[4:])

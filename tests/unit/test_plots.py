"""Figures are real PNGs drawn from the numbers given, and absent when there is nothing to draw."""

from __future__ import annotations

import io

from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from bastion.render import plots


def _size(png: bytes | None) -> tuple[int, int]:
    assert png is not None
    with Image.open(io.BytesIO(png)) as img:
        assert img.format == "PNG"
        return img.size


def test_transfer_heatmap_and_empty_inputs() -> None:
    transfer = {"attack": "pgd-20", "eps": "0.2", "accuracy": {"a": {"a": 0.1, "b": 0.5}, "b": {"a": 0.6, "b": 0.2}}}
    width, height = _size(plots.transfer_heatmap(transfer))
    assert width > 200 and height > 150
    assert plots.transfer_heatmap(None) is None
    assert plots.robust_vs_eps({}, "t", "ci") is None
    assert plots.cost_pareto([]) is None
    assert plots.detector_roc({"models": {"m": {"robust_accuracy": {}}}}) is None


def test_curves_from_results_start_at_clean_accuracy() -> None:
    results = {
        "models": {
            "m": {
                "clean_accuracy": 0.9,
                "clean_accuracy_ci": [0.85, 0.94],
                "robust_accuracy": {"fgsm": {"0.1": 0.5}, "ensemble": {"0.2": 0.1, "0.1": 0.4}},
                "robust_accuracy_ci": {"ensemble": {"0.1": [0.3, 0.5], "0.2": [0.05, 0.2]}},
            }
        }
    }
    curves = plots.curves_from_results(results)
    assert curves == {"m": [(0.0, 0.9, 0.85, 0.94), (0.1, 0.4, 0.3, 0.5), (0.2, 0.1, 0.05, 0.2)]}
    _size(plots.robust_vs_eps(curves, "title", "95% Wilson interval"))


@given(st.lists(st.tuples(st.floats(0, 100), st.floats(0, 1)), min_size=1, max_size=15))
def test_pareto_front_is_exactly_the_undominated_points(points: list[tuple[float, float]]) -> None:
    front = set(plots.pareto_front(points))
    for i, (c, a) in enumerate(points):
        dominated = any(c2 <= c and a2 >= a and (c2, a2) != (c, a) for c2, a2 in points)
        assert (i in front) == (not dominated)

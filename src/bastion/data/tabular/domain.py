"""The tabular input domain in model space, read from a fitted TabularPreprocessor.

``project`` runs every attack step (box, immutable columns reset to the reference, mutable one-hot blocks
projected onto the simplex: a relaxation the gradient can move through). ``repair`` runs once at the end:
integer, binary and discrete columns and one-hot blocks are snapped to their grids by rounding *toward*
the reference, so no coordinate ends further from the reference than the relaxed point was, and the
result stays inside every norm ball the relaxed point was in, whatever the threat model's norm; then any
linear relation the reference satisfies but the snapped point breaks is fixed by shrinking the
perturbation of that relation's features toward the reference (all the way back if need be, where the
relation holds because it held for the reference). ``is_feasible`` is the final judge and agrees with
the raw validator (``validate_raw`` on ``inverse_transform``). ``violation`` is the differentiable
(N,) relation violation on relaxed points.

A :class:`~bastion.data.tabular.constraints.ConstraintSet` adds implication rules (``flag in {REJ, S0}
=> dst_bytes = 0``), the data's decimal grids and more linear relations. ``repair`` snaps grid features
toward the reference like integers, then fixes each rule the reference satisfies but the repaired row
breaks by resetting, on that row, the rule's ``then`` features to the reference, then its ``if``
features, and as a last resort the whole row (which satisfies whatever the reference did). Resets move
coordinates back to the reference only, so the result stays in every ball the relaxed point was in.

Rounding toward the reference costs at most one grid step per column: a coarse grid (a binary flag, the
phishing features' {-1, 0, 1}) only moves when the relaxed point reaches the next grid value. The
search attack (bastion.attacks.search) moves on the grids directly.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from bastion.data.tabular.constraints import ConstraintSet
from bastion.data.tabular.preprocess import TabularPreprocessor
from bastion.data.tabular.schema import FeatureKind, LinearRelation
from bastion.errors import InputValidationError

__all__ = ["TabularDomain", "project_simplex"]

_ATOL = 1e-5
_SHRINK = (0.5, 0.25, 0.0)


def project_simplex(v: Tensor) -> Tensor:
    """Euclidean projection of each row of v (N, K) onto the probability simplex (sort-based, exact)."""
    k = v.shape[1]
    u, _ = torch.sort(v, dim=1, descending=True)
    css = u.cumsum(dim=1) - 1.0
    ks = torch.arange(1, k + 1, device=v.device, dtype=v.dtype)
    cond = u - css / ks > 0
    rho = cond.to(v.dtype).cumsum(dim=1).argmax(dim=1, keepdim=True)  # last index where cond holds
    theta = css.gather(1, rho) / (rho + 1).to(v.dtype)
    return (v - theta).clamp_min(0.0)


class TabularDomain:
    """Legal model-space rows of one fitted preprocessor (see the module docstring).

    Args:
        preprocessor: a fitted TabularPreprocessor; its schema supplies immutables, kinds, one-hot
            groups and linear relations, its fitted ranges the model-space grids.
        constraints: rules, decimal grids and further relations (checked against the schema).
    """

    def __init__(self, preprocessor: TabularPreprocessor, constraints: ConstraintSet | None = None) -> None:
        preprocessor._check_fitted()
        self.preprocessor = preprocessor
        pre = preprocessor
        self.constraints = None if constraints is None else constraints.check_schema(pre.schema_)
        self.lower = torch.as_tensor(pre.lower_, dtype=torch.float32)
        self.upper = torch.as_tensor(pre.upper_, dtype=torch.float32)
        self.immutable = torch.as_tensor(pre.immutable_mask_, dtype=torch.bool)
        self.groups = tuple(np.asarray(g, dtype=np.int64) for g in pre.onehot_groups_)
        self.mutable_groups = tuple(g for g in self.groups if not pre.immutable_mask_[g].any())
        in_groups = {int(c) for g in self.groups for c in g}
        self.grid_columns = {c: g for c, g in pre.discrete_grids_.items() if c not in in_groups}
        self.integer_features = tuple(
            f for f in pre.schema_.features if f.kind is FeatureKind.INTEGER and pre._span(f)[1] > 0
        )
        extra = () if self.constraints is None else self.constraints.relations
        self.relations: tuple[LinearRelation, ...] = (*pre.schema_.relations, *extra)
        self.rules = () if self.constraints is None else self.constraints.rules
        self.decimal_grids = {
            name: grid
            for name, grid in ({} if self.constraints is None else self.constraints.grids).items()
            if pre.schema_.feature(name).mutable and pre._span(pre.schema_.feature(name))[1] > 0
        }
        self._rule_columns = tuple(
            (self._feature_columns(r.consequent_features), self._feature_columns(r.antecedent_features))
            for r in self.rules
        )
        self._grid_columns = tuple(self._feature_columns((name,)) for name in self.decimal_grids)
        self._constraint_features = tuple(
            dict.fromkeys([f for r in self.rules for f in (*r.antecedent_features, *r.consequent_features)])
        )
        self._relation_columns = tuple(self._columns_of(rel) for rel in self.relations)
        self._terms = tuple(self._relation_terms(rel) for rel in self.relations)

    # ---- helpers

    @property
    def n_features(self) -> int:
        return int(self.preprocessor.n_features_out_)

    def with_constraints(self, constraints: ConstraintSet | None) -> TabularDomain:
        """The same preprocessing with another constraint set (None: none)."""
        return TabularDomain(self.preprocessor, constraints)

    def _feature_columns(self, names: tuple[str, ...]) -> np.ndarray:
        cols: list[int] = []
        for name in names:
            s = self.preprocessor.feature_slices_[name]
            cols.extend(range(s.start, s.stop))
        return np.asarray(sorted(set(cols)), dtype=np.int64)

    def _columns_of(self, rel: LinearRelation) -> np.ndarray:
        """Model columns of every feature a relation mentions (whole one-hot blocks for categoricals)."""
        cols: list[int] = []
        for name in rel.features:
            s = self.preprocessor.feature_slices_[name]
            cols.extend(range(s.start, s.stop))
        return np.asarray(sorted(set(cols)), dtype=np.int64)

    def _relation_terms(self, rel: LinearRelation) -> list[tuple[int, float, tuple[str, float, float]]]:
        """(column, coefficient, (map, offset, span)) per term, for the relaxed raw value of a column."""
        pre = self.preprocessor
        out: list[tuple[int, float, tuple[str, float, float]]] = []
        for term, coef in rel.terms:
            name, category = LinearRelation.split_term(term)
            feature = pre.schema_.feature(name)
            s = pre.feature_slices_[name]
            if category is not None:
                column = f"{name}={category}"
                if column in pre.columns_:  # a category never seen in training has no column: term is 0
                    out.append((pre.columns_.index(column), coef, ("identity", 0.0, 1.0)))
                continue
            if feature.kind in (FeatureKind.CONTINUOUS, FeatureKind.INTEGER):
                offset, span = pre._span(feature)
                out.append((s.start, coef, ("log" if feature.log_scale else "affine", offset, span)))
            elif feature.kind is FeatureKind.DISCRETE:
                values = feature.values or (0.0,)
                out.append((s.start, coef, ("affine", float(values[0]), float(values[-1]) - float(values[0]))))
            else:
                out.append((s.start, coef, ("identity", 0.0, 1.0)))
        return out

    def _bounds(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.lower.to(x.device, x.dtype), self.upper.to(x.device, x.dtype)

    def _check_shape(self, x: Tensor) -> None:
        if x.dim() != 2 or x.shape[1] != self.n_features:
            raise InputValidationError(f"tabular inputs must have shape (N, {self.n_features}), got {tuple(x.shape)}")

    # ---- each step

    def project(self, x: Tensor, x_ref: Tensor) -> Tensor:
        """Box, immutables = x_ref, mutable one-hot blocks onto the simplex. Every piece is a projection
        onto a convex set holding x_ref, so the L2 distance to x_ref never grows."""
        self._check_shape(x)
        lower, upper = self._bounds(x)
        x = torch.maximum(torch.minimum(x, upper), lower)
        x = torch.where(self.immutable.to(x.device), x_ref, x)
        if self.mutable_groups:
            x = x.clone()
            for g in self.mutable_groups:
                idx = torch.as_tensor(g, device=x.device)
                x[:, idx] = project_simplex(x[:, idx])
        return x

    def violation(self, x: Tensor) -> Tensor:
        """(N,) total amount by which the linear relations are exceeded on the relaxed raw values;
        differentiable, 0 when every relation holds."""
        total = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
        for rel, terms in zip(self.relations, self._terms, strict=True):
            lhs = torch.zeros_like(total)
            for col, coef, (kind, offset, span) in terms:
                z = x[:, col]
                raw = z if kind == "identity" else z * span + offset
                if kind == "log":
                    raw = torch.expm1(raw)
                lhs = lhs + coef * raw
            total = total + torch.relu(lhs - rel.bound)
        return total

    # ---- once at the end

    def repair(self, x: Tensor, x_ref: Tensor) -> Tensor:
        """Snap to the grids toward x_ref, then fix broken relations by shrinking toward x_ref (see module)."""
        self._check_shape(x)
        x_ref_np = x_ref.detach().cpu().double().numpy()
        z = self.project(x.detach(), x_ref.detach()).cpu().double().numpy()
        snapped = self._snap_toward(z, x_ref_np)
        out = self._fix_relations(snapped, z, x_ref_np, x.dtype)
        return torch.as_tensor(out, dtype=x.dtype, device=x.device)

    def _snap_toward(self, x: np.ndarray, x_ref: np.ndarray) -> np.ndarray:
        """Grid columns rounded toward the reference (per column: never further from x_ref than x)."""
        pre = self.preprocessor
        out = x.copy()
        n = len(x)
        for g in self.mutable_groups:
            block, ref_block = x[:, g], x_ref[:, g]
            winner = np.argmax(block, axis=1)
            at_vertex = block[np.arange(n), winner] >= 1.0 - _ATOL
            vertex = np.zeros_like(block)
            vertex[np.arange(n), winner] = 1.0
            ref_vertex = np.zeros_like(block)
            ref_vertex[np.arange(n), np.argmax(ref_block, axis=1)] = 1.0
            out[:, g] = np.where(at_vertex[:, None], vertex, ref_vertex)
        for col, grid in self.grid_columns.items():
            if pre.immutable_mask_[col]:
                continue
            v, r = x[:, col], x_ref[:, col]
            r_grid = grid[np.argmin(np.abs(r[:, None] - grid[None, :]), axis=1)]
            below = np.where(grid[None, :] <= v[:, None] + _ATOL, grid[None, :], -np.inf).max(axis=1)
            above = np.where(grid[None, :] >= v[:, None] - _ATOL, grid[None, :], np.inf).min(axis=1)
            out[:, col] = np.where(v >= r_grid, np.maximum(below, r_grid), np.minimum(above, r_grid))
        for feature in self.integer_features:
            col = pre.feature_slices_[feature.name].start
            if pre.immutable_mask_[col]:
                continue
            offset, span = pre._span(feature)
            lo, hi = pre.ranges_[feature.name]

            def to_raw(z: np.ndarray, feature: Any = feature, offset: float = offset, span: float = span) -> Any:
                raw = np.clip(z, 0.0, 1.0) * span + offset
                return np.expm1(raw) if feature.log_scale else raw

            raw, raw_ref = to_raw(x[:, col]), np.round(to_raw(x_ref[:, col]))
            d = raw - raw_ref
            steps = np.floor(np.abs(d) + 1e-6)
            target = np.clip(raw_ref + np.sign(d) * steps, math.ceil(lo), math.floor(hi))
            z_target = pre._to_model(feature, target)
            out[:, col] = np.where(target == raw_ref, x_ref[:, col], z_target)
        for name, decimal_grid in self.decimal_grids.items():
            feature = pre.schema_.feature(name)
            col = pre.feature_slices_[name].start
            step = 10.0**-decimal_grid.decimals
            raw = pre._to_raw(feature, np.clip(x[:, col], pre.lower_[col], pre.upper_[col]))
            raw_ref = pre._to_raw(feature, np.clip(x_ref[:, col], pre.lower_[col], pre.upper_[col]))
            d = raw - raw_ref
            steps = np.floor(np.abs(d) / step + 1e-6)
            target = np.round(raw_ref / step) * step + np.sign(d) * steps * step  # toward the clean value
            lo, hi = pre.ranges_[name]
            target = np.clip(target, math.ceil(lo / step - 1e-9) * step, math.floor(hi / step + 1e-9) * step)
            z_target = pre._to_model(feature, target)
            out[:, col] = np.where(steps == 0, x_ref[:, col], z_target)
        return out

    def _raw_column(self, x: np.ndarray, name: str, category: str | None) -> np.ndarray:
        """Raw values of one feature (or a category's 0/1 indicator) as inverse_transform writes them."""
        pre = self.preprocessor
        feature = pre.schema_.feature(name)
        s = pre.feature_slices_[name]
        if category is not None:
            column = f"{name}={category}"
            if column not in pre.columns_:
                return np.zeros(len(x))
            return (s.start + np.argmax(x[:, s], axis=1) == pre.columns_.index(column)).astype(np.float64)
        z = np.clip(x[:, s.start], pre.lower_[s.start], pre.upper_[s.start])
        if feature.kind is FeatureKind.BINARY:
            group = next((g for g in pre.onehot_groups_ if s.start in g), None)
            if feature.group is not None and group is not None:
                return (group[np.argmax(x[:, group], axis=1)] == s.start).astype(np.float64)
            return (z >= 0.5).astype(np.float64)
        if feature.kind is FeatureKind.DISCRETE:
            grid = pre.discrete_grids_[s.start]
            allowed = np.asarray(feature.values, dtype=np.float64)
            return allowed[np.argmin(np.abs(z[:, None] - grid[None, :]), axis=1)]
        return np.asarray(pre._to_raw(feature, z), dtype=np.float64)

    def _raw_frame(self, x: np.ndarray, names: tuple[str, ...]) -> dict[str, np.ndarray]:
        """Raw values of ``names`` as inverse_transform writes them (category text for categoricals)."""
        pre = self.preprocessor
        out: dict[str, np.ndarray] = {}
        for name in names:
            feature = pre.schema_.feature(name)
            if feature.kind is FeatureKind.CATEGORICAL:
                s = pre.feature_slices_[name]
                cats = np.asarray(feature.values or (), dtype=object)
                out[name] = cats[np.argmax(x[:, s], axis=1)]
            else:
                out[name] = self._raw_column(x, name, None)
        return out

    def _constraints_hold(self, x: np.ndarray) -> np.ndarray:
        """(N, R + G) bool: each rule, then each decimal grid, on the records inverse_transform writes."""
        if self.constraints is None or not (self.rules or self.decimal_grids):
            return np.ones((len(x), 0), dtype=bool)
        columns = self._raw_frame(x, self._constraint_features)
        rules = self.constraints.rules_hold(columns) if self.rules else np.ones((len(x), 0), dtype=bool)
        grids = np.ones((len(self.decimal_grids), len(x)), dtype=bool)
        for k, (name, grid) in enumerate(self.decimal_grids.items()):
            grids[k] = grid.on_grid(self._raw_column(x, name, None))
        # stacked one row per rule or grid (rules_hold's (N, R) is the transpose of such a block), then seen
        # as (N, R + G): no column-wise copy of the N x R matrix
        return np.concatenate([rules.T, grids], axis=0).T

    def _required(self, x_ref: np.ndarray) -> np.ndarray:
        """``_constraints_hold(x_ref)``, kept for the last reference seen: an attack repairs many proposals
        against the same clean rows (the search: every round), and those rows' rules need one evaluation."""
        cached = self.__dict__.get("_required_cache")
        if cached is not None and cached[0].shape == x_ref.shape and np.array_equal(cached[0], x_ref):
            return cached[1]
        required = self._constraints_hold(x_ref)
        self.__dict__["_required_cache"] = (x_ref.copy(), required)
        return required

    def _fix_constraints(self, out: np.ndarray, x_ref: np.ndarray, cast: Any) -> np.ndarray:
        """Rules and grids the reference satisfies, restored by resets toward it (see the module docstring)."""
        if self.constraints is None or not (self.rules or self.decimal_grids):
            return out
        required = self._required(x_ref)
        n_rules = len(self.rules)
        for stage in ("then", "if"):
            broken = required & ~self._constraints_hold(out)
            if not broken.any():
                return out
            mask = np.zeros_like(out, dtype=bool)
            for k in np.flatnonzero(broken.any(axis=0)):
                rows = broken[:, k]
                if k < n_rules:
                    then_cols, if_cols = self._rule_columns[k]
                    cols = then_cols if stage == "then" else np.union1d(then_cols, if_cols)
                else:
                    cols = self._grid_columns[k - n_rules]
                mask[np.ix_(rows, cols)] = True
            out = cast(np.where(mask, x_ref, out))
        return out

    def _relations_hold(self, x: np.ndarray) -> np.ndarray:
        """(N, R) bool on the records inverse_transform would write (what the raw validator reads)."""
        if not self.relations:
            return np.ones((len(x), 0), dtype=bool)
        out = np.empty((len(x), len(self.relations)), dtype=bool)
        for r, rel in enumerate(self.relations):
            lhs = np.zeros(len(x))
            for term, coef in rel.terms:
                lhs += coef * self._raw_column(x, *LinearRelation.split_term(term))
            out[:, r] = lhs <= rel.bound + rel.tolerance * (1.0 + abs(rel.bound))
        return out

    def _fix_relations(self, snapped: np.ndarray, relaxed: np.ndarray, x_ref: np.ndarray, dtype: torch.dtype) -> Any:
        def cast(a: np.ndarray) -> np.ndarray:
            return torch.as_tensor(a, dtype=dtype).double().numpy()

        out = cast(snapped)
        if self.relations:
            out = self._fix_linear(out, relaxed, x_ref, cast)
        if self.constraints is None:
            return out
        out = self._fix_constraints(out, cast(x_ref), cast)
        ref = cast(x_ref)
        broken = (self._relations_hold(ref) & ~self._relations_hold(out)).any(axis=1)
        broken |= (self._constraints_hold(ref) & ~self._constraints_hold(out)).any(axis=1)
        out[broken] = ref[broken]  # the last resort: the clean row satisfies what it satisfied
        return out

    def _fix_linear(self, out: np.ndarray, relaxed: np.ndarray, x_ref: np.ndarray, cast: Any) -> np.ndarray:
        required = self._relations_hold(cast(x_ref))
        broken = required & ~self._relations_hold(out)
        mask = np.zeros_like(out, dtype=bool)
        for _ in range(len(self.relations) + 1):
            rows = broken.any(axis=1)
            if not rows.any():
                break
            for r, cols in enumerate(self._relation_columns):
                hit = broken[:, r]
                if hit.any():
                    mask[np.ix_(hit, cols)] = True
            todo = rows.copy()
            for t in _SHRINK:
                if not todo.any():
                    break
                shrunk = np.where(mask, x_ref + t * (relaxed - x_ref), relaxed)
                candidate = cast(self._snap_toward(shrunk, x_ref)) if t > 0 else cast(np.where(mask, x_ref, out))
                ok = ~(required[todo] & ~self._relations_hold(candidate[todo])).any(axis=1)
                idx = np.flatnonzero(todo)[ok]
                out[idx] = candidate[idx]
                todo[idx] = False
            broken = required & ~self._relations_hold(out)
        return out

    # ---- the final judge

    def is_feasible(self, x: Tensor, x_ref: Tensor | None = None, atol: float = _ATOL) -> Tensor:
        """(N,) bool: in the box, on every grid, one-hot blocks at a vertex, immutables equal to x_ref, and
        every relation that holds for x_ref (all of them without x_ref) holds for x."""
        self._check_shape(x)
        pre = self.preprocessor
        z = x.detach().cpu().double().numpy()
        ok = np.isfinite(z).all(axis=1)
        z = np.nan_to_num(z)
        ok &= ((z >= pre.lower_ - atol) & (z <= pre.upper_ + atol)).all(axis=1)
        if x_ref is not None:
            ref = x_ref.detach().cpu().double().numpy()
            ok &= (np.abs(z - ref)[:, pre.immutable_mask_] <= atol).all(axis=1)
        for g in self.groups:
            block = z[:, g]
            ok &= ((np.abs(block) <= atol) | (np.abs(block - 1) <= atol)).all(axis=1)
            ok &= np.abs(block.sum(axis=1) - 1) <= atol
        for col, grid in self.grid_columns.items():
            ok &= np.abs(z[:, col, None] - grid[None, :]).min(axis=1) <= atol
        clipped = np.clip(z, pre.lower_, pre.upper_)
        for feature in self.integer_features:
            col = pre.feature_slices_[feature.name].start
            nearest = pre._to_model(feature, pre._to_raw(feature, clipped[:, col]))
            ok &= np.abs(nearest - z[:, col]) <= atol
        if self.relations:
            holds = self._relations_hold(clipped)
            if x_ref is not None:
                required = self._relations_hold(np.clip(x_ref.detach().cpu().double().numpy(), pre.lower_, pre.upper_))
                holds = holds | ~required
            ok &= holds.all(axis=1)
        if x_ref is not None and self.constraints is not None:
            ref = np.clip(x_ref.detach().cpu().double().numpy(), pre.lower_, pre.upper_)
            ok &= (self._constraints_hold(clipped) | ~self._constraints_hold(ref)).all(axis=1)
        return torch.as_tensor(ok, device=x.device)

    def check(self, x: Tensor, what: str = "x") -> None:
        """Raise a clear error if a batch is not (N, D), non-finite, or has an infeasible row."""
        self._check_shape(x)
        if not torch.isfinite(x).all():
            raise InputValidationError(f"{what} contains NaN or infinite values")
        bad = ~self.is_feasible(x)
        if bad.any():
            i = int(bad.nonzero()[0])
            raise InputValidationError(f"{what}[{i}] is not a legal row of {self.preprocessor.schema.name}")

    def raw_records(self, x: Tensor) -> pd.DataFrame:
        """The raw records these model-space rows stand for (``inverse_transform``)."""
        return self.preprocessor.inverse_transform(x.detach().cpu().double().numpy())

    def textual_records(self, x: Tensor) -> pd.DataFrame:
        """``raw_records`` with every decimal-grid feature at the shortest decimal (up to its grid's) that
        maps back to the same model-space value in x's dtype: a 9-decimal grid finer than float32 is
        written as 0.96, not 0.959999979, and the record still stands for exactly the row attacked."""
        records = self.raw_records(x)
        if self.constraints is None:
            return records
        pre = self.preprocessor
        z = x.detach().cpu()
        for name, grid in self.constraints.grids.items():
            feature = pre.schema_.feature(name)
            col = pre.feature_slices_[name].start
            target = z[:, col].numpy()
            raw = records[name].to_numpy(dtype=np.float64)
            out = np.round(raw, grid.decimals)
            found = np.zeros(len(raw), dtype=bool)
            for k in range(grid.decimals + 1):
                candidate = np.round(raw, k)
                image = torch.as_tensor(pre._to_model(feature, candidate), dtype=z.dtype).numpy()
                hit = ~found & (image == target)
                out[hit] = candidate[hit]
                found |= hit
            records[name] = out
        return records

    # ---- serialisation

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": "tabular", "preprocessor": self.preprocessor.to_dict()}
        if self.constraints is not None:
            d["constraints"] = self.constraints.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TabularDomain:
        if d.get("kind") != "tabular":
            raise InputValidationError(f"not a tabular domain: kind {d.get('kind')!r}")
        constraints = d.get("constraints")
        return cls(
            TabularPreprocessor.from_dict(d["preprocessor"]),
            None if constraints is None else ConstraintSet.from_dict(constraints, source="model.json constraints"),
        )

    def __repr__(self) -> str:
        return (
            f"TabularDomain({self.preprocessor.schema.name!r}, D={self.n_features}, "
            f"immutable={int(self.immutable.sum())}, groups={len(self.groups)}, relations={len(self.relations)}, "
            f"rules={len(self.rules)}, grids={len(self.decimal_grids)})"
        )

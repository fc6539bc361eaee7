"""Declarative bounds for every numeric config key, checked in one place (`check_bounds`).

Each entry of `BOUNDS` names a key (`section.key`) and the `Interval` its value must lie in;
for a list-valued key every element must, and a key whose value is null (an optional setting
left unset) is not checked. `numeric_keys` lists the keys that need an entry, so a test can
tell when a new numeric key arrives without one."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

from querylens.runtime.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Interval:
    """`low <= value <= high` (either end open or absent), like scikit-learn's `Interval`."""

    low: float | None = None
    high: float | None = None
    closed: typing.Literal["both", "left", "right", "neither"] = "both"

    def contains(self, value: float) -> bool:
        if isinstance(value, float) and math.isnan(value):
            return False
        left = self.closed in ("both", "left")
        right = self.closed in ("both", "right")
        if self.low is not None and (value < self.low if left else value <= self.low):
            return False
        return not (self.high is not None and (value > self.high if right else value >= self.high))

    def describe(self) -> str:
        if self.high is None and self.low is not None:
            return f"{'>=' if self.closed in ('both', 'left') else '>'} {number(self.low)}"
        if self.low is None and self.high is not None:
            return f"{'<=' if self.closed in ('both', 'right') else '<'} {number(self.high)}"
        opening = "[" if self.closed in ("both", "left") else "("
        closing = "]" if self.closed in ("both", "right") else ")"
        return f"in {opening}{number(self.low)}, {number(self.high)}{closing}"


def number(value: float | None) -> str:
    return str(int(value)) if value is not None and float(value).is_integer() else str(value)


def at_least(low: float) -> Interval:
    return Interval(low)


def above(low: float) -> Interval:
    return Interval(low, closed="neither")


FRACTION = Interval(0.0, 1.0)
OPEN_FRACTION = Interval(0.0, 1.0, closed="neither")
HALF_OPEN_FRACTION = Interval(0.0, 1.0, closed="left")
SEED = Interval(0, 2**32 - 1)
COUNT = at_least(1)
SAMPLE = at_least(2)

BOUNDS: dict[str, Interval] = {
    "run.seed": SEED,
    "spark.shuffle_partitions": COUNT,
    "spark.arrow_batch_size": COUNT,
    "input.typing_fragment_seconds": at_least(0),
    "input.reformulation_seconds": at_least(0),
    "normalize.max_chars": COUNT,
    "generate.n_events": COUNT,
    "generate.n_queries": COUNT,
    "generate.seed": SEED,
    "generate.days": COUNT,
    "generate.reformulate_rate": FRACTION,
    "generate.fragment_rate": FRACTION,
    "generate.satisfied_no_click_rate": FRACTION,
    "embed.batch_size": COUNT,
    "embed.agreement_min_mean_cosine": Interval(-1.0, 1.0),
    "embed.agreement_min_cosine": Interval(-1.0, 1.0),
    "cluster.auto_max_rows": COUNT,
    "cluster.n_components": COUNT,
    "cluster.n_clusters": SAMPLE,
    "cluster.n_init": COUNT,
    "cluster.max_iter": COUNT,
    "cluster.tol": at_least(0),
    "cluster.seed": SEED,
    "cluster.init_steps": COUNT,
    "cluster.fit_sample_size": SAMPLE,
    "cluster.n_exemplars": COUNT,
    "cluster.n_terms": COUNT,
    "cluster.label_terms": COUNT,
    "cluster.label_min_df": COUNT,
    "cluster.sweep_components": COUNT,
    "cluster.sweep_clusters": SAMPLE,
    "cluster.sweep_clusters_min": SAMPLE,
    "cluster.sweep_clusters_max": SAMPLE,
    "cluster.sweep_clusters_points": COUNT,
    "cluster.sweep_stability_sample_size": SAMPLE,
    "cluster.auto_variance_target": Interval(0.0, 1.0, "right"),
    "cluster.auto_min_stability": Interval(-1.0, 1.0),
    "cluster.sweep_sample_size": SAMPLE,
    "cluster.sweep_n_init": COUNT,
    "cluster.sweep_full_n_init": COUNT,
    "cluster.sweep_full_n_init_components": at_least(0),
    "cluster.sweep_silhouette_sample_size": SAMPLE,
    "cluster.silhouette_sample_size": SAMPLE,
    "cluster.stability_seeds": SEED,
    "cluster.stability_sample_size": SAMPLE,
    "cluster.stability_bootstraps": at_least(0),
    "cluster.stability_bootstrap_sample_size": SAMPLE,
    "cluster.trust_min_stability": FRACTION,
    "cluster.trust_min_size": COUNT,
    "cluster.catch_all_ratio": above(0),
    "cluster.score_version": COUNT,
    "success.click_weight": at_least(0),
    "success.add_to_bag_weight": at_least(0),
    "success.purchase_weight": at_least(0),
    "success.threshold": FRACTION,
    "success.threshold_quantile": HALF_OPEN_FRACTION,
    "success.min_support": COUNT,
    "success.prior_strength": at_least(0),
    "success.distributor_min_rows": COUNT,
    "success.num_processes": COUNT,
    "success.hidden_sizes": COUNT,
    "success.dropout": HALF_OPEN_FRACTION,
    "success.learning_rate": above(0),
    "success.weight_decay": at_least(0),
    "success.batch_size": COUNT,
    "success.max_epochs": COUNT,
    "success.patience": COUNT,
    "success.validation_fraction": OPEN_FRACTION,
    "success.test_fraction": OPEN_FRACTION,
    "success.seed": SEED,
    "success.scoring_batch_size": COUNT,
    "success.calibration_bins": COUNT,
    "success.reformulation_weight": at_least(0),
    "success.zero_result_weight": at_least(0),
    "success.min_per_class": COUNT,
    "success.min_cluster_labels": COUNT,
    "success.confidence": OPEN_FRACTION,
    "recommend.n_recommendations": COUNT,
    "recommend.predicted_fail_below": FRACTION,
    "recommend.min_cluster_success_rate": FRACTION,
    "recommend.min_similarity": Interval(-1.0, 1.0),
    "recommend.min_support": COUNT,
    "recommend.exact_max_candidates": COUNT,
    "recommend.ivf_lists": COUNT,
    "recommend.ivf_probe": COUNT,
    "recommend.max_candidates_per_cluster": COUNT,
    "recommend.recall_sample": COUNT,
    "recommend.seed": SEED,
    "recommend.candidates_per_source": COUNT,
    "recommend.min_reformulation_pairs": COUNT,
    "recommend.min_lexical_similarity": FRACTION,
    "recommend.weight_reformulation": at_least(0),
    "recommend.weight_lexical": at_least(0),
    "recommend.weight_semantic": at_least(0),
    "recommend.weight_success": at_least(0),
    "recommend.holdout_share": HALF_OPEN_FRACTION,
    "report.map_sample": at_least(10),
    "report.knife_sample": at_least(10),
    "report.knife_refit_sample": at_least(10),
    "report.eval_sample": at_least(10),
    "report.n_failing": at_least(0),
    "report.n_recommendations": at_least(0),
    "report.seed": SEED,
}


def is_numeric(hint: Any) -> bool:
    """True for int, float, their optionals and lists of them (bool excluded)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType, list):
        return any(is_numeric(a) for a in typing.get_args(hint) if a is not type(None))
    return hint in (int, float)


def numeric_keys(cls: type, prefix: str = "") -> list[str]:
    """Every numeric key of config dataclass `cls`, as `section.key`."""
    keys = []
    for name, hint in typing.get_type_hints(cls).items():
        key = f"{prefix}.{name}" if prefix else name
        if dataclasses.is_dataclass(hint):
            keys += numeric_keys(hint, key)  # type: ignore[arg-type]
        elif is_numeric(hint):
            keys.append(key)
    return keys


def lookup(config: Any, key: str) -> Any:
    value = config
    for part in key.split("."):
        value = getattr(value, part)
    return value


def check_bounds(config: Any) -> None:
    """Raise a `ConfigError` naming the first key of `BOUNDS` whose value is out of bounds."""
    for key, interval in BOUNDS.items():
        value = lookup(config, key)
        if value is None or isinstance(value, str):
            continue
        if isinstance(value, list):
            bad = [v for v in value if not interval.contains(v)]
            if bad:
                raise ConfigError(f"{key} values must be {interval.describe()}, got {bad}")
        elif not interval.contains(value):
            raise ConfigError(f"{key} must be {interval.describe()}, got {value}")

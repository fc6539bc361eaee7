"""Metrics of success predictors (ROC-AUC, PR-AUC, Brier, calibration), the baselines and
Wilson intervals of success rates."""

from __future__ import annotations

import numpy as np
import pandas as pd
from pyspark.sql import Column
from pyspark.sql import functions as F
from scipy.stats import norm
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

Row = tuple[str, str, str, float]

CALIBRATION_COLUMNS = ["model", "split", "bin", "lower", "upper", "n", "mean_predicted",
                       "observed_rate"]


def binary_metrics(model: str, split: str, y: np.ndarray, p: np.ndarray) -> tuple[list[Row],
                                                                                  list[str]]:
    """Metric rows for predictions `p` of labels `y`; metrics undefined here are left out and
    explained in the returned notes (never a NaN row)."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    if len(y) != len(p):
        raise ValueError(f"{model}/{split}: {len(y)} labels but {len(p)} predictions")
    if not np.isfinite(p).all():
        raise ValueError(f"{model}/{split}: predictions hold NaN or infinite values")
    notes: list[str] = []
    if len(y) == 0:
        return [], [f"{model}/{split}: no labelled queries, no metrics"]
    rows: list[Row] = [(model, split, "n", float(len(y))),
                       (model, split, "positive_rate", float(y.mean())),
                       (model, split, "brier", float(brier_score_loss(y, p))),
                       (model, split, "mean_predicted", float(p.mean()))]
    if len(np.unique(y)) < 2:
        notes.append(f"{model}/{split}: labels hold one class, so ROC-AUC and PR-AUC are "
                     "undefined and left out")
    else:
        rows += [(model, split, "roc_auc", float(roc_auc_score(y, p))),
                 (model, split, "pr_auc", float(average_precision_score(y, p)))]
    return rows, notes


def calibration_table(model: str, split: str, y: np.ndarray, p: np.ndarray,
                      n_bins: int) -> pd.DataFrame:
    """Equal-width bins of predicted probability: count, mean prediction, observed rate."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, n_bins - 1)
    records = []
    for b in range(n_bins):
        mask = which == b
        if mask.any():
            records.append({"model": model, "split": split, "bin": b, "lower": edges[b],
                            "upper": edges[b + 1], "n": int(mask.sum()),
                            "mean_predicted": float(p[mask].mean()),
                            "observed_rate": float(y[mask].mean())})
    return pd.DataFrame.from_records(records, columns=CALIBRATION_COLUMNS)


def expected_calibration_error(table: pd.DataFrame) -> float:
    """Count-weighted mean |observed - predicted| over the calibration bins."""
    if table.empty:
        return 0.0
    gap = (table["observed_rate"] - table["mean_predicted"]).abs()
    return float((gap * table["n"]).sum() / table["n"].sum())


def majority_probability(y_train: np.ndarray) -> float:
    """The majority-class baseline as a probability: the training positive rate."""
    return float(np.mean(y_train))


def cluster_rates(clusters: np.ndarray, y: np.ndarray) -> dict[int, float]:
    """Training success rate of each cluster."""
    frame = pd.DataFrame({"c": clusters, "y": np.asarray(y, dtype=np.float64)})
    return {int(k): float(v) for k, v in frame.groupby("c")["y"].mean().items()}


def cluster_rate_predictions(clusters: np.ndarray, rates: dict[int, float],
                             default: float) -> np.ndarray:
    """Each query's cluster training success rate (`default` for unseen or missing clusters)."""
    return np.array([rates.get(int(c), default) if c is not None and c == c else default
                     for c in clusters], dtype=np.float64)


def logistic_regression(seed: int, max_iter: int = 1000) -> Pipeline:
    """Standardised, class-balanced L2 logistic regression (the linear baseline)."""
    return make_pipeline(StandardScaler(), LogisticRegression(
        C=1.0, class_weight="balanced", max_iter=max_iter, random_state=seed))


def wilson_columns(successes: Column, n: Column, confidence: float) -> tuple[Column, Column]:
    """The (low, high) Wilson score interval of the rate `successes / n` at `confidence`:
    `(p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)`, null where `n` is 0."""
    z = float(norm.ppf(0.5 + confidence / 2.0))
    total = F.when(n > 0, n.cast("double"))
    p = successes.cast("double") / total
    center = p + F.lit(z * z / 2.0) / total
    spread = F.lit(z) * F.sqrt(p * (F.lit(1.0) - p) / total + F.lit(z * z / 4.0) / (total * total))
    scale = F.lit(1.0) + F.lit(z * z) / total
    known = n > 0
    return (F.when(known, F.greatest(F.lit(0.0), (center - spread) / scale)),
            F.when(known, F.least(F.lit(1.0), (center + spread) / scale)))

"""The report's figures: matplotlib (Agg) PNGs in a colour-blind-safe palette."""

from __future__ import annotations

import logging
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from itertools import cycle
from pathlib import Path
from typing import Any, cast

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from cycler import cycler  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter, PercentFormatter  # noqa: E402
from sklearn.calibration import calibration_curve  # noqa: E402
from sklearn.metrics import roc_auc_score, roc_curve  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from querylens.report.analysis import (  # noqa: E402
    neighbour_ks,
    project_2d,
    reduce_sample,
    refit_silhouettes,
)
from querylens.report.data import ReportData, few_labels  # noqa: E402

log = logging.getLogger("querylens")

OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000",
             "#F0E442"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
LINESTYLES = ["-", "--", "-.", ":"]
BLUE, ORANGE, GREEN, VERMILLION, GREY = "#0072B2", "#E69F00", "#009E73", "#D55E00", "#7F7F7F"
STYLE = {
    "figure.dpi": 100, "savefig.dpi": 110, "font.size": 10, "axes.titlesize": 12,
    "axes.titleweight": "bold", "axes.labelsize": 10, "axes.grid": True, "grid.alpha": 0.3,
    "axes.spines.top": False, "axes.spines.right": False, "legend.frameon": False,
    "axes.prop_cycle": cycler(color=OKABE_ITO),
}


class NotAvailable(Exception):
    """A figure cannot be drawn from this run's tables; the message says why."""


@dataclass(frozen=True)
class FigureOptions:
    projection: str = "tsne"
    knife_refit_sample: int = 3000
    seed: int = 42


@dataclass(frozen=True)
class RenderedFigure:
    """One figure of the report: its PNG, or the reason it is missing."""

    name: str
    title: str
    section: str
    caption: str = ""
    path: Path | None = None
    missing: str = ""


Drawer = Callable[[ReportData, FigureOptions], tuple[Figure, str]]


def colour(i: int) -> str:
    return OKABE_ITO[i % len(OKABE_ITO)]


def require(data: ReportData, name: str) -> pd.DataFrame:
    frame = data.table(name)
    if frame is None:
        raise NotAvailable(f"the `{name}` table has no rows for this run")
    return frame


def as_percent(values: pd.Series) -> pd.Series:
    """Fractions in [0, 1] as percentages; values already in percent stay as they are."""
    values = values.astype(float)
    return values if values.max() > 1.5 else 100 * values


def short(text: str, width: int = 30) -> str:
    return textwrap.shorten(str(text), width=width, placeholder="…")


def cluster_names(data: ReportData) -> dict[int, str]:
    """`#id label` for every cluster (label falls back to the top terms or the id)."""
    clusters = data.table("clusters")
    names: dict[int, str] = {}
    if clusters is None:
        return names
    for row in clusters.to_dict("records"):
        label = row.get("label")
        if not isinstance(label, str) or not label.strip():
            terms = row.get("top_terms")
            label = ", ".join(list(terms)[:3]) if terms is not None and len(terms) else ""
        names[int(row["cluster_id"])] = f"#{int(row['cluster_id'])} {label}".strip()
    return names


def pca_pareto(data: ReportData, options: FigureOptions) -> tuple[Figure, str]:
    frame = require(data, "pca_variance").sort_values("component").reset_index(drop=True)
    rank = np.arange(1, len(frame) + 1)
    pct = as_percent(frame["explained_variance_ratio"]).to_numpy()
    cum = (as_percent(frame["cumulative"]).to_numpy() if "cumulative" in frame
           else np.cumsum(pct))
    chosen, _ = data.chosen()
    zoom = min(100, len(frame))
    panels = [(len(frame), f"All {len(frame)} components")]
    if len(frame) > zoom:
        panels.append((zoom, f"First {zoom} components"))
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 3.9 * len(panels)), squeeze=False)
    for ax, (n, title) in zip(axes[:, 0], panels, strict=True):
        ax.bar(rank[:n], pct[:n], color=BLUE, width=0.9 if n <= 100 else 1.0)
        ax.set_ylabel("Variance explained per component", color=BLUE)
        ax.tick_params(axis="y", colors=BLUE)
        ax.set_xlabel("Principal component")
        twin = ax.twinx()
        twin.plot(rank[:n], cum[:n], color=VERMILLION, marker="D", ms=2.5, lw=1.2)
        twin.yaxis.set_major_formatter(PercentFormatter())
        twin.set_ylim(0, 102)
        twin.set_ylabel("Cumulative variance", color=VERMILLION)
        twin.tick_params(axis="y", colors=VERMILLION)
        twin.grid(False)
        ax.yaxis.set_major_formatter(PercentFormatter(decimals=1))
        ax.set_xlim(0.3, n + 0.7)
        ax.set_title(title, loc="left", fontsize=11)
        if chosen and chosen <= n:
            ax.axvline(chosen + 0.5, color=GREY, ls="--", lw=1)
            twin.annotate(f"this run keeps {chosen}: {cum[chosen - 1]:.0f}% of variance",
                          (chosen + 0.5, cum[chosen - 1]),
                          xytext=(chosen + 0.5 + 0.08 * n, min(97.0, cum[chosen - 1] + 30)),
                          fontsize=9, color="#333333",
                          bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "#bbbbbb"},
                          arrowprops={"arrowstyle": "->", "color": "#555555"})
    fig.suptitle("PCA Pareto: variance explained by each component", fontweight="bold")
    fig.tight_layout()
    at = f" The run keeps {chosen} components ({cum[chosen - 1]:.0f}% of the variance)." if (
        chosen and chosen <= len(cum)) else ""
    return fig, (f"Bars: share of variance per principal component of the normalised embeddings; "
                 f"line: cumulative share.{at}")


def sweep_frame(data: ReportData) -> tuple[pd.DataFrame, list[str]]:
    sweep = require(data, "cluster_sweep")
    metrics = [c for c in ("silhouette_sqeuclidean", "silhouette_euclidean_sampled")
               if c in sweep and sweep[c].notna().any()]
    metrics += [c for c in sweep.columns
                if c.startswith("silhouette") and c not in metrics and sweep[c].notna().any()]
    return sweep.sort_values(["n_clusters", "n_components"]), metrics


def per_k_lines(
    ax: plt.Axes, sweep: pd.DataFrame, column: str, chosen: tuple, own: float | None = None
) -> None:
    styles = cycle([(c, ls) for ls in LINESTYLES for c in OKABE_ITO[:7]])
    for (k, group), (col, ls), marker in zip(sweep.groupby("n_clusters"), styles, cycle(MARKERS)):
        group = group.dropna(subset=[column])
        ax.plot(group["n_components"], group[column], color=col, ls=ls, marker=marker, ms=4,
                label=f"k = {int(k)}")
    hit = sweep[(sweep["n_components"] == chosen[0]) & (sweep["n_clusters"] == chosen[1])]
    if not hit.empty and hit[column].notna().all():
        ax.scatter(hit["n_components"], hit[column], s=180, facecolors="none",
                   edgecolors="black", lw=1.5, zorder=5, label="this run")
    elif own is not None and chosen[0]:
        ax.scatter([chosen[0]], [own], marker="*", s=220, color="black", zorder=5,
                   label=f"this run (k = {chosen[1]})")
    if sweep["n_components"].max() / max(1, sweep["n_components"].min()) > 20:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("Number of PCA components")


def metric_name(column: str) -> str:
    return {"silhouette_sqeuclidean": "Silhouette (squared euclidean)",
            "silhouette_euclidean_sampled": "Silhouette (euclidean, sampled)"}.get(
                column, column.replace("_", " ").capitalize())


def sweep_silhouette(data: ReportData, options: FigureOptions) -> tuple[Figure, str]:
    sweep, metrics = sweep_frame(data)
    if not metrics:
        raise NotAvailable("the `cluster_sweep` table holds no silhouette values")
    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics) + 1, 4.6), squeeze=False)
    for ax, column in zip(axes[0], metrics, strict=True):
        own = None
        if column == "silhouette_sqeuclidean" and data.knife is not None:
            own = float(data.knife["silhouette_sqeuclidean"].mean())
        per_k_lines(ax, sweep, column, data.chosen(), own)
        ax.set_ylabel(f"Average {metric_name(column).lower()}")
        ax.set_title(metric_name(column), loc="left", fontsize=11)
    axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1.01, 1), title="clusters")
    fig.suptitle("Silhouette vs number of components, one line per k", fontweight="bold")
    fig.tight_layout()
    return fig, ("Higher is better: well separated clusters. Silhouettes fall as components are "
                 "added (distances concentrate in high dimensions). A circle marks this run "
                 "when it lies on the grid, a star its own average silhouette otherwise.")


def sweep_inertia(data: ReportData, options: FigureOptions) -> tuple[Figure, str]:
    sweep, _ = sweep_frame(data)
    if "inertia" not in sweep or sweep["inertia"].isna().all():
        raise NotAvailable("the `cluster_sweep` table holds no inertia values")
    fig, ax = plt.subplots(figsize=(8.5, 4.6))
    per_k_lines(ax, sweep, "inertia", data.chosen())
    ax.set_ylabel("Inertia (within-cluster sum of squares)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), title="clusters")
    ax.set_title("Inertia of the final KMeans vs number of components")
    fig.tight_layout()
    return fig, ("Inertia grows with the number of components because more variance is kept; "
                 "more clusters lower it at every dimensionality.")


def sweep_tradeoff(data: ReportData, options: FigureOptions) -> tuple[Figure, str]:
    sweep, metrics = sweep_frame(data)
    if not metrics:
        raise NotAvailable("the `cluster_sweep` table holds no silhouette values")
    column = metrics[0]
    explained = sweep.get("explained_variance")
    if explained is None or explained.isna().all():
        pca = require(data, "pca_variance").sort_values("component")
        cum = as_percent(pca["cumulative"]).to_numpy()
        explained = sweep["n_components"].map(lambda n: cum[min(int(n), len(cum)) - 1])
    else:
        explained = as_percent(explained)
    sweep = sweep.assign(pct=explained.to_numpy())
    fig, ax = plt.subplots(figsize=(8.5, 5))
    for i, (k, group) in enumerate(sweep.groupby("n_clusters")):
        ax.scatter(group[column], group["pct"], color=colour(i), marker=MARKERS[i % 8], s=36,
                   label=f"k = {int(k)}")
        for row in group.itertuples():
            ax.annotate(f"{int(row.n_components)}", (getattr(row, column), row.pct),
                        xytext=(3, 3), textcoords="offset points", fontsize=7, color="#555555")
    n_comp, k_chosen = data.chosen()
    hit = sweep[(sweep["n_components"] == n_comp) & (sweep["n_clusters"] == k_chosen)]
    if not hit.empty:
        ax.scatter(hit[column], hit["pct"], s=200, facecolors="none", edgecolors="black",
                   lw=1.5, label="this run")
    ax.yaxis.set_major_formatter(PercentFormatter())
    ax.set_xlabel(f"Average {metric_name(column).lower()}")
    ax.set_ylabel("Variance explained by the kept components")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), title="clusters")
    ax.set_title("Trade-off: cluster quality vs information kept")
    fig.tight_layout()
    return fig, ("Each point is one grid point of the sweep, labelled with its number of "
                 "components: moving right gives tighter clusters, moving up keeps more of the "
                 "embedding's information.")


GRID_PANELS = (("silhouette_euclidean_sampled", "Silhouette (euclidean, sampled)"),
               ("stability_ari", "Seed stability (ARI)"),
               ("ami", "AMI with the reference classes"))


def chosen_point(data: ReportData, sweep: pd.DataFrame) -> tuple[int | None, int | None]:
    """The sweep row flagged `chosen`, else the run's (n_components, n_clusters)."""
    flags = sweep["chosen"].eq(True) if "chosen" in sweep else pd.Series(False, sweep.index)
    if flags.any():
        row = sweep[flags].iloc[0]
        return int(row["n_components"]), int(row["n_clusters"])
    return data.chosen()


def sweep_grid(data: ReportData, options: FigureOptions) -> tuple[Figure, str]:
    """One heatmap per sweep metric over (n_components x n_clusters), the chosen point boxed."""
    sweep = require(data, "cluster_sweep")
    panels = [(c, t) for c, t in GRID_PANELS if c in sweep and sweep[c].notna().any()]
    if not panels:
        raise NotAvailable("the `cluster_sweep` table holds no silhouette, stability or AMI")
    chosen = chosen_point(data, sweep)
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels) + 0.6, 4.8),
                             squeeze=False)
    for ax, (column, title) in zip(axes[0], panels, strict=True):
        grid = sweep.pivot_table(index="n_clusters", columns="n_components", values=column)
        image = ax.imshow(grid.to_numpy(), origin="lower", aspect="auto", cmap="viridis")
        ax.set_xticks(range(len(grid.columns)), [f"{int(c)}" for c in grid.columns])
        ax.set_yticks(range(len(grid.index)), [f"{int(k)}" for k in grid.index])
        for (i, j), value in np.ndenumerate(grid.to_numpy()):
            if np.isfinite(value):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if value < np.nanmean(grid.to_numpy()) else "black")
        if chosen[0] in grid.columns and chosen[1] in grid.index:
            j, i = list(grid.columns).index(chosen[0]), list(grid.index).index(chosen[1])
            ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec=VERMILLION,
                                       lw=2.5))
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03)
        ax.set_xlabel("Number of PCA components")
        ax.set_ylabel("Number of clusters k")
        ax.set_title(title, loc="left", fontsize=11)
    fig.suptitle("The sweep over components and clusters; the box is this run",
                 fontweight="bold")
    fig.tight_layout()
    facts = data.facts.get("cluster", {}) if isinstance(data.facts, dict) else {}
    reason = facts.get("choice_reason") if isinstance(facts, dict) else None
    why = f" This run: {reason}." if reason else ""
    return fig, ("Each cell is one grid point of the sweep (on its sample), the largest number "
                 "of components being the whole embedding, no reduction. The silhouette falls "
                 "as components are added whatever the data, so `auto` chooses the components "
                 "by explained variance and only then k by stability and silhouette; the AMI "
                 "column (when reference classes exist) is never used to choose." + why)


def knife_panel(ax: plt.Axes, frame: pd.DataFrame, title: str) -> None:
    values = frame["silhouette_sqeuclidean"].to_numpy(dtype=float)
    labels = frame["cluster_id"].to_numpy()
    gap = max(2, len(frame) // 120)
    y = gap
    for i, cluster in enumerate(sorted(np.unique(labels))):
        band = np.sort(values[labels == cluster])
        ax.fill_betweenx(np.arange(y, y + len(band)), 0, band, color=colour(i), alpha=0.85,
                         lw=0)
        ax.text(-0.04, y + len(band) / 2, str(int(cluster)), fontsize=7, ha="right",
                va="center", transform=ax.get_yaxis_transform())
        y += len(band) + gap
    mean = float(values.mean())
    ax.axvline(mean, color=VERMILLION, ls="--", lw=1.4, label=f"average {mean:.3f}")
    ax.set_ylim(0, y)
    ax.set_yticks([])
    ax.set_xlim(min(-0.2, values.min() - 0.02), 1)
    ax.set_xlabel("Silhouette (squared euclidean)")
    ax.set_title(title, loc="left", fontsize=11)
    ax.legend(loc="lower right")


def silhouette_knife(data: ReportData, options: FigureOptions) -> tuple[Figure, str]:
    if data.knife is None or data.knife.empty:
        raise NotAvailable("the `cluster_assignments` table has no rows for this run")
    n_comp, k = data.chosen()
    k = k or int(data.knife["cluster_id"].nunique())
    panels = [(data.knife, f"k = {k} (this run, {len(data.knife):,} queries)")]
    note = ""
    if data.embeddings is not None and n_comp:
        sample = data.embeddings.sample(
            n=min(len(data.embeddings), options.knife_refit_sample), random_state=options.seed)
        reduced = reduce_sample(sample, n_comp, options.seed)
        sweep = data.table("cluster_sweep")
        grid = [] if sweep is None else sweep["n_clusters"].unique().tolist()
        for other in neighbour_ks(k, grid, len(sample)):
            panels.append((refit_silhouettes(reduced, other, options.seed),
                           f"k = {other} (refit on {len(sample):,} sampled queries)"))
        note = (f" Neighbouring k are refitted (normalise, PCA to {n_comp} components, KMeans) "
                f"on a sample of {len(sample):,} cached embeddings.")
    else:
        note = (" Neighbouring k are not shown: " + (data.embeddings_note or
                "the run's embeddings are not reachable") + ".")
    ncols = 1 if len(panels) == 1 else 2
    nrows = int(np.ceil(len(panels) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(6 * ncols + 0.5, 5 * nrows), squeeze=False)
    for ax, (frame, title) in zip(axes.flat, panels, strict=False):
        knife_panel(ax, frame, title)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle("Silhouette per query, grouped by cluster", fontweight="bold")
    fig.tight_layout()
    return fig, ("Each band is one cluster (its id at the left), its queries sorted by "
                 "silhouette; bars left of zero are queries closer to another cluster. The dashed "
                 "line is the average." + note)


def query_map(data: ReportData, options: FigureOptions) -> tuple[Figure, str]:
    if data.embeddings is None:
        raise NotAvailable(data.embeddings_note or "the run's embeddings are not reachable")
    n_comp, _ = data.chosen()
    sample = data.embeddings
    reduced = reduce_sample(sample, n_comp or 10, options.seed)
    xy = project_2d(reduced, options.projection, options.seed)
    names = cluster_names(data)
    labels = sample["cluster_id"].to_numpy()
    fig, ax = plt.subplots(figsize=(11, 7.5))
    for i, cluster in enumerate(sorted(np.unique(labels))):
        mask = labels == cluster
        ax.scatter(xy[mask, 0], xy[mask, 1], s=14, alpha=0.65, color=colour(i),
                   marker=MARKERS[(i // len(OKABE_ITO)) % len(MARKERS)], lw=0)
    for i, cluster in enumerate(sorted(np.unique(labels))):
        cx, cy = np.median(xy[labels == cluster], axis=0)
        ax.annotate(short(names.get(int(cluster), f"#{int(cluster)}"), 28), (cx, cy),
                    ha="center", va="center", fontsize=8.5, fontweight="bold",
                    bbox={"boxstyle": "round,pad=0.25", "fc": "white", "ec": colour(i),
                          "alpha": 0.85})
    method = "t-SNE" if options.projection == "tsne" else "first two principal components"
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    ax.set_xlabel(f"{method} of the {n_comp or 10}-component PCA space")
    ax.set_title(f"Map of {len(sample):,} sampled queries, coloured by cluster")
    fig.tight_layout()
    return fig, (f"A {method} projection of a random sample of {len(sample):,} queries; each "
                 "label sits at the median position of its cluster. Distances on the map are "
                 "only roughly faithful: use it to see which clusters neighbour each other.")


def cluster_overview(data: ReportData, options: FigureOptions) -> tuple[Figure, str]:
    clusters = require(data, "clusters").sort_values("n_searches", ascending=True)
    names = cluster_names(data)
    ticks = [short(names.get(int(c), f"#{int(c)}"), 34) for c in clusters["cluster_id"]]
    y = np.arange(len(clusters))
    has_rate = "success_rate" in clusters and clusters["success_rate"].notna().any()
    fig, axes = plt.subplots(1, 2 if has_rate else 1, figsize=(12, 1.6 + 0.36 * len(clusters)),
                             sharey=True, squeeze=False)
    ax = axes[0][0]
    ax.barh(y, clusters["n_searches"], color=BLUE)
    total = clusters["n_searches"].sum()
    pairs = zip(clusters["n_searches"], clusters["size"], strict=True)
    for yi, (searches, size) in enumerate(pairs):
        ax.text(searches, yi, f" {100 * searches / total:.1f}% · {int(size):,} q",
                va="center", fontsize=8)
    ax.set_yticks(y, ticks)
    ax.set_xlabel("Searches (traffic)")
    ax.set_xlim(0, clusters["n_searches"].max() * 1.3)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.set_title("Traffic per cluster", loc="left", fontsize=11)
    caption = ("Clusters sorted by traffic (searches), largest at the top; labels give the share "
               "of searches and the number of distinct queries.")
    if has_rate:
        caption += success_rate_panel(axes[0][1], clusters, y, data)
    fig.suptitle("Cluster sizes and success rates, sorted by traffic", fontweight="bold")
    fig.tight_layout()
    return fig, caption


def success_rate_panel(ax: Any, clusters: pd.DataFrame, y: np.ndarray, data: ReportData) -> str:
    """Per-cluster success-rate bars with their Wilson intervals; clusters with fewer than
    `success.min_cluster_labels` labelled queries get a grey stub instead of a bar. Returns the
    caption's addition."""
    minimum = int(data.success_setting("min_cluster_labels"))
    labelled = clusters.get("n_labelled", pd.Series(np.nan, index=clusters.index))
    few = np.array([few_labels(n, minimum) for n in labelled])
    rates = 100 * clusters["success_rate"].astype(float).where(~few)
    median = rates.median()
    ax.barh(y, rates.fillna(0), color=[GREEN if r >= median else ORANGE for r in rates])
    if {"success_rate_low", "success_rate_high"} <= set(clusters.columns):
        low = 100 * clusters["success_rate_low"].astype(float).where(~few)
        high = 100 * clusters["success_rate_high"].astype(float).where(~few)
        known = low.notna().to_numpy() & high.notna().to_numpy()
        ax.errorbar(rates[known], y[known], xerr=[(rates - low).clip(lower=0)[known],
                                                       (high - rates).clip(lower=0)[known]],
                    fmt="none", ecolor="black", elinewidth=1, capsize=2)
    for yi, (rate, is_few, n) in enumerate(zip(rates, few, labelled, strict=True)):
        if is_few:
            ax.barh(yi, 100, color="#e5e7eb", hatch="//", edgecolor="#c4c7cc")
            ax.text(1, yi, f" {int(n)} labelled: too few", va="center", fontsize=8, color=GREY)
        elif not np.isnan(rate):
            n_text = "" if pd.isna(n) else f" (n={int(n):,})"
            ax.text(rate, yi, f" {rate:.0f}%{n_text}", va="center", fontsize=8)
    shown = rates.notna().to_numpy()
    if shown.any():
        weighted = float(np.average(rates[shown], weights=clusters["size"][shown]))
        ax.axvline(weighted, color="black", ls="--", lw=1, label=f"all queries {weighted:.0f}%")
        ax.legend(loc="lower right")
    ax.xaxis.set_major_formatter(PercentFormatter())
    ax.set_xlim(0, 130)
    ax.set_xlabel("Success rate of the cluster's labelled queries")
    ax.set_title("Success rate per cluster", loc="left", fontsize=11)
    confidence = float(data.success_setting("confidence"))
    return (f" Green: at or above the median cluster; orange: below — high traffic with low "
            f"success is where search fails most users. Whiskers: {100 * confidence:.0f}% Wilson "
            f"intervals. Grey, hatched: fewer than {minimum} labelled queries "
            "(success.min_cluster_labels), too few for a rate.")


def metric_value(data: ReportData, model: str, metric: str) -> float | None:
    metrics = data.table("model_metrics")
    if metrics is None:
        return None
    rows = metrics[(metrics["model"] == model) & (metrics["metric"] == metric)]
    if rows.empty:
        return None
    for split in ("test", "validation", "valid", "val"):
        hit = rows[rows["split"] == split]
        if not hit.empty:
            return float(hit["value"].iloc[0])
    return float(rows["value"].iloc[0])


def evaluation(data: ReportData) -> pd.DataFrame:
    frame = data.evaluation
    if frame is None or frame.empty:
        raise NotAvailable("per-query scores need both `success_labels` and "
                           "`success_predictions`")
    if frame["success"].nunique() < 2:
        raise NotAvailable("the labelled queries are all one class, so no curve can be drawn")
    return frame


def success_roc(data: ReportData, options: FigureOptions) -> tuple[Figure, str]:
    frame = evaluation(data)
    fig, ax = plt.subplots(figsize=(7.5, 6))
    scored = [("nn", "Neural network", "p_success", BLUE, "-")]
    if "cluster_rate" in frame:
        scored.append(("cluster_rate", "Cluster success rate", "cluster_rate", ORANGE, "--"))
    for _, title, column, col, ls in scored:
        fpr, tpr, _ = roc_curve(frame["success"], frame[column])
        auc = roc_auc_score(frame["success"], frame[column])
        ax.plot(fpr, tpr, color=col, ls=ls, lw=2, label=f"{title} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], color=GREY, ls=":", label="Majority class / chance (AUC 0.5)")
    others = []
    for model, title in [("logistic_regression", "logistic regression"), ("nn", "neural network"),
                         ("cluster_rate", "cluster rate"), ("majority", "majority")]:
        value = metric_value(data, model, "roc_auc")
        if value is not None:
            others.append(f"{title}: {value:.3f}")
    if others:
        ax.text(0.98, 0.04, "ROC AUC in model_metrics\n" + "\n".join(others), ha="right",
                va="bottom", fontsize=8.5, transform=ax.transAxes,
                bbox={"boxstyle": "round", "fc": "#f4f4f4", "ec": "#cccccc"})
    ax.set_xlabel("False positive rate (failures predicted to succeed)")
    ax.set_ylabel("True positive rate (successes found)")
    ax.set_title("Success model: ROC curve vs baselines")
    ax.legend(loc="upper left", bbox_to_anchor=(0.0, -0.13), ncol=1)
    ax.set_aspect("equal")
    fig.tight_layout()
    note = f" ({data.evaluation_note})" if data.evaluation_note else ""
    return fig, (f"Curves from {len(frame):,} labelled queries{note}: the network's p_success "
                 "and, as a baseline, the success rate of the query's cluster. A model that "
                 "predicts the majority class is the diagonal. The logistic regression has no "
                 "per-query scores in the tables, so it appears only with the AUC recorded in "
                 "model_metrics.")


MODELS = [("nn", "Neural network", BLUE, "o", "-"),
          ("logistic_regression", "Logistic regression", GREEN, "^", "-."),
          ("cluster_rate", "Cluster success rate", ORANGE, "s", "--"),
          ("majority", "Majority class rate", VERMILLION, "D", ":")]


def success_calibration(data: ReportData, options: FigureOptions) -> tuple[Figure, str]:
    table = data.table("success_calibration")
    if table is not None and "test" in set(table["split"]):
        return calibration_from_table(data, table[table["split"] == "test"])
    frame = evaluation(data)
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(7.5, 7), height_ratios=[3, 1], sharex=True)
    ax.plot([0, 1], [0, 1], color=GREY, ls=":", label="Perfectly calibrated")
    scored = [("Neural network", "p_success", BLUE, "o", "-")]
    if "cluster_rate" in frame:
        scored.append(("Cluster success rate", "cluster_rate", ORANGE, "s", "--"))
    bins = int(min(10, max(2, len(frame) // 20)))
    for title, column, col, marker, ls in scored:
        prob_true, prob_pred = calibration_curve(frame["success"], frame[column].clip(0, 1),
                                                 n_bins=bins, strategy="quantile")
        brier = float(np.mean((frame[column].clip(0, 1) - frame["success"]) ** 2))
        ax.plot(prob_pred, prob_true, color=col, marker=marker, ls=ls, lw=1.8,
                label=f"{title} (Brier {brier:.3f})")
        hist.hist(frame[column], bins=20, range=(0, 1), color=col, alpha=0.5, label=title)
    base = float(frame["success"].mean())
    ax.axhline(base, color="black", lw=0.8, ls="-.", label=f"Majority baseline rate {base:.2f}")
    ax.set_ylabel("Observed success rate")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left")
    ax.set_title("Success model: calibration vs baselines")
    hist.set_xlabel("Predicted probability of success")
    hist.set_ylabel("Queries")
    fig.tight_layout()
    return fig, (f"Observed success rate per bin of predicted probability ({bins} quantile bins). "
                 "Points on the diagonal mean a predicted 70% succeeds 70% of the time; the "
                 "histogram shows how the predictions spread.")


def calibration_from_table(data: ReportData, table: pd.DataFrame) -> tuple[Figure, str]:
    """Reliability curves of every model from the `success_calibration` bins (test split)."""
    frame = data.evaluation
    rows = 2 if frame is not None and not frame.empty else 1
    fig, axes = plt.subplots(rows, 1, figsize=(7.5, 7 if rows == 2 else 5.6), squeeze=False,
                             height_ratios=[3, 1][:rows], sharex=True)
    ax = axes[0][0]
    ax.plot([0, 1], [0, 1], color=GREY, ls=":", label="Perfectly calibrated")
    for model, title, col, marker, ls in MODELS:
        bins = table[(table["model"] == model) & (table["n"] > 0)].sort_values("mean_predicted")
        if bins.empty:
            continue
        ece = metric_value(data, model, "ece")
        suffix = f" (ECE {ece:.3f})" if ece is not None else ""
        ax.plot(bins["mean_predicted"], bins["observed_rate"], color=col, marker=marker, ls=ls,
                lw=1.8, ms=5, label=title + suffix)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("Observed success rate")
    ax.legend(loc="upper left", fontsize=8.5)
    ax.set_title("Success model: calibration vs baselines (test split)")
    if frame is not None and rows == 2:
        hist = axes[1][0]
        hist.hist(frame["p_success"], bins=20, range=(0, 1), color=BLUE, alpha=0.7)
        hist.set_ylabel("Queries")
        hist.set_title("Neural network predictions", loc="left", fontsize=9)
    axes[-1][0].set_xlabel("Predicted probability of success")
    fig.tight_layout()
    return fig, ("Observed success rate per bin of predicted probability on the test split, from "
                 "the `success_calibration` table: points on the diagonal mean a predicted 70% "
                 "succeeds 70% of the time. ECE is the expected calibration error (lower is "
                 "better).")


FIGURES: list[tuple[str, str, str, Drawer]] = [
    ("cluster_overview", "Cluster sizes and success rates", "clusters", cluster_overview),
    ("query_map", "Map of the queries", "clusters", query_map),
    ("pca_pareto", "PCA Pareto plot", "choice", pca_pareto),
    ("sweep_grid", "The two-axis sweep", "choice", sweep_grid),
    ("sweep_silhouette", "Silhouette vs components", "choice", sweep_silhouette),
    ("sweep_inertia", "Inertia vs components", "choice", sweep_inertia),
    ("sweep_tradeoff", "Silhouette vs variance explained", "choice", sweep_tradeoff),
    ("silhouette_knife", "Silhouette plots", "choice", silhouette_knife),
    ("success_roc", "ROC curve", "model", success_roc),
    ("success_calibration", "Calibration", "model", success_calibration),
]


def render_figures(
    data: ReportData, out_dir: Path, options: FigureOptions | None = None
) -> list[RenderedFigure]:
    """Draw every figure the tables allow into `out_dir`; the others carry their reason.

    The sample computations run single-threaded: on a busy driver, OpenMP threads that spin
    against other processes make t-SNE and KMeans many times slower.
    """
    options = options or FigureOptions()
    out_dir.mkdir(parents=True, exist_ok=True)
    rendered = []
    for name, title, section, draw in FIGURES:
        path = out_dir / f"{name}.png"
        path.unlink(missing_ok=True)
        with plt.rc_context(cast(Any, STYLE)), threadpool_limits(1):
            try:
                fig, caption = draw(data, options)
            except NotAvailable as reason:
                log.info("report: %s not available: %s", name, reason)
                rendered.append(RenderedFigure(name, title, section, missing=str(reason)))
                continue
            fig.savefig(path, facecolor="white", bbox_inches="tight")
            plt.close(fig)
        rendered.append(RenderedFigure(name, title, section, caption, path))
    return rendered

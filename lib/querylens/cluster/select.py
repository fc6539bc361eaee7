"""`auto` for cluster.n_components and cluster.n_clusters: the rule that picks the sweep point.

Components: the fewest components whose cumulative explained variance reaches
`auto_variance_target` (0.9; the sweep grid gets this point added, so the choice does not depend
on the grid). The silhouette is not used for this axis: it falls as components are added
whatever the data, so it would always pick the fewest.
Clusters: within those components, the grid k with the highest sampled Euclidean silhouette
among the seed-stable ones (`stability_ari` >= `auto_min_stability`; the most stable k when
none is), ties to the smaller k. Reference labels are never used to choose.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from querylens.runtime.config import ClusterConfig


@dataclass(frozen=True)
class Choice:
    """The (n_components, n_clusters) a fit uses and why, in one readable line."""

    n_components: int
    n_clusters: int
    reason: str

    def facts(self) -> dict[str, int | str]:
        return {"n_components": self.n_components, "n_clusters": self.n_clusters,
                "choice_reason": self.reason}


def choose_components(cumulative: np.ndarray, target: float) -> tuple[int, str]:
    """The fewest components whose cumulative explained variance (`cumulative[p-1]`) reaches
    `target` (all of them when rounding keeps the last below it); and why."""
    p = min(int(np.searchsorted(cumulative, target - 1e-12)) + 1, len(cumulative))
    return p, (f"n_components={p}: fewest components explaining >= {target:.0%} of the "
               f"variance ({cumulative[p - 1]:.1%})")


def choose_clusters(sweep: pd.DataFrame, n_components: int, min_stability: float
                    ) -> tuple[int, str]:
    """The k of `sweep`'s rows at `n_components` with the best silhouette among those whose
    seed `stability_ari` reaches `min_stability` (the most stable when none does); and why."""
    rows = sweep[sweep["n_components"] == n_components]
    if rows.empty:
        raise ValueError(f"the cluster sweep has no point with n_components={n_components} "
                         f"to choose n_clusters from (grid: {sorted(set(sweep['n_components']))})")
    silhouette = rows["silhouette_euclidean_sampled"].fillna(rows["silhouette_sqeuclidean"])
    stability = rows["stability_ari"].fillna(-1.0)
    stable = rows[stability >= min_stability]
    if stable.empty:
        best = rows.loc[[stability.idxmax()]]
        why = (f"no k of {sorted(rows['n_clusters'])} has seed stability ARI >= "
               f"{min_stability:g}, so the most stable")
    else:
        best = stable.assign(_s=silhouette[stable.index]).sort_values(
            ["_s", "n_clusters"], ascending=[False, True]).head(1)
        why = (f"best silhouette among the {len(stable)} of {len(rows)} k with seed stability "
               f"ARI >= {min_stability:g}")
    row = best.iloc[0]
    k = int(row["n_clusters"])
    return k, (f"n_clusters={k}: {why} (silhouette {silhouette[best.index[0]]:.3f}, stability "
               f"{row['stability_ari']:.2f})")


def components_of(config: ClusterConfig, cumulative: np.ndarray) -> tuple[int, str]:
    """`config.n_components`, or for `auto` `choose_components`; and why."""
    if config.n_components == "auto":
        return choose_components(cumulative, config.auto_variance_target)
    return config.n_components, f"n_components={config.n_components}: configured"


def choose(config: ClusterConfig, cumulative: np.ndarray, sweep: pd.DataFrame | None
           ) -> Choice:
    """Resolve `auto` in `config.n_components` and `config.n_clusters` (numbers are kept)."""
    p, p_why = components_of(config, cumulative)
    if config.n_clusters == "auto":
        if sweep is None:
            raise ValueError("cluster.n_clusters=auto needs the sweep (cluster.sweep=true)")
        k, k_why = choose_clusters(sweep, p, config.auto_min_stability)
    else:
        k, k_why = config.n_clusters, f"n_clusters={config.n_clusters}: configured"
    return Choice(p, k, f"{p_why}; {k_why}")


def mark_chosen(sweep: pd.DataFrame, choice: Choice) -> pd.DataFrame:
    """`sweep` with `chosen` true on the chosen grid point (if it is one)."""
    hit = (sweep["n_components"] == choice.n_components) & (
        sweep["n_clusters"] == choice.n_clusters)
    return sweep.assign(chosen=hit.to_numpy())

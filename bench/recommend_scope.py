"""How far the issue's "nearest successful cluster" rule is from what the embeddings allow.

Reads a finished `bench/success_demo.py` run (its `--root`, one embedding model in the cache)
and, for the same failing queries the `recommend` stage served, compares the recommendations it
wrote with exact top-N searches over wider candidate pools, all scored against the generator's
truth (true category, true success probability):

- `written`: the `recommendations` table (nearest successful cluster, the issue's rule);
- `successful clusters, any`: top-N over the same candidates, ignoring cluster boundaries;
- `all successful queries`: top-N over every labelled-successful query with enough support;
- ceilings: nearest-neighbour category agreement among all queries, and the share of
  candidates whose true success probability is at least 2x the failing queries' mean.

    .venv/bin/python bench/recommend_scope.py --root /tmp/demo2m
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import cast

import numpy as np
import pandas as pd
from pyspark.sql import functions as F

from querylens.recommend.index import exact_search, stack, top_n
from querylens.runtime.config import load_config
from querylens.runtime.runs import latest_completed_run
from querylens.runtime.session import build_session
from querylens.runtime.tables import read_run_table
from querylens.success.evaluate import GROUND_TRUTH_TABLE


def evaluate(failing: pd.DataFrame, recs: np.ndarray, pool: pd.DataFrame) -> dict[str, float]:
    """Same-category share over pairs and mean true p of recommended / failing per query."""
    fail_cat = np.repeat(failing["category"].to_numpy(), recs.shape[1])
    rec_cat = np.where(recs.ravel() >= 0, pool["category"].to_numpy()[recs.ravel()], None)
    known = pd.notna(fail_cat) & pd.notna(rec_cat)
    rec_p = np.where(recs >= 0, pool["true_p"].to_numpy()[np.maximum(recs, 0)], np.nan)
    served = ~np.isnan(rec_p).all(axis=1)
    return {
        "same_category": float((fail_cat[known] == rec_cat[known]).mean()),
        "failing_p": float(failing["true_p"].to_numpy()[served].mean()),
        "recommended_p": float(np.nanmean(rec_p[served], axis=1).mean()),
        "pool": float(len(pool)),
    }


def top_n_in(failing: pd.DataFrame, pool: pd.DataFrame, n: int) -> np.ndarray:
    """Exact top-n neighbours of each failing query in `pool`, never the query itself."""
    sims, idx = exact_search(stack(failing["embedding"]), stack(pool["embedding"]), n + 1)
    keys = pool["query_key"].to_numpy()
    self_hit = (idx >= 0) & (keys[np.maximum(idx, 0)] == failing["query_key"].to_numpy()[:, None])
    _, pos = top_n(np.where(self_hit, -np.inf, sims), n)
    return np.where(pos >= 0, np.take_along_axis(idx, np.maximum(pos, 0), axis=1), -1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="the --root of a success_demo.py run")
    args = parser.parse_args()
    root = Path(args.root)
    config = load_config(None, [f"run.warehouse_dir={root / 'warehouse'}",
                                f"run.metastore_dir={root / 'metastore'}"])
    spark = build_session(config)
    db = config.run.database
    run_id = latest_completed_run(spark, db)
    if run_id is None:
        raise SystemExit(f"no completed run under {root}")

    def table(name: str) -> pd.DataFrame:
        return cast(pd.DataFrame, read_run_table(spark, db, name, run_id).drop("run_id")
                    .toPandas())

    truth = cast(pd.DataFrame, spark.table(f"{db}.{GROUND_TRUTH_TABLE}").groupBy("query_key")
                 .agg(F.avg("p_success").alias("true_p"),
                      F.mode("true_category").alias("category")).toPandas())
    queries = (table("success_labels").merge(table("success_predictions")[
        ["query_key", "p_success"]], on="query_key", how="left")
        .merge(cast(pd.DataFrame, spark.table(f"{db}.query_embeddings")
                    .dropDuplicates(["query_key"]).select("query_key", "embedding")
                    .toPandas()), on="query_key")
        .merge(truth, on="query_key"))
    recs = table("recommendations")
    rates = table("cluster_success").set_index("cluster_id")["success_rate"]
    rcfg, scfg = config.recommend, config.success
    n = rcfg.n_recommendations
    supported = queries["success"].eq(True) & (
        queries["support"] >= max(rcfg.min_support, scfg.min_support)) & ~(
        queries["p_success"] < rcfg.predicted_fail_below)
    successful = queries["cluster_id"].map(rates).fillna(0) >= rcfg.min_cluster_success_rate
    failing = queries.set_index("query_key").loc[recs["query_key"].unique()].reset_index()

    written = recs.dropna(subset=["rank"]).pivot(index="query_key", columns="rank",
                                                 values="rec_query_key").reindex(
        failing["query_key"])
    pool = queries[supported & successful].reset_index(drop=True)
    position = pd.Series(np.arange(len(pool)), index=pool["query_key"])
    as_idx = written.apply(lambda col: col.map(position)).fillna(-1).to_numpy(np.int64)
    rows = {
        "written (nearest successful cluster)": evaluate(failing, as_idx, pool),
        "same candidates, any successful cluster": evaluate(
            failing, top_n_in(failing, pool, n), pool),
    }
    wide = queries[supported].reset_index(drop=True)
    rows["all successful supported queries"] = evaluate(failing, top_n_in(failing, wide, n),
                                                        wide)
    everyone = queries.dropna(subset=["category"]).reset_index(drop=True)
    nearest = top_n_in(everyone, everyone, 1)[:, 0]
    one_nn = float((everyone["category"].to_numpy() == everyone["category"].to_numpy()[
        nearest]).mean())
    failing_p = float(failing["true_p"].mean())
    frame = pd.DataFrame(rows).T
    frame["ratio"] = frame["recommended_p"] / frame["failing_p"]
    print(f"run {run_id}: {len(failing)} failing queries, top {n}")
    print(frame.to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"ceiling, 1-NN same category among all {len(everyone)} queries with a category: "
          f"{one_nn:.3f}")
    print(f"candidates with true p >= 2 x failing mean ({2 * failing_p:.3f}): "
          f"{(pool['true_p'] >= 2 * failing_p).mean():.3f} of {len(pool)}; all queries: "
          f"{(queries['true_p'] >= 2 * failing_p).mean():.3f}")
    spark.stop()


if __name__ == "__main__":
    main()

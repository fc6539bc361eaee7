"""The report built from small hand-made tables: figures, HTML, atlas, degradation, browser."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
from pyspark.sql import SparkSession
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import silhouette_samples, silhouette_score

from querylens.app.cli import main
from querylens.report import build_report
from querylens.report.data import with_success_rates
from querylens.report.figures import FIGURES
from querylens.report.stage import report_stage
from querylens.runtime.config import Config, ReportConfig
from querylens.runtime.runs import MANIFEST_SCHEMA, Run
from querylens.runtime.tables import append_table, write_run_table
from tests.helpers import with_spec_columns

DB = "report_test"
RUN = "report-full"
THEMES = [("nike", "sneakers"), ("prada", "bags"), ("zara", "dresses")]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def report_config(config: Config, root: Path, database: str = DB) -> Config:
    run = dataclasses.replace(config.run, database=database, output_dir=str(root))
    report = ReportConfig(projection="tsne", map_sample=80, knife_sample=500,
                          knife_refit_sample=80, n_failing=2, n_recommendations=2)
    return dataclasses.replace(config, run=run, report=report)


def synthetic_run(seed: int = 0) -> dict[str, pd.DataFrame]:
    """Ninety queries in three themes with blob embeddings and every table the report reads."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, 12)) * 4
    rows = []
    for theme, (brand, noun) in enumerate(THEMES):
        for i in range(30):
            rows.append({"query_key": f"q{theme}{i:02d}", "query": f"{brand} {noun} {i}",
                         "theme": theme, "n_searches": int(rng.integers(1, 200)),
                         "embedding": centres[theme] + rng.normal(size=12)})
    q = pd.DataFrame(rows)
    q["n_sessions"] = q["n_searches"] // 2 + 1
    q["clicks"] = q["n_searches"] // 3
    q["add_to_bags"], q["purchases"] = q["clicks"] // 4, q["clicks"] // 10
    q["searches_with_click"] = q["clicks"]
    x = np.vstack(q["embedding"].to_numpy())
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    pca = PCA().fit(xn)
    reduced = PCA(n_components=4).fit_transform(xn)
    km = KMeans(n_clusters=3, n_init=5, random_state=0).fit(reduced)
    dist = km.transform(reduced)
    q["cluster_id"] = km.labels_
    q["silhouette_sqeuclidean"] = silhouette_samples(reduced, km.labels_, metric="sqeuclidean")
    q["distance"] = dist[np.arange(len(q)), km.labels_]
    q["next_cluster_id"] = np.argsort(dist, axis=1)[:, 1]
    q["success"] = (q["theme"] != 2) ^ (rng.random(len(q)) < 0.15)
    q["low_support"] = q["n_searches"] < 5
    q["p_success"] = np.clip(0.25 + 0.5 * q["success"] + rng.normal(0, 0.2, len(q)), 0, 1)
    sweep = []
    for n in (2, 4, 8, 12):
        red = PCA(n_components=n).fit_transform(xn)
        for k in (2, 3, 4, 6):
            labels = KMeans(n_clusters=k, n_init=3, random_state=0).fit(red)
            sweep.append({"n_components": n, "n_clusters": k,
                          "silhouette_euclidean_sampled": silhouette_score(red, labels.labels_),
                          "silhouette_sqeuclidean": silhouette_score(
                              red, labels.labels_, metric="sqeuclidean"),
                          "inertia": labels.inertia_,
                          "explained_variance": pca.explained_variance_ratio_[:n].sum()})
    clusters, success = [], []
    for cid, g in q.groupby("cluster_id"):
        noun = THEMES[int(g["theme"].mode().iloc[0])][1]
        clusters.append({
            "cluster_id": int(cid), "size": len(g), "share": len(g) / len(q),
            "n_searches": int(g["n_searches"].sum()),
            "mean_silhouette_sqeuclidean": g["silhouette_sqeuclidean"].mean(),
            "top_terms": [noun, "women", "new"], "label": f"{noun} · women",
            "central_queries": g.nsmallest(3, "distance")["query"].tolist(),
            "top_queries": g.nlargest(3, "n_searches")["query"].tolist(),
            "next_cluster_id": int(g["next_cluster_id"].mode().iloc[0]),
            "stability": 0.4 if cid == 2 else 0.95, "trusted": bool(cid != 2),
            "catch_all": bool(cid == 2)})
        success.append({"cluster_id": int(cid), "n_queries": len(g),
                        "success_rate": float(g["success"].mean())})
    ok = q[q["success"]]
    recs = []
    for i, row in enumerate(q[~q["success"]].itertuples()):
        for rank, rec in enumerate(ok.sample(2, random_state=i).itertuples(), start=1):
            recs.append({"query_key": row.query_key, "rank": rank, "rec_query": rec.query,
                         "rec_cluster_id": int(rec.cluster_id), "similarity": 0.8 - rank / 10,
                         "rec_success_rate": 0.7, "reason": "nearest successful cluster"})
    calibration = []
    for model, p in [("nn", q["p_success"]), ("majority", pd.Series(0.66, index=q.index))]:
        bins = pd.cut(p, [0, 0.5, 1.0], include_lowest=True, labels=False)
        for b, g in q.groupby(bins):
            calibration.append({"model": model, "split": "test", "bin": int(b),
                                "lower": b / 2, "upper": (b + 1) / 2, "n": len(g),
                                "mean_predicted": float(p[g.index].mean()),
                                "observed_rate": float(g["success"].mean())})
    metrics = [(m, "test", metric, v) for m, metric, v in [
        ("nn", "roc_auc", 0.91), ("nn", "brier", 0.12), ("logistic_regression", "roc_auc", 0.85),
        ("cluster_rate", "roc_auc", 0.7), ("majority", "roc_auc", 0.5)]]
    metrics += [("cluster_kmeans", "external", "ami", 0.6123),
                ("cluster_kmeans", "external", "inverse_purity", 0.75)]
    return {
        "queries": q[["query_key", "query", "n_searches", "n_sessions", "clicks", "add_to_bags",
                      "purchases", "searches_with_click"]],
        "pca_variance": pd.DataFrame({
            "component": np.arange(len(pca.explained_variance_ratio_)),
            "explained_variance_ratio": pca.explained_variance_ratio_,
            "cumulative": np.cumsum(pca.explained_variance_ratio_)}),
        "cluster_sweep": pd.DataFrame(sweep),
        "cluster_assignments": q[["query_key", "cluster_id", "distance",
                                  "silhouette_sqeuclidean", "next_cluster_id"]],
        "clusters": pd.DataFrame(clusters),
        "cluster_success": pd.DataFrame(success),
        "success_labels": q[["query_key", "n_searches", "success", "low_support"]].rename(
            columns={"n_searches": "support"}).assign(
                success_score=lambda d: d["success"].astype(float) * 0.6 + 0.1, split="test"),
        "success_predictions": q[["query_key", "p_success"]].assign(split="test"),
        "model_metrics": pd.DataFrame(metrics, columns=["model", "split", "metric", "value"]),
        "success_calibration": pd.DataFrame(calibration),
        "recommendations": pd.DataFrame(recs),
        "embeddings": q[["query_key", "embedding"]],
        "truth": q,
    }


def write_tables(spark: SparkSession, tables: dict[str, pd.DataFrame], run_id: str,
                 names: list[str], database: str = DB) -> None:
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {database}")
    for name in names:
        write_run_table(with_spec_columns(spark.createDataFrame(tables[name]), name), database,
                        name, run_id)


@pytest.fixture(scope="module")
def full(spark: SparkSession, config: Config, tmp_path_factory: pytest.TempPathFactory):
    tables = synthetic_run()
    write_tables(spark, tables, RUN, [n for n in tables if n not in ("embeddings", "truth")])
    emb = tables["embeddings"]
    cache = spark.createDataFrame(pd.DataFrame({
        "query_key": emb["query_key"], "model_id": "test-model", "model_revision": "r1",
        "dim": 12, "embedding": [list(map(float, e)) for e in emb["embedding"]],
        "embedded_at": datetime(2026, 1, 1)}),
        "query_key string, model_id string, model_revision string, dim int, "
        "embedding array<float>, embedded_at timestamp")
    append_table(with_spec_columns(cache, "query_embeddings"), DB, "query_embeddings")
    manifest = {
        "status": "completed", "started_at": datetime(2026, 1, 1, tzinfo=UTC),
        "finished_at": datetime(2026, 1, 1, 0, 5, tzinfo=UTC),
        "config_json": json.dumps({"input": {"format": "parquet", "path": "logs/"},
                                   "cluster": {"n_components": 4, "n_clusters": 3}}),
        "versions_json": json.dumps({"pyspark": "4"}),
        "timings_json": json.dumps({"ingest": 3.5, "cluster_sweep_stage": 9.25}),
        "counts_json": json.dumps({"queries": 90}),
        "facts_json": json.dumps({"embed": {"model_id": "test-model", "model_revision": "r1"}}),
    }
    write_run_table(spark.createDataFrame([manifest], MANIFEST_SCHEMA), DB, "runs", RUN)
    cfg = report_config(config, tmp_path_factory.mktemp("report"))
    path = build_report(spark, cfg, RUN)
    return path, path.read_text(encoding="utf-8"), tables


def png_pixels(path: Path) -> np.ndarray:
    return mpimg.imread(path)


def test_every_figure_is_a_non_blank_png_embedded_in_the_html(full):
    path, html, _ = full
    for name, *_ in FIGURES:
        png = path.parent / f"{name}.png"
        assert png.is_file(), f"{name}.png was not drawn"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        pixels = png_pixels(png)
        assert pixels.shape[0] > 200 and pixels.shape[1] > 200
        assert pixels[..., :3].std() > 0.05, f"{name}.png is blank"
        assert f'data-file="{name}.png"' in html and f'href="{name}.png"' in html
        match = re.search(rf'data-file="{name}\.png" src="data:image/png;base64,([^"]+)"', html)
        assert match and base64.b64decode(match.group(1)) == png.read_bytes()
    assert "Not available in this run" not in html
    index = json.loads((path.parent / "figures.json").read_text())
    assert [f["file"] for f in index] == [f"{name}.png" for name, *_ in FIGURES]


def test_atlas_has_one_card_per_cluster_with_its_numbers(full):
    _, html, tables = full
    truth = tables["truth"]
    cards = re.findall(r'<article class="card" id="cluster-(\d+)"', html)
    assert sorted(map(int, cards)) == sorted(tables["clusters"]["cluster_id"])
    traffic = [int(float(t)) for t in re.findall(r'data-traffic="([^"]+)"', html)]
    assert traffic == sorted(truth.groupby("cluster_id")["n_searches"].sum(), reverse=True)
    for cid, group in truth.groupby("cluster_id"):
        card = html.split(f'id="cluster-{cid}"')[1].split("</article>")[0]
        failing = group[~group["success"] & ~group["low_support"]].nlargest(2, "n_searches")
        failed_searches = group.loc[~group["success"], "n_searches"].sum()
        assert f'data-failed="{float(failed_searches)}"' in card
        assert f'data-failure="{1 - group["success"].mean()}"' in card
        shown = re.findall(r'<span class="q">([^<]+)</span>', card)
        assert shown == failing["query"].tolist()
        recs = tables["recommendations"]
        first = recs[(recs["query_key"] == failing["query_key"].iloc[0]) & (recs["rank"] == 1)]
        assert first["rec_query"].iloc[0] in card
        assert "success" in card and "women" in card
        assert ('class="badge catchall"' in card) == (cid == 2)
        assert ('class="badge trusted"' in card) == (cid != 2)
        assert ('class="badge untrusted"' in card) == (cid == 2)
    assert "2 of 3</b><span>clusters trusted" in html


def test_report_runs_summary_and_metrics(full):
    _, html, _ = full
    for text in ["cluster_sweep_stage", "9.2 s", "logistic_regression", "0.850", "test-model",
                 'onclick="sortAtlas(\'failure\')"', "90</b><span>distinct queries",
                 'onclick="sortAtlas(\'trust\')"', "Agreement with reference classes",
                 "adjusted mutual information</td><td class=\"\">0.612", "inverse purity"]:
        assert text in html, text


def test_missing_tables_degrade_to_notes(spark: SparkSession, config: Config, tmp_path: Path):
    tables = synthetic_run(seed=1)
    write_tables(spark, tables, "report-partial", ["queries", "clusters", "cluster_assignments"],
                 "report_partial")
    cfg = report_config(config, tmp_path, "report_partial")
    run = Run(spark, cfg, run_id="report-partial", timings={"ingest": 1.0})
    report_stage(run)
    path = Path(run.facts["report"]["path"])
    html = path.read_text(encoding="utf-8")
    assert html.count('<article class="card"') == len(tables["clusters"])
    assert html.count("Not available in this run") >= 6
    assert "the `pca_variance` table has no rows for this run" in html
    assert "per-query scores need both `success_labels` and `success_predictions`" in html
    drawn = sorted(p.name for p in path.parent.glob("*.png"))
    assert drawn == ["cluster_overview.png", "silhouette_knife.png"]
    assert "ingest" in html and "running" in html


def test_report_job_refuses_a_run_that_does_not_exist(
    spark: SparkSession, config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    spark.sql("CREATE DATABASE IF NOT EXISTS report_bare")
    overrides = [f"run.warehouse_dir={config.run.warehouse_dir}",
                 f"run.metastore_dir={config.run.metastore_dir}", "run.database=report_bare",
                 f"run.output_dir={tmp_path}"]
    assert main(["report", "--run-id", "nothing-here",
                 *[a for o in overrides for a in ("--set", o)]]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("querylens report: error: run nothing-here does not exist in "
                            "report_bare.runs")
    assert len(error.splitlines()) == 1
    assert not (tmp_path / "nothing-here").exists()
    assert main(["report"]) == 2


def test_report_in_headless_chromium(full, tmp_path: Path):
    if not Path(CHROMIUM).exists():
        if os.environ.get("QUERYLENS_REQUIRE_CHROMIUM"):
            pytest.fail("QUERYLENS_REQUIRE_CHROMIUM is set but Chromium is not installed")
        pytest.skip("Chromium is not installed (apt-get install chromium; .ci/run does)")
    path, _, _ = full
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'p'}",
             "--window-size=1400,3000", "--virtual-time-budget=5000"]
    shot = tmp_path / "shot.png"
    subprocess.run([*flags, f"--screenshot={shot}", path.resolve().as_uri()], check=True,
                   capture_output=True, timeout=120)
    pixels = png_pixels(shot)
    assert pixels.shape[:2] == (3000, 1400)
    assert pixels[..., :3].std() > 0.05
    dom = subprocess.run([*flags, "--dump-dom", path.resolve().as_uri()], check=True,
                         capture_output=True, text=True, timeout=120).stdout
    assert f'data-images="{len(FIGURES)}"' in dom
    assert 'data-broken-images="0"' in dom


def test_older_runs_take_cluster_success_rates_from_cluster_success() -> None:
    success = pd.DataFrame({"cluster_id": [0, 1, 2], "success_rate": [0.2, 0.5, None]})
    old = pd.DataFrame({"cluster_id": [2, 0, 1], "size": [3, 4, 5]})
    assert with_success_rates(old, success)["success_rate"].tolist()[1:] == [0.2, 0.5]
    assert pd.isna(with_success_rates(old, success)["success_rate"].iloc[0])
    partly = old.assign(success_rate=[None, 0.9, None])
    assert with_success_rates(partly, success)["success_rate"].tolist()[1:] == [0.9, 0.5]
    assert with_success_rates(old, None) is old

"""The table contract: every table a run writes matches its spec, and README lists the specs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from querylens.runtime.config import Config
from querylens.runtime.errors import DataError
from querylens.runtime.runs import Run
from querylens.runtime.specs import SPECS, TABLES, reference_markdown
from querylens.runtime.tables import conform, read_run_table, write_run_table
from tests.helpers import with_spec_columns

ROOT = Path(__file__).parents[1]


def catalog_columns(spark: SparkSession, database: str, table: str) -> list[tuple[str, str]]:
    return [(f.name, f.dataType.simpleString())
            for f in spark.table(f"{database}.{table}").schema.fields]


def test_every_table_a_full_run_writes_matches_its_spec(spark: SparkSession,
                                                          demo_run: Run) -> None:
    database = demo_run.database
    written = {t.name for t in spark.catalog.listTables(database) if t.tableType != "VIEW"}
    assert written == set(TABLES), "a table without a spec, or a spec no run writes"
    for spec in SPECS:
        expected = list(spec.columns) + ([("run_id", "string")] if spec.per_run else [])
        assert catalog_columns(spark, database, spec.name) == expected, spec.name
    for table, rows in demo_run.counts.items():
        assert TABLES[table].per_run and rows == spark.table(f"{database}.{table}").where(
            f"run_id = '{demo_run.run_id}'").count(), table


def test_pipeline_writes_every_table(spark: SparkSession, demo_run: Run) -> None:
    db, run_id = demo_run.database, demo_run.run_id
    manifest = spark.sql(f"SELECT * FROM {db}.runs WHERE run_id = '{run_id}'").collect()
    assert [r.status for r in manifest] == ["completed"]
    counts = json.loads(manifest[0].counts_json)
    facts = json.loads(manifest[0].facts_json)
    n_queries = spark.sql(f"SELECT count(*) FROM {db}.queries WHERE run_id = '{run_id}'").first()[0]
    assert counts["queries"] == n_queries == facts["ingest"]["queries"]
    assert facts["ingest"]["events"] == 6000
    assert facts["embed"]["embedded"] + facts["embed"]["reused"] == n_queries
    assigned = spark.sql(
        f"SELECT count(DISTINCT query_key), count(*), count(DISTINCT cluster_id) "
        f"FROM {db}.cluster_assignments WHERE run_id = '{run_id}'"
    ).first()
    assert tuple(assigned) == (n_queries, n_queries, 6)
    sizes = spark.sql(f"SELECT sum(size) FROM {db}.clusters WHERE run_id = '{run_id}'").first()[0]
    assert sizes == n_queries
    assert set(json.loads(manifest[0].timings_json)) == {
        "ingest", "embed", "cluster", "success", "recommend", "report"}
    assert Path(facts["report"]["path"]).is_file()


def test_clusters_with_success_joins_the_success_stage_rates(spark: SparkSession,
                                                             demo_run: Run) -> None:
    db, run_id = demo_run.database, demo_run.run_id
    view = spark.table(f"{db}.clusters_with_success").where(f"run_id = '{run_id}'").toPandas()
    rates = spark.table(f"{db}.cluster_success").where(f"run_id = '{run_id}'").toPandas()
    clusters = spark.table(f"{db}.clusters").where(f"run_id = '{run_id}'").toPandas()
    assert "success_rate" not in clusters
    assert sorted(view["cluster_id"]) == sorted(clusters["cluster_id"])
    by_hand = rates.set_index("cluster_id")["success_rate"]
    got = view.set_index("cluster_id")["success_rate"]
    assert got.sort_index().equals(by_hand.reindex(got.index).sort_index())


def test_readme_table_reference_is_the_generated_one() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- tables:begin[^\n]*-->\n(.*?)<!-- tables:end -->", readme, re.S)
    assert block is not None, "README lacks the tables:begin/end block"
    assert block.group(1) == reference_markdown()
    for spec in SPECS:
        row = next(line for line in block.group(1).splitlines()
                   if line.startswith(f"| `{spec.name}` |"))
        listed = [c.split()[0] for c in row.split(" | ")[3].rstrip(" |").split(", ")]
        assert listed[:len(spec.names)] == spec.names, spec.name


def test_conform_names_missing_and_unexpected_columns(spark: SparkSession) -> None:
    rows = spark.createDataFrame([("k", 1)], "query_key string, n_searches int")
    with pytest.raises(DataError, match=r"table queries .* missing \['query', .*unexpected "
                                        r"nothing"):
        conform(rows, TABLES["queries"])
    extra = spark.createDataFrame([(1, 0.5, 0.5, "x")], "component int, "
                                  "explained_variance_ratio double, cumulative double, oops string")
    with pytest.raises(DataError, match=r"unexpected \['oops'\]"):
        conform(extra, TABLES["pca_variance"])
    narrow = spark.createDataFrame([(1, 0.5, 0.5)], "component long, "
                                   "explained_variance_ratio float, cumulative double")
    assert conform(narrow, TABLES["pca_variance"]).dtypes == [
        ("component", "int"), ("explained_variance_ratio", "double"), ("cumulative", "double")]


def test_a_retired_column_of_an_older_table_is_written_null_and_not_read(
    spark: SparkSession, config: Config
) -> None:
    db = config.run.database
    old = with_spec_columns(spark.createDataFrame(
        [(0, 5, 0.75, "old")], "cluster_id int, size long, success_rate double, run_id string"),
        "clusters")
    old.write.partitionBy("run_id").saveAsTable(f"{db}.clusters")
    new = with_spec_columns(spark.createDataFrame([(1, 7)], "cluster_id int, size long"),
                            "clusters")
    assert write_run_table(new, db, "clusters", "new") == 1
    stored = {r.run_id: r.success_rate for r in spark.table(f"{db}.clusters").collect()}
    assert stored == {"old": 0.75, "new": None}
    for run_id in ("old", "new"):
        read = read_run_table(spark, db, "clusters", run_id)
        assert read.columns == [*TABLES["clusters"].names, "run_id"]

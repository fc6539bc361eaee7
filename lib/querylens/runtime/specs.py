"""The table contract: one spec per catalog table (columns and types, partitioning, owner).

Writes are checked against these specs, readers select by them, and README's table reference is
generated from them (`python -m querylens.runtime.specs`), so the three cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TableSpec:
    """One table: `columns` as (name, Spark SQL type) without `run_id`; `per_run` tables are
    partitioned by run_id and each run replaces its own partition."""

    name: str
    owner: str
    grain: str
    columns: tuple[tuple[str, str], ...]
    per_run: bool = True

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.columns]

    def ddl(self) -> str:
        return ", ".join(f"{name} {kind}" for name, kind in self.columns)


def cols(ddl: str) -> tuple[tuple[str, str], ...]:
    """`"a string, b array<float>"` -> (("a", "string"), ("b", "array<float>")); the specs use
    no type with a comma inside."""
    pairs = [part.split() for part in ddl.split(",")]
    return tuple((name, kind) for name, kind in pairs)


SPECS = (
    TableSpec("runs", "runtime (Run.record)", "run", cols(
        "status string, started_at timestamp, finished_at timestamp, config_json string, "
        "versions_json string, timings_json string, counts_json string, facts_json string")),
    TableSpec("queries", "ingest", "normalised query", cols(
        "query_key string, query string, n_searches bigint, n_sessions bigint, clicks bigint, "
        "add_to_bags bigint, purchases bigint, searches_with_click bigint, "
        "searches_with_add_to_bag bigint, searches_with_purchase bigint, "
        "first_seen timestamp, last_seen timestamp, impressions bigint, "
        "mean_click_position double, reformulated_searches bigint, zero_result_searches bigint")),
    TableSpec("query_embeddings", "embed", "(query, model): a cache, appended", cols(
        "query_key string, query string, model_id string, model_revision string, dim int, "
        "embedding array<float>, truncated boolean, device string, requested_model string, "
        "embedded_run_id string, embed_batch_id string, embedded_at timestamp"), per_run=False),
    TableSpec("cluster_assignments", "cluster (cluster, score)", "query", cols(
        "query_key string, cluster_id int, distance double, silhouette_sqeuclidean double, "
        "next_cluster_id int, next_distance double, model_version int")),
    TableSpec("clusters", "cluster (cluster, score)", "cluster", cols(
        "cluster_id int, size bigint, share double, n_searches bigint, "
        "mean_silhouette_sqeuclidean double, mean_silhouette_euclidean_sampled double, "
        "label string, top_terms array<string>, central_queries array<string>, "
        "top_queries array<string>, next_cluster_id int, centroid_distance_next double, "
        "stability double, trusted boolean, catch_all boolean, model_version int")),
    TableSpec("silhouette_samples", "cluster (cluster, score)", "query in the seeded silhouette "
              "sample", cols(
                  "query_key string, cluster_id int, silhouette double, next_cluster_id int, "
                  "model_version int")),
    TableSpec("cluster_sweep", "cluster", "grid point", cols(
        "n_components int, n_clusters int, n_rows bigint, silhouette_euclidean_sampled double, "
        "silhouette_sqeuclidean double, inertia double, explained_variance double, "
        "ami double, nmi double, ari double, purity double, inverse_purity double, "
        "labelled_rows bigint, stability_ari double, chosen boolean")),
    TableSpec("pca_variance", "cluster", "PCA component", cols(
        "component int, explained_variance_ratio double, cumulative double")),
    TableSpec("success_labels", "success", "query", cols(
        "query_key string, cluster_id int, support bigint, interaction_score double, "
        "reformulation_rate double, zero_result_rate double, success_score double, "
        "prior_mean double, smoothed_score double, low_support boolean, success boolean, "
        "threshold double, split string")),
    TableSpec("cluster_success", "success", "cluster", cols(
        "cluster_id int, n_queries bigint, n_labelled bigint, n_successful bigint, "
        "support bigint, mean_score double, success_rate double, success_rate_low double, "
        "success_rate_high double")),
    TableSpec("success_predictions", "success", "embedded query", cols(
        "query_key string, cluster_id int, split string, success boolean, p_success double, "
        "model_version string")),
    TableSpec("success_calibration", "success", "model x bin", cols(
        "model string, split string, bin bigint, lower double, upper double, n bigint, "
        "mean_predicted double, observed_rate double")),
    TableSpec("model_metrics", "runtime (Run.write_metrics, for every stage)",
              "model x split x metric", cols(
                  "model string, split string, metric string, value double")),
    TableSpec("reformulations", "recommend", "(failed query, next query)", cols(
        "query_key string, next_query_key string, pairs bigint, sessions bigint, "
        "failed_searches bigint, share double, next_success boolean, "
        "next_success_score double")),
    TableSpec("recommendations", "recommend", "(failing query, rank)", cols(
        "query_key string, query string, cluster_id int, cluster_trusted boolean, "
        "label_success boolean, p_success double, rank int, rec_query_key string, "
        "rec_query string, rec_cluster_id int, rec_cluster_trusted boolean, "
        "sources array<string>, score double, reformulation_pairs bigint, "
        "reformulation_share double, lexical_similarity double, similarity double, "
        "cluster_distance double, rec_cluster_success_rate double, rec_success_rate double, "
        "rec_support bigint, search string, reason string")),
    TableSpec("demo_ground_truth", "generate_logs (demo)", "demo query", cols(
        "query_key string, query string, template_id bigint, kind string, "
        "true_category string, true_brand string, p_success double, in_stock boolean, "
        "reformulates bigint, reformulation_kind string, reformulation_query string, "
        "intended_query string"), per_run=False),
)

TABLES: dict[str, TableSpec] = {spec.name: spec for spec in SPECS}

VIEWS = {
    "clusters_with_success": "success: every run's `clusters` rows with `success_rate` from "
                             "`cluster_success` (null where the run has no success stage)",
    "<table>_latest": "runtime: each per-run table's rows of the newest completed run that "
                      "wrote it",
}


def reference_markdown() -> str:
    """README's table reference, generated from the specs."""
    lines = ["| table | written by | one row per | columns |", "| --- | --- | --- | --- |"]
    for spec in SPECS:
        run_id = ", run_id string (partition)" if spec.per_run else " (no run_id)"
        columns = ", ".join(f"{n} {t}" for n, t in spec.columns) + run_id
        lines.append(f"| `{spec.name}` | {spec.owner} | {spec.grain} | {columns} |")
    lines += ["", "| view | over |", "| --- | --- |"]
    lines += [f"| `{name}` | {text} |" for name, text in VIEWS.items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(reference_markdown(), end="")

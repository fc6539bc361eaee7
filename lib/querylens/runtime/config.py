"""Typed, validated configuration loaded from YAML with `section.key=value` overrides."""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from querylens.runtime.constraints import check_bounds
from querylens.runtime.errors import ConfigError

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    database: str = "querylens"
    warehouse_dir: str = "work/warehouse"
    metastore_dir: str = "work/metastore"
    output_dir: str = "work/output"
    table_format: Literal["parquet", "orc", "delta", "iceberg"] = "parquet"
    seed: int = 42
    run_id: str | None = None
    fail_first_attempt: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class SparkConfig:
    master: str | None = "local[2]"
    remote: str | None = None
    app_name: str = "querylens"
    shuffle_partitions: int = 8
    arrow_batch_size: int = 10000
    hive_metastore: bool = True
    conf: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class ColumnsConfig:
    query: str = "query"
    session_id: str = "session_id"
    timestamp: str = "ts"
    clicks: str = "clicks"
    add_to_bags: str = "add_to_bags"
    purchases: str = "purchases"
    count: str = "count"
    results_shown: str = "results_shown"


CSV_DEFAULTS = {"sep": ",", "quote": '"', "escape": '"', "header": "true", "encoding": "UTF-8",
                "multiLine": "true"}
CSV_READ_OPTIONS = (
    "sep", "encoding", "quote", "escape", "comment", "header", "ignoreLeadingWhiteSpace",
    "ignoreTrailingWhiteSpace", "nullValue", "emptyValue", "maxColumns", "maxCharsPerColumn",
    "multiLine", "charToEscapeQuoteEscaping", "lineSep", "unescapedQuoteHandling",
    "ignoreCorruptFiles", "ignoreMissingFiles", "pathGlobFilter", "recursiveFileLookup",
    "modifiedBefore", "modifiedAfter",
)
CSV_ALIASES = {"delimiter": "sep", "charset": "encoding"}
CSV_NOT_SETTABLE = {
    **dict.fromkeys(("mode", "columnNameOfCorruptRecord"),
                    "querylens reads in PERMISSIVE mode and counts and drops rows that do not "
                    "parse"),
    **dict.fromkeys(("inferSchema", "enforceSchema", "samplingRatio", "preferDate", "dateFormat",
                     "timestampFormat", "timestampNTZFormat", "enableDateTimeParsingFallback",
                     "nanValue", "positiveInf", "negativeInf", "locale", "timeZone"),
                    "querylens reads every CSV column as text"),
    **dict.fromkeys(("extension", "quoteAll", "escapeQuotes", "compression", "codec"),
                    "it is a CSV write option"),
}


def csv_option_name(name: str) -> str:
    """Spark's spelling of CSV read option `name` (matched case-insensitively, aliases resolved);
    raise naming `input.options.<name>` when querylens does not accept it."""
    known = {n.lower(): n for n in (*CSV_READ_OPTIONS, *CSV_ALIASES, *CSV_NOT_SETTABLE)}
    spelled = known.get(name.lower())
    if spelled is None:
        raise ConfigError(f"unknown CSV option input.options.{name}; valid options: "
                          f"{', '.join(sorted((*CSV_READ_OPTIONS, *CSV_ALIASES), key=str.lower))}")
    if spelled in CSV_NOT_SETTABLE:
        raise ConfigError(f"input.options.{name} cannot be set: {CSV_NOT_SETTABLE[spelled]}")
    return CSV_ALIASES.get(spelled, spelled)


@dataclasses.dataclass(frozen=True)
class InputConfig:
    format: Literal["csv", "parquet", "table", "ubi"] = "parquet"
    path: str = "work/demo_logs/events"
    table: str | None = None
    ubi_queries_path: str | None = None
    ubi_events_path: str | None = None
    columns: ColumnsConfig = dataclasses.field(default_factory=ColumnsConfig)
    options: dict[str, str] = dataclasses.field(default_factory=dict)
    filter_columns: list[str] = dataclasses.field(
        default_factory=lambda: [
            "filter_gender", "filter_brand", "filter_colour", "filter_material", "filter_category"
        ]
    )
    ubi_click_actions: list[str] = dataclasses.field(default_factory=lambda: ["click"])
    ubi_add_to_bag_actions: list[str] = dataclasses.field(default_factory=lambda: ["add_to_cart"])
    ubi_purchase_actions: list[str] = dataclasses.field(default_factory=lambda: ["purchase"])

    def csv_options(self) -> dict[str, str]:
        """Spark CSV reader options: `CSV_DEFAULTS` (RFC 4180) overridden key by key by
        `options`; an option given twice (`sep` and `delimiter`) is a `ConfigError`."""
        given: dict[str, tuple[str, str]] = {}
        for name, value in self.options.items():
            spelled = csv_option_name(name)
            if spelled in given:
                raise ConfigError(f"input.options.{name} sets {spelled}, which "
                                  f"input.options.{given[spelled][0]} already sets")
            given[spelled] = (name, value)
        return {**CSV_DEFAULTS, **{spelled: value for spelled, (_, value) in given.items()}}
    ubi_impression_actions: list[str] = dataclasses.field(default_factory=lambda: ["impression"])
    ubi_applications: list[str] = dataclasses.field(default_factory=list)
    ubi_attribute_by_text: bool = False
    typing_fragment_seconds: float = 10.0
    reformulation_seconds: float = 60.0


@dataclasses.dataclass(frozen=True)
class NormalizeConfig:
    unicode_form: Literal["NFC", "NFKC", "NFD", "NFKD"] = "NFKC"
    lowercase: bool = True
    max_chars: int = 512
    redact_pii: bool = True
    phone_regions: list[str] = dataclasses.field(default_factory=lambda: ["GB", "US"])


@dataclasses.dataclass(frozen=True)
class GenerateConfig:
    n_events: int = 200_000
    n_queries: int = 12_000
    seed: int = 7
    start: str = "2026-10-01"
    days: int = 28
    reformulate_rate: float = 0.6
    fragment_rate: float = 0.1
    satisfied_no_click_rate: float = 0.08


@dataclasses.dataclass(frozen=True)
class EmbedConfig:
    """Embedding model and how it runs; `fallback` is used (loudly) if `model` cannot load."""

    model: str = "minilm"
    fallback: str | None = None
    batch_size: int = 256
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    normalize: bool = True
    cuda_graphs: bool = False
    backend: Literal["torch", "onnx", "auto"] = "auto"
    quantize: Literal["none", "int8"] = "none"
    onnx_dir: str | None = None
    agreement_min_mean_cosine: float = 0.999
    agreement_min_cosine: float = 0.99


@dataclasses.dataclass(frozen=True)
class ClusterConfig:
    backend: Literal["sklearn", "mllib", "auto"] = "auto"
    auto_max_rows: int = 2_000_000
    n_components: Literal["auto"] | int = "auto"
    n_clusters: Literal["auto"] | int = "auto"
    auto_variance_target: float = 0.9
    auto_min_stability: float = 0.5
    n_init: int = 10
    max_iter: int = 300
    tol: float = 1e-4
    seed: int = 42
    init_steps: int = 2
    fit_sample_size: int | None = 200_000
    n_exemplars: int = 5
    n_terms: int = 10
    label_terms: int = 3
    label_min_df: int = 2
    stop_words: list[str] = dataclasses.field(default_factory=list)
    sweep: bool = True
    sweep_components: Literal["auto"] | list[int] = "auto"
    sweep_clusters: Literal["auto"] | list[int] = "auto"
    sweep_clusters_min: int = 4
    sweep_clusters_max: int = 100
    sweep_clusters_points: int = 4
    sweep_stability_sample_size: int = 2000
    sweep_sample_size: int = 4000
    sweep_n_init: int = 3
    sweep_full_n_init: int = 50
    sweep_full_n_init_components: int = 10
    sweep_silhouette_sample_size: int = 4000
    silhouette_sample_size: int = 10_000
    stability_seeds: list[int] = dataclasses.field(default_factory=lambda: [7, 1234])
    stability_sample_size: int = 20_000
    stability_bootstraps: int = 20
    stability_bootstrap_sample_size: int = 2000
    trust_min_stability: float = 0.75
    trust_min_size: int = 10
    catch_all_ratio: float = 1.25
    compare_backends: bool = False
    bad_embeddings: Literal["error", "drop"] = "error"
    model_dir: str | None = None
    match_previous: bool = True
    score_version: int | None = None


@dataclasses.dataclass(frozen=True)
class SuccessConfig:
    unit: Literal["search", "session"] = "search"
    click_weight: float = 1.0
    add_to_bag_weight: float = 2.0
    purchase_weight: float = 4.0
    threshold: float | None = None
    threshold_quantile: float = 0.5
    min_support: int = 5
    prior_strength: float = 10.0
    backend: Literal["driver", "distributor", "auto"] = "auto"
    distributor_min_rows: int = 200_000
    num_processes: int = 2
    hidden_sizes: list[int] = dataclasses.field(default_factory=lambda: [64])
    dropout: float = 0.1
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 256
    max_epochs: int = 100
    patience: int = 5
    cluster_features: bool = True
    validation_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 42
    model_dir: str | None = None
    scoring_batch_size: int = 4096
    calibration_bins: int = 10
    reformulation_weight: float = 0.5
    zero_result_weight: float = 1.0
    min_per_class: int = 10
    min_cluster_labels: int = 5
    confidence: float = 0.95


@dataclasses.dataclass(frozen=True)
class RecommendConfig:
    strategy: Literal["blend", "nearest_cluster"] = "blend"
    n_recommendations: int = 5
    scope: Literal["nearest_cluster", "successful_clusters"] = "nearest_cluster"
    predicted_fail_below: float = 0.5
    min_cluster_success_rate: float = 0.5
    min_similarity: float = 0.3
    min_support: int = 10
    index: Literal["exact", "ivf", "auto"] = "auto"
    exact_max_candidates: int = 20_000
    ivf_lists: int | None = None
    ivf_probe: int = 8
    max_candidates_per_cluster: int | None = None
    recall_sample: int = 1000
    seed: int = 42
    candidates_per_source: int = 20
    min_reformulation_pairs: int = 2
    min_lexical_similarity: float = 0.6
    weight_reformulation: float = 2.0
    weight_lexical: float = 1.0
    weight_semantic: float = 0.5
    weight_success: float = 0.5
    holdout_share: float = 0.2


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    """Reference classes for external validation: a CSV path or catalog table of (query,
    class); null uses the demo ground truth when it exists."""

    labels: str | None = None
    query_column: str = "query"
    class_column: str = "class"


@dataclasses.dataclass(frozen=True)
class ReportConfig:
    projection: Literal["tsne", "pca"] = "tsne"
    map_sample: int = 2000
    knife_sample: int = 20_000
    knife_refit_sample: int = 3000
    eval_sample: int = 200_000
    n_failing: int = 5
    n_recommendations: int = 3
    seed: int = 42


@dataclasses.dataclass(frozen=True)
class TrackingConfig:
    """MLflow tracking (the `tracking` extra): off, and mlflow never imported, unless
    `mlflow_uri` is set (a tracking URI such as sqlite:///work/mlflow.db or http://host:5000)."""

    mlflow_uri: str | None = None
    experiment: str = "querylens"


@dataclasses.dataclass(frozen=True)
class Config:
    run: RunConfig = dataclasses.field(default_factory=RunConfig)
    spark: SparkConfig = dataclasses.field(default_factory=SparkConfig)
    input: InputConfig = dataclasses.field(default_factory=InputConfig)
    normalize: NormalizeConfig = dataclasses.field(default_factory=NormalizeConfig)
    generate: GenerateConfig = dataclasses.field(default_factory=GenerateConfig)
    embed: EmbedConfig = dataclasses.field(default_factory=EmbedConfig)
    cluster: ClusterConfig = dataclasses.field(default_factory=ClusterConfig)
    success: SuccessConfig = dataclasses.field(default_factory=SuccessConfig)
    recommend: RecommendConfig = dataclasses.field(default_factory=RecommendConfig)
    evaluate: EvaluateConfig = dataclasses.field(default_factory=EvaluateConfig)
    report: ReportConfig = dataclasses.field(default_factory=ReportConfig)
    tracking: TrackingConfig = dataclasses.field(default_factory=TrackingConfig)

    def validate(self) -> Config:
        """Check every numeric key against its declared bounds (`runtime.constraints.BOUNDS`)
        and the cross-field rules that types alone cannot express."""
        check_bounds(self)
        validate_run(self.run, self.spark.conf)
        bad_points = sorted(set(self.run.fail_first_attempt) - {"embed", "score"})
        if bad_points:
            raise ConfigError(
                f"run.fail_first_attempt values must be embed or score, got {bad_points[0]!r}"
            )
        validate_input(self.input)
        validate_normalize(self.normalize)
        validate_cluster(self.cluster)
        validate_success(self.success)
        validate_recommend(self.recommend)
        validate_report(self.report)
        validate_embed(self.embed)
        validate_spark(self.spark)
        validate_tracking(self.tracking)
        for key, value in [
            ("embed.batch_size", self.embed.batch_size),
            ("generate.n_events", self.generate.n_events),
            ("generate.n_queries", self.generate.n_queries),
            ("spark.shuffle_partitions", self.spark.shuffle_partitions),
        ]:
            if value < 1:
                raise ConfigError(f"{key} must be >= 1, got {value}")
        return self


def validate_spark(s: SparkConfig) -> None:
    """The spark section: `spark.remote` is a Spark Connect URL."""
    if s.remote is not None and not s.remote.startswith("sc://"):
        raise ConfigError(f"spark.remote must be a Spark Connect URL sc://host:port, got "
                          f"{s.remote!r}")


def validate_tracking(t: TrackingConfig) -> None:
    """The tracking section: a non-empty tracking URI (or null), an experiment name."""
    if t.mlflow_uri is not None and not t.mlflow_uri.strip():
        raise ConfigError("tracking.mlflow_uri must be a tracking URI (e.g. "
                          "sqlite:///work/mlflow.db) or null to turn tracking off, got ''")
    if not t.experiment.strip():
        raise ConfigError("tracking.experiment must name an MLflow experiment, got ''")


def validate_input(i: InputConfig) -> None:
    """The input section: the keys `input.format` needs are set, CSV option names are valid,
    the typing-fragment window is not negative."""
    if i.table is not None:
        for part in i.table.split("."):
            require_identifier("input.table", part)
    needed = {"csv": ["path"], "parquet": ["path"], "table": ["table"],
              "ubi": ["ubi_queries_path", "ubi_events_path"]}
    for key in needed[i.format]:
        value: str | None = getattr(i, key)
        if not (value or "").strip():
            raise ConfigError(f"input.{key} must be set when input.format is {i.format!r}")
    if i.typing_fragment_seconds < 0:
        raise ConfigError(
            f"input.typing_fragment_seconds must be >= 0, got {i.typing_fragment_seconds}")
    i.csv_options()


def validate_normalize(n: NormalizeConfig) -> None:
    """The normalize section: phone regions are ISO 3166 codes `phonenumbers` knows."""
    import phonenumbers

    bad = [r for r in n.phone_regions if r not in phonenumbers.SUPPORTED_REGIONS]
    if bad:
        raise ConfigError(f"normalize.phone_regions must be two-letter region codes such as GB "
                          f"or US, got {bad}")


def validate_embed(e: EmbedConfig) -> None:
    """The embed section: a model is named and the fallback differs from it."""
    if not e.model.strip():
        raise ConfigError("embed.model must name a model (e.g. minilm or a CLIP folder or id)")
    if e.fallback is not None and e.fallback.strip() in ("", e.model):
        raise ConfigError(
            f"embed.fallback must name a different model than embed.model, got {e.fallback!r}"
        )


def validate_cluster(c: ClusterConfig) -> None:
    """Ranges of the cluster section's sizes, grids and samples."""
    for key, value, low in [
        ("n_init", c.n_init, 1), ("max_iter", c.max_iter, 1), ("init_steps", c.init_steps, 1),
        ("n_exemplars", c.n_exemplars, 1), ("n_terms", c.n_terms, 1),
        ("label_terms", c.label_terms, 1), ("label_min_df", c.label_min_df, 1),
        ("sweep_n_init", c.sweep_n_init, 1),
        ("sweep_full_n_init", c.sweep_full_n_init, 1),
        ("sweep_full_n_init_components", c.sweep_full_n_init_components, 0),
        ("sweep_silhouette_sample_size", c.sweep_silhouette_sample_size, 2),
        ("sweep_sample_size", c.sweep_sample_size, 2),
        ("silhouette_sample_size", c.silhouette_sample_size, 2),
        ("stability_sample_size", c.stability_sample_size, 2),
        ("stability_bootstraps", c.stability_bootstraps, 0),
        ("stability_bootstrap_sample_size", c.stability_bootstrap_sample_size, 2),
        ("trust_min_size", c.trust_min_size, 1),
        ("auto_max_rows", c.auto_max_rows, 1),
        ("fit_sample_size", c.fit_sample_size if c.fit_sample_size is not None else 2, 2),
    ]:
        if value < low:
            raise ConfigError(f"cluster.{key} must be >= {low}, got {value}")
    if c.tol < 0:
        raise ConfigError(f"cluster.tol must be >= 0, got {c.tol}")
    if not 0.0 <= c.trust_min_stability <= 1.0:
        raise ConfigError(
            f"cluster.trust_min_stability must be in [0, 1], got {c.trust_min_stability}")
    if c.catch_all_ratio <= 0:
        raise ConfigError(f"cluster.catch_all_ratio must be > 0, got {c.catch_all_ratio}")
    if c.sweep and (not c.sweep_components or not c.sweep_clusters):
        raise ConfigError(
            "cluster.sweep_components and cluster.sweep_clusters must be non-empty when "
            "cluster.sweep is true"
        )
    if c.n_clusters == "auto" and not c.sweep:
        raise ConfigError("cluster.n_clusters=auto chooses k from the sweep: set cluster.sweep="
                          "true or give cluster.n_clusters a number")
    if c.sweep_clusters_min > c.sweep_clusters_max:
        raise ConfigError(f"cluster.sweep_clusters_min={c.sweep_clusters_min} is above "
                          f"cluster.sweep_clusters_max={c.sweep_clusters_max}")


def validate_success(s: SuccessConfig) -> None:
    """Ranges of the success section: weights, threshold rule, splits and training sizes."""
    weights = {"click_weight": s.click_weight, "add_to_bag_weight": s.add_to_bag_weight,
               "purchase_weight": s.purchase_weight}
    for key, value in weights.items():
        if value < 0:
            raise ConfigError(f"success.{key} must be >= 0, got {value}")
    if sum(weights.values()) <= 0:
        raise ConfigError("success.click_weight + add_to_bag_weight + purchase_weight must be > 0")
    if s.threshold is not None and not 0.0 <= s.threshold <= 1.0:
        raise ConfigError(f"success.threshold must be in [0, 1] or null, got {s.threshold}")
    for key, value in [("threshold_quantile", s.threshold_quantile), ("dropout", s.dropout)]:
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"success.{key} must be in [0, 1), got {value}")
    for key, value in [("validation_fraction", s.validation_fraction),
                       ("test_fraction", s.test_fraction)]:
        if not 0.0 < value < 1.0:
            raise ConfigError(f"success.{key} must be in (0, 1), got {value}")
    if s.validation_fraction + s.test_fraction >= 1.0:
        raise ConfigError("success.validation_fraction + success.test_fraction must be < 1")
    for key, number in [("min_support", s.min_support), ("num_processes", s.num_processes),
                        ("batch_size", s.batch_size), ("max_epochs", s.max_epochs),
                        ("patience", s.patience), ("scoring_batch_size", s.scoring_batch_size),
                        ("calibration_bins", s.calibration_bins),
                        ("distributor_min_rows", s.distributor_min_rows)]:
        if number < 1:
            raise ConfigError(f"success.{key} must be >= 1, got {number}")
    if s.prior_strength < 0:
        raise ConfigError(f"success.prior_strength must be >= 0, got {s.prior_strength}")
    if s.learning_rate <= 0 or s.weight_decay < 0:
        raise ConfigError("success.learning_rate must be > 0 and success.weight_decay >= 0")
    if not s.hidden_sizes or min(s.hidden_sizes) < 1:
        raise ConfigError(f"success.hidden_sizes must be sizes >= 1, got {s.hidden_sizes}")


def validate_recommend(r: RecommendConfig) -> None:
    """Ranges of the recommend section."""
    for key, value in [("predicted_fail_below", r.predicted_fail_below),
                       ("min_cluster_success_rate", r.min_cluster_success_rate)]:
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"recommend.{key} must be in [0, 1], got {value}")
    if not -1.0 <= r.min_similarity <= 1.0:
        raise ConfigError(f"recommend.min_similarity must be in [-1, 1], got {r.min_similarity}")
    for key, number in [("n_recommendations", r.n_recommendations), ("min_support", r.min_support),
                        ("exact_max_candidates", r.exact_max_candidates),
                        ("ivf_probe", r.ivf_probe), ("recall_sample", r.recall_sample),
                        ("ivf_lists", r.ivf_lists or 1),
                        ("max_candidates_per_cluster", r.max_candidates_per_cluster or 1)]:
        if number < 1:
            raise ConfigError(f"recommend.{key} must be >= 1, got {number}")


GLOBAL_TEMP_KEY = "spark.sql.globalTempDatabase"


def validate_run(r: RunConfig, spark_conf: dict[str, str]) -> None:
    """The run section: the database is an identifier other than Spark's global temporary view
    database; the local folders are folders (or can be made ones)."""
    require_identifier("run.database", r.database)
    reserved = spark_conf.get(GLOBAL_TEMP_KEY, "global_temp")
    if r.database.lower() == reserved.lower():
        raise ConfigError(f"run.database must not be {r.database!r}: Spark reserves it for "
                          f"global temporary views ({GLOBAL_TEMP_KEY}); choose another name")
    for key in ("output_dir", "warehouse_dir", "metastore_dir"):
        require_local_folder(f"run.{key}", getattr(r, key))


def require_local_folder(key: str, value: str) -> None:
    """Raise naming `key` when local path `value`, or the nearest part of it that exists, is
    not a folder; URIs (s3a://, dbfs:/, ...) are left to Spark."""
    if "://" in value or re.match(r"^[A-Za-z][A-Za-z0-9+.-]+:/", value):
        return
    path = Path(value).expanduser()
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        where = "is a file" if existing == path else f"is inside the file {existing}"
        raise ConfigError(f"{key} must be a folder, but {value} {where}")


def require_identifier(key: str, value: str) -> str:
    """Return `value` if it is a plain SQL identifier, else raise naming `key`."""
    if not IDENTIFIER.match(value):
        raise ConfigError(f"{key} must be a plain identifier [A-Za-z_][A-Za-z0-9_]*, got {value!r}")
    return value


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load YAML at `path` (defaults when None), apply `section.key=value` overrides, validate."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            problem = str(exc).strip().splitlines()[0]
            raise ConfigError(f"config file {path} is not valid YAML: {problem}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        data = loaded
    for item in overrides or []:
        apply_override(data, item)
    return build(Config, data, "").validate()


def apply_override(data: dict[str, Any], item: str) -> None:
    """Set `section.key=value` in `data`, parsing the value as YAML. Inside a mapping-typed
    key (`spark.conf`, `input.options`) the rest of the dotted key is one entry's name:
    `spark.conf.spark.executor.memory=8g` sets `spark.executor.memory` in `spark.conf`."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} must look like section.key=value")
    *parents, leaf = override_path(key.strip(), item)
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: {part} is not a section")
    try:
        node[leaf] = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        problem = str(exc).strip().splitlines()[0]
        raise ConfigError(f"override {item!r}: the value is not valid YAML ({problem})") from exc


def override_path(key: str, item: str) -> list[str]:
    """The path of dotted `key` through `Config`: split at every dot down to a mapping-typed
    key, whose entry name keeps its dots; a key below a plain value is a `ConfigError`."""
    parts = key.split(".")
    node: Any = Config
    for i, part in enumerate(parts):
        if not dataclasses.is_dataclass(node):
            break
        hint = typing.get_type_hints(node).get(part)
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(options) == 1:
            hint = options[0]
        rest = parts[i + 1:]
        if typing.get_origin(hint) is dict:
            return [*parts[:i + 1], ".".join(rest)] if rest else parts
        if hint is not None and rest and not dataclasses.is_dataclass(hint):
            raise ConfigError(f"override {item!r}: {'.'.join(parts[:i + 1])} is a single "
                              f"value, not a section or a mapping")
        node = hint
    return parts


def flat_entries(value: dict[Any, Any], key: str) -> dict[str, str]:
    """A mapping-typed key's entries as text, nested mappings joined into dotted names
    (`{spark: {executor.memory: 8g}}` -> `{spark.executor.memory: 8g}`); a list is refused."""
    out: dict[str, str] = {}
    for name, entry in value.items():
        if isinstance(entry, dict):
            out.update({f"{name}.{k}": v for k, v in flat_entries(entry, f"{key}.{name}").items()})
        elif isinstance(entry, list):
            raise ConfigError(f"{key}.{name} must be a single value (Spark settings are text: "
                              f"write a list as one comma-separated string), got {entry!r}")
        else:
            out[str(name)] = str(entry).lower() if isinstance(entry, bool) else str(entry)
    return out


def build(cls: type, data: Any, prefix: str) -> Any:
    """Build dataclass `cls` from a mapping, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown config key {join(prefix, unknown[0])!r}; "
            f"valid keys in {prefix or 'config'}: {', '.join(sorted(names))}"
        )
    values = {name: coerce(hints[name], value, join(prefix, name)) for name, value in data.items()}
    return cls(**values)


def coerce(hint: Any, value: Any, key: str) -> Any:
    """Check `value` against type `hint`, converting where lossless; raise naming `key`."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return build(hint, value, key)  # type: ignore[arg-type]
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        for option in inner[:-1]:
            try:
                return coerce(option, value, key)
            except ConfigError:
                pass
        return coerce(inner[-1], value, key)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key} must be one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return [coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return flat_entries(value, key)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return str(value)
    raise ConfigError(f"{key}: unsupported type {hint}")


def join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


MASK = "***"
SECRET_KEY = re.compile(
    r"secret|password|passw(or)?d|pwd|token|credential|access[._-]?key|api[._-]?key|private[._-]?key"
    r"|account[._-]?key|sas[._-]?(token|key)|(^|\.)sas\.|(^|[._-])(key|sig|signature|auth)$"
    r"|authorization|bearer|jaas\.config",
    re.I,
)
URL_CREDENTIALS = re.compile(r"(://[^:/@\s]*:)([^@/\s]+)(@)")
URL_SECRET_PARAM = re.compile(
    r"((?:^|[?&;\s])(?:password|passwd|pwd|secret|token|access_token|sig|signature|api[_-]?key"
    r"|apikey|key|private_key|client_secret|sas)=)([^&;\s]+)", re.I)
KEY_LIKE_VALUES = (
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"^\??(?=(.*&)?sv=\d{4}-\d\d-\d\d(&|$))(?=(.*&)?sig=[^&])"),
    re.compile(r"^(AKIA|ASIA)[0-9A-Z]{16}$|^AIza[0-9A-Za-z_-]{30,}$|^(sk|pk|rk)-[A-Za-z0-9_-]{16,}$"
               r"|^(ghp|gho|ghs|github_pat|xox[abprs])[-_][A-Za-z0-9_-]{16,}$"),
)
KEY_LIKE_TOKEN = re.compile(r"^[A-Za-z0-9+/]{32,}={0,2}$")


def to_dict(config: Config) -> dict[str, Any]:
    """The config as plain data for the run manifest, with secrets masked (`mask_secrets`)."""
    return mask_secrets(dataclasses.asdict(config))


def mask_secrets(data: Any) -> Any:
    """`data` (at any depth) with secrets replaced by '***': the values of secret-looking keys
    (`SECRET_KEY`: passwords, tokens, access / account / private / API keys, SAS tokens) and
    secret-looking values whatever their key (`mask_value`)."""
    if isinstance(data, dict):
        return {k: mask_setting(str(k), v) for k, v in data.items()}
    if isinstance(data, list):
        return [mask_secrets(v) for v in data]
    if isinstance(data, str):
        return mask_value(data)
    return data


def mask_setting(key: str, value: Any) -> Any:
    """`value` masked as the value of `key` is: wholly for a secret-looking key, else by shape."""
    if value is not None and SECRET_KEY.search(key):
        return MASK
    return mask_secrets(value)


def mask_value(text: str) -> str:
    """`text` with URL credentials (`jdbc:...://user:***@`), secret URL parameters
    (`password=***`, `sig=***`) masked; wholly masked when it looks like a key itself (a PEM
    private key, a SAS token, a cloud API key, a long random token)."""
    if any(p.search(text) for p in KEY_LIKE_VALUES) or looks_random(text):
        return MASK
    text = URL_CREDENTIALS.sub(rf"\1{MASK}\3", text)
    return URL_SECRET_PARAM.sub(rf"\1{MASK}", text)


def looks_random(text: str) -> bool:
    """A 32+ character base64 token mixing upper case, lower case and digits (an account key
    or a secret access key); hex digests and names with `-`, `_` or `.` do not qualify."""
    return (KEY_LIKE_TOKEN.match(text) is not None and any(c.isupper() for c in text)
            and any(c.islower() for c in text) and any(c.isdigit() for c in text))


def mask_assignment(item: str) -> str:
    """A `key=value` setting (a `--conf` or `--set` argument) with its value masked; a YAML
    mapping or list value (`--set 'spark.conf={...}'`) is masked entry by entry."""
    key, sep, value = item.partition("=")
    if not sep:
        return mask_value(item)
    if value.lstrip().startswith(("{", "[")):
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            return f"{key}={MASK}"
        masked = yaml.safe_dump(mask_secrets(parsed), default_flow_style=True, width=10**6)
        return f"{key}={mask_setting(key, masked.strip())}"
    return f"{key}={mask_setting(key, value)}"


def validate_report(r: ReportConfig) -> None:
    for key, value, low in [
        ("report.map_sample", r.map_sample, 10), ("report.knife_sample", r.knife_sample, 10),
        ("report.knife_refit_sample", r.knife_refit_sample, 10),
        ("report.eval_sample", r.eval_sample, 10), ("report.n_failing", r.n_failing, 0),
        ("report.n_recommendations", r.n_recommendations, 0),
    ]:
        if value < low:
            raise ConfigError(f"{key} must be >= {low}, got {value}")

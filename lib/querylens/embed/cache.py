"""The `query_embeddings` cache: embed only (query, model) pairs it lacks.

Rows are keyed by (query_key, model_id, model_revision, precision) and appended, never
recomputed; the precision is the part of `device` after the slash (`float32`/`float16` for
torch, `onnx-float32`, `onnx-int8`), so vectors of another backend or precision are never reused.
A rerun over the same logs embeds nothing; a new day of logs embeds only its new queries.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from querylens.embed.encoders import Encoder, ModelLoadError
from querylens.embed.onnx import BackendChoice, guarded, precision_of
from querylens.embed.udf import EncoderSettings, backend_for, embed_struct_column, worker_encoder
from querylens.runtime.config import EmbedConfig
from querylens.runtime.tables import append_table, qualified
from querylens.runtime.text import is_blank

log = logging.getLogger("querylens")

TABLE = "query_embeddings"


@dataclass(frozen=True)
class EmbedStats:
    """What the embed stage did; recorded in the run manifest's facts."""

    model_id: str
    model_revision: str
    dim: int
    embedded: int
    reused: int
    skipped: int = 0
    truncated: int = 0
    requested_model: str = ""
    fallback: bool = False
    fallback_reason: str | None = None
    devices: list[str] = field(default_factory=list)
    seconds: float = 0.0
    queries_per_second: float | None = None
    requested_backend: str = "torch"
    backend: str = "torch"
    precision: str = "torch"
    agreement: dict[str, Any] | None = None
    backend_fallback: bool = False
    backend_fallback_reason: str | None = None


@dataclass(frozen=True)
class ChosenModel:
    """The model the run embeds with, and why, if it is the fallback."""

    model: str
    encoder: Encoder
    fallback_reason: str | None = None


def choose_model(config: EmbedConfig) -> ChosenModel:
    """Load `config.model` on the driver's CPU; on failure use `config.fallback`, loudly."""
    try:
        return ChosenModel(config.model, probe_encoder(config, config.model))
    except ModelLoadError as exc:
        if config.fallback is None:
            raise
        reason = str(exc)
    log.warning(
        "\n%s\nEMBEDDING MODEL FALLBACK: %r could not be loaded, so this run embeds with the "
        "fallback %r. Clusters, labels and recommendations of this run come from the fallback "
        "model (recorded in query_embeddings.requested_model and the run manifest).\nReason: %s"
        "\n%s", "!" * 100, config.model, config.fallback, reason, "!" * 100,
    )
    return ChosenModel(config.fallback, probe_encoder(config, config.fallback), reason)


def probe_encoder(config: EmbedConfig, model: str) -> Encoder:
    """The encoder on the driver's CPU: proves the model loads and gives its id, revision, dim."""
    settings = EncoderSettings.from_config(config, model)
    return worker_encoder(EncoderSettings(settings.model, "cpu", settings.normalize,
                                          settings.batch_size, "float32"))


def tasks_use_gpu(spark: SparkSession, device: str) -> bool:
    """Whether the embedding tasks run on a GPU: `cuda*`, or auto with GPU task resources or a
    CUDA device visible here."""
    if device != "auto":
        return device.startswith("cuda")
    if spark.conf.get("spark.task.resource.gpu.amount", None):
        return True
    import torch

    return bool(torch.cuda.is_available())


def intended_precision(spark: SparkSession, config: EmbedConfig) -> str:
    """The precision the configured backend embeds with if its agreement check passes:
    `torch`, or `onnx-float32`/`onnx-int8` when the tasks run on a CPU."""
    device = "cuda" if tasks_use_gpu(spark, config.device) else "cpu"
    if backend_for(config.backend, device) == "torch":
        return "torch"
    return precision_of(config.quantize)


def choose_backend(config: EmbedConfig, probe: Encoder, precision: str) -> BackendChoice:
    """torch, or the ONNX export of `probe` (torch float32 on the driver's CPU) if `precision`
    asks for it and its vectors agree; a disagreeing or broken export falls back to torch,
    loudly."""
    if precision == "torch":
        return BackendChoice(probe)  # type: ignore[arg-type]
    return guarded(probe, config.onnx_dir, config.quantize,  # type: ignore[arg-type]
                   config.agreement_min_mean_cosine, config.agreement_min_cosine)


def same_precision(precision: str) -> Column:
    """Rows whose recorded precision (`device` after the slash) is `precision`; `torch` matches
    every torch precision (float32 on a CPU, float16 on a GPU), as before ONNX existed."""
    recorded = F.substring_index(F.coalesce(F.col("device"), F.lit("")), "/", -1)
    if precision == "torch":
        return ~recorded.startswith("onnx-")
    return recorded == precision


def not_cached(spark: SparkSession, wanted: DataFrame, database: str, encoder: Encoder,
               precision: str) -> DataFrame:
    """The rows of `wanted` without a cached vector of `encoder` at `precision`."""
    cached = cached_embeddings(spark, database, encoder.model_id, encoder.revision, precision)
    if cached is None:
        return wanted
    return wanted.join(cached.select("query_key").distinct(), "query_key", "left_anti")


def cached_embeddings(
    spark: SparkSession, database: str, model_id: str, revision: str, precision: str = "torch"
) -> DataFrame | None:
    """The cache's rows for one model revision and precision, or None before the cache exists."""
    name = qualified(database, TABLE)
    if not spark.catalog.tableExists(name):
        return None
    table = spark.table(name)
    return table.where((F.col("model_id") == model_id) & (F.col("model_revision") == revision)
                       & same_precision(precision))


def embed_queries(
    spark: SparkSession, queries: DataFrame, config: EmbedConfig, database: str,
    table_format: str = "parquet", run_id: str | None = None,
) -> EmbedStats:
    """Cache embeddings for every distinct query in `queries`, computing only the missing ones.

    `queries` needs `query_key` and `query`. Null or blank queries are skipped and counted.
    """
    start = time.perf_counter()
    chosen = choose_model(config)
    encoder = chosen.encoder
    distinct = queries.select("query_key", "query").dropDuplicates(["query_key"])
    counts = distinct.agg(
        F.count(F.lit(1)).alias("total"),
        F.count(F.when(is_blank(F.col("query")) | F.col("query_key").isNull(), 1)).alias("skipped"),
    ).first()
    assert counts is not None
    wanted = distinct.where(~is_blank(F.col("query")) & F.col("query_key").isNotNull())
    precision = intended_precision(spark, config)
    missing = not_cached(spark, wanted, database, encoder, precision)
    n_missing = missing.count()
    backend = BackendChoice(encoder)  # type: ignore[arg-type]
    if n_missing and precision != "torch":
        backend = choose_backend(config, encoder, precision)
        if backend.fallback_reason is not None:
            precision = "torch"
            missing = not_cached(spark, wanted, database, encoder, precision)
            n_missing = missing.count()
    backend_name = "torch" if precision == "torch" else "onnx"
    batch_id = f"{run_id or 'adhoc'}-{uuid.uuid4().hex[:8]}"
    if n_missing:
        settings = replace(EncoderSettings.from_config(config, chosen.model),
                           backend=backend_name, guard=False)
        fresh = missing.withColumn("e", embed_struct_column(F.col("query"), settings)).select(
            "query_key",
            "query",
            F.lit(encoder.model_id).alias("model_id"),
            F.lit(encoder.revision).alias("model_revision"),
            F.lit(encoder.dim).alias("dim"),
            F.col("e.embedding").alias("embedding"),
            F.col("e.truncated").alias("truncated"),
            F.col("e.device").alias("device"),
            F.lit(config.model).alias("requested_model"),
            F.lit(run_id).cast("string").alias("embedded_run_id"),
            F.lit(batch_id).alias("embed_batch_id"),
            F.current_timestamp().alias("embedded_at"),
        )
        append_table(fresh, database, TABLE, table_format)
    embedded, truncated, devices = batch_facts(spark, database, batch_id) if n_missing else (
        0, 0, [])
    seconds = time.perf_counter() - start
    stats = EmbedStats(
        model_id=encoder.model_id,
        model_revision=encoder.revision,
        dim=encoder.dim,
        embedded=embedded,
        reused=counts["total"] - counts["skipped"] - embedded,
        skipped=counts["skipped"],
        truncated=truncated,
        requested_model=config.model,
        fallback=chosen.fallback_reason is not None,
        fallback_reason=chosen.fallback_reason,
        devices=devices,
        seconds=round(seconds, 3),
        queries_per_second=round(embedded / seconds, 1) if embedded else None,
        requested_backend=config.backend,
        backend=backend_name,
        precision=precision,
        agreement=asdict(backend.agreement) if backend.agreement else None,
        backend_fallback=backend.fallback_reason is not None,
        backend_fallback_reason=backend.fallback_reason,
    )
    if stats.truncated:
        log.warning("%d queries were longer than %s's %d-token context and were truncated",
                    stats.truncated, encoder.model_id, encoder.max_tokens)
    if stats.skipped:
        log.warning("%d null, empty or whitespace-only queries were skipped", stats.skipped)
    return stats


def batch_facts(spark: SparkSession, database: str, batch_id: str) -> tuple[int, int, list[str]]:
    """Rows, truncated rows and devices of one embedding batch, read back from the cache."""
    rows = spark.table(qualified(database, TABLE)).where(F.col("embed_batch_id") == batch_id)
    facts = rows.agg(
        F.count(F.lit(1)).alias("n"),
        F.count(F.when(F.col("truncated"), 1)).alias("truncated"),
        F.sort_array(F.collect_set("device")).alias("devices"),
    ).first()
    assert facts is not None
    return int(facts["n"]), int(facts["truncated"]), list(facts["devices"])

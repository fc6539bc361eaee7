"""Typed, validated configuration loaded from YAML with `section.key=value` overrides."""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ConfigError(ValueError):
    """A configuration key or value is invalid; the message names the key."""


@dataclasses.dataclass(frozen=True)
class RunConfig:
    database: str = "querylens"
    warehouse_dir: str = "work/warehouse"
    metastore_dir: str = "work/metastore"
    output_dir: str = "work/output"
    table_format: str = "parquet"
    seed: int = 42
    run_id: str | None = None


@dataclasses.dataclass(frozen=True)
class SparkConfig:
    master: str | None = "local[2]"
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


@dataclasses.dataclass(frozen=True)
class InputConfig:
    format: Literal["csv", "parquet", "table", "ubi"] = "parquet"
    path: str = "work/demo_logs/events"
    table: str | None = None
    ubi_queries_path: str | None = None
    ubi_events_path: str | None = None
    columns: ColumnsConfig = dataclasses.field(default_factory=ColumnsConfig)
    filter_columns: list[str] = dataclasses.field(
        default_factory=lambda: [
            "filter_gender", "filter_brand", "filter_colour", "filter_material", "filter_category"
        ]
    )
    ubi_click_actions: list[str] = dataclasses.field(default_factory=lambda: ["click"])
    ubi_add_to_bag_actions: list[str] = dataclasses.field(default_factory=lambda: ["add_to_cart"])
    ubi_purchase_actions: list[str] = dataclasses.field(default_factory=lambda: ["purchase"])


@dataclasses.dataclass(frozen=True)
class NormalizeConfig:
    unicode_form: Literal["NFC", "NFKC", "NFD", "NFKD"] = "NFKC"
    lowercase: bool = True
    max_chars: int = 512


@dataclasses.dataclass(frozen=True)
class GenerateConfig:
    n_events: int = 200_000
    n_queries: int = 12_000
    seed: int = 7
    start: str = "2026-10-01"
    days: int = 28


@dataclasses.dataclass(frozen=True)
class EmbedConfig:
    model: str = "minilm"
    fallback: str | None = None
    batch_size: int = 256
    device: Literal["auto", "cpu", "cuda"] = "auto"
    normalize: bool = True


@dataclasses.dataclass(frozen=True)
class ClusterConfig:
    backend: Literal["sklearn", "mllib", "auto"] = "sklearn"
    n_components: int = 10
    n_clusters: int = 15
    n_init: int = 10
    max_iter: int = 300
    seed: int = 42
    n_exemplars: int = 5


@dataclasses.dataclass(frozen=True)
class Config:
    run: RunConfig = dataclasses.field(default_factory=RunConfig)
    spark: SparkConfig = dataclasses.field(default_factory=SparkConfig)
    input: InputConfig = dataclasses.field(default_factory=InputConfig)
    normalize: NormalizeConfig = dataclasses.field(default_factory=NormalizeConfig)
    generate: GenerateConfig = dataclasses.field(default_factory=GenerateConfig)
    embed: EmbedConfig = dataclasses.field(default_factory=EmbedConfig)
    cluster: ClusterConfig = dataclasses.field(default_factory=ClusterConfig)

    def validate(self) -> Config:
        """Check cross-field rules that types alone cannot express."""
        require_identifier("run.database", self.run.database)
        if self.input.table is not None:
            for part in self.input.table.split("."):
                require_identifier("input.table", part)
        if self.cluster.n_clusters < 2:
            raise ConfigError(f"cluster.n_clusters must be >= 2, got {self.cluster.n_clusters}")
        if self.cluster.n_components < 1:
            raise ConfigError(
                f"cluster.n_components must be >= 1, got {self.cluster.n_components}"
            )
        for key, value in [
            ("embed.batch_size", self.embed.batch_size),
            ("generate.n_events", self.generate.n_events),
            ("generate.n_queries", self.generate.n_queries),
            ("spark.shuffle_partitions", self.spark.shuffle_partitions),
        ]:
            if value < 1:
                raise ConfigError(f"{key} must be >= 1, got {value}")
        return self


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
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        data = loaded
    for item in overrides or []:
        apply_override(data, item)
    return build(Config, data, "").validate()


def apply_override(data: dict[str, Any], item: str) -> None:
    """Set `section.key=value` in `data`, parsing the value as YAML."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} must look like section.key=value")
    *parents, leaf = key.strip().split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: {part} is not a section")
    node[leaf] = yaml.safe_load(raw) if raw.strip() else None


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
        return coerce(inner[0], value, key)
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
        return {str(k): str(v) for k, v in value.items()}
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


def to_dict(config: Config) -> dict[str, Any]:
    """The config as plain data, for the run manifest."""
    return dataclasses.asdict(config)

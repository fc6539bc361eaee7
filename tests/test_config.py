from pathlib import Path

import pytest

from querylens.runtime.config import ConfigError, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "conf.yaml"
    path.write_text(text)
    return path


def test_defaults_and_yaml(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "cluster:\n  n_clusters: 7\n"))
    assert config.cluster.n_clusters == 7
    assert config.cluster.n_components == 10
    assert config.run.database == "querylens"


def test_shipped_configs_load() -> None:
    root = Path(__file__).parents[1] / "conf"
    for path in root.glob("*.yaml"):
        load_config(path)


def test_override_wins_and_parses_types(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "cluster:\n  n_clusters: 7\n"),
                         ["cluster.n_clusters=12", "embed.fallback=null",
                          "input.filter_columns=[a, b]"])
    assert config.cluster.n_clusters == 12
    assert config.embed.fallback is None
    assert config.input.filter_columns == ["a", "b"]


@pytest.mark.parametrize(
    ("text", "overrides", "message"),
    [
        ("cluster:\n  n_clusterz: 3\n", [], "cluster.n_clusterz"),
        ("bogus:\n  a: 1\n", [], "'bogus'"),
        ("", ["cluster.n_clusters=ten"], "cluster.n_clusters must be an integer"),
        ("", ["cluster.n_clusters=1"], "cluster.n_clusters must be >= 2"),
        ("", ["embed.normalize=maybe"], "embed.normalize must be true or false"),
        ("", ["input.format=xml"], "input.format must be one of"),
        ("", ["run.database=prod; DROP TABLE x"], "run.database must be a plain identifier"),
        ("", ["input.columns.qury=q"], "input.columns.qury"),
        ("", ["cluster"], "section.key=value"),
        ("- a\n- b\n", [], "mapping"),
    ],
)
def test_invalid_config_names_the_key(
    tmp_path: Path, text: str, overrides: list[str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_config(write(tmp_path, text), overrides)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_manifest_config_masks_secrets() -> None:
    from querylens.runtime.config import to_dict

    config = load_config(None, [
        "spark.conf={spark.hadoop.fs.s3a.secret.key: abc, spark.hadoop.fs.s3a.access.key: id1, "
        "spark.executor.memory: 4g, spark.jdbc.password: pw}",
    ])
    conf = to_dict(config)["spark"]["conf"]
    assert conf == {"spark.hadoop.fs.s3a.secret.key": "***",
                    "spark.hadoop.fs.s3a.access.key": "***",
                    "spark.executor.memory": "4g", "spark.jdbc.password": "***"}

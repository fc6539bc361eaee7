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
    assert config.cluster.n_components == "auto"
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


SECRET_SETTINGS = {
    "spark.hadoop.fs.azure.account.key.acct.dfs.core.windows.net": "c2VjcmV0a2V5Zm9yYXp1cmU=",
    "spark.hadoop.fs.gs.auth.service.account.private.key":
        "-----BEGIN PRIVATE KEY-----\\nMIIEvgIBADANBg\\n-----END PRIVATE KEY-----\\n",
    "spark.hadoop.fs.azure.sas.box.acct.blob.core.windows.net":
        "sp=r&st=2026-01-01&se=2027-01-01&sv=2022-11-02&sr=c&sig=q7Zx%2Fsecret%3D",
    "spark.executorEnv.OPENAI_API_KEY": "sk-proj-abcdefghijklmnop0123",
    "spark.executorEnv.STORE_TOKEN_VALUE": "sv=2022-11-02&ss=b&sig=abcSIGsecret",
    "spark.executorEnv.AWS_SECRET": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
}


def test_secrets_are_masked_by_key_and_by_value_shape() -> None:
    from querylens.runtime.config import mask_secrets, to_dict

    config = load_config(None, [f"spark.conf.{k}={v}" for k, v in SECRET_SETTINGS.items()] + [
        "spark.conf.spark.sql.warehouse.url=jdbc:postgresql://bob:hunter2@db:5432/meta",
        "spark.conf.spark.jdbc.url=jdbc:sqlserver://db:1433;user=bob;password=hunter3;x=1",
        "spark.conf.spark.executor.memory=4g",
        "embed.model=sentence-transformers/all-MiniLM-L6-v2",
        "input.path=https://logs.example.com/export?user=bob&password=hunter4&day=1",
    ])
    data = to_dict(config)
    conf = data["spark"]["conf"]
    assert all(conf[k] == "***" for k in SECRET_SETTINGS)
    assert conf["spark.sql.warehouse.url"] == "jdbc:postgresql://bob:***@db:5432/meta"
    assert conf["spark.jdbc.url"] == "jdbc:sqlserver://db:1433;user=bob;password=***;x=1"
    assert conf["spark.executor.memory"] == "4g"
    assert data["embed"]["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert data["input"]["path"] == "https://logs.example.com/export?user=bob&password=***&day=1"
    text = str(data)
    assert not any(s in text for s in ("hunter", "c2VjcmV0", "MIIE", "q7Zx", "sk-proj",
                                       "abcSIG", "EXAMPLEKEY"))
    assert mask_secrets({"revision": "0123456789abcdef" * 2 + "01234567"})["revision"] != "***"


def test_dry_run_masks_secrets_it_prints(capsys: pytest.CaptureFixture[str]) -> None:
    from querylens.deploy import submit

    rc = submit.main(["pipeline", "--dry-run", "--master", "local[2]",
                      "--set", "spark.conf={spark.hadoop.fs.s3a.secret.key: s3SECRETvalue}",
                      "--set", "spark.conf.spark.hadoop.fs.s3a.access.key=AKIAABCDEFGHIJKLMNOP",
                      "--set", "input.path=jdbc:mysql://bob:hunter2@db/logs"])
    printed = capsys.readouterr().out
    assert rc == 0
    assert "spark.hadoop.fs.s3a.secret.key=***" in printed
    assert not any(s in printed for s in ("s3SECRETvalue", "AKIAABCDEFGHIJKLMNOP", "hunter2"))
    assert "jdbc:mysql://bob:***@db/logs" in printed


@pytest.mark.parametrize(
    ("overrides", "conf"),
    [
        (["spark.conf.spark.executor.memory=8g"], {"spark.executor.memory": "8g"}),
        (["spark.conf={spark.sql.shuffle.partitions: 4}", "spark.conf.spark.executor.cores=2"],
         {"spark.sql.shuffle.partitions": "4", "spark.executor.cores": "2"}),
        (["spark.conf={spark: {executor: {memory: 8g}, ui.enabled: false}}"],
         {"spark.executor.memory": "8g", "spark.ui.enabled": "false"}),
    ],
)
def test_dotted_keys_in_map_sections_reach_spark(overrides: list[str],
                                                 conf: dict[str, str]) -> None:
    config = load_config(None, overrides)
    assert config.spark.conf == conf
    assert load_config(None, ["input.options.sep=;"]).input.options == {"sep": ";"}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("cluster.n_clusters.x=3", "cluster.n_clusters is a single value"),
        ("spark.conf.spark.jars=[a.jar, b.jar]", "spark.conf.spark.jars must be a single value"),
    ],
)
def test_overrides_below_a_value_fail(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("normalize.max_chars=-1", "normalize.max_chars must be >= 1, got -1"),
        ("normalize.max_chars=0", "normalize.max_chars must be >= 1, got 0"),
        ("generate.days=0", "generate.days must be >= 1"),
        ("spark.arrow_batch_size=0", "spark.arrow_batch_size must be >= 1"),
        ("run.seed=-1", r"run.seed must be in \[0, 4294967295\]"),
        ("cluster.score_version=0", "cluster.score_version must be >= 1"),
        ("cluster.stability_seeds=[1, -2]", r"cluster.stability_seeds values must be .*\[-2\]"),
        ("success.threshold=1.5", r"success.threshold must be in \[0, 1\]"),
        ("success.dropout=1.0", r"success.dropout must be in \[0, 1\)"),
        ("success.learning_rate=0", "success.learning_rate must be > 0"),
        ("recommend.min_similarity=-2", r"recommend.min_similarity must be in \[-1, 1\]"),
        ("report.seed=-5", "report.seed must be in"),
        ("cluster.tol=.nan", "cluster.tol must be >= 0"),
    ],
)
def test_numeric_keys_are_bounded(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_every_numeric_key_has_declared_bounds() -> None:
    from querylens.runtime.config import Config
    from querylens.runtime.constraints import BOUNDS, numeric_keys

    keys = numeric_keys(Config)
    assert sorted(set(keys) - set(BOUNDS)) == [], "numeric keys without an entry in BOUNDS"
    assert sorted(set(BOUNDS) - set(keys)) == [], "BOUNDS entries that are not numeric keys"
    defaults = Config()
    from querylens.runtime.constraints import check_bounds
    check_bounds(defaults)


def test_notebook_config_reproduces_the_notebook_settings() -> None:
    cluster = load_config(Path(__file__).resolve().parents[1] / "conf" / "notebook.yaml").cluster
    assert (cluster.n_components, cluster.n_clusters, cluster.n_init, cluster.max_iter,
            cluster.seed) == (10, 15, 50, 500, 42)
    assert cluster.sweep_components == [5, 10, *range(20, 220, 20)]
    assert cluster.sweep_clusters == [10, 20]
    assert cluster.sweep_full_n_init == 50
    assert cluster.sweep_full_n_init_components >= max(cluster.sweep_components)

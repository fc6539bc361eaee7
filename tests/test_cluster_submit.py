"""spark-submit.sh: bad input, the packed environment, and a real standalone master + worker."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from querylens.deploy import submit
from querylens.runtime.config import ConfigError, load_config
from querylens.runtime.provenance import driver_info, note_task, task_probe, track_tasks
from tests.helpers import make_config

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "spark-submit.sh"
SPARK_HOME = Path(__import__("pyspark").__file__).parent


def run_script(*args: str, env: dict[str, str] | None = None,
               timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------- bad input, before submitting


def test_unknown_job_lists_the_jobs() -> None:
    done = run_script("nosuchjob", "--dry-run")
    assert done.returncode == 2
    assert "unknown job 'nosuchjob'" in done.stderr and "pipeline" in done.stderr
    assert "submitting" not in done.stdout


def test_missing_config_file() -> None:
    done = run_script("pipeline", "--conf", "conf/nope.yaml", "--dry-run")
    assert done.returncode == 2
    assert "config file not found: conf/nope.yaml" in done.stderr


def test_bad_override_fails_before_submit() -> None:
    done = run_script("pipeline", "--set", "cluster.n_clusters=1", "--dry-run")
    assert done.returncode == 2
    assert "cluster.n_clusters must be >= 2" in done.stderr


def test_unreachable_master() -> None:
    port = free_port()
    done = run_script("pipeline", "--master", f"spark://127.0.0.1:{port}", "--dry-run")
    assert done.returncode == 2
    assert f"master spark://127.0.0.1:{port} is not reachable" in done.stderr


def test_missing_java(tmp_path: Path) -> None:
    done = run_script("pipeline", "--dry-run",
                      env={"JAVA_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 2
    assert "Java not found" in done.stderr and "JAVA_HOME" in done.stderr
    no_home = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("bash", "dirname"):
        (tools / tool).symlink_to(shutil.which(tool) or tool)
    done = subprocess.run([str(SCRIPT), "pipeline", "--dry-run"], capture_output=True,
                          text=True, cwd=ROOT, env={**no_home, "PATH": str(tools)})
    assert done.returncode == 2 and "no `java` on PATH" in done.stderr


def test_standalone_cluster_mode_is_refused() -> None:
    with pytest.raises(submit.SubmitError, match="standalone does not support cluster deploy"):
        submit.check_deploy_mode("spark://h:7077", "cluster")
    with pytest.raises(submit.SubmitError, match="not a local master"):
        submit.check_deploy_mode("local[2]", "cluster")
    submit.check_deploy_mode("yarn", "cluster")
    submit.check_deploy_mode("k8s://https://api:6443", "cluster")


def test_spark_args_after_dashdash_may_not_clash() -> None:
    with pytest.raises(submit.SubmitError, match="--archives after '--'"):
        submit.parse_args(["pipeline", "--", "--archives", "x.tar.gz"])
    args = submit.parse_args(["pipeline", "--set", "a.b=1", "--", "--num-executors", "4"])
    assert args.extra == ["--num-executors", "4"] and args.sets == ["a.b=1"]


def test_master_endpoints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert submit.master_endpoints("local[*]") == []
    assert submit.master_endpoints("spark://a:7078,b") == [("a", 7078), ("b", 7077)]
    assert submit.master_endpoints("k8s://https://api.example:6443") == [("api.example", 6443)]
    with pytest.raises(submit.SubmitError, match="unsupported master"):
        submit.master_endpoints("mesos://x:5050")
    monkeypatch.delenv("HADOOP_CONF_DIR", raising=False)
    monkeypatch.delenv("YARN_CONF_DIR", raising=False)
    with pytest.raises(submit.SubmitError, match="HADOOP_CONF_DIR or YARN_CONF_DIR"):
        submit.master_endpoints("yarn")
    (tmp_path / "yarn-site.xml").write_text(
        "<configuration><property><name>yarn.resourcemanager.address</name>"
        "<value>rm.example:8050</value></property></configuration>")
    monkeypatch.setenv("HADOOP_CONF_DIR", str(tmp_path))
    assert submit.master_endpoints("yarn") == [("rm.example", 8050)]


def test_dry_run_prints_the_command() -> None:
    done = run_script("pipeline", "--conf", "conf/cluster.yaml", "--master", "local[2]",
                      "--set", "cluster.n_clusters=7", "--dry-run", "--",
                      "--executor-memory", "3g")
    assert done.returncode == 0, done.stderr
    command = done.stdout.split("command", 1)[1]
    for part in ["--master 'local[2]'", "--deploy-mode client", "--py-files",
                 "#environment",
                 f"--files {ROOT / 'conf/cluster.yaml'},{ROOT / 'conf/gpu-discovery.sh'}",
                 "spark.executor.resource.gpu.discoveryScript=./gpu-discovery.sh",
                 "spark.pyspark.python=./environment/bin/python",
                 f"spark.pyspark.driver.python={sys.executable}",
                 "spark.executor.resource.gpu.amount=1", "--executor-memory 3g",
                 f"{ROOT / 'jobs/pipeline.py'} --conf {ROOT / 'conf/cluster.yaml'}",
                 "--set 'spark.master=local[2]' --set cluster.n_clusters=7"]:
        assert part in command, part


def test_node_python_ships_no_environment() -> None:
    done = run_script("embed", "--master", "local[1]", "--node-python", "/opt/ql/bin/python",
                      "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "--archives" not in done.stdout
    assert "spark.pyspark.python=/opt/ql/bin/python" in done.stdout


# ---------------------------------------------------------------- artefacts


def fake_venv(root: Path) -> Path:
    venv = root / "venv"
    site = venv / "lib" / "python3.11" / "site-packages"
    for folder in ["bin", "pkg/__pycache__", "querylens", "querylens-0.1.0.dist-info",
                   "pyspark/jars", "pyspark/sql", "dep-1.0.dist-info"]:
        (site / folder if folder != "bin" else venv / folder).mkdir(parents=True, exist_ok=True)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\nversion = 3.11.7\n")
    (venv / "bin" / "python").symlink_to("/usr/bin/python3")
    (venv / "bin" / "activate").write_text("# activate\n")
    for rel in ["pkg/__init__.py", "pkg/__pycache__/x.cpython-311.pyc", "querylens/a.py",
                "__editable__.querylens-0.1.0.pth", "pyspark/jars/spark-core.jar",
                "pyspark/sql/__init__.py", "dep-1.0.dist-info/METADATA"]:
        (site / rel).write_text(rel)
    return venv


def test_pack_env_excludes_querylens_and_caches(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    venv = fake_venv(tmp_path)
    out = tmp_path / "build"
    first = submit.pack_env(venv, out, compress=1)
    with tarfile.open(first.path) as tar:
        names = set(tar.getnames())
        python = tar.getmember("bin/python")
    site = "lib/python3.11/site-packages"
    assert {"pyvenv.cfg", f"{site}/pkg/__init__.py", f"{site}/pyspark/sql/__init__.py",
            f"{site}/dep-1.0.dist-info/METADATA", "bin/python"} <= names
    assert not [n for n in names if "querylens" in n or "__pycache__" in n or "jars" in n
                or n.startswith("bin/activate")]
    assert python.issym() and python.linkname == "/usr/bin/python3"
    assert not first.cached and first.path.name.endswith(".tar.gz")
    again = submit.pack_env(venv, out, compress=1)
    assert again.cached and again.path == first.path
    (site_dir := venv / site / "new-2.0.dist-info").mkdir()
    (site_dir / "METADATA").write_text("x")
    monkeypatch.setenv("QUERYLENS_PYTHON_PREFIX", "/opt/python")
    third = submit.pack_env(venv, out, compress=0)
    assert third.path != first.path and not first.path.exists()
    with tarfile.open(third.path) as tar:
        assert tar.getmember("bin/python").linkname == "/opt/python/bin/python3"
        cfg = tar.extractfile("pyvenv.cfg")
        assert cfg is not None and cfg.read().decode().startswith("home = /opt/python/bin\n")


def source_copy(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    shutil.copytree(ROOT / "lib" / "querylens", root / "lib" / "querylens",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


def test_package_key_follows_sources(tmp_path: Path) -> None:
    root = source_copy(tmp_path)
    before = submit.package_key(root)
    assert submit.package_key(root) == before
    (root / "lib" / "querylens" / "__pycache__").mkdir(exist_ok=True)
    (root / "lib" / "querylens" / "__pycache__" / "x.pyc").write_bytes(b"cache")
    assert submit.package_key(root) == before
    with open(root / "lib" / "querylens" / "tables.py", "a") as fh:
        fh.write("\n")
    assert submit.package_key(root) != before


def test_build_package_is_an_importable_zip(tmp_path: Path) -> None:
    root = source_copy(tmp_path)
    built = submit.build_package(root, tmp_path / "build")
    assert built.path.name == f"querylens-{submit.package_key(root)}.zip" and not built.cached
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import querylens.runtime.catalog as m; "
            "print(m.__file__)")
    done = subprocess.run([sys.executable, "-S", "-c", code, str(built.path)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith(str(built.path))
    assert submit.build_package(root, tmp_path / "build").cached
    (root / "lib" / "querylens" / "extra.py").write_text("X = 1\n")
    rebuilt = submit.build_package(root, tmp_path / "build")
    assert not rebuilt.cached and rebuilt.path != built.path


# ---------------------------------------------------------------- config: cluster profile


def test_cluster_profile_loads_with_gpu_resources() -> None:
    config = load_config(ROOT / "conf" / "cluster.yaml")
    conf = config.spark.conf
    assert config.embed.model == "patrickjohncyh/fashion-clip"
    assert config.embed.fallback is None
    assert config.spark.master is None
    assert conf["spark.executor.resource.gpu.amount"] == "1"
    assert float(conf["spark.task.resource.gpu.amount"]) <= 1
    assert conf["spark.executor.resource.gpu.discoveryScript"].endswith("gpu-discovery.sh")
    assert (ROOT / "conf" / "gpu-discovery.sh").is_file()
    raw = yaml.safe_load((ROOT / "conf" / "cluster.yaml").read_text())
    assert raw["spark"]["arrow_batch_size"] == config.spark.arrow_batch_size


@pytest.mark.parametrize(("listing", "expected"), [
    ("0\n1\n", ["0", "1"]), ("", []), ("3\n", ["3"]),
])
def test_gpu_discovery_script(tmp_path: Path, listing: str, expected: list[str]) -> None:
    smi = tmp_path / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\nprintf '{listing}'\n")
    smi.chmod(0o755)
    done = subprocess.run(["bash", str(ROOT / "conf" / "gpu-discovery.sh")], capture_output=True,
                          text=True, env={**os.environ, "PATH": f"{tmp_path}:/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"name": "gpu", "addresses": expected}


def test_gpu_discovery_without_nvidia_smi(tmp_path: Path) -> None:
    bash = shutil.which("bash") or "/bin/bash"
    done = subprocess.run([bash, str(ROOT / "conf" / "gpu-discovery.sh")], capture_output=True,
                          text=True, env={**os.environ, "PATH": str(tmp_path)})
    assert done.returncode == 0
    assert json.loads(done.stdout) == {"name": "gpu", "addresses": []}


@pytest.mark.parametrize("fmt", ["parquet", "orc", "delta", "iceberg"])
def test_table_formats_accepted(fmt: str) -> None:
    assert load_config(None, [f"run.table_format={fmt}"]).run.table_format == fmt


def test_catalog_settings_follow_the_format(monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    from querylens.runtime.session import spark_conf

    monkeypatch.delenv("DATABRICKS_RUNTIME_VERSION", raising=False)
    parquet = spark_conf(load_config(None, [f"run.warehouse_dir={tmp_path / 'wh'}"]))
    assert "spark.sql.extensions" not in parquet
    assert parquet["spark.sql.warehouse.dir"] == str(tmp_path / "wh")
    delta = spark_conf(load_config(None, ["run.table_format=delta",
                                          "run.warehouse_dir=s3a://bucket/wh"]))
    assert delta["spark.sql.catalog.spark_catalog"].endswith("delta.catalog.DeltaCatalog")
    assert delta["spark.sql.extensions"] == "io.delta.sql.DeltaSparkSessionExtension"
    assert delta["spark.sql.warehouse.dir"] == "s3a://bucket/wh"
    iceberg = spark_conf(load_config(None, [
        "run.table_format=iceberg", "spark.conf={spark.sql.catalog.spark_catalog.type: hadoop}"]))
    assert iceberg["spark.sql.catalog.spark_catalog"].endswith("SparkSessionCatalog")
    assert iceberg["spark.sql.catalog.spark_catalog.type"] == "hadoop"
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "17.3")
    on_databricks = spark_conf(load_config(None, ["run.table_format=delta"]))
    assert "spark.sql.catalog.spark_catalog" not in on_databricks


def test_unknown_table_format_is_named() -> None:
    with pytest.raises(ConfigError, match="run.table_format must be one of .*got 'hudi'"):
        load_config(None, ["run.table_format=hudi"])


# ---------------------------------------------------------------- executor evidence, local mode


def test_track_tasks_in_local_mode_names_the_driver(spark) -> None:  # type: ignore[no-untyped-def]
    from pyspark.sql.functions import pandas_udf

    with track_tasks(spark) as tracker:
        probe = task_probe()

        @pandas_udf("long")  # type: ignore[call-overload]
        def double(batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
            note_task(probe)
            for batch in batches:
                yield batch * 2

        rows = spark.range(40).repartition(3).select(double("id").alias("x")).collect()
    assert sorted(r.x for r in rows) == list(range(0, 80, 2))
    summary = tracker.summary(driver_info(spark))
    assert summary["n_tasks"] == 3
    assert summary["executor_ids"] == ["driver"] and summary["ran_on_driver"]
    assert all(t["pid"] != os.getpid() for t in summary["tasks"])
    assert task_probe() is None


# ---------------------------------------------------------------- a real standalone cluster

BRANDS = ["nike", "adidas", "zara", "levis", "gucci", "uniqlo"]
ITEMS = ["running shoes", "sneakers", "denim jeans", "leather handbag", "summer dress",
         "wool coat", "swim shorts", "silk scarf"]
COLOURS = ["black", "white", "red", "navy", ""]


def write_events(path: Path, n_events: int = 3000, seed: int = 0) -> int:
    """Demo search events with the standard columns; returns the number of distinct queries
    after ingest appends the gender filter to the query text."""
    rng = np.random.default_rng(seed)
    queries = [f"{c} {b} {i}".strip() for b in BRANDS for i in ITEMS for c in COLOURS[::2]]
    pick = rng.integers(0, len(queries), n_events)
    clicks = rng.poisson(0.8, n_events)
    events = pd.DataFrame({
        "query": [queries[i] for i in pick],
        "session_id": [f"s{n}" for n in rng.integers(0, n_events // 3, n_events)],
        "ts": pd.Timestamp("2026-10-01") + pd.to_timedelta(rng.integers(0, 86400 * 7, n_events),
                                                           unit="s"),
        "clicks": clicks,
        "add_to_bags": rng.binomial(clicks, 0.3),
        "purchases": rng.binomial(1, 0.05, n_events),
        "filter_gender": rng.choice([None, "women", "men"], n_events),
        "filter_brand": None, "filter_colour": None, "filter_material": None,
        "filter_category": None,
    })
    path.mkdir(parents=True)
    events.to_parquet(path / "part-0.parquet", index=False, coerce_timestamps="us")
    with_filter = [f"{q} {g}" if g else q
                   for q, g in zip(events["query"], events["filter_gender"], strict=True)]
    return len(set(with_filter))


def wait_for(check, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def alive_workers(ui_port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=2) as response:
            state = json.load(response)
    except OSError:
        return 0
    return sum(1 for w in state.get("workers", []) if w.get("state") == "ALIVE")


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a process group started with start_new_session (the worker's executors too)."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


@contextmanager
def standalone_cluster(root: Path, cores: int = 2, memory: str = "2g") -> Iterator[str]:
    """A Spark standalone master and one worker on loopback; both stopped on exit."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYSPARK_PYTHON", "PYTHONPATH")}
    env.update(SPARK_LOCAL_IP="127.0.0.1", SPARK_HOME=str(SPARK_HOME),
               SPARK_LOG_DIR=str(root / "logs"), SPARK_WORKER_DIR=str(root / "work"))
    spark_class = str(SPARK_HOME / "bin" / "spark-class")
    root.mkdir(parents=True, exist_ok=True)
    port, ui = free_port(), free_port()
    processes: list[subprocess.Popen[bytes]] = []
    logs = []
    try:
        for name, args in [
            ("master", ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                        "--port", str(port), "--webui-port", str(ui)]),
            ("worker", ["org.apache.spark.deploy.worker.Worker", f"spark://127.0.0.1:{port}",
                        "--host", "127.0.0.1", "--cores", str(cores), "--memory", memory,
                        "--webui-port", str(free_port()), "--work-dir", str(root / "work")]),
        ]:
            log = open(root / f"{name}.log", "wb")
            logs.append(log)
            processes.append(subprocess.Popen([spark_class, *args], env=env, stdout=log,
                                              stderr=subprocess.STDOUT, start_new_session=True))
            if name == "master":
                wait_for(lambda: port_open(port), 90, "the standalone master")
        wait_for(lambda: alive_workers(ui) >= 1, 90, "the worker to register")
        yield f"spark://127.0.0.1:{port}"
    finally:
        for process in reversed(processes):
            stop(process)
        for log in logs:
            log.close()
        shutil.rmtree(root / "work", ignore_errors=True)


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


READ_BACK = """
import json, sys
from querylens.runtime.config import load_config
from querylens.runtime.session import build_session
config = load_config(None, sys.argv[2:])
spark = build_session(config)
db = config.run.database
out = {}
for table in ["queries", "query_embeddings", "cluster_assignments", "clusters", "runs"]:
    out[table] = [json.loads(row) for row in spark.table(f"{db}.{table}").toJSON().collect()]
json.dump(out, open(sys.argv[1], "w"))
"""

SMALL_RUN = [
    "embed.batch_size=64", "cluster.sweep=false", "cluster.n_components=8",
    "cluster.n_clusters=6", "cluster.n_init=4", "cluster.stability_seeds=[]",
    "cluster.backend=sklearn", "success.max_epochs=3", "success.min_support=2",
    "recommend.min_support=2", "report.projection=pca", "report.map_sample=200",
    "report.knife_sample=200", "report.knife_refit_sample=100", "report.eval_sample=1000",
    "spark.shuffle_partitions=4", "spark.conf={spark.ui.enabled: 'false'}",
]


def read_back(root: Path, out: Path) -> dict[str, pd.DataFrame]:
    """The run's tables, read in a new Spark application on the run's metastore."""
    args = [f"run.warehouse_dir={root / 'warehouse'}", f"run.metastore_dir={root / 'metastore'}",
            "spark.master=local[1]", "spark.conf={spark.ui.enabled: 'false'}"]
    done = subprocess.run([sys.executable, "-c", READ_BACK, str(out), *args],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return {k: pd.DataFrame(v) for k, v in json.loads(out.read_text()).items()}


@pytest.mark.slow
def test_pipeline_on_standalone_cluster_matches_local_mode(
    tmp_path: Path, spark_root: Path, spark  # type: ignore[no-untyped-def]
) -> None:
    from querylens.app.pipeline import run_pipeline
    from querylens.runtime.runs import Run
    from querylens.runtime.tables import read_run_table

    events = tmp_path / "events"
    n_queries = write_events(events)
    run_root = tmp_path / "cluster_run"
    run_root.mkdir()
    settings = [f"input.path={events}", f"run.warehouse_dir={run_root / 'warehouse'}",
                f"run.metastore_dir={run_root / 'metastore'}",
                f"run.output_dir={run_root / 'output'}", *SMALL_RUN]

    with standalone_cluster(tmp_path / "spark") as master:
        args = ["pipeline", "--master", master]
        for item in settings:
            args += ["--set", item]
        args += ["--", "--conf", f"spark.local.dir={tmp_path / 'driver-local'}"]
        env = {"QUERYLENS_BUILD_DIR": str(ROOT / "build" / "spark-submit"),
               "SPARK_LOCAL_IP": "127.0.0.1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        done = run_script(*args, env=env, timeout=900)
    shutil.rmtree(tmp_path / "driver-local", ignore_errors=True)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-6000:])
    assert f"submitting to {master}" in done.stdout and "#environment" in done.stdout

    tables = read_back(run_root, tmp_path / "tables.json")
    runs = tables["runs"]
    assert list(runs["status"]) == ["completed"]
    facts = json.loads(runs["facts_json"][0])
    driver, embed_tasks = facts["driver"], facts["tasks"]["embed"]
    assert driver["master"] == master
    assert embed_tasks["n_tasks"] >= 1 and not embed_tasks["ran_on_driver"]
    assert embed_tasks["executor_ids"] and "driver" not in embed_tasks["executor_ids"]
    assert all(t["executor_id"] and t["pid"] != driver["pid"] for t in embed_tasks["tasks"])
    assert all(p.endswith("environment/bin/python") for p in embed_tasks["pythons"])
    assert driver["python"] not in embed_tasks["pythons"]
    assert all(".zip" in p and "/lib/querylens" not in p for p in embed_tasks["querylens_paths"])

    queries = tables["queries"]
    assert len(queries) == n_queries
    embeddings = tables["query_embeddings"]
    assert len(embeddings) == n_queries and set(embeddings["dim"]) == {384}
    assignments = tables["cluster_assignments"]
    assert sorted(assignments["query_key"]) == sorted(queries["query_key"])

    local = make_config(spark_root, *settings[:1], "run.database=ql_local_cmp", *SMALL_RUN)
    spark.sql("CREATE DATABASE IF NOT EXISTS ql_local_cmp")
    run = Run(spark, local, run_id="in-local-mode")
    run_pipeline(run, ["ingest", "embed", "cluster"])
    assert run.facts["tasks"]["embed"]["executor_ids"] == ["driver"]
    local_assign = read_run_table(spark, "ql_local_cmp", "cluster_assignments",
                                  "in-local-mode").toPandas()
    local_emb = spark.table("ql_local_cmp.query_embeddings").toPandas()

    cluster_ids = assignments.set_index("query_key")["cluster_id"]
    local_ids = local_assign.set_index("query_key")["cluster_id"]
    assert local_ids.sort_index().to_dict() == cluster_ids.sort_index().to_dict()
    a = np.vstack(embeddings.sort_values("query_key")["embedding"].to_list())
    b = np.vstack(local_emb.sort_values("query_key")["embedding"].to_list())
    np.testing.assert_allclose(a, b, atol=1e-5)

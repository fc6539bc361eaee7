"""A Spark Connect server on loopback, started with the pyspark wheel's own
`sbin/start-connect-server.sh --wait` and the settings a querylens config fixes at server start
(warehouse, metastore, Hive catalog), for tests, benchmarks and a laptop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyspark

from querylens.runtime.config import Config
from querylens.runtime.session import spark_conf

SCRIPT = Path(pyspark.__file__).parent / "sbin" / "start-connect-server.sh"


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_command(config: Config, port: int) -> list[str]:
    """`start-connect-server.sh --wait` with the config's master and every Spark setting."""
    conf = {**spark_conf(config), "spark.connect.grpc.binding.address": "127.0.0.1",
            "spark.connect.grpc.binding.port": str(port)}
    if config.spark.hive_metastore:
        conf["spark.sql.catalogImplementation"] = "hive"
    command = ["bash", str(SCRIPT), "--wait", "--master", config.spark.master or "local[2]"]
    for key, value in conf.items():
        command += ["--conf", f"{key}={value}"]
    return command


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Return once `port` accepts connections; raise if the server exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Spark Connect server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"Spark Connect server not listening on port {port} after {timeout_s}s")


@contextmanager
def local_connect_server(config: Config, log_dir: Path,
                         timeout_s: float = 180) -> Iterator[str]:
    """Run a Connect server for `config` while the block runs; yields its `sc://` URL. The
    server's Python workers run this interpreter; its logs go to `log_dir`."""
    Path(config.run.metastore_dir).mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "SPARK_LOG_DIR": str(log_dir),
           "SPARK_PID_DIR": str(log_dir), "SPARK_IDENT_STRING": f"querylens-{port}"}
    env.pop("SPARK_REMOTE", None)
    process = subprocess.Popen(server_command(config, port), env=env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, process, timeout_s)
        yield f"sc://127.0.0.1:{port}"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

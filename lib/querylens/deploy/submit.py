"""`spark-submit.sh`: ship querylens and its Python environment to a cluster and run a job.

Two artefacts go with every submit, each cached under `build/spark-submit` by a content hash:

* the querylens package: a wheel built from `pyproject.toml` + `lib/`, shipped as a zip with
  `--py-files` (key: hash of pyproject.toml and every file under lib/querylens);
* the Python environment: the virtualenv's files without querylens itself and without caches,
  packed as a tar(.gz) and shipped with `--archives ENV#environment`, so executors (and the
  driver in cluster mode) run `./environment/bin/python` (key: pyproject.toml, the lock, the
  Python version and the installed distributions). The virtualenv must be the lock's
  (`lock/requirements.txt`, which `make` installs): a distribution at another version than
  locked, or one the lock lacks, stops the submit before anything is packed.

Every check that can fail (job name, config, Java, master) runs before anything is built or
submitted, and the full spark-submit command is printed before it runs.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from querylens.runtime.config import Config, ConfigError, load_config, mask_assignment, mask_value
from querylens.runtime.errors import SubmitError

ROOT = Path(__file__).resolve().parents[3]
ENV_ALIAS = "environment"
ENV_PYTHON = f"./{ENV_ALIAS}/bin/python"
DEPLOY_MODES = ("client", "cluster")
PACKAGE_EXCLUDES = ("querylens", "__editable__", "_querylens")
LOCK = Path("lock") / "requirements.txt"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")



@dataclass(frozen=True)
class SubmitArgs:
    job: str
    conf: str | None = None
    sets: list[str] = field(default_factory=list)
    master: str | None = None
    deploy_mode: str = "client"
    node_python: str | None = None
    dry_run: bool = False
    extra: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Artefact:
    path: Path
    cached: bool
    seconds: float


def parse_args(argv: list[str]) -> SubmitArgs:
    """`JOB [--conf FILE] [--set k=v ...] [--master URL] [--deploy-mode M] [-- spark args]`."""
    ours, extra = split_extra(argv)
    parser = argparse.ArgumentParser(
        prog="spark-submit.sh",
        description="Ship querylens and its Python environment to a Spark cluster, run a job.",
        epilog="Environment: SPARK_MASTER, SPARK_DEPLOY_MODE, SPARK_HOME (its bin/spark-submit; "
        "default: the one inside pyspark), QUERYLENS_NODE_PYTHON (a Python on every node: no "
        "environment archive), QUERYLENS_VENV (the venv to pack; default: this Python's), "
        "QUERYLENS_ENV_COMPRESS (gzip level 0-9, 0 = plain tar; default 1), "
        "QUERYLENS_BUILD_DIR (cache; default build/spark-submit).",
    )
    parser.add_argument("job", help="a job in jobs/ (pipeline, ingest, embed, ...)")
    parser.add_argument("--conf", help="YAML config file, shipped with --files")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        dest="sets", help="config override passed to the job; repeatable")
    parser.add_argument("--master", help="Spark master (default: $SPARK_MASTER, else config)")
    parser.add_argument("--deploy-mode", choices=DEPLOY_MODES,
                        default=os.environ.get("SPARK_DEPLOY_MODE", "client"))
    parser.add_argument("--node-python", default=os.environ.get("QUERYLENS_NODE_PYTHON"),
                        help="use this Python, already on every node, instead of shipping one")
    parser.add_argument("--dry-run", action="store_true",
                        help="check and print the command without building or submitting")
    args = parser.parse_args(ours)
    if args.deploy_mode not in DEPLOY_MODES:
        raise SubmitError(f"deploy mode must be client or cluster, got {args.deploy_mode!r}")
    for flag in ("--master", "--deploy-mode", "--archives", "--py-files"):
        if flag in extra:
            raise SubmitError(f"{flag} after '--' would clash with the one spark-submit.sh "
                              f"sets; pass it before '--' (or via the config)")
    return SubmitArgs(args.job, args.conf, args.sets, args.master, args.deploy_mode,
                      args.node_python, args.dry_run, extra)


def split_extra(argv: list[str]) -> tuple[list[str], list[str]]:
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []


def job_script(job: str, root: Path = ROOT) -> Path:
    """`jobs/JOB.py`, or an error listing the jobs that exist."""
    script = root / "jobs" / f"{job}.py"
    if not job.replace("_", "").isalnum() or not script.is_file():
        names = sorted(p.stem for p in (root / "jobs").glob("*.py") if p.stem != "__init__")
        raise SubmitError(f"unknown job {job!r}; choose one of: {', '.join(names)}")
    return script


def load_submit_config(args: SubmitArgs) -> Config:
    """The job's config, loaded and validated here so bad keys fail before submitting."""
    if args.conf is not None and not Path(args.conf).is_file():
        raise SubmitError(f"config file not found: {args.conf}")
    try:
        return load_config(args.conf, args.sets)
    except ConfigError as exc:
        raise SubmitError(f"bad config: {exc}") from exc


def resolve_master(args: SubmitArgs, config: Config) -> str:
    """--master, else $SPARK_MASTER, else the config's spark.master."""
    master = args.master or os.environ.get("SPARK_MASTER") or config.spark.master
    if not master:
        raise SubmitError("no Spark master: pass --master URL, set SPARK_MASTER, "
                          "or set spark.master in the config")
    return master


def check_deploy_mode(master: str, mode: str) -> None:
    """Reject combinations spark-submit cannot run for a Python application."""
    if mode != "cluster":
        return
    if master.startswith("local"):
        raise SubmitError("--deploy-mode cluster needs a cluster manager, not a local master")
    if master.startswith("spark://"):
        raise SubmitError(
            "Spark standalone does not support cluster deploy mode for Python applications; "
            "use --deploy-mode client (the driver runs here, executors on the cluster)"
        )


def check_java() -> str:
    """Path of a working `java` ($JAVA_HOME/bin/java, else on PATH)."""
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    hint = "install Java 17 or 21 and put `java` on PATH or set JAVA_HOME"
    if not java or not os.access(java, os.X_OK):
        where = f"JAVA_HOME={home} has no bin/java" if home else "no `java` on PATH"
        raise SubmitError(f"Java not found ({where}); {hint}")
    try:
        subprocess.run([java, "-version"], check=True, capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        raise SubmitError(f"{java} -version failed ({exc}); {hint}") from exc
    return java


def master_endpoints(master: str) -> list[tuple[str, int]]:
    """Host and port to probe for `master` (none for local masters)."""
    if master.startswith("local"):
        return []
    if master.startswith("spark://"):
        hosts = master.removeprefix("spark://").split(",")
        return [parse_host_port(h, 7077, master) for h in hosts]
    if master.startswith("k8s://"):
        url = urlparse(master.removeprefix("k8s://"))
        if not url.hostname:
            raise SubmitError(f"cannot read a host from master {master!r}")
        return [(url.hostname, url.port or (80 if url.scheme == "http" else 443))]
    if master == "yarn":
        return [yarn_resource_manager()]
    raise SubmitError(f"unsupported master {master!r}: use local[N], spark://HOST:PORT, "
                      "yarn or k8s://https://HOST:PORT")


def parse_host_port(text: str, default_port: int, master: str) -> tuple[str, int]:
    host, _, port = text.partition(":")
    if not host or (port and not port.isdigit()):
        raise SubmitError(f"cannot read host:port from master {master!r}")
    return host, int(port) if port else default_port


def yarn_resource_manager() -> tuple[str, int]:
    """The ResourceManager address from yarn-site.xml in $HADOOP_CONF_DIR / $YARN_CONF_DIR."""
    import xml.etree.ElementTree as ET

    dirs = [os.environ[k] for k in ("YARN_CONF_DIR", "HADOOP_CONF_DIR") if os.environ.get(k)]
    if not dirs:
        raise SubmitError("master yarn needs HADOOP_CONF_DIR or YARN_CONF_DIR to point at the "
                          "cluster's Hadoop configuration")
    props: dict[str, str] = {}
    for folder in dirs:
        site = Path(folder) / "yarn-site.xml"
        if site.is_file():
            for prop in ET.parse(site).getroot().iter("property"):
                props[prop.findtext("name", "")] = prop.findtext("value", "")
    address = props.get("yarn.resourcemanager.address")
    if address:
        return parse_host_port(address, 8032, "yarn")
    return props.get("yarn.resourcemanager.hostname", "0.0.0.0"), 8032


def check_reachable(master: str, timeout: float = 3.0) -> None:
    """Raise unless at least one endpoint of `master` accepts a TCP connection."""
    endpoints = master_endpoints(master)
    errors = []
    for host, port in endpoints:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return
        except OSError as exc:
            errors.append(f"{host}:{port} ({exc})")
    if endpoints:
        raise SubmitError(f"master {master} is not reachable: {'; '.join(errors)}")


def spark_submit_path() -> str:
    """$SPARK_HOME/bin/spark-submit, else the one shipped inside the pyspark package."""
    home = os.environ.get("SPARK_HOME")
    if home:
        path = Path(home) / "bin" / "spark-submit"
    else:
        import pyspark

        path = Path(pyspark.__file__).parent / "bin" / "spark-submit"
    if not path.is_file():
        raise SubmitError(f"spark-submit not found at {path}; set SPARK_HOME")
    return str(path)


def digest(parts: Iterator[bytes]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()[:16]


def source_files(root: Path) -> list[Path]:
    """pyproject.toml and every file of the package (no caches)."""
    lib = sorted(p for p in (root / "lib" / "querylens").rglob("*")
                 if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")
    return [root / "pyproject.toml", *lib]


def package_key(root: Path = ROOT) -> str:
    """Hash of pyproject.toml and the package sources: the cache key of the package zip."""
    files = source_files(root)
    return digest(x for p in files for x in (str(p.relative_to(root)).encode(), p.read_bytes()))


def site_packages(venv: Path) -> Path:
    found = sorted((venv / "lib").glob("python3*/site-packages"))
    if not found:
        raise SubmitError(f"{venv} is not a virtualenv (no lib/python3*/site-packages)")
    return found[0]


def normalize_name(name: str) -> str:
    """A distribution name in PEP 503 form (lower case, runs of -_. as one -)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_versions(lock: Path) -> dict[str, str]:
    """name -> version of every `name==version` pin in a lock file."""
    found = {}
    for line in lock.read_text().splitlines():
        match = PIN.match(line)
        if match:
            found[normalize_name(match[1])] = match[2]
    return found


def installed_versions(venv: Path) -> dict[str, str]:
    """name -> version of every distribution installed in `venv` but querylens."""
    found = {}
    for info in site_packages(venv).glob("*.dist-info"):
        name, _, version = info.name.removesuffix(".dist-info").partition("-")
        if not is_excluded_package(name):
            found[normalize_name(name)] = version
    return found


def lock_mismatches(venv: Path, lock: Path) -> list[str]:
    """How `venv` departs from `lock`: distributions at another version, or not locked (a
    venv holding part of the lock is fine)."""
    from packaging.version import Version

    locked = locked_versions(lock)
    out = []
    for name, version in sorted(installed_versions(venv).items()):
        if name not in locked:
            out.append(f"{name} {version} is not in the lock")
        elif Version(version) != Version(locked[name]):
            out.append(f"{name} {version} installed, {locked[name]} locked")
    return out


def check_env_lock(venv: Path, root: Path = ROOT) -> None:
    """Refuse to pack a venv that is not the lock's (`lock_mismatches`)."""
    lock = root / LOCK
    if not lock.is_file():
        raise SubmitError(f"no lock file at {lock}; run `make lock`")
    bad = lock_mismatches(venv, lock)
    if bad:
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        raise SubmitError(f"the environment {venv} is not the lock's ({LOCK}): "
                          f"{'; '.join(bad[:5])}{more}; run `make` to install the lock, or "
                          f"set QUERYLENS_VENV to a venv installed from it")


def env_key(venv: Path, compress: int, root: Path = ROOT) -> str:
    """Hash of pyproject.toml, the lock, the venv's Python and installed distributions, the
    packing."""
    dists = sorted(p.name for p in site_packages(venv).glob("*.dist-info")
                   if not is_excluded_package(p.name))
    cfg = (venv / "pyvenv.cfg").read_bytes() if (venv / "pyvenv.cfg").is_file() else b""
    lock = root / LOCK
    return digest(iter([(root / "pyproject.toml").read_bytes(), cfg,
                        lock.read_bytes() if lock.is_file() else b"",
                        "\n".join(dists).encode(), str(compress).encode(),
                        os.environ.get("QUERYLENS_PYTHON_PREFIX", "").encode()]))


def is_excluded_package(name: str) -> bool:
    return name.startswith(PACKAGE_EXCLUDES)


def build_package(root: Path, out_dir: Path) -> Artefact:
    """The querylens wheel for a snapshot of the sources, as a zip for --py-files (cached)."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        (src / "lib").mkdir(parents=True)
        shutil.copy2(root / "pyproject.toml", src / "pyproject.toml")
        shutil.copytree(root / "lib" / "querylens", src / "lib" / "querylens",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        target = out_dir / f"querylens-{package_key(src)}.zip"
        if target.is_file():
            return Artefact(target, True, time.perf_counter() - start)
        wheels = Path(tmp) / "wheels"
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
               "--quiet", "--wheel-dir", str(wheels), str(src)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise SubmitError(f"building the querylens wheel failed:\n{done.stderr[-2000:]}")
        (wheel,) = wheels.glob("querylens-*.whl")
        with zipfile.ZipFile(wheel) as zf:
            if "querylens/__init__.py" not in zf.namelist():
                raise SubmitError("the wheel lacks querylens/__init__.py; zip imports "
                                  "(--py-files) need a regular package")
        out_dir.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        shutil.copy2(wheel, partial)
        shutil.copy2(wheel, out_dir / wheel.name)
        partial.rename(target)
    return Artefact(target, False, time.perf_counter() - start)


def env_members(venv: Path) -> Iterator[tuple[Path, str]]:
    """(path, name in archive) of every venv file executors need: no querylens, no caches."""
    site = site_packages(venv)
    for folder, dirs, files in os.walk(venv):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not skip_dir(here / d, site))
        for name in sorted(files):
            path = here / name
            rel = path.relative_to(venv)
            if name.endswith((".pyc", ".pyo")) or (here == venv / "bin" and
                                                   name.startswith("activate")):
                continue
            if here == site and (is_excluded_package(name) or name.endswith(".egg-link")):
                continue
            yield path, str(rel)
        for d in dirs:
            if (here / d).is_symlink():
                yield here / d, str((here / d).relative_to(venv))


def skip_dir(path: Path, site: Path) -> bool:
    """Caches, querylens itself, and pyspark's jars (executors use the cluster's Spark)."""
    if path.name == "__pycache__":
        return True
    if path.parent == site and is_excluded_package(path.name):
        return True
    return path.parent == site / "pyspark" and path.name in ("jars", "examples")


def pack_env(venv: Path, out_dir: Path, compress: int = 1) -> Artefact:
    """The venv as `env-KEY.tar.gz` (or `.tar` when compress=0), cached by `env_key`."""
    if not (venv / "bin" / "python").exists():
        raise SubmitError(f"no virtualenv to pack at {venv} (no bin/python); set QUERYLENS_VENV "
                          "or QUERYLENS_NODE_PYTHON")
    suffix = ".tar.gz" if compress else ".tar"
    target = out_dir / f"env-{env_key(venv, compress)}{suffix}"
    if target.is_file():
        return Artefact(target, True, 0.0)
    start = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    partial = out_dir / (target.name + ".partial")
    prefix = os.environ.get("QUERYLENS_PYTHON_PREFIX")
    mode = "w:gz" if compress else "w"
    kwargs = {"compresslevel": compress} if compress else {}
    with tarfile.open(partial, mode, **kwargs) as tar:  # type: ignore[call-overload]
        for path, name in env_members(venv):
            info = tar.gettarinfo(str(path), arcname=name)
            if prefix and info.issym() and name.startswith("bin/python"):
                info.linkname = rewrite_python_link(info.linkname, prefix)
            if info.isfile():
                if prefix and name == "pyvenv.cfg":
                    data = rewrite_pyvenv_cfg(path.read_text(), prefix).encode()
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                    continue
                with open(path, "rb") as fh:
                    tar.addfile(info, fh)
            else:
                tar.addfile(info)
    for old in out_dir.glob("env-*.tar*"):
        if old != partial:
            old.unlink()
    partial.rename(target)
    return Artefact(target, False, time.perf_counter() - start)


def rewrite_python_link(link: str, prefix: str) -> str:
    """Point an absolute `bin/python` link at the same interpreter under `prefix`."""
    return str(Path(prefix) / "bin" / Path(link).name) if os.path.isabs(link) else link


def rewrite_pyvenv_cfg(text: str, prefix: str) -> str:
    lines = [f"home = {Path(prefix) / 'bin'}" if line.split("=")[0].strip() == "home" else line
             for line in text.splitlines()]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Plan:
    """Everything a submit does, printable before it runs."""

    command: list[str]
    master: str
    deploy_mode: str
    config: str | None
    package: Artefact | None
    env: Artefact | None
    ships_env: bool


def spark_conf_args(config: Config, args: SubmitArgs) -> list[str]:
    """--conf pairs: the config's spark.conf plus which Python the driver and executors run."""
    conf = {"spark.app.name": f"{config.spark.app_name}-{args.job}", **config.spark.conf}
    conf["spark.pyspark.python"] = args.node_python or ENV_PYTHON
    if args.deploy_mode == "client":
        conf["spark.pyspark.driver.python"] = sys.executable
    out: list[str] = []
    for key, value in conf.items():
        out += ["--conf", f"{key}={value}"]
    return out


def plan_submit(args: SubmitArgs, build_dir: Path, root: Path = ROOT) -> Plan:
    """Check everything, build (or reuse) the artefacts and compose the spark-submit command."""
    script = job_script(args.job, root)
    config = load_submit_config(args)
    master = resolve_master(args, config)
    check_deploy_mode(master, args.deploy_mode)
    check_java()
    check_reachable(master)
    spark_submit = spark_submit_path()
    compress = env_compress()
    package = env = None
    if not args.dry_run:
        package = build_package(root, build_dir)
        if not args.node_python:
            venv = Path(os.environ.get("QUERYLENS_VENV", sys.prefix))
            check_env_lock(venv, root)
            env = pack_env(venv, build_dir, compress)
    zip_path = package.path if package else build_dir / f"querylens-{package_key(root)}.zip"
    command = [spark_submit, "--master", master, "--deploy-mode", args.deploy_mode,
               "--py-files", str(zip_path)]
    if not args.node_python:
        suffix = ".tar.gz" if compress else ".tar"
        env_path = env.path if env else build_dir / f"env-KEY{suffix}"
        command += ["--archives", f"{env_path}#{ENV_ALIAS}"]
    job_conf: list[str] = []
    files = discovery_scripts(config, root)
    if args.conf:
        conf_path = Path(args.conf).resolve()
        files.insert(0, conf_path)
        job_conf = ["--conf", conf_path.name if args.deploy_mode == "cluster" else str(conf_path)]
    if files:
        command += ["--files", ",".join(map(str, files))]
    command += spark_conf_args(config, args)
    command += args.extra
    command += [str(script), *job_conf, "--set", f"spark.master={master}"]
    for item in args.sets:
        command += ["--set", item]
    return Plan(command, master, args.deploy_mode, args.conf, package, env,
                not args.node_python)


def discovery_scripts(config: Config, root: Path = ROOT) -> list[Path]:
    """conf/ scripts that `*.discoveryScript` settings name as ./NAME, to ship with --files."""
    found = []
    for key, value in config.spark.conf.items():
        if key.endswith(".discoveryScript") and value.startswith("./"):
            script = root / "conf" / value.removeprefix("./")
            if not script.is_file():
                raise SubmitError(f"spark.conf {key}={value}: no {script} to ship")
            if script not in found:
                found.append(script)
    return found


def env_compress() -> int:
    raw = os.environ.get("QUERYLENS_ENV_COMPRESS", "1")
    if not raw.isdigit() or not 0 <= int(raw) <= 9:
        raise SubmitError(f"QUERYLENS_ENV_COMPRESS must be 0-9, got {raw!r}")
    return int(raw)


def describe(plan: Plan) -> str:
    """What the submit does, for printing before it runs."""
    def artefact(a: Artefact | None, what: str) -> str:
        if a is None:
            return what
        size = a.path.stat().st_size / 2**20
        how = "cached" if a.cached else f"built in {a.seconds:.1f}s"
        return f"{a.path} ({size:,.1f} MiB, {how})"

    env_note = "not packed (dry run)" if plan.ships_env else "none: the nodes' own Python"
    lines = [
        f"querylens: submitting to {plan.master} (deploy mode {plan.deploy_mode})",
        f"  package      {artefact(plan.package, 'not built (dry run)')}",
        f"  environment  {artefact(plan.env, env_note)}",
        f"  config       {plan.config or 'built-in defaults'}",
        f"  command      {shlex.join(masked_command(plan.command))}",
    ]
    return "\n".join(lines)


def masked_command(command: list[str]) -> list[str]:
    """`command` as it may be printed: the values of `--conf` and `--set` settings that look
    secret, and credentials in any argument, masked (see `runtime.config.mask_secrets`)."""
    return [mask_assignment(arg) if i and command[i - 1] in ("--conf", "--set")
            else mask_value(arg) for i, arg in enumerate(command)]


def main(argv: list[str] | None = None) -> int:
    """Entry point of spark-submit.sh."""
    argv = list(sys.argv[1:] if argv is None else argv)
    build_dir = Path(os.environ.get("QUERYLENS_BUILD_DIR", ROOT / "build" / "spark-submit"))
    start = time.perf_counter()
    try:
        args = parse_args(argv)
        plan = plan_submit(args, build_dir)
    except SubmitError as exc:
        print(f"spark-submit.sh: error: {exc}", file=sys.stderr)
        return 2
    print(describe(plan), flush=True)
    if args.dry_run:
        return 0
    prepared = time.perf_counter() - start
    rc = subprocess.run(plan.command).returncode
    total = time.perf_counter() - start
    print(f"querylens: spark-submit exited {rc}; prepare {prepared:.1f}s, "
          f"total {total:.1f}s", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())

"""What the deployment tests share: readers of the recipes in deploy/ (YAML, Dockerfiles) and the
``dask scheduler``/``dask worker`` commands the loopback tests run, which test_deploy.py compares
with the commands of the images, compose, Kubernetes and Slurm recipes."""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKER = DEPLOY / "docker"
K8S = DEPLOY / "k8s"
SLURM = DEPLOY / "slurm"
DOCKERFILES = {"cpu": DOCKER / "Dockerfile.cpu", "gpu": DOCKER / "Dockerfile.gpu"}
TLS_KEYS = ("DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION", "DASK_DISTRIBUTED__COMM__TLS__CA_FILE",
            *(f"DASK_DISTRIBUTED__COMM__TLS__{role}__{part}" for role in ("SCHEDULER", "WORKER", "CLIENT")
              for part in ("CERT", "KEY")))
JOB_IN_CONTAINERS = "/jobs/landcover-kmeans.yaml"


# --------------------------------------------------------------------------- readers (shared)


def yaml_docs(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


@lru_cache
def compose_config() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def k8s_docs() -> list[tuple[Path, dict]]:
    return [(p, d) for p in sorted(K8S.glob("*.yaml")) for d in yaml_docs(p)]


def k8s_doc(kind: str, name: str | None = None) -> dict:
    found = [d for _, d in k8s_docs() if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: comments dropped, continuation lines joined."""
    out, buf = [], ""
    for line in path.read_text().splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):  # comment inside a continued instruction
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        buf += line
        instr, _, rest = buf.strip().partition(" ")
        out.append((instr.upper(), rest.strip()))
        buf = ""
    assert not buf, f"{path}: dangling continuation line"
    return out


def exec_form(text: str) -> list[str]:
    value = json.loads(text)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), text
    return value


def dockerfile_command(path: Path) -> list[str]:
    """The command a container of this image runs: ENTRYPOINT + CMD (exec form)."""
    ins = dockerfile_instructions(path)
    entry = [exec_form(r) for i, r in ins if i == "ENTRYPOINT"]
    cmd = [exec_form(r) for i, r in ins if i == "CMD"]
    return (entry[-1] if entry else []) + (cmd[-1] if cmd else [])


def dockerfile_healthcheck(path: Path) -> list[str]:
    (rest,) = [r for i, r in dockerfile_instructions(path) if i == "HEALTHCHECK"]
    opts, sep, cmd = rest.partition("CMD ")
    assert sep and all(o.startswith("--") for o in opts.split()), rest
    return exec_form(cmd)


def dockerfile_env(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for instr, rest in dockerfile_instructions(path):
        if instr == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                env[key] = value
    return env


# --------------------------------------------------------------------------- dask commands


#: Options that say where and how a process listens or finds its peers (host, ports, TLS files,
#: scheduler address or file, worker name, memory of its slot); they differ between a container,
#: a Slurm task and a loopback test. Everything else must be the same everywhere.
PLACEMENT = {
    "scheduler": {"host", "port", "protocol", "interface", "scheduler_file", "dashboard", "dashboard_address",
                  "tls_ca_file", "tls_cert", "tls_key", "pid_file"},
    "worker": {"scheduler", "scheduler_file", "host", "interface", "protocol", "listen_address",
               "contact_address", "worker_port", "nanny_port", "dashboard", "dashboard_address", "name",
               "tls_ca_file", "tls_cert", "tls_key", "local_directory", "memory_limit", "pid_file"},
}


def dask_cli(argv: list[str]) -> tuple[str, dict[str, Any]]:
    """Parse ``dask scheduler|worker ...`` with the installed distributed's own CLI definition
    (unknown options and bad values raise): (role, parameters)."""
    from distributed.cli import dask_scheduler, dask_worker

    assert Path(argv[0]).name == "dask", argv
    role, args = argv[1], list(argv[2:])
    command = {"scheduler": dask_scheduler.main, "worker": dask_worker.main}[role]
    params = dict(command.make_context(f"dask {role}", args).params)
    assert params.get("preload_argv", ()) == (), f"stray arguments: {params['preload_argv']}"
    return role, params


def canonical(argv: list[str]) -> tuple[str, dict[str, Any]]:
    role, params = dask_cli(argv)
    return role, {k: v for k, v in params.items() if k not in PLACEMENT[role]}


def dashboard_port(params: dict[str, Any]) -> int:
    return int(str(params["dashboard_address"]).rsplit(":", 1)[-1])


def loopback_commands() -> dict[str, list[str]]:
    return {"scheduler": scheduler_command(Path("scheduler.json")),
            "cpu": worker_command("tcp://127.0.0.1:1234"),
            "gpu": worker_command("tcp://127.0.0.1:1234", gpu=True)}


# --------------------------------------------------------------------------- loopback commands


DASK = Path(sys.executable).parent / "dask"


@dataclass(frozen=True)
class TLSFiles:
    """The files deploy/tls/make-certs.sh writes."""

    dir: Path

    def cert(self, role: str) -> str:
        return str(self.dir / f"{role}.pem")

    def key(self, role: str) -> str:
        return str(self.dir / f"{role}-key.pem")

    @property
    def ca(self) -> str:
        return str(self.dir / "ca.pem")

    def flags(self, role: str) -> list[str]:
        return ["--tls-ca-file", self.ca, "--tls-cert", self.cert(role), "--tls-key", self.key(role)]


def scheduler_command(scheduler_file: Path, tls: TLSFiles | None = None) -> list[str]:
    """``dask scheduler`` on loopback (the images run it with ``--protocol tls --port 8786``)."""
    cmd = [str(DASK), "scheduler", "--host", "127.0.0.1", "--port", "0",
           "--scheduler-file", str(scheduler_file), "--dashboard-address", "127.0.0.1:0"]
    if tls:
        cmd += ["--protocol", "tls", *tls.flags("scheduler")]
    return cmd


def worker_command(address: str, gpu: bool = False, tls: TLSFiles | None = None) -> list[str]:
    """``dask worker`` as the CPU image (``gpu=False``) or the GPU image runs it, on loopback."""
    cmd = [str(DASK), "worker", address, "--nthreads", "1", "--nworkers", "1", "--host", "127.0.0.1",
           "--no-dashboard"]
    if gpu:
        cmd += ["--resources", "GPU=1"]
    if tls:
        cmd += tls.flags("worker")
    return cmd

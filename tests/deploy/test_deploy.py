"""The deployment recipes in deploy/: static checks that need no Docker, Kubernetes or Slurm.

Every YAML file parses; the compose file and the Kubernetes manifests are validated against JSON
schemas written down here for the fields the recipes use (unknown keys are errors, so a typo
fails); the Dockerfiles are parsed; every ``dask scheduler``/``dask worker`` command of the
images, compose, Kubernetes and Slurm recipes is parsed with the locked ``distributed``'s own CLI
and compared with the commands tests/deploy/test_loopback_cluster.py runs a real job through; the job
file the deployments run parses with ``geoseg.run.jobspec``; ``make-certs.sh`` makes certificates
that Dask accepts and that complete a mutual-TLS handshake.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import shutil
import ssl
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import jsonschema
import pytest
import yaml

from geoseg.run.jobspec import parse_job
from tests.deploy.recipes import (
    DEPLOY,
    DOCKER,
    DOCKERFILES,
    JOB_IN_CONTAINERS,
    K8S,
    ROOT,
    SLURM,
    TLS_KEYS,
    canonical,
    compose_config,
    dashboard_port,
    dask_cli,
    dockerfile_command,
    dockerfile_env,
    dockerfile_healthcheck,
    dockerfile_instructions,
    k8s_doc,
    k8s_docs,
    loopback_commands,
    yaml_docs,
)

# --------------------------------------------------------------------------- every YAML file


@pytest.mark.parametrize("path", sorted(p.relative_to(DEPLOY) for p in DEPLOY.rglob("*.y*ml")), ids=str)
def test_every_yaml_file_parses(path):
    docs = yaml_docs(DEPLOY / path)
    assert docs and all(isinstance(d, dict) for d in docs)


# --------------------------------------------------------------------------- Dockerfiles


PINNED_IMAGE = re.compile(r"^(?P<name>[a-z0-9][a-z0-9./_-]*):(?P<tag>[A-Za-z0-9][A-Za-z0-9._-]*)(@sha256:[0-9a-f]{64})?$")


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_dockerfile_basics(kind):
    path = DOCKERFILES[kind]
    ins = dockerfile_instructions(path)
    stages = set()
    for instr, rest in ins:
        if instr == "FROM":
            image, *alias = rest.split()
            m = PINNED_IMAGE.match(image)
            assert m, f"{image}: base images need an explicit tag"
            assert m["tag"] != "latest" and re.search(r"\d+\.\d+", m["tag"]), f"{image}: pin a versioned tag"
            if alias:
                assert alias[0].upper() == "AS"
                stages.add(alias[1])
        if instr == "COPY" and "--from=" in rest:
            assert rest.split("--from=")[1].split()[0] in stages
    # runs as an unprivileged user with a fixed numeric uid (Kubernetes runAsNonRoot can check it)
    users = [r for i, r in ins if i == "USER"]
    assert users, "no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) > 0, users[-1]
    # dependencies from the lock file, then geoseg itself without dependencies
    runs = [r for i, r in ins if i == "RUN"]
    copies = [r for i, r in ins if i == "COPY"]
    assert any(c.split()[0] == "deploy/requirements.lock" for c in copies)
    lock_dest = next(c.split()[-1] for c in copies if c.split()[0] == "deploy/requirements.lock")
    lock_run = next(i for i, r in enumerate(runs) if f"pip install -r {lock_dest}" in r)
    # build tools pinned, setuptools new enough for pyproject.toml's build-system
    pins = dict(re.findall(r"\b(pip|setuptools|wheel)==([\d.]+)", runs[lock_run]))
    assert set(pins) == {"pip", "setuptools", "wheel"}
    import tomllib

    from packaging.requirements import Requirement

    build = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    for req in map(Requirement, build):
        assert req.specifier.contains(pins[req.name]), (req, pins[req.name])
    geoseg_run = next(i for i, r in enumerate(runs) if "pip install --no-deps" in r)
    assert lock_run < geoseg_run
    # HEALTHCHECK: Dask's /health on the port this image's command serves HTTP on
    health = dockerfile_healthcheck(path)
    assert health[:2] == ["python", "-c"] and "/health" in health[2] and "GEOSEG_HEALTH_PORT" in health[2]
    role, params = dask_cli(dockerfile_command(path))
    assert role == "worker"
    assert int(dockerfile_env(path)["GEOSEG_HEALTH_PORT"]) == dashboard_port(params)
    assert params["scheduler"] == "tls://scheduler:8786"


def test_image_commands_are_the_loopback_commands():
    loop = loopback_commands()
    assert canonical(dockerfile_command(DOCKERFILES["cpu"])) == canonical(loop["cpu"])
    assert canonical(dockerfile_command(DOCKERFILES["gpu"])) == canonical(loop["gpu"])
    # and the GPU resource is the one geoseg annotates DeepLab tasks with (geoseg.run.workflow)
    assert canonical(loop["gpu"])[1]["resources"] == "GPU=1"


def test_images_share_the_python_of_the_lock():
    """Scheduler, workers and client must run one Python minor version (Dask pickles code): the
    GPU image copies the CPU image's interpreter, which is this environment's minor version."""
    cpu_from = [r for i, r in dockerfile_instructions(DOCKERFILES["cpu"]) if i == "FROM"]
    gpu_from = [r for i, r in dockerfile_instructions(DOCKERFILES["gpu"]) if i == "FROM"]
    (cpu_base,) = cpu_from
    python_stage = next(r for r in gpu_from if r.split()[0] == cpu_base)
    stage = python_stage.split()[-1]
    assert any(i == "COPY" and f"--from={stage} /usr/local/" in r for i, r in dockerfile_instructions(DOCKERFILES["gpu"]))
    assert gpu_from[-1].startswith("nvidia/cuda:") and "-runtime-" in gpu_from[-1]
    tag = cpu_base.split(":")[1]
    assert tag.startswith(f"{sys.version_info.major}.{sys.version_info.minor}."), (tag, sys.version)


def _pattern_regex(pattern: str) -> re.Pattern:
    """A .dockerignore pattern as a regex (Go filepath.Match: ``*`` and ``?`` stay within one path
    element, ``**`` spans any number of them)."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + "$")


def _ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore ``patterns`` keep ``path`` out of the build context: a pattern that
    matches a file or one of its parent folders applies; the last one that applies wins."""
    ignored = False
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pat in patterns:
        neg = pat.startswith("!")
        rx = _pattern_regex(pat.lstrip("!").strip("/"))
        if any(rx.match(p) for p in prefixes):
            ignored = not neg
    return ignored


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_dockerignore_lets_through_what_the_image_copies(kind):
    ignore = Path(f"{DOCKERFILES[kind]}.dockerignore")
    patterns = [ln.strip() for ln in ignore.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    for instr, rest in dockerfile_instructions(DOCKERFILES[kind]):
        if instr == "COPY" and "--from=" not in rest:
            for src in rest.split()[:-1]:
                files = [src] if (ROOT / src).is_file() else [
                    str(p.relative_to(ROOT)) for p in (ROOT / src).rglob("*.py")]
                assert files, src
                for f in files:
                    assert not _ignored(f, patterns), f"{f} is excluded from the build context"
    assert _ignored(".venv/bin/python", patterns) and _ignored("deploy/tls/certs/ca-key.pem", patterns)


def test_geoseg_builds_from_what_the_images_copy(tmp_path):
    """``pip install --no-deps`` in the images sees only pyproject.toml, README.md and geoseg/:
    a wheel built from just those holds the package."""
    src = tmp_path / "src"
    src.mkdir()
    copied = [r.split()[:-1] for i, r in dockerfile_instructions(DOCKERFILES["cpu"])
              if i == "COPY" and r.split()[-1].startswith("/opt/geoseg/src")]
    for sources in copied:
        for s in sources:
            if (ROOT / s).is_dir():
                shutil.copytree(ROOT / s, src / s, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(ROOT / s, src / s)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                           "--no-index", "-q", "-w", str(tmp_path / "wheel"), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (wheel,) = (tmp_path / "wheel").glob("geoseg-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "geoseg/run/workflow.py" in names and "geoseg/cli.py" in names
    assert any(n.endswith("entry_points.txt") for n in names)


def test_run_daily_runs_the_command_at_the_time_of_day(tmp_path):
    script = DOCKER / "run-daily.sh"
    if subprocess.run(["date", "-d", "today 01:00", "+%s"], capture_output=True).returncode:
        pytest.skip("needs GNU date")
    now = time.time()
    if now % 86400 > 86400 - 30:
        pytest.skip("too close to midnight UTC")
    at = time.strftime("%H:%M:%S", time.gmtime(now + 2))
    proc = subprocess.run(["sh", str(script), at, "sh", "-c", f"date +%s > {tmp_path}/ran; exit 3"],
                          env={"PATH": "/usr/bin:/bin", "TZ": "UTC", "RUN_DAILY_MAX_RUNS": "1"},
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 3, proc.stderr  # the command's status
    assert int((tmp_path / "ran").read_text()) >= int(now) + 1
    assert "next run" in proc.stderr
    bad = subprocess.run(["sh", str(script), "25:99", "true"], capture_output=True, text=True, timeout=10)
    assert bad.returncode == 2 and "not a time of day" in bad.stderr


# --------------------------------------------------------------------------- compose


def _obj(properties: dict, required: tuple = (), extra: bool = False) -> dict:
    schema = {"type": "object", "properties": properties, "additionalProperties": extra}
    if required:
        schema["required"] = list(required)
    return schema


STR = {"type": "string"}
STRLIST = {"type": "array", "items": STR}
INT = {"type": "integer", "minimum": 0}
BOOL = {"type": "boolean"}
DURATION = {"type": "string", "pattern": r"^([0-9]+(\.[0-9]+)?(h|m|s|ms|us|ns))+$"}

COMPOSE_SCHEMA = {
    "type": "object",
    "required": ["services"],
    "additionalProperties": False,
    "patternProperties": {"^x-": {}},
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]*$"},
        "volumes": {"type": "object", "additionalProperties": {"type": ["object", "null"]}},
        "services": {"type": "object", "minProperties": 1, "additionalProperties": _obj({
            "image": {"type": "string", "pattern": PINNED_IMAGE.pattern},
            "build": _obj({"context": STR, "dockerfile": STR}, required=("context", "dockerfile")),
            "init": BOOL,
            "restart": {"enum": ["no", "always", "on-failure", "unless-stopped"]},
            "command": STRLIST,
            "environment": {"type": "object", "additionalProperties": STR},
            "env_file": {"type": "array", "items": _obj({"path": STR, "required": BOOL}, required=("path",))},
            "volumes": {"type": "array", "items": {"type": "string", "pattern": r"^[^:]+:/[^:]*(:ro|:rw)?$"}},
            "ports": {"type": "array", "items": {"type": "string", "pattern": r"^(127\.0\.0\.1:)?\d+:\d+$"}},
            "cap_drop": STRLIST,
            "security_opt": STRLIST,
            "profiles": STRLIST,
            "depends_on": {"type": "object", "additionalProperties": _obj(
                {"condition": {"enum": ["service_started", "service_healthy", "service_completed_successfully"]}},
                required=("condition",))},
            "healthcheck": {"oneOf": [
                _obj({"test": {"type": "array", "prefixItems": [{"const": "CMD"}], "minItems": 2, "items": STR},
                      "interval": DURATION, "timeout": DURATION, "start_period": DURATION,
                      "retries": {"type": "integer", "minimum": 1}}, required=("test",)),
                _obj({"disable": {"const": True}}, required=("disable",)),
            ]},
            "deploy": _obj({
                "replicas": {"type": "integer", "minimum": 0},
                "resources": _obj({
                    "limits": _obj({"cpus": {"type": "string", "pattern": r"^\d+(\.\d+)?$"},
                                    "memory": {"type": "string", "pattern": r"^\d+[bkmgBKMG]$"}}),
                    "reservations": _obj({"devices": {"type": "array", "items": _obj({
                        "driver": STR, "count": {"type": ["integer", "string"]}, "capabilities": STRLIST},
                        required=("capabilities",))}}),
                }),
            }),
        }, required=("image", "command"))},
    },
}


def test_compose_file_matches_schema():
    jsonschema.Draft202012Validator(COMPOSE_SCHEMA).validate(compose_config())


def test_compose_services():
    c = compose_config()
    s = c["services"]
    assert set(s) == {"scheduler", "worker", "worker-gpu", "job"}
    assert s["worker"]["deploy"]["replicas"] == 2
    gpu = s["worker-gpu"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["count"] == 1 and "gpu" in device["capabilities"]
    assert gpu["profiles"] == ["gpu"]  # `--profile gpu` adds it; the rest runs on hosts without a GPU

    loop = loopback_commands()
    assert canonical(s["scheduler"]["command"]) == canonical(loop["scheduler"])
    assert canonical(s["worker"]["command"]) == canonical(loop["cpu"])
    assert canonical(gpu["command"]) == canonical(loop["gpu"])
    _, sched = dask_cli(s["scheduler"]["command"])
    assert sched["protocol"] == "tls" and sched["port"] == "8786"
    assert "127.0.0.1:8786:8786" in s["scheduler"]["ports"]  # published on loopback only

    for name in ("scheduler", "worker", "worker-gpu"):
        svc = s[name]
        _, params = dask_cli(svc["command"])
        if name != "scheduler":
            assert params["scheduler"] == "tls://scheduler:8786"
            assert svc["depends_on"]["scheduler"]["condition"] == "service_healthy"
        # the image's HEALTHCHECK, aimed at the port this service's command serves HTTP on
        dockerfile = DOCKERFILES["gpu" if name == "worker-gpu" else "cpu"]
        assert svc["healthcheck"]["test"] == ["CMD", *dockerfile_healthcheck(dockerfile)]
        assert int(svc["environment"]["GEOSEG_HEALTH_PORT"]) == dashboard_port(params)
        assert svc["image"].startswith("geoseg-gpu:" if name == "worker-gpu" else "geoseg-cpu:")
        assert (ROOT / svc["build"]["dockerfile"]) == dockerfile
        assert (DEPLOY / svc["build"]["context"]).resolve() == ROOT


def test_compose_scheduled_job():
    job = compose_config()["services"]["job"]
    run_daily, at, *command = job["command"]
    assert run_daily == "run-daily" and re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", at)
    assert command == ["geoseg", "run", JOB_IN_CONTAINERS, "--scheduler", "tls://scheduler:8786"]
    assert any(i == "COPY" and r.split() == ["deploy/docker/run-daily.sh", "/usr/local/bin/run-daily"]
               for i, r in dockerfile_instructions(DOCKERFILES["cpu"]))
    # the job file is mounted from deploy/jobs/ and parses
    (mount,) = [v for v in job["volumes"] if v.split(":")[1] == "/jobs"]
    host_dir = DEPLOY / mount.split(":")[0]
    assert_deployed_job((host_dir / Path(JOB_IN_CONTAINERS).name).read_text())
    assert job["healthcheck"] == {"disable": True}
    assert {"geoseg-data:/data"} <= set(job["volumes"])


def test_compose_runs_everything_unprivileged_with_tls():
    c = compose_config()
    for name, svc in c["services"].items():
        assert "user" not in svc, f"{name}: the images' unprivileged USER applies"
        assert svc["cap_drop"] == ["ALL"] and "no-new-privileges:true" in svc["security_opt"]
        env = svc["environment"]
        assert set(TLS_KEYS) <= set(env), f"{name}: TLS settings missing"
        assert env["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"] == "True"
        assert "./tls/certs:/certs:ro" in svc["volumes"] and "geoseg-data:/data" in svc["volumes"]
        addresses = [a for a in svc["command"] if "://" in a]
        assert all(a.startswith("tls://") for a in addresses), addresses
        # s3:// credentials from deploy/storage.env when it exists (example: storage.env.example)
        assert svc["env_file"] == [{"path": "./storage.env", "required": False}]
    assert (DEPLOY / "storage.env.example").exists()
    assert {"storage.env", "tls/certs/"} <= set((DEPLOY / ".gitignore").read_text().split())
    assert "geoseg-data" in c["volumes"]


def test_tls_settings_agree_everywhere():
    """compose's DASK_DISTRIBUTED__COMM__* variables, deploy/dask-tls.yaml (mounted in /etc/dask
    on Kubernetes) and the sbatch script's exports configure the same Dask settings."""
    import dask.config

    env = {k: v for k, v in compose_config()["x-tls-env"].items()}
    assert set(env) == set(TLS_KEYS)
    from_env = dask.config.collect_env(env)
    from_file = yaml.safe_load((DEPLOY / "dask-tls.yaml").read_text())
    keys = ["distributed.comm.require-encryption", "distributed.comm.tls.ca-file"] + [
        f"distributed.comm.tls.{r}.{p}" for r in ("scheduler", "worker", "client") for p in ("cert", "key")]
    for key in keys:
        with dask.config.set(from_env):
            a = dask.config.get(key)
        with dask.config.set(from_file):
            b = dask.config.get(key)
        assert a == b and a not in (None, ""), key
    assert dask.config.get("distributed.comm.require-encryption", config=from_file) is True
    sbatch_vars = set(re.findall(r"export (DASK_DISTRIBUTED__COMM__\w+)=", (SLURM / "geoseg.sbatch").read_text()))
    assert sbatch_vars == set(TLS_KEYS)


# --------------------------------------------------------------------------- Kubernetes


DNS_LABEL = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"}
PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
PORT_NAME = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]{0,13}[a-z0-9])?$"}
PORT_REF = {"anyOf": [PORT, PORT_NAME]}
QUANTITY = {"anyOf": [{"type": "string", "pattern": r"^\d+(\.\d+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?$"}, INT]}
LABELS = {"type": "object", "additionalProperties": STR}
METADATA = _obj({"name": DNS_LABEL, "namespace": DNS_LABEL, "labels": LABELS, "annotations": LABELS},
                required=("name",))
PROBE = _obj({"httpGet": _obj({"path": STR, "port": PORT_REF, "scheme": {"enum": ["HTTP", "HTTPS"]}},
                              required=("port",)),
              "initialDelaySeconds": INT, "periodSeconds": INT, "timeoutSeconds": INT,
              "failureThreshold": INT}, required=("httpGet",))
CONTAINER = _obj({
    "name": DNS_LABEL,
    "image": {"type": "string", "pattern": PINNED_IMAGE.pattern, "not": {"pattern": ":latest$"}},
    "imagePullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
    "command": STRLIST, "args": STRLIST,
    "envFrom": {"type": "array", "items": _obj({"secretRef": _obj({"name": DNS_LABEL, "optional": BOOL},
                                                                  required=("name",))})},
    "env": {"type": "array", "items": {"oneOf": [
        _obj({"name": STR, "value": STR}, required=("name", "value")),
        _obj({"name": STR, "valueFrom": _obj({"fieldRef": _obj({"fieldPath": STR}, required=("fieldPath",))})},
             required=("name", "valueFrom"))]}},
    "ports": {"type": "array", "items": _obj({"name": PORT_NAME, "containerPort": PORT,
                                              "protocol": {"enum": ["TCP", "UDP"]}}, required=("containerPort",))},
    "resources": _obj({"requests": {"type": "object", "additionalProperties": QUANTITY},
                       "limits": {"type": "object", "additionalProperties": QUANTITY}}),
    "readinessProbe": PROBE, "livenessProbe": PROBE,
    "securityContext": _obj({"allowPrivilegeEscalation": BOOL, "readOnlyRootFilesystem": BOOL,
                             "capabilities": _obj({"drop": STRLIST, "add": STRLIST})}),
    "volumeMounts": {"type": "array", "items": _obj({"name": DNS_LABEL, "mountPath": {"type": "string", "pattern": "^/"},
                                                     "readOnly": BOOL}, required=("name", "mountPath"))},
}, required=("name", "image"))
VOLUME = {"type": "object", "required": ["name"], "minProperties": 2, "maxProperties": 2, "additionalProperties": False,
          "properties": {
              "name": DNS_LABEL,
              "persistentVolumeClaim": _obj({"claimName": DNS_LABEL, "readOnly": BOOL}, required=("claimName",)),
              "secret": _obj({"secretName": DNS_LABEL, "defaultMode": {"type": "integer", "minimum": 0, "maximum": 0o777}},
                             required=("secretName",)),
              "configMap": _obj({"name": DNS_LABEL}, required=("name",))}}
POD_SPEC = _obj({
    "containers": {"type": "array", "minItems": 1, "items": CONTAINER},
    "volumes": {"type": "array", "items": VOLUME},
    "securityContext": _obj({"runAsNonRoot": BOOL, "runAsUser": INT, "runAsGroup": INT, "fsGroup": INT}),
    "restartPolicy": {"enum": ["Always", "OnFailure", "Never"]},
    "tolerations": {"type": "array", "items": _obj({"key": STR, "operator": {"enum": ["Exists", "Equal"]},
                                                    "value": STR, "effect": {"enum": ["NoSchedule", "NoExecute"]}})},
    "nodeSelector": LABELS,
}, required=("containers",))
DASK_WORKER = _obj({"replicas": INT, "metadata": _obj({"labels": LABELS, "annotations": LABELS}), "spec": POD_SPEC},
                   required=("spec",))


def _resource(api: str, kind: str, spec: dict | None, **more: dict) -> dict:
    props = {"apiVersion": {"const": api}, "kind": {"const": kind}, "metadata": METADATA, **more}
    required = ["apiVersion", "kind", "metadata"]
    if spec is not None:
        props["spec"] = spec
        required.append("spec")
    return {"type": "object", "properties": props, "required": required, "additionalProperties": False}


K8S_SCHEMAS = {
    # kubernetes.dask.org/v1, as in the Dask Kubernetes operator's CRDs (spec.worker / spec.scheduler
    # with a PodSpec, the scheduler Service's ServiceSpec; DaskWorkerGroup names its cluster).
    "DaskCluster": _resource("kubernetes.dask.org/v1", "DaskCluster", _obj({
        "idleTimeout": INT,
        "worker": DASK_WORKER,
        "scheduler": _obj({
            "metadata": _obj({"labels": LABELS, "annotations": LABELS}),
            "spec": POD_SPEC,
            "service": _obj({
                "type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
                "selector": LABELS,
                "ports": {"type": "array", "minItems": 1, "items": _obj(
                    {"name": PORT_NAME, "protocol": {"enum": ["TCP"]}, "port": PORT, "targetPort": PORT_REF},
                    required=("name", "port", "targetPort"))},
            }, required=("selector", "ports")),
        }, required=("spec", "service")),
    }, required=("scheduler", "worker"))),
    "DaskWorkerGroup": _resource("kubernetes.dask.org/v1", "DaskWorkerGroup",
                                 _obj({"cluster": DNS_LABEL, "worker": DASK_WORKER}, required=("cluster", "worker"))),
    "CronJob": _resource("batch/v1", "CronJob", _obj({
        "schedule": STR,
        "timeZone": STR,
        "concurrencyPolicy": {"enum": ["Allow", "Forbid", "Replace"]},
        "startingDeadlineSeconds": INT, "successfulJobsHistoryLimit": INT, "failedJobsHistoryLimit": INT,
        "suspend": BOOL,
        "jobTemplate": _obj({"spec": _obj({
            "backoffLimit": INT, "activeDeadlineSeconds": INT, "ttlSecondsAfterFinished": INT,
            "template": _obj({"metadata": _obj({"labels": LABELS, "annotations": LABELS}),
                              "spec": {"allOf": [POD_SPEC, {"required": ["restartPolicy"], "properties": {
                                  "restartPolicy": {"enum": ["OnFailure", "Never"]}}}]}}, required=("spec",)),
        }, required=("template",))}, required=("spec",)),
    }, required=("schedule", "jobTemplate"))),
    "ConfigMap": _resource("v1", "ConfigMap", None, data={"type": "object", "additionalProperties": STR}),
    "PersistentVolumeClaim": _resource("v1", "PersistentVolumeClaim", _obj({
        "accessModes": {"type": "array", "minItems": 1,
                        "items": {"enum": ["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"]}},
        "storageClassName": STR,
        "resources": _obj({"requests": _obj({"storage": QUANTITY}, required=("storage",))}, required=("requests",)),
    }, required=("accessModes", "resources"))),
}
KUSTOMIZATION_SCHEMA = {"type": "object", "additionalProperties": False, "required": ["apiVersion", "kind", "resources"],
                        "properties": {"apiVersion": {"const": "kustomize.config.k8s.io/v1beta1"},
                                       "kind": {"const": "Kustomization"}, "namespace": DNS_LABEL,
                                       "resources": STRLIST}}


def test_kubernetes_manifests_match_schemas():
    seen = set()
    for path, doc in k8s_docs():
        if path.name == "kustomization.yaml":
            jsonschema.Draft202012Validator(KUSTOMIZATION_SCHEMA).validate(doc)
            continue
        assert doc.get("kind") in K8S_SCHEMAS, f"{path.name}: no schema for {doc.get('kind')}"
        jsonschema.Draft202012Validator(K8S_SCHEMAS[doc["kind"]]).validate(doc)
        seen.add(doc["kind"])
    assert seen == set(K8S_SCHEMAS)


def test_kustomization_lists_every_manifest():
    (kust,) = yaml_docs(K8S / "kustomization.yaml")
    assert sorted(kust["resources"]) == sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def _pod_specs() -> list[tuple[str, dict]]:
    cluster = k8s_doc("DaskCluster")
    gpu = k8s_doc("DaskWorkerGroup")
    cron = k8s_doc("CronJob")
    return [("scheduler", cluster["spec"]["scheduler"]["spec"]), ("worker-cpu", cluster["spec"]["worker"]["spec"]),
            ("worker-gpu", gpu["spec"]["worker"]["spec"]),
            ("cronjob", cron["spec"]["jobTemplate"]["spec"]["template"]["spec"])]


def _expand(arg: str, container: dict) -> str:
    """Check that every $(VAR) is defined in the container's env (the operator adds DASK_WORKER_NAME)."""
    defined = {e["name"] for e in container.get("env", [])} | {"DASK_WORKER_NAME"}
    for var in re.findall(r"\$\((\w+)\)", arg):
        assert var in defined, f"$({var}) is not set in {container['name']}"
        if var == "POD_NAMESPACE":
            assert {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}} \
                in container["env"], container["name"]
    return arg


def scheduler_address_pattern() -> str:
    cluster = k8s_doc("DaskCluster")
    (port,) = [p["port"] for p in cluster["spec"]["scheduler"]["service"]["ports"] if p["name"] == "tcp-comm"]
    return f"tls://{cluster['metadata']['name']}-scheduler.$(POD_NAMESPACE).svc.cluster.local:{port}"


def test_kubernetes_dask_commands():
    loop = loopback_commands()
    address = scheduler_address_pattern()
    expected = {"scheduler": loop["scheduler"], "worker-cpu": loop["cpu"], "worker-gpu": loop["gpu"]}
    for name, pod in _pod_specs()[:3]:
        (container,) = pod["containers"]
        argv = [_expand(a, container) for a in container["args"]]
        assert "command" not in container  # args replace the image's CMD (the image has no ENTRYPOINT)
        assert canonical(argv) == canonical(expected[name]), name
        role, params = dask_cli(argv)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["http-dashboard"] == dashboard_port(params)
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert int(env["GEOSEG_HEALTH_PORT"]) == dashboard_port(params)
        for probe in ("readinessProbe", "livenessProbe"):
            if probe in container:
                assert container[probe]["httpGet"]["path"] == "/health"
                assert container[probe]["httpGet"]["port"] in ports
        if role == "scheduler":
            assert params["protocol"] == "tls" and int(params["port"]) == ports["tcp-comm"]
        else:
            assert params["scheduler"] == address
            assert {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}} in container["env"]


def test_kubernetes_gpu_workers():
    cluster = k8s_doc("DaskCluster")
    gpu = k8s_doc("DaskWorkerGroup")
    assert gpu["spec"]["cluster"] == cluster["metadata"]["name"]
    (container,) = gpu["spec"]["worker"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["image"].split("/")[-1].startswith("geoseg-gpu:")
    assert dask_cli(container["args"])[1]["resources"] == "GPU=1"
    (cpu,) = cluster["spec"]["worker"]["spec"]["containers"]
    assert "nvidia.com/gpu" not in str(cpu["resources"]) and dask_cli(cpu["args"])[1]["resources"] is None
    assert cpu["image"].split("/")[-1].startswith("geoseg-cpu:")


def test_kubernetes_pods_are_unprivileged_and_mount_what_they_name():
    uid = int([r for i, r in dockerfile_instructions(DOCKERFILES["cpu"]) if i == "USER"][-1].split(":")[0])
    claims = {d["metadata"]["name"] for _, d in k8s_docs() if d["kind"] == "PersistentVolumeClaim"}
    config_maps = {d["metadata"]["name"] for _, d in k8s_docs() if d["kind"] == "ConfigMap"}
    for name, pod in _pod_specs():
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == uid
        volumes = {v["name"]: v for v in pod["volumes"]}
        for container in pod["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert container["envFrom"] == [{"secretRef": {"name": "geoseg-object-storage", "optional": True}}]
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert set(mounts.values()) <= set(volumes), name
            assert volumes[mounts["/certs"]]["secret"]["secretName"] == "geoseg-dask-tls"
            assert volumes[mounts["/etc/dask"]]["configMap"]["name"] == "geoseg-dask-config"
            assert volumes[mounts["/data"]]["persistentVolumeClaim"]["claimName"] in claims
        for v in volumes.values():
            if "configMap" in v:
                assert v["configMap"]["name"] in config_maps
    (pvc,) = [d for _, d in k8s_docs() if d["kind"] == "PersistentVolumeClaim"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]  # every worker writes the same Zarr store
    assert "geoseg-dask-tls" in (DEPLOY / "README.md").read_text()  # how to create the Secret


CRON_FIELDS = [(0, 59, {}), (0, 23, {}), (1, 31, {}),
               (1, 12, {m: i + 1 for i, m in enumerate("JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split())}),
               (0, 7, {d: i for i, d in enumerate("SUN MON TUE WED THU FRI SAT".split())})]


def valid_cron(expr: str) -> bool:
    """A standard 5-field cron expression (what Kubernetes CronJob accepts, without macros)."""
    fields = expr.split()
    if len(fields) != 5:
        return False
    for text, (lo, hi, names) in zip(fields, CRON_FIELDS):
        for part in text.split(","):
            rng, _, step = part.partition("/")
            if step and not (step.isdigit() and int(step) > 0):
                return False
            if rng == "*":
                continue
            ends = rng.split("-")
            if len(ends) > 2:
                return False
            values = [names.get(e.upper(), int(e) if e.isdigit() else None) for e in ends]
            if any(v is None or not lo <= v <= hi for v in values) or (len(values) == 2 and values[0] > values[1]):
                return False
    return True


def test_cron_validator():
    assert valid_cron("0 2 * * *") and valid_cron("*/15 0-6 1,15 JAN-MAR mon-fri")
    for bad in ("0 2 * *", "60 2 * * *", "0 24 * * *", "0 2 0 * *", "0 2 * 13 *", "0 2 * * 8", "5-1 * * * *",
                "*/0 * * * *", "@daily", "a b c d e"):
        assert not valid_cron(bad), bad


def test_cronjob_runs_geoseg_against_the_cluster():
    cron = k8s_doc("CronJob")
    assert valid_cron(cron["spec"]["schedule"])
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    command = [_expand(a, container) for a in container["command"]]
    assert command == ["geoseg", "run", JOB_IN_CONTAINERS, "--scheduler", scheduler_address_pattern()]
    from geoseg.cli import build_parser

    args = build_parser().parse_args(command[1:])
    assert args.job == JOB_IN_CONTAINERS and args.scheduler.startswith("tls://")
    # the job file comes from the ConfigMap mounted at /jobs
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    config_map = k8s_doc("ConfigMap", volumes[mounts[str(Path(JOB_IN_CONTAINERS).parent)]]["configMap"]["name"])
    assert_deployed_job(config_map["data"][Path(JOB_IN_CONTAINERS).name])


def test_configmaps_are_copies_of_the_deploy_files():
    assert k8s_doc("ConfigMap", "geoseg-jobs")["data"] == {
        "landcover-kmeans.yaml": (DEPLOY / "jobs" / "landcover-kmeans.yaml").read_text()}
    assert k8s_doc("ConfigMap", "geoseg-dask-config")["data"] == {"dask-tls.yaml": (DEPLOY / "dask-tls.yaml").read_text()}


def assert_deployed_job(text: str) -> None:
    """The job the deployments run parses, uses the shared volume, and is workflows/landcover-kmeans.yaml."""
    job = parse_job(yaml.safe_load(text), "deployed job")
    reference = parse_job(yaml.safe_load((ROOT / "workflows" / "landcover-kmeans.yaml").read_text()))
    assert all(i.startswith("/data/") for i in job.inputs) and str(job.output).startswith("/data/")
    for key in ("name", "chunk_size", "method", "classes", "evaluate", "vectorize"):
        assert getattr(job, key) == getattr(reference, key), key
    assert [Path(i).name for i in job.inputs] == [Path(i).name for i in reference.inputs]


# --------------------------------------------------------------------------- Slurm


def sbatch_dask_commands() -> list[list[str]]:
    """The ``dask ...`` commands in deploy/slurm/geoseg.sbatch, shell variables as placeholders."""
    commands = []
    for line in (SLURM / "geoseg.sbatch").read_text().splitlines():
        tokens = shlex.split(line, comments=True)
        if "dask" in tokens and tokens[tokens.index("dask") + 1:][:1] in (["scheduler"], ["worker"]):
            argv = [t for t in tokens[tokens.index("dask"):] if t != "&" and not t.startswith("${net[@]")]
            commands.append([t if "$" not in t else "PLACEHOLDER" for t in argv])
    return commands


def test_sbatch_script():
    text = (SLURM / "geoseg.sbatch").read_text()
    subprocess.run(["bash", "-n", str(SLURM / "geoseg.sbatch")], check=True)
    directives = dict(re.findall(r"^#SBATCH --([\w-]+)=(\S+)", text, re.MULTILINE))
    assert {"ntasks", "cpus-per-task", "mem-per-cpu", "time"} <= set(directives)
    commands = sbatch_dask_commands()
    roles = [c[1] for c in commands]
    assert roles == ["scheduler", "worker", "worker"]
    loop = loopback_commands()
    assert canonical(commands[0]) == canonical(loop["scheduler"])
    assert canonical(commands[1]) == canonical(loop["gpu"])  # the GEOSEG_GPU=1 branch
    assert canonical(commands[2]) == canonical(loop["cpu"])
    assert re.search(r'^geoseg run "\$job" --scheduler "\$address"', text, re.MULTILINE)


def load_jobqueue_recipe():
    spec = importlib.util.spec_from_file_location("geoseg_slurm_cluster", SLURM / "cluster.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: Keyword arguments dask_jobqueue.SLURMCluster (>= 0.8) accepts (SLURMJob, Job and JobQueueCluster).
SLURM_CLUSTER_KWARGS = {
    "queue", "account", "walltime", "job_cpu", "job_mem", "job_extra_directives", "job_directives_skip",
    "job_script_prologue", "cores", "memory", "processes", "nanny", "interface", "death_timeout",
    "local_directory", "worker_extra_args", "log_directory", "shebang", "python", "job_name", "config_name",
    "n_workers", "security", "shared_temp_directory", "silence_logs", "name", "asynchronous",
    "scheduler_options", "scheduler_cls", "protocol", "loop",
}


def test_jobqueue_recipe_profiles(tmp_path):
    recipe = load_jobqueue_recipe()
    try:
        import inspect

        from dask_jobqueue import SLURMCluster  # noqa: F401 - used when installed
        from dask_jobqueue.core import Job, JobQueueCluster
        from dask_jobqueue.slurm import SLURMJob

        accepted = set()
        for f in (SLURMJob.__init__, Job.__init__, JobQueueCluster.__init__):
            accepted |= set(inspect.signature(f).parameters)
    except ImportError:
        accepted = SLURM_CLUSTER_KWARGS
    cpu = recipe.cluster_kwargs("cpu", partition="compute", account="proj")
    gpu = recipe.cluster_kwargs("gpu", partition="gpu", security=object())
    for kw in (cpu, gpu):
        assert set(kw) <= accepted, set(kw) - accepted
        assert {"cores", "memory", "walltime"} <= set(kw) and re.fullmatch(r"\d+:\d\d:\d\d", kw["walltime"])
    assert cpu["processes"] == cpu["cores"]  # one thread per worker process, as everywhere else
    assert cpu["queue"] == "compute" and cpu["account"] == "proj" and "--gres=gpu:1" not in cpu["job_extra_directives"]
    assert gpu["job_extra_directives"] == ["--gres=gpu:1"] and gpu["processes"] == 1
    assert gpu["worker_extra_args"] == ["--resources", "GPU=1"] and gpu["protocol"] == "tls://"
    # the extra worker arguments mean to dask worker what the GPU image's --resources means
    base = ["dask", "worker", "tcp://h:1", "--nthreads", "1"]
    assert dask_cli(base + gpu["worker_extra_args"])[1]["resources"] == canonical(loopback_commands()["gpu"])[1]["resources"]
    # TLS from make-certs.sh's files
    sec = recipe.tls_security(str(tmp_path))
    assert sec.require_encryption and sec.tls_worker_cert == str(tmp_path / "worker.pem")


def test_jobqueue_recipe_without_dask_jobqueue(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "dask_jobqueue", None)  # import fails
    assert load_jobqueue_recipe().main([str(tmp_path / "job.yaml")]) == 2
    assert "pip install" in capsys.readouterr().err


# --------------------------------------------------------------------------- TLS certificates


def _handshake(client_ctx: ssl.SSLContext, server_ctx: ssl.SSLContext) -> None:
    """A TLS handshake in memory between two contexts; raises ssl.SSLError when refused."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_side=False)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(50):
        done = 0
        for side in (client, server):
            try:
                side.do_handshake()
                done += 1
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if done == 2:
            client.write(b"ping")  # the session works both ways
            s_in.write(c_out.read())
            assert server.read(4) == b"ping"
            return
    raise AssertionError("handshake did not finish")


def make_certs(out: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(DEPLOY / "tls" / "make-certs.sh"), str(out)], capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin:/usr/local/bin", **env})


def security_for(d: Path):
    from distributed.security import Security

    return Security(
        tls_ca_file=str(d / "ca.pem"),
        **{f"tls_{role}_{part}": str(d / f"{role}{'-key' if part == 'key' else ''}.pem")
           for role in ("scheduler", "worker", "client") for part in ("cert", "key")},
        require_encryption=True,
    )


@pytest.mark.skipif(not shutil.which("openssl"), reason="openssl is not installed")
def test_make_certs_gives_certificates_dask_accepts(tmp_path):
    proc = make_certs(tmp_path / "certs")
    assert proc.returncode == 0, proc.stderr
    d = tmp_path / "certs"
    names = {p.name for p in d.iterdir()}
    assert names == {"ca.pem", "ca-key.pem"} | {f"{r}{s}.pem" for r in ("scheduler", "worker", "client")
                                                for s in ("", "-key")}
    assert (d / "worker-key.pem").stat().st_mode & 0o077 == 0  # private keys are private by default
    sec = security_for(d)
    scheduler_listen = sec.get_listen_args("scheduler")["ssl_context"]
    worker_listen = sec.get_listen_args("worker")["ssl_context"]
    # client -> scheduler, worker -> scheduler, worker -> worker, scheduler -> worker: mutual TLS
    _handshake(sec.get_connection_args("client")["ssl_context"], scheduler_listen)
    _handshake(sec.get_connection_args("worker")["ssl_context"], scheduler_listen)
    _handshake(sec.get_connection_args("worker")["ssl_context"], worker_listen)
    _handshake(sec.get_connection_args("scheduler")["ssl_context"], worker_listen)
    # a certificate from another CA is refused
    assert make_certs(tmp_path / "other").returncode == 0
    stranger = security_for(tmp_path / "other").get_connection_args("client")["ssl_context"]
    with pytest.raises(ssl.SSLError):
        _handshake(stranger, scheduler_listen)


@pytest.mark.skipif(not shutil.which("openssl"), reason="openssl is not installed")
def test_make_certs_keeps_an_existing_ca(tmp_path):
    assert make_certs(tmp_path, KEY_MODE="644").returncode == 0
    assert (tmp_path / "client-key.pem").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "ca-key.pem").stat().st_mode & 0o777 == 0o600
    ca = (tmp_path / "ca.pem").read_bytes()
    again = make_certs(tmp_path)
    assert again.returncode == 1 and "FORCE=1" in again.stderr
    assert (tmp_path / "ca.pem").read_bytes() == ca
    assert make_certs(tmp_path, FORCE="1").returncode == 0
    assert (tmp_path / "ca.pem").read_bytes() != ca


def test_images_and_slurm_start_with_geosegs_gdal_fence():
    """Workers are fenced before any job's plugin reaches them: the same switches as geoseg's strict trust."""
    from geoseg.io.opener import Trust, gdal_fence

    strict = gdal_fence(Trust())
    for path in DOCKERFILES.values():
        env = dockerfile_env(path)
        assert {k: env.get(k) for k in strict} == strict, path
    exported = dict(item.partition("=")[::2] for line in (SLURM / "geoseg.sbatch").read_text().splitlines()
                    if line.startswith("export ") for item in shlex.split(line)[1:] if "=" in item)
    assert {k: exported.get(k) for k in strict} == strict

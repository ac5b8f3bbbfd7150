"""Deployment as shipped: KubeRay manifests, the container image, the cluster launcher file, storage
URIs, the wheel (a non-editable install runs the smoke pipeline) and a real `ray job submit`.

The manifest checks read the pins from the repository (pyproject.toml's Ray, the Dockerfile's
Python tag, the runtime env file), so they fail when any of these drift apart."""
from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
OVERLAYS = ["cpu-dev", "gpu-prod"]


def _pins():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    ray = next(re.search(r"==([\d.]+)", d).group(1) for d in project["dependencies"] if d.startswith("ray["))
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    python_tag = re.search(r"^ARG PYTHON_TAG=(\S+)", dockerfile, re.M).group(1)
    return {"ray": ray, "python_tag": python_tag, "version": project["version"]}


PINS = _pins()
CPU_IMAGE = f"dcls:{PINS['version']}-ray{PINS['ray']}-{PINS['python_tag']}"


# --------------------------------------------------------------------------- manifests
def _render(overlay: str):
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the overlays cannot be rendered here")
    out = subprocess.run([kubectl, "kustomize", str(REPO / "k8s" / "overlays" / overlay)],
                         capture_output=True, text=True, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def _containers(pod_spec):
    return pod_spec["containers"]


def _cluster_pods(spec):
    yield "head", spec["headGroupSpec"]["template"]["spec"]
    for group in spec["workerGroupSpecs"]:
        yield group["groupName"], group["template"]["spec"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_a_cluster_a_pipeline_job_a_study_job_and_their_volume(overlay):
    docs = _render(overlay)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["PersistentVolumeClaim", "RayCluster", "RayJob", "RayJob"]
    by_kind = {d["kind"]: d for d in docs if d["kind"] != "RayJob"}
    jobs = {d["metadata"]["name"]: d for d in docs if d["kind"] == "RayJob"}
    assert sorted(jobs) == ["dcls-pipeline", "dcls-tune"]
    cluster, pvc = by_kind["RayCluster"], by_kind["PersistentVolumeClaim"]
    for doc in (cluster, *jobs.values()):
        assert doc["apiVersion"] == "ray.io/v1"
    # versions: rayVersion and every image tag follow pyproject's Ray pin and the Dockerfile's Python
    assert cluster["spec"]["rayVersion"] == PINS["ray"]
    images = {c["image"] for _, pod in _cluster_pods(cluster["spec"]) for c in _containers(pod)}
    assert images <= {CPU_IMAGE, CPU_IMAGE + "-gpu"} and CPU_IMAGE in images
    # the head runs no work; token auth; autoscaling bounds
    head = cluster["spec"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert cluster["spec"]["authOptions"]["mode"] == "token"
    assert cluster["spec"]["enableInTreeAutoscaling"] is True
    for group in cluster["spec"]["workerGroupSpecs"]:
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    # non-root, no privilege escalation, requests and limits, the shared volume mounted everywhere
    claim = pvc["metadata"]["name"]
    for name, pod in _cluster_pods(cluster["spec"]):
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert any(v.get("persistentVolumeClaim", {}).get("claimName") == claim for v in pod["volumes"]), name
        for c in _containers(pod):
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, name
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]) and c["resources"]["limits"], name
            assert any(m["mountPath"] == "/mnt/shared" for m in c["volumeMounts"]), name
    # GPU workers (gpu-prod keeps them): nvidia.com/gpu requested, the taint tolerated, the -gpu image
    gpu_groups = [g for g in cluster["spec"]["workerGroupSpecs"] if g["groupName"] == "gpu"]
    assert len(gpu_groups) == (1 if overlay == "gpu-prod" else 0)
    for group in gpu_groups:
        pod = group["template"]["spec"]
        assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
        for c in _containers(pod):
            assert c["resources"]["requests"]["nvidia.com/gpu"] == c["resources"]["limits"]["nvidia.com/gpu"]
            assert c["image"] == CPU_IMAGE + "-gpu"
    assert pvc["spec"]["accessModes"] == (["ReadWriteOnce"] if overlay == "cpu-dev" else ["ReadWriteMany"])
    # each job: its cluster is the RayCluster's spec (after the overlay's patches), shut down after it
    shared = (REPO / "cluster" / "runtime_env.yaml").read_text()
    for name, job in jobs.items():
        assert job["spec"]["rayClusterSpec"] == cluster["spec"], name
        assert job["spec"]["shutdownAfterJobFinishes"] is True and job["spec"]["ttlSecondsAfterFinished"] > 0, name
        submitter = job["spec"]["submitterPodTemplate"]["spec"]
        assert submitter["securityContext"]["runAsNonRoot"] is True, name
        assert {c["image"] for c in submitter["containers"]} == {CPU_IMAGE}, name
        # one runtime env: the RayJobs embed the very file `ray job submit --runtime-env` reads
        assert yaml.safe_load(job["spec"]["runtimeEnvYAML"]) == yaml.safe_load(shared), name


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("job_name,command", [("dcls-pipeline", "pipeline"), ("dcls-tune", "tune")])
def test_job_entrypoint_is_a_dcls_command_whose_overrides_load(overlay, job_name, command):
    from dcls_core.cli import build_parser, run_config

    job = next(d for d in _render(overlay) if d["kind"] == "RayJob" and d["metadata"]["name"] == job_name)
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[0] == "dcls"
    args = build_parser().parse_args(argv[1:])  # an existing subcommand
    assert args.command == command
    cfg = run_config(list(args.overrides))  # every override is a real setting with a valid value
    assert cfg.storage_path.startswith("/mnt/shared/")
    assert cfg.data.root.startswith("/mnt/shared/")
    if command == "tune":
        # the study's every dataset builds a trial config from the job's overrides and a point of the space
        from dcls_core.study import point_config
        from jobs.tune import study_overrides

        assert cfg.tune.space and cfg.tune.datasets
        point = {key: (spec.get("values") or [spec.get("low")])[0] for key, spec in cfg.tune.space.items()}
        base = list(cfg.tune.overrides) + study_overrides(list(args.overrides))
        for ds in cfg.tune.datasets:
            trial_cfg = point_config(base, ds, cfg.tune.dataset_overrides.get(ds, []), point, cfg.tune.seeds[0])
            assert trial_cfg.data.root.startswith("/mnt/shared/")


def test_runtime_env_is_one_file_and_pins_nothing_the_image_has():
    link = REPO / "cluster" / "runtime_env.yaml"
    assert link.resolve() == (REPO / "k8s" / "base" / "runtime_env.yaml").resolve()
    env = yaml.safe_load(link.read_text())
    assert "pip" not in env and "conda" not in env  # dependencies come from the image, never a second list
    assert env["env_vars"]["TOKENIZERS_PARALLELISM"] == "false"


# --------------------------------------------------------------------------- image and launcher
def test_dockerfile_builds_from_the_pinned_ray_image_and_installs_the_wheel_not_the_checkout():
    text = (REPO / "docker" / "Dockerfile").read_text()
    assert re.search(rf"^ARG RAY_VERSION={re.escape(PINS['ray'])}$", text, re.M)
    assert "FROM rayproject/ray:${RAY_VERSION}-${PYTHON_TAG}${RAY_VARIANT}" in text
    assert PINS["python_tag"] == "py%d%d" % sys.version_info[:2]  # the image's Python is the one tested here
    copied = re.findall(r"^COPY (?:--\S+ )*(.+?) \S+$", text, re.M)
    sources = [s for line in copied for s in line.split()]
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: not in the repository"
        assert f"!{source}" in ignore or f"!{source}/" in ignore, f"{source} is excluded by .dockerignore"
    assert "pip install --no-cache-dir ." in text and " -e " not in text  # non-editable
    assert "rm -rf /home/ray/dcls-src" in text  # the image does not depend on the copied sources
    assert "USER ray" in text.split("FROM", 1)[1].rsplit("RUN", 1)[0]
    for tag in (CPU_IMAGE, CPU_IMAGE + "-gpu"):
        assert f"-t {tag}" in text  # the build commands it documents make the tags the manifests use


def test_docker_image_builds_when_a_container_runtime_is_available(tmp_path):
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "info"], capture_output=True).returncode != 0:
        pytest.skip("no container runtime here: the Dockerfile is checked statically above")
    subprocess.run([docker, "build", "-f", "docker/Dockerfile", "-t", CPU_IMAGE, "."], cwd=REPO, check=True)
    out = subprocess.run([docker, "run", "--rm", CPU_IMAGE, "dcls", "pipeline", "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "pipeline" in out


def test_cluster_launcher_file_validates_against_rays_schema_and_uses_the_same_images():
    import jsonschema
    import ray

    config = yaml.safe_load((REPO / "cluster" / "aws.yaml").read_text())
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    assert config["docker"]["head_image"] == CPU_IMAGE
    assert config["docker"]["worker_image"] == CPU_IMAGE + "-gpu"
    assert config["available_node_types"][config["head_node_type"]]["resources"] == {"CPU": 0}
    assert "RAY_AUTH_MODE=token" in " ".join(config["head_start_ray_commands"])


# --------------------------------------------------------------------------- storage
def test_storage_uris_are_never_turned_into_local_folders():
    from dcls_core.config import ConfigError
    from dcls_core.storage import parse_location

    loc = parse_location("s3://bucket/runs/")
    assert loc.is_remote and loc.uri == "s3://bucket/runs" and loc.join("x").uri == "s3://bucket/runs/x"
    with pytest.raises(ValueError):
        loc.local_path()
    with pytest.raises(ConfigError, match=r"missing its '//'.*s3://bucket/runs"):
        parse_location("s3:/bucket/runs")  # what Path("s3://bucket/runs") would have made of it
    with pytest.raises(ConfigError, match="names no bucket"):
        parse_location("gs://")
    assert parse_location("file:///mnt/x").local_path() == Path("/mnt/x")
    assert not parse_location("runs/mine").is_remote


def test_a_uri_whose_filesystem_package_is_missing_fails_before_any_compute(tmp_path, capsys):
    pytest.importorskip("fsspec")
    from jobs import pipeline

    code = pipeline.main(["experiment=smoke", "storage_path=abfs://container/runs"])
    assert code == 2
    err = capsys.readouterr().err
    assert "storage_path=abfs://container/runs" in err and "pip install adlfs" in err
    assert not (Path.cwd() / "abfs:").exists()


def test_a_run_kept_on_a_uri_uploads_each_stage_and_a_resumed_run_downloads_instead_of_recomputing(tmp_path):
    fsspec = pytest.importorskip("fsspec")
    from dcls_core.artifacts import RunFolder
    from dcls_core.storage import Location, exists

    remote = Location("memory", f"bucket/{tmp_path.name}/run")  # fsspec's in-process filesystem
    calls = []

    def fn(folder: Path):
        calls.append(folder)
        (folder / "rows.txt").write_text("a\nb\n")
        (folder / "sub").mkdir()
        (folder / "sub" / "more.json").write_text("{}")
        return {"rows": 2}

    first = RunFolder(tmp_path / "copy1", remote=remote)
    out = first.stage("data", [], {"k": 1}, fn)
    assert len(calls) == 1 and exists(remote.join("stages", out.path.name, "_stage.json"))
    (first.root / "metrics.json").write_text('{"ok": true}')
    first.publish()
    assert exists(remote.join("metrics.json"))
    assert fsspec.filesystem("memory").cat(f"/bucket/{tmp_path.name}/run/metrics.json") == b'{"ok": true}'

    second = RunFolder(tmp_path / "copy2", remote=remote)  # another node / a resumed job: empty working copy
    again = second.stage("data", [], {"k": 1}, fn)
    assert len(calls) == 1 and again.skipped  # downloaded, not recomputed
    assert (again.path / "rows.txt").read_text() == "a\nb\n" and (again.path / "sub" / "more.json").exists()
    second.stage("data", [], {"k": 2}, fn)  # another config: computed
    assert len(calls) == 2


# --------------------------------------------------------------------------- the wheel
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.ray
def test_the_wheel_installed_into_a_fresh_venv_runs_the_smoke_pipeline_outside_the_checkout(tmp_path, data_root):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist),
                    str(REPO)], check=True, cwd=tmp_path)
    wheel = next(dist.glob("dcls-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"dcls_core/configs/{p.relative_to(REPO / 'configs').as_posix()}" for p in (REPO / "configs").rglob("*.yaml")}
    assert shipped <= names, f"configs missing from the wheel: {sorted(shipped - names)}"
    assert "jobs/pipeline.py" in names

    venv = tmp_path / "venv"
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # the dependencies come from this environment (no download); dcls itself only from the wheel
    Path(site, "_dcls_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True)
    where = subprocess.run([py, "-c", "import dcls_core, dcls_core.config as c; print(dcls_core.__file__); "
                                      "print(c.configs_dir())"], capture_output=True, text=True, check=True,
                           cwd=tmp_path).stdout.split()
    assert all(w.startswith(site) for w in where), where  # not the checkout

    env = dict(os.environ, PATH=f"{venv / 'bin'}:{os.environ['PATH']}")
    for var in ("PYTHONPATH", "RAY_ADDRESS"):
        env.pop(var, None)
    runs = tmp_path / "runs"
    proc = subprocess.run([venv / "bin" / "dcls", "pipeline", "experiment=smoke", f"storage_path={runs}",
                           f"data.root={data_root}", "ray.fit_workers={}"],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((runs / "smoke" / "metrics.json").read_text())
    assert {"raw", "no_augmentation", "augmented", "probe"} <= set(metrics)
    assert (runs / "smoke" / "report.md").exists()


# --------------------------------------------------------------------------- a real job submission
@pytest.mark.ray
def test_ray_job_submit_with_the_shared_runtime_env_runs_the_pipeline_on_a_token_auth_head(tmp_path, data_root):
    ray_bin = Path(sys.executable).parent / "ray"
    gcs, dashboard = _free_port(), _free_port()
    # this head's own token (as KubeRay's authOptions give one): nothing read from ~/.ray
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32),
               PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    for var in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH"):
        env.pop(var, None)
    temp = Path("/tmp") / f"ray-deploy-{os.getpid()}"  # short: Ray's socket paths have a length limit
    start = subprocess.run([ray_bin, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs}",
                            f"--dashboard-port={dashboard}", "--dashboard-host=127.0.0.1", "--num-cpus=4",
                            # the agent's fixed default ports (52365, ...) collide with any other Ray
                            # on the machine (another test's): the job agent then never comes up
                            *(f"--{name}={_free_port()}" for name in (
                                "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                "runtime-env-agent-port", "metrics-export-port", "ray-client-server-port")),
                            "--include-dashboard=true", f"--temp-dir={temp}", "--disable-usage-stats"],
                           capture_output=True, text=True, env=env, timeout=180)
    try:
        assert start.returncode == 0, start.stderr[-3000:]
        runs = tmp_path / "runs"
        submit = [ray_bin, "job", "submit", f"--address=http://127.0.0.1:{dashboard}", "--working-dir", ".",
                  "--runtime-env", "cluster/runtime_env.yaml", "--",
                  "dcls", "pipeline", "experiment=smoke", f"storage_path={runs}", f"data.root={data_root}"]
        began = time.time()
        while True:  # the head's job agent comes up a few seconds after `ray start` returns
            job = subprocess.run(submit, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
            log = job.stdout + job.stderr
            if "No available agent to submit job" not in log or time.time() - began > 90:
                break
            time.sleep(2)
        assert job.returncode == 0, log[-4000:]
        job_id = re.search(r"Job '(raysubmit_\w+)' submitted", log).group(1)
        status = subprocess.run([ray_bin, "job", "status", f"--address=http://127.0.0.1:{dashboard}", job_id],
                                capture_output=True, text=True, env=env, timeout=60)
        assert f"Job '{job_id}' succeeded" in status.stdout, status.stdout[-2000:]  # Ray's word for SUCCEEDED
        assert "Ray: cluster" in log  # the job joined the head, not a Ray of its own
        metrics = json.loads((runs / "smoke" / "metrics.json").read_text())
        assert {"raw", "no_augmentation", "augmented"} <= set(metrics)
        assert (runs / "smoke" / "pipeline.log").exists()
        assert time.time() - began < 600
    finally:
        _stop_head(temp)


def _stop_head(temp: Path) -> None:
    """Stop the processes of this head only (`ray stop` would stop every Ray on the machine, a
    Ray that another test of this session started included)."""
    for sig in ("TERM", "KILL"):
        subprocess.run(["pkill", f"-{sig}", "-f", str(temp)], capture_output=True)
        for _ in range(50):
            if subprocess.run(["pgrep", "-f", str(temp)], capture_output=True).returncode != 0:
                break
            time.sleep(0.2)
    shutil.rmtree(temp, ignore_errors=True)

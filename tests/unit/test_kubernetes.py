"""docker/k8s/: the Kubeflow TrainJob and PyTorchJob manifests carry what their controllers need
(no cluster here to apply them to): the fields each controller reads, torchrun -m train with
overrides our config accepts, the CUDA image, and the runs and data volumes every node shares
where the image reads them."""

import re
from pathlib import Path

import pytest
import yaml

from train import config

K8S = Path(__file__).resolve().parents[2] / "docker" / "k8s"
DOCKERFILE = (K8S.parent.parent / "Dockerfile.cuda").read_text()  # (the image the jobs run)


def load(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]


def trainjob_pod() -> tuple[dict, dict, dict]:
    """Trainer v2.2+: the pod spec patched into the runtime's "node" job (runtimePatches)."""
    (job,) = load("trainjob.yaml")
    (patch,) = job["spec"]["runtimePatches"]
    (replicated,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert replicated["name"] == "node"  # the torch-distributed runtime's training job
    pod = replicated["template"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["name"] == "node"  # and its container
    return job["spec"]["trainer"], container, pod


def trainjob_v21_pod() -> tuple[dict, dict, dict]:
    """Trainer v2.1: the same through podTemplateOverrides."""
    (job,) = load("trainjob-v2.1.yaml")
    (override,) = job["spec"]["podTemplateOverrides"]
    assert override["targetJobs"] == [{"name": "node"}]  # the runtime's training job
    (container,) = override["spec"]["containers"]
    assert container["name"] == "node"
    return job["spec"]["trainer"], container, override["spec"]


def pytorchjob_pods() -> list[tuple[dict, dict, dict]]:
    (job,) = load("pytorchjob.yaml")
    pods = []
    for role in ("Master", "Worker"):
        spec = job["spec"]["pytorchReplicaSpecs"][role]
        assert spec["replicas"] >= 1 and spec["restartPolicy"] in ("OnFailure", "ExitCode")
        (container,) = spec["template"]["spec"]["containers"]
        assert container["name"] == "pytorch"  # the name the operator looks for
        pods.append((container, container, spec["template"]["spec"]))
    assert job["spec"]["pytorchReplicaSpecs"]["Master"]["replicas"] == 1
    return pods


@pytest.mark.parametrize("name", ["trainjob.yaml", "trainjob-v2.1.yaml"])
def test_the_trainjob_names_its_runtime_nodes_and_gpus(name):
    (job,) = load(name)
    assert (job["apiVersion"], job["kind"]) == ("trainer.kubeflow.org/v1alpha1", "TrainJob")
    assert job["spec"]["runtimeRef"]["name"] == "torch-distributed"
    trainer = job["spec"]["trainer"]
    assert trainer["numNodes"] >= 2 and trainer["numProcPerNode"] >= 1
    gpus = trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"]
    assert gpus == trainer["numProcPerNode"]  # one process per GPU


def test_the_pytorchjob_has_one_master_workers_and_procs_per_node():
    (job,) = load("pytorchjob.yaml")
    assert (job["apiVersion"], job["kind"]) == ("kubeflow.org/v1", "PyTorchJob")
    assert len(pytorchjob_pods()) == 2
    assert isinstance(job["spec"]["nprocPerNode"], str)  # the CRD's type: "1", not 1
    assert int(job["spec"]["nprocPerNode"]) >= 1
    for container, _, _ in pytorchjob_pods():  # every operator sets MASTER_*; not all PET_MASTER_*
        args = container["args"]
        assert "--master_addr=$(MASTER_ADDR)" in args and "--master_port=$(MASTER_PORT)" in args


PODS = [trainjob_pod(), trainjob_v21_pod(), *pytorchjob_pods()]


@pytest.mark.parametrize("trainer, container, pod", PODS)
def test_each_node_runs_torchrun_on_our_cuda_image_with_overrides_our_config_accepts(
    trainer, container, pod
):
    assert trainer["image"].endswith("/train:cuda")  # compose.yaml's train-cuda image
    assert trainer["command"] == ["torchrun"]
    args = trainer["args"]
    at = args.index("-m")
    assert args[at + 1] == "train" and all(a.startswith("--") for a in args[:at])  # torchrun's
    overrides = args[at + 2 :]
    assert all("=" in o for o in overrides) and "resume=auto" in overrides
    config.compose(overrides)  # a typo'd key or option fails here, not on the cluster


@pytest.mark.parametrize("trainer, container, pod", PODS)
def test_each_node_mounts_the_shared_runs_and_data_where_the_image_reads_them(
    trainer, container, pod
):
    env = dict(re.findall(r"(TRAIN_(?:RUNS|DATA)_DIR)=(\S+)", DOCKERFILE))
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert mounts["runs"] == env["TRAIN_RUNS_DIR"] and mounts["data"] == env["TRAIN_DATA_DIR"]
    assert mounts["shm"] == "/dev/shm" and volumes["shm"]["emptyDir"]["medium"] == "Memory"
    claims = {d["metadata"]["name"]: d for d in load("volumes.yaml")}
    for name in ("runs", "data"):
        claim = claims[volumes[name]["persistentVolumeClaim"]["claimName"]]
        assert claim["kind"] == "PersistentVolumeClaim"
        assert claim["spec"]["accessModes"] == ["ReadWriteMany"]  # every node mounts it


# --- the published CRDs (docker/k8s/crds/README.md) ------------------------------------------

CHECKED = {  # each manifest and the releases whose published CRD it is checked against
    "trainjob.yaml": ["trainjob-v2.2.1.json", "trainjob-v2.3.0.json"],
    "trainjob-v2.1.yaml": ["trainjob-v2.1.0.json"],
    "pytorchjob.yaml": ["pytorchjob-v1.9.4.json"],
}


def strict(node):
    """A CRD's schema as the API server applies it under strict field validation: an object
    with properties refuses any other field, unless it preserves unknown fields."""
    if isinstance(node, list):
        return [strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: strict(v) for k, v in node.items()}
    if "properties" in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        out.setdefault("additionalProperties", False)
    return out


def violations(doc: dict, crd_file: str) -> list[str]:
    import json

    import jsonschema

    crd = json.loads((K8S / "crds" / crd_file).read_text())
    said = []
    if (doc["apiVersion"], doc["kind"]) != (f"{crd['group']}/{crd['version']}", crd["kind"]):
        said.append(f"{doc['apiVersion']} {doc['kind']} is not {crd['group']}/{crd['version']}")
    validator = jsonschema.Draft7Validator(strict(crd["openAPIV3Schema"]))
    for error in validator.iter_errors(doc):
        said.append(f"{'.'.join(map(str, error.absolute_path))}: {error.message}")
    return said


@pytest.mark.parametrize("name, crd", [(n, c) for n, cs in CHECKED.items() for c in cs])
def test_each_manifest_validates_against_the_published_crd_of_each_release_it_names(name, crd):
    (doc,) = load(name)
    assert violations(doc, crd) == []


def test_every_manifest_and_every_crd_is_checked():
    jobs = {p.name for p in K8S.glob("*.yaml") if p.name != "volumes.yaml"}
    assert set(CHECKED) == jobs
    assert {c for cs in CHECKED.values() for c in cs} == {
        p.name for p in (K8S / "crds").glob("*.json")
    }


def test_a_field_the_release_does_not_have_or_a_wrong_type_fails():
    (job,) = load("trainjob.yaml")
    moved = {**job, "spec": {**job["spec"], "trainer": {**job["spec"]["trainer"]}}}
    moved["spec"]["trainer"]["nprocPerNode"] = moved["spec"]["trainer"].pop("numProcPerNode")
    assert any("nprocPerNode" in v for v in violations(moved, "trainjob-v2.3.0.json"))
    typed = {**job, "spec": {**job["spec"], "trainer": {**job["spec"]["trainer"], "numNodes": "2"}}}
    assert any("numNodes" in v for v in violations(typed, "trainjob-v2.3.0.json"))
    (old,) = load("trainjob-v2.1.yaml")  # podTemplateOverrides: gone since v2.2
    assert any("podTemplateOverrides" in v for v in violations(old, "trainjob-v2.3.0.json"))
    (legacy,) = load("pytorchjob.yaml")
    legacy = {**legacy, "spec": {**legacy["spec"], "nprocPerNode": 1}}  # the CRD's is a string
    assert any("nprocPerNode" in v for v in violations(legacy, "pytorchjob-v1.9.4.json"))

"""docker/k8s/: the Kubeflow TrainJob and PyTorchJob manifests carry what their controllers need
(no cluster here to apply them to): the fields each controller reads, torchrun -m train with
overrides our config accepts, the CUDA image, and the runs and data volumes every node shares
where the image reads them."""

import re
from pathlib import Path

import pytest
import yaml

from train import conf

K8S = Path(__file__).resolve().parents[2] / "docker" / "k8s"
DOCKERFILE = (K8S.parent.parent / "Dockerfile").read_text()


def load(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]


def trainjob_pod() -> tuple[dict, dict, dict]:
    (job,) = load("trainjob.yaml")
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


def test_the_trainjob_names_its_runtime_nodes_and_gpus():
    (job,) = load("trainjob.yaml")
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


PODS = [trainjob_pod(), *pytorchjob_pods()]


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
    conf.compose(overrides)  # a typo'd key or option fails here, not on the cluster


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

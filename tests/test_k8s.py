"""Kubernetes manifests: core kinds validated with kubernetes-validate, LeaderWorkerSet with the vendored CRD schema."""

import json
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from deploy_kit.stack.k8s import render_k8s
from tests.conftest import require

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
LWS_SCHEMA = ROOT / "tests" / "fixtures" / "lws" / "leaderworkerset-v1.schema.json"
REV = "0123456789abcdef0123456789abcdef01234567"
K8S_VERSION = "1.30.0"


def _plan(card, tp=None, sets=()):
    from deploy_kit.planner import plan
    return plan(card, target="ascend-a2", tp=tp, sets=list(sets), port_probe=None)


def _validate_core(doc):
    try:
        import kubernetes_validate
    except ImportError:
        require(False, "kubernetes-validate missing: pip install 'deploykit[test]'")
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)  # raises on any error or unknown field


def _strict(schema):
    """Mimic API-server pruning as an error: unknown fields under a typed object are rejected."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out and \
                not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(x) for x in schema]
    return schema


def _validate_lws(doc):
    import jsonschema
    schema = _strict(json.loads(LWS_SCHEMA.read_text()))
    schema["properties"]["metadata"] = {"type": "object"}
    jsonschema.validate(doc, schema)


def test_single_node_deployment_and_service(tmp_path):
    p = _plan("llama-3.1-8b-instruct", tp=2)
    files = render_k8s(p, tmp_path)
    docs = _docs(files)
    assert set(docs) == {"Deployment", "Service"}
    for d in docs.values():
        _validate_core(d)
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["resources"]["limits"] == {"huawei.com/Ascend910": "2"}
    assert {"name": "weights", "mountPath": "/models/llama-3.1-8b-instruct", "readOnly": True} in c["volumeMounts"]
    shm = [v for v in pod["volumes"] if v["name"] == "dshm"][0]
    assert shm["emptyDir"]["medium"] == "Memory" and shm["emptyDir"]["sizeLimit"] == "16Gi"
    assert pod["volumes"][0]["hostPath"]["path"] == p.weights.host_path
    assert pod["nodeSelector"] == {"accelerator": "huawei-Ascend910"}
    # the pinned upstream image, pulled only when absent (never :latest, never deploykit's local name)
    assert c["image"] == "quay.io/ascend/vllm-ascend:v0.23.0" and c["imagePullPolicy"] == "IfNotPresent"
    # driver files as hostPath, the same paths upstream's docker run mounts
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    hosts = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    for path in ("/usr/local/dcmi", "/usr/local/bin/npu-smi", "/usr/local/Ascend/driver/lib64",
                 "/usr/local/Ascend/driver/version.info", "/etc/ascend_install.info"):
        assert hosts[mounts[path]["name"]] == path and mounts[path]["readOnly"] is True
    # startup probe covers the whole load deadline; readiness on /health
    sp = c["startupProbe"]
    assert sp["periodSeconds"] * sp["failureThreshold"] >= p.readiness_timeout_s
    assert c["readinessProbe"]["httpGet"]["path"] == "/health"
    assert not any(e["name"] == "ASCEND_RT_VISIBLE_DEVICES" for e in c["env"])
    assert docs["Service"]["spec"]["selector"] == docs["Deployment"]["spec"]["selector"]["matchLabels"]


def test_resource_name_and_pvc(tmp_path):
    p = _plan("llama-3.1-8b-instruct", tp=1)
    files = render_k8s(p, tmp_path, resource_name="huawei.com/ascend-1980", weights_claim="model-weights",
                       ascend_runtime=True)
    dep = yaml.safe_load(files[0].read_text())
    _validate_core(dep)
    pod = dep["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"accelerator/huawei-npu": "ascend-1980"}  # not MindCluster's label
    assert [v["name"] for v in pod["volumes"]] == ["weights", "dshm"]  # the Ascend Docker Runtime injects
    assert "Ascend Docker Runtime" in (tmp_path / "README.md").read_text()
    assert pod["containers"][0]["resources"]["limits"] == {"huawei.com/ascend-1980": "1"}
    assert pod["volumes"][0]["persistentVolumeClaim"] == {"claimName": "model-weights", "readOnly": True}
    # the validator is not a rubber stamp: a misspelt field fails
    import kubernetes_validate
    pod["containers"][0]["volumeMount"] = pod["containers"][0].pop("volumeMounts")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, K8S_VERSION, strict=True)


def _docs(files):
    return {yaml.safe_load(f.read_text())["kind"]: yaml.safe_load(f.read_text()) for f in files if f.suffix == ".yaml"}


def test_multinode_leaderworkerset(tmp_path):
    import subprocess

    p = _plan("hunyuan-a13b-instruct", tp=8, sets=[f"model.revision={REV}"])
    files = render_k8s(p, tmp_path, nodes=2, ifname="enp189s0f0")
    docs = _docs(files)
    assert set(docs) == {"LeaderWorkerSet", "Service"}
    _validate_core(docs["Service"])
    lws = docs["LeaderWorkerSet"]
    assert lws["apiVersion"] == "leaderworkerset.x-k8s.io/v1"
    _validate_lws(lws)
    t = lws["spec"]["leaderWorkerTemplate"]
    assert t["size"] == 2
    leader = t["leaderTemplate"]["spec"]["containers"][0]
    worker = t["workerTemplate"]["spec"]["containers"][0]
    script = leader["command"][2].splitlines()
    assert script[1] == 'ray start --head --port=6379 --node-ip-address="$POD_IP"'
    # vLLM starts only after the wait for 2 Ray nodes returned
    wait = next(i for i, line in enumerate(script) if line.startswith("python3 -c"))
    assert script[wait + 7] == "' 2 900" and 'ray.nodes()' in script[wait + 3]
    assert script[-1].startswith("exec python3 -m vllm.entrypoints.openai.api_server ")
    assert script[-1].endswith("--distributed-executor-backend ray --pipeline-parallel-size 2")
    assert "--tensor-parallel-size 8" in script[-1]
    assert subprocess.run(["bash", "-n", "-c", leader["command"][2]]).returncode == 0
    assert worker["command"][2] == ('ray start --address="$LWS_LEADER_ADDRESS:6379" '
                                    '--node-ip-address="$POD_IP" --block')
    for c in (leader, worker):
        env = {e["name"]: e for e in c["env"]}
        assert env["HCCL_IF_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
        assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
        assert env["TP_SOCKET_IFNAME"]["value"] == env["GLOO_SOCKET_IFNAME"]["value"] == "enp189s0f0"
        assert env["RAY_EXPERIMENTAL_NOSET_ASCEND_RT_VISIBLE_DEVICES"]["value"] == "1"
        assert c["resources"]["limits"] == {"huawei.com/Ascend910": "8"}
        assert "/usr/local/Ascend/driver/tools/hccn_tool" in [m["mountPath"] for m in c["volumeMounts"]]
    assert "livenessProbe" not in worker and "startupProbe" in leader
    sp = leader["startupProbe"]  # covers the wait for the workers (900 s) and the load deadline
    assert sp["periodSeconds"] * sp["failureThreshold"] >= p.readiness_timeout_s + 900
    assert docs["Service"]["spec"]["selector"]["role"] == "leader"
    assert "&id" not in (tmp_path / "leaderworkerset.yaml").read_text()  # no YAML anchors


def test_registry_image_and_push_commands(tmp_path):
    from deploy_kit.errors import BadInput
    from deploy_kit.stack.k8s import push_commands

    p = _plan("llama-3.1-8b-instruct")
    dep = _docs(render_k8s(p, tmp_path, registry="registry.example.com:5000/ai/"))["Deployment"]
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == \
        "registry.example.com:5000/ai/vllm-ascend:v0.23.0"
    assert push_commands(p, "registry.example.com:5000/ai") == [
        "docker pull quay.io/ascend/vllm-ascend:v0.23.0",
        "docker tag quay.io/ascend/vllm-ascend:v0.23.0 registry.example.com:5000/ai/vllm-ascend:v0.23.0",
        "docker push registry.example.com:5000/ai/vllm-ascend:v0.23.0"]
    assert push_commands(p, None) == []
    assert "docker push registry.example.com:5000/ai/vllm-ascend:v0.23.0" in (tmp_path / "README.md").read_text()
    with pytest.raises(BadInput, match="not a registry"):
        render_k8s(p, tmp_path, registry="reg; rm -rf /")


def test_quoting_of_hostile_card_args(tmp_path):
    """A card's extra_args reach the leader's shell only as quoted words."""
    import subprocess

    p = _plan("llama-3.1-8b-instruct", tp=8, sets=["serve.extra_args=[\"--x=$(touch /tmp/pwned) `id`; echo\"]"])
    lws = _docs(render_k8s(p, tmp_path, nodes=2))["LeaderWorkerSet"]
    script = lws["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"]["containers"][0]["command"][2]
    # Kubernetes first turns $$ back into $ (the escape that keeps it from expanding $(touch ...))
    last = script.replace("$$", "$").splitlines()[-1].replace("exec ", "printf '%s\\n' ", 1)
    words = subprocess.run(["bash", "-c", last], capture_output=True, text=True).stdout.splitlines()
    assert "--x=$(touch /tmp/pwned) `id`; echo" in words


def test_lws_schema_catches_mistakes():
    import jsonschema
    good = {"apiVersion": "leaderworkerset.x-k8s.io/v1", "kind": "LeaderWorkerSet", "metadata": {"name": "x"},
            "spec": {"leaderWorkerTemplate": {"size": 2, "workerTemplate": {"spec": {"containers": [
                {"name": "c", "image": "i"}]}}}}}
    _validate_lws(good)
    bad = json.loads(json.dumps(good))
    bad["spec"]["leaderWorkerTemplate"]["size"] = "two"
    with pytest.raises(jsonschema.ValidationError):
        _validate_lws(bad)
    typo = json.loads(json.dumps(good))
    typo["spec"]["leaderWorkerTemplate"]["workerTemplat"] = {}
    with pytest.raises(jsonschema.ValidationError):
        _validate_lws(typo)



_ARG = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\n\r"),
               min_size=1, max_size=40)


@given(st.lists(_ARG, min_size=1, max_size=4))
@settings(max_examples=60, deadline=None)
def test_leader_script_round_trips_any_argv(extra):
    """Whatever a card puts in extra_args comes back from the shell line as the same words."""
    import shlex

    from deploy_kit.stack.k8s import leader_script, ray_argv

    p = _plan("llama-3.1-8b-instruct", tp=8)
    p = p.model_copy(update={"argv": list(p.argv) + extra})
    last = leader_script(p, 2, "POD_IP").split("\n")[-1]  # not splitlines(): \x0c is no line end in bash
    assert shlex.split(last) == ["exec", *ray_argv(p, 2)]

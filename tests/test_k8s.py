"""Kubernetes manifests: core kinds validated with kubernetes-validate, LeaderWorkerSet with the vendored CRD schema."""

import json
from pathlib import Path

import pytest
import yaml

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
    docs = {yaml.safe_load(f.read_text())["kind"]: yaml.safe_load(f.read_text()) for f in files}
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
    assert pod["nodeSelector"]
    # startup probe covers the whole load deadline; readiness on /health
    sp = c["startupProbe"]
    assert sp["periodSeconds"] * sp["failureThreshold"] >= p.readiness_timeout_s
    assert c["readinessProbe"]["httpGet"]["path"] == "/health"
    assert not any(e["name"] == "ASCEND_RT_VISIBLE_DEVICES" for e in c["env"])
    assert docs["Service"]["spec"]["selector"] == docs["Deployment"]["spec"]["selector"]["matchLabels"]


def test_resource_name_and_pvc(tmp_path):
    p = _plan("llama-3.1-8b-instruct", tp=1)
    files = render_k8s(p, tmp_path, resource_name="huawei.com/ascend-1980", weights_claim="model-weights")
    dep = yaml.safe_load(files[0].read_text())
    _validate_core(dep)
    pod = dep["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"] == {"huawei.com/ascend-1980": "1"}
    assert pod["volumes"][0]["persistentVolumeClaim"] == {"claimName": "model-weights", "readOnly": True}
    # the validator is not a rubber stamp: a misspelt field fails
    import kubernetes_validate
    pod["containers"][0]["volumeMount"] = pod["containers"][0].pop("volumeMounts")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, K8S_VERSION, strict=True)


def test_multinode_leaderworkerset(tmp_path):
    p = _plan("hunyuan-a13b-instruct", tp=8, sets=[f"model.revision={REV}"])
    files = render_k8s(p, tmp_path, nodes=2, ifname="enp189s0f0")
    docs = {yaml.safe_load(f.read_text())["kind"]: yaml.safe_load(f.read_text()) for f in files}
    assert set(docs) == {"LeaderWorkerSet", "Service"}
    _validate_core(docs["Service"])
    lws = docs["LeaderWorkerSet"]
    assert lws["apiVersion"] == "leaderworkerset.x-k8s.io/v1"
    _validate_lws(lws)
    t = lws["spec"]["leaderWorkerTemplate"]
    assert t["size"] == 2
    leader = t["leaderTemplate"]["spec"]["containers"][0]
    worker = t["workerTemplate"]["spec"]["containers"][0]
    assert leader["command"][2].startswith("ray start --head")
    assert "--distributed-executor-backend ray" in leader["command"][2]
    assert "--tensor-parallel-size 8" in leader["command"][2] and "--pipeline-parallel-size 2" in leader["command"][2]
    assert worker["command"][2] == "ray start --address=$(LWS_LEADER_ADDRESS):6379 --block"
    for c in (leader, worker):
        env = {e["name"]: e for e in c["env"]}
        assert env["HCCL_IF_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
        assert env["HCCL_SOCKET_IFNAME"]["value"] == env["GLOO_SOCKET_IFNAME"]["value"] == "enp189s0f0"
        assert c["resources"]["limits"] == {"huawei.com/Ascend910": "8"}
    assert "livenessProbe" not in worker and "startupProbe" in leader
    assert docs["Service"]["spec"]["selector"]["role"] == "leader"


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

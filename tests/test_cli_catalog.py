"""The catalog CLI as a user runs it: exit codes, JSON output, start-up time, lazy imports."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, deploykit_bin

pytestmark = pytest.mark.unit

HEAVY = ("torch", "vllm", "docker", "huggingface_hub", "modelscope", "transformers", "matplotlib")


def dk(*args, env=None, tmp=None):
    import os

    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([deploykit_bin(), *args], capture_output=True, text=True, timeout=120, env=e)


def test_list_json():
    proc = dk("list", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert {"internlm2.5-7b-chat", "hunyuan-a13b-instruct", "internvl2-2b", "llama-3.1-8b-instruct",
            "seed-x-instruct-7b", "smollm2-135m-instruct"} <= set(rows)
    assert rows["internvl2-2b"]["modalities"] == ["text", "image"]
    assert rows["hunyuan-a13b-instruct"]["tp"] == 4


def test_show_json_layers_target_override():
    proc = dk("show", "smollm2-135m-instruct", "--target", "cpu", "--json")
    assert proc.returncode == 0, proc.stderr
    card = json.loads(proc.stdout)
    assert card["serve"]["dtype"] == "float32" and card["serve"]["enforce_eager"] is True  # cpu override
    assert card["env"]["VLLM_CPU_KVCACHE_SPACE"] == "2"  # card override beats the target default (1)
    proc = dk("show", "smollm2-135m-instruct", "--target", "cpu", "--json", "--set", "serve.max_num_seqs=3")
    assert json.loads(proc.stdout)["serve"]["max_num_seqs"] == 3  # --set beats everything


def test_real_config_facts_not_the_reports():
    internlm = json.loads(dk("show", "internlm2.5-7b-chat", "--json").stdout)["model"]
    assert internlm["architecture"] == "InternLM2ForCausalLM" and internlm["config"]["num_layers"] == 32
    assert internlm["config"]["num_kv_heads"] == 8 and internlm["config"]["vocab_size"] == 92544
    seedx = json.loads(dk("show", "seed-x-instruct-7b", "--json").stdout)["model"]
    assert seedx["architecture"] == "MistralForCausalLM" and seedx["config"]["vocab_size"] == 65269


def test_plan_json_and_hunyuan_tp2_refused():
    proc = dk("plan", "llama-3.1-8b-instruct", "--json", "--port", "18997")
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["target"] == "ascend-a2" and plan["argv"][:3] == ["python3", "-m", "vllm.entrypoints.openai.api_server"]
    assert plan["memory"]["fits"] is True
    proc = dk("plan", "hunyuan-a13b-instruct", "--tp", "2", "--set", "model.revision=abc1234", "--port", "18997")
    assert proc.returncode == 3
    assert "does not fit" in proc.stderr and "raise --tp" in proc.stderr
    proc = dk("plan", "hunyuan-a13b-instruct", "--set", "model.revision=abc1234", "--set",
              "serve.quantization=gptq", "--port", "18997")
    assert proc.returncode == 2 and "quantization 'ascend'" in proc.stderr


def test_render_dry_run_writes_nothing(tmp_path):
    proc = dk("render", "smollm2-135m-instruct", "--target", "cpu", "--out", str(tmp_path / "o"),
              "--dry-run", "--port", "18997")
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "o").exists()


def test_validate_user_card(tmp_path):
    card = (REPO / "models" / "smollm2-135m-instruct.yaml").read_text().replace(
        "name: smollm2-135m-instruct", "name: my-card")
    path = tmp_path / "my-card.yaml"
    path.write_text(card)
    proc = dk("validate", str(path), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["targets"]["cpu"] == "ok"
    path.write_text(card.replace("max_num_seqs: 16", "max_num_seqs: 16\n  tensor_parallel_sise: 2"))
    proc = dk("validate", str(path))
    assert proc.returncode == 2 and "did you mean 'tensor_parallel_size'" in proc.stderr


def test_schema_is_json_schema():
    schema = json.loads(dk("schema").stdout)
    assert schema["title"] == "deploykit model card"
    assert "model" in schema["properties"] and schema["additionalProperties"] is False


def test_help_is_fast_and_light():
    code = ("import sys, time; t=time.perf_counter(); from deploy_kit.cli import app; "
            f"print(time.perf_counter()-t); print([m for m in {HEAVY!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.splitlines()
    assert out[1] == "[]", f"heavy modules imported at start-up: {out[1]}"
    best = min(_time(["--help"]) for _ in range(3))
    assert best < 0.3 * 3, best  # generous bound against a loaded CI box; measured 0.18-0.21 s here


def _time(args):
    t = time.perf_counter()
    subprocess.run([deploykit_bin(), *args], capture_output=True, check=True)
    return time.perf_counter() - t


def test_render_imports_nothing_heavy(tmp_path):
    code = ("import sys; from deploy_kit.cli import main; "
            f"rc = main(['render','smollm2-135m-instruct','--target','cpu','--port','18996','--out',{str(tmp_path / 'o')!r}]); "
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout + proc.stderr

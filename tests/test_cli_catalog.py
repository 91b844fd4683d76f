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


@pytest.fixture(autouse=True)
def _private_dirs(tmp_path_factory, monkeypatch):
    """Every command runs with its own HOME, state and cache: never the user's ledger or cache."""
    root = tmp_path_factory.mktemp("dk")
    for var, sub in (("HOME", "home"), ("DEPLOYKIT_STATE", "state"), ("DEPLOYKIT_CACHE", "cache")):
        monkeypatch.setenv(var, str(root / sub))
    for var in ("VLLM_API_KEY", "DEPLOYKIT_REGISTRY_MIRROR", "DEPLOYKIT_REQUIRE_PINNED"):
        monkeypatch.delenv(var, raising=False)


def dk(*args, env=None):
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
    args = ["render", "smollm2-135m-instruct", "--target", "cpu", "--port", "18996", "--out", str(tmp_path / "o")]
    code = ("import sys; from deploy_kit.cli import main; "
            f"rc = main({args!r}); "
            f"print(rc); print([m for m in {HEAVY!r} if m in sys.modules])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    assert lines[-2:] == ["0", "[]"], proc.stdout + proc.stderr
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [
        ".deploykit-render.json", "Dockerfile", "README.md", "compose.yaml", "model.env", "plan.json"]


def test_help_lists_the_catalog_commands_by_name():
    proc = dk("--help")
    assert proc.returncode == 0, proc.stderr
    # The first word of each indented line under "Commands:" is a command name: compare whole
    # names, so "down" can never be found inside "Markdown".
    listed = proc.stdout.split("Commands:", 1)[1]
    names = {line.split()[0] for line in listed.splitlines() if line.startswith("  ") and line.split()}
    assert {"list", "show", "plan", "render", "validate", "schema"} <= names


def test_validate_lists_every_error_with_its_line(tmp_path):
    card = (REPO / "models" / "smollm2-135m-instruct.yaml").read_text().replace(
        "name: smollm2-135m-instruct", "name: my-card")
    lines = card.splitlines()
    ctx = next(i for i, line in enumerate(lines) if line.strip().startswith("context_length:"))
    seqs = next(i for i, line in enumerate(lines) if line.strip().startswith("max_num_seqs:"))
    lines[ctx] = lines[ctx].split(":")[0] + ": -5"
    lines[seqs] = lines[seqs].split(":")[0] + ": many"
    path = tmp_path / "my-card.yaml"
    path.write_text("\n".join(lines) + "\n")
    proc = dk("validate", str(path))
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert err[0] == f"{path}:{ctx + 1}: model.context_length: Input should be greater than 0 (got -5)"
    assert err[1] == (f"{path}:{seqs + 1}: serve.max_num_seqs: Input should be a valid integer, unable to parse "
                      "string as an integer (got 'many')")
    assert err[2].endswith(f"{path}: 2 error(s) in the card")
    assert len(err) == 3
    proc = dk("validate", str(path), "--json")
    assert proc.returncode == 2
    assert [(e["line"], e["field"]) for e in json.loads(proc.stdout)["errors"]] == [
        (ctx + 1, "model.context_length"), (seqs + 1, "serve.max_num_seqs")]


INTERNVL_WARNING = (
    "warning: upstream vLLM-Ascend v0.23.0 marks InternVL2.0/2.5/3.0, InternVideo2.5, Mono-InternVL NOT SUPPORTED "
    "(https://github.com/vllm-project/vllm-ascend/issues/2064); supported alternative: qwen2.5-vl-7b-instruct; "
    "the smoke test decides on real hardware")


def _merged(*args):
    """stdout and stderr in the order a person sees them in one terminal."""
    import os

    return subprocess.run([deploykit_bin(), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=120, env=dict(os.environ))


def test_plan_prints_its_warnings_first_then_release_support_and_argv():
    import shlex

    from deploy_kit.planner import plan

    proc = _merged("plan", "internvl2-2b")
    assert proc.returncode == 0, proc.stdout
    lines = proc.stdout.splitlines()
    assert lines[:3] == [
        INTERNVL_WARNING,
        "warning: remote code unpinned; `pull` will lock a commit (trust_remote_code runs the repository's "
        "Python from OpenGVLab/InternVL2-2B)",
        "internvl2-2b on ascend-a2 (ascend)"]
    assert "vLLM\t0.23.0 (vLLM-Ascend v0.23.0: CANN 9.1.0, torch 2.10.0, torch_npu 2.10.0.post4)" in lines
    assert ("upstream\tInternVL2.0/2.5/3.0, InternVideo2.5, Mono-InternVL: not-supported on vLLM-Ascend v0.23.0 "
            "(https://github.com/vllm-project/vllm-ascend/blob/v0.23.0/docs/source/user_guide/support_matrix/"
            "supported_models.md)") in lines
    assert sum(line.startswith("note\t") for line in lines) == len(plan("internvl2-2b", port_probe=None).notes) > 0
    (argv,) = [line for line in lines if line.startswith("argv ")]
    assert shlex.split(argv[len("argv "):])[-2:] == ["--limit-mm-per-prompt", '{"image":1}']


def test_render_prints_the_warnings_first(tmp_path):
    proc = _merged("render", "internvl2-2b", "--out", str(tmp_path / "o"))
    assert proc.returncode == 0, proc.stdout
    assert proc.stdout.splitlines()[0] == INTERNVL_WARNING
    assert f"wrote {tmp_path / 'o' / 'compose.yaml'}" in proc.stdout.splitlines()


@pytest.mark.parametrize("flags, names", [
    (["--k8s"], ["deployment.yaml", "service.yaml", "README.md"]),
    (["--k8s", "--nodes", "2", "--tp", "8"], ["leaderworkerset.yaml", "service.yaml", "README.md"]),
    (["--nodes", "2", "--tp", "8"], ["compose.node0.yaml", "compose.node1.yaml", "README.md"])])
def test_render_nodes_writes_only_into_its_own_directory(tmp_path, flags, names):
    args = ["render", "llama-3.1-8b-instruct", "--target", "ascend-a2", *flags, "--out"]
    proc = dk(*args, str(tmp_path / "o"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [f"wrote {tmp_path / 'o' / n}" for n in names]
    assert dk(*args, str(tmp_path / "o")).returncode == 0  # an earlier render of ours is replaced
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / names[0]).write_text("mine\n")
    proc = dk(*args, str(tmp_path / "f"), "--force")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"error: --out: {tmp_path / 'f'} is not empty and holds no deploykit render "
                                   "(1 entries) (choose a new or empty directory; --force never deletes files "
                                   "deploykit did not write)")
    assert (tmp_path / "f" / names[0]).read_text() == "mine\n"

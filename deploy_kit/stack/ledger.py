"""Who holds which device and port on this host: the one source for plan, up, stack, devices, doctor.

Holders are deploykit's own state records plus, on Ascend targets, the processes `npu-smi info`
lists. Fail safe: when npu-smi exists but errors or prints a table deploykit cannot parse, NPU
availability is unknown and this raises Infeasible (exit 3) naming npu-smi's error, unless the
operator forces explicit devices (``force=True``, the CLI's --force-devices).
"""

from __future__ import annotations

import shutil
import subprocess

from ..errors import Infeasible
from ..runtime import state

NPU_SMI_TIMEOUT_S = 20.0
FORCE_HINT = "fix npu-smi, or name free NPUs yourself: --devices 0,1 --force-devices"


def _is_ascend(target: str | None) -> bool:
    if target is None:
        return True
    from ..targets import load_target

    return load_target(target).kind == "ascend"


def deployment_devices(target: str | None = None,
                       exclude: set[str] | frozenset[str] = frozenset()) -> dict[int, str]:
    """{host device id: holder} for deployments deploykit started (same target, except ``exclude``)."""
    out: dict[int, str] = {}
    for rec in state.all_records():
        if rec.name in exclude or (target and rec.target != target):
            continue
        for d in rec.host_devices:
            if str(d).isdigit():
                out[int(d)] = f"deployment {rec.name}" + (f" (compose project {rec.project})" if rec.project else "")
    return out


def busy_devices(target: str | None = None, *, force: bool = False,
                 exclude: set[str] | frozenset[str] = frozenset()) -> dict[int, str]:
    """{host device id: holder} for deployments deploykit started (same target, except those named
    in ``exclude``) and foreign NPU processes."""
    out = deployment_devices(target, exclude)
    if _is_ascend(target):
        try:
            procs = npu_processes()
        except Infeasible:
            if not force:
                raise
            procs = {}  # the operator named the devices and takes responsibility
        for npu, holder in procs.items():
            out.setdefault(npu, holder)
    return out


def busy_ports(exclude: set[str] | frozenset[str] = frozenset()) -> dict[int, str]:
    return {rec.port: f"deployment {rec.name}" for rec in state.all_records()
            if rec.port and rec.name not in exclude}


def conflicts(name: str, devices: list[str], port: int | None, target: str | None = None) -> list[str]:
    """Why deployment ``name`` cannot take these devices/port now: what OTHER deployments hold.

    `up` calls it while holding the state lock, just before it writes its claim; npu-smi is not
    asked here (a re-`up` would find its own old container's processes)."""
    reasons = []
    ports = busy_ports(exclude={name})
    if port is not None and port in ports:
        reasons.append(f"port {port} is held by {ports[port]}")
    held = deployment_devices(target, {name})
    for d in sorted({int(x) for x in devices if str(x).isdigit()} & set(held)):
        reasons.append(f"device {d} is held by {held[d]}")
    return reasons


def npu_smi_text() -> str | None:
    """Output of `npu-smi info`; None when npu-smi is not installed (not an Ascend host)."""
    exe = shutil.which("npu-smi")
    if not exe:
        return None
    try:
        res = subprocess.run([exe, "info"], capture_output=True, text=True, timeout=NPU_SMI_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise _unknown(f"`npu-smi info` gave no answer within {NPU_SMI_TIMEOUT_S:.0f} s") from exc
    except OSError as exc:
        raise _unknown(f"`npu-smi info` could not run: {exc}") from exc
    if res.returncode != 0:
        raise _unknown(f"`npu-smi info` failed (exit {res.returncode}): {_last_line(res.stdout + res.stderr)}")
    return res.stdout


def _last_line(text: str) -> str:
    from ..console import clean

    lines = [clean(ln).strip() for ln in text.splitlines() if ln.strip()]
    return (lines[-1] if lines else "no output")[:300]


def _unknown(reason: str) -> Infeasible:
    return Infeasible("NPU availability unknown", reasons=[reason], hint=FORCE_HINT)


def npu_processes(text: str | None = None) -> dict[int, str]:
    """{npu id: 'process NAME (pid N)[, ...]'} from the npu-smi process table; {} without npu-smi."""
    if text is None:
        text = npu_smi_text()
        if text is None:
            return {}
    from ..doctor.npusmi import parse_npu_smi_info

    info = parse_npu_smi_info(text)
    if not info.chips:
        raise _unknown(f"`npu-smi info` printed no NPU table deploykit can parse: {_last_line(text)}")
    out: dict[int, str] = {}
    for chip in info.chips:
        for p in chip.processes:
            holder = f"process {p.name or '?'} (pid {p.pid})"
            out[p.npu] = f"{out[p.npu]}, {holder}" if p.npu in out else holder
    return out

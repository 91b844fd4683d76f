"""Who holds which NPU and port on this host: deploykit's state records plus `npu-smi info`."""

from __future__ import annotations

import shutil
import subprocess


def _records() -> list:
    try:
        from ..runtime import state
    except ImportError:  # runtime not installed in this build
        return []
    return state.all_records()


def busy_devices(target: str | None = None) -> dict[int, str]:
    """{host device id: holder} for deployments deploykit started (same target) and foreign NPU processes."""
    out: dict[int, str] = {}
    for rec in _records():
        if target and rec.target != target:
            continue
        for d in rec.host_devices:
            if str(d).isdigit():
                out[int(d)] = f"deployment {rec.name}" + (f" (compose project {rec.project})" if rec.project else "")
    if target is None or target.startswith("ascend"):
        for d, holder in npu_processes().items():
            out.setdefault(d, holder)
    return out


def busy_ports() -> dict[int, str]:
    return {rec.port: f"deployment {rec.name}" for rec in _records() if rec.port}


def npu_processes(text: str | None = None) -> dict[int, str]:
    """{npu id: 'process NAME (pid N)'} from the npu-smi process table; {} without npu-smi."""
    if text is None:
        exe = shutil.which("npu-smi")
        if not exe:
            return {}
        try:
            text = subprocess.run([exe, "info"], capture_output=True, text=True, timeout=20).stdout
        except (OSError, subprocess.TimeoutExpired):
            return {}
    from ..doctor.npusmi import parse_npu_smi_info

    info = parse_npu_smi_info(text)
    out: dict[int, str] = {}
    for chip in info.chips:
        for p in chip.processes:
            out.setdefault(p.npu, f"process {p.name} (pid {p.pid})")
    return out

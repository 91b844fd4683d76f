"""Report: Markdown + JSON + PNG from the evidence files bench/eval/smoke wrote.

Layout follows the seed reports (environment, deployment, smoke, accuracy, performance, evidence).
Every number in the Markdown links to the raw file it came from; a section with no evidence says
"not measured" (never a placeholder value).
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import time
from importlib import metadata
from pathlib import Path

NM = "not measured"
ASCEND_910B_BW = 1.6e12   # bytes/s per NPU, vendor figure (docs: /work/shared/ASCEND.md roofline)


def _ver(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cmd(argv: list[str]) -> str:
    if not shutil.which(argv[0]):
        return f"{argv[0]} not found"
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{argv[0]} failed: {exc}"


def cpu_model() -> str:
    try:
        m = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        return (m.group(1).strip() if m else platform.processor()) + f" x{os.cpu_count()}"
    except OSError:
        return platform.processor() or "unknown"


def cann_version() -> str:
    for p in ("/usr/local/Ascend/ascend-toolkit/latest/version.cfg",
              "/usr/local/Ascend/ascend-toolkit/latest/compiler/version.info"):
        if Path(p).is_file():
            m = re.search(r"[Vv]ersion\s*[=:]\s*\[?([\w.\-]+)", Path(p).read_text())
            if m:
                return m.group(1)
    return "not found (no CANN toolkit on this host)"


def server_version(url: str | None) -> str:
    if not url:
        return NM
    import httpx

    try:
        return httpx.get(url.rstrip("/") + "/version", timeout=5).json().get("version", "unknown")
    except Exception as exc:  # noqa: BLE001 - report, never crash
        return f"unreachable ({type(exc).__name__})"


def environment(url: str | None = None, image: str = "", image_id: str = "") -> dict:
    """Host facts; the server's vLLM version comes from its /version endpoint."""
    npu = _cmd(["npu-smi", "info"])
    return {
        "deploykit": _ver("deploykit"), "vllm_server": server_version(url), "vllm_host": _ver("vllm"),
        "vllm_ascend_host": _ver("vllm-ascend"), "torch_host": _ver("torch"),
        "torch_npu_host": _ver("torch-npu"), "cann": cann_version(),
        "driver": _cmd(["npu-smi", "-v"]) if shutil.which("npu-smi") else "npu-smi not found",
        "image": image or NM, "image_id": image_id or NM,
        "hardware": npu if shutil.which("npu-smi") else cpu_model(),
        "python": platform.python_version(), "os": platform.platform(),
        "collected_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def cpu_bandwidth(size_mb: int = 256, repeats: int = 5) -> float:
    """Best-of-N numpy copy: bytes read + written per second (a STREAM-copy-like lower bound)."""
    import numpy as np

    a = np.ones(size_mb * 2**20 // 8)
    b = np.empty_like(a)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        np.copyto(b, a)
        best = min(best, time.perf_counter() - t)
    return 2 * a.nbytes / best


def weight_bytes(weights_dir: str | None, params_b: float | None, dtype_bytes: float = 2.0) -> tuple[float | None, str]:
    if weights_dir and Path(weights_dir).is_dir():
        n = sum(p.stat().st_size for p in Path(weights_dir).rglob("*")
                if p.suffix in (".safetensors", ".bin", ".gguf", ".pt"))
        if n:
            return float(n), f"size of weight files in {weights_dir}"
    if params_b:
        return params_b * 1e9 * dtype_bytes, f"params_b x {dtype_bytes} bytes"
    return None, "unknown"


DTYPE_BYTES = {"float32": 4.0, "float": 4.0, "bfloat16": 2.0, "float16": 2.0, "half": 2.0}


def served_dtype_bytes(argv: list[str] | None) -> tuple[float | None, str]:
    """Bytes per parameter vLLM holds (and reads per decoded token) from the plan's `--dtype`.

    vLLM casts the checkpoint to --dtype on load, so a bf16 file served as float32 costs 4 bytes
    per parameter, not the 2 the file size suggests; None when --dtype is absent or "auto".
    """
    argv = list(argv or [])
    for i, a in enumerate(argv):
        val = argv[i + 1] if a == "--dtype" and i + 1 < len(argv) else a.split("=", 1)[1] if a.startswith("--dtype=") else None
        if val in DTYPE_BYTES:
            return DTYPE_BYTES[val], f"--dtype {val}"
    return None, "no explicit --dtype"


def roofline(levels: list[dict], wbytes: float | None, bandwidth: float | None, bw_source: str,
             tp: int = 1, wbytes_source: str = "") -> dict:
    """Measured single-stream decode tok/s (1000/mean TPOT at concurrency 1) vs bandwidth bound."""
    single = next((r for r in levels if (r["config"].get("concurrency") or 0) == 1), None)
    measured = 1000.0 / single["metrics"]["mean_tpot_ms"] if single and single["metrics"]["mean_tpot_ms"] > 0 else None
    bound = bandwidth / (wbytes / tp) if (bandwidth and wbytes) else None
    return {"measured_decode_tok_s": measured, "bound_tok_s": bound,
            "fraction_of_bound": (measured / bound) if (measured and bound) else None,
            "bandwidth_bytes_s": bandwidth, "bandwidth_source": bw_source, "weight_bytes": wbytes,
            "weight_bytes_source": wbytes_source, "tp": tp,
            "source_file": single.get("_file") if single else None}


def load_bench_dir(d: Path) -> list[dict]:
    out = []
    for js in sorted(d.glob("bench-*.json")):
        res = json.loads(js.read_text())
        rec = d / res.get("records_file", "")
        res["records"] = [json.loads(l) for l in rec.read_text().splitlines()] if rec.is_file() else []
        res["_file"] = js.name
        out.append(res)
    return out


def _f(v, fmt="{:.1f}") -> str:
    return NM if v is None else fmt.format(v)


def _link(text: str, file: str | None) -> str:
    return f"[{text}]({file})" if file else text


def build_report(name: str, out: Path, *, bench_dir: Path | None = None, eval_file: Path | None = None,
                 smoke_file: Path | None = None, plan_file: Path | None = None, command: str = "",
                 env: dict | None = None, roof: dict | None = None, accuracy_file: Path | None = None) -> dict:
    """Copy evidence into `out`, write report.json, report.md and plots; returns the JSON."""
    out.mkdir(parents=True, exist_ok=True)
    ev = out / "evidence"
    ev.mkdir(exist_ok=True)

    def take(p: Path | None) -> str | None:
        if not p or not Path(p).exists():
            return None
        dst = ev / Path(p).name
        if Path(p).resolve() != dst.resolve():
            (shutil.copytree(p, dst, dirs_exist_ok=True) if Path(p).is_dir() else shutil.copy2(p, dst))
        return f"evidence/{Path(p).name}"

    levels = []
    if bench_dir and Path(bench_dir).is_dir():
        take(bench_dir)
        levels = load_bench_dir(ev / Path(bench_dir).name)
        for r in levels:
            r["_file"] = f"evidence/{Path(bench_dir).name}/{r['_file']}"
    eval_rel, smoke_rel, plan_rel, acc_rel = take(eval_file), take(smoke_file), take(plan_file), take(accuracy_file)
    env = env or environment()
    (ev / "environment.json").write_text(json.dumps(env, indent=2))
    plots = []
    if levels:
        from .plots import plot_all

        plots = [f"plots/{p.name}" for p in plot_all(levels, out / "plots")]
    data = {"name": name, "environment": env, "environment_file": "evidence/environment.json",
            "command": command or NM, "plan_file": plan_rel, "smoke_file": smoke_rel,
            "eval_file": eval_rel, "accuracy_file": acc_rel, "roofline": roof, "plots": plots,
            "performance": [{"file": r["_file"], "config": r["config"], "metrics": r["metrics"]} for r in levels]}
    (out / "report.json").write_text(json.dumps(data, indent=2, default=str))
    (out / "report.md").write_text(_markdown(data, ev))
    return data


def _markdown(d: dict, ev: Path) -> str:
    e = d["environment"]
    L = [f"# {d['name']}: deployment verification report", "",
         "## Environment", "", f"Source: [{d['environment_file']}]({d['environment_file']})", "",
         "| Item | Value |", "|---|---|"]
    L += [f"| {k} | {str(v).splitlines()[0] if str(v) else NM} |" for k, v in e.items()]
    L += ["", "## Deployment", "", f"- Plan: {_link(d['plan_file'], d['plan_file']) if d['plan_file'] else NM}",
          f"- Command: `{d['command']}`" if d["command"] != NM else f"- Command: {NM}", "", "## Smoke", ""]
    if d["smoke_file"]:
        sj = json.loads((ev.parent / d["smoke_file"]).read_text())
        checks = sj.get("results") or []
        passed = sum(bool(c.get("ok")) for c in checks)
        L.append(f"Smoke: **{'PASS' if sj.get('ok') else 'FAIL'}**, {passed}/{len(checks)} checks passed "
                 f"against `{sj.get('model', '?')}` — [{d['smoke_file']}]({d['smoke_file']})")
        L += [f"- {c.get('check', '?')}: {'ok' if c.get('ok') else 'FAIL'}"
              + (f" — {c['api']} answered {c['text'][:60]!r} (expect `{c.get('expect')}`)" if c.get("text") else "")
              for c in checks]
    else:
        L.append(NM)
    L += ["", "## Accuracy", ""]
    if d["eval_file"]:
        ej = json.loads((ev.parent / d["eval_file"]).read_text())
        L += [f"Greedy equivalence vs `{ej['reference']}` (top-{ej['k']}, {ej['max_tokens']} tokens): "
              f"**{'PASS' if ej['ok'] else 'FAIL'}** — [{d['eval_file']}]({d['eval_file']})", "",
              "| Prompt | OK | First divergence |", "|---|---|---|"]
        for r in ej["results"]:
            fd = r["first_divergence"]
            div = "none" if not fd else f"pos {fd['position']}: {fd['deployment_token']!r} vs {fd['reference_token']!r}"
            pr = r["prompt"] if len(r["prompt"]) <= 40 else "…" + r["prompt"][-39:]   # chat: tail shows the turn
            pr, div = repr(pr).replace("|", "\\|"), div.replace("|", "\\|")   # '|' would split the cell
            L.append(f"| {pr} | {'yes' if r['ok'] else 'no'} ({r['compared']} tokens) | {div} |")
    else:
        L.append(f"Greedy equivalence: {NM}")
    if d["accuracy_file"]:
        aj = json.loads((ev.parent / d["accuracy_file"]).read_text())
        L.append(f"\nTask accuracy {aj['task']} {aj['metric']}: [{aj['value']:.4f}]({d['accuracy_file']}) "
                 f"vs baseline {aj['baseline']} (rel tol {aj['rel_tol']}): {'PASS' if aj['ok'] else 'FAIL'}")
    else:
        L.append(f"\nTask accuracy (lm-eval): {NM}")
    L += ["", "## Performance", ""]
    if d["performance"]:
        L += ["| Concurrency | Rate | Done/Failed | TTFT p50/p99 ms | TPOT p50/p99 ms | ITL p50 ms | E2E p50 ms | req/s | out tok/s | Raw |",
              "|---|---|---|---|---|---|---|---|---|---|"]
        for p in d["performance"]:
            m, f = p["metrics"], p["file"]
            lk = lambda v: _link(_f(v), f)  # noqa: E731
            L.append(f"| {p['config'].get('concurrency') or 'unbounded'} | {p['config'].get('request_rate') or 'inf'} | "
                     f"{_link(str(m['completed']), f)}/{m['failed']} | {lk(m['median_ttft_ms'])}/{lk(m['p99_ttft_ms'])} | "
                     f"{lk(m['median_tpot_ms'])}/{lk(m['p99_tpot_ms'])} | {lk(m['median_itl_ms'])} | "
                     f"{lk(m['median_e2el_ms'])} | {_link(_f(m['request_throughput'], '{:.2f}'), f)} | "
                     f"{lk(m['output_throughput'])} | [{f}]({f}) |")
        L += [""] + [f"![{p}]({p})" for p in d["plots"]]
    else:
        L.append(NM)
    L += ["", "### Roofline", ""]
    r = d["roofline"]
    if r and r.get("measured_decode_tok_s"):
        L += [f"- Measured single-stream decode: {_link(_f(r['measured_decode_tok_s']), r['source_file'])} tokens/s (1000 / mean TPOT at concurrency 1)",
              f"- Bandwidth: {_f(r['bandwidth_bytes_s'] and r['bandwidth_bytes_s'] / 1e9)} GB/s ({r['bandwidth_source']})",
              f"- Weight bytes read per token: {_f(r['weight_bytes'] and r['weight_bytes'] / 1e6)} MB / TP {r['tp']}"
              + (f" ({r['weight_bytes_source']})" if r.get("weight_bytes_source") else ""),
              f"- Bound: {_f(r['bound_tok_s'])} tokens/s; measured = {_f(r['fraction_of_bound'] and 100 * r['fraction_of_bound'])}% of bound"]
    else:
        L.append(NM)
    L += ["", "## Evidence files", ""]
    L += [f"- [{p.relative_to(ev.parent)}]({p.relative_to(ev.parent)})" for p in sorted(ev.rglob("*")) if p.is_file()]
    return "\n".join(L) + "\n"

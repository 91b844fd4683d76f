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
# bytes/s of HBM per Ascend 910B NPU as Huawei quotes it for Atlas 800T A2 class parts (1.6 TB/s);
# a vendor figure, not a measurement: pass --bandwidth-gbs for the exact part
ASCEND_910B_BW = 1.6e12


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
    """The server's vLLM version from GET /version (bounded; the API key sent): never raises."""
    if not url:
        return NM
    from ..errors import DeployKitError
    from .http import fetch, parse_json

    try:
        status, data = fetch("GET", url.rstrip("/") + "/version", connect_timeout=5.0, read_timeout=5.0,
                             max_bytes=65536)
        doc = parse_json(data, "GET /version") if status == 200 else None
    except DeployKitError as exc:
        return f"unreachable ({exc.message[:80]})"
    if not isinstance(doc, dict):
        return f"unknown (GET /version: HTTP {status})"
    return str(doc.get("version", "unknown"))[:80]


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


def weight_bytes(weights_dir: str | None, params_b: float | None,
                 dtype_bytes: float = 2.0) -> tuple[float | None, str]:
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
        val = None
        if a == "--dtype" and i + 1 < len(argv):
            val = argv[i + 1]
        elif a.startswith("--dtype="):
            val = a.split("=", 1)[1]
        if val in DTYPE_BYTES:
            return DTYPE_BYTES[val], f"--dtype {val}"
    return None, "no explicit --dtype"


def roofline(levels: list[dict], wbytes: float | None, bandwidth: float | None, bw_source: str,
             tp: int = 1, wbytes_source: str = "") -> dict:
    """Measured single-stream decode tok/s (1000/mean TPOT at concurrency 1) vs bandwidth bound."""
    single = next((r for r in levels if (r["config"].get("concurrency") or 0) == 1), None)
    tpot = single["metrics"].get("mean_tpot_ms") if single else None
    measured = 1000.0 / tpot if tpot else None
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
        res["records"] = [json.loads(line) for line in rec.read_text().splitlines()] if rec.is_file() else []
        res["_file"] = js.name
        out.append(res)
    return out


def _f(v: float | None, fmt: str = "{:.1f}") -> str:
    return NM if v is None else fmt.format(v)


def _link(text: str, file: str | None) -> str:
    return f"[{text}]({file})" if file else text


def _take(ev: Path, p: Path | None) -> str | None:
    """Copy an evidence file or directory into `ev`; its path relative to the report, or None."""
    if not p or not Path(p).exists():
        return None
    dst = ev / Path(p).name
    if Path(p).resolve() != dst.resolve():
        if Path(p).is_dir():
            shutil.copytree(p, dst, dirs_exist_ok=True)
        else:
            shutil.copy2(p, dst)
    return f"evidence/{Path(p).name}"


def build_report(name: str, out: Path, *, bench_dir: Path | None = None, eval_file: Path | None = None,
                 smoke_file: Path | None = None, plan_file: Path | None = None, command: str = "",
                 env: dict | None = None, roof: dict | None = None, accuracy_file: Path | None = None) -> dict:
    """Copy evidence into `out`, write report.json, report.md and plots; returns the JSON."""
    out.mkdir(parents=True, exist_ok=True)
    ev = out / "evidence"
    ev.mkdir(exist_ok=True)
    levels = []
    if bench_dir and Path(bench_dir).is_dir():
        _take(ev, bench_dir)
        levels = load_bench_dir(ev / Path(bench_dir).name)
        for r in levels:
            r["_file"] = f"evidence/{Path(bench_dir).name}/{r['_file']}"
    env = env or environment()
    (ev / "environment.json").write_text(json.dumps(env, indent=2))
    plots = []
    if levels:
        from .plots import plot_all

        plots = [f"plots/{p.name}" for p in plot_all(levels, out / "plots")]
    data = {"name": name, "environment": env, "environment_file": "evidence/environment.json",
            "command": command or NM, "plan_file": _take(ev, plan_file), "smoke_file": _take(ev, smoke_file),
            "eval_file": _take(ev, eval_file), "accuracy_file": _take(ev, accuracy_file), "roofline": roof,
            "plots": plots,
            "performance": [{"file": r["_file"], "config": r["config"], "metrics": r["metrics"]} for r in levels]}
    (out / "report.json").write_text(json.dumps(data, indent=2, default=str))
    (out / "report.md").write_text(_markdown(data, ev))
    return data


def _md_environment(d: dict) -> list[str]:
    lines = ["## Environment", "", f"Source: [{d['environment_file']}]({d['environment_file']})", "",
             "| Item | Value |", "|---|---|"]
    lines += [f"| {k} | {str(v).splitlines()[0] if str(v) else NM} |" for k, v in d["environment"].items()]
    plan = _link(d["plan_file"], d["plan_file"]) if d["plan_file"] else NM
    lines += ["", "## Deployment", "", f"- Plan: {plan}",
              f"- Command: `{d['command']}`" if d["command"] != NM else f"- Command: {NM}"]
    return lines


def _md_smoke(d: dict, root: Path) -> list[str]:
    lines = ["## Smoke", ""]
    if not d["smoke_file"]:
        return lines + [NM]
    sj = json.loads((root / d["smoke_file"]).read_text())
    checks = sj.get("results") or []
    passed = sum(bool(c.get("ok")) for c in checks)
    lines.append(f"Smoke: **{'PASS' if sj.get('ok') else 'FAIL'}**, {passed}/{len(checks)} checks passed "
                 f"against `{sj.get('model', '?')}` — [{d['smoke_file']}]({d['smoke_file']})")
    for c in checks:
        said = f" — {c['api']} answered {c['text'][:60]!r} (expect `{c.get('expect')}`)" if c.get("text") else ""
        lines.append(f"- {c.get('check', '?')}: {'ok' if c.get('ok') else 'FAIL'}{said}")
    return lines


def _md_accuracy(d: dict, root: Path) -> list[str]:
    lines = ["## Accuracy", ""]
    if d["eval_file"]:
        ej = json.loads((root / d["eval_file"]).read_text())
        lines += [f"Greedy equivalence vs `{ej['reference']}` (top-{ej['k']}, {ej['max_tokens']} tokens): "
                  f"**{'PASS' if ej['ok'] else 'FAIL'}** — [{d['eval_file']}]({d['eval_file']})", "",
                  "| Prompt | OK | First divergence |", "|---|---|---|"]
        for r in ej["results"]:
            fd = r["first_divergence"]
            div = "none" if not fd else \
                f"pos {fd['position']}: {fd['deployment_token']!r} vs {fd['reference_token']!r}"
            pr = r["prompt"] if len(r["prompt"]) <= 40 else "…" + r["prompt"][-39:]   # chat: tail shows the turn
            pr, div = repr(pr).replace("|", "\\|"), div.replace("|", "\\|")   # '|' would split the cell
            lines.append(f"| {pr} | {'yes' if r['ok'] else 'no'} ({r['compared']} tokens) | {div} |")
    else:
        lines.append(f"Greedy equivalence: {NM}")
    if d["accuracy_file"]:
        aj = json.loads((root / d["accuracy_file"]).read_text())
        lines.append(f"\nTask accuracy {aj['task']} {aj['metric']}: [{aj['value']:.4f}]({d['accuracy_file']}) "
                     f"vs baseline {aj['baseline']} (rel tol {aj['rel_tol']}): {'PASS' if aj['ok'] else 'FAIL'}")
    else:
        lines.append(f"\nTask accuracy (lm-eval): {NM}")
    return lines


PERF_HEADER = ("| Concurrency | Rate | Done/Failed | TTFT p50/p99 ms | TPOT p50/p99 ms | ITL p50 ms | "
               "E2E p50 ms | req/s | out tok/s | Raw |")


def _md_performance(d: dict) -> list[str]:
    lines = ["## Performance", ""]
    if not d["performance"]:
        return lines + [NM]
    lines += [PERF_HEADER, "|---|---|---|---|---|---|---|---|---|---|"]
    for p in d["performance"]:
        m, f, c = p["metrics"], p["file"], p["config"]

        def lk(v: float | None, fmt: str = "{:.1f}", f: str = f) -> str:
            return _link(_f(v, fmt), f)

        lines.append(f"| {c.get('concurrency') or 'unbounded'} | {c.get('request_rate') or 'inf'} | "
                     f"{_link(str(m['completed']), f)}/{m['failed']} | "
                     f"{lk(m['median_ttft_ms'])}/{lk(m['p99_ttft_ms'])} | "
                     f"{lk(m['median_tpot_ms'])}/{lk(m['p99_tpot_ms'])} | {lk(m['median_itl_ms'])} | "
                     f"{lk(m['median_e2el_ms'])} | {lk(m['request_throughput'], '{:.2f}')} | "
                     f"{lk(m['output_throughput'])} | [{f}]({f}) |")
    return lines + [""] + [f"![{p}]({p})" for p in d["plots"]]


def _md_roofline(r: dict | None) -> list[str]:
    lines = ["### Roofline", ""]
    if not (r and r.get("measured_decode_tok_s")):
        return lines + [NM]
    bw = r["bandwidth_bytes_s"] and r["bandwidth_bytes_s"] / 1e9
    wb = r["weight_bytes"] and r["weight_bytes"] / 1e6
    frac = r["fraction_of_bound"] and 100 * r["fraction_of_bound"]
    return lines + [
        f"- Measured single-stream decode: {_link(_f(r['measured_decode_tok_s']), r['source_file'])} "
        "tokens/s (1000 / mean TPOT at concurrency 1)",
        f"- Bandwidth: {_f(bw)} GB/s ({r['bandwidth_source']})",
        f"- Weight bytes read per token: {_f(wb)} MB / TP {r['tp']}"
        + (f" ({r['weight_bytes_source']})" if r.get("weight_bytes_source") else ""),
        f"- Bound: {_f(r['bound_tok_s'])} tokens/s; measured = {_f(frac)}% of bound"]


def _markdown(d: dict, ev: Path) -> str:
    root = ev.parent
    lines = [f"# {d['name']}: deployment verification report", ""]
    for section in (_md_environment(d), _md_smoke(d, root), _md_accuracy(d, root), _md_performance(d),
                    _md_roofline(d["roofline"])):
        lines += section + [""]
    lines += ["## Evidence files", ""]
    lines += [f"- [{p.relative_to(root)}]({p.relative_to(root)})" for p in sorted(ev.rglob("*")) if p.is_file()]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- `deploykit report NAME`
def _bandwidth(bandwidth_gbs: float | None, measure_cpu: bool) -> tuple[float | None, str]:
    if bandwidth_gbs:
        return bandwidth_gbs * 1e9, "given with --bandwidth-gbs"
    if measure_cpu:
        return cpu_bandwidth(), "measured: numpy copy (read+write) on this host"
    return None, ("unknown (pass --bandwidth-gbs, 1600 for the 910B vendor figure, "
                  "or --measure-cpu-bandwidth)")


def _card_size(card_name: str) -> tuple[float | None, int]:
    """(params_b, TP) from the card, or (None, 1) for a report without a loadable card."""
    from ..errors import DeployKitError

    try:
        from ..cardload import load_card

        c = load_card(card_name).card
    except (DeployKitError, OSError):
        return None, 1
    return c.model.params_b, c.serve.tensor_parallel_size or 1


def _roofline_for(name: str, levels: list[dict], facts: dict, weights_dir: str | None,
                  bandwidth_gbs: float | None, measure_cpu: bool) -> dict:
    params_b, tp = _card_size(name)
    bw, src = _bandwidth(bandwidth_gbs, measure_cpu)
    dbytes, dsrc = served_dtype_bytes(facts.get("argv"))
    wb: float | None
    if params_b and dbytes:   # served dtype beats the checkpoint's file size
        wb, wsrc = params_b * 1e9 * dbytes, f"params_b {params_b} x {dbytes:g} bytes ({dsrc})"
    else:
        wb, wsrc = weight_bytes(weights_dir or facts.get("weights_host_path"), params_b)
    roof = roofline(levels, wb, bw, src, tp, wsrc)
    if roof.get("source_file"):
        roof["source_file"] = f"evidence/bench/{roof['source_file']}"
    return roof


def report_for(name: str, dest: Path, *, url: str | None = None, bandwidth_gbs: float | None = None,
               measure_cpu_bandwidth: bool = False, weights_dir: str | None = None, command: str = "") -> dict:
    """`deploykit report NAME`: evidence in `dest` (bench/, eval.json, accuracy.json) plus the
    deployment's record when there is one (URL, image, plan, smoke) -> report.md/json and plots."""
    from .target import deployment_facts

    tgt = deployment_facts(name)
    facts = tgt.facts if tgt else {}
    bench_dir = dest / "bench"
    levels = load_bench_dir(bench_dir) if bench_dir.is_dir() else []
    if levels:
        from .plots import require_plots

        require_plots()
    env = environment(url or (tgt.url if tgt else None) or None, facts.get("image", ""), facts.get("image_id", ""))
    roof = _roofline_for(tgt.card_name if tgt else name, levels, facts, weights_dir, bandwidth_gbs,
                         measure_cpu_bandwidth) if levels else None
    eval_file, acc = dest / "eval.json", dest / "accuracy.json"
    return build_report(name, dest, bench_dir=bench_dir if levels else None,
                        eval_file=eval_file if eval_file.is_file() else None,
                        accuracy_file=acc if acc.is_file() else None, smoke_file=facts.get("smoke_file"),
                        plan_file=facts.get("plan_file"), command=command, env=env, roof=roof)

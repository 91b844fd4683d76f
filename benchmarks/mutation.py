"""Mutation score of deploykit's core modules under the unit tier (issue 17.5), reproducibly.

    .venv/bin/python benchmarks/mutation.py                      # every core module
    .venv/bin/python benchmarks/mutation.py --modules memory,planner --max-children 2

What it does: copies the checkout (tracked + untracked, not ignored: `git ls-files -co
--exclude-standard`) to a snapshot directory, so edits to the tree while it runs cannot change
the result; writes mutmut's [tool.mutmut] section there (the modules to mutate, the unit tier
with a fixed test order); runs `mutmut run` (mutmut 3, PyPI); then reads `mutmut results --all`
and writes, under --out (default docs/measurements/mutation/):

    summary.json   per module: mutants, killed, survived, timeout, no tests, score = killed / total
    summary.md     the same as a table, with the snapshot's git commit and the command line
    results.txt    mutmut's raw per-mutant status list
    survivors.diff `mutmut show` of every surviving mutant (what no unit test notices)

A mutant counts as killed when a test fails on it ("killed"), or it times out or crashes the
interpreter ("timeout", "segfault"): the behaviour changed and the run noticed. "no tests" and
"survived" count against the score; "skipped"/"suspicious" are listed but not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CORE = {
    "cards": "deploy_kit/cards.py",
    "cardload": "deploy_kit/cardload.py",
    "planner": "deploy_kit/planner.py",
    "planchecks": "deploy_kit/planchecks.py",   # the planner's checks, split out of planner.py
    "memory": "deploy_kit/memory.py",
    "envcheck": "deploy_kit/envcheck.py",
    "render": "deploy_kit/render.py",
    "stack/allocate": "deploy_kit/stack/allocate.py",
    "verify/metrics": "deploy_kit/verify/metrics.py",
}
# Data the code and the tests read through paths relative to the package (paths.data_dir) or the
# checkout root (tests/conftest.py REPO): mutmut runs the tests from its own copy, mutants/.
ALSO_COPY = ["models", "targets", "templates", "images", "compose", "evals", "tests", "scripts", ".ci", "docs",
             "benchmarks", "README.md", "pyproject.toml"]
KILLED = {"killed", "timeout", "segfault"}
COUNTED = KILLED | {"survived", "no tests"}
RESULT_LINE = re.compile(r"^\s+(?P<name>[\w.]+__mutmut_\d+): (?P<status>.+?)\s*$")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--modules", default=",".join(CORE), help=f"comma-separated subset of {', '.join(CORE)}")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "measurements" / "mutation")
    ap.add_argument("--snapshot", type=Path, default=None, help="default: /tmp/deploykit-mutation-<time>")
    ap.add_argument("--max-children", type=int, default=2, help="parallel mutant runs (the CI host has 2 cores)")
    ap.add_argument("--timeout-s", type=int, default=3600, help="give up on `mutmut run` after this long")
    ap.add_argument("--tests", default="tests/",
                    help="comma-separated test paths mutmut selects from (default: the whole unit tier); a "
                         "subset is a stricter measure (fewer tests can notice a mutant) and a faster run")
    ap.add_argument("--deselect", action="append", default=[], help="a unit test node id to leave out (repeatable)")
    ap.add_argument("--merge", action="store_true",
                    help="only write the overview summary.md under --out from the runs kept in its subdirectories")
    ap.add_argument("--no-baseline", action="store_true",
                    help="skip the unmutated unit run that finds already failing tests to deselect")
    return ap.parse_args(argv)


def snapshot(dst: Path) -> str:
    """Copy the working tree (as git sees it, uncommitted edits included) to ``dst``."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout
    return head + (" + uncommitted edits" if dirty.strip() else "")


def mutmut_config(paths: list[str], deselect: list[str], tests: list[str]) -> str:
    """The [tool.mutmut] table: the unit tier in a fixed order, no cache, quiet; tests that already
    fail on the unmutated snapshot are deselected (mutmut needs a green baseline)."""
    args = ["-m", "unit", "-p", "no:randomly", "-p", "no:cacheprovider", "-q", "-x"]
    for nodeid in deselect:
        args += ["--deselect", nodeid]
    # The whole package is copied (so every import resolves inside mutants/), only `paths` mutated.
    return ("\n[tool.mutmut]\n"
            'source_paths = ["deploy_kit"]\n'
            f"only_mutate = {json.dumps(paths)}\n"
            f"pytest_add_cli_args_test_selection = {json.dumps(tests)}\n"
            f"also_copy = {json.dumps(ALSO_COPY)}\n"
            f"pytest_add_cli_args = {json.dumps(args)}\n")


def write_config(root: Path, paths: list[str], deselect: list[str], tests: list[str]) -> None:
    pyproject = root / "pyproject.toml"
    text = re.sub(r"\n\[tool\.mutmut\]\n(?:[^\[].*\n?)*", "\n", pyproject.read_text())
    pyproject.write_text(text + mutmut_config(paths, deselect, tests))


def failing_baseline(root: Path) -> list[str]:
    """Unit tests that fail on the unmutated snapshot (others' work in progress): their node ids."""
    res = subprocess.run([sys.executable, "-m", "pytest", "-m", "unit", "-p", "no:randomly", "-p", "no:cacheprovider",
                          "-q", "-rfE", "--no-header"], cwd=root, capture_output=True, text=True, timeout=1800,
                         env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    return sorted({m.group(1) for m in re.finditer(r"^(?:FAILED|ERROR) (\S+?)(?: - .*)?$", res.stdout, re.M)})


def mutmut(root: Path, *args: str, timeout: float) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "mutmut"
    # The mutated copy must shadow the checkout's editable install (its .pth puts the checkout on
    # sys.path): PYTHONPATH comes first. The directory exists before Python starts so the import
    # system does not cache it as missing.
    (root / "mutants").mkdir(exist_ok=True)
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", NO_COLOR="1", PYTHONPATH=str(root / "mutants"))
    return subprocess.run([str(exe), *args], cwd=root, capture_output=True, text=True, timeout=timeout, env=env)


def module_of(mutant: str, modules: dict[str, str]) -> str:
    for name, path in modules.items():
        dotted = path[:-3].replace("/", ".")
        if mutant.startswith(dotted + "."):
            return name
    return "?"


def score(results: str, modules: dict[str, str]) -> tuple[dict[str, dict], list[str]]:
    per: dict[str, Counter] = {m: Counter() for m in modules}
    survivors = []
    for line in results.splitlines():
        m = RESULT_LINE.match(line)
        if not m:
            continue
        mod = module_of(m["name"], modules)
        per.setdefault(mod, Counter())[m["status"]] += 1
        if m["status"] in ("survived", "no tests"):
            survivors.append(m["name"])
    table = {}
    for mod, c in per.items():
        total = sum(c[s] for s in COUNTED)
        killed = sum(c[s] for s in KILLED)
        table[mod] = {"mutants": total, "killed": killed, "survived": c["survived"], "no_tests": c["no tests"],
                      "not_checked": c["not checked"],
                      "timeout": c["timeout"], "other": {k: v for k, v in c.items() if k not in COUNTED},
                      "score": round(killed / total, 3) if total else None}
    return table, survivors


def write_report(out: Path, table: dict, head: str, cmd: str, seconds: float, deselect: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    allk = sum(r["killed"] for r in table.values())
    alln = sum(r["mutants"] for r in table.values())
    summary = {"commit": head, "command": cmd, "run_seconds": round(seconds, 1), "deselected": deselect,
               "modules": table,
               "total": {"mutants": alln, "killed": allk, "score": round(allk / alln, 3) if alln else None}}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = [f"# Mutation score (mutmut, unit tier) — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
             f"Snapshot of `{head}`; `{cmd}`; mutmut run took {seconds:.0f} s.", "",
             "| module | mutants | killed | survived | no tests | not checked (time) | score |",
             "|---|---|---|---|---|---|---|"]
    for mod, r in table.items():
        pct = f"{r['killed'] / r['mutants']:.0%}" if r["mutants"] else "-"  # not the pre-rounded score
        lines.append(f"| {mod} | {r['mutants']} | {r['killed']} | {r['survived']} | {r['no_tests']} "
                     f"| {r['not_checked']} | {pct} |")
    total = f"{allk / alln:.0%}" if alln else "-"
    lines += [f"| **all** | {alln} | {allk} | | | | **{total}** |", "",
              "Raw: `results.txt` (every mutant's status), `survivors.diff` (each surviving mutant's diff).",
              "", "Unit tests deselected because they failed before any mutation: "
              + (", ".join(f"`{d}`" for d in deselect) or "none") + "."]
    (out / "summary.md").write_text("\n".join(lines) + "\n")


def merge(out: Path) -> int:
    """The overview: per core module, the newest complete run (no mutant left unchecked) among the
    runs kept under ``out`` (each run's own directory holds its raw results and survivors)."""
    best: dict[str, tuple[float, str, dict, dict]] = {}
    for f in sorted(out.glob("*/summary.json")):
        run = json.loads(f.read_text())
        when = f.stat().st_mtime
        for mod, row in run["modules"].items():
            if row["mutants"] and not row["not_checked"] and (mod not in best or when > best[mod][0]):
                best[mod] = (when, f.parent.name, row, run)
    lines = ["# Mutation score of deploykit's core modules (mutmut, unit tier)", "",
             "Per module, the newest complete run (every mutant checked); its directory holds mutmut's raw "
             "per-mutant results (`results.txt`), every survivor's diff (`survivors.diff`) and the command.", "",
             "| module | mutants | killed | survived | no tests | score | run (raw data) | commit |",
             "|---|---|---|---|---|---|---|---|"]
    total = killed = 0
    for mod in CORE:
        if mod not in best:
            lines.append(f"| {mod} | - | - | - | - | not measured | - | - |")
            continue
        _, run_dir, r, run = best[mod]
        total, killed = total + r["mutants"], killed + r["killed"]
        lines.append(f"| {mod} | {r['mutants']} | {r['killed']} | {r['survived']} | {r['no_tests']} | "
                     f"{r['killed'] / r['mutants']:.0%} | [{run_dir}]({run_dir}/) | `{run['commit'][:12]}` |")
    lines += [f"| **all** | {total} | {killed} | | | **{killed / total:.0%}** | | |" if total else "", "",
              "A mutant counts as killed when a test fails on it, or it times out; `no tests` and `survived` "
              "count against the score. Reproduce: `python benchmarks/mutation.py --modules NAME --tests ...` "
              "(each run's summary.md has its exact command), then `python benchmarks/mutation.py --merge`."]
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print((out / "summary.md").read_text())
    return 0


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.merge:
        return merge(a.out)
    wanted = [m.strip() for m in a.modules.split(",") if m.strip()]
    unknown = [m for m in wanted if m not in CORE]
    if unknown:
        print(f"unknown module(s) {unknown}; choose from {list(CORE)}", file=sys.stderr)
        return 2
    modules = {m: CORE[m] for m in wanted}
    root = a.snapshot or Path(f"/tmp/deploykit-mutation-{time.strftime('%Y%m%d-%H%M%S')}")
    root.mkdir(parents=True, exist_ok=True)
    head = snapshot(root)
    deselect = sorted(set(a.deselect) | set([] if a.no_baseline else failing_baseline(root)))
    tests = [t.strip() for t in a.tests.split(",") if t.strip()]
    write_config(root, list(modules.values()), deselect, tests)
    print(f"snapshot {root} ({head}); mutating {', '.join(modules)}; deselected (failing before any "
          f"mutation): {deselect or 'none'}", flush=True)
    t0 = time.monotonic()
    try:
        run = mutmut(root, "run", "--max-children", str(a.max_children), timeout=a.timeout_s)
        log, rc = run.stdout + run.stderr, run.returncode
    except subprocess.TimeoutExpired as exc:  # report what was checked; the rest is "not checked"
        parts = [x.decode() if isinstance(x, bytes) else (x or "") for x in (exc.stdout, exc.stderr)]
        log, rc = "".join(parts) + f"\nstopped after --timeout-s {a.timeout_s}\n", 124
    seconds = time.monotonic() - t0
    (root / "mutmut-run.log").write_text(log)
    res = mutmut(root, "results", "--all", "true", timeout=600)
    table, survivors = score(res.stdout, modules)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "results.txt").write_text(res.stdout)
    diffs = [mutmut(root, "show", name, timeout=60).stdout for name in survivors]
    (a.out / "survivors.diff").write_text("\n".join(diffs))
    cmd = "python benchmarks/mutation.py " + " ".join(argv if argv is not None else sys.argv[1:])
    write_report(a.out, table, head, cmd.strip(), seconds, deselect)
    print((a.out / "summary.md").read_text())
    return rc


if __name__ == "__main__":
    sys.exit(main())

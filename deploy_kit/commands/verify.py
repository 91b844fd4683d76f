"""CLI commands: bench, eval, report. They parse and print; deploy_kit.verify does the work.

Heavy imports (aiohttp, numpy, lm-eval, matplotlib, torch) happen inside the core functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .. import console
from .options import JsonOpt

TargetArg = Annotated[str, typer.Argument(help="name of a running deployment, or http://host:port")]
ModelOpt = Annotated[Optional[str], typer.Option("--model", help="served model name (URL targets)")]
OutOpt = Annotated[Optional[Path], typer.Option("--out", help="result path (default under reports/<name>/)")]


def _ints(s: str) -> list[int]:
    from ..errors import BadInput

    try:
        vals = [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise BadInput(f"--concurrency must be comma-separated integers, not {s!r}") from None
    if not vals or min(vals) < 1:
        raise BadInput("--concurrency values must be >= 1")
    return vals


def _ms(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.1f}"


BENCH_COLUMNS = ("conc", "rate", "ok/fail/unsent", "TTFT p50", "TTFT p99", "TPOT p50", "TPOT p99",
                 "ITL p50", "E2E p50", "req/s", "out tok/s", "goodput")


def _bench_rows(results: list[dict]) -> list[list[str]]:
    rows = []
    for r in results:
        m, c = r["metrics"], r["config"]
        g = m.get("request_goodput")
        rows.append([str(c.get("concurrency") or "-"), str(c.get("request_rate") or "inf"),
                     f"{m['completed']}/{m['failed']}/{m['not_sent']}", _ms(m["median_ttft_ms"]),
                     _ms(m["p99_ttft_ms"]), _ms(m["median_tpot_ms"]), _ms(m["p99_tpot_ms"]),
                     _ms(m["median_itl_ms"]), _ms(m["median_e2el_ms"]), f"{m['request_throughput']:.2f}",
                     f"{m['output_throughput']:.1f}", "-" if g is None else f"{g:.2f}"])
    return rows


def bench(
    target: TargetArg,
    model: ModelOpt = None,
    api: Annotated[str, typer.Option(help="completions | chat")] = "completions",
    concurrency: Annotated[Optional[str], typer.Option(help="sweep, e.g. 1,4,16")] = None,
    request_rate: Annotated[float, typer.Option(help="req/s (Poisson); inf = all at once")] = float("inf"),
    burstiness: Annotated[float, typer.Option(min=0.01, help="gamma shape; 1 = Poisson, <1 burstier")] = 1.0,
    num_prompts: Annotated[int, typer.Option(min=1, max=1_000_000)] = 32,
    input_len: Annotated[int, typer.Option(min=1, max=1_000_000)] = 128,
    output_len: Annotated[int, typer.Option(min=1, max=1_000_000)] = 64,
    random_prompts: Annotated[bool, typer.Option("--random", help="random token prompts")] = False,
    warmup: Annotated[int, typer.Option(min=0, max=1000, help="warm-up requests, excluded")] = 1,
    max_duration: Annotated[float, typer.Option(min=0.1, help="the whole bench ends within this many s; "
                                                "requests still running then count as failed")] = 600.0,
    connect_timeout: Annotated[float, typer.Option(min=0.1, help="s to open a connection")] = 10.0,
    read_timeout: Annotated[float, typer.Option(min=0.1, help="longest silence (s) within one answer, "
                                                "first token included")] = 120.0,
    slo_ttft_ms: Annotated[Optional[float], typer.Option(help="goodput SLO")] = 2000.0,
    slo_tpot_ms: Annotated[Optional[float], typer.Option(help="goodput SLO")] = 100.0,
    tokenizer_dir: Annotated[Optional[str], typer.Option(help="dir with tokenizer.json")] = None,
    out: OutOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Streaming load test; metrics keyed like `vllm bench serve`. Exit 5 when a request failed."""
    from ..errors import BadInput
    from ..verify.bench import BenchConfig, bench_failures, save_results, sweep
    from ..verify.target import resolve_target

    if api not in ("completions", "chat"):
        raise BadInput("--api must be completions or chat", field="api")
    levels = _ints(concurrency) if concurrency else [0]
    tgt = resolve_target(target, model)
    cfg = BenchConfig(url=tgt.url, model=tgt.model, api=api, input_len=input_len, output_len=output_len,
                      num_prompts=num_prompts, request_rate=request_rate, burstiness=burstiness,
                      warmup=warmup, max_duration_s=max_duration, connect_timeout_s=connect_timeout,
                      read_timeout_s=read_timeout, random_prompts=random_prompts,
                      tokenizer_dir=tokenizer_dir or tgt.weights_dir, slo_ttft_ms=slo_ttft_ms,
                      slo_tpot_ms=slo_tpot_ms)
    results = sweep(cfg, levels)
    dest = out or Path("reports") / (tgt.name or cfg.model.replace("/", "_")) / "bench"
    files = save_results(results, dest)
    if json_:
        console.emit_json([{"config": r["config"], "metrics": r["metrics"]} for r in results])
    else:
        console.table(BENCH_COLUMNS, _bench_rows(results), title="bench (ms unless noted)")
        console.out(f"results: {dest} ({len(files)} files)")
    failure = bench_failures(results)
    if failure:
        from ..errors import VerificationFailed

        raise VerificationFailed(failure, hint=f"per-request reasons in {dest}/records-*.jsonl")


def eval_(
    target: TargetArg,
    reference: Annotated[str, typer.Option(help="'hf' (transformers on CPU) or http://host:port")] = "hf",
    model: ModelOpt = None,
    reference_model: Annotated[Optional[str], typer.Option()] = None,
    card: Annotated[Optional[str], typer.Option(help="card for smoke prompts/baseline (URL targets)")] = None,
    weights_dir: Annotated[Optional[str], typer.Option(help="weights for --reference hf")] = None,
    k: Annotated[int, typer.Option(min=1, max=20, help="top-k logprobs")] = 5,
    max_tokens: Annotated[int, typer.Option(min=1, max=4096)] = 32,
    task: Annotated[bool, typer.Option("--task", help="also run the card's lm-eval baseline")] = False,
    include_path: Annotated[Optional[str], typer.Option(help="lm-eval dir with local task YAMLs "
                                                        "(default: deploykit's evals/)")] = None,
    out: OutOpt = None,
) -> None:
    """Greedy equivalence vs a reference (+ optional lm-eval accuracy). Exit 5 on failure."""
    from ..errors import VerificationFailed
    from ..verify.evaluate import run_card_eval
    from ..verify.target import resolve_target

    tgt = resolve_target(target, model)
    res = run_card_eval(tgt, reference, card=card, weights_dir=weights_dir, k=k, max_tokens=max_tokens,
                        reference_model=reference_model, task=task, include_path=include_path, out=out)
    for r in res["equivalence"]["results"]:
        fd = r["first_divergence"]
        console.out(f"{'ok  ' if r['ok'] else 'FAIL'} {r['prompt'][:50]!r}: " +
                    ("identical" if not fd else f"diverges at {fd['position']}: "
                     f"{fd['deployment_token']!r} vs {fd['reference_token']!r}"))
    acc = res["accuracy"]
    if acc:
        console.out(f"{acc['task']} {acc['metric']} = {acc['value']:.4f} (baseline {acc['baseline']}, "
                    f"rel tol {acc['rel_tol']}): {'ok' if acc['ok'] else 'FAIL'}")
    console.out(f"results: {res['file']}")
    if not res["ok"]:
        raise VerificationFailed("deployment does not match the reference", hint=str(res["file"]))


def report(
    name: Annotated[str, typer.Argument(help="deployment or card name")],
    out: OutOpt = None,
    url: Annotated[Optional[str], typer.Option(help="server URL for its /version")] = None,
    bandwidth_gbs: Annotated[Optional[float], typer.Option(min=0.001, help="memory bandwidth GB/s "
                                                           "for the roofline")] = None,
    measure_cpu_bandwidth: Annotated[bool, typer.Option(help="numpy copy benchmark for the roofline")] = False,
    weights_dir: Annotated[Optional[str], typer.Option()] = None,
    command: Annotated[str, typer.Option(help="exact deploy command to record")] = "",
    json_: JsonOpt = False,
) -> None:
    """Markdown + JSON + PNG report from bench/eval evidence in reports/<name>."""
    from ..verify.report import report_for

    dest = out or Path("reports") / name
    data: dict[str, Any] = report_for(name, dest, url=url, bandwidth_gbs=bandwidth_gbs,
                                      measure_cpu_bandwidth=measure_cpu_bandwidth,
                                      weights_dir=weights_dir, command=command)
    if json_:
        console.emit_json(data)
        return
    console.out(f"report: {dest / 'report.md'} ({len(data['performance'])} load levels, "
                f"{len(data['plots'])} plots)")


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)
    app.command("eval")(eval_)
    app.command("report")(report)

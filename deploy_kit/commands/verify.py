"""CLI commands: bench, eval, report. Heavy imports go inside the command functions."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def resolve_target(name_or_url: str, model: str | None) -> tuple[str, str, str, str | None]:
    """(url, served model, card name, weights dir). A card NAME resolves via the runtime state."""
    from ..errors import BadInput

    if name_or_url.startswith(("http://", "https://")):
        return name_or_url.rstrip("/"), model or "", "", None
    try:
        from ..runtime import state
    except ImportError:
        raise BadInput(f"{name_or_url!r} is not a URL and the runtime is not available",
                       hint="pass http://host:port") from None
    rec = state.load(name_or_url)
    if rec is None or rec.port is None:
        raise BadInput(f"no running deployment named {name_or_url!r}",
                       hint=f"run `deploykit up {name_or_url}` or pass a URL")
    # the weights the container mounts (plan.weights.host_path); older records: the cache layout
    host = (rec.plan.get("weights") or {}).get("host_path")
    if host:
        wdir = Path(host)
    else:
        from ..paths import cache_dir

        wdir = cache_dir() / rec.card_name
    return rec.url, model or rec.served_model_name or rec.card_name, rec.card_name, \
        str(wdir) if wdir.is_dir() else None


def _ints(s: str) -> list[int]:
    from ..errors import BadInput

    try:
        vals = [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise BadInput(f"--concurrency must be comma-separated integers, not {s!r}") from None
    if not vals or min(vals) < 1:
        raise BadInput("--concurrency values must be >= 1")
    return vals


def register(app: typer.Typer) -> None:
    @app.command("bench")
    def bench(
        target: str = typer.Argument(..., help="card NAME of a running deployment, or http://host:port"),
        model: Optional[str] = typer.Option(None, help="served model name (URL targets)"),
        api: str = typer.Option("completions", help="completions | chat"),
        concurrency: Optional[str] = typer.Option(None, help="sweep, e.g. 1,4,16"),
        request_rate: float = typer.Option(float("inf"), help="req/s (Poisson); inf = all at once"),
        burstiness: float = typer.Option(1.0, help="gamma shape; 1 = Poisson, <1 burstier"),
        num_prompts: int = typer.Option(32, min=1),
        input_len: int = typer.Option(128, min=1),
        output_len: int = typer.Option(64, min=1),
        random_prompts: bool = typer.Option(False, "--random", help="random token prompts"),
        warmup: int = typer.Option(1, min=0, help="warm-up requests, excluded"),
        max_duration: float = typer.Option(600.0, help="stop issuing requests after this many s"),
        slo_ttft_ms: Optional[float] = typer.Option(2000.0, help="goodput SLO"),
        slo_tpot_ms: Optional[float] = typer.Option(100.0, help="goodput SLO"),
        tokenizer_dir: Optional[str] = typer.Option(None, help="dir with tokenizer.json"),
        out: Optional[Path] = typer.Option(None, help="result dir (default reports/<name>/bench)"),
    ) -> None:
        """Streaming load test; metrics keyed like `vllm bench serve`."""
        from ..errors import BadInput
        from ..verify.bench import BenchConfig, save_results, sweep

        if api not in ("completions", "chat"):
            raise BadInput("--api must be completions or chat", field="api")
        url, served, card, wdir = resolve_target(target, model)
        cfg = BenchConfig(url=url, model=served, api=api, input_len=input_len, output_len=output_len,
                          num_prompts=num_prompts, request_rate=request_rate, burstiness=burstiness,
                          warmup=warmup, max_duration_s=max_duration, random_prompts=random_prompts,
                          tokenizer_dir=tokenizer_dir or wdir, slo_ttft_ms=slo_ttft_ms,
                          slo_tpot_ms=slo_tpot_ms)
        results = sweep(cfg, _ints(concurrency) if concurrency else [0])
        for r in results:   # 0 = unbounded
            if r["config"]["concurrency"] == 0:
                r["config"]["concurrency"] = None
        dest = out or Path("reports") / (card or cfg.model.replace("/", "_")) / "bench"
        files = save_results(results, dest)
        _table(results)
        typer.echo(f"results: {dest} ({len(files)} files)")

    @app.command("eval")
    def eval_(
        target: str = typer.Argument(..., help="card NAME of a running deployment, or http://host:port"),
        reference: str = typer.Option("hf", help="'hf' (transformers on CPU) or http://host:port"),
        model: Optional[str] = typer.Option(None),
        reference_model: Optional[str] = typer.Option(None),
        card: Optional[str] = typer.Option(None, help="card for smoke prompts/baseline (URL targets)"),
        weights_dir: Optional[str] = typer.Option(None, help="weights for --reference hf"),
        k: int = typer.Option(5, min=1, help="top-k logprobs"),
        max_tokens: int = typer.Option(32, min=1),
        task: bool = typer.Option(False, "--task", help="also run the card's lm-eval baseline"),
        include_path: Optional[str] = typer.Option(None, help="lm-eval dir with local task YAMLs "
                                                   "(default: deploykit's evals/, e.g. capitals_mini)"),
        out: Optional[Path] = typer.Option(None, help="eval JSON (default reports/<name>/eval.json)"),
    ) -> None:
        """Greedy equivalence vs a reference (+ optional lm-eval accuracy). Exit 5 on failure."""
        import json

        from ..errors import BadInput, VerificationFailed
        from ..verify.bench import resolve_model
        from ..verify.evaluate import FIXED_PROMPTS, chat_prompt, run_equivalence, run_lm_eval

        url, served, card_name, wdir = resolve_target(target, model)
        served = resolve_model(url, served)
        loaded = None
        if card or card_name:
            from ..cardload import load_card

            loaded = load_card(card or card_name)
        smoke_prompts = []
        for p in (loaded.card.smoke.prompts if loaded else []):
            # chat smoke prompts go through the model's chat template (same text to both sides)
            text = chat_prompt(weights_dir or wdir, p.prompt) if getattr(p, "api", "") == "chat" else None
            smoke_prompts.append(text or p.prompt)
        # dict.fromkeys: a smoke prompt equal to a fixed one is compared once
        prompts = list(dict.fromkeys(smoke_prompts + FIXED_PROMPTS))
        res = run_equivalence(url, served, prompts, reference, k=k, max_tokens=max_tokens,
                              weights_dir=weights_dir or wdir, reference_model=reference_model)
        dest = out or Path("reports") / (card_name or served.replace("/", "_")) / "eval.json"
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(json.dumps(res.to_dict(), indent=2))
        for r in res.results:
            fd = r.first_divergence
            typer.echo(f"{'ok  ' if r.ok else 'FAIL'} {r.prompt[:50]!r}: " +
                       ("identical" if not fd else f"diverges at {fd['position']}: "
                        f"{fd['deployment_token']!r} vs {fd['reference_token']!r}"))
        failed = not res.ok
        if task:
            base = loaded.card.eval if loaded else None
            if base is None:
                raise BadInput("--task needs an `eval:` baseline in the card", field="eval")
            from ..paths import data_dir

            acc = run_lm_eval(url, served, base.task, base.metric, base.value, base.rel_tol,
                              limit=base.limit, tokenizer=weights_dir or wdir,
                              include_path=include_path or str(data_dir("evals")))
            dest.with_name("accuracy.json").write_text(json.dumps(acc, indent=2))
            typer.echo(f"{base.task} {acc['metric']} = {acc['value']:.4f} (baseline {base.value}, "
                       f"rel tol {base.rel_tol}): {'ok' if acc['ok'] else 'FAIL'}")
            failed |= not acc["ok"]
        typer.echo(f"results: {dest}")
        if failed:
            raise VerificationFailed("deployment does not match the reference", hint=str(dest))

    @app.command("report")
    def report(
        name: str = typer.Argument(..., help="card name"),
        out: Optional[Path] = typer.Option(None, help="report dir (default reports/<name>)"),
        url: Optional[str] = typer.Option(None, help="server URL for its /version"),
        bandwidth_gbs: Optional[float] = typer.Option(None, help="memory bandwidth GB/s for the roofline"),
        measure_cpu_bandwidth: bool = typer.Option(False, help="numpy copy benchmark for the roofline"),
        weights_dir: Optional[str] = typer.Option(None),
        command: str = typer.Option("", help="exact deploy command to record"),
    ) -> None:
        """Markdown + JSON + PNG report from bench/eval evidence in reports/<name>."""
        from ..verify import report as rp

        dest = out or Path("reports") / name
        rec = None
        try:
            from ..runtime import state

            rec = state.load(name)
        except ImportError:
            pass
        url = url or (rec.url if rec and rec.port else None)
        plan_file = Path(rec.render_dir) / "plan.json" if rec and rec.render_dir else None
        smoke_file = None
        if rec:
            cand = sorted(state.run_dir(name).glob("smoke*.json"))
            smoke_file = cand[-1] if cand else None
        bench_dir = dest / "bench"
        levels = rp.load_bench_dir(bench_dir) if bench_dir.is_dir() else []
        env = rp.environment(url, rec.image if rec else "", rec.image_id if rec else "")
        roof = None
        if levels:
            params_b, tp = None, 1
            try:
                from ..cardload import load_card

                c = load_card(name).card
                params_b, tp = c.model.params_b, c.serve.tensor_parallel_size or 1
            except Exception:  # noqa: BLE001 - a URL-only report has no card
                pass
            if bandwidth_gbs:
                bw, src = bandwidth_gbs * 1e9, "given with --bandwidth-gbs"
            elif measure_cpu_bandwidth:
                bw, src = rp.cpu_bandwidth(), "measured: numpy copy (read+write) on this host"
            else:
                bw, src = None, "unknown (pass --bandwidth-gbs, 1600 for 910B vendor figure, or --measure-cpu-bandwidth)"
            dbytes, dsrc = rp.served_dtype_bytes(rec.plan.get("argv") if rec else None)
            wdir = weights_dir or ((rec.plan.get("weights") or {}).get("host_path") if rec else None)
            if params_b and dbytes:   # served dtype beats the checkpoint's file size
                wb, wsrc = params_b * 1e9 * dbytes, f"params_b {params_b} x {dbytes:g} bytes ({dsrc})"
            else:
                wb, wsrc = rp.weight_bytes(wdir, params_b)
            roof = rp.roofline(levels, wb, bw, src, tp, wsrc)
            if roof.get("source_file"):
                roof["source_file"] = f"evidence/bench/{roof['source_file']}"
        eval_file = dest / "eval.json"
        acc = dest / "accuracy.json"
        data = rp.build_report(name, dest, bench_dir=bench_dir if levels else None,
                               eval_file=eval_file if eval_file.is_file() else None,
                               accuracy_file=acc if acc.is_file() else None, smoke_file=smoke_file,
                               plan_file=plan_file if plan_file and plan_file.is_file() else None,
                               command=command, env=env, roof=roof)
        typer.echo(f"report: {dest / 'report.md'} ({len(data['performance'])} load levels, "
                   f"{len(data['plots'])} plots)")


def _table(results: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="bench (ms unless noted)")
    for col in ("conc", "rate", "ok/fail", "TTFT p50", "TTFT p99", "TPOT p50", "TPOT p99", "ITL p50",
                "E2E p50", "req/s", "out tok/s", "goodput"):
        t.add_column(col, justify="right")
    for r in results:
        m, c = r["metrics"], r["config"]
        g = m.get("request_goodput")
        t.add_row(str(c.get("concurrency") or "-"), str(c.get("request_rate") or "inf"),
                  f"{m['completed']}/{m['failed']}", f"{m['median_ttft_ms']:.1f}", f"{m['p99_ttft_ms']:.1f}",
                  f"{m['median_tpot_ms']:.1f}", f"{m['p99_tpot_ms']:.1f}", f"{m['median_itl_ms']:.1f}",
                  f"{m['median_e2el_ms']:.1f}", f"{m['request_throughput']:.2f}",
                  f"{m['output_throughput']:.1f}", "-" if g is None else f"{g:.2f}")
    Console().print(t)
    for r in results:
        if r["metrics"]["errors"]:
            Console(stderr=True).print(f"errors (c={r['config'].get('concurrency')}): {r['metrics']['errors'][:3]}")

"""Command line: a thin layer over the public API in `optpipe.api` (parse, call, print). It imports
nothing else of optpipe but the errors and their exit codes (an import-linter contract checks it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from optpipe.errors import (
    EXIT_INTERRUPTED,
    EXIT_NIGHTLY_FAILED,
    EXIT_REGRESSION,
    BuildInterrupted,
    OptpipeError,
    exit_code_for,
)

app = typer.Typer(add_completion=False, no_args_is_help=True, help="optpipe: recipe in, measured deployable model out.")

HISTORY_URL = typer.Option(
    None,
    "--history-url",
    help="History database URL (default: $OPTPIPE_HISTORY_URL, else SQLite in the optpipe cache; 'off' records nothing).",
)


def _console():
    from rich.console import Console

    console = Console(highlight=False)
    # Logs and CI are not terminals: use a wide fixed width so the table stays readable.
    return console if console.is_terminal else Console(highlight=False, width=220)


def _fail(exc: OptpipeError) -> None:
    from rich.console import Console

    err = Console(stderr=True, highlight=False)
    problems = getattr(exc, "problems", None)
    if problems:
        err.print(f"[bold red]{len(problems)} problem(s):[/]")
        for p in problems:
            err.print("  " + p.render(), markup=False, soft_wrap=True)
    elif exc.exit_code == EXIT_INTERRUPTED:
        err.print(f"[bold yellow]{exc}[/]", soft_wrap=True)
    else:
        err.print(f"[bold red]error:[/] {exc}", soft_wrap=True)
    raise typer.Exit(exc.exit_code)


@app.command()
def validate(recipe: Path = typer.Argument(..., help="Recipe YAML file.")) -> None:
    """Check a recipe and report every problem at once (file:line: field: message)."""
    from optpipe.api import load_recipe
    from optpipe.api import validate as check

    try:
        r = load_recipe(recipe)
        checked = check(r, recipe)
    except OptpipeError as exc:
        _fail(exc)
    console = _console()
    for w in checked.warnings:
        console.print(f"[yellow]warning:[/] {w}")
    console.print(f"{recipe}: OK ({len(r.passes)} passes, target {r.target})")


@app.command(name="plan")
def plan_(recipe: Path = typer.Argument(..., help="Recipe YAML file.")) -> None:
    """Predict each candidate's memory and decode speed on the target before loading anything."""
    from rich.table import Table

    from optpipe.api import forecast, load_recipe, render_table

    try:
        r = load_recipe(recipe)
        f = forecast(r, recipe)
    except OptpipeError as exc:
        _fail(exc)
    console = _console()
    sh, bm = f.shape, r.benchmark
    console.print(
        f"[bold]optpipe plan[/] {recipe}: {sh.model_type}, {sh.total_params / 1e9:.2f} B parameters, "
        f"{sh.dtype} ({sh.source}; no weights read)"
    )
    console.print(
        f"target {f.target.name}: {f.target.memory_gb:g} GB, {f.target.memory_bandwidth_gbs:g} GB/s; "
        f"benchmark prompt {bm.prompt_tokens} + {bm.new_tokens} new tokens, batch {bm.batch_size}"
    )
    header, *rows = render_table(f.candidates)
    t = Table(*header, "why")
    for cells, c in zip(rows, f.candidates):
        t.add_row(*cells, c.reason)
    console.print(t)
    console.print(
        "peak = weights + KV cache at prompt+new tokens + prefill workspace + runtime overhead; roofline tok/s = "
        "target bandwidth / bytes read per decode step (an upper bound, not a measurement)",
        style="dim",
    )
    if f.build_problems:
        console.print("[yellow]optpipe build would refuse this recipe on this host:[/]")
        for p in f.build_problems:
            console.print("  " + p.render(), markup=False, soft_wrap=True)


@app.command()
def calibrate(
    spec_bandwidth_gbs: float | None = typer.Option(None, help="This GPU's vendor memory bandwidth (if not in the catalogue)."),
    shapes: str | None = typer.Option(None, help="Comma list of sweep shapes (default: all four)."),
) -> None:
    """Fit this GPU's decode-step model (fixed cost + bytes/bandwidth) so projections carry an interval."""
    from optpipe.api import calibrate as run_calibration

    console = _console()
    try:
        path, cal = run_calibration(
            spec_bandwidth_gbs, shapes.split(",") if shapes else None, say=lambda m: console.print(m, markup=False)
        )
    except OptpipeError as exc:
        _fail(exc)
    console.print(
        f"{cal.gpu}: fixed {cal.fixed_s * 1e3:.3f} ± {cal.fixed_se * 1e3:.3f} ms/step, "
        f"{cal.efficiency:.0%} of {cal.spec_bandwidth_gbs:g} GB/s spec bandwidth; written to {path}"
    )


@app.command()
def schema() -> None:
    """Print the recipe JSON Schema (for editor completion and CI checks)."""
    from optpipe.api import recipe_schema

    print(json.dumps(recipe_schema(), indent=2))


@app.command()
def targets() -> None:
    """List target devices with memory, bandwidth and supported dtypes."""
    from rich.table import Table

    from optpipe.api import list_targets, load_target

    t = Table("name", "device", "kind", "memory GB", "bandwidth GB/s", "cc", "dtypes")
    for name in list_targets():
        d = load_target(name)
        t.add_row(
            d.name,
            d.display_name,
            d.kind,
            f"{d.memory_gb:g}",
            f"{d.memory_bandwidth_gbs:g}",
            d.compute_capability or "–",
            ", ".join(d.dtypes),
        )
    _console().print(t)


@app.command()
def passes() -> None:
    """List passes, their parameters and what each needs to run."""
    from rich.table import Table

    from optpipe.api import pass_registry

    t = Table("pass", "what it does", "parameters", "requires")
    for name, cls in pass_registry().items():
        fields = [f"{n}" for n in cls.Params.model_fields if n not in ("kind",)]
        t.add_row(name, cls.summary, ", ".join(fields), cls.requires)
    _console().print(t)


def _live_printer(console):
    """Progress callback: a live table on a terminal, plain lines otherwise."""
    from rich.table import Table

    from optpipe.api import COLUMNS, row

    rows: list[list[str]] = []
    warnings: list[str] = []  # figures a reader must not take at face value (under load, unstable)
    state: dict[str, Any] = {"status": ""}

    def table() -> Table:
        t = Table(*COLUMNS, title="optpipe build", show_lines=False)
        for r in rows:
            t.add_row(*r)
        return t

    live = None
    if console.is_terminal:
        from rich.console import Group
        from rich.live import Live
        from rich.text import Text

        live = Live(console=console, refresh_per_second=4, transient=False)
        live.start()

        def render():
            live.update(Group(table(), Text(state["status"], style="dim")))
    else:

        def render():
            pass

    def on_event(event: str, payload: Any) -> None:
        if event == "phase":
            state["status"] = payload
            if live is None:
                console.print(f"· {payload}", markup=False)
        elif event == "measure":
            rec, msg = payload
            state["status"] = f"[{rec.index} {rec.name}] {msg}"
            if live is None and not msg.startswith(("perplexity window", "benchmark trial")):
                console.print(f"  [{rec.index} {rec.name}] {msg}", markup=False)
        elif event == "note":
            console.print(f"[yellow]note:[/] {payload}", soft_wrap=True)
        elif event == "candidate":
            rows.append(row(payload))
            m = payload.measurements
            warnings.extend(f"[{payload.index} {payload.name}] {w}" for w in (m.warnings if m is not None else []))
            if live is None:
                console.print("  -> " + " | ".join(f"{c}: {v}" for c, v in zip(COLUMNS, rows[-1])), markup=False)
                for w in m.warnings if m is not None else []:
                    console.print(f"  [yellow]warning:[/] {w}", highlight=False)
        render()

    def stop():
        if live is not None:
            state["status"] = ""
            render()
            live.stop()
            for w in warnings:
                console.print(f"[yellow]warning:[/] {w}", highlight=False)
        else:
            console.print(table())

    return on_event, stop


@app.command()
def build(
    recipe: Path = typer.Argument(..., help="Recipe YAML file."),
    output_dir: Path | None = typer.Option(None, "--output-dir", "-o", help="Override the recipe's output_dir."),
    keep_candidates: bool = typer.Option(False, help="Keep every candidate's weights, not only the artifact."),
    history_url: str | None = HISTORY_URL,
) -> None:
    """Measure the baseline, apply the passes in order, stop at the first candidate within budget."""
    import time

    from optpipe.api import load_recipe, plan, run_build

    console = _console()
    t0 = time.perf_counter()
    try:
        r = load_recipe(recipe)
        if output_dir is not None:
            # Command-line paths are the shell's: relative to the working directory, not the recipe's.
            r = r.model_copy(update={"output_dir": str(output_dir.absolute()).replace("{", "{{").replace("}", "}}")})
        p = plan(r, recipe)
    except OptpipeError as exc:
        _fail(exc)
    except KeyboardInterrupt:  # before anything was built (Typer would exit 130 silently)
        _fail(BuildInterrupted("interrupted (SIGINT) before the build started; nothing was written"))
    ev, bm = r.evaluation, r.benchmark
    console.print(
        f"[bold]optpipe build[/] {recipe}: target {p.target.name}, device {p.device}, {len(p.passes)} passes, stop: {r.stop}"
    )
    console.print(
        f"evaluation: HellaSwag {ev.hellaswag_items} items (seed {ev.seed}), WikiText-2 {ev.perplexity_tokens} tokens "
        f"(window {ev.perplexity_window}/stride {ev.perplexity_stride}); benchmark: prompt {bm.prompt_tokens}, "
        f"{bm.new_tokens} new tokens, batch {bm.batch_size}, {bm.min_trials}-{bm.max_trials} trials"
    )
    for w in p.warnings:
        console.print(f"[yellow]note:[/] {w}")
    for pp in p.passes:
        if pp.skip_reason:
            console.print(f"[yellow]skipping pass {pp.index} {pp.name}:[/] {pp.skip_reason}", markup=True)
    on_event, stop = _live_printer(console)
    try:
        result = run_build(p, on_event, keep_candidates, history_url)
    except OptpipeError as exc:
        stop()
        _fail(exc)
    except KeyboardInterrupt:  # a second Ctrl-C while the first one was being recorded
        stop()
        _fail(BuildInterrupted(f"interrupted (SIGINT) — run the same command again to resume from the cache ({p.output_dir})"))
    stop()
    took = time.perf_counter() - t0
    console.print(
        f"status: [bold]{result.status.value}[/]"
        + (f", selected {result.selected.index} {result.selected.name}" if result.selected else "")
    )
    if result.artifact_dir:
        console.print(f"artifact: {result.artifact_dir}")
    console.print(
        f"report: {result.output_dir / 'report.md'}  manifest: {result.output_dir / 'manifest.json'}  wall time: {took / 60:.1f} min"
    )
    raise typer.Exit(exit_code_for(result.status.value))


@app.command()
def history(
    model: str | None = typer.Option(None, help="Model source (substring) or fingerprint prefix."),
    recipe: str | None = typer.Option(None, help="Recipe name (file stem) or file."),
    target: str | None = typer.Option(None, help="Target name."),
    limit: int = typer.Option(50, min=1, help="Newest N builds."),
    add: Path | None = typer.Option(None, "--add", help="Record the build in this output directory (again) first."),
    history_url: str | None = HISTORY_URL,
) -> None:
    """List recorded builds, newest first (every `optpipe build` and `optpipe nightly` is recorded)."""
    from rich.table import Table

    from optpipe.api import add_to_history, list_builds

    console = _console()
    try:
        if add is not None:
            rec = add_to_history(add, history_url)
            console.print(f"{'updated' if rec.replaced else 'recorded'} build #{rec.id} from {add}")
        rows = list_builds(model, recipe, target, limit, history_url)
    except OptpipeError as exc:
        _fail(exc)
    t = Table("id", "started (UTC)", "recipe", "model", "fingerprint", "target", "status", "selected", "decode tok/s", "output")
    for b in rows:
        sel = next((c for c in b.candidates if c.name == b.selected), None)
        speed = sel or next((c for c in b.candidates if c.decode_tok_s is not None), None)
        tok_s = f"{speed.decode_tok_s:.1f} ({speed.name})" if speed is not None and speed.decode_tok_s is not None else "–"
        t.add_row(
            str(b.id),
            b.started[:19],
            b.recipe_name,
            b.model,
            b.model_fingerprint,
            b.target,
            b.status,
            b.selected or "–",
            tok_s,
            b.output_dir,
        )
    console.print(t)
    if not rows:
        console.print("no builds recorded" + (" match" if model or recipe or target else ""))


@app.command()
def compare(
    a: str = typer.Argument(..., help="Build A: a history id (12) or an output directory."),
    b: str = typer.Argument(..., help="Build B, compared against A."),
    max_speed_drop_pct: float = typer.Option(5.0, help="Tolerated decode tok/s drop, percent."),
    max_hellaswag_drop_points: float = typer.Option(1.0, help="Tolerated HellaSwag acc_norm drop, points."),
    max_perplexity_rise_pct: float = typer.Option(3.0, help="Tolerated perplexity rise, percent."),
    max_size_rise_pct: float = typer.Option(1.0, help="Tolerated size rise, percent."),
    max_memory_rise_pct: float = typer.Option(10.0, help="Tolerated peak memory rise, percent."),
    confidence: float = typer.Option(0.95, help="Two-sided confidence of every interval."),
    history_url: str | None = HISTORY_URL,
) -> None:
    """Per-metric deltas of B against A with intervals (paired over shared HellaSwag items and perplexity
    windows); exits 5 when a metric is worse beyond its tolerance."""
    from pydantic import ValidationError

    from optpipe.api import Tolerance, compare_builds, comparison_markdown
    from optpipe.errors import InvalidInputError

    options = {  # Tolerance field -> (the option that sets it, its value)
        "speed_drop_pct": ("--max-speed-drop-pct", max_speed_drop_pct),
        "hellaswag_drop_points": ("--max-hellaswag-drop-points", max_hellaswag_drop_points),
        "perplexity_rise_pct": ("--max-perplexity-rise-pct", max_perplexity_rise_pct),
        "size_rise_pct": ("--max-size-rise-pct", max_size_rise_pct),
        "memory_rise_pct": ("--max-memory-rise-pct", max_memory_rise_pct),
        "confidence": ("--confidence", confidence),
    }
    try:
        try:
            tol = Tolerance(**{field: value for field, (_, value) in options.items()})
        except ValidationError as exc:
            raise InvalidInputError(
                "; ".join(f"{options[e['loc'][0]][0]} {options[e['loc'][0]][1]}: {e['msg']}" for e in exc.errors())
            ) from None
        c = compare_builds(a, b, tol, history_url)
    except OptpipeError as exc:
        _fail(exc)
    console = _console()
    console.print(comparison_markdown(c), markup=False, soft_wrap=True)
    if c.regressed:
        console.print(
            f"[bold red]regression[/]: {len(c.regressions)} metric(s) beyond tolerance"
            + (f", budget {c.status_change}" if c.status_change else "")
        )
        raise typer.Exit(EXIT_REGRESSION)


@app.command()
def nightly(
    config: Path = typer.Argument(..., help="Nightly configuration YAML (sources and their recipes)."),
    rebuild_all: bool = typer.Option(
        False, help="Build every entry, also those unchanged (their candidates come from the cache)."
    ),
    history_url: str | None = HISTORY_URL,
    executor: str | None = typer.Option(
        None, help="local (default: one build after another here) or ray (one Ray task per build; needs optpipe's ray extra)."
    ),
    ray_address: str | None = typer.Option(
        None, help="Ray cluster address (host:port, ray://host:port, auto); default: a local one."
    ),
) -> None:
    """Build what a new model (or package) release changed, record it, compare with the previous build,
    write a markdown report; exit 5 on a regression beyond tolerance, 6 when a build could not run."""
    from optpipe.api import run_nightly

    console = _console()

    def on_event(event: str, payload: Any) -> None:
        if event == "phase":
            console.print(f"· {payload}", markup=False)
        elif event == "note":
            console.print(f"[yellow]note:[/] {payload}", soft_wrap=True)
        elif event == "candidate":
            console.print(f"  [{payload.index} {payload.name}] {payload.status} {payload.verdict}", markup=False)

    try:
        result = run_nightly(config, history_url, rebuild_all, on_event, executor, ray_address)
    except OptpipeError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        _fail(BuildInterrupted("interrupted (SIGINT): run the same command again to resume from the cache"))
    for e in result.entries:
        console.print(f"{e.entry.source}/{Path(e.entry.recipe_file).stem}: {e.action} ({e.why})", markup=False)
    console.print(f"report: {result.report}")
    if result.regressed:
        console.print(f"[bold red]{len(result.regressed)} regression(s)[/]")
        raise typer.Exit(EXIT_REGRESSION)
    if result.failed:
        raise typer.Exit(EXIT_NIGHTLY_FAILED)


def _given(**options: Any) -> dict[str, Any]:
    """The options the user gave; the rest take the recipe's defaults (one source of truth)."""
    return {k: v for k, v in options.items() if v is not None}


def _measure_dir(directory: Path, device: str, benchmark: Any, evaluation: Any) -> Any:
    from optpipe.api import measure_directory

    with _console().status("measuring") as status:
        try:
            return measure_directory(directory, device, benchmark, evaluation, on_progress=status.update)
        except OptpipeError as exc:
            status.stop()
            _fail(exc)


@app.command()
def bench(
    directory: Path = typer.Argument(..., help="A model directory (e.g. a build's artifact/)."),
    prompt_tokens: int | None = typer.Option(None, help="Default: the recipe default (benchmark.prompt_tokens)."),
    new_tokens: int | None = typer.Option(None, help="Default: the recipe default (benchmark.new_tokens)."),
    batch_size: int | None = typer.Option(None, help="Default: the recipe default (benchmark.batch_size)."),
    device: str = typer.Option("cpu", help="cpu or cuda"),
    json_out: Path | None = typer.Option(None, "--json"),
) -> None:
    """Benchmark a saved model in a fresh process with its runtime settings (decode loop, dtype, attention)."""
    from optpipe.api import BenchmarkSettings, EvaluationSettings

    r = _measure_dir(
        directory,
        device,
        BenchmarkSettings(**_given(prompt_tokens=prompt_tokens, new_tokens=new_tokens, batch_size=batch_size)),
        EvaluationSettings(hellaswag_items=0, perplexity_tokens=0),
    )
    b = r.benchmark
    s, lat = b.decode_tok_s, b.token_latency_ms
    _console().print(
        f"{directory}: decode {s.mean:.1f} tok/s (CV {s.cv:.1%}, {s.n} trials), "
        f"TTFT {b.ttft_ms.p50:.0f} ms, token latency p50/p95/p99 {lat.p50:.1f}/{lat.p95:.1f}/{lat.p99:.1f} ms, "
        f"peak RSS {b.peak_rss_bytes / 1e9:.2f} GB"
    )
    for w in r.warnings:
        _console().print(f"[yellow]warning:[/] {w}", highlight=False)
    if json_out:
        json_out.write_text(r.model_dump_json(indent=2, exclude_none=True))


@app.command(name="eval")
def eval_(
    directory: Path = typer.Argument(..., help="A model directory (e.g. a build's artifact/)."),
    hellaswag_items: int | None = typer.Option(None, help="Default: the recipe default (evaluation.hellaswag_items)."),
    perplexity_tokens: int | None = typer.Option(None, help="Default: the recipe default (evaluation.perplexity_tokens)."),
    seed: int | None = typer.Option(None, help="Default: the recipe default (evaluation.seed)."),
    batch_size: int | None = typer.Option(None, help="Default: the recipe default (evaluation.batch_size)."),
    device: str = typer.Option("cpu"),
    json_out: Path | None = typer.Option(None, "--json"),
) -> None:
    """HellaSwag (lm-eval) and WikiText-2 perplexity of a saved model, with standard errors."""
    from optpipe.api import EvaluationSettings

    r = _measure_dir(
        directory,
        device,
        None,
        EvaluationSettings(
            **_given(hellaswag_items=hellaswag_items, seed=seed, batch_size=batch_size, perplexity_tokens=perplexity_tokens)
        ),
    )
    c = _console()
    if r.hellaswag is not None:
        h = r.hellaswag
        c.print(
            f"HellaSwag acc_norm {100 * h.acc_norm:.2f} ± {100 * h.acc_norm_se:.2f} "
            f"(acc {100 * h.acc:.2f} ± {100 * h.acc_se:.2f}), n={h.n}"
        )
    if r.perplexity is not None:
        c.print(f"WikiText-2 perplexity {r.perplexity.ppl:.3f} over {r.perplexity.tokens_scored} tokens")
    if json_out:
        json_out.write_text(r.model_dump_json(indent=2, exclude_none=True))


@app.command(name="setup-onnx")
def setup_onnx(
    path: Path | None = typer.Option(None, help="Where to create the export environment."),
) -> None:
    """Create the ONNX export environment (optimum-onnx pins transformers<4.58, so it lives apart)."""
    from optpipe.api import create_export_environment

    console = _console()
    try:
        py = create_export_environment(path, say=lambda m: console.print(m, markup=False))
    except OptpipeError as exc:
        _fail(exc)
    console.print(f"ready: {py}" + ("" if path is None else f"  (export OPTPIPE_ONNX_PYTHON={py})"))


def main() -> None:
    app()  # Typer turns a KeyboardInterrupt into a silent exit 130: `build` catches its own (BuildInterrupted)


if __name__ == "__main__":
    main()

"""The night's markdown report: one summary row per source x recipe, then each comparison."""

from __future__ import annotations

from typing import TYPE_CHECKING

from optpipe.history.compare import Tolerance, markdown
from optpipe.history.store import describe_url

if TYPE_CHECKING:
    from optpipe.nightly.run import NightlyResult


def report_markdown(result: NightlyResult, tolerance: Tolerance) -> str:
    regressed = result.regressed
    lines = [
        f"# optpipe nightly {result.started.strftime('%Y-%m-%d %H:%M UTC')}",
        "",
        f"configuration `{result.config_file}`, history `{describe_url(result.history)}`",
        "",
        f"**{len(regressed)} regression(s)**, {len(result.failed)} failed, "
        f"{sum(e.action == 'built' for e in result.entries)} built, {sum(e.action == 'unchanged' for e in result.entries)} unchanged",
        "",
        "tolerance: " + ", ".join(f"{k} {v:g}" for k, v in tolerance.model_dump().items() if v is not None),
        "",
        *[f"note: {n}\n" for n in result.notes],
        "| source | recipe | target | model | action | why | build | status | candidates | vs previous |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in result.entries:
        b = e.build
        build = f"#{b.id}" if b is not None else "–"
        status = b.status if b is not None else "–"
        cands = f"{e.measured} measured, {e.cached} cached" if e.action == "built" else "–"
        if e.comparison is not None:
            vs = f"#{e.previous.id}: " + ("**REGRESSION**" if e.comparison.regressed else "no regression")  # type: ignore[union-attr]
        else:
            vs = "no earlier build" if e.action == "built" else "–"
        why = e.why.replace("|", "/").replace("\n", " ")
        lines.append(
            f"| {e.entry.source} | {e.entry.recipe_file} | {e.entry.recipe.target} | {e.fingerprint} | {e.action} | {why} | {build} | {status} | {cands} | {vs} |"
        )
    for e in result.entries:
        if e.comparison is None:
            continue
        lines += ["", f"## {e.entry.source} / {e.entry.recipe_file}: #{e.previous.id} -> #{e.build.id}", ""]  # type: ignore[union-attr]
        lines.append(markdown(e.comparison))
    return "\n".join(lines) + "\n"

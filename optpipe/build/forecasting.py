"""The plan's forecast: every candidate of a recipe predicted from the model's config and file
headers (no weight is read): weight bytes, KV cache at the benchmark length, peak memory on the
target, roofline decode speed on the target, and whether it can fit.

Each pass says what it does to the weights (`Pass.weights_after`); where a pass has variants, the
next pass is forecast from the first variant (the engine decides the real parent by measurement).
"""

from __future__ import annotations

import json
from pathlib import Path

from optpipe.build.recipe import Recipe
from optpipe.errors import InvalidInputError, Problem
from optpipe.forecast import CandidateForecast, CandidateSpec, ModelShape, forecast_chain
from optpipe.forecast.shape import read_gguf, read_hf_directory, shape_from_config
from optpipe.passes import get_pass
from optpipe.spec.model_source import ResolvedModel
from optpipe.spec.targets import Target


def read_shape(model: ResolvedModel, origin: str = "<recipe>") -> ModelShape:
    """The model's shape from its config and weight-file headers only."""
    if model.gguf_file:
        gguf = Path(model.location) / model.gguf_file
        try:
            return read_gguf(gguf)
        except (OSError, ValueError, KeyError, IndexError, UnicodeDecodeError) as exc:
            # gguf's reader fails on a text file or a truncated download with numpy reshape errors.
            raise InvalidInputError(
                [
                    Problem(
                        origin,
                        None,
                        "model.source",
                        str(gguf),
                        f"not a readable GGUF file (not GGUF at all, or truncated: {exc}); re-download or re-export it",
                    )
                ]
            ) from None
    try:
        if model.kind == "hf-dir":
            return read_hf_directory(model.location)
        return shape_from_config(_hub_config(model))
    except (OSError, ValueError, KeyError) as exc:
        raise InvalidInputError(
            [
                Problem(
                    origin, None, "model.source", model.location, f"cannot read the model's config/headers to forecast it: {exc}"
                )
            ]
        ) from None


def _hub_config(model: ResolvedModel) -> dict:
    """config.json of a hub model (from the local hub cache or the hub, where reachable)."""
    try:
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(model.location, "config.json", revision=model.revision)
    except Exception as exc:  # offline, gated, missing: all end the same way for the user
        raise OSError(
            f"no access to {model.location}'s config.json ({type(exc).__name__}); "
            "point model.source at a local copy of the model (config.json + *.safetensors)"
        ) from None
    return json.loads(Path(path).read_text())


def candidate_specs(recipe: Recipe, shape: ModelShape) -> list[CandidateSpec | str]:
    """The recipe's candidates in build order as weight formats; a name alone where a pass cannot
    be forecast (and everything built on it)."""
    parent: CandidateSpec | None = CandidateSpec(name="baseline", dtype=shape.dtype)
    out: list[CandidateSpec | str] = [parent]
    for params in recipe.passes:
        pass_cls = get_pass(params.kind)
        first: CandidateSpec | None = None
        for i, (label, vparams) in enumerate(pass_cls.variants(params)):
            spec = pass_cls.weights_after(vparams, parent) if parent is not None else None
            out.append(spec.model_copy(update={"name": label}) if spec is not None else label)
            if i == 0:
                first = spec
        parent = first
    return out


def forecast_recipe(
    recipe: Recipe, model: ResolvedModel, target: Target, origin: str = "<recipe>"
) -> tuple[ModelShape, list[CandidateForecast]]:
    shape = read_shape(model, origin)
    specs = candidate_specs(recipe, shape)
    known = [s for s in specs if isinstance(s, CandidateSpec)]
    forecasts = {
        f.name: f
        for f in forecast_chain(
            shape,
            known,
            recipe.benchmark.prompt_tokens,
            recipe.benchmark.new_tokens,
            recipe.benchmark.batch_size,
            target_memory_gb=target.memory_gb,
            target_bandwidth_gbs=target.memory_bandwidth_gbs,
            device="cuda" if target.has_cuda else "cpu",
        )
    }
    rows = []
    for s in specs:
        if isinstance(s, CandidateSpec):
            rows.append(forecasts[s.name])
        else:
            rows.append(
                CandidateForecast(
                    name=s,
                    format_name=None,
                    memory=None,
                    roofline_tok_s=None,
                    fits=False,
                    reason="not forecast: this pass's weight format is not modelled yet",
                )
            )
    return shape, rows

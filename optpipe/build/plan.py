"""Plan a build before anything expensive runs: resolve the model source, the device and the target,
check every pass (and every variant) against what this host and target can do, and report every
problem at once. Nothing here loads weights."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from optpipe.build.cache import optpipe_cache_root
from optpipe.build.recipe import Recipe
from optpipe.errors import MISSING, InvalidInputError, Problem
from optpipe.files import tree_size
from optpipe.forecast.gguf_check import GGUFError, check_gguf
from optpipe.measure.calibration import HostCalibration, calibration_file, load_calibration
from optpipe.measure.job import ProjectionJob
from optpipe.output.directory import check_output_dir
from optpipe.passes import PassParams, get_pass
from optpipe.runtime.host_probe import detect_host
from optpipe.spec.host import HostEnv
from optpipe.spec.model_source import ResolvedModel, resolve_model
from optpipe.spec.targets import Target, list_targets, load_target
from optpipe.spec.yaml_diagnostics import field_line

NO_FILE = "<recipe>"


@dataclass
class PlannedPass:
    index: int
    params: PassParams
    skip_reason: str | None = None
    variant_skips: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.params.kind


@dataclass(frozen=True)
class MeasurementConditions:
    """How candidates are measured on this host for this target: memory capped to the target's VRAM
    (so out-of-memory is real) and decode speed projected to its bandwidth, when the host GPU is not
    the target."""

    memory_cap_gb: float | None = None
    projection: ProjectionJob | None = None


@dataclass
class Plan:
    recipe: Recipe
    recipe_file: str
    target: Target
    env: HostEnv
    device: str
    model: ResolvedModel
    passes: list[PlannedPass]
    output_dir: Path
    conditions: MeasurementConditions = MeasurementConditions()
    warnings: list[str] = field(default_factory=list)


def host_is_target(target: Target, env: HostEnv) -> bool:
    """Whether the GPU we measure on is the target device itself (then nothing is projected).
    Matches the target's model token (rtx4060, a100, h100, l4) against the GPU name's words."""
    if not env.gpu_name:
        return False
    words = re.findall(r"[a-z0-9]+", env.gpu_name.lower())
    tokens = set(words) | {a + b for a, b in zip(words, words[1:])}
    return target.name.split("-")[0] in tokens


def host_target(env: HostEnv) -> Target | None:
    """The catalogue entry of this host's GPU, if it has one (its spec bandwidth anchors projections)."""
    for name in list_targets():
        t = load_target(name)
        if t.is_gpu and host_is_target(t, env):
            return t
    return None


def host_calibration(env: HostEnv) -> HostCalibration | None:
    """This host's two-term step model from `optpipe calibrate`, if one was made for this GPU + torch."""
    if not env.gpu_name:
        return None
    return load_calibration(calibration_file(optpipe_cache_root(), env.gpu_name, env.packages.get("torch") or "?"))


def measurement_conditions(device: str, target: Target, env: HostEnv) -> MeasurementConditions:
    if device != "cuda" or host_is_target(target, env):
        return MeasurementConditions()
    cap = target.memory_gb if env.gpu_memory_gb and target.memory_gb < env.gpu_memory_gb else None
    projection = ProjectionJob(target=target.name, bandwidth_gbs=target.memory_bandwidth_gbs, calibration=host_calibration(env))
    return MeasurementConditions(cap, projection)


def _device(recipe: Recipe, target: Target, env: HostEnv, recipe_file: str) -> tuple[str, list[Problem], list[str]]:
    """The device to build on, problems that forbid it, and warnings about what is measured where."""
    device = recipe.device
    if device == "auto":
        device = "cuda" if (target.is_gpu and env.has_cuda) else "cpu"
    problems: list[Problem] = []
    warnings: list[str] = []
    if device == "cuda" and not env.has_cuda:
        problems.append(
            Problem(
                recipe_file, None, "device", recipe.device, "this host has no CUDA device; use device: cpu or build on a GPU host"
            )
        )
    if target.has_cuda and device == "cpu":
        # Accuracy can be built and judged here; speed and memory of a GPU can be neither measured nor
        # projected from a CPU, so goals that rest on them are refused rather than guessed.
        for name in ("min_decode_tok_s", "max_p95_token_latency_ms", "max_memory_gb"):
            value = getattr(recipe.goals, name)
            if value is not None:
                problems.append(
                    Problem(
                        recipe_file,
                        None,
                        f"goals.{name}",
                        value,
                        f"{target.name} is a CUDA target and this host has no CUDA device: this goal can be neither "
                        "measured nor projected here. Run on a CUDA host (any NVIDIA GPU: figures are projected to "
                        "the target), or remove the goal to build for accuracy only on this CPU",
                    )
                )
        warnings.append(
            f"building for {target.name} on a CPU-only host: accuracy is real, speed figures are this "
            "CPU's and say nothing about the target"
        )
    elif device == "cpu" and target.kind != "cpu":
        warnings.append(f"speed and memory are measured on this host's CPU ({env.cpu}), not on {target.display_name}")
    if device == "cuda" and not host_is_target(target, env):
        calibrated = (
            "two-term model calibrated on this GPU"
            if host_calibration(env)
            else ("uncalibrated fraction of roofline: run `optpipe calibrate` once on this host for the two-term model")
        )
        warnings.append(
            f"measuring on {env.gpu_name}, not on {target.display_name}: memory is capped to the target's "
            f"{target.memory_gb:g} GB and decode speed is projected to {target.memory_bandwidth_gbs:g} GB/s "
            f"({calibrated}); projected figures are labelled"
        )
    return device, problems, warnings


def _plan_pass(
    index: int, params: PassParams, target: Target, env: HostEnv, recipe_file: str
) -> tuple[PlannedPass, list[Problem]]:
    """Check one pass. With several variants each is judged on its own, and the pass fails only if
    none can run (or the recipe says fail)."""
    pass_cls = get_pass(params.kind)
    planned = PlannedPass(index, params)
    variants = pass_cls.variants(params)
    if len(variants) > 1:
        bad = {label: "; ".join(r) for label, v in variants if (r := pass_cls.requirements(v, target, env))}
        if bad and params.on_unsupported == "skip" and len(bad) < len(variants):
            planned.variant_skips = bad
            reasons: list[str] = []
        else:
            reasons = [f"{label}: {why}" for label, why in bad.items()]
    else:
        reasons = pass_cls.requirements(params, target, env)
    if not reasons:
        return planned, []
    if params.on_unsupported == "skip":
        planned.skip_reason = "; ".join(reasons)
        return planned, []
    return planned, [
        Problem(
            recipe_file,
            None,
            f"passes[{index - 1}] ({params.kind})",
            MISSING,
            r + " (set on_unsupported: skip to skip this pass instead)",
        )
        for r in reasons
    ]


def _output_dir(recipe: Recipe, recipe_file: str) -> Path:
    """The output directory. A relative `output_dir` written in the recipe resolves against the
    recipe file's directory, like the model path; the default (none written) against the working
    directory. Shown relative to the working directory where it lies below it."""
    stem = Path(recipe_file).stem if recipe_file != NO_FILE else "recipe"
    path = Path(recipe.output_dir.format(recipe=stem)).expanduser()  # the recipe checked the placeholders
    if path.is_absolute() or "output_dir" not in recipe.model_fields_set or recipe_file == NO_FILE:
        return path
    resolved = (Path(recipe_file).parent / path).resolve()
    try:
        return resolved.relative_to(Path.cwd().resolve())
    except ValueError:
        return resolved


@dataclass
class CheckedInputs:
    """What `check_inputs` found: the model (None where it could not be resolved), the problems
    that stop `validate` and `build`, and warnings to show before anything is loaded."""

    model: ResolvedModel | None
    output_dir: Path
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def check_inputs(recipe: Recipe, recipe_file: str | Path = NO_FILE) -> CheckedInputs:
    """The checks of the files a recipe names, shared by `optpipe validate` and `build` (so validate
    never passes a recipe build then rejects): the model source exists and can be looked at, a GGUF
    file is a readable GGUF (header and tensor table), a model directory's config.json is JSON, the
    output directory is ours or empty, writable and has room, and trust_remote_code names the code
    it will run. Needs no host probe, no torch, no network."""
    recipe_file = str(recipe_file)
    base_dir = Path(recipe_file).parent if recipe_file != NO_FILE else Path.cwd()
    spec = recipe.model
    out = CheckedInputs(None, _output_dir(recipe, recipe_file))
    try:
        out.model = resolve_model(
            spec.source, spec.gguf_file, spec.revision, spec.trust_remote_code, base_dir=base_dir, origin=recipe_file
        )
    except InvalidInputError as exc:
        out.problems += exc.problems
    # The output directory: ours or empty, writable, room for the saved baseline and the artifact.
    out.problems += check_output_dir(out.output_dir, 2 * source_bytes(out.model) if out.model else 0, origin=recipe_file)
    if out.model is None:
        return out
    model = out.model
    try:
        if model.gguf_file:
            _check_gguf_file(Path(model.location) / model.gguf_file, recipe_file)
        elif model.kind == "hf-dir":
            _check_config_json(Path(model.location), recipe_file)
    except InvalidInputError as exc:
        out.problems += exc.problems
    if spec.trust_remote_code and model.kind in ("hf-dir", "hub"):
        out.warnings.append(_remote_code_warning(model))
    return out


def _check_gguf_file(path: Path, recipe_file: str) -> None:
    try:
        check_gguf(path)
    except (GGUFError, OSError) as exc:
        raise InvalidInputError(
            [
                Problem(
                    recipe_file,
                    None,
                    "model.source",
                    str(path),
                    f"not a readable GGUF file ({exc}); re-download or re-export it",
                )
            ]
        ) from None


def _check_config_json(directory: Path, recipe_file: str) -> None:
    config = directory / "config.json"
    try:
        data = json.loads(config.read_bytes())
    except (OSError, ValueError) as exc:
        raise InvalidInputError(
            [
                Problem(
                    recipe_file, None, "model.source", str(config), f"config.json is not readable JSON ({exc}); re-save the model"
                )
            ]
        ) from None
    if not isinstance(data, dict):
        raise InvalidInputError(
            [Problem(recipe_file, None, "model.source", str(config), "config.json is not a JSON object; re-save the model")]
        )


def _remote_code_warning(model: ResolvedModel) -> str:
    if model.kind == "hub":
        return f"model.trust_remote_code is true: loading runs Python code downloaded from the hub repo {model.location}"
    files = sorted(str(p.relative_to(model.location)) for p in Path(model.location).rglob("*.py"))
    what = ", ".join(files) if files else "no .py files found there (nothing to run)"
    return f"model.trust_remote_code is true: loading runs this Python code from {model.location}: {what}. Review it first"


def _with_lines(problems: list[Problem], recipe_file: str) -> list[Problem]:
    if problems and Path(recipe_file).is_file():
        return [replace(pr, line=pr.line or field_line(recipe_file, pr.field)) for pr in problems]
    return problems


def validate(recipe: Recipe, recipe_file: str | Path = NO_FILE) -> CheckedInputs:
    """`optpipe validate` past the schema: `check_inputs`, raising its problems (with lines)."""
    checked = check_inputs(recipe, recipe_file)
    if checked.problems:
        raise InvalidInputError(_with_lines(checked.problems, str(recipe_file)))
    return checked


def source_bytes(model: ResolvedModel) -> int:
    """A local model's bytes on disk (0 for a hub id): the saved baseline and the artifact take about as much each."""
    if model.kind == "hub":
        return 0
    root = Path(model.location)
    return tree_size(root / model.gguf_file) if model.gguf_file else tree_size(root)


def plan(recipe: Recipe, recipe_file: str | Path = NO_FILE, env: HostEnv | None = None) -> Plan:
    """Check everything that can be checked before loading a model; report all problems at once."""
    recipe_file = str(recipe_file)
    env = env or detect_host()
    target = load_target(recipe.target)
    checked = check_inputs(recipe, recipe_file)
    problems, model = list(checked.problems), checked.model
    device, device_problems, warnings = _device(recipe, target, env, recipe_file)
    problems += device_problems
    warnings = checked.warnings + warnings
    planned = []
    for i, params in enumerate(recipe.passes):
        pp, pass_problems = _plan_pass(i + 1, params, target, env, recipe_file)
        if model is not None and params.on_unsupported == "fail":
            why = get_pass(params.kind).model_requirements(params, model)
            pass_problems += [Problem(recipe_file, None, f"passes[{i}] ({params.kind})", MISSING, r) for r in why]
        planned.append(pp)
        problems += pass_problems
    if problems:
        raise InvalidInputError(_with_lines(problems, recipe_file))
    assert model is not None  # resolve_model raised otherwise
    return Plan(
        recipe,
        recipe_file,
        target,
        env,
        device,
        model,
        planned,
        checked.output_dir,
        measurement_conditions(device, target, env),
        warnings,
    )

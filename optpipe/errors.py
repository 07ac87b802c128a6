"""Errors a user can act on, and the exit codes the CLI maps them (and build outcomes) to."""

from __future__ import annotations

from dataclasses import dataclass

EXIT_OK = 0
EXIT_INTERNAL_ERROR = 1
EXIT_INVALID_INPUT = 2
EXIT_BUDGET_NOT_MET = 3
EXIT_BUDGET_INCONCLUSIVE = 4
EXIT_REGRESSION = 5  # optpipe compare / nightly: B is worse than A beyond the tolerance
EXIT_NIGHTLY_FAILED = 6  # optpipe nightly: a build could not run (no regression found among the rest)
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a Ctrl-C


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input: where it is, what it is, and how to fix it."""

    file: str
    line: int | None
    field: str
    value: object
    message: str

    def render(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        shown = repr(self.value)
        if len(shown) > 160:  # a 5,000-character path or a pasted blob: the start says enough
            shown = f"{shown[:120]}... ({len(shown)} characters)"
        value = "" if self.value is _MISSING else f" (got {shown})"
        return f"{where}: {self.field}: {self.message}{value}"


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING = _Missing()
MISSING = _MISSING


class OptpipeError(Exception):
    """Base class for errors optpipe reports to users without a traceback."""

    exit_code = EXIT_INTERNAL_ERROR


class InvalidInputError(OptpipeError):
    """The recipe or a command-line argument is wrong; nothing expensive has run yet."""

    exit_code = EXIT_INVALID_INPUT

    def __init__(self, problems: list[Problem] | str):
        if isinstance(problems, str):
            problems = [Problem(file="<input>", line=None, field="", value=MISSING, message=problems)]
        self.problems = problems
        super().__init__("\n".join(p.render() for p in problems))


class RequirementError(InvalidInputError):
    """A pass cannot run on this target or host (and the recipe says to fail)."""


class CandidateFailed(OptpipeError):
    """Making or measuring one candidate failed in a way that is the candidate's, not optpipe's: the
    build records it as a failed candidate and goes on (results already measured are kept)."""


class PassFailed(CandidateFailed):
    """A pass could not produce its candidate (the library refused, the model does not suit it, out
    of memory). Programming errors (TypeError, AttributeError, ...) are never wrapped in this."""


class MeasurementFailed(CandidateFailed):
    """The measurement process of one candidate exited with an error (its log has the traceback)."""


class OutputWriteError(OptpipeError):
    """Writing into the output directory failed in a way the user must fix (the disk is full, the
    directory became read-only). Everything measured so far is in the cache and the manifest."""

    exit_code = EXIT_INVALID_INPUT


class BuildInterrupted(OptpipeError):
    """The build was stopped by SIGINT or SIGTERM; the manifest says `interrupted` and keeps every
    measurement made, and the cache lets the same command resume."""

    exit_code = EXIT_INTERRUPTED


def exit_code_for(status: str) -> int:
    """Exit code of a finished build from its status (MET / NOT MET / INCONCLUSIVE)."""
    return {"MET": EXIT_OK, "INCONCLUSIVE": EXIT_BUDGET_INCONCLUSIVE}.get(status, EXIT_BUDGET_NOT_MET)

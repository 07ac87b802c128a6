"""Parameter search in the build: the order a pass's variants are tried in, and the search budget.

Pure functions over the plan's forecast and the build's records, so they are table-tested.
"""

from __future__ import annotations

import math
from typing import Any

from optpipe.forecast import CandidateForecast
from optpipe.spec.settings import SearchSettings


def predicted_size(forecast: CandidateForecast | None) -> tuple[float, float]:
    """(stored weight bytes, peak bytes) as the plan forecast them; unknown sorts last."""
    if forecast is None or forecast.memory is None:
        return math.inf, math.inf
    return float(forecast.memory.stored_weight_bytes), float(forecast.memory.peak_bytes)


def smallest_first(variants: list[tuple[str, Any]], forecasts: dict[str, CandidateForecast]) -> list[tuple[str, Any]]:
    """Variants ordered by predicted size, smallest first (ties and unforecast ones keep the recipe's
    order), so that `stop: first` ends at the smallest candidate that meets the budget."""
    return sorted(variants, key=lambda v: predicted_size(forecasts.get(v[0])))


def budget_spent(search: SearchSettings, candidates_built: int, minutes: float) -> str:
    """Why the search must start no new candidate, or '' while it may."""
    if search.max_candidates is not None and candidates_built >= search.max_candidates:
        return f"search budget spent: max_candidates {search.max_candidates} built"
    if search.max_minutes is not None and minutes >= search.max_minutes:
        return f"search budget spent: {minutes:.1f} of max_minutes {search.max_minutes:g} minutes"
    return ""

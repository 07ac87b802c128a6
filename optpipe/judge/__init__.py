"""Judging candidates: budget lines with verdicts (MET / NOT MET / INCONCLUSIVE) and ranking."""

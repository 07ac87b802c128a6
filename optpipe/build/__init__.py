"""A build: the recipe (spec settings + the pass list), the plan checked before any expensive step,
the engine that runs it, and the result cache."""

"""Accuracy evaluation: HellaSwag through lm-eval (with an adapter per runtime), WikiText-2 strided
perplexity, KL divergence from the baseline, and the statistics of their uncertainty."""

"""Accuracy evaluation: HellaSwag through lm-eval, WikiText-2 strided perplexity."""

"""The BentoML service: per-objective scores, candidate ranking and prediction logging."""

"""Sizes of the small worlds the tests generate."""

from coldcast.evaluation.experiments import QUICK_MODEL, QUICK_WORLD

# The experiments' quick world: small enough for seconds, large enough that every label has a few hundred positives.
SMALL = list(QUICK_WORLD)
# For tests that only need the shape of the data.
TINY = [*SMALL, "world.impressions=8000", "world.users=800", "world.shows=150", "world.campaigns=30"]
# The pipelines' end-to-end world: five days (GX validates each day as one batch), a small fast model.
PIPELINE = [
    *TINY,
    "world.days=5",
    "split.validation_days=1",
    "split.test_days=1",
    *QUICK_MODEL,
    "evaluation.bootstrap=20",
]

"""Sizes of the small worlds the tests generate."""

# Small enough for seconds, large enough that every label has a few hundred positives.
SMALL = [
    "world.users=4000",
    "world.shows=600",
    "world.campaigns=120",
    "world.publishers=200",
    "world.impressions=60000",
    "world.days=28",
    "split.validation_days=4",
    "split.test_days=4",
]
# For tests that only need the shape of the data.
TINY = [*SMALL, "world.impressions=8000", "world.users=800", "world.shows=150", "world.campaigns=30"]
# The pipelines' end-to-end world: five days (GX validates each day as one batch), a small fast model.
PIPELINE = [
    *TINY,
    "world.days=5",
    "split.validation_days=1",
    "split.test_days=1",
    "training.batch_size=256",
    "model.shared_layers=[32]",
    "model.tower_layers=[16]",
    "model.embedding_dim=4",
    "evaluation.bootstrap=20",
]

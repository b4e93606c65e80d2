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

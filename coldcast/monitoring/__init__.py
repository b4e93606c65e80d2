"""Evidently drift and quality reports, the dashboard workspace and alert thresholds."""

"""Batch scoring: validate and score data partitions, publish their predictions."""

"""The lookup API: a thin Flask service over published predictions."""

"""The monitor: data drift, prediction drift and realized performance against training baselines."""

"""Reproduces the shipped chest X-ray model: `python -m training.train`, `python -m training.evaluate`."""

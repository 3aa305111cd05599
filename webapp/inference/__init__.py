"""Inference pipeline, one module per stage: decode, preprocess, classify, explain, decide.

This package must stay importable without Flask so that `training/` can share the
decode and preprocess stages with serving.
"""

"""Inference, one module per stage: decode -> preprocess -> forward -> calibrate -> decide.

`analyzer` runs the stages, `model_card` owns the card beside the weights, `runtime` keeps one
analyzer per worker process and `overlay` draws heat maps for the pages. The package imports
neither Flask nor the rest of the web app, so `training/` shares decode and preprocess with
serving without pulling in the web stack.
"""

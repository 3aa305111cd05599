"""The least a server of this model can do per upload: the bound our request path is measured against.

The app's own decode and Analyzer (compiled forward pass with Grad-CAM, calibration, the UNKNOWN
layers and the intended-use gate) under the same gunicorn settings, TensorFlow threads and model
file as ours, and nothing else: no sign-in or token check, no database row, no review copy or
heat-map PNG, no request log, no rate limits. What our upload costs above it is what authenticating,
logging and keeping each film cost (benchmarks/floor.py). Serve it with
`gunicorn benchmarks.floor_server:app`; MODEL_PATH and INFERENCE_THREADS as for the app.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from flask import Flask, jsonify, request

from deploy.gunicorn_hooks import set_inference_threads
from webapp.inference.analyzer import Analyzer
from webapp.inference.decode import decode

# Before the model loads, as our workers do.
set_inference_threads(int(os.environ.get("INFERENCE_THREADS", "1")), logging.getLogger(__name__))
analyzer = Analyzer(Path(os.environ["MODEL_PATH"]))

app = Flask(__name__)


@app.post("/predict")
def predict():
    image = decode(request.files["file"].read(), target_size=analyzer.input_size)
    analysis = analyzer.analyze(image)
    return jsonify(label=analysis.label, probabilities=analysis.probabilities, reason=analysis.unknown_reason)


@app.get("/readyz")
def readyz():
    return jsonify(status="ready")

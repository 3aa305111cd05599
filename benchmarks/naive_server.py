"""The reference the benchmark compares against: how the public pneumonia demo apps serve a model.

Same model file as ours, but the usual pattern: load the model at import, decode every pixel of
the upload, preprocess with Pillow and call `model.predict` for each request, with no warm-up and
nothing stored. It is deliberately plain; do not tune it. Serve it with
`gunicorn benchmarks.naive_server:app` (MODEL_PATH selects the model file).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import keras
import numpy as np
import pydicom
from flask import Flask, jsonify, request
from PIL import Image, ImageOps

MODEL_PATH = Path(
    os.environ.get("MODEL_PATH", Path(__file__).resolve().parent.parent / "webapp" / "weights" / "cxr_pneumonia.keras")
)
model = keras.saving.load_model(MODEL_PATH, compile=False)
SIZE = int(model.inputs[0].shape[1])

app = Flask(__name__)


def load_grey(data: bytes) -> Image.Image:
    if data[128:132] == b"DICM":
        pixels = pydicom.dcmread(io.BytesIO(data)).pixel_array.astype(np.float32)
        pixels = (pixels - pixels.min()) / max(float(pixels.max() - pixels.min()), 1.0)
        return Image.fromarray(np.uint8(pixels * 255))
    image = Image.open(io.BytesIO(data))
    if image.mode.startswith("I"):
        pixels = np.asarray(image, dtype=np.float32)
        return Image.fromarray(np.uint8(pixels / max(float(pixels.max()), 1.0) * 255))
    return image.convert("L")


@app.post("/predict")
def predict():
    image = ImageOps.equalize(load_grey(request.files["file"].read()).resize((SIZE, SIZE)))
    batch = np.asarray(image, dtype=np.float32)[None, ..., None] / 255.0
    outputs = model.predict(batch)
    logits = outputs[0] if isinstance(outputs, (list, tuple)) else outputs  # column 0: pneumonia
    p = float(1.0 / (1.0 + np.exp(-logits[0, 0])))
    return jsonify(label="PNEUMONIA" if p >= 0.5 else "NORMAL", probability=p)


@app.get("/readyz")
def readyz():
    return jsonify(status="ready")

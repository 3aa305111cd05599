"""Export: the .keras file without optimizer state, and the model card beside it."""

from __future__ import annotations

import datetime
import pathlib

from training.model import OUTPUT_COLUMNS
from webapp.inference.model_card import MODEL_NAME, write_card

INTENDED_USE = (
    "Decision support for clinical staff reading pediatric (age 1-5) frontal chest radiographs: "
    "flags likely pneumonia for priority review. Not a diagnosis, not for adults, lateral films "
    "or other body parts; a clinician reads every film."
)


def export(model, args, calibration, data_summary, history, settings, command, seconds, gradcam_layer) -> pathlib.Path:
    out: pathlib.Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    # `model` is an uncompiled copy: the file carries weights only, no optimizer slots.
    path = out / MODEL_NAME
    model.save(path)
    version = args.version or datetime.date.today().strftime("%Y.%m.%d") + f"-s{args.seed}" + (
        "-quick" if args.quick else ""
    )
    card = {
        "name": "cxr-pneumonia",
        "version": version,
        "parameters": int(model.count_params()),
        "input": {
            "size": args.size,
            "channels": 1,
            "dtype": "float32",
            "range": [0.0, 1.0],
            "preprocessing": "webapp.inference.decode.decode(bytes, target_size=size) -> "
            "webapp.inference.preprocess.preprocess(pixels, size): grayscale, plain bilinear resize "
            "to size x size, global histogram equalisation",
            "gradcam_layer": gradcam_layer,
        },
        "outputs": {
            "columns": list(OUTPUT_COLUMNS),
            "meaning": "output 0, logits: column 0 pneumonia (divide by temperature, then sigmoid), "
            "column 1 frontal chest radiograph (sigmoid); output 1: whitened pooled features, whose "
            "mean square is the feature distance from the training films",
        },
        "threshold": calibration["threshold"],
        "temperature": calibration["temperature"],
        "unknown": calibration["unknown"],
        "data": data_summary,
        "metrics": {"validation": calibration["validation"]},
        "training": {
            "command": command,
            "seed": args.seed,
            "settings": settings,
            "seconds": round(seconds, 1),
            "history": history,
            "quick_mode": bool(args.quick),
        },
        "intended_use": INTENDED_USE,
    }
    card_file = write_card(path, card)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) and {card_file}", flush=True)
    return path

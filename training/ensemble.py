"""Average several trained members into one shipped model, then calibrate and export it.

    python -m training.ensemble --members training/runs/a1/cxr_pneumonia.keras \
        training/runs/a2/cxr_pneumonia.keras [train options, e.g. --widths 24,48,96,192]

Each member is conv trunk -> global average pooling -> Dense. Averaging the members' logits
is exactly one Dense layer over the concatenated pooled features (the members' kernels
stacked and halved), so the ensemble stays a plain model: its concatenated last feature maps
form the Grad-CAM layer, and the feature distance is fitted on the concatenated features.
"""

from __future__ import annotations

import argparse
import pathlib
import shlex
import sys
import time

import keras
import numpy as np

from training import augment as aug
from training import ood
from training.calibration import calibrate_and_export, outputs_of
from training.model import GRADCAM_LAYER
from training.sets import load_training_sets
from training.settings import parse_args
from webapp.inference.model_card import read_card


def build_ensemble(members: list[keras.Model], size: int) -> keras.Model:
    inputs = keras.Input((size, size, 1), name="image")
    maps = [
        keras.Model(m.input, m.get_layer(GRADCAM_LAYER).output, name=f"member{i}")(inputs)
        for i, m in enumerate(members)
    ]
    joined = keras.layers.Concatenate(name=GRADCAM_LAYER)(maps)
    pooled = keras.layers.GlobalAveragePooling2D(name=ood.FEATURE_LAYER)(joined)
    head = keras.layers.Dense(2, name="logits")
    logits = head(pooled)
    kernels, biases = zip(*(m.get_layer("logits").get_weights() for m in members))
    head.set_weights([np.concatenate(kernels) / len(members), np.mean(biases, axis=0)])
    return keras.Model(inputs, logits, name="cxr_pneumonia_ensemble")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        # The other options are train's, parsed by settings.parse_args below: --help listed --members alone,
        # so the --out and --version the documented command passes were nowhere in it.
        epilog="Every other option is python -m training.train's (see its --help), among them --out "
        "(default webapp/weights: the shipped model) and --version.",
    )
    parser.add_argument("--members", type=pathlib.Path, nargs="+", required=True)
    ours, rest = parser.parse_known_args(argv)
    args = parse_args(rest, description=__doc__)
    keras.utils.set_random_seed(args.seed)
    started = time.time()

    members = [keras.saving.load_model(p, compile=False) for p in ours.members]
    cards = [read_card(p, verify=False)["training"] for p in ours.members]
    sets = load_training_sets(args)
    x_val_shifted = aug.shifted_copy(sets.x_val, args.seed + 5, args.shift_strength)

    model = build_ensemble(members, args.size)
    features = outputs_of(ood.feature_model(model), sets.x_train)[0]
    model = ood.with_feature_distance(model, *ood.fit_whitening(features))
    command = " && ".join(c["command"] for c in cards) + " && python -m training.ensemble " + shlex.join(argv)
    members_setting = [str(p) for p in ours.members]
    calibrate_and_export(
        model, sets, x_val_shifted, args, cards[0]["history"], command, started, members=members_setting
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

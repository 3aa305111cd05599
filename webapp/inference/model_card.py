"""The model card: the JSON file beside the .keras weights that says how to serve them.

This module is the one place that knows the card's format. Training writes it through
`write_card`; serving and evaluation read it through `read_card` and `ServingParams`, so a
field renamed here is renamed everywhere.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from dataclasses import dataclass

from .decide import UnknownPolicy
from .intended_use import IntendedUse

CARD_NAME = "model_card.json"
# The intended-use gate's parameters; absent from cards of models built before the gate.
GATE_SECTION = "intended_use_gate"
MODEL_NAME = "cxr_pneumonia.keras"
# Width over height of a frontal chest film: 14x17 in portrait to 17x14 in landscape, with room
# for detectors and crops; anything outside is answered UNKNOWN before the model is asked.
ASPECT_RATIO_LIMITS = (0.5, 2.0)


class ModelCardError(RuntimeError):
    """The model file and its card do not belong together, or the card is incomplete."""


@dataclass(frozen=True)
class ServingParams:
    """Everything the serving pipeline takes from the card, checked once at load."""

    version: str
    input_size: int
    threshold: float
    temperature: float
    gradcam_layer: str
    policy: UnknownPolicy
    intended_use: IntendedUse | None = None

    @classmethod
    def from_card(cls, card: dict) -> ServingParams:
        try:
            unknown = card["unknown"]
            distance = unknown.get("max_feature_distance")
            policy = UnknownPolicy(
                max_colourfulness=float(unknown["max_colourfulness"]),
                min_aspect_ratio=float(unknown["min_aspect_ratio"]),
                max_aspect_ratio=float(unknown["max_aspect_ratio"]),
                min_chest_probability=float(unknown["min_chest_probability"]),
                uncertainty_band=float(unknown["uncertainty_band"]),
                max_feature_distance=float(distance) if distance is not None else None,
            )
            params = cls(
                version=str(card["version"]),
                input_size=int(card["input"]["size"]),
                threshold=float(card["threshold"]),
                temperature=float(card["temperature"]),
                gradcam_layer=str(card["input"]["gradcam_layer"]),
                policy=policy,
                intended_use=_intended_use(card.get(GATE_SECTION)),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ModelCardError(f"the model card is missing or has a bad field: {exc!r}") from exc
        if params.temperature <= 0 or not 0 < params.threshold < 1 or params.input_size <= 0:
            raise ModelCardError("the model card's temperature, threshold or input size is out of range")
        return params


def _intended_use(gate: dict | None) -> IntendedUse | None:
    if gate is None:
        return None
    validated = gate["validated_age_years"]
    return IntendedUse(
        max_adult_probability=float(gate["max_adult_probability"]),
        adult_from_years=float(gate["adult_from_years"]),
        validated_from_years=float(validated["from"]),
        validated_below_years=float(validated["below"]),
        version=str(gate["version"]),
    )


def card_path(model_path: pathlib.Path) -> pathlib.Path:
    return pathlib.Path(model_path).parent / CARD_NAME


def sha256_of(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_card(model_path: pathlib.Path, *, verify: bool = True) -> dict:
    """The card beside `model_path`; with `verify`, refuse it unless it names these exact weights."""
    path = card_path(model_path)
    try:
        card = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelCardError(f"cannot read the model card {path}: {exc}") from exc
    if not isinstance(card, dict):
        raise ModelCardError(f"the model card {path} is not a JSON object")
    expected = card.get("sha256")
    if verify and expected and expected != sha256_of(model_path):
        raise ModelCardError(f"{pathlib.Path(model_path).name} does not match the sha256 in {path}")
    return card


def write_card(model_path: pathlib.Path, card: dict) -> pathlib.Path:
    """Write `card` beside `model_path`, with the weights' current sha256 and size filled in."""
    model_path = pathlib.Path(model_path)
    card = {**card, "file": model_path.name, "sha256": sha256_of(model_path), "size_bytes": model_path.stat().st_size}
    ServingParams.from_card(card)  # never write a card the app would refuse
    path = card_path(model_path)
    path.write_text(json.dumps(card, indent=2) + "\n")
    return path

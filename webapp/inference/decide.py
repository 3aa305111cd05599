"""Stage 5: decide. The verdict: NORMAL, PNEUMONIA, or UNKNOWN with a reason a clinician understands.

UNKNOWN has four layers, cheapest first, all parameterised from the model card:
1. input checks: a reason found while decoding (e.g. a CT DICOM), colour content, and image
   proportions that no frontal chest film has;
2. the model's own "is this a frontal chest radiograph" head, trained on chest films versus
   other radiographs, other modalities, photographs and synthetic negatives, and a distance of
   the image's features from those of the training films (no negatives needed to learn it);
3. the intended use (`intended_use.py`): an adult age in a DICOM header, or, without one, the
   gate's "this looks like an adult's film" score;
4. an uncertainty band: a pneumonia probability too close to the threshold to call.
"""

from __future__ import annotations

from dataclasses import dataclass

from .image import DecodedImage
from .intended_use import IntendedUse
from .labels import NORMAL, PNEUMONIA, UNKNOWN

# Layer 2's reason. Its head and its feature distance learnt what a frontal chest film is from
# young children's films alone, so "not a chest film" would be wrong for an adult's film from an
# unfamiliar hospital, which often stops here before the gate: the reason names what it is for.
NOT_RECOGNISED = "Not recognised as a young child's frontal chest radiograph"


def threshold_text(threshold: float) -> str:
    """A decision threshold as people read it, wherever it is shown (the result card, the validation
    pages, the PACS capture): three places everywhere, so the card's threshold reads the same on every
    page and two site thresholds (0.208, 0.215) never read alike, as they did at two places. The API and
    the audit trail keep the number itself."""
    return f"{threshold:.3f}"


@dataclass(frozen=True)
class UnknownPolicy:
    max_colourfulness: float
    min_aspect_ratio: float  # width / height
    max_aspect_ratio: float
    min_chest_probability: float
    uncertainty_band: float  # half-width, in probability, around the threshold
    max_feature_distance: float | None = None  # None: the model has no feature-distance output


def input_reason(image: DecodedImage, policy: UnknownPolicy) -> str | None:
    """Why the input itself rules out a frontal chest radiograph, or None."""
    if image.unknown_reason:
        return image.unknown_reason
    if image.colourfulness > policy.max_colourfulness:
        return "Not a chest radiograph: the image is in colour (a photograph or a colour-coded scan)."
    ratio = image.width / max(image.height, 1)
    if not policy.min_aspect_ratio <= ratio <= policy.max_aspect_ratio:
        return (
            f"Not a frontal chest radiograph: the image proportions ({image.width} x {image.height} "
            "pixels) are far from those of a chest film."
        )
    return None


def decide(
    image: DecodedImage,
    p_pneumonia: float,
    p_chest: float,
    feature_distance: float,
    threshold: float,
    policy: UnknownPolicy,
    p_adult: float | None = None,
    intended_use: IntendedUse | None = None,
) -> tuple[str, str | None]:
    """Return (label, unknown_reason); the reason is None unless the label is UNKNOWN.
    `p_adult` is the gate's score; without `intended_use` (a model from before the gate) the
    intended-use layer is skipped."""
    reason = input_reason(image, policy)
    if reason:
        return UNKNOWN, reason
    unlike_training = policy.max_feature_distance is not None and feature_distance > policy.max_feature_distance
    if p_chest < policy.min_chest_probability or unlike_training:
        return UNKNOWN, (
            f"{NOT_RECOGNISED}, the intended use of this model: it may be another body part, another "
            "modality, a photograph, or an adult's film."
        )
    outside = intended_use.reason(image, p_adult) if intended_use is not None else None
    if outside:
        return UNKNOWN, outside
    if abs(p_pneumonia - threshold) < policy.uncertainty_band:
        return UNKNOWN, (
            f"Uncertain: the pneumonia probability ({p_pneumonia:.2f}) is too close to the decision "
            f"threshold ({threshold_text(threshold)}) to call; please read the film yourself."
        )
    return (PNEUMONIA if p_pneumonia >= threshold else NORMAL), None

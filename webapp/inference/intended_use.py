"""The intended use, enforced: films of young children only.

Two sources of evidence, in order: the patient's age from a DICOM header (a fact, so it beats
any estimate) and, when no age is given, the model's intended-use gate (a separate small
network folded into the served model that scores "this looks like an adult's chest film").
Every parameter comes from the model card's `intended_use_gate` section (read by `model_card`).
"""

from __future__ import annotations

from dataclasses import dataclass

from .image import DecodedImage


@dataclass(frozen=True)
class IntendedUse:
    max_adult_probability: float  # the gate's cut-off, fitted on validation children
    adult_from_years: float  # a header age at or above this is an adult
    validated_from_years: float  # the ages the model was validated on: [from, below)
    validated_below_years: float
    version: str

    def _validated(self) -> str:
        return f"{self.validated_from_years:g} to {self.validated_below_years - 1:g} years"

    def reason(self, image: DecodedImage, p_adult: float | None) -> str | None:
        """Why the film is outside the intended use, or None. The sentence says only that the
        age is adult, never the age itself (reasons are stored with the prediction)."""
        age = image.age_years
        if age is not None:
            if age >= self.adult_from_years:
                return (
                    f"Outside the intended use: the DICOM header gives the patient's age as "
                    f"{self.adult_from_years:g} years or older; the model is built for young children's "
                    f"films (validated on ages {self._validated()}) and is not for adults."
                )
            return None  # a child's age from the header: the image gate is not asked
        if p_adult is not None and p_adult > self.max_adult_probability:
            return (
                "Outside the intended use: this looks like an adult's chest film; the model is built "
                "for young children's films."
            )
        return None

    def caution(self, image: DecodedImage) -> str | None:
        """A child's header age outside the validated range: answered, with this caution."""
        age = image.age_years
        if age is None or age >= self.adult_from_years:
            return None
        if self.validated_from_years <= age < self.validated_below_years:
            return None
        return (
            f"Outside the validated age range: the DICOM header gives an age outside "
            f"{self._validated()}, the ages the model was validated on; read this result with extra care."
        )

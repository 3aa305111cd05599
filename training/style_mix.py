"""Style mixing in the Fourier domain, for the intended-use gate's training batches.

A film's Fourier phase carries its structure (where the ribs, heart and clavicles are); its
amplitude spectrum carries much of what differs between hospitals: sharpness, edge
enhancement, noise texture, grid lines, compression. Each film in a batch keeps its own phase
and takes a random blend of its amplitude spectrum with that of a random other film of the batch,
children and adults alike (amplitude mix, Xu et al., "A Fourier-based Framework for Domain
Generalization", CVPR 2021). A gate that could separate "Kermany" from "the adult hospital" by
style alone then sees that style on both classes and has to use the anatomy.

Leave-one-source-out, the change that made the gate transfer: a gate trained on NIH adults
refused 7% of Hannover's adults by its score before it and 37% after (docs/model.md).
"""

from __future__ import annotations

import numpy as np

from webapp.inference.preprocess import equalise


def amplitude_mix(batch: np.ndarray, rng: np.random.Generator, share: float, strength: float = 1.0) -> np.ndarray:
    """Model inputs (n, size, size, 1) in [0, 1] -> the same with mixed amplitude spectra.

    About `share` of the films are mixed, each with weight U(0, strength) on its partner's
    spectrum, and equalised again so that they stay inside what the shared preprocessing
    serves; the others are returned as they were. With `share` 0 nothing is drawn from `rng`,
    so a run without mixing repeats gate-2's training exactly."""
    if share <= 0:
        return batch
    n = len(batch)
    chosen = np.flatnonzero(rng.random(n) < share)
    weight = rng.uniform(0.0, strength, len(chosen))[:, None, None]
    partners = (chosen + rng.integers(1, max(n, 2), len(chosen))) % n  # never the film itself
    spectra = np.fft.fft2(batch[..., 0])
    amplitude, phase = np.abs(spectra), np.angle(spectra)
    mixed = (1.0 - weight) * amplitude[chosen] + weight * amplitude[partners]
    films = np.real(np.fft.ifft2(mixed * np.exp(1j * phase[chosen])))
    out = batch.astype(np.float32, copy=True)
    for i, film in zip(chosen, films):
        out[i, ..., 0] = equalise(np.clip(film, 0.0, 1.0))
    return out

"""The three verdicts, named once for the whole code base (pages, API, database, training)."""

from __future__ import annotations

NORMAL, PNEUMONIA, UNKNOWN = "NORMAL", "PNEUMONIA", "UNKNOWN"
# The two classes the model scores, in the order of its probability vector.
CLASSES = (NORMAL, PNEUMONIA)
VERDICTS = (NORMAL, PNEUMONIA, UNKNOWN)

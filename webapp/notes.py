"""Short radiological notes shown beside each verdict. Wording reviewed for clinical staff:
they explain what the model's answer means and what to check next; they are not a report."""

INTENDED_USE = (
    "Intended use: frontal (PA/AP) chest radiographs of children. This tool is decision "
    "support for clinical staff, not a diagnosis; the radiologist's reading prevails."
)

NOTES = {
    "NORMAL": {
        "title": "No radiographic sign of pneumonia detected",
        "points": [
            "A normal pediatric frontal film shows clear lung fields with symmetric aeration, sharp "
            "costophrenic angles, crisp cardiac and diaphragmatic borders and no focal opacity.",
            "The heat map shows where the model looked; on a normal film it is usually spread over "
            "both lungs without a single hot spot.",
            "Next: correlate with the clinical picture. Early or retrocardiac consolidation can be "
            "subtle on one view; re-image if symptoms persist or worsen.",
        ],
    },
    "PNEUMONIA": {
        "title": "Radiographic pattern suggestive of pneumonia",
        "points": [
            "Bacterial pneumonia typically shows focal lobar or segmental consolidation, often with "
            "air bronchograms and silhouetting of the adjacent heart or diaphragm border.",
            "Viral pneumonia more often shows diffuse, bilateral interstitial or peribronchial "
            "markings and hyperinflation rather than a single dense consolidation.",
            "Check the highlighted region on the film for consolidation, effusion (blunted "
            "costophrenic angle) or collapse.",
            "Next: correlate with clinical findings and laboratory markers; consider a lateral view "
            "or follow-up film if the finding is equivocal.",
        ],
    },
    "UNKNOWN": {
        "title": "No verdict: the model cannot answer for this image",
        "points": [
            "UNKNOWN means the image is outside what the model was built for, frontal chest "
            "radiographs of young children (for example an adult's film, another body part, a CT "
            "or MRI slice, a photo or a document), "
            "or the model's probability lies too close to its decision threshold to be useful.",
            "The reason given above says which. Review the film yourself; do not read UNKNOWN as normal.",
        ],
    },
}

"""Where the browser tests find their inputs and leave their screenshots."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "tests" / "fixtures" / "images"
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"  # git-ignored; CI can keep it as an artifact
STYLESHEET = REPO / "webapp" / "static" / "app.css"  # for pages rendered in process and opened with set_content

"""The DICOM node: films from the PACS in (listener, intake), screened on the job queue (tasks), results
back to the PACS as an SR and a secondary capture (results, sender), the worklist and the outbox (routes)."""

from flask import Blueprint

bp = Blueprint("pacs", __name__)

from . import routes, tasks  # noqa: E402,F401  (tasks: registers the jobs with the queue)

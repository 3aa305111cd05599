"""The DICOM node: films from the PACS in (listener, intake), screened on the job queue (tasks), results
back to the PACS as an SR and a secondary capture (results, sender), the worklist and the outbox (routes)."""

from flask import Blueprint

# The listener and the worker read the patient's header values: pydicom must not quote them in the logs.
from ..inference.dicom import keep_header_values_out_of_logs

keep_header_values_out_of_logs()

bp = Blueprint("pacs", __name__)

from . import routes, tasks  # noqa: E402,F401  (tasks: registers the jobs with the queue)

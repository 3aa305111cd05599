"""gunicorn settings, each overridable from the environment."""
import os

bind = os.environ.get("BIND", "0.0.0.0:8000")
workers = int(os.environ.get("WEB_WORKERS", "2"))
threads = int(os.environ.get("WEB_THREADS", "2"))
worker_class = "gthread"
# No preload: TensorFlow is not fork-safe, so each worker loads the model after the fork.
preload_app = False
timeout = int(os.environ.get("WEB_TIMEOUT", "120"))
accesslog = "-"
errorlog = "-"

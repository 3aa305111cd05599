# CXR Screen: the web app, the shipped model and gunicorn in one image.
# Build: docker build -t cxr-screen .   Run: see docker-compose.yml and the README (Deployment).

# --- build stage: install the locked dependency closure into a virtual environment ---------
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
COPY requirements.lock /tmp/requirements.lock
# --no-deps: the lock is the whole closure, so pip cannot pull in an untested version.
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --no-deps -r /tmp/requirements.lock \
    && /opt/venv/bin/pip check

# --- run stage ----------------------------------------------------------------------------
FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    APP_ENV=production \
    INSTANCE_DIR=/app/instance \
    KERAS_HOME=/tmp/keras \
    TF_CPP_MIN_LOG_LEVEL=2 \
    BIND=0.0.0.0:8000

# A fixed unprivileged uid, so a volume's ownership stays meaningful across rebuilds.
RUN groupadd --system --gid 10001 cxr \
    && useradd --system --uid 10001 --gid cxr --no-create-home --home-dir /app --shell /usr/sbin/nologin cxr

COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# Code and model stay owned by root: the app user can read them but not change them.
COPY wsgi.py gunicorn.conf.py ./
COPY migrations/ migrations/
COPY webapp/ webapp/
COPY deploy/ deploy/
COPY docker/ docker/
# Bytecode compiled now, as the app user cannot write it later; the model must be in the image.
RUN mkdir -p instance && chown cxr:cxr instance \
    && python -m compileall -q wsgi.py gunicorn.conf.py migrations webapp deploy docker \
    && test -s webapp/weights/cxr_pneumonia.keras && test -s webapp/weights/model_card.json

USER 10001:10001
# The database (SQLite), the secret key file if one is used, and nothing else lives here.
VOLUME ["/app/instance"]
EXPOSE 8000
# start-period covers the cold model load in every worker; /readyz also checks the database.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "/app/docker/healthcheck.py"]
ENTRYPOINT ["/app/docker/entrypoint.sh"]
CMD ["gunicorn", "--config", "gunicorn.conf.py", "wsgi:app"]

# CXR Screen: the web app, the shipped model and gunicorn in one image.
# Build: docker build -t cxr-screen .   Run: see docker-compose.yml and docs/deployment.md.
# Without an image registry, BASE_IMAGE can be any Debian bookworm with python3.11, python3-venv
# and python-is-python3 (scripts/container_engine.sh makes one with debootstrap).
ARG BASE_IMAGE=python:3.11-slim

# --- build stage: install the locked dependency closure into a virtual environment ---------
FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
# binutils for strip below; it stays in this stage. Versions come with the base's Debian release
# (pinning them would break the build at the next security update).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends binutils \
    && rm -rf /var/lib/apt/lists/*
COPY requirements.lock /tmp/requirements.lock
# --no-deps: the lock is the whole closure, so pip cannot pull in an untested version.
# The optional build secrets are the builder's pip configuration and CA bundle (a hospital's own
# package index, TLS inspection); they are mounted for this step only and never stored in a layer.
RUN --mount=type=secret,id=pip_conf --mount=type=secret,id=ca_bundle \
    if [ -s /run/secrets/pip_conf ]; then export PIP_CONFIG_FILE=/run/secrets/pip_conf; fi \
    && if [ -s /run/secrets/ca_bundle ]; then export PIP_CERT=/run/secrets/ca_bundle; fi \
    && python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-deps -r /tmp/requirements.lock \
    && /opt/venv/bin/pip check
# Serving needs none of what the next step removes (sizes and reasons: docs/deployment.md).
COPY docker/slim_venv.sh /tmp/slim_venv.sh
RUN sh /tmp/slim_venv.sh /opt/venv

# --- run stage ----------------------------------------------------------------------------
FROM ${BASE_IMAGE}
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
COPY docker/entrypoint.sh docker/*.py docker/
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

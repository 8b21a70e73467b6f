# msgsms-exporter container image.
#
#   docker build -t msgsms-exporter:0.1.0 .
#   docker run --rm -p 9170:9170 msgsms-exporter:0.1.0 --demo
#   docker run --rm -p 9170:9170 --read-only --tmpfs /tmp \
#     -v "$PWD/config.yaml:/etc/msgsms-exporter/config.yaml:ro" \
#     -e MSGSMS_ENDPOINT -e MSGSMS_ACCESS_KEY -e MSGSMS_SECRET_KEY msgsms-exporter:0.1.0
#
# tests/test_container.py performs the same install steps in a virtual environment, runs the
# ENTRYPOINT with this CMD against the simulator and probes the HEALTHCHECK; keep them in step.

# Build stage: one wheel for the project and one for each dependency, nothing else. The
# postgres extra (psycopg with its bundled libpq, psycopg-pool) is for receiver.store_url.
FROM python:3.11.13-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter ./exporter
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[postgres]"

# Runtime stage: a virtual environment installed from those wheels only (no index, no compiler).
FROM python:3.11.13-slim-bookworm

ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="msgsms-exporter" \
      org.opencontainers.image.description="Prometheus exporter for Huawei Cloud Message & SMS delivery: per-template success, failure, pending, status codes and delivery delay." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11.13-slim-bookworm"

# No .pyc writes at run time (the root filesystem is read-only; pip compiled them at install),
# unbuffered logs, and the venv first on PATH so `python` in the HEALTHCHECK is the venv's.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH="/opt/msgsms-exporter/bin:${PATH}"

RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv /opt/msgsms-exporter \
 && /opt/msgsms-exporter/bin/pip install --no-cache-dir --no-index --find-links=/wheels \
      "msgsms-exporter[postgres]" \
 && groupadd --system --gid 10001 msgsms \
 && useradd --system --uid 10001 --gid msgsms --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin msgsms

# Numeric so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
WORKDIR /tmp
EXPOSE 9170

HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9170/-/healthy', timeout=4)"]

ENTRYPOINT ["msgsms-exporter"]
CMD ["--config.file=/etc/msgsms-exporter/config.yaml"]

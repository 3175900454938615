# syntax=docker/dockerfile:1
# imagesec-exporter container image.
#
#   docker build -t imagesec-exporter .
#   docker run --rm -p 9879:9879 imagesec-exporter --demo --web.listen-address=0.0.0.0:9879
#   curl -s localhost:9879/metrics
#
# In production, mount the config file at /etc/imagesec-exporter/config.yml and pass the vendors'
# credentials as environment variables (ALIBABA_CLOUD_ACCESS_KEY_ID, ..., TENCENTCLOUD_SECRET_KEY);
# see deploy/kubernetes/ for an example. If you change the port or serve TLS, set
# IMAGESEC_HEALTHCHECK_URL to match (https:// is probed without verifying the certificate; with a
# client_auth_type that requires one, set IMAGESEC_HEALTHCHECK_CERT and _KEY). The image serves
# /-/healthy and /-/ready without basic auth (IMAGESEC_WEB_PROBES_WITHOUT_AUTH) so probes need no
# password; set it to false to require auth there too.

# Pinned patch release of the base; bump both stages together (the ARG is shared).
ARG PYTHON_IMAGE=python:3.11.10-slim-bookworm

# ---- builder: turn the project and its dependencies into wheels --------------------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter ./exporter
RUN pip wheel --wheel-dir /wheels .

# ---- final: the wheels installed offline, no compiler, pip removed, non-root ---------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="imagesec-exporter" \
      org.opencontainers.image.description="Prometheus exporter for Alibaba Cloud Sas and Tencent Cloud TCSS container image security findings" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    IMAGESEC_HEALTHCHECK_URL=http://127.0.0.1:9879/-/healthy \
    IMAGESEC_WEB_PROBES_WITHOUT_AUTH=true
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels /wheels/*.whl \
    && pip uninstall --yes pip setuptools wheel \
    && groupadd --system --gid 10001 imagesec \
    && useradd --system --uid 10001 --gid imagesec --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin imagesec
USER 10001:10001
EXPOSE 9879
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "exporter.healthcheck"]
ENTRYPOINT ["imagesec-exporter"]
CMD ["--config.file=/etc/imagesec-exporter/config.yml"]

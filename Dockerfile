# kube-event-bridge container image.
#   docker build -t kube-event-bridge .
#   docker run -v $PWD/config.yaml:/etc/kube-event-bridge/config.yaml kube-event-bridge
# Build arguments and secrets (BuildKit):
#   BASE         any Debian-like image with python3 >= 3.11 and its venv module
#                (the test suite builds on a local debootstrap image: no registry needed)
#   id=cacert    optional secret: a CA bundle for the package index (e.g. behind a proxy);
#                mounted only while pip runs, never stored in a layer:
#                docker build --secret id=cacert,src=/etc/ssl/certs/ca-certificates.crt .
ARG BASE=python:3.11.11-slim-bookworm

# ---- build: wheels for the bridge and every dependency (any compiler stays in this stage)
FROM ${BASE} AS build
WORKDIR /src
RUN python3 -m venv /opt/build
COPY pyproject.toml README.md ./
COPY bridge ./bridge
COPY sinks ./sinks
RUN --mount=type=secret,id=cacert --mount=type=cache,target=/root/.cache/pip \
    if [ -s /run/secrets/cacert ]; then export PIP_CERT=/run/secrets/cacert; fi \
    && /opt/build/bin/pip wheel --disable-pip-version-check --wheel-dir /wheels .

# ---- runtime: no compilers, no wheels left behind, non-root, config from a mounted file
FROM ${BASE}
LABEL org.opencontainers.image.title="kube-event-bridge" \
      org.opencontainers.image.description="Kubernetes custom resources to CloudEvents on Kafka and NATS" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python3 -m venv /opt/kube-event-bridge \
    && /opt/kube-event-bridge/bin/pip install --no-cache-dir --disable-pip-version-check \
       --no-index --find-links /wheels "kube-event-bridge==0.1.0" \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin bridge
ENV PATH=/opt/kube-event-bridge/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1
USER 10001
EXPOSE 9090
ENTRYPOINT ["kube-event-bridge"]
CMD ["run", "--config", "/etc/kube-event-bridge/config.yaml"]

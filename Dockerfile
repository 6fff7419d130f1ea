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

# ---- deps: wheels of every dependency; reused until pyproject.toml changes
FROM ${BASE} AS deps
WORKDIR /src
COPY pyproject.toml ./
RUN --mount=type=secret,id=cacert --mount=type=cache,target=/root/.cache/pip \
    if [ -s /run/secrets/cacert ]; then export PIP_CERT=/run/secrets/cacert; fi \
    && python3 -m venv /opt/build \
    && /opt/build/bin/python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb')); \
print('\n'.join(p['project']['dependencies']), file=open('requirements.txt', 'w')); \
print('\n'.join(p['build-system']['requires']), file=open('build-requirements.txt', 'w'))" \
    && /opt/build/bin/pip install --disable-pip-version-check -r build-requirements.txt \
    && /opt/build/bin/pip wheel --disable-pip-version-check --wheel-dir /deps -r requirements.txt

# ---- build: the bridge's own wheel (offline; any compiler stays in these stages)
FROM deps AS build
COPY README.md ./
COPY bridge ./bridge
COPY sinks ./sinks
RUN /opt/build/bin/pip wheel --no-cache-dir --disable-pip-version-check --no-deps \
    --no-build-isolation --wheel-dir /app .

# ---- runtime: no compilers, no wheels left behind, non-root, config from a mounted file
FROM ${BASE}
LABEL org.opencontainers.image.title="kube-event-bridge" \
      org.opencontainers.image.description="Kubernetes custom resources to CloudEvents on Kafka and NATS" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN --mount=type=bind,from=deps,source=/deps,target=/deps \
    python3 -m venv /opt/kube-event-bridge \
    && /opt/kube-event-bridge/bin/pip install --no-cache-dir --disable-pip-version-check \
       --no-index /deps/*.whl \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin bridge
RUN --mount=type=bind,from=build,source=/app,target=/app \
    /opt/kube-event-bridge/bin/pip install --no-cache-dir --disable-pip-version-check \
       --no-index --find-links /app "kube-event-bridge==0.1.0"
ENV PATH=/opt/kube-event-bridge/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1
USER 10001
EXPOSE 9090
ENTRYPOINT ["kube-event-bridge"]
CMD ["run", "--config", "/etc/kube-event-bridge/config.yaml"]

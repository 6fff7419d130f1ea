# syntax=docker/dockerfile:1
# kube-event-bridge container image.
#   docker build -t kube-event-bridge .
#   docker run -v $PWD/config.yaml:/etc/kube-event-bridge/config.yaml kube-event-bridge

# ---- build: wheels for the bridge and every dependency (any compiler stays in this stage)
FROM python:3.11.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bridge ./bridge
COPY sinks ./sinks
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# ---- runtime: slim, no compilers, non-root, config from a mounted file
FROM python:3.11.11-slim-bookworm
LABEL org.opencontainers.image.title="kube-event-bridge" \
      org.opencontainers.image.description="Kubernetes custom resources to CloudEvents on Kafka and NATS" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels "kube-event-bridge==0.1.0" \
    && rm -rf /wheels \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin bridge
USER 10001
EXPOSE 9090
ENTRYPOINT ["kube-event-bridge"]
CMD ["run", "--config", "/etc/kube-event-bridge/config.yaml"]

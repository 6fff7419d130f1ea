# syntax=docker/dockerfile:1
# Build stage: wheels for the bridge and its dependencies (compilers stay here).
FROM python:3.11.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bridge ./bridge
COPY sinks ./sinks
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# Runtime stage: no compilers, non-root, config from a mounted file.
FROM python:3.11.11-slim-bookworm
RUN useradd --system --uid 10001 --no-create-home bridge
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels kube-event-bridge \
    && rm -rf /wheels
USER 10001
ENTRYPOINT ["kube-event-bridge"]
CMD ["--help"]

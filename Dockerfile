# callgate: the policy gateway between AI agents and their tools.
#   docker build -t callgate .
#   docker run -p 8080:8080 -p 8081:8081 -v "$PWD/callgate.yaml:/etc/callgate/callgate.yaml:ro" callgate

# Wheels for callgate and every dependency, built where compilers may be.
FROM python:3.11-slim AS wheels
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
# With the `opa` extra: the Helm chart's OPA sidecar sets `policy.engine: opa`; with
# `redis`: limits.storage on Redis, for several replicas. The runtime installs every wheel
# built here.
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[opa,redis]'

# The runtime: the wheels installed, nothing to build with, a fixed non-root user.
FROM python:3.11-slim
ARG UID=10001
RUN useradd --system --uid "${UID}" --user-group --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin callgate \
    && mkdir -p /data /etc/callgate \
    && chown "${UID}:${UID}" /data
RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels /wheels/*.whl
COPY policies /etc/callgate/policies
COPY deploy/callgate.yaml /etc/callgate/callgate.yaml
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER ${UID}:${UID}
VOLUME ["/data"]
EXPOSE 8080 8081
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8081/healthz', timeout=2)"]
ENTRYPOINT ["callgate"]
CMD ["serve", "--config", "/etc/callgate/callgate.yaml"]

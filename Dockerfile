# syntax=docker/dockerfile:1
# One image for every role: `edge` (default), `dispatcher`, `dev`, `token`,
# `publish`. No HEALTHCHECK here: health checks are per role, in
# docker-compose.yml and the Kubernetes probes.
#
# Targets: `runtime` (the default, last stage) and `test` (the test suite,
# for `docker compose run --rm tests`).

# The base of both images, by exact release (deploy/images.lock): at release
# time scripts/pin-images appends its digest here.
ARG PYTHON_IMAGE=python:3.11.15-slim-bookworm

# ---- build: the locked dependencies and the project, in a virtualenv --------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Dependencies first, exactly as locked (versions and hashes), so code
# changes reuse this layer. Regenerate the lock: see requirements/README.md.
COPY requirements/docker.txt requirements/docker.txt
RUN pip install --require-hashes --no-deps -r requirements/docker.txt

# Then the project itself (the console script `ssehub`), nothing else.
COPY pyproject.toml README.md ./
COPY shared shared
COPY edge edge
COPY dispatcher dispatcher
COPY cli cli
RUN pip install --no-deps . \
 && pip check \
 && ssehub --version

# ---- test: `docker compose run --rm tests` -----------------------------------
FROM build AS test
COPY requirements/test.txt requirements/test.txt
RUN pip install --require-hashes --no-deps -r requirements/test.txt
RUN groupadd --system --gid 10001 ssehub \
 && useradd --system --uid 10001 --gid ssehub --home-dir /src --shell /usr/sbin/nologin ssehub
COPY --chown=10001:10001 . /src
# pytest and hypothesis write next to the tests.
RUN chown 10001:10001 /src
USER 10001:10001
ENTRYPOINT ["python", "-m", "pytest", "-m", "not faults"]
CMD ["-q"]

# ---- runtime ----------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 ssehub \
 && useradd --system --uid 10001 --gid ssehub --home-dir /app --create-home --shell /usr/sbin/nologin ssehub
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# Numeric, so Kubernetes' runAsNonRoot can check it.
USER 10001:10001
EXPOSE 8000
ENTRYPOINT ["ssehub"]
CMD ["edge", "--host", "0.0.0.0", "--port", "8000"]

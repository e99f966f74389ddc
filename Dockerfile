# Two targets from one file (docs/serving.md):
#   docker build -t diffusion-asr-server:cpu .                   CPU torch (the default, last stage)
#   docker build --target cuda -t diffusion-asr-server:cuda .    CUDA torch, for GPU nodes (deploy/k8s uses it)
# Build stages install into a virtual environment; the runtime stages copy only that environment, the package's
# own files and the embedded default model. espeak-ng and ffmpeg are not needed to serve: PyAV bundles FFmpeg.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build-base
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src

FROM build-base AS build-cpu
ARG TORCH_SPEC="torch==2.13.0"
ARG TORCH_INDEX="https://download.pytorch.org/whl/cpu"
RUN pip install --index-url "$TORCH_INDEX" "$TORCH_SPEC"
COPY pyproject.toml README.md ./
COPY app ./app
RUN pip install .

FROM build-base AS build-cuda
# The default index's Linux wheel of torch is the CUDA build; its CUDA libraries arrive as wheels too, so the
# runtime needs only the host's NVIDIA driver (the container runtime mounts it).
ARG TORCH_SPEC="torch==2.13.0"
RUN pip install "$TORCH_SPEC"
COPY pyproject.toml README.md ./
COPY app ./app
RUN pip install .

FROM ${PYTHON_IMAGE} AS runtime-base
# A non-root user with a writable home: libraries that cache under $HOME (Hugging Face, torch) can write there.
RUN groupadd --system --gid 10001 asr \
 && useradd --system --uid 10001 --gid asr --create-home --home-dir /home/asr --shell /usr/sbin/nologin asr \
 && install -d -o asr -g asr /var/cache/diffusion-asr
COPY models /srv/models
# The installed package cannot find the repository's models/ by itself, so the image names the shipped default;
# mount a real model and set ASR_MODEL (or ASR_ENCODER / ASR_BACKBONE / ASR_ADAPTER) to serve it instead.
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/home/asr \
    ASR_HOST=0.0.0.0 \
    ASR_PORT=8000 \
    ASR_MODEL=/srv/models/default \
    ASR_CACHE_DIR=/var/cache/diffusion-asr \
    ASR_SHUTDOWN_GRACE_S=5 \
    HF_HUB_OFFLINE=1 \
    PYTHONDONTWRITEBYTECODE=1
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2).status != 200)"]
USER asr
WORKDIR /home/asr
CMD ["diffusion-asr", "serve"]

FROM runtime-base AS cuda
COPY --from=build-cuda /opt/venv /opt/venv

FROM runtime-base AS cpu
COPY --from=build-cpu /opt/venv /opt/venv

# CPU image by default; for GPUs build with --build-arg TORCH_SPEC="torch==2.13.0" --build-arg TORCH_INDEX=<a CUDA wheel index>
FROM python:3.11-slim

ARG TORCH_SPEC="torch==2.13.0"
ARG TORCH_INDEX="https://download.pytorch.org/whl/cpu"

RUN apt-get update \
 && apt-get install -y --no-install-recommends espeak-ng ffmpeg \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /srv
COPY pyproject.toml README.md ./
COPY app ./app
COPY models ./models
RUN pip install --no-cache-dir --index-url "$TORCH_INDEX" "$TORCH_SPEC" \
 && pip install --no-cache-dir .

# The installed package cannot find the repository's models/ by itself, so the image names the shipped default;
# mount a real model and set ASR_MODEL to serve it instead.
RUN mkdir -p /var/cache/diffusion-asr && chown nobody /var/cache/diffusion-asr
ENV ASR_HOST=0.0.0.0 \
    ASR_MODEL=/srv/models/default \
    ASR_PORT=8000 \
    ASR_CACHE_DIR=/var/cache/diffusion-asr \
    HF_HUB_OFFLINE=1
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz').status != 200)"
USER nobody
CMD ["diffusion-asr", "serve"]

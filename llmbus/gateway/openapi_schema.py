"""The gateway's OpenAPI document, told what this deployment serves."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from llmbus.settings import Settings


def described_schema(app: FastAPI, settings: Settings) -> dict[str, Any]:
    """The schema names the served models, so clients and schema-driven tools know which
    values of ``model`` are accepted (anything else is a 404 model_not_found), and holds
    one working request per endpoint, for people and schema-driven tools alike."""
    schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
    models = settings.served_models()
    bodies = schema["components"]["schemas"]
    for name in ("ChatCompletionBody", "CompletionBody"):
        bodies[name]["properties"]["model"]["enum"] = models
        bodies[name]["properties"]["n"]["maximum"] = settings.max_n
    embedders = settings.gateway_embedding_models
    if embedders:
        bodies["EmbeddingRequest"]["properties"]["model"]["enum"] = embedders
    examples = {
        "/v1/chat/completions": {
            "model": models[0],
            "messages": [{"role": "user", "content": "Say hello."}],
            "max_tokens": 8,
        },
        "/v1/completions": {"model": models[0], "prompt": "Hello,", "max_tokens": 8},
        "/v1/embeddings": {
            "model": (embedders or ["all-minilm-l6-v2"])[0],
            "input": ["The cat sat on the mat.", "A dog slept on the rug."],
        },
    }
    for path, example in examples.items():
        content = schema["paths"][path]["post"]["requestBody"]["content"]
        content["application/json"]["example"] = example
    return schema

"""Wire formats of llmbus: versioned pydantic models, JSON on Kafka.

The bottom layer: imports nothing else of llmbus.
"""

from llmbus.schemas.chat import (
    ChatCompletion,
    ChatCompletionRequest,
    ChatMessage,
    Choice,
    Usage,
)
from llmbus.schemas.completion import CompletionRequest, TextCompletion
from llmbus.schemas.embedding import Embedding, EmbeddingList, EmbeddingRequest
from llmbus.schemas.envelope import (
    BatchCancellation,
    CancelRequest,
    ChatRequest,
    ChatResult,
    ErrorReply,
    Priority,
    ReplyTo,
    RequestFacts,
    StreamDelta,
    Timings,
)
from llmbus.schemas.wire import (
    CONTENT_TYPE,
    SCHEMA_VERSION,
    Kind,
    WireDecodeError,
    decode,
    decode_request,
    describe_validation_error,
    encode,
    header,
)

__all__ = [
    "CONTENT_TYPE",
    "SCHEMA_VERSION",
    "BatchCancellation",
    "CancelRequest",
    "ChatCompletion",
    "ChatCompletionRequest",
    "ChatMessage",
    "ChatRequest",
    "ChatResult",
    "Choice",
    "CompletionRequest",
    "Embedding",
    "EmbeddingList",
    "EmbeddingRequest",
    "ErrorReply",
    "Kind",
    "Priority",
    "ReplyTo",
    "RequestFacts",
    "StreamDelta",
    "TextCompletion",
    "Timings",
    "Usage",
    "WireDecodeError",
    "decode",
    "decode_request",
    "describe_validation_error",
    "encode",
    "header",
]

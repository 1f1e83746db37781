"""Embeddings over Kafka on the real pooling engine (all-MiniLM-L6-v2), Kafka and
PostgreSQL: vectors as transformers computes them, OpenAI's shapes, bad input refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from sqlalchemy.ext.asyncio import AsyncEngine

from llmbus.bus import BusProducer, PartitionReader
from llmbus.consumers.engine import Engine
from llmbus.errors import InvalidRequestError, RemoteError
from llmbus.schemas import EmbeddingList, ErrorReply, ReplyTo
from llmbus.schemas.embedding import base64_to_floats
from llmbus.stack.model_cache import packaged_embedding_model
from tests.conftest import Bus
from tests.consumers.test_bad_input import collect_finals, read_dead_letters
from tests.e2e.test_chat_path import wait_for_rows
from tests.jobs.test_batch_jobs import wait_until
from tests.test_cli import run_cli

pytestmark = pytest.mark.integration

SENTENCES = [
    "The cat sits on the mat.",
    "A kitten is resting on a rug.",
    "Stock markets fell sharply after the announcement.",
    "Investors sold shares as prices dropped.",
    "How do I bake sourdough bread at home?",
    "Quantum computers use qubits instead of bits.",
    "Die Katze schläft auf dem Sofa.",
    "llmbus answers requests from Kafka topics.",
]


def reference_vectors(texts: list[str]) -> torch.Tensor:
    """What transformers computes for the model: mean pooling over the attention mask,
    then L2 normalisation (the model's sentence-transformers modules)."""
    from transformers import AutoModel, AutoTokenizer

    path = str(packaged_embedding_model())
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, dtype=torch.float32).eval()
    encoded = tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**encoded).last_hidden_state
    mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    mean = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(mean, dim=1)


def vectors(listing: EmbeddingList) -> torch.Tensor:
    """The listing's vectors in input order, base64 ones decoded as the batch output is."""
    data = base64_to_floats(listing.model_dump(mode="json"))["data"]
    return torch.tensor([item["embedding"] for item in sorted(data, key=lambda d: d["index"])])


async def test_vectors_match_transformers_and_rank_similar_sentences_first(
    embedding_bus: Bus, embedding_engine: Engine, analyst_db: AsyncEngine, tmp_path: Path
) -> None:
    bus = embedding_bus
    await bus.start_worker(embedding_engine)
    await bus.start_auditor()
    async with bus.client(tenant_id="acme") as client:
        many = await client.embed(SENTENCES, request_id="emb-many", user="ana")
        one = await client.embed(SENTENCES[0], request_id="emb-one")
        encoded = await client.embed(SENTENCES, encoding_format="base64")
        tokens = await client.embed([[101, 7592, 2088, 102]])

    assert isinstance(many.completion, EmbeddingList)
    assert many.completion.model == bus.settings.model
    assert many.completion.id == "embd-emb-many"
    assert [d.index for d in many.completion.data] == list(range(len(SENTENCES)))
    got = vectors(many.completion)
    assert got.shape == (len(SENTENCES), 384)
    cosine = torch.nn.functional.cosine_similarity(got, reference_vectors(SENTENCES), dim=1)
    print(f"\n[embeddings] cosine to transformers: min {cosine.min():.6f}")
    assert cosine.min().item() >= 0.999
    assert torch.allclose(got.norm(dim=1), torch.ones(len(SENTENCES)), atol=1e-3)
    # Similar sentences score higher than unrelated ones.
    sim = got @ got.T
    assert sim[0, 1] > max(sim[0, 2], sim[0, 4], sim[0, 5])
    assert sim[2, 3] > max(sim[2, 0], sim[2, 4], sim[2, 5])

    assert isinstance(one.completion, EmbeddingList) and len(one.completion.data) == 1
    assert torch.allclose(vectors(one.completion)[0], got[0], atol=1e-4)
    assert isinstance(encoded.completion, EmbeddingList)
    assert isinstance(encoded.completion.data[0].embedding, str)
    assert torch.allclose(vectors(encoded.completion), got, atol=1e-5)
    assert isinstance(tokens.completion, EmbeddingList)
    assert tokens.completion.usage.prompt_tokens == 4

    usage = many.completion.usage
    assert usage.prompt_tokens > len(SENTENCES) and usage.total_tokens == usage.prompt_tokens

    # The audit trail keeps inputs, model, dimensions and usage; not the vectors.
    rows = await wait_for_rows(
        analyst_db,
        "SELECT q.model, q.params, q.tenant_id, r.status, r.prompt_tokens, r.completion"
        " FROM llmbus.requests q JOIN llmbus.results r USING (request_id)"
        " WHERE q.request_id = :rid",
        {"rid": "emb-many"},
        want=1,
    )
    assert len(rows) == 1
    row = rows[0]
    assert row["model"] == bus.settings.model and row["tenant_id"] == "acme"
    assert row["params"]["input"] == SENTENCES and row["params"]["user"] == "ana"
    assert (row["status"], row["prompt_tokens"]) == ("ok", usage.prompt_tokens)
    stored = row["completion"]["data"]  # type: ignore[index]
    assert [item["dimensions"] for item in stored] == [384] * len(SENTENCES)
    assert all("embedding" not in item for item in stored)

    # Export shows what was kept (lengths); a replay sends the logged inputs again.
    out = tmp_path / "export.jsonl"
    code, _, err = await run_cli(
        "export", "--request-id", "emb-many", "--embeddings", "-o", str(out), env=bus.env()
    )
    assert code == 0, err
    [exported] = [json.loads(line) for line in out.read_text().splitlines()]
    assert exported["params"]["input"] == SENTENCES
    assert [e.get("embedding") for e in exported["embeddings"]] == [None] * len(SENTENCES)
    code, out_text, err = await run_cli("replay", "--request-id", "emb-many", env=bus.env())
    assert code == 0, err
    run_id = out_text.splitlines()[0]
    final = await wait_until(bus, run_id, done=1)
    assert (final.kind, final.status, final.completed) == ("replay", "completed", 1)
    replayed = await wait_for_rows(
        analyst_db,
        "SELECT q.replay_of, q.params, r.completion FROM llmbus.requests q"
        " JOIN llmbus.results r USING (request_id) WHERE q.batch_id = :run",
        {"run": run_id},
        want=1,
    )
    assert replayed[0]["replay_of"] == "emb-many"
    assert replayed[0]["params"]["input"] == SENTENCES
    # A replay run is a batch: its vectors are kept, and they are the same vectors.
    again = EmbeddingList.model_validate(replayed[0]["completion"])
    assert torch.allclose(vectors(again), got, atol=1e-4)


async def test_stored_vectors_are_exported(
    embedding_bus: Bus, embedding_engine: Engine, analyst_db: AsyncEngine, tmp_path: Path
) -> None:
    bus = embedding_bus
    await bus.start_worker(embedding_engine)
    await bus.start_auditor(store_vectors=True)
    async with bus.client() as client:
        result = await client.embed(SENTENCES[:2], request_id="emb-kept")
    assert isinstance(result.completion, EmbeddingList)
    await wait_for_rows(
        analyst_db, "SELECT 1 FROM llmbus.results WHERE request_id = 'emb-kept'", {}, want=1
    )
    out = tmp_path / "export.jsonl"
    code, _, err = await run_cli(
        "export", "--request-id", "emb-kept", "--embeddings", "-o", str(out), env=bus.env()
    )
    assert code == 0, err
    [exported] = [json.loads(line) for line in out.read_text().splitlines()]
    kept = torch.tensor([e["embedding"] for e in exported["embeddings"]])
    assert torch.allclose(kept, vectors(result.completion), atol=1e-6)


async def test_bad_input_gets_clear_errors_and_the_worker_goes_on(
    embedding_bus: Bus, embedding_engine: Engine
) -> None:
    bus = embedding_bus
    s = bus.settings
    await bus.start_worker(embedding_engine)
    reply_to = ReplyTo(topic=s.replies_topic, partition=0)

    def raw(rid: str, **body: object) -> bytes:
        envelope = {
            "request_id": rid,
            "reply_to": reply_to.model_dump(),
            "body": {"model": s.model, "input": "hello", **body},
        }
        return json.dumps(envelope).encode()

    cases = {
        "too-long": raw("too-long", input=["short", "word " * 400]),
        "dimensions": raw("dimensions", dimensions=128),
        "unknown-model": raw("unknown-model", model="no-such-embedder"),
        "empty": raw("empty", input=[]),
        "too-many": raw("too-many", input=["x"] * 2049),
        "chat-here": json.dumps(
            {
                "request_id": "chat-here",
                "reply_to": reply_to.model_dump(),
                "body": {"model": s.model, "messages": [{"role": "user", "content": "hi"}]},
            }
        ).encode(),
        "fine": raw("fine"),
        # 300 vectors as JSON floats (~2.3 MB) cannot travel as one Kafka record.
        "huge-answer": raw("huge-answer", input=["x"] * 300),
        "huge-in-base64": raw("huge-in-base64", input=["x"] * 300, encoding_format="base64"),
    }
    async with (
        PartitionReader(s.kafka_bootstrap, topic=s.replies_topic, partition=0, client_id="t") as r,
        BusProducer(s.kafka_bootstrap, client_id="t", max_request_bytes=1_000_000) as producer,
    ):
        for value in cases.values():
            await producer.send(s.requests_topic, value, [], partition=0)
        finals = await collect_finals(r, set(cases))
        dead = await read_dead_letters(s.kafka_bootstrap, s.dead_letter_topic, want=7)

    codes = {rid: getattr(final, "code", "ok") for rid, final in finals.items()}
    assert codes == {
        "too-long": "context_length_exceeded",
        "dimensions": "invalid_request",
        "unknown-model": "model_not_found",
        "empty": "invalid_request",
        "too-many": "invalid_request",
        "chat-here": "invalid_request",
        "fine": "ok",
        "huge-answer": "payload_too_large",
        "huge-in-base64": "ok",
    }
    messages = {rid: f.message for rid, f in finals.items() if isinstance(f, ErrorReply)}
    assert "dimensions" in messages["dimensions"] and "Matryoshka" in messages["dimensions"]
    assert "256" in messages["too-long"]
    assert "input is empty" in messages["empty"]
    assert "serves /v1/embeddings only" in messages["chat-here"]
    assert "base64" in messages["huge-answer"]
    assert len(dead) == 7, "each refused request is dead-lettered once, with its bytes"

    async with bus.client() as client:
        with pytest.raises(InvalidRequestError, match="input"):
            await client.embed([])  # refused before anything is sent
        with pytest.raises(RemoteError) as info:
            await client.embed("x", dimensions=64)
        assert info.value.remote_code == "invalid_request"
        assert len((await client.embed(["still", "serving"])).completion.data) == 2  # type: ignore[union-attr]

"""ConversationQueue: per-key concurrency, arrival order, a bound, and revocation."""

from __future__ import annotations

from llmbus.consumers.conversation_queue import ConversationQueue


def test_a_key_runs_at_most_its_limit_and_the_rest_start_in_order() -> None:
    queue: ConversationQueue[str] = ConversationQueue(per_key=2, max_waiting=10)
    assert [queue.admit(b"a", f"a{i}") for i in range(4)] == [True, True, False, False]
    assert queue.admit(b"b", "b0") and queue.admit(None, "x") and queue.admit(None, "y")
    assert queue.waiting == 2
    assert queue.release(b"a") == "a2"
    assert queue.release(b"a") == "a3"
    assert queue.release(b"a") is None and queue.release(b"a") is None
    assert queue.admit(b"a", "a4") and queue.admit(b"a", "a5")  # the key is free again
    assert queue.release(None) is None and queue.waiting == 0


def test_full_when_max_waiting_wait_and_drop_frees_them() -> None:
    queue: ConversationQueue[tuple[int, str]] = ConversationQueue(per_key=1, max_waiting=3)
    queue.admit(b"a", (0, "a0"))
    for n, partition in enumerate((0, 1, 0), start=1):
        queue.admit(b"a", (partition, f"a{n}"))
    assert queue.full
    dropped = queue.drop(lambda item: item[0] == 0)
    assert dropped == [(0, "a1"), (0, "a3")] and queue.waiting == 1 and not queue.full
    assert queue.release(b"a") == (1, "a2")

from pathlib import Path

import pytest

from llmbus.errors import SetupError
from llmbus.stack.processes import free_port, wait_for_port


def test_a_server_that_never_listens_is_reported_with_the_end_of_each_log(
    tmp_path: Path,
) -> None:
    runtime, server = tmp_path / "stdout.log", tmp_path / "server.log"
    runtime.write_text("JVM started\n")
    server.write_text("x" * 5000 + "ERROR Address already in use\n")
    with pytest.raises(SetupError) as caught:
        wait_for_port(
            "127.0.0.1",
            free_port(),
            timeout_s=0.3,
            what="Kafka",
            logs=(runtime, server, tmp_path / "missing.log"),
        )
    message = str(caught.value)
    assert "Kafka did not listen on 127.0.0.1:" in message
    assert "JVM started" in message
    assert message.endswith("(no log)")
    assert "ERROR Address already in use" in message
    assert "x" * 2001 not in message  # a tail, not the whole file

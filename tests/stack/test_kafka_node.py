import base64

from llmbus.stack.kafka_node import new_cluster_id


def test_cluster_ids_never_look_like_an_option() -> None:
    # 1 id in 64 would start with "-" by chance; 5000 draws make a miss of the rule
    # all but certain to show up.
    ids = [new_cluster_id() for _ in range(5000)]
    assert not [i for i in ids if i.startswith("-")]
    assert len(set(ids)) == len(ids)
    assert all(len(base64.urlsafe_b64decode(i + "==")) == 16 for i in ids)

"""The local stack: a Kafka broker (KRaft), a PostgreSQL cluster and the model cache."""

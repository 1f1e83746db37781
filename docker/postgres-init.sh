#!/bin/sh
# Runs once, when the compose PostgreSQL volume is created: the same roles as `llmbus up`
# (owner runs migrations; writer inserts and reads, and updates only the gateway's
# rate counters, granted by migration 0004; reader only reads).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<SQL
CREATE ROLE llmbus_owner LOGIN PASSWORD '${LLMBUS_OWNER_PASSWORD}';
CREATE ROLE llmbus_writer LOGIN PASSWORD '${LLMBUS_WRITER_PASSWORD}';
CREATE ROLE llmbus_reader LOGIN PASSWORD '${LLMBUS_READER_PASSWORD}';
CREATE SCHEMA llmbus AUTHORIZATION llmbus_owner;
GRANT USAGE ON SCHEMA llmbus TO llmbus_writer, llmbus_reader;
ALTER ROLE llmbus_owner SET search_path = llmbus;
ALTER ROLE llmbus_writer SET search_path = llmbus;
ALTER ROLE llmbus_reader SET search_path = llmbus;
ALTER DEFAULT PRIVILEGES FOR ROLE llmbus_owner IN SCHEMA llmbus GRANT SELECT, INSERT ON TABLES TO llmbus_writer;
ALTER DEFAULT PRIVILEGES FOR ROLE llmbus_owner IN SCHEMA llmbus GRANT SELECT ON TABLES TO llmbus_reader;
SQL

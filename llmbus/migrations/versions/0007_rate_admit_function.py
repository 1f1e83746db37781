"""The gateway's shared rate-limit admission as one function call.

``llmbus.rate_admit`` does in one statement what the gateway did in one transaction of
five round trips (begin, advisory lock, read both minutes, upsert, commit): it takes the
key's lock, reads the two minutes, decides, and counts the call if admitted. The gateway
calls it outside any transaction, so the statement's own transaction holds the lock. It
runs with the caller's rights: only a role that may already read and count in
``rate_usage`` (the writer role, by 0004's grant or an operator's) can use it, so EXECUTE
stays with PUBLIC, and a writer role of another name keeps working after the upgrade.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

SIGNATURE = "llmbus.rate_admit(text, bigint, double precision, bigint, bigint, bigint)"

# The admission test must stay the one in ``store/rate_usage.py`` (``_refusal``): float8
# arithmetic in the same order, so both sides agree on every call.
ADMIT_FUNCTION = """
CREATE FUNCTION llmbus.rate_admit(
    p_subject text, p_minute bigint, p_weight double precision,
    p_tokens bigint, p_rpm bigint, p_tpm bigint)
RETURNS TABLE (prev_requests bigint, prev_tokens bigint,
               cur_requests bigint, cur_tokens bigint, admitted boolean)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext(p_subject));
    SELECT coalesce(sum(u.requests) FILTER (WHERE u.minute = p_minute - 1), 0),
           coalesce(sum(u.tokens) FILTER (WHERE u.minute = p_minute - 1), 0),
           coalesce(sum(u.requests) FILTER (WHERE u.minute = p_minute), 0),
           coalesce(sum(u.tokens) FILTER (WHERE u.minute = p_minute), 0)
      INTO prev_requests, prev_tokens, cur_requests, cur_tokens
      FROM llmbus.rate_usage u
     WHERE u.subject = p_subject AND u.minute IN (p_minute - 1, p_minute);
    admitted := prev_requests * p_weight + cur_requests + 1 <= p_rpm
            AND prev_tokens * p_weight + cur_tokens + p_tokens <= p_tpm;
    IF admitted THEN
        INSERT INTO llmbus.rate_usage AS u (subject, minute, requests, tokens)
        VALUES (p_subject, p_minute, 1, p_tokens)
        ON CONFLICT (subject, minute) DO UPDATE
        SET requests = u.requests + 1, tokens = u.tokens + excluded.tokens;
    END IF;
    RETURN NEXT;
END
$fn$
"""


def upgrade() -> None:
    op.execute(ADMIT_FUNCTION)


def downgrade() -> None:
    op.execute(f"DROP FUNCTION {SIGNATURE}")

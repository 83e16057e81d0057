-- Per-organization trust policy (JSON: weights, key rotation policy, alert and
-- suspension thresholds; NULL = the documented defaults, see docs/trust.md).
ALTER TABLE organizations ADD COLUMN trust_policy TEXT;

-- The score of the agent's latest trust history point, so the decision writer can
-- tell whether a batch moved the score enough to record; and when the agent was
-- suspended automatically for a low score (NULL when it was not).
ALTER TABLE agent_stats ADD COLUMN trust_recorded_score DOUBLE PRECISION;
ALTER TABLE agent_stats ADD COLUMN trust_suspended_at BIGINT;

-- The score over time and what changed it. Written in the same transaction as the
-- change; never updated.
CREATE TABLE trust_history (
    id TEXT PRIMARY KEY NOT NULL,
    org_id TEXT NOT NULL REFERENCES organizations (id),
    agent_id TEXT NOT NULL REFERENCES agents (id),
    recorded_at BIGINT NOT NULL,
    score DOUBLE PRECISION NOT NULL,
    confidence DOUBLE PRECISION NOT NULL,
    previous_score DOUBLE PRECISION,
    cause TEXT NOT NULL,
    details TEXT NOT NULL,
    contributions TEXT NOT NULL
);
CREATE INDEX trust_history_agent_time ON trust_history (agent_id, recorded_at, id);

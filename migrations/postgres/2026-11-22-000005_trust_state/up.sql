-- The trust model's incremental state per agent (JSON, see docs/trust-model.md) and
-- the confidence of the stored score. NULL state: not yet built (the decision writer
-- starts it at the agent's creation time).
ALTER TABLE agent_stats ADD COLUMN trust_state TEXT;
ALTER TABLE agent_stats ADD COLUMN trust_confidence DOUBLE PRECISION NOT NULL DEFAULT 0;

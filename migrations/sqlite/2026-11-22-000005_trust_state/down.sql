ALTER TABLE agent_stats DROP COLUMN trust_confidence;
ALTER TABLE agent_stats DROP COLUMN trust_state;

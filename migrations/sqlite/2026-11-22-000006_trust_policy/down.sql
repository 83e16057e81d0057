DROP TABLE trust_history;
ALTER TABLE agent_stats DROP COLUMN trust_suspended_at;
ALTER TABLE agent_stats DROP COLUMN trust_recorded_score;
ALTER TABLE organizations DROP COLUMN trust_policy;

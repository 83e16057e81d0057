DROP TABLE trust_events;
DROP TABLE action_nonces;
DROP TABLE agent_grants;
DROP TABLE capabilities;
DROP TABLE agent_challenges;
DROP TABLE agent_keys;
DROP TABLE agent_stats;
DROP TABLE agents;
ALTER TABLE organizations DROP COLUMN enforcement;

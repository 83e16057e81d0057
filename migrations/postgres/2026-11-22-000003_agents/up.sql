-- Agents, their keys, proof-of-possession challenges, the capability catalogue,
-- grants, consumed action nonces and trust events. Ids are UUID text; times are
-- unix milliseconds except action_nonces.issued_at (unix seconds, as signed).

-- Per-organization enforcement: 'enforce' (default) or 'monitor' (explicit choice).
ALTER TABLE organizations ADD COLUMN enforcement TEXT NOT NULL DEFAULT 'enforce'
    CHECK (enforcement IN ('enforce', 'monitor'));

CREATE TABLE agents (
    id TEXT PRIMARY KEY NOT NULL,
    org_id TEXT NOT NULL REFERENCES organizations(id),
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    owner_id TEXT NOT NULL REFERENCES users(id),
    status TEXT NOT NULL CHECK (status IN ('pending', 'active', 'suspended', 'revoked')),
    status_reason TEXT,
    did TEXT NOT NULL,
    -- The current key (also in agent_keys), kept here so a decision reads one row.
    key_id TEXT NOT NULL,
    public_key TEXT NOT NULL,
    requested_capabilities TEXT NOT NULL,
    metadata TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    activated_at BIGINT,
    UNIQUE (org_id, name)
);
CREATE INDEX agents_org ON agents (org_id, created_at);

-- What the decision writer updates for every decision, apart from the identity row.
CREATE TABLE agent_stats (
    agent_id TEXT PRIMARY KEY NOT NULL REFERENCES agents(id),
    trust_score DOUBLE PRECISION NOT NULL,
    actions_allowed BIGINT NOT NULL DEFAULT 0,
    actions_denied BIGINT NOT NULL DEFAULT 0,
    last_seen_at BIGINT
);

CREATE TABLE agent_keys (
    key_id TEXT PRIMARY KEY NOT NULL,
    agent_id TEXT NOT NULL REFERENCES agents(id),
    org_id TEXT NOT NULL REFERENCES organizations(id),
    public_key TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'retired', 'revoked')),
    created_at BIGINT NOT NULL,
    retired_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX agent_keys_agent ON agent_keys (agent_id, created_at);

CREATE TABLE agent_challenges (
    id TEXT PRIMARY KEY NOT NULL,
    agent_id TEXT NOT NULL REFERENCES agents(id),
    challenge TEXT NOT NULL UNIQUE,
    audience TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE INDEX agent_challenges_agent ON agent_challenges (agent_id, created_at);

CREATE TABLE capabilities (
    org_id TEXT NOT NULL REFERENCES organizations(id),
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    risk_level TEXT NOT NULL CHECK (risk_level IN ('low', 'medium', 'high', 'critical')),
    min_trust INTEGER NOT NULL CHECK (min_trust BETWEEN 0 AND 100),
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (org_id, name)
);

CREATE TABLE agent_grants (
    id TEXT PRIMARY KEY NOT NULL,
    org_id TEXT NOT NULL,
    agent_id TEXT NOT NULL REFERENCES agents(id),
    capability TEXT NOT NULL,
    resource_pattern TEXT,
    expires_at BIGINT,
    granted_by TEXT NOT NULL,
    granted_at BIGINT NOT NULL,
    revoked_at BIGINT,
    revoked_by TEXT,
    FOREIGN KEY (org_id, capability) REFERENCES capabilities (org_id, name)
);
CREATE INDEX agent_grants_agent ON agent_grants (agent_id, capability);

-- One row per accepted action: the primary key is what makes a nonce single-use
-- across every replica. Rows older than the freshness window are pruned.
CREATE TABLE action_nonces (
    agent_id TEXT NOT NULL,
    nonce TEXT NOT NULL,
    issued_at BIGINT NOT NULL,
    PRIMARY KEY (agent_id, nonce)
);
CREATE INDEX action_nonces_issued ON action_nonces (issued_at);

CREATE TABLE trust_events (
    id TEXT PRIMARY KEY NOT NULL,
    org_id TEXT NOT NULL REFERENCES organizations(id),
    agent_id TEXT NOT NULL REFERENCES agents(id),
    kind TEXT NOT NULL,
    details TEXT NOT NULL,
    occurred_at BIGINT NOT NULL
);
CREATE INDEX trust_events_agent ON trust_events (agent_id, occurred_at);

-- Security alerts, and indexes for the audit log's query filters.
-- Ids are UUID text; times are unix milliseconds. See docs/alerts.md.

-- `agent_id` has no foreign key: agents are never deleted, and an alert may name an
-- agent the caller only claimed to be. `kind` is checked by the application (new kinds
-- need no migration); `severity` and `status` are closed sets.
CREATE TABLE alerts (
    id TEXT PRIMARY KEY NOT NULL,
    org_id TEXT NOT NULL REFERENCES organizations(id),
    agent_id TEXT NULL,
    kind TEXT NOT NULL,
    severity TEXT NOT NULL CHECK (severity IN ('low', 'medium', 'high', 'critical')),
    status TEXT NOT NULL CHECK (status IN ('open', 'acknowledged', 'resolved')),
    summary TEXT NOT NULL,
    details TEXT NOT NULL,
    occurrences BIGINT NOT NULL CHECK (occurrences >= 1),
    first_seen_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    acknowledged_at BIGINT NULL,
    acknowledged_by TEXT NULL,
    resolved_at BIGINT NULL,
    resolved_by TEXT NULL,
    resolution_note TEXT NULL
);

-- Listing, newest activity first, with and without a status filter.
CREATE INDEX alerts_org_last_seen ON alerts (org_id, last_seen_at, id);
CREATE INDEX alerts_org_status_last_seen ON alerts (org_id, status, last_seen_at, id);

-- The dedupe lookup of `alerts::raise`.
CREATE INDEX alerts_dedupe ON alerts (org_id, agent_id, kind, status);

-- At most one open alert per (organization, agent, kind); a missing agent counts as
-- one value. Concurrent raisers on PostgreSQL rely on it (see alerts::raise).
CREATE UNIQUE INDEX alerts_one_open ON alerts (org_id, kind, (COALESCE(agent_id, '')))
    WHERE status = 'open';

-- The audit log's filters (agent, time window); all keep the chain order (seq).
CREATE INDEX audit_records_org_actor ON audit_records (org_id, actor_id, seq);
CREATE INDEX audit_records_org_target ON audit_records (org_id, target_id, seq);
CREATE INDEX audit_records_org_occurred ON audit_records (org_id, occurred_at);

-- Append-only, hash-chained audit log: one chain per organization.
-- Ids are UUID text; times are unix milliseconds. See docs/audit.md for the hash encoding.

-- The head of each organization's chain: the last sequence number handed out and the
-- hash of that record (the genesis hash while seq = 0). Appends lock this row first.
CREATE TABLE audit_heads (
    org_id TEXT PRIMARY KEY NOT NULL REFERENCES organizations(id),
    seq BIGINT NOT NULL CHECK (seq >= 0),
    hash TEXT NOT NULL
);

CREATE TABLE audit_records (
    id TEXT PRIMARY KEY NOT NULL,
    org_id TEXT NOT NULL REFERENCES organizations(id),
    seq BIGINT NOT NULL CHECK (seq >= 1),
    occurred_at BIGINT NOT NULL,
    actor_type TEXT NOT NULL,
    actor_id TEXT NULL,
    action TEXT NOT NULL,
    target_type TEXT NULL,
    target_id TEXT NULL,
    outcome TEXT NOT NULL,
    details TEXT NOT NULL,
    request_id TEXT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    UNIQUE (org_id, seq)
);

-- Records are never changed or removed.
CREATE TRIGGER audit_records_no_update BEFORE UPDATE ON audit_records
BEGIN
    SELECT RAISE(ABORT, 'audit_records is append-only: UPDATE is not allowed');
END;

CREATE TRIGGER audit_records_no_delete BEFORE DELETE ON audit_records
BEGIN
    SELECT RAISE(ABORT, 'audit_records is append-only: DELETE is not allowed');
END;

-- A head only moves forward and is never removed.
CREATE TRIGGER audit_heads_no_rewind BEFORE UPDATE ON audit_heads
WHEN NEW.seq < OLD.seq OR NEW.org_id <> OLD.org_id
BEGIN
    SELECT RAISE(ABORT, 'audit_heads only moves forward');
END;

CREATE TRIGGER audit_heads_no_delete BEFORE DELETE ON audit_heads
BEGIN
    SELECT RAISE(ABORT, 'audit_heads rows are never deleted');
END;

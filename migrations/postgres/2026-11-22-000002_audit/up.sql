-- Append-only, hash-chained audit log: one chain per organization.
-- Ids are UUID text; times are unix milliseconds. See docs/audit.md for the hash encoding.

-- The head of each organization's chain: the last sequence number handed out and the
-- hash of that record (the genesis hash while seq = 0). Appends lock this row first
-- (UPDATE ... SET seq = seq + 1), which serializes appenders of one organization across
-- every replica until their transaction ends.
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

-- Records are never changed or removed (TRUNCATE included).
CREATE FUNCTION audit_records_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_records is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER audit_records_no_update_delete
    BEFORE UPDATE OR DELETE ON audit_records
    FOR EACH ROW EXECUTE FUNCTION audit_records_append_only();

CREATE TRIGGER audit_records_no_truncate
    BEFORE TRUNCATE ON audit_records
    FOR EACH STATEMENT EXECUTE FUNCTION audit_records_append_only();

-- A head only moves forward and is never removed.
CREATE FUNCTION audit_heads_forward_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF NEW.seq >= OLD.seq AND NEW.org_id = OLD.org_id THEN
            RETURN NEW;
        END IF;
        RAISE EXCEPTION 'audit_heads only moves forward'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RAISE EXCEPTION 'audit_heads rows are never removed: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER audit_heads_forward_only
    BEFORE UPDATE OR DELETE ON audit_heads
    FOR EACH ROW EXECUTE FUNCTION audit_heads_forward_only();

CREATE TRIGGER audit_heads_no_truncate
    BEFORE TRUNCATE ON audit_heads
    FOR EACH STATEMENT EXECUTE FUNCTION audit_heads_forward_only();

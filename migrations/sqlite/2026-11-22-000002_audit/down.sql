DROP TRIGGER IF EXISTS audit_heads_no_delete;
DROP TRIGGER IF EXISTS audit_heads_no_rewind;
DROP TRIGGER IF EXISTS audit_records_no_delete;
DROP TRIGGER IF EXISTS audit_records_no_update;
DROP TABLE audit_records;
DROP TABLE audit_heads;

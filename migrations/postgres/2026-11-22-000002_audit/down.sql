DROP TABLE audit_records;
DROP TABLE audit_heads;
DROP FUNCTION audit_records_append_only();
DROP FUNCTION audit_heads_forward_only();

DROP INDEX IF EXISTS audit_records_org_occurred;
DROP INDEX IF EXISTS audit_records_org_target;
DROP INDEX IF EXISTS audit_records_org_actor;
DROP TABLE alerts;

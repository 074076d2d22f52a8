-- Database roles of one service (deploy/README.md, "Migrations and database roles").
-- Run once per service as a superuser (or the database owner), with psql variables:
--
--   psql "$ADMIN_URL" -v schema=payment -v owner=payment_owner -v app=payment_app \
--        -v owner_password="$OWNER_PW" -v app_password="$APP_PW" -f deploy/postgres/roles.sql
--
-- owner: owns the schema and runs the migration Job (DDL). Its URL goes into the Secret
--        <svc>-migrate-secrets (key DATABASE_URL) and nowhere else.
-- app:   what the service's pods use (<svc>-secrets, DATABASE_URL): it reads and writes rows,
--        and cannot create, alter or drop anything. The services run with MIGRATE_ON_START=false.
-- Tested by tests/kit/integration/test_migrate_job.py, which runs this file.

CREATE ROLE :"owner" LOGIN PASSWORD :'owner_password';
CREATE ROLE :"app" LOGIN PASSWORD :'app_password';
CREATE SCHEMA IF NOT EXISTS :"schema" AUTHORIZATION :"owner";
-- Nobody else creates objects in the schema, and nothing reaches it through PUBLIC.
REVOKE ALL ON SCHEMA :"schema" FROM PUBLIC;
GRANT USAGE ON SCHEMA :"schema" TO :"app";
-- Every table and sequence the owner's migrations create, now and later: rows only.
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA :"schema"
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO :"app";
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA :"schema"
    GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO :"app";
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA :"schema"
    GRANT EXECUTE ON FUNCTIONS TO :"app";
-- Objects that already exist (a schema migrated before the roles were split).
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA :"schema" TO :"app";
GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA :"schema" TO :"app";
-- Bounded sessions for the runtime role (the services also set their own command timeout).
ALTER ROLE :"app" SET idle_in_transaction_session_timeout = '60s';

-- The functions' PostgreSQL role: it reads and writes rows and changes no
-- schema. Migrations run at deploy time as the schema's owner
-- (`gateway-admin migrate`, README "Deploying"); the functions connect as
-- this role with MIGRATE_ON_START=false (template.yaml).
--
-- Run once, as the owner, after the first `gateway-admin migrate`, with
-- your own role name and password:
--   psql "$OWNER_DATABASE_URL" -f deploy/app-role.sql
-- then put the password in the secret as DATABASE_PASSWORD and the role in
-- DatabaseUrl (postgres://gateway_app@host:5432/db).
-- (PostgreSQL 15 and later already deny CREATE on schema public to PUBLIC;
-- the REVOKE makes it so on older servers too.)

CREATE ROLE gateway_app LOGIN PASSWORD 'change-me';
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO gateway_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO gateway_app;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO gateway_app;
-- The migration history is the owner's alone.
REVOKE ALL ON TABLE _sqlx_migrations FROM gateway_app;
-- Tables and sequences that later migrations create, as the same owner:
ALTER DEFAULT PRIVILEGES IN SCHEMA public
  GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO gateway_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA public
  GRANT USAGE, SELECT ON SEQUENCES TO gateway_app;

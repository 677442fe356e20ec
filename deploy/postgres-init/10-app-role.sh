#!/usr/bin/env bash
# The coordinator's own login role, APP_DB_USER (docker-compose.yml: gan_app), with the
# password APP_DB_PASSWORD. The postgres image runs /docker-entrypoint-initdb.d/*.sh once,
# as POSTGRES_USER (gan, the owner of the database and its schema), when the data volume
# is new. The role starts with no privileges at all: `gan-coordinator migrate` (as gan,
# with GAN_APP_ROLE=gan_app) grants it the tables' rows after every migration, and never
# the right to change the schema (coordinator_service/db/roles.py).
#
# Safe to run again, e.g. on a volume made before this script existed, or to change the
# password (then update .env and restart the coordinator):
#   docker compose exec db /docker-entrypoint-initdb.d/10-app-role.sh
set -euo pipefail
: "${APP_DB_PASSWORD:?set APP_DB_PASSWORD in .env (see .env.example)}"

# psql fills in :'var' (a quoted literal) and :"var" (a quoted identifier) itself, so
# neither the name nor the password is ever pasted into SQL by the shell.
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v app_user="${APP_DB_USER:-gan_app}" -v app_password="$APP_DB_PASSWORD" <<'SQL'
SELECT format('CREATE ROLE %I', :'app_user')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'app_user') \gexec
ALTER ROLE :"app_user" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION
    NOBYPASSRLS PASSWORD :'app_password';
SQL

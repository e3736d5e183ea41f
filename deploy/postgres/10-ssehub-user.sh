#!/usr/bin/env bash
# The compose `postgres` service, on its first start with an empty volume
# (/docker-entrypoint-initdb.d): the role ssehub's processes log in with, owner
# of the database `ssehub` and of its schema, not a superuser. `postgres` (the
# superuser) stays for operators and the test suite.
#
# A volume made by an earlier compose file has no such role: deploy/README.md,
# "Upgrading", says what to run once.
set -euo pipefail

if [[ ! ${POSTGRES_SSEHUB_PASSWORD:-} =~ ^[A-Za-z0-9._~-]{16,}$ ]]; then
    echo "postgres: POSTGRES_SSEHUB_PASSWORD must be 16 or more of A-Z a-z 0-9 . _ ~ - (deploy/compose-env writes one)" >&2
    exit 1
fi
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<SQL
CREATE ROLE ssehub LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD '${POSTGRES_SSEHUB_PASSWORD}';
ALTER DATABASE "${POSTGRES_DB}" OWNER TO ssehub;
ALTER SCHEMA public OWNER TO ssehub;
SQL

#!/usr/bin/env bash
# Stand-in for the official postgres image's docker-entrypoint.sh, run with the host's Debian
# binaries: the e2e test has no image, so this reproduces the parts our manifest relies on
# (first-start initdb from POSTGRES_* env, password auth over TCP, POSTGRES_DB created, the
# container args passed to postgres) and nothing else (no initdb.d scripts, no gosu/root path).
set -Eeuo pipefail

# As the official image: options alone mean "postgres with these options".
if [ "${1:0:1}" = '-' ]; then
	set -- postgres "$@"
fi
if [ "${1:-}" != postgres ]; then
	exec "$@"
fi
shift

# Debian keeps the server binaries off PATH, one directory per major version: use the newest.
PGBIN="$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d | sort -V | tail -n 1)"
if [ -z "$PGBIN" ]; then
	echo >&2 "postgres-entrypoint: no /usr/lib/postgresql/*/bin found"
	exit 1
fi
: "${PGDATA:?PGDATA must be set}"
: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
# The manifest mounts an emptyDir here; the official image uses the same directory.
SOCKET_DIR=/var/run/postgresql

mkdir -p "$PGDATA"
# initdb and postgres refuse a data directory readable by others.
chmod 00700 "$PGDATA" || :
mkdir -p "$SOCKET_DIR" || :
chmod 03775 "$SOCKET_DIR" 2>/dev/null || :

if [ ! -s "$PGDATA/PG_VERSION" ]; then
	if [ -z "${POSTGRES_PASSWORD:-}" ]; then
		echo >&2 "postgres-entrypoint: database is uninitialized and POSTGRES_PASSWORD is not set"
		exit 1
	fi
	# The password goes through a pipe, never argv (visible in /proc to every user).
	# UTF8 as the official image's en_US.utf8 gives; C collation needs no installed locale.
	# shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is word-split on purpose, as upstream does.
	"$PGBIN/initdb" -D "$PGDATA" --username="$POSTGRES_USER" \
		--pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
		--auth-local=trust --auth-host=scram-sha-256 \
		--encoding=UTF8 --locale=C ${POSTGRES_INITDB_ARGS:-} >/dev/null
	# "all" covers IPv4 and IPv6 clients: pods connect over TCP with the password.
	printf '\n%s\n' 'host all all all scram-sha-256' >>"$PGDATA/pg_hba.conf"

	# Temporary server on the unix socket only, so no client can connect before the
	# database exists; the manifest's args still apply (after them, our overrides win).
	"$PGBIN/pg_ctl" -D "$PGDATA" -w -s \
		-o "$(printf '%q ' "$@") -c listen_addresses= -c unix_socket_directories=$SOCKET_DIR -p 5432" start
	psql=("$PGBIN/psql" -v ON_ERROR_STOP=1 --no-psqlrc -h "$SOCKET_DIR" -p 5432 -U "$POSTGRES_USER" --dbname postgres)
	# As upstream: create POSTGRES_DB unless it exists (initdb makes only "postgres"), also when
	# it is named like the user. psql interpolates :"db" only in stdin scripts, not in -c.
	exists="$("${psql[@]}" -tA --set db="$POSTGRES_DB" <<<"SELECT 1 FROM pg_database WHERE datname = :'db';")"
	if [ -z "$exists" ]; then
		"${psql[@]}" -q --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";'
	fi
	"$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w -s stop
	echo "postgres-entrypoint: init process complete; ready for start up."
fi

# exec: postgres becomes the container's main process and gets SIGTERM itself.
exec "$PGBIN/postgres" -c listen_addresses='*' -c unix_socket_directories="$SOCKET_DIR" "$@"

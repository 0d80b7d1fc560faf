#!/usr/bin/env bash
# Stand-in for the official postgres image's docker-entrypoint.sh, run with the host's Debian
# binaries: the e2e test has no image, so this reproduces the parts our manifest relies on
# (first-start initdb from POSTGRES_* env or their *_FILE variants, initdb as a uid the image's
# /etc/passwd lacks through nss_wrapper, password auth over TCP, POSTGRES_DB created, the
# container args passed to postgres) and nothing else (no initdb.d scripts, no gosu/root path).
# Emulated: docker-library/postgres 16/alpine3.21/docker-entrypoint.sh as built into 16.6-alpine3.21
# (commit 607fdbdadc175f112ebcf94a42272ca57e3b8ab2); file_env and the nss_wrapper block are its own.
set -Eeuo pipefail

# As upstream's file_env: VAR from VAR_FILE (exclusive; "$(< f)" drops trailing newlines), then
# exported, as the image does, and VAR_FILE unset.
file_env() {
	local var="$1"
	local fileVar="${var}_FILE"
	local def="${2:-}"
	if [ "${!var:-}" ] && [ "${!fileVar:-}" ]; then
		printf >&2 'error: both %s and %s are set (but are exclusive)\n' "$var" "$fileVar"
		exit 1
	fi
	local val="$def"
	if [ "${!var:-}" ]; then
		val="${!var}"
	elif [ "${!fileVar:-}" ]; then
		val="$(< "${!fileVar}")"
	fi
	export "$var"="$val"
	unset "$fileVar"
}

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
file_env POSTGRES_PASSWORD
file_env POSTGRES_USER postgres
file_env POSTGRES_DB "$POSTGRES_USER"
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
	# initdb looks its uid up in /etc/passwd and stops if it is missing: as upstream, fake a
	# `postgres` entry with nss_wrapper (Debian's libnss-wrapper here) for initdb alone.
	uid="$(id -u)"
	if ! getent passwd "$uid" &>/dev/null; then
		for wrapper in {/usr,}/lib{/*,}/libnss_wrapper.so; do
			if [ -s "$wrapper" ]; then
				NSS_WRAPPER_PASSWD="$(mktemp)"
				NSS_WRAPPER_GROUP="$(mktemp)"
				export LD_PRELOAD="$wrapper" NSS_WRAPPER_PASSWD NSS_WRAPPER_GROUP
				gid="$(id -g)"
				printf 'postgres:x:%s:%s:PostgreSQL:%s:/bin/false\n' "$uid" "$gid" "$PGDATA" >"$NSS_WRAPPER_PASSWD"
				printf 'postgres:x:%s:\n' "$gid" >"$NSS_WRAPPER_GROUP"
				break
			fi
		done
	fi
	# The password goes through a pipe, never argv (visible in /proc to every user).
	# UTF8 as the official image's en_US.utf8 gives; C collation needs no installed locale.
	# shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is word-split on purpose, as upstream does.
	"$PGBIN/initdb" -D "$PGDATA" --username="$POSTGRES_USER" \
		--pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
		--auth-local=trust --auth-host=scram-sha-256 \
		--encoding=UTF8 --locale=C ${POSTGRES_INITDB_ARGS:-} >/dev/null
	if [[ "${LD_PRELOAD:-}" == */libnss_wrapper.so ]]; then
		rm -f "$NSS_WRAPPER_PASSWD" "$NSS_WRAPPER_GROUP"
		unset LD_PRELOAD NSS_WRAPPER_PASSWD NSS_WRAPPER_GROUP
	fi
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

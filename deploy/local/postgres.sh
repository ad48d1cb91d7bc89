#!/usr/bin/env bash
# Makes sure a PostgreSQL answers on 127.0.0.1:5432 with a role and database for the tests of
# the PostgreSQL store (role ozg, password ozg, database ozg_test). Installs postgresql from
# Debian's packages and starts it when none answers. Leaves existing roles untouched.
set -euo pipefail

port=${OZG_PG_PORT:-5432}
sudo_cmd=""
if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi
answers() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }

if ! answers; then
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    echo "postgres.sh: no PostgreSQL found, installing postgresql from Debian's packages"
    $sudo_cmd apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q postgresql
  fi
  if ! answers; then
    version=$(ls /etc/postgresql | sort -n | tail -1)
    echo "postgres.sh: starting PostgreSQL $version"
    $sudo_cmd pg_ctlcluster --skip-systemctl-redirect "$version" main start
  fi
  for _ in $(seq 1 60); do answers && break; sleep 0.5; done
  answers || { echo "postgres.sh: PostgreSQL did not answer on 127.0.0.1:$port" >&2; exit 1; }
fi

as_postgres() { $sudo_cmd runuser -u postgres -- "$@"; }
if ! as_postgres psql -qtAc "select 1 from pg_roles where rolname = 'ozg'" | grep -q 1; then
  as_postgres psql -qc "create role ozg login password 'ozg'"
fi
if ! as_postgres psql -qtAc "select 1 from pg_database where datname = 'ozg_test'" | grep -q 1; then
  as_postgres createdb -O ozg ozg_test
fi
echo "postgres.sh: PostgreSQL answers on 127.0.0.1:$port (database ozg_test, role ozg)"

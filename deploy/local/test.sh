#!/usr/bin/env bash
# The whole test suite against a real RabbitMQ and PostgreSQL (for the PostgreSQL store): the
# same broker bootstrap and definitions import as up.sh, then
# cargo test (unit, integration and binary tests). Tests create and delete vhosts of their
# own (ozgtest-*), so they run in parallel without seeing each other.
set -euo pipefail
cd "$(dirname "$0")/../.."

deploy/local/broker.sh
deploy/local/postgres.sh
# The example's vhosts and topology from deploy/rabbitmq/definitions.json, as up.sh loads
# them: a definitions file the broker refuses fails here, before the tests.
deploy/local/vhosts.sh
export PATH="$PATH:/usr/sbin"
sudo_cmd=""
if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi
# tests/deploy.rs verifies the systemd unit with systemd-analyze (part of systemd).
if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "test.sh: installing systemd for systemd-analyze"
  $sudo_cmd apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q systemd
fi
# tests/admin_cli.rs checks the manual pages of `ozg-gateway man` with groff.
if ! command -v groff >/dev/null 2>&1; then
  echo "test.sh: installing groff-base for groff"
  $sudo_cmd apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q groff-base
fi

# tests/console.rs drives the web console in Debian's headless chromium through chromedriver;
# without them it fails (it is never skipped).
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  echo "test.sh: installing chromium and chromium-driver for the console's browser test"
  $sudo_cmd apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q chromium chromium-driver
fi

# Vhosts left behind by an interrupted earlier run: test vhosts are named
# ozgtest-<pid of the test process>-..., so only those whose process is gone are removed and a
# run beside this one keeps its own.
for vhost in $($sudo_cmd rabbitmqctl list_vhosts --quiet --no-table-headers 2>/dev/null | grep '^ozgtest-' || true); do
  pid=${vhost#ozgtest-}; pid=${pid%%-*}
  case "$pid" in
    ''|*[!0-9]*) ;;
    *) if kill -0 "$pid" 2>/dev/null; then continue; fi ;;
  esac
  $sudo_cmd rabbitmqctl delete_vhost "$vhost" >/dev/null || true
done

cargo test --locked --all-targets "$@"

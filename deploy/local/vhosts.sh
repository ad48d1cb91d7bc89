#!/usr/bin/env bash
# Creates the vhosts of the example configuration (ozg-gateway and one per Land, as if each
# Land ran its own broker) with permissions for guest. Safe to run again.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
definitions="$here/../rabbitmq/local-vhosts.json"
export PATH="$PATH:/usr/sbin"
sudo_cmd=""
if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi

$sudo_cmd rabbitmqctl import_definitions "$(cd "$(dirname "$definitions")" && pwd)/$(basename "$definitions")" >/dev/null
# The import runs asynchronously: wait until the last vhost has its permissions.
for _ in $(seq 1 60); do
  if $sudo_cmd rabbitmqctl list_permissions -p ozg-th 2>/dev/null | grep -q '^guest'; then
    echo "vhosts.sh: vhosts of the example configuration are ready"
    exit 0
  fi
  sleep 0.5
done
echo "vhosts.sh: the vhosts did not appear within 30 s" >&2
exit 1

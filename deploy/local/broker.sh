#!/usr/bin/env bash
# Makes sure a RabbitMQ broker answers on 127.0.0.1:5672 (guest/guest) with the plugins the
# scripts and tests use (management API for vhost set-up, shovel for the benchmark).
# Installs rabbitmq-server from Debian's packages and starts it when none answers.
# Sourced or run by up.sh and test.sh; safe to run again.
set -euo pipefail

amqp_port=${OZG_AMQP_PORT:-5672}
mgmt_port=${OZG_MANAGEMENT_PORT:-15672}
sudo_cmd=""
if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for_port() {
  local port=$1 what=$2
  for _ in $(seq 1 120); do
    if answers "$port"; then return 0; fi
    sleep 0.5
  done
  echo "broker.sh: $what did not answer on 127.0.0.1:$port within 60 s" >&2
  return 1
}

if ! answers "$amqp_port"; then
  if ! command -v rabbitmq-server >/dev/null 2>&1 && [ ! -x /usr/sbin/rabbitmq-server ]; then
    echo "broker.sh: no RabbitMQ found, installing rabbitmq-server from Debian's packages"
    $sudo_cmd apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q rabbitmq-server
  fi
  export PATH="$PATH:/usr/sbin"
  if ! answers "$amqp_port"; then
    echo "broker.sh: starting rabbitmq-server"
    $sudo_cmd rabbitmq-server -detached
    $sudo_cmd rabbitmqctl await_startup --timeout 120 >/dev/null
  fi
  wait_for_port "$amqp_port" "RabbitMQ (AMQP)"
fi
export PATH="$PATH:/usr/sbin"

if command -v rabbitmq-plugins >/dev/null 2>&1; then
  # Idempotent and fast when the plugins are already on.
  $sudo_cmd rabbitmq-plugins enable --quiet rabbitmq_management rabbitmq_shovel rabbitmq_shovel_management >/dev/null
  wait_for_port "$mgmt_port" "RabbitMQ management API"
else
  echo "broker.sh: RabbitMQ answers on $amqp_port but rabbitmq-plugins is not on this machine;" >&2
  echo "broker.sh: enable rabbitmq_management and rabbitmq_shovel on that broker yourself" >&2
fi
echo "broker.sh: RabbitMQ answers on 127.0.0.1:$amqp_port (management on $mgmt_port)"

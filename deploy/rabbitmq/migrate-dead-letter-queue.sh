#!/usr/bin/env bash
# Turns a classic dead-letter queue (what the gateway declared before it declared a quorum
# queue) into a quorum queue of the same name, without losing a dead letter. Run it on a
# node of the gateway's broker, with every gateway instance of that broker stopped (they
# are the only publishers to the dead-letter exchange), the rabbitmq_shovel plugin enabled,
# then start the new gateway version. docs/operations.md, "Upgrades", says why and when.
#
#   deploy/rabbitmq/migrate-dead-letter-queue.sh [VHOST] [QUEUE] [EXCHANGE]
#     defaults: ozg-gateway ozg.gateway.dead-letters ozg.gateway.dead-letter
#   (RABBITMQ_NODENAME=rabbit@host picks the node, as for rabbitmqctl itself)
#
# The letters move twice, each time with RabbitMQ's shovel acking only what the target
# queue confirmed: into a quorum holding queue (QUEUE.migrating), then, once the classic
# queue is deleted and the quorum one declared and bound exactly as the gateway declares it,
# back into QUEUE, in their order. Safe to run again after an interruption: it carries on
# from wherever the letters are.
set -euo pipefail

vhost=${1:-ozg-gateway}
queue=${2:-ozg.gateway.dead-letters}
exchange=${3:-ozg.gateway.dead-letter}
holding="$queue.migrating"
shovel=ozg-migrate-dead-letters
export PATH="$PATH:/usr/sbin"
sudo_cmd=""
if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi
ctl() { $sudo_cmd rabbitmqctl "$@"; }
say() { echo "migrate-dead-letter-queue.sh: $*"; }
fail() { say "$*" >&2; exit 1; }

# Type and consumers of both queues, in one call: q_type, q_consumers for QUEUE, h_… for
# the holding queue; type empty when absent. Not their messages: list_queues reports a
# quorum queue's count as of its last tick, seconds old, and a stale 0 would have us delete a
# queue that still holds letters. count asks the queue itself.
look() {
  local listing
  listing=$(ctl list_queues -p "$vhost" --quiet --no-table-headers name type consumers)
  read -r q_type q_consumers < <(printf '%s\n' "$listing" |
    awk -F'\t' -v q="$queue" '$1 == q { print $2, $3 } END { print "" }')
  read -r h_type h_consumers < <(printf '%s\n' "$listing" |
    awk -F'\t' -v q="$holding" '$1 == q { print $2, $3 } END { print "" }')
}

erlang_binary() { printf '<<"%s"/utf8>>' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"; }

count() { # QUEUE: the messages ready in QUEUE now, as its leader knows them; 0 when absent
  local n
  n=$(ctl eval --quiet "case rabbit_amqqueue:lookup(rabbit_misc:r($(erlang_binary "$vhost"), queue, $(erlang_binary "$1"))) of {ok, Q} -> {ok, N, _} = rabbit_amqqueue:stat(Q), io:format(\"count=~b~n\", [N]); _ -> io:format(\"count=0~n\") end, ok." |
    sed -n 's/^count=\([0-9][0-9]*\)$/\1/p')
  [ -n "$n" ] || fail "could not count the messages in $1"
  echo "$n"
}

wait_for() { # DESCRIPTION CONDITION… : look, then CONDITION, until it holds; at most 120 s
  local what=$1
  shift
  for _ in $(seq 1 240); do
    look
    if "$@"; then return 0; fi
    sleep 0.5
  done
  fail "gave up waiting: $what"
}

json_string() { printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"; }
uri_vhost() { printf '%s' "$1" | sed 's/%/%25/g; s#/#%2f#g'; }

import() { # JSON: definitions to import
  local file
  file=$(mktemp --suffix=.json)
  printf '%s\n' "$1" >"$file"
  chmod 0644 "$file"
  ctl import_definitions "$file" >/dev/null
  rm -f "$file"
}

quorum_queue() { # NAME: a queue as the gateway declares it
  printf '{"name":%s,"vhost":%s,"durable":true,"auto_delete":false,"arguments":{"x-queue-type":"quorum"}}' \
    "$(json_string "$1")" "$(json_string "$vhost")"
}

move() { # FROM TO: shovel every message, each acked at FROM only once TO confirmed it
  local from=$1 to=$2 n uri
  uri=$(json_string "amqp:///$(uri_vhost "$vhost")")
  # The shovel stops after the messages FROM held when it started; a message it had in
  # flight when it stopped goes back to FROM, so go round until FROM is empty.
  for _ in 1 2 3 4 5; do
    n=$(count "$from")
    if [ "$n" -eq 0 ]; then return 0; fi
    say "moving $n dead letters from $from to $to"
    ctl set_parameter -p "$vhost" shovel "$shovel" \
      '{"src-protocol":"amqp091","src-uri":'"$uri"',"src-queue":'"$(json_string "$from")"',"dest-protocol":"amqp091","dest-uri":'"$uri"',"dest-exchange":"","dest-exchange-key":'"$(json_string "$to")"',"ack-mode":"on-confirm","src-delete-after":"queue-length"}' >/dev/null
    wait_for "the shovel from $from to finish" shovel_gone
  done
  fail "$from still holds $(count "$from") messages: is something publishing to it?"
}

shovel_gone() {
  ! ctl list_parameters -p "$vhost" --quiet --no-table-headers | awk -F'\t' '{ print $2 }' | grep -qxF "$shovel"
}

holding_is_quorum() { [ "$h_type" = quorum ]; }
queue_is_quorum() { [ "$q_type" = quorum ]; }
queue_gone() { [ -z "$q_type" ]; }
holding_gone() { [ -z "$h_type" ]; }

look
if [ "$q_type" = quorum ] && [ -z "$h_type" ]; then
  say "$queue on $vhost is a quorum queue already; nothing to do"
  exit 0
fi
if [ -z "$q_type" ] && [ -z "$h_type" ]; then
  say "no queue $queue on $vhost; the gateway will declare it as a quorum queue"
  exit 0
fi
if [ "${q_consumers:-0}" != 0 ]; then
  fail "$queue has $q_consumers consumers: stop every gateway instance of this broker first"
fi
before=$(( $(count "$queue") + $(count "$holding") ))

if [ "$q_type" = classic ]; then
  if [ "$h_type" != quorum ]; then
    import '{"queues":['"$(quorum_queue "$holding")"']}'
    wait_for "quorum queue $holding" holding_is_quorum
  fi
  move "$queue" "$holding"
  ctl delete_queue -p "$vhost" "$queue" --if-empty >/dev/null
  wait_for "the classic $queue to go (was it empty?)" queue_gone
fi
ex=$(json_string "$exchange")
vh=$(json_string "$vhost")
import '{"queues":['"$(quorum_queue "$queue")"'],"exchanges":[{"name":'"$ex"',"vhost":'"$vh"',"type":"topic","durable":true,"auto_delete":false,"internal":false,"arguments":{}}],"bindings":[{"source":'"$ex"',"vhost":'"$vh"',"destination":'"$(json_string "$queue")"',"destination_type":"queue","routing_key":"#","arguments":{}}]}'
wait_for "quorum queue $queue" queue_is_quorum
move "$holding" "$queue"
# Quorum queues know no --if-empty; move counted it empty, and nothing else publishes to it.
ctl delete_queue -p "$vhost" "$holding" >/dev/null
wait_for "$holding to go" holding_gone
after=$(count "$queue")
say "$queue on $vhost is a quorum queue with $after dead letters (held $before before)"
if [ "$after" -lt "$before" ]; then fail "fewer dead letters than before: look at $queue"; fi

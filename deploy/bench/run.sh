#!/usr/bin/env bash
# Throughput benchmark: the gateway against RabbitMQ's own shovel, on the local broker.
#
#   deploy/bench/run.sh            # N=20000 messages of SIZE=4096 bytes
#   N=5000 SIZE=4096 deploy/bench/run.sh
#   PREFETCH=1024 deploy/bench/run.sh   # the platform's prefetch (default 256)
#   (honours CARGO_TARGET_DIR; GW=path/to/ozg-gateway uses that binary and skips the build)
#
# In a vhost of its own (created through the management API, deleted at the end):
#   (a) the shovel (dynamic, ack-mode on-confirm, over AMQP/TCP like the gateway) moves N
#       pre-filled persistent messages from one durable queue to another;
#   (b) the gateway (release build, real process, SQLite store in a temp dir) routes N
#       pre-filled submissions from one platform queue to one destination (a `*` rule at
#       Land level, so each resolution walks all ten steps).
# Both sources are filled by `ozg-gateway submit` (persistent, publisher confirms), so both
# runs move the same bytes. Timing: (a) from the shovel's PUT, (b) from the gateway's start
# (connect, store, directory included) until the destination queue holds N. The count is
# read inside the broker (`rabbitmqctl eval`, every 5 ms): the management API's queue
# figures lag by up to collect_statistics_interval (5 s), longer than a whole run.
#
# Prints submit_msgs_per_s=…, shovel_msgs_per_s=…, gateway_msgs_per_s=…,
# gateway_cpu_us_per_msg=… (user + system CPU of the gateway process over the run, start-up
# included, divided by N), gateway_peak_rss_mib=… (VmHWM), and last
# ratio_vs_shovel=X.XX (gateway / shovel).
#
# TODO (issue 7, not yet here):
#   - 1 KiB and 256 KiB variants; PostgreSQL store variant (deploy/local/postgres.sh);
#   - the example configuration's shape: 16 platforms × ~400 destinations, regions drawn
#     from the directory weighted by population;
#   - end-to-end latency p50/p99/p99.9 at half the maximum rate (needs a paced publisher);
set -euo pipefail

N=${N:-20000}
SIZE=${SIZE:-4096}
PREFETCH=${PREFETCH:-256}   # the platform's prefetch (the gateway's default)
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
export PATH="$PATH:/usr/sbin"
sudo_cmd=""
if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi

"$root/deploy/local/broker.sh" >&2

cd "$root"
# GW=path/to/ozg-gateway skips the build (e.g. while another cargo holds the target dir).
if [ -z "${GW:-}" ]; then
  cargo build --release --quiet --bin ozg-gateway
fi
gw=${GW:-"${CARGO_TARGET_DIR:-$root/target}/release/ozg-gateway"}

api=http://127.0.0.1:15672/api
vhost="ozg-bench-$$"
amqp="amqp://guest:guest@127.0.0.1:5672/$vhost"
tmp=$(mktemp -d)
gw_pid=""

http() { # METHOD PATH [JSON]
  curl -sS -f -u guest:guest -X "$1" -H 'content-type: application/json' \
    ${3:+-d "$3"} "$api$2" >/dev/null
}
cleanup() {
  if [ -n "$gw_pid" ] && kill -0 "$gw_pid" 2>/dev/null; then
    kill -TERM "$gw_pid" 2>/dev/null || true
    wait "$gw_pid" 2>/dev/null || true
  fi
  curl -sS -u guest:guest -X DELETE "$api/parameters/shovel/$vhost/bench" >/dev/null 2>&1 || true
  curl -sS -u guest:guest -X DELETE "$api/vhosts/$vhost" >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT

now_ms() { date +%s%3N; }

# Starts, in the background, a wait inside the broker until QUEUE holds N messages; writes
# "ready_ms done_ms" (broker wall clock, same host) to FILE. Returns once it is polling.
start_waiter() { # QUEUE FILE
  local queue=$1 file=$2
  $sudo_cmd rabbitmqctl eval -t 900 "
    QN = rabbit_misc:r(<<\"$vhost\">>, queue, <<\"$queue\">>),
    Now = fun() -> erlang:system_time(millisecond) end,
    Count = fun() -> {ok, Q} = rabbit_amqqueue:lookup(QN),
                     [{messages, M}] = rabbit_amqqueue:info(Q, [messages]), M end,
    Ready = Now(),
    Wait = fun W(Deadline) ->
             case Count() >= $N of
               true -> Now();
               false -> case Now() > Deadline of
                          true -> 0;
                          false -> timer:sleep(5), W(Deadline)
                        end
             end
           end,
    {Ready, Wait(Ready + 600000)}." | tr -d '{} ' | tr ',' ' ' >"$file" &
  waiter_pid=$!
  sleep 3 # the CLI takes ~0.7 s to boot; checked afterwards against the start time
}

# rate NAME START_MS WAITER_FILE: prints NAME=msgs/s, fails when the wait was not valid
rate() {
  local name=$1 start=$2 ready finish
  read -r ready finish <"$3" || true
  if [ -z "${finish:-}" ] || [ "$finish" = 0 ]; then
    echo "run.sh: $name: the destination did not reach $N messages" >&2; return 1
  fi
  if [ "$ready" -gt "$start" ]; then
    echo "run.sh: $name: the waiter started after the clock ($ready > $start)" >&2; return 1
  fi
  awk -v n="$N" -v ms="$((finish - start))" -v name="$name" \
    'BEGIN { printf "%s=%.0f\n", name, n * 1000 / ms }'
}

# ---------------------------------------------------------------- set-up
http PUT "/vhosts/$vhost"
http PUT "/permissions/$vhost/guest" '{"configure":".*","write":".*","read":".*"}'

config() { # PLATFORM_ID QUEUE
  cat <<TOML
[gateway]
dead_letter_broker = "bench"
data_dir = "$tmp/data-$1"

[brokers.bench]
url = "$amqp"

[[platforms]]
id = "$1"
land = "06"
broker = "bench"
ingress_queue = "$2"
status_exchange = "ozg.status"
prefetch = $PREFETCH

[[destinations]]
id = "bench-dest"
name = "Benchmark destination"
kind = "land-office"
land = "06"
broker = "bench"
exchange = "ozg.backoffice"
routing_key = "bench-dest"

[[routes]]
service = "*"
region = "06"
destination = "bench-dest"
TOML
}
config bench-shovel bench.shovel.src >"$tmp/shovel.toml"
config bench-gw ozg.submissions >"$tmp/gateway.toml"
"$gw" declare-topology --config "$tmp/shovel.toml" >/dev/null
"$gw" declare-topology --config "$tmp/gateway.toml" >/dev/null
http PUT "/queues/$vhost/bench.shovel.dst" '{"durable":true}'

# ---------------------------------------------------------------- (a) shovel
echo "run.sh: filling the shovel's source queue with $N messages of $SIZE bytes" >&2
t0=$(now_ms)
"$gw" submit --config "$tmp/shovel.toml" --platform bench-shovel --count "$N" --size "$SIZE" >/dev/null
t1=$(now_ms)
awk -v n="$N" -v ms="$((t1 - t0))" 'BEGIN { printf "submit_msgs_per_s=%.0f\n", n * 1000 / ms }'

start_waiter bench.shovel.dst "$tmp/shovel.wait"
start=$(now_ms)
http PUT "/parameters/shovel/$vhost/bench" "{\"value\":{
  \"src-protocol\":\"amqp091\",\"src-uri\":\"$amqp\",\"src-queue\":\"bench.shovel.src\",
  \"dest-protocol\":\"amqp091\",\"dest-uri\":\"$amqp\",\"dest-queue\":\"bench.shovel.dst\",
  \"ack-mode\":\"on-confirm\",\"src-delete-after\":\"never\"}}"
wait "$waiter_pid"
shovel=$(rate shovel_msgs_per_s "$start" "$tmp/shovel.wait")
echo "$shovel"
http DELETE "/parameters/shovel/$vhost/bench"

# ---------------------------------------------------------------- (b) gateway
echo "run.sh: filling the platform queue with $N submissions of $SIZE bytes" >&2
"$gw" submit --config "$tmp/gateway.toml" --platform bench-gw --count "$N" --size "$SIZE" >/dev/null

start_waiter backoffice.bench-dest "$tmp/gateway.wait"
start=$(now_ms)
"$gw" run --config "$tmp/gateway.toml" >"$tmp/gateway.log" 2>&1 &
gw_pid=$!
while kill -0 "$waiter_pid" 2>/dev/null; do
  if ! kill -0 "$gw_pid" 2>/dev/null; then
    echo "run.sh: the gateway exited early; its log:" >&2
    tail -n 20 "$tmp/gateway.log" >&2
    exit 1
  fi
  sleep 0.2
done
wait "$waiter_pid"
gateway=$(rate gateway_msgs_per_s "$start" "$tmp/gateway.wait") || { tail -n 20 "$tmp/gateway.log" >&2; exit 1; }
echo "$gateway"
# CPU time (user + system, in clock ticks: fields 14 and 15 of /proc/PID/stat) and peak RSS
# of the gateway process over the whole run, start-up included.
ticks=$(getconf CLK_TCK)
read -r cpu_ticks < <(awk '{ print $14 + $15 }' "/proc/$gw_pid/stat")
peak_kib=$(awk '/^VmHWM:/ { print $2 }' "/proc/$gw_pid/status")
awk -v t="$cpu_ticks" -v hz="$ticks" -v n="$N" \
  'BEGIN { printf "gateway_cpu_us_per_msg=%.1f\n", t * 1000000 / hz / n }'
echo "gateway_peak_rss_mib=$((peak_kib / 1024))"
kill -TERM "$gw_pid"
wait "$gw_pid" || true
gw_pid=""

awk -v g="${gateway#*=}" -v s="${shovel#*=}" 'BEGIN { printf "ratio_vs_shovel=%.2f\n", g / s }'

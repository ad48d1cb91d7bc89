#!/usr/bin/env bash
# The throughput benchmark: RabbitMQ's shovel, a bare lapin forwarder and the gateway
# moving the same messages on the same (local) broker, in one run.
#
#   deploy/bench/run.sh                       # everything, about 4-5 minutes once built
#   QUICK=1 deploy/bench/run.sh               # 4 KiB and SQLite only, for development
#   N=20000 SIZES="1024 4096 262144" STORES="sqlite postgres" INSTANCES="1 2 3" deploy/bench/run.sh
#
# Environment (defaults in brackets; QUICK=1 changes the defaults marked *):
#   N [20000, *10000]       messages per run; per size capped so that N x SIZE <= MAX_MIB
#   MAX_MIB [512]           so 256 KiB runs move 2,048 messages
#   SIZES ["1024 4096 262144", *4096]    body sizes in bytes
#   STORES ["sqlite postgres", *sqlite]  the gateway's store (PostgreSQL: a fresh schema per run)
#   INSTANCES ["1 2 3", *""]             gateway processes sharing a PostgreSQL store and the
#                           queues (competing consumers), at INSTANCE_SIZE [4096] bytes
#   BARE [1, *0]            also the floor: examples/bare_forwarder.rs (lapin, no routing):
#                           plain, with a status message per message, and with status
#                           messages over as many queues as there are destinations
#   LAT_SECONDS [10, *5]    the latency run per size and store (0: none)
#   LAT_RATE [half the rate just measured]  the latency run's publishing rate, msg/s
#   P99_RATE [2000]         a second latency run at this fixed rate (0: none), for p99_ms_at_<rate>
#   PREFETCH [256]          every platform's prefetch (and the bare forwarder's)
#   IN_FLIGHT_BYTES [the gateway's default]  the gateway's gateway.in_flight_bytes
#   FRAME_MAX [the gateway's default]        ?frame_max= on every broker URL of the gateway
#   WAIT_S [300]            give up on a run after this long
#   GW=path                 use this ozg-gateway binary, skip its build
#   EXAMPLES=dir            use bench_load and bare_forwarder from dir, skip their build
#   GW_WRAP="valgrind …"    run each gateway under another program (CPU is that process's)
#   PG_URL [postgres://ozg:ozg@127.0.0.1:5432/ozg_test]
#   (honours CARGO_TARGET_DIR)
#
# Set-up, in vhosts of the run's own (ozg-bench-<pid>-<broker>, created and deleted here):
# the configuration is deploy/config/example.toml (16 Länder, each platform on its own vhost,
# the gateway's own vhost) with one destination per Kreis and kreisfreie Stadt of the
# directory (401) and a `*` route each, beside the example's own destinations and routes
# (made by `bench_load config`); `ozg-gateway declare-topology` declares it.
#
# For each size:
#   shovel: `bench_load fill` puts N submissions into a plain durable queue (persistent,
#     publisher confirms, 1,000 unconfirmed at most); a dynamic shovel (amqp091 over TCP,
#     ack-mode on-confirm, src-prefetch-count 1000) moves them to another queue;
#   then for each store, the gateway (release build, a real process): `bench_load fill`
#     spreads N submissions over the 16 platforms (regions drawn from the directory's
#     Gemeinden weighted by population, services from those the configuration names, every
#     platform equally likely, so most cross Länder); one gateway routes them; then
#     `bench_load paced` publishes at half the rate just measured for LAT_SECONDS while
#     consuming all back offices, for the end-to-end latency;
#   bare:   the bare forwarder moves the shovel's messages on to another queue (prefetch
#     PREFETCH), then again with a status message each, then again with status messages
#     and spread over as many queues as there are destinations (the floor).
# Before each measured run: `sync`, and a wait until the broker is idle.
# Then for each count in INSTANCES: that many gateways on a fresh PostgreSQL schema.
#
# Timing (deploy/bench/drained.sh): inside the broker (`rabbitmqctl eval`, every 5 ms; the management API's figures lag
# by up to 5 s), on the source queues: from the moment every consumer is subscribed (all 16
# platform queues x instances; the shovel's and the forwarder's one) until the sources hold
# nothing, ready or unacked (everything confirmed by the destination and acked). Messages
# taken before that moment (start-up) are not counted: msgs_per_s = those left / time.
# CPU (user + system, /proc/PID/stat, sampled every 10 ms) over the same window, divided by
# the same count. After each run the destinations are counted (bench_load verify / count):
# every back office must hold exactly what the fill routed there, no dead letters, nothing
# left; otherwise the run fails (a lost message makes a run invalid, not fast).
#
# Output: `key=value` lines on stdout (progress on stderr):
#   n_<size>                          messages per run at that size
#   shovel_<size>_msgs_per_s, shovel_<size>_broker_cpu_us_per_msg (the broker's CPU, shovel
#     included, per message moved; every run has its …_broker_cpu_us_per_msg)
#   bare_<size>_msgs_per_s, bare_<size>_cpu_us_per_msg
#   bare_status_<size>_…: the same for the bare forwarder publishing a 300-byte persistent
#     status message per message once its confirm is in, and acking after that one's confirm
#   bare_routed_<size>_…: the same, spreading the messages in turn over as many queues as
#     the configuration has destinations: the protocol work the gateway must do per
#     submission, nothing else
#   gateway_<size>_<store>_msgs_per_s, …_ratio_vs_shovel, …_cpu_us_per_msg,
#     …_startup_ms (process start until all platform consumers are up), …_peak_rss_mib (VmHWM),
#     …_fill_msgs_per_s (bench_load fill's publishing rate into the platform queues)
#   gateway_<size>_<store>_latency_{rate_target,rate_achieved,published,arrived,missing,
#     duplicated,misrouted,unexpected,p50_ms,p99_ms,p999_ms,max_ms}
#   instances_<k>_msgs_per_s, instances_<k>_cpu_us_per_msg (all instances together),
#     instances_<k>_startup_ms, instances_<k>_peak_rss_mib (the largest), instances_<k>_fill_msgs_per_s
#   gateway_<size>_<store>_at_<P99_RATE>_{…the latency keys…}: the run at the fixed rate,
#     with …_cpu_us_per_msg and …_broker_cpu_us_per_msg over it (paced: small batches)
#   then the headline figures, each when its runs were made (4 KiB, SQLite):
#     cpu_vs_bare        gateway CPU per submission / bare forwarder CPU per message
#     broker_vs_shovel   broker CPU per gateway submission / per shovel message
#     floor_cpu_vs_bare, floor_broker_vs_shovel, floor_ratio_vs_shovel (BARE=1): the same
#                        for the bare forwarder's routed run: the floor under the
#                        gateway's cpu_vs_bare, broker_vs_shovel and ratio_vs_shovel
#     peak_rss_mib_4096, peak_rss_mib_262144   the gateway's peak RSS (SQLite) at those sizes
#     p99_ms_at_<P99_RATE>  end-to-end p99 of the fixed-rate latency run
#   and last, exactly: ratio_vs_shovel=X.XX (4 KiB, SQLite; else the first size and store run)
set -euo pipefail

if [ "${QUICK:-0}" = 1 ]; then
  : "${N:=10000}" "${SIZES:=4096}" "${STORES:=sqlite}" "${INSTANCES=}" "${BARE:=0}" "${LAT_SECONDS:=5}"
fi
N=${N:-20000}
MAX_MIB=${MAX_MIB:-512}
SIZES=${SIZES:-"1024 4096 262144"}
STORES=${STORES:-"sqlite postgres"}
INSTANCES=${INSTANCES-"1 2 3"}
INSTANCE_SIZE=${INSTANCE_SIZE:-4096}
BARE=${BARE:-1}
LAT_SECONDS=${LAT_SECONDS:-10}
P99_RATE=${P99_RATE:-2000}
PREFETCH=${PREFETCH:-256}
WAIT_S=${WAIT_S:-300}
PG_URL=${PG_URL:-postgres://ozg:ozg@127.0.0.1:5432/ozg_test}

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
export PATH="$PATH:/usr/sbin"
sudo_cmd=""
if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi
say() { echo "run.sh [${SECONDS}s]: $*" >&2; }
die() { say "FAILED: $*"; exit 1; }

for store in $STORES; do
  case $store in sqlite | postgres) ;; *) die "STORES: unknown store $store (sqlite, postgres)" ;; esac
done
need_pg=0
case " $STORES " in *" postgres "*) need_pg=1 ;; esac
if [ -n "${INSTANCES// /}" ]; then need_pg=1; fi
for tool in curl rabbitmqctl awk; do
  command -v "$tool" >/dev/null || die "$tool is missing"
done
if [ "$need_pg" = 1 ]; then command -v psql >/dev/null || die "psql is missing (PostgreSQL runs need it)"; fi

"$root/deploy/local/broker.sh" >&2
if [ "$need_pg" = 1 ]; then "$root/deploy/local/postgres.sh" >&2; fi

cd "$root"
target=${CARGO_TARGET_DIR:-$root/target}
if [ -z "${GW:-}" ]; then
  say "building the gateway (release)"
  cargo build --release --quiet --bin ozg-gateway
fi
gw=${GW:-"$target/release/ozg-gateway"}
if [ -z "${EXAMPLES:-}" ]; then
  say "building bench_load and bare_forwarder (release)"
  cargo build --release --quiet --example bench_load --example bare_forwarder
fi
examples=${EXAMPLES:-"$target/release/examples"}
load="$examples/bench_load"
bare="$examples/bare_forwarder"
for bin in "$gw" "$load" "$bare"; do [ -x "$bin" ] || die "$bin is not an executable"; done

api=http://127.0.0.1:15672/api
prefix="ozg-bench-$$"
gwvhost="$prefix-gateway"
tmp=$(mktemp -d /tmp/ozg-bench.XXXXXX)
mkfifo "$tmp/tick" # nobody writes to it: reading it with a timeout sleeps without a fork
# drained.sh's broker-side poller (user rabbitmq) says here when it is ready.
ready_dir=$(mktemp -d /tmp/ozg-bench-ready.XXXXXX)
chmod 0777 "$ready_dir"
hz=$(getconf CLK_TCK)
# The broker's own CPU per message tells where the limit is when both share two cores.
broker_pid=$($sudo_cmd rabbitmqctl eval 'os:getpid().' | tr -dc 0-9)
[ -n "$broker_pid" ] || die "cannot tell the broker's process id (rabbitmqctl eval)"
bg_pids=()      # every process started in the background, ended in cleanup
schemas=()      # PostgreSQL schemas created
vhosts=()

http() { # METHOD PATH [JSON]
  curl -sS -f -u guest:guest -X "$1" -H 'content-type: application/json' \
    ${3:+-d "$3"} "$api$2" >/dev/null
}
psql_do() { PGOPTIONS="-c client_min_messages=warning" psql "$PG_URL" -qX -v ON_ERROR_STOP=1 -c "$1" >/dev/null; }

cleanup() {
  local rc=$? p i
  set +e
  trap - INT TERM
  for p in "${bg_pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${bg_pids[@]}"; do
    for i in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null
    wait "$p" 2>/dev/null
  done
  bg_pids=()
  http DELETE "/parameters/shovel/$gwvhost/bench" 2>/dev/null
  # Deleting the vhosts also ends any waiter still polling inside the broker.
  for v in "${vhosts[@]}"; do http DELETE "/vhosts/$v" 2>/dev/null; done
  for s in "${schemas[@]}"; do psql_do "drop schema if exists $s cascade"; done
  rm -rf "$tmp" "$ready_dir"
  if [ "$rc" -ne 0 ]; then say "exit status $rc; everything the run created is removed"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Vhosts and schemas of earlier runs that were killed before they could clean up (their
# process is gone): only the benchmark's own names.
for v in $(curl -sS -f -u guest:guest "$api/vhosts?columns=name" | grep -o '"name":"ozg-bench-[0-9]*-[^"]*"' | cut -d'"' -f4); do
  pid=${v#ozg-bench-}; pid=${pid%%-*}
  if ! kill -0 "$pid" 2>/dev/null; then say "removing $v, left by run $pid"; http DELETE "/vhosts/$v" || true; fi
done
if [ "$need_pg" = 1 ]; then
  for s in $(psql "$PG_URL" -qXtAc "select nspname from pg_namespace where nspname like 'ozg\_bench\_%'"); do
    pid=${s#ozg_bench_}; pid=${pid%%_*}
    if ! kill -0 "$pid" 2>/dev/null; then say "dropping schema $s, left by run $pid"; psql_do "drop schema $s cascade" || true; fi
  done
fi

# reap PID…: waits for background processes and forgets them, so that cleanup never signals
# a process id that the system may have handed to someone else since. Returns the last
# one's exit status.
reap() {
  local p q rc=0 keep
  for p in "$@"; do
    wait "$p" 2>/dev/null && rc=0 || rc=$?
    keep=()
    for q in "${bg_pids[@]}"; do [ "$q" = "$p" ] || keep+=("$q"); done
    bg_pids=("${keep[@]}")
  done
  return "$rc"
}

now_ms() { echo $((${EPOCHREALTIME/./} / 1000)); }

# mkconfig FILE DATA_DIR [STORE_URL]: the benchmark configuration; prints its vhosts.
mkconfig() {
  "$load" config --example "$root/deploy/config/example.toml" --vhost-prefix "$prefix" \
    --data-dir "$2" --prefetch "$PREFETCH" ${3:+--store "$3"} --out "$1" 2>/dev/null
}

# new_store KIND NAME: sets store_url for a fresh store ("" = SQLite in the data dir). Not
# to be called in a subshell: it records the schemas that cleanup drops.
new_store() {
  store_url=""
  if [ "$1" = postgres ]; then
    local schema="ozg_bench_$$_$2" sep='?'
    psql_do "create schema $schema"
    schemas+=("$schema")
    case $PG_URL in *\?*) sep='&' ;; esac
    store_url="$PG_URL${sep}options=-csearch_path%3D$schema"
  fi
}

# start_waiter OUT CONSUMERS VHOST:QUEUE…: deploy/bench/drained.sh in the background, its
# line "ready_ms up_ms left_at_up done_ms" into OUT.
# Returns once the poller runs inside the broker.
start_waiter() {
  local out=$1 ready i
  shift
  ready="$ready_dir/$(basename "$out").ready"
  rm -f "$ready"
  DRAINED_READY=$ready "$here/drained.sh" "$WAIT_S" "$@" >"$out" &
  waiter_pid=$!
  bg_pids+=("$waiter_pid")
  for i in $(seq 1 600); do
    [ -e "$ready" ] && return 0
    kill -0 "$waiter_pid" 2>/dev/null || break
    sleep 0.1
  done
  die "deploy/bench/drained.sh did not start polling inside the broker within 60 s"
}

# start_sampler OUT PID…: every 10 ms "epoch_us cpu_ticks" (user + system of the PIDs
# together) until they have all exited or the sampler is killed. No forks in the loop.
start_sampler() {
  local out=$1
  shift
  (
    exec {tick}<>"$tmp/tick"
    set -f
    while :; do
      sum=0 alive=0
      for p in "$@"; do
        if read -r line 2>/dev/null <"/proc/$p/stat"; then
          f=(${line##*) })
          sum=$((sum + f[11] + f[12])) alive=1
        fi
      done
      [ "$alive" = 1 ] || break
      echo "${EPOCHREALTIME/./} $sum"
      read -r -t 0.01 -u "$tick" _ || true
    done >>"$out"
  ) &
  sampler_pid=$!
  bg_pids+=("$sampler_pid")
}

# cpu_between FILE FROM_MS TO_MS: CPU ticks between the last sample at or before FROM and the
# first at or after TO (the last one if the process ended first).
cpu_between() {
  awk -v from="$2" -v to="$3" '
    { t = $1 / 1000 }
    t <= from { a = $2 }
    t >= to && b == "" { b = $2 }
    { last = $2 }
    END { if (b == "") b = last; if (a == "") a = 0; print b - a }' "$1"
}

# measured NAME WAITER_FILE N: checks the waiter's result (fails unless it saw the consumers
# come up and the sources drain, with at least half of the N messages left when they came
# up), sets up_ms, left, done_ms and rate (msg/s).
measured() {
  local name=$1 ready=""
  up_ms="" left="" done_ms=""
  read -r ready up_ms left done_ms <"$2" || true
  if [ -z "$done_ms" ] || [ "$up_ms" = 0 ] || [ "$done_ms" = 0 ]; then
    die "$name: not done within WAIT_S=$WAIT_S s (waiter: $(cat "$2"))"
  fi
  if [ "$left" -lt $(($3 / 2)) ]; then
    die "$name: only $left of $3 messages left once the consumers were up (start-up too slow, or the waiter too late: started $ready, up $up_ms); use a larger N"
  fi
  rate=$(awk -v n="$left" -v ms="$((done_ms - up_ms))" 'BEGIN { printf "%.0f", n * 1000 / (ms > 0 ? ms : 1) }')
}

cpu_per_msg() { # NAME SAMPLES: prints NAME_cpu_us_per_msg, keeps it in cpu[NAME]
  cpu[$1]=$(awk -v t="$(cpu_between "$2" "$up_ms" "$done_ms")" -v hz="$hz" -v n="$left" \
    'BEGIN { printf "%.1f", t * 1000000 / hz / n }')
  echo "$1_cpu_us_per_msg=${cpu[$1]}"
}

# ticks PID…: CPU ticks (user + system) the processes have used so far, together.
ticks() {
  local sum=0 p line f
  for p in "$@"; do
    if read -r line 2>/dev/null <"/proc/$p/stat"; then
      f=(${line##*) })
      sum=$((sum + f[11] + f[12]))
    fi
  done
  echo "$sum"
}

# broker_quiet: before each run, writes out what earlier runs left in the page cache and
# waits (up to 30 s) until the broker uses less than a tenth of a core over half a second:
# what the kernel and the broker still do for a run before (writing back its messages,
# deleting its queues, collecting its message store) is not to be counted against the next.
broker_quiet() {
  local i before
  sync
  for ((i = 0; i < 60; i++)); do
    before=$(ticks "$broker_pid")
    sleep 0.5
    if (($(ticks "$broker_pid") - before <= hz / 20)); then return 0; fi
  done
  say "the broker is still busy after 30 s; measuring anyway"
}

per_msg() { awk -v t="$1" -v hz="$hz" -v n="$2" 'BEGIN { if (n > 0) printf "%.1f", t * 1000000 / hz / n; else print "nan" }'; } # TICKS N

quotient() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "nan" }'; }

value() { sed -n "s/^$1=//p"; } # KEY < key=value lines

# ---------------------------------------------------------------- set-up
mkconfig "$tmp/base.toml" "$tmp/data-base" >"$tmp/vhosts" || die "bench_load config failed"
while read -r v; do
  vhosts+=("$v")
  http PUT "/vhosts/$v"
  http PUT "/permissions/$v/guest" '{"configure":".*","write":".*","read":".*"}'
done <"$tmp/vhosts"
say "declaring the topology on ${#vhosts[@]} vhosts ($prefix-*)"
"$gw" declare-topology --config "$tmp/base.toml" >/dev/null
mapfile -t ingress < <("$load" ingress --config "$tmp/base.toml")
amqp_gw="amqp://guest:guest@127.0.0.1:5672/$gwvhost"

declare -A shovel_rate gateway_rate bare_rate cpu rss_mib p99_at
bare_queues=()
# The bare forwarder's routed run spreads over as many queues as there are back offices.
fanout=$(grep -c '^\[\[destinations\]\]' "$tmp/base.toml")

n_for() { # SIZE
  local cap=$((MAX_MIB * 1048576 / $1))
  echo $((N < cap ? N : cap))
}

# ---------------------------------------------------------------- shovel and bare forwarder
shovel_run() { # SIZE N
  local size=$1 n=$2
  http PUT "/queues/$gwvhost/bench.shovel.dst" '{"durable":true}'
  say "shovel, $size bytes: filling a queue with $n"
  "$load" fill --config "$tmp/base.toml" --queue bench.shovel.src --count "$n" --size "$size" >/dev/null
  broker_quiet
  start_waiter "$tmp/shovel.wait" 1 "$gwvhost:bench.shovel.src"
  start_sampler "$tmp/shovel.broker.cpu" "$broker_pid"
  local broker_sampler=$sampler_pid
  http PUT "/parameters/shovel/$gwvhost/bench" "{\"value\":{
    \"src-protocol\":\"amqp091\",\"src-uri\":\"$amqp_gw\",\"src-queue\":\"bench.shovel.src\",
    \"dest-protocol\":\"amqp091\",\"dest-uri\":\"$amqp_gw\",\"dest-queue\":\"bench.shovel.dst\",
    \"ack-mode\":\"on-confirm\",\"src-prefetch-count\":1000,\"src-delete-after\":\"never\"}}"
  reap "$waiter_pid" || true
  measured "shovel_$size" "$tmp/shovel.wait" "$n"
  sleep 0.05
  kill "$broker_sampler" 2>/dev/null || true
  reap "$broker_sampler" || true
  http DELETE "/parameters/shovel/$gwvhost/bench"
  "$load" count --config "$tmp/base.toml" --broker gateway --queue bench.shovel.dst --expect "$n" >/dev/null ||
    die "shovel, $size bytes: the destination queue does not hold $n"
  echo "shovel_${size}_msgs_per_s=$rate"
  cpu_per_msg "shovel_${size}_broker" "$tmp/shovel.broker.cpu"
  shovel_rate[$size]=$rate
}

# bare_run SIZE N [MODE]: the bare forwarder moves the N messages the previous run left in
# SRC. MODE "status" (run bare_status) also publishes a status message per message;
# "routed" (run bare_routed) besides spreads the messages over as many queues as the
# configuration has destinations: the protocol work of the gateway and nothing else.
bare_run() {
  local size=$1 n=$2 mode=${3:-} pid name=bare src=bench.shovel.dst dst=bench.bare.dst
  local options=() counted=()
  case "$mode" in
    status) name=bare_status src=bench.bare.dst dst=bench.bare_status.dst
      options=(--status bench.bare.status) ;;
    routed) name=bare_routed src=bench.bare_status.dst dst=bench.bare_routed.dst
      options=(--status bench.bare.status --fanout "$fanout") ;;
  esac
  if [ "$mode" = routed ]; then
    local i
    for ((i = 0; i < fanout; i++)); do counted+=("$dst.$i"); done
  else
    http PUT "/queues/$gwvhost/$dst" '{"durable":true}'
    counted=("$dst")
  fi
  if [ -n "$mode" ]; then
    http PUT "/queues/$gwvhost/bench.bare.status" '{"durable":true}'
    http DELETE "/queues/$gwvhost/bench.bare.status/contents"
  fi
  broker_quiet
  say "bare forwarder ($name), $size bytes: moving $n"
  start_waiter "$tmp/$name.wait" 1 "$gwvhost:$src"
  "$bare" "$amqp_gw" "$src" "$dst" "$n" --prefetch "$PREFETCH" "${options[@]}" >"$tmp/$name.log" 2>&1 &
  pid=$!
  bg_pids+=("$pid")
  start_sampler "$tmp/$name.broker.cpu" "$broker_pid"
  local broker_sampler=$sampler_pid
  start_sampler "$tmp/$name.cpu" "$pid"
  reap "$waiter_pid" || true
  reap "$pid" || die "the bare forwarder ($name) failed: $(tail -n 5 "$tmp/$name.log")"
  reap "$sampler_pid" || true
  measured "${name}_$size" "$tmp/$name.wait" "$n"
  kill "$broker_sampler" 2>/dev/null || true
  reap "$broker_sampler" || true
  echo "${name}_${size}_msgs_per_s=$rate"
  if [ "$size" = 4096 ]; then bare_rate[$name]=$rate; fi
  cpu_per_msg "${name}_$size" "$tmp/$name.cpu"
  cpu_per_msg "${name}_${size}_broker" "$tmp/$name.broker.cpu"
  count_is "$n" "${counted[@]}" || die "bare forwarder ($name), $size bytes: $dst does not hold $n"
  if [ -n "$mode" ]; then
    count_is "$n" bench.bare.status || die "bare forwarder ($name), $size bytes: bench.bare.status does not hold $n"
  fi
  bare_queues+=("${counted[@]}")
}

count_is() { # N QUEUE…: whether the queues of the gateway's vhost hold N together
  local n=$1
  shift
  local args=() q
  for q in "$@"; do args+=(--queue "$q"); done
  "$load" count --config "$tmp/base.toml" --broker gateway "${args[@]}" --expect "$n" >/dev/null
}

drop_shovel_queues() {
  local q
  for q in bench.shovel.src bench.shovel.dst bench.bare.status "${bare_queues[@]}"; do
    curl -sS -u guest:guest -X DELETE "$api/queues/$gwvhost/$q" >/dev/null 2>&1 || true
  done
  bare_queues=()
}

# ---------------------------------------------------------------- gateway
# gateway_config SRC DST: the gateway's own copy of a run's configuration, with
# IN_FLIGHT_BYTES and FRAME_MAX applied (the load generator keeps the original).
gateway_config() {
  local edits=()
  if [ -n "${IN_FLIGHT_BYTES:-}" ]; then
    edits+=(-e "s|^in_flight_bytes = .*|in_flight_bytes = $IN_FLIGHT_BYTES|")
  fi
  if [ -n "${FRAME_MAX:-}" ]; then
    edits+=(-e "s|^(url = \"amqps?://[^\"?]*)\"|\1?frame_max=$FRAME_MAX\"|")
  fi
  if [ ${#edits[@]} = 0 ]; then cp "$1" "$2"; else sed -E "${edits[@]}" "$1" >"$2"; fi
}

# gateway_run NAME SIZE N STORE INSTANCES LATENCY: fills, runs INSTANCES gateways on one
# fresh store, measures, verifies; then the latency run at half the measured rate if
# LATENCY=1. Prints NAME_… keys.
gateway_run() {
  local name=$1 size=$2 n=$3 store=$4 k=$5 latency=$6 url i pids=() started rss p
  new_store "$store" "$name"
  url=$store_url
  for i in $(seq 1 "$k"); do
    mkconfig "$tmp/$name-$i.toml" "$tmp/data-$name-$i" "$url" >/dev/null || die "bench_load config failed"
  done
  "$load" purge --config "$tmp/$name-1.toml" >/dev/null
  say "$name: filling the 16 platform queues with $n submissions of $size bytes"
  "$load" fill --config "$tmp/$name-1.toml" --count "$n" --size "$size" \
    --expected "$tmp/$name.expected" >"$tmp/$name.fill" || die "$name: fill failed"
  echo "${name}_fill_msgs_per_s=$(value msgs_per_s <"$tmp/$name.fill")"
  broker_quiet
  start_waiter "$tmp/$name.wait" $((${#ingress[@]} * k)) "${ingress[@]}"
  started=$(now_ms)
  for i in $(seq 1 "$k"); do
    gateway_config "$tmp/$name-$i.toml" "$tmp/$name-$i.gw.toml"
    ${GW_WRAP:-} "$gw" run --config "$tmp/$name-$i.gw.toml" >"$tmp/$name-$i.log" 2>&1 &
    pids+=($!)
    bg_pids+=($!)
  done
  start_sampler "$tmp/$name.broker.cpu" "$broker_pid"
  local broker_sampler=$sampler_pid
  start_sampler "$tmp/$name.cpu" "${pids[@]}"
  while kill -0 "$waiter_pid" 2>/dev/null; do
    for i in "${!pids[@]}"; do
      if ! kill -0 "${pids[$i]}" 2>/dev/null; then
        tail -n 20 "$tmp/$name-$((i + 1)).log" >&2
        die "$name: gateway $((i + 1)) exited early (its log above)"
      fi
    done
    sleep 0.1
  done
  reap "$waiter_pid" || true
  measured "$name" "$tmp/$name.wait" "$n"
  sleep 0.05 # one more CPU sample after done
  kill "$sampler_pid" "$broker_sampler" 2>/dev/null || true
  reap "$sampler_pid" "$broker_sampler" || true
  rss=0
  for p in "${pids[@]}"; do
    i=$(awk '/^VmHWM:/ { print $2 }' "/proc/$p/status")
    if [ "$i" -gt "$rss" ]; then rss=$i; fi
  done
  "$load" verify --config "$tmp/$name-1.toml" --expected "$tmp/$name.expected" >/dev/null ||
    die "$name: the back offices did not receive exactly what was sent (above)"
  echo "${name}_msgs_per_s=$rate"
  cpu_per_msg "$name" "$tmp/$name.cpu"
  cpu_per_msg "${name}_broker" "$tmp/$name.broker.cpu"
  echo "${name}_startup_ms=$((up_ms - started))"
  echo "${name}_peak_rss_mib=$((rss / 1024))"
  gateway_rate[$name]=$rate
  rss_mib[$name]=$((rss / 1024))
  if [ "$latency" = 1 ] && [ "$LAT_SECONDS" != 0 ]; then
    local lat_rate=${LAT_RATE:-$((rate / 2))}
    say "$name: latency at $lat_rate msg/s for $LAT_SECONDS s"
    # Bounded, so that a stalled run fails with its figures instead of hanging the benchmark.
    timeout "$((LAT_SECONDS + WAIT_S))" \
      "$load" paced --config "$tmp/$name-1.toml" --rate "$lat_rate" --seconds "$LAT_SECONDS" \
      --size "$size" >"$tmp/$name.latency" || {
      sed "s/^/${name}_/" "$tmp/$name.latency"
      die "$name: the latency run failed: lost, duplicated or misrouted submissions, or no end within $((LAT_SECONDS + WAIT_S)) s"
    }
    sed "s/^/${name}_/" "$tmp/$name.latency"
  fi
  if [ "$latency" = 1 ] && [ "$P99_RATE" != 0 ] && [ "$LAT_SECONDS" != 0 ]; then
    say "$name: latency at $P99_RATE msg/s for $LAT_SECONDS s"
    local gw_before broker_before
    gw_before=$(ticks "${pids[@]}") broker_before=$(ticks "$broker_pid")
    timeout "$((LAT_SECONDS + WAIT_S))" \
      "$load" paced --config "$tmp/$name-1.toml" --rate "$P99_RATE" --seconds "$LAT_SECONDS" \
      --size "$size" >"$tmp/$name.latency-fixed" || {
      sed "s/^/${name}_at_${P99_RATE}_/" "$tmp/$name.latency-fixed"
      die "$name: the latency run at $P99_RATE msg/s failed: lost, duplicated or misrouted submissions, or no end"
    }
    sed "s/^/${name}_at_${P99_RATE}_/" "$tmp/$name.latency-fixed"
    # CPU per submission while paced (batches are small), against the drain's above.
    local published
    published=$(value latency_published <"$tmp/$name.latency-fixed")
    echo "${name}_at_${P99_RATE}_cpu_us_per_msg=$(per_msg $(($(ticks "${pids[@]}") - gw_before)) "$published")"
    echo "${name}_at_${P99_RATE}_broker_cpu_us_per_msg=$(per_msg $(($(ticks "$broker_pid") - broker_before)) "$published")"
    p99_at[$name]=$(value latency_p99_ms <"$tmp/$name.latency-fixed")
  fi
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  reap "${pids[@]}" || true
}

# ---------------------------------------------------------------- the runs
first_ratio=""
for size in $SIZES; do
  n=$(n_for "$size")
  echo "n_$size=$n"
  shovel_run "$size" "$n"
  for store in $STORES; do
    gateway_run "gateway_${size}_$store" "$size" "$n" "$store" 1 1
    ratio=$(awk -v g="${gateway_rate[gateway_${size}_$store]}" -v s="${shovel_rate[$size]}" \
      'BEGIN { printf "%.2f", g / s }')
    echo "gateway_${size}_${store}_ratio_vs_shovel=$ratio"
    if [ -z "$first_ratio" ]; then first_ratio=$ratio; fi
    if [ "$size" = 4096 ] && [ "$store" = sqlite ]; then headline=$ratio; fi
  done
  # The floor after the gateway: what the broker still does for the routed run's 426
  # queues once they are gone would be counted against the gateway's run otherwise.
  if [ "$BARE" = 1 ]; then
    bare_run "$size" "$n"
    bare_run "$size" "$n" status
    bare_run "$size" "$n" routed
  fi
  drop_shovel_queues
  broker_quiet
done
for k in $INSTANCES; do
  gateway_run "instances_$k" "$INSTANCE_SIZE" "$(n_for "$INSTANCE_SIZE")" postgres "$k" 0
done

# The headline figures: 4 KiB with SQLite against the shovel and the bare forwarder of the
# same run; peak RSS at 4 KiB and 256 KiB (SQLite).
h=gateway_4096_sqlite
if [ -n "${cpu[$h]:-}" ] && [ -n "${cpu[bare_4096]:-}" ]; then
  echo "cpu_vs_bare=$(quotient "${cpu[$h]}" "${cpu[bare_4096]}")"
fi
if [ -n "${cpu[${h}_broker]:-}" ] && [ -n "${cpu[shovel_4096_broker]:-}" ]; then
  echo "broker_vs_shovel=$(quotient "${cpu[${h}_broker]}" "${cpu[shovel_4096_broker]}")"
fi
# The same three figures for the bare forwarder's routed run: the floor of the protocol
# work the gateway must do per submission, before any work of its own.
if [ -n "${cpu[bare_routed_4096]:-}" ] && [ -n "${cpu[bare_4096]:-}" ]; then
  echo "floor_cpu_vs_bare=$(quotient "${cpu[bare_routed_4096]}" "${cpu[bare_4096]}")"
  echo "floor_broker_vs_shovel=$(quotient "${cpu[bare_routed_4096_broker]}" "${cpu[shovel_4096_broker]}")"
  echo "floor_ratio_vs_shovel=$(quotient "${bare_rate[bare_routed]}" "${shovel_rate[4096]}")"
fi
for size in 4096 262144; do
  if [ -n "${rss_mib[gateway_${size}_sqlite]:-}" ]; then
    echo "peak_rss_mib_$size=${rss_mib[gateway_${size}_sqlite]}"
  fi
done
if [ -n "${p99_at[$h]:-}" ]; then
  echo "p99_ms_at_$P99_RATE=${p99_at[$h]}"
fi
if [ -n "${headline:-}" ]; then
  echo "ratio_vs_shovel=$headline"
elif [ -n "$first_ratio" ]; then
  say "4096 bytes with SQLite was not run: ratio_vs_shovel is that of the first size and store"
  echo "ratio_vs_shovel=$first_ratio"
fi

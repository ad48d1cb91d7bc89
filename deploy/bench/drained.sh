#!/usr/bin/env bash
# Times, inside the broker, how fast consumers drain queues: deploy/bench/run.sh's clock.
#
#   [DRAINED_READY=FILE] deploy/bench/drained.sh WAIT_S CONSUMERS VHOST:QUEUE…
#
# Polls the queues every 5 ms (`rabbitmqctl eval`, so as root; the management API's figures
# lag by up to 5 s) until they have CONSUMERS consumers together, then until they hold no
# message, ready or unacked. Prints one line "ready_ms up_ms left_at_up done_ms" (broker wall
# clock, milliseconds since the epoch): when it started polling, when the consumers were up,
# how many messages were left then, when nothing was left; 0 for what did not happen within
# WAIT_S seconds, or when a queue (or its vhost) disappeared or its process ended.
#
# The CLI takes a second or more to start: with DRAINED_READY, the broker writes that file
# when it starts polling (so its folder must be writable by the broker's user, rabbitmq);
# start the consumers after it appears, or the clock misses their start.
set -euo pipefail

[ $# -ge 3 ] || { echo "usage: drained.sh WAIT_S CONSUMERS VHOST:QUEUE…" >&2; exit 2; }
wait_s=$1 want=$2
shift 2
export PATH="$PATH:/usr/sbin"
command -v rabbitmqctl >/dev/null || { echo "drained.sh: rabbitmqctl is missing" >&2; exit 1; }
sudo_cmd=""
if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi
list=""
ready_file=${DRAINED_READY:-}
case $ready_file in *'"'* | *\\*) echo "drained.sh: DRAINED_READY must not contain quotes or backslashes" >&2; exit 2 ;; esac
for q in "$@"; do list+="${list:+,}{<<\"${q%%:*}\">>,<<\"${q#*:}\">>}"; done

$sudo_cmd rabbitmqctl eval -t $((wait_s + 60)) "
  Qs = [rabbit_misc:r(V, queue, Name) || {V, Name} <- [$list]],
  Now = fun() -> erlang:system_time(millisecond) end,
  Sum = fun() -> lists:foldl(fun(QN, {M0, C0}) ->
          case rabbit_amqqueue:lookup(QN) of
            {ok, Q} -> [{messages, M}, {consumers, C}] = rabbit_amqqueue:info(Q, [messages, consumers]),
                       {M0 + M, C0 + C};
            _ -> throw(gone)
          end end, {0, 0}, Qs) end,
  Ready = Now(),
  case \"$ready_file\" of \"\" -> ok; F -> ok = file:write_file(F, integer_to_list(Ready)) end,
  Deadline = Ready + ${wait_s}000,
  Up = fun U() -> {M, C} = Sum(), T = Now(),
         if C >= $want -> {T, M}; T > Deadline -> {0, M}; true -> timer:sleep(5), U() end end,
  Done = fun D() -> {M, _} = Sum(), T = Now(),
           if M =:= 0 -> T; T > Deadline -> 0; true -> timer:sleep(5), D() end end,
  try
    {UpAt, Left} = Up(),
    DoneAt = case UpAt of 0 -> 0; _ -> Done() end,
    {Ready, UpAt, Left, DoneAt}
  catch
    throw:gone -> {Ready, 0, 0, 0};
    exit:_ -> {Ready, 0, 0, 0}
  end." | tr -d '{} ' | tr ',' ' '

#!/bin/bash
# The load of one bench case (bench/tasks/case.yml runs it on the machine that sends it):
# CONNECTIONS split over GENERATORS wrk processes, the i-th started i*RAMP/GENERATORS
# seconds after the first, each keeping its connections open (HTTP/1.1 keep-alive) for
# DURATION seconds. GENERATORS=1 and RAMP=0 is the thundering herd: every connection opened
# at once. THINK_MS (default 0) is each connection's pause after an answer (bench.lua: 0.5 to
# 1.5 times it); 0 is wrk's closed loop, the next request as soon as the answer is in. Prints
# each wrk's output; bench.lua ends each with one BENCH_JSON line.
#
#   load.sh GENERATORS RAMP THREADS CONNECTIONS DURATION TIMEOUT URL [COOKIES_FILE [THINK_MS]]
set -euo pipefail
generators=$1 ramp=$2 threads=$3 connections=$4 duration=$5 timeout=$6 url=$7
cookies=${8:-} think=${9:-0}
here=$(dirname "$0")
ulimit -n "$(ulimit -Hn)"  # one file per connection: as many as the machine allows
pids=()
for ((i = 0; i < generators; i++)); do
  share=$(( connections / generators + (i < connections % generators ? 1 : 0) ))
  wrk_threads=$(( share < threads ? share : threads ))
  # Each generator writes its own file, printed in order at the end.
  timeout --kill-after=10 $(( duration + 60 )) \
    wrk --threads "$wrk_threads" --connections "$share" \
    --duration "${duration}s" --timeout "${timeout}s" --script "$here/bench.lua" "$url" \
    -- "$cookies" "$think" "$(( share / wrk_threads ))" > "/tmp/bench-load-$$-$i.out" 2>&1 &
  pids+=("$!")
  if (( i + 1 < generators )) && [ "$ramp" != 0 ]; then
    sleep "$(awk -v r="$ramp" -v g="$generators" 'BEGIN { printf "%.3f", r / g }')"
  fi
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
for ((i = 0; i < generators; i++)); do
  echo "--- generator $i"
  cat "/tmp/bench-load-$$-$i.out"
  rm -f "/tmp/bench-load-$$-$i.out"
done
exit "$status"

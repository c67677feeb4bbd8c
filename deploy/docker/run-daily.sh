#!/bin/sh
# run-daily HH:MM[:SS] COMMAND [ARG...]
#
# Run COMMAND every day at the given time of day (container time zone, UTC unless TZ is set),
# forever: the scheduled-job service of deploy/compose.yaml. A failed run is logged and the loop
# goes on (the next run is the next day); a run that is still going at the next slot delays it.
# RUN_DAILY_MAX_RUNS=N stops after N runs, with the last run's status (used by the tests).
set -u
if [ $# -lt 2 ]; then
  echo "usage: run-daily HH:MM[:SS] COMMAND [ARG...]" >&2
  exit 2
fi
at=$1
shift
if ! date -d "today $at" +%s >/dev/null 2>&1; then
  echo "run-daily: not a time of day: $at" >&2
  exit 2
fi
runs=0
while :; do
  now=$(date +%s)
  next=$(date -d "today $at" +%s)
  [ "$next" -gt "$now" ] || next=$(date -d "tomorrow $at" +%s)
  echo "run-daily: next run $(date -d "@$next" '+%Y-%m-%d %H:%M:%S %Z'): $*" >&2
  sleep $((next - now))
  started=$(date +%s)
  "$@"
  status=$?
  echo "run-daily: run finished with status $status after $(($(date +%s) - started)) s" >&2
  runs=$((runs + 1))
  if [ -n "${RUN_DAILY_MAX_RUNS:-}" ] && [ "$runs" -ge "$RUN_DAILY_MAX_RUNS" ]; then
    exit "$status"
  fi
done

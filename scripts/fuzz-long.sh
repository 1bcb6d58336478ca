#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for a long, bounded time, one after
# another, and prints one result line per target. Works on stable Rust.
#
#   scripts/fuzz-long.sh 8h                 # each target for 8 hours
#   scripts/fuzz-long.sh 5m frame handshake # two targets, 5 minutes each
#
# DURATION is a number with an optional unit: s (default), m, h.
# Findings land in fuzz/artifacts/TARGET/; the corpus grows in fuzz/corpus/TARGET/.
# A log per target goes to target/fuzz-long/TARGET.log (the fuzz crate's own
# target dir is fuzz/target, separate from the workspace's build lock).
set -uo pipefail

usage() { echo "usage: $0 DURATION[s|m|h] [TARGET...]" >&2; exit 2; }
[ $# -ge 1 ] || usage
dur=$1; shift
case "$dur" in
  *h) secs=$(( ${dur%h} * 3600 )) ;;
  *m) secs=$(( ${dur%m} * 60 )) ;;
  *s) secs=${dur%s} ;;
  *[!0-9]*|'') usage ;;
  *) secs=$dur ;;
esac
root=$(cd "$(dirname "$0")/.." && pwd)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(frame discovery handshake object_decode text_merge)
logs="$root/target/fuzz-long"
mkdir -p "$logs"
cd "$root/fuzz"
cargo fuzz build --sanitizer none || { echo "fuzz-long: build failed" >&2; exit 1; }
fail=0
for t in "${targets[@]}"; do
  start=$(date +%s)
  echo "fuzz-long: $t for ${secs}s (log $logs/$t.log)"
  cargo fuzz run --sanitizer none "$t" -- -max_total_time="$secs" >"$logs/$t.log" 2>&1
  rc=$?
  took=$(( $(date +%s) - start ))
  runs=$(grep -o 'Done [0-9]* runs' "$logs/$t.log" | tail -1)
  if [ $rc -eq 0 ]; then
    echo "fuzz-long: $t ok: ${runs:-no summary} in ${took}s"
  else
    echo "fuzz-long: $t FAILED (exit $rc) after ${took}s; see $logs/$t.log and fuzz/artifacts/$t/"
    fail=1
  fi
done
exit $fail

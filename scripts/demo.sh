#!/usr/bin/env bash
# The main job: three repositories on loopback find each other and sync.
#
#   bash scripts/demo.sh
#
# Creates three repositories in a temporary directory: A is forged, B and C join
# it with an invitation (`ivaldi p2p invite` in A, `ivaldi p2p clone TICKET`),
# and B and C pair with each other the same way (`invite` in C, `join` in B):
# nodes exchange nothing with keys they do not trust. All three daemons announce themselves only to
# 127.255.255.255 (IVALDI_DISCOVERY_ADDRS), discover each other, and a seal made
# in C appears in A and B without any manual sync. Everything is stopped and
# removed at the end, also on failure.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
echo "building ivaldi (release)..."
cargo build --quiet --release -p ivaldi-cli --manifest-path "$here/Cargo.toml"
ivaldi="$here/target/release/ivaldi"
work=$(mktemp -d "${TMPDIR:-/tmp}/ivaldi-demo.XXXXXX")
dport=$((20000 + RANDOM % 20000))
export IVALDI_DISCOVERY_ADDRS="127.255.255.255:$dport"
export IVALDI_AUTHOR="Demo <demo@example.org>"

cleanup() {
  for r in A B C; do
    if [ -f "$work/$r/.ivaldi/p2p/daemon.pid" ]; then
      pid=$(cat "$work/$r/.ivaldi/p2p/daemon.pid" 2>/dev/null || true)
      "$ivaldi" -C "$work/$r" p2p stop >/dev/null 2>&1 || true
      [ -n "${pid:-}" ] && kill -9 "$pid" 2>/dev/null || true
    fi
  done
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }
configure() {
  "$ivaldi" -C "$1" p2p config --bind-addr 127.0.0.1 --port 0 --discovery-port "$dport" \
    --discovery-interval 1s --sync-interval 5s >/dev/null 2>&1
}

cd "$work"
step "$ivaldi" forge A
echo "# Demo" > A/README.md && mkdir -p A/src && printf 'fn main() {}\n' > A/src/main.rs
step "$ivaldi" -C A seal -m "First seal in A"
configure A
step "$ivaldi" -C A p2p start
printf '\n\033[1m$ %s\033[0m\n' "$ivaldi -C A p2p invite --uses 2"
out=$("$ivaldi" -C A p2p invite --uses 2)
ticket=${out%%$'\n'*}   # the ticket is the first line
echo "$ticket"
step "$ivaldi" p2p clone "$ticket" B
step "$ivaldi" p2p clone "$ticket" C
configure B && configure C
step "$ivaldi" -C B p2p start
step "$ivaldi" -C C p2p start
printf '\n\033[1m$ %s\033[0m\n' "$ivaldi -C C p2p invite"
out=$("$ivaldi" -C C p2p invite)
ticket=${out%%$'\n'*}
echo "$ticket"
step "$ivaldi" -C B p2p join "$ticket"

printf '\nwaiting for the three daemons to discover each other...\n'
for _ in $(seq 1 50); do
  n=$("$ivaldi" -C C p2p peers --json | grep -c '"peer": "' || true)
  [ "$n" -ge 2 ] && break
  sleep 0.2
done
step "$ivaldi" -C C p2p discovered
step "$ivaldi" -C C p2p peers

echo "written in C" > C/from-c.txt
step "$ivaldi" -C C seal -m "A seal made in C"
want=$("$ivaldi" -C C log --json -n 1 | sed -n 's/.*"id": "\([0-9a-f]*\)".*/\1/p' | head -1)
printf '\nwaiting for the seal to reach A and B (no manual sync)...\n'
for r in A B; do
  for _ in $(seq 1 100); do
    got=$("$ivaldi" -C "$r" log --json -n 1 | sed -n 's/.*"id": "\([0-9a-f]*\)".*/\1/p' | head -1)
    [ "$got" = "$want" ] && break
    sleep 0.1
  done
  [ "$got" = "$want" ] || { echo "the seal did not reach $r"; exit 1; }
done
step "$ivaldi" -C A status
step "$ivaldi" -C A update
step cat A/from-c.txt
step "$ivaldi" -C B log -n 1
for r in A B C; do step "$ivaldi" -C "$r" p2p stop; done
printf '\nDemo finished: the seal made in C reached A and B; all daemons stopped.\n'

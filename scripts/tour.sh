#!/usr/bin/env bash
# A short scripted tour of Ivaldi's everyday commands in a throwaway directory.
# Usage: bash scripts/tour.sh        (builds the CLI first; nothing outside /tmp is touched)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cargo build --quiet --release -p ivaldi-cli --manifest-path "$here/Cargo.toml"
ivaldi="$here/target/release/ivaldi"
work=$(mktemp -d "${TMPDIR:-/tmp}/ivaldi-tour.XXXXXX")
trap 'rm -rf "$work"' EXIT
export IVALDI_AUTHOR="Tour Guide <tour@example.org>"

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }
cd "$work"
step "$ivaldi" forge project
cd project
mkdir -p "docs/notes" && echo "# Project" > README.md && printf 'fn main() {}\n' > main.rs
echo "ünïcödé and spaces" > "docs/notes/a note.txt" && printf '' > empty && ln -s README.md readme-link
echo "target/" > .ivaldiignore && mkdir -p target && echo "build output" > target/ignored.o
step "$ivaldi" status
step "$ivaldi" seal -m "First seal"
step "$ivaldi" timeline create feature
step "$ivaldi" timeline switch feature
printf 'fn main() { println!("hi"); }\n' > main.rs
step "$ivaldi" seal -m "Say hi"
step "$ivaldi" timeline switch main
echo "More docs." >> README.md
step "$ivaldi" seal -m "Document more"
step "$ivaldi" fuse feature
step "$ivaldi" log -n 4
step "$ivaldi" timeline list
step "$ivaldi" show main
step "$ivaldi" verify
printf '\nTour finished; the repository was in %s (now removed).\n' "$work/project"

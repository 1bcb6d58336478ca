#!/usr/bin/env bash
# The git bridge against git's own pipeline, side by side in one run (issue 15's
# bench history: 5,000 files, 300 commits). Uses target/release/ivaldi:
#   cargo build --release -p ivaldi-cli && bash scripts/bench-git-bridge.sh
# FILES=500 COMMITS=30 bash scripts/bench-git-bridge.sh   # a quick run
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
IVALDI=${IVALDI:-$ROOT/target/release/ivaldi}
FILES=${FILES:-5000}
COMMITS=${COMMITS:-300}
CHANGED=${CHANGED:-20}
W=$(mktemp -d "${TMPDIR:-/tmp}/git-bridge-bench.XXXXXX")
trap 'rm -rf "$W"' EXIT
export GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1
export GIT_AUTHOR_NAME=Bench GIT_AUTHOR_EMAIL=bench@example.invalid
export GIT_COMMITTER_NAME=Bench GIT_COMMITTER_EMAIL=bench@example.invalid

# The history, written by git fast-import from a generated stream: the first
# commit adds FILES text files in 50 directories, each later one rewrites
# CHANGED of them.
awk -v files="$FILES" -v commits="$COMMITS" -v changed="$CHANGED" 'BEGIN {
  srand(42);
  for (c = 1; c <= commits; c++) {
    print "commit refs/heads/main";
    print "committer Bench <bench@example.invalid> " (1700000000 + c) " +0000";
    msg = "commit " c; print "data " length(msg); print msg;
    n = (c == 1) ? files : changed;
    for (k = 0; k < n; k++) {
      f = (c == 1) ? k : int(rand() * files);
      body = "";
      lines = 20 + int(rand() * 60);
      for (l = 0; l < lines; l++) body = body "file " f " commit " c " line " l " " rand() "\n";
      print "M 100644 inline d" (f % 50) "/f" f ".txt";
      print "data " length(body); printf "%s", body;
    }
    print "";
  }
}' > "$W/stream"
git init -q --bare "$W/src.git"
git -C "$W/src.git" fast-import --quiet < "$W/stream"

t() { local s e; s=$(date +%s.%N); "$@" > /dev/null; e=$(date +%s.%N); echo "$e - $s" | bc; }

git_pipeline() { rm -rf "$W/g.git"; git init -q --bare "$W/g.git";
  git -C "$W/src.git" fast-export --all | git -C "$W/g.git" fast-import --quiet; }

g1=$(t git_pipeline)
rm -rf "$W/iv"; "$IVALDI" forge "$W/iv" > /dev/null
i1=$(t "$IVALDI" -C "$W/iv" git import "$W/src.git")
e1=$(t "$IVALDI" -C "$W/iv" git export "$W/out.git")
[ "$(git -C "$W/out.git" rev-parse main)" = "$(git -C "$W/src.git" rev-parse main)" ] || { echo "export differs"; exit 1; }
# one new commit
tree=$(git -C "$W/src.git" rev-parse 'main^{tree}')
c=$(git -C "$W/src.git" commit-tree "$tree" -p main -m "one more")
git -C "$W/src.git" update-ref refs/heads/main "$c"
i2=$(t "$IVALDI" -C "$W/iv" git import "$W/src.git")

ratio() { echo "scale=2; $1 / $2" | bc; }
printf '| case (%s files, %s commits) | ivaldi | git fast-export \\| fast-import | ratio |\n|---|---|---|---|\n' "$FILES" "$COMMITS"
printf '| full import | %.2f s | %.2f s | %s× |\n' "$i1" "$g1" "$(ratio "$i1" "$g1")"
printf '| full export (fresh bare repo) | %.2f s | %.2f s | %s× |\n' "$e1" "$g1" "$(ratio "$e1" "$g1")"
printf '| incremental import, 1 commit | %.3f s | | goal < 0.1 s |\n' "$i2"

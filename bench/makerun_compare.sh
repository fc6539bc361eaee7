#!/bin/bash
# `make run` after set-up (generate_logs then pipeline, conf/local.yaml, a fresh work/ each) for
# two commits, one after the other, with this checkout's .venv: the stage lines of each log and
# the wall seconds of both steps. The worktrees are removed however the runs end.
#
#     bench/makerun_compare.sh OLD_COMMIT [NEW_COMMIT]      # NEW_COMMIT defaults to HEAD
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 OLD_COMMIT [NEW_COMMIT]" >&2; exit 2; }
repo=$(cd "$(dirname "$0")/.." && pwd)
py=$repo/.venv/bin/python
dir=$(mktemp -d /tmp/makerun-compare.XXXXXX)
trap 'for t in "$dir"/tree-*; do [ -d "$t" ] && git -C "$repo" worktree remove --force "$t"; done; true' EXIT
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
step=0
for commit in "$1" "${2:-HEAD}"; do
  step=$((step + 1))
  tree=$dir/tree-$step
  git -C "$repo" worktree add -q --detach "$tree" "$commit"
  cd "$tree"
  start=$(date +%s.%N)
  PYTHONPATH=$tree/lib "$py" jobs/generate_logs.py --conf conf/local.yaml > "$tree.generate.log" 2>&1 \
    || { echo "$commit: generate_logs failed, see $tree.generate.log" >&2; exit 1; }
  generated=$(date +%s.%N)
  PYTHONPATH=$tree/lib "$py" jobs/pipeline.py --conf conf/local.yaml > "$tree.pipeline.log" 2>&1 \
    || { echo "$commit: pipeline failed, see $tree.pipeline.log" >&2; exit 1; }
  done_at=$(date +%s.%N)
  { grep -o "[a-z]*: done in [0-9.]*s" "$tree.pipeline.log" || true; } | tr '\n' ' '
  echo
  echo "$commit: generate $(echo "$generated - $start" | bc) s, pipeline $(echo "$done_at - $generated" | bc) s, load after $(cut -d' ' -f1 /proc/loadavg)"
done

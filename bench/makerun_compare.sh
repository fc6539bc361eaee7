#!/bin/bash
# `make run` after set-up (generate_logs then pipeline, conf/local.yaml, a fresh work/ each) for
# two commits, one after the other, with this checkout's .venv: the stage lines of each log and
# the wall seconds of both steps.
#
#     bench/makerun_compare.sh OLD_COMMIT [NEW_COMMIT]      # NEW_COMMIT defaults to HEAD
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
py=$repo/.venv/bin/python
dir=$(mktemp -d /tmp/makerun-compare.XXXXXX)
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
for commit in "$1" "${2:-HEAD}"; do
  tree=$dir/$(git -C "$repo" rev-parse --short "$commit")
  git -C "$repo" worktree add -q --detach "$tree" "$commit"
  cd "$tree"
  start=$(date +%s.%N)
  PYTHONPATH=$tree/lib "$py" jobs/generate_logs.py --conf conf/local.yaml > "$tree.generate.log" 2>&1
  generated=$(date +%s.%N)
  PYTHONPATH=$tree/lib "$py" jobs/pipeline.py --conf conf/local.yaml > "$tree.pipeline.log" 2>&1
  done_at=$(date +%s.%N)
  grep -o "[a-z]*: done in [0-9.]*s" "$tree.pipeline.log" | tr '\n' ' '
  echo
  echo "$commit: generate $(echo "$generated - $start" | bc) s, pipeline $(echo "$done_at - $generated" | bc) s, load $(cut -d' ' -f1 /proc/loadavg)"
  git -C "$repo" worktree remove --force "$tree"
done

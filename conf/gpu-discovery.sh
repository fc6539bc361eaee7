#!/usr/bin/env bash
# Spark resource discovery script for GPUs (spark.executor.resource.gpu.discoveryScript, and
# spark.worker.resource.gpu.discoveryScript on a standalone worker). Prints the GPUs nvidia-smi
# sees as {"name": "gpu", "addresses": ["0", "1"]}, or an empty address list where there are none.
# spark-submit.sh ships it with --files when the config names ./gpu-discovery.sh.
set -euo pipefail
addresses=""
if command -v nvidia-smi >/dev/null 2>&1; then
    while IFS= read -r index; do
        index="${index//[[:space:]]/}"
        if [[ -n "$index" ]]; then
            addresses+="${addresses:+, }\"$index\""
        fi
    done < <(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null || true)
fi
echo "{\"name\": \"gpu\", \"addresses\": [$addresses]}"

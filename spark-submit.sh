#!/usr/bin/env bash
# Ship querylens and its Python environment to a Spark cluster and run a job:
#   ./spark-submit.sh JOB [--conf FILE] [--set k=v ...] [--master URL] [--deploy-mode M]
#                         [--node-python PATH] [--dry-run] [-- extra spark-submit args]
# The logic lives in lib/querylens/submit.py; `./spark-submit.sh --help` lists the options.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${QUERYLENS_PYTHON:-$root/.venv/bin/python}"
if [[ ! -x "$python" ]]; then
    echo "spark-submit.sh: error: no Python at $python; run 'make test' (creates .venv) or" \
         "set QUERYLENS_PYTHON to a Python with querylens' dependencies" >&2
    exit 2
fi
exec "$python" -c 'import sys; sys.path.insert(0, sys.argv.pop(1))
from querylens.deploy.submit import main
sys.exit(main())' "$root/lib" "$@"

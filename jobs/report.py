"""spark-submit entry point: the report job (rebuilds a run's report from its tables)."""

import sys

from querylens.app.cli import main

if __name__ == "__main__":
    sys.exit(main(["report", *sys.argv[1:]]))

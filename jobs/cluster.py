"""spark-submit entry point: the cluster job."""

import sys

from querylens.app.cli import main

if __name__ == "__main__":
    sys.exit(main(["cluster", *sys.argv[1:]]))

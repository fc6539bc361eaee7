"""spark-submit entry point: the pipeline job."""

import sys

from querylens.app.cli import main

if __name__ == "__main__":
    sys.exit(main(["pipeline", *sys.argv[1:]]))

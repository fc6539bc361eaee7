"""spark-submit entry point: the ingest job."""

import sys

from querylens.app.cli import main

if __name__ == "__main__":
    sys.exit(main(["ingest", *sys.argv[1:]]))

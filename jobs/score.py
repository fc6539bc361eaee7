"""spark-submit entry point: assign new queries to a saved cluster model."""

import sys

from querylens.app.cli import main

if __name__ == "__main__":
    sys.exit(main(["score", *sys.argv[1:]]))

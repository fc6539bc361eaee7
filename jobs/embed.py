"""spark-submit entry point: the embed job."""

import sys

from querylens.app.cli import main

if __name__ == "__main__":
    sys.exit(main(["embed", *sys.argv[1:]]))

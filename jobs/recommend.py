"""spark-submit entry point: the recommend job."""

import sys

from querylens.app.cli import main

if __name__ == "__main__":
    sys.exit(main(["recommend", *sys.argv[1:]]))

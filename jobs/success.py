"""spark-submit entry point: the success job."""

import sys

from querylens.app.cli import main

if __name__ == "__main__":
    sys.exit(main(["success", *sys.argv[1:]]))

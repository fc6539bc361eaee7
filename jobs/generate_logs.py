"""spark-submit entry point: the generate_logs job."""

import sys

from querylens.app.cli import main

if __name__ == "__main__":
    sys.exit(main(["generate_logs", *sys.argv[1:]]))

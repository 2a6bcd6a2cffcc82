"""`python -m zoomin_lib ...`: the `zoomin` command line (`zoomin_lib.cli`)."""

from zoomin_lib.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

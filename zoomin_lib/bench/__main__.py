"""`python -m zoomin_lib.bench`: the benchmark (see `zoomin_lib.bench`)."""

from zoomin_lib.bench import main

main()

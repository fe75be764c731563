"""`python -m shared.cli`: the `jupiter` command, as the tests and `make run` start it."""

from shared.cli import main

main()

"""`python -m lvsprobe`: the same as the `lvsprobe` command."""

from lvsprobe.cli import main

main()

"""`python -m predstore`: the `predstore` command."""

from predstore.cli import main

main(prog_name="predstore")

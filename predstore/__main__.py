"""`python -m predstore`: the `predstore` command."""

from store.cli import main

main(prog_name="predstore")

"""`python -m store`: the `predstore` command, as `python -m predstore` is."""

from predstore.cli import main

main(prog_name="predstore")

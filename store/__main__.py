from store.cli import main

main(prog_name="predstore")

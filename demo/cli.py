"""`predstore demo`: run the whole loop on real data, then say where everything is."""

from __future__ import annotations

import logging

import click

from store.settings import Settings


@click.command()
@click.option("--serve", "serve_too", is_flag=True, help="Keep the lookup API up afterwards (Ctrl-C stops it).")
@click.option("--port", type=int, default=8000, show_default=True, help="Port for --serve.")
@click.option("--weeks", type=int, help="Replay only the first N weeks (default: all of 2011-2012).")
@click.pass_obj
def demo(settings: Settings, serve_too: bool, port: int, weeks: int | None) -> None:
    """Train on the UCI Bike Sharing data (Jan-Feb 2011), then replay the rest week by week:
    each week is scored by the scheduler, its labels arrive a week later, the monitor runs."""
    from demo.run import MODEL, run_demo
    from demo.serve import hint, serve
    from demo.summary import describe

    click.echo(f"predstore demo: working in {settings.home / 'demo'}")
    # Each week's runs, firings and alerts are logged; here the summary lines say enough (for this
    # command only: a program that invokes it keeps its own level).
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        result = run_demo(settings, say=click.echo, weeks=weeks)
        click.echo(f"\ndone in {result.seconds:.0f}s: {result.weeks} weekly partitions scored, labels ingested, "
                   "monitored; what the monitor recorded:\n")
        for line in describe(result.summary, unit=" rentals/hour"):
            click.echo(f"  {line}")
        click.echo(f"\n  report     {result.report}")
        click.echo('  SQL        psql "$(predstore db url)" -c '
                   '"SELECT * FROM run_summary ORDER BY run_id DESC LIMIT 5"')
        if not serve_too:
            click.echo(f"  API        {hint(settings, MODEL, result.entity_id, port=port)}")
        click.echo(f"  runs       predstore runs list --model {MODEL}")
        click.echo(f"  monitor    predstore monitor --model {MODEL} --report {result.workdir / 'report.html'}")
        if serve_too:
            serve(settings, MODEL, result.entity_id, port=port, say=click.echo)
    finally:
        root.setLevel(level)

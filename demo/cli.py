"""`predstore demo`: run the whole loop on real data, then say where everything is."""

from __future__ import annotations

import logging
from dataclasses import replace

import click

from store.settings import Settings


@click.command()
@click.option("--serve", is_flag=True, help="Keep the lookup API up afterwards (Ctrl-C stops it).")
@click.option("--port", type=int, default=8000, show_default=True, help="Port for --serve.")
@click.option("--weeks", type=int, help="Replay only the first N weeks (default: all of 2011-2012).")
@click.pass_obj
def demo(settings: Settings, serve: bool, port: int, weeks: int | None) -> None:
    """Train on the UCI Bike Sharing data (Jan-Feb 2011), then replay the rest week by week:
    each week is scored by the scheduler, its labels arrive a week later, the monitor runs."""
    from demo.run import MODEL, run_demo

    click.echo(f"predstore demo: working in {settings.home / 'demo'}")
    # Each week's runs, firings and alerts are logged; here the summary lines say enough.
    logging.getLogger().setLevel(logging.ERROR)
    result = run_demo(settings, say=click.echo, weeks=weeks)
    click.echo(f"\ndone in {result.seconds:.0f}s: {result.weeks} weekly partitions scored, labels ingested, "
               f"monitored; {result.alerts} alerts stand (drift and error growing away from Jan-Feb 2011).\n")
    click.echo(f"  report     {result.report}")
    click.echo('  SQL        psql "$(predstore db url)" -c "SELECT * FROM run_summary ORDER BY run_id DESC LIMIT 5"')
    click.echo(f"  API        predstore serve --port {port} --no-key-required   (then)   "
               f"curl http://127.0.0.1:{port}/v1/models/{MODEL}/predictions/2012-12-31T17")
    click.echo(f"  runs       predstore runs list --model {MODEL}")
    click.echo(f"  monitor    predstore monitor --model {MODEL} --report {result.workdir / 'report.html'}")
    if serve:
        from lookup_api import create_app
        from lookup_api.cli import say_how_keys_are_checked

        local = replace(settings, api_require_key=False)  # the demo serves on 127.0.0.1, without keys
        click.echo(f"\nserving the lookup API on http://127.0.0.1:{port} (Ctrl-C stops it)")
        say_how_keys_are_checked(local)
        create_app(local).run(host="127.0.0.1", port=port)

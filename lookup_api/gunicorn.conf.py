"""The same settings for a source checkout's path: ``-c lookup_api/gunicorn.conf.py``. An installed
package has ``-c python:lookup_api.gunicorn_conf``, which this file loads."""

from lookup_api.gunicorn_conf import *  # noqa: F401,F403

# predstore: one image for every service (migrate, lookup-api, scheduler, dask workers).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 predstore
WORKDIR /app

# Named volumes mounted here start with these owners.
RUN mkdir -p /home/predstore/.predstore /app/data/incoming /app/data/daily \
    && chown -R predstore:predstore /home/predstore/.predstore /app/data

# The pinned dependencies (constraints.txt lists them all, the dask extra's included) in a layer of
# their own: a change to the code rebuilds only the layers below, in seconds.
COPY constraints.txt ./
RUN pip install -r constraints.txt

# The project itself: pip finds its dependencies installed, at the same pins.
COPY pyproject.toml README.md LICENSE ./
COPY predstore ./predstore
COPY store ./store
COPY models ./models
COPY batch ./batch
COPY monitor ./monitor
COPY lookup_api ./lookup_api
COPY scheduler ./scheduler
COPY migrations ./migrations
COPY demo ./demo
RUN pip install -c constraints.txt '.[dask]'
COPY schedule.example.toml ./

USER predstore
ENV PREDSTORE_HOME=/home/predstore/.predstore
EXPOSE 8000
# The lookup API's liveness (compose's lookup-api service asks /readyz, which also needs the
# database); containers of the other services turn it off.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
CMD ["predstore", "--help"]

# predstore: one image for every service (migrate, lookup-api, scheduler, dask workers).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 predstore
WORKDIR /app

# Dependencies first, pinned by constraints.txt, so code changes do not reinstall them.
COPY pyproject.toml README.md constraints.txt ./
COPY store ./store
COPY batch ./batch
COPY monitor ./monitor
COPY lookup_api ./lookup_api
COPY scheduler ./scheduler
COPY migrations ./migrations
COPY demo ./demo
RUN pip install -c constraints.txt '.[dask]'
COPY schedule.example.toml ./

# Named volumes mounted here start with these owners.
RUN mkdir -p /home/predstore/.predstore /app/data/incoming /app/data/daily \
    && chown -R predstore:predstore /home/predstore/.predstore /app/data
USER predstore
ENV PREDSTORE_HOME=/home/predstore/.predstore
EXPOSE 8000
CMD ["predstore", "--help"]

# Tocsin image. Build: `docker build -t tocsin .`
# Run on SQLite (data in the volume):  docker run -p 8080:8080 -v tocsin-data:/var/lib/tocsin tocsin
# Run on PostgreSQL:                   docker compose up --build   (see docker-compose.yml)
# Your config: mount it at /etc/tocsin/config.yaml (secrets stay ${VAR} references, set them as env vars).

# --- build: install the package and its dependencies into a venv ------------------------------------
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY core ./core
COPY migrations ./migrations
RUN python -m venv /opt/tocsin && /opt/tocsin/bin/pip install .

# --- runtime: the venv, the default config, a non-root user ----------------------------------------
FROM python:3.11-slim
ENV PATH=/opt/tocsin/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TOCSIN_CONFIG=/etc/tocsin/config.yaml \
    TOCSIN_DATABASE_URL=sqlite+aiosqlite:////var/lib/tocsin/tocsin.db \
    TOCSIN_HEALTH_URL=http://127.0.0.1:8080/healthz
RUN groupadd --system --gid 10001 tocsin \
 && useradd --system --uid 10001 --gid tocsin --home-dir /var/lib/tocsin --shell /usr/sbin/nologin tocsin \
 && mkdir -p /var/lib/tocsin /etc/tocsin \
 && chown tocsin:tocsin /var/lib/tocsin
COPY --from=build /opt/tocsin /opt/tocsin
COPY config.yaml /etc/tocsin/config.yaml
WORKDIR /var/lib/tocsin
VOLUME ["/var/lib/tocsin"]
USER 10001:10001
EXPOSE 8080
# The slim image has no curl: probe /healthz with the Python standard library.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(0 if urllib.request.urlopen(os.environ.get('TOCSIN_HEALTH_URL', 'http://127.0.0.1:8080/healthz'), timeout=4).status == 200 else 1)"]
# `tocsin run` stops cleanly on SIGTERM: no new work, in-flight deliveries finish or go back to the queue.
STOPSIGNAL SIGTERM
ENTRYPOINT ["tocsin", "run"]
CMD ["--host", "0.0.0.0"]

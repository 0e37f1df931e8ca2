# One image for web, CPU workers, notifier, beat and Flower (GPU workers: docker/gpu.Dockerfile):
#   docker build -t dermscreen .
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    DERMSCREEN_HOME=/var/lib/dermscreen

RUN useradd --create-home --uid 10001 dermscreen \
    && mkdir -p /var/lib/dermscreen \
    && chown -R dermscreen /var/lib/dermscreen

WORKDIR /app
COPY pyproject.toml ./
COPY dermscreen ./dermscreen
RUN python -m pip install --upgrade pip \
    && python -m pip install ".[monitor]"

COPY --chmod=755 docker/healthcheck.py /usr/local/bin/dermscreen-healthcheck
USER dermscreen
EXPOSE 8000
# The web service; the other services set their own command (see docker-compose.yml).
CMD ["gunicorn", "--bind", "0.0.0.0:8000", "--workers", "4", "--timeout", "300", \
     "--access-logfile", "-", "dermscreen.web:create_app()"]

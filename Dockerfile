# One image for web, CPU workers, notifier, beat and Flower; GPU workers build it on TensorFlow's
# GPU image:
#   docker build -t dermscreen .
#   docker build -t dermscreen-gpu --build-arg BASE_IMAGE=tensorflow/tensorflow:2.21.0-gpu \
#                --build-arg TENSORFLOW=gpu .
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

# cpu: tensorflow-cpu from the project's dependencies; gpu: TensorFlow with CUDA in its place.
ARG TENSORFLOW=cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    DERMSCREEN_HOME=/var/lib/dermscreen

RUN useradd --create-home --uid 10001 dermscreen \
    && mkdir -p /var/lib/dermscreen/store \
    && chown -R dermscreen /var/lib/dermscreen

WORKDIR /app
COPY pyproject.toml ./
COPY dermscreen ./dermscreen
RUN python -m pip install --upgrade pip \
    && python -m pip install ".[monitor]" \
    && if [ "$TENSORFLOW" = "gpu" ]; then \
         python -m pip uninstall -y tensorflow-cpu \
         && python -m pip install --force-reinstall "tensorflow[and-cuda]==2.21.0"; \
       fi

COPY --chmod=755 docker/healthcheck.py /usr/local/bin/dermscreen-healthcheck
USER dermscreen
EXPOSE 8000
# The web service; the other services set their own command (see docker-compose.yml).
CMD ["gunicorn", "--bind", "0.0.0.0:8000", "--workers", "4", "--timeout", "300", \
     "--access-logfile", "-", "dermscreen.web:create_app()"]

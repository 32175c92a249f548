# The app image. The builder stage installs exactly what Pipfile.lock pins into a
# virtualenv; the runtime stage gets that virtualenv and the code, without pip or build
# tools. Layers go from least to most often changed, so a code-only change rebuilds the
# last COPY alone.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY Pipfile Pipfile.lock config/build/requirements.py ./
# Pipfile.lock's packages with their hashes (refused if the lock is out of date, as
# `pipenv install --deploy` would), installed by the image's own pip into a virtualenv
# without pip: every file checked against the lock (--require-hashes), nothing the lock
# does not name (--no-deps). Installing pipenv to do the same took most of a cold build.
RUN python requirements.py Pipfile.lock > requirements.txt \
 && python -m venv --without-pip .venv \
 && python -m pip --python .venv/bin/python install --no-deps --require-hashes --requirement requirements.txt

FROM ${PYTHON_IMAGE}
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/app/.venv/bin:$PATH \
    DJANGO_SETTINGS_MODULE=hello.settings.production \
    DJANGO_STATIC_ROOT=/srv/static \
    DJANGO_MEDIA_ROOT=/srv/media
# The app runs as an unprivileged user; the static and media folders are its own so that
# the named volumes mounted there (initialised from the image) are writable by it.
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home --shell /usr/sbin/nologin app \
 && mkdir -p /srv/static /srv/media \
 && chown app:app /srv/static /srv/media
COPY --from=builder /app/.venv /app/.venv
WORKDIR /app/hello
COPY hello/ /app/hello/
RUN python -m compileall -q /app/hello
USER app
EXPOSE 8000
CMD ["gunicorn", "--config", "gunicorn.conf.py", "hello.wsgi:application"]

# The notifier service image: `docker build -t notifier:0.1.0 .`
# Runs as the non-root user 10001 and works with a read-only root filesystem: state goes to
# /var/lib/notifier (a volume), the config is mounted at /etc/notifier/config.yaml. Set
# metrics.listen to 0.0.0.0:9464 in the config to reach /metrics from outside the container
# (the Helm chart does this for you).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 10001 notifier \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/notifier \
        --no-create-home --shell /usr/sbin/nologin notifier \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/notifier \
    && install -d -m 0755 /etc/notifier

# Runtime dependencies exactly as locked (versions and sha256 hashes: a changed or substituted
# file fails the build), then the package itself without resolving anything again.
# requirements.lock is generated from pyproject.toml by `make lock` (pip-compile).
COPY requirements.lock /tmp/requirements.lock
RUN pip install --require-hashes --no-deps --only-binary=:all: -r /tmp/requirements.lock \
    && rm /tmp/requirements.lock
COPY pyproject.toml README.md /src/
COPY notifier /src/notifier
RUN pip install --no-deps /src && rm -rf /src

WORKDIR /var/lib/notifier
USER 10001:10001
EXPOSE 9464
ENTRYPOINT ["notifier"]
CMD ["run", "--config", "/etc/notifier/config.yaml"]

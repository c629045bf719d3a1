# One image for every wsqueue daemon: twistd with the wsqueue plugins, run as a
# non-root user, certificates and data in volumes.
#
#   docker build -t wsqueue .
#   docker run --network host -v $PWD/certs:/certs:ro -v wsqueue-data:/data wsqueue
#
# BASE is any Debian bookworm image with python3 and python3-venv (the default),
# or one made here from Debian's packages (deploy/base-image.sh), where no image
# can be pulled.
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}

# Without it, pip would keep a cache and Python would write bytecode into the image at run time.
# PIP_CERT: pip trusts the image's CA store (its own bundle lacks a base image's local CAs).
ENV PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1 WSQUEUE_METRICS_PORT=9100 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt

RUN useradd --system --home-dir /data --shell /usr/sbin/nologin wsqueue \
 && mkdir -p /certs /data && chown wsqueue:wsqueue /data

COPY . /src
RUN python3 -m venv /opt/wsqueue \
 && /opt/wsqueue/bin/pip install --disable-pip-version-check /src \
 && /opt/wsqueue/bin/python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))" \
 && rm -rf /src

USER wsqueue
WORKDIR /data
VOLUME ["/certs", "/data"]
EXPOSE 8080 8081 8082 9100
ENV PATH=/opt/wsqueue/bin:$PATH

# /healthz answers while the daemon's event loop turns (--metrics-port, below).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ['WSQUEUE_METRICS_PORT'], timeout=2)"]

# The all-in-one by default; give another daemon and its options to run one stage:
#   docker run ... wsqueue twistd -n --pidfile= wsqueue-subscriber --cert-dir /certs ...
CMD ["sh", "-c", "exec twistd -n --pidfile= --logfile=- wsqueue --cert-dir /certs --interface 0.0.0.0 --store sqlite:/data/msgqueue.sqlite3 --metrics-port \"$WSQUEUE_METRICS_PORT\" --metrics-interface 0.0.0.0"]

# syntax=docker/dockerfile:1
#
# polyfn's container image: the host, the Python and Node.js runtimes with their interpreters,
# the Go toolchain (Go functions are checked against it at start), and one config's functions
# with their dependencies built in. docs/deploy.md walks through it:
#
#   docker build -t registry.example/team/polyfn:1.0 .            # serves examples/
#   docker build --build-context app=path/to/project -t registry.example/team/polyfn:1.0 .
#
# The build context is polyfn's source; the functions come from the stage named app, by default
# examples/, replaced by a directory of yours (holding polyfn.yaml and the functions' code)
# with --build-context app=DIR (BuildKit, docker's default builder).
#
# Each step is a command that `make test` runs too (e2e/install, TestInstalledLayout/image):
# make install into a prefix, polyfn kube --pod-config, polyfn build, polyfn serve from the
# prefix, the HEALTHCHECK's request. Keep them the same: that test compares its commands with
# this file's.

ARG NODE_IMAGE=node:22-bookworm-slim
ARG GO_IMAGE=golang:1.26-bookworm

FROM ${GO_IMAGE} AS go

# The config's directory: polyfn.yaml and the functions' code.
FROM scratch AS app
COPY examples/ /

# What both stages share: Debian's python3 (the runtime's virtualenv links to /usr/bin/python3,
# so the stage that makes it and the one that runs it must have the same), node and npm from
# the Node.js image, the go command.
FROM ${NODE_IMAGE} AS base
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=go /usr/local/go /usr/local/go
ENV PATH=/opt/polyfn/bin:/usr/local/go/bin:$PATH

# The host and its runtimes, installed into /opt/polyfn (bin/polyfn, lib/polyfn/...).
FROM base AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-venv make git \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN make install PREFIX=/opt/polyfn TAGS=kubernetes

FROM base
COPY --from=build /opt/polyfn /opt/polyfn
# The user the host runs as (the pod's runAsUser); it owns what the image build writes.
RUN groupadd -g 10001 polyfn \
 && useradd -u 10001 -g 10001 -M -d /tmp -s /usr/sbin/nologin polyfn \
 && install -d -o 10001 -g 10001 /etc/polyfn /opt/polyfn/build /var/lib/polyfn /var/cache/polyfn
COPY --from=app --chown=10001:10001 / /app
# The environment the pod gives the host (polyfn kube): the build's memos of what go env and
# the interpreters said are keyed by it, so that the pod finds the image's builds fresh.
ENV HOME=/tmp XDG_CACHE_HOME=/var/cache/polyfn
USER 10001:10001
WORKDIR /app
# The config as the pod reads it (the ConfigMap polyfn kube renders holds the same text):
# code under /app, the build cache in /opt/polyfn/build (build.dir; outside the state
# directory, which is an emptyDir in the pod), the admin listener on 0.0.0.0:9180. Then the
# functions' dependencies, built with it; the installers' caches are not kept. The image has
# no secrets: the values the config reads from the environment and files are not read here
# (--without-secrets), but in the pod (the Secrets polyfn kube names) or the container.
RUN polyfn kube -c /app/polyfn.yaml --pod-config --without-secrets > /etc/polyfn/polyfn.yaml \
 && polyfn build -c /etc/polyfn/polyfn.yaml --without-secrets \
 && rm -rf /tmp/* /tmp/.[!.]* /var/cache/polyfn/*
# The code, the built dependencies and the config then belong to root, read-only: the host
# and its workers (user 10001; a host that is not root runs its workers as itself) read them
# and cannot change them, with or without a read-only root file system.
USER root
RUN chown -R root:root /app /opt/polyfn/build /etc/polyfn \
 && chmod -R a-w /app /opt/polyfn/build /etc/polyfn/polyfn.yaml
USER 10001:10001
EXPOSE 8080 9180
# Liveness on the admin listener, asked with the Node.js runtime's interpreter (no curl here).
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:9180/healthz/live').then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["polyfn"]
CMD ["serve", "-c", "/etc/polyfn/polyfn.yaml"]

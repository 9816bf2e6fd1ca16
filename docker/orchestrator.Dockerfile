# The orchestrator image: `automl run | dashboard | schedule` (see docker-compose.yml).
#
#   docker build -f docker/orchestrator.Dockerfile -t dino-automl/orchestrator .
#
# It starts FROM the trainer image: the project and its dependencies are already there
# (the orchestrator generates the smoke profile's dataset with the trainer's own code,
# which imports torch), and on a host that runs trials the trainer image is present
# anyway, so this image adds no layer of any size.
#
# Run it with the Docker socket mounted (trial containers are its siblings) and the
# workspace and data bind-mounted at their host paths: a trial container mounts the
# results folder by its host path. It runs as root, the usual owner of the socket;
# trial containers still run as an unprivileged user (automl/launchers/docker.py).

ARG TRAINER_IMAGE=dino-automl/trainer:latest
FROM ${TRAINER_IMAGE}

USER root
# Where the curated spaces live in the image (the installed package does not carry them).
ENV AUTOML_SEARCH_SPACES=/src/search_spaces \
    HOME=/root
WORKDIR /root
RUN automl --help >/dev/null

LABEL org.opencontainers.image.title="dino-automl orchestrator" \
      org.opencontainers.image.description="automl run / dashboard / schedule: Optuna studies of DINO trials"
ENTRYPOINT []
CMD ["automl", "--help"]

# The trainer image: the project installed, `dino train -e spec.yaml key=value ...` as the
# command (no entrypoint), run as a non-root user. The orchestrator's Docker launcher starts
# one container of it per trial.
#
# Production (a CUDA PyTorch base from a registry; torch comes from the base image):
#   docker build -f docker/trainer.Dockerfile -t dino-automl/trainer:cuda .
#   docker build -f docker/trainer.Dockerfile --build-arg BASE_IMAGE=nvcr.io/nvidia/pytorch:25.01-py3 ...
# Offline (no registry; the base made by docker/build_base.sh, every wheel served from
# the build host): docker/build_trainer.sh does this, see its header.
#
# Layers go from rarely to often changed, so a code change rebuilds only the last ones.

ARG BASE_IMAGE=pytorch/pytorch:2.8.0-cuda12.8-cudnn9-runtime
FROM ${BASE_IMAGE}

# Offline builds: a find-links URL serving every wheel needed (docker build --network host).
# Empty: pip uses its index (PyPI) as usual.
ARG WHEELHOUSE=""
# The non-root user the image runs as by default (the launcher passes the invoking user's uid).
ARG TRAINER_UID=1000

USER root
ENV VIRTUAL_ENV=/opt/dino-automl \
    PATH=/opt/dino-automl/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

COPY docker/trainer_install.sh /usr/local/lib/dino-automl/trainer_install.sh

# 1. The venv (sees the base image's site-packages) and torch/torchvision unless the base has them.
RUN sh /usr/local/lib/dino-automl/trainer_install.sh torch

# 2. The project's dependencies, read from pyproject.toml; the base image's torch is kept.
COPY pyproject.toml /src/pyproject.toml
RUN sh /usr/local/lib/dino-automl/trainer_install.sh deps

# 3. The project itself.
COPY README.md /src/README.md
COPY automl /src/automl
COPY dino /src/dino
COPY metric_extractors /src/metric_extractors
COPY search_spaces /src/search_spaces
RUN sh /usr/local/lib/dino-automl/trainer_install.sh project

RUN sh /usr/local/lib/dino-automl/trainer_install.sh user "${TRAINER_UID}"

ARG SOURCE_HASH=""
LABEL org.opencontainers.image.title="dino-automl trainer" \
      org.opencontainers.image.description="DINO trainer: dino train -e spec.yaml key=value ..." \
      automl.source_hash="${SOURCE_HASH}"

# HOME for any uid the launcher picks (torch and matplotlib write caches under it); the
# installed package does not carry search_spaces/, so say where the copy is.
ENV HOME=/tmp \
    AUTOML_SEARCH_SPACES=/src/search_spaces
USER ${TRAINER_UID}:${TRAINER_UID}
WORKDIR /tmp
ENTRYPOINT []
CMD ["dino", "--help"]

#!/bin/sh
# Build steps of docker/trainer.Dockerfile, one per layer; POSIX sh, since base images
# differ (Debian minbase, Ubuntu, conda). Runs as root inside `docker build`.
#
#   trainer_install.sh torch      venv at $VIRTUAL_ENV; torch + torchvision unless the base has them
#   trainer_install.sh deps       the dependencies listed in /src/pyproject.toml
#   trainer_install.sh project    the project from /src, no dependency resolution
#   trainer_install.sh user UID   a non-root user UID (group UID) to run as
#
# WHEELHOUSE makes every pip call offline: a find-links URL (--no-index --find-links URL),
# or "none" (--no-index: everything must already be in the base image's venv).
set -eu

venv="${VIRTUAL_ENV:?VIRTUAL_ENV must be set}"
pip() { "$venv/bin/python" -m pip --quiet "$@"; }
pip_source() {
  case "${WHEELHOUSE:-}" in
    "") ;;
    none) echo "--no-index" ;;
    *) echo "--no-index --find-links ${WHEELHOUSE}" ;;
  esac
}

# Pins torch/torchvision to what is installed, so no later step replaces the base image's
# build (NGC's torch is a pre-release version that plain `torch>=2.4` would not accept).
write_torch_pins() {
  "$venv/bin/python" - <<'EOF' > /tmp/torch-pins.txt
import importlib.metadata as md
for name in ("torch", "torchvision"):
    try:
        print(f"{name}=={md.version(name)}")
    except md.PackageNotFoundError:
        pass
EOF
}

case "${1:?step: torch | deps | project | user}" in
torch)
  python=$(command -v python3 || command -v python)
  if [ -x "$venv/bin/python" ]; then
    echo "trainer_install: the base image has the venv $venv; using it"
  # --system-site-packages: a CUDA base image's torch stays visible inside the venv.
  elif ! "$python" -m venv --system-site-packages "$venv" 2>/dev/null; then
    # No ensurepip (Debian/Ubuntu python without python3-venv): borrow the base's pip.
    rm -rf "$venv"
    "$python" -m venv --without-pip --system-site-packages "$venv"
    "$python" -m pip --python "$venv/bin/python" install $(pip_source) pip
  fi
  # Builds the project in step 3 (--no-build-isolation); setuptools>=70.1 builds wheels itself.
  pip install $(pip_source) "setuptools>=70.1"
  if "$venv/bin/python" -c "import torch, torchvision" 2>/dev/null; then
    echo "trainer_install: the base image has torch; keeping it"
  else
    pip install $(pip_source) torch torchvision
  fi
  "$venv/bin/python" -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.version.cuda)"
  ;;
deps)
  write_torch_pins
  "$venv/bin/python" - <<'EOF' > /tmp/requirements.txt
import tomllib
with open("/src/pyproject.toml", "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["dependencies"]))
EOF
  pip install $(pip_source) -r /tmp/requirements.txt -c /tmp/torch-pins.txt
  rm -f /tmp/requirements.txt
  ;;
project)
  pip install $(pip_source) --no-deps --no-build-isolation /src
  pip check
  rm -rf /src/build /src/*.egg-info
  "$venv/bin/dino" --help >/dev/null
  ;;
user)
  uid="${2:?uid}"
  if ! getent group "$uid" >/dev/null; then groupadd --gid "$uid" trainer; fi
  if ! getent passwd "$uid" >/dev/null; then
    useradd --uid "$uid" --gid "$uid" --home-dir /home/trainer --create-home --shell /bin/sh trainer
  fi
  ;;
*)
  echo "trainer_install: unknown step $1" >&2
  exit 2
  ;;
esac

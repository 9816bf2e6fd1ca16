#!/usr/bin/env bash
# Base images built locally, with no image registry.
#
#   docker/build_base.sh                   dino-automl/base:bookworm: Debian bookworm minbase
#                                          with Python 3.11 (debootstrap + docker import)
#   docker/build_base.sh --venv .venv      dino-automl/base:venv: the above plus the
#                                          site-packages of a host venv (torch, CUDA
#                                          libraries, every dependency) at /opt/dino-automl
#
# The --venv image is the quick CI recipe (bench/docker_image_build.md): the trainer image
# then carries exactly the packages the host tests run with, and nothing is unpacked or
# byte-compiled again. The venv must be a CPython 3.11 venv (any 3.11.x: wheels and .pyc
# files are the same across patch releases); its editable install of this project is left
# out (the trainer image installs the project itself).
#
# An image that exists is kept unless FORCE=1; the --venv image is rebuilt when the venv's
# set of installed distributions changed (label automl.venv_hash).
# Env: DEBIAN_MIRROR (default http://deb.debian.org/debian).
set -euo pipefail

base_image="dino-automl/base:bookworm"
venv_image="dino-automl/base:venv"
venv=""
while (($#)); do
  case "$1" in
    --venv) venv="$2"; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    -*) echo "build_base: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) if [[ -n "$venv" ]]; then venv_image="$1"; else base_image="$1"; fi; shift ;;
  esac
done
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# python3-venv brings ensurepip's bundled pip/setuptools; bookworm's python3 is 3.11.
packages="python3,python3-venv,ca-certificates,libgomp1,procps"

# An image that lost its last tag to a rebuild; one still tagged elsewhere or used by a
# child image stays.
remove_if_untagged() {
  if [[ "$(docker image inspect -f '{{len .RepoTags}}' "$1" 2>/dev/null)" == 0 ]]; then
    docker rmi "$1" >/dev/null 2>&1 || true
  fi
}

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }
image_size() { docker image inspect -f '{{.Size}}' "$1" | awk '{printf "%.2f GB", $1/1e9}'; }

build_debian_base() {
  if [[ "${FORCE:-0}" != 1 ]] && image_exists "$base_image"; then
    echo "build_base: $base_image exists (FORCE=1 to rebuild)"
    return
  fi
  command -v debootstrap >/dev/null || { echo "build_base: debootstrap is missing: apt-get install -y debootstrap" >&2; exit 1; }
  [[ $(id -u) == 0 ]] || { echo "build_base: debootstrap needs root" >&2; exit 1; }
  local rootfs log start t
  rootfs="$(mktemp -d /var/tmp/dino-automl-rootfs.XXXXXX)"
  log="$rootfs.log"
  trap 'rm -rf "$rootfs"' EXIT
  start=$SECONDS
  debootstrap --variant=minbase --include="$packages" bookworm "$rootfs" "$mirror" >"$log" 2>&1 \
    || { tail -20 "$log" >&2; echo "build_base: debootstrap failed (log: $log)" >&2; exit 1; }
  rm -f "$log"
  # Package caches and docs are never needed at run time.
  chroot "$rootfs" apt-get clean
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* \
         "$rootfs"/usr/share/locale/* "$rootfs"/var/cache/debconf/*-old
  echo "build_base: debootstrap took $((SECONDS - start)) s, rootfs $(du -sh "$rootfs" | cut -f1)"
  t=$SECONDS
  tar -C "$rootfs" -c . | docker import \
    --change 'ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' \
    - "$base_image" >/dev/null
  rm -rf "$rootfs"
  trap - EXIT
  echo "build_base: docker import took $((SECONDS - t)) s; $base_image is $(image_size "$base_image")"
}

build_venv_base() {
  local site="$venv/lib/python3.11/site-packages"
  [[ -d "$site" ]] || { echo "build_base: $site not found: --venv needs a Python 3.11 venv" >&2; exit 1; }
  local hash
  hash="$(ls "$site" | grep -E '\.dist-info$' | grep -v -E '^dino_automl-' | sha256sum | cut -c1-16)"
  if [[ "${FORCE:-0}" != 1 ]] && image_exists "$venv_image" \
     && [[ "$(docker image inspect -f '{{index .Config.Labels "automl.venv_hash"}}' "$venv_image")" == "$hash" ]]; then
    echo "build_base: $venv_image is up to date with $venv"
    return
  fi
  local rootfs cid start t old_id
  old_id="$(docker image inspect -f '{{.Id}}' "$venv_image" 2>/dev/null || true)"
  start=$SECONDS
  rootfs="$(mktemp -d /var/tmp/dino-automl-rootfs.XXXXXX)"
  trap 'rm -rf "$rootfs"' EXIT
  cid="$(docker create "$base_image")"
  docker export "$cid" | tar -C "$rootfs" -x
  docker rm "$cid" >/dev/null
  mkdir -p "$rootfs/opt/dino-automl/lib/python3.11"
  # Hard links when on one file system (instant), else a copy.
  cp -al "$site" "$rootfs/opt/dino-automl/lib/python3.11/" 2>/dev/null \
    || cp -a "$site" "$rootfs/opt/dino-automl/lib/python3.11/"
  rm -rf "$rootfs"/opt/dino-automl/lib/python3.11/site-packages/{__editable__.dino_automl*,__editable___dino_automl*,dino_automl-*.dist-info}
  # A real venv around those packages, made by the image's own python.
  chroot "$rootfs" python3 -m venv --without-pip /opt/dino-automl
  echo "build_base: root file system ready in $((SECONDS - start)) s"
  t=$SECONDS
  tar -C "$rootfs" -c . | docker import \
    --change 'ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change "LABEL automl.venv_hash=$hash" \
    --change 'CMD ["/bin/bash"]' \
    - "$venv_image" >/dev/null
  rm -rf "$rootfs"
  trap - EXIT
  echo "build_base: docker import took $((SECONDS - t)) s; $venv_image is $(image_size "$venv_image")"
  # The replaced image, unless a trainer image still builds on it (build_trainer.sh prunes it then).
  if [[ -n "$old_id" && "$old_id" != "$(docker image inspect -f '{{.Id}}' "$venv_image")" ]]; then
    remove_if_untagged "$old_id"
  fi
}

build_debian_base
if [[ -n "$venv" ]]; then build_venv_base; fi

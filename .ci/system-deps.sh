#!/usr/bin/env bash
# Install the system tools the test world needs when they are missing (Debian/Ubuntu):
# Java and Maven (Kafka), Go (kube-apiserver, etcd), and for the container tests a Docker
# engine (docker.io: dockerd plus the client it ships) and debootstrap (the local base image;
# no image registry is needed). tests/env/docker.py starts the engine when none runs.
set -euo pipefail
missing=()
command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || missing+=(maven)
command -v go >/dev/null || missing+=(golang-go)
command -v dockerd >/dev/null || [ -x /usr/sbin/dockerd ] || missing+=(docker.io)
[ -x /usr/bin/docker ] || missing+=(docker.io)
command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
if ((${#missing[@]})); then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  echo "installing: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
# Go >= 1.21 fetches the toolchain Kubernetes asks for by itself (GOTOOLCHAIN=auto).
go_minor=$(go env GOVERSION | sed -E 's/go1\.([0-9]+).*/\1/')
if [ "$go_minor" -lt 21 ]; then
  echo "Go $(go env GOVERSION) is too old: install Go >= 1.21 (it then downloads the" \
       "toolchain k8s.io/kubernetes asks for from the Go module proxy)" >&2
  exit 1
fi

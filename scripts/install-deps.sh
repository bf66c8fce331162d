#!/usr/bin/env bash
# Installs every Debian package pgwarden's build, tests and a running cluster need.
# Idempotent: when everything is present it only checks and returns in about a second.
set -euo pipefail

packages=(
  build-essential cmake make pkg-config clang-format clang libclang-rt-14-dev
  libboost-dev libboost-system-dev libyaml-cpp-dev nlohmann-json3-dev
  libpq-dev libssl-dev libzstd-dev liblz4-dev libpg-query-dev libprotobuf-c-dev
  googletest libgtest-dev libgmock-dev libbenchmark-dev
  postgresql-15 postgresql-client-15 etcd-server etcd-client
  haproxy curl procps iproute2 bc
  pgbouncer python3-psycopg2 nodejs
)
# npm: Debian's package, unless another nodejs build (e.g. NodeSource) already brings its own.
command -v npm >/dev/null 2>&1 || packages+=(npm)

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  echo "install-deps: missing packages: ${missing[*]}" >&2
  echo "install-deps: run as root (or: sudo $0) to install them" >&2
  exit 1
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# The postgresql package would create and start a default cluster on 5432;
# pgwarden manages its own clusters, so keep Debian's from being created.
mkdir -p /etc/postgresql-common
if ! grep -qs '^create_main_cluster' /etc/postgresql-common/createcluster.conf; then
  echo 'create_main_cluster = false' >>/etc/postgresql-common/createcluster.conf
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts etcd as a service on install; pgwarden starts its own.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet etcd 2>/dev/null; then
  systemctl stop etcd || true
  systemctl disable etcd >/dev/null 2>&1 || true
fi
# Debian's pgbouncer starts a service on 6432 (the port `pgwarden up` gives its
# proxy); bench/pooler.sh starts its own PgBouncer.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet pgbouncer 2>/dev/null; then
  systemctl stop pgbouncer || true
  systemctl disable pgbouncer >/dev/null 2>&1 || true
fi
echo "install-deps: done"

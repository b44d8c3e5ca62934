#!/usr/bin/env bash
# Side-by-side benchmark of backstop against the plain shell pipelines it
# replaces. Not a test: it prints figures, it asserts nothing.
#
#   bench/run.sh [--scale N] [--text-mb M] [--reps R] [--keep]
#
# Builds a database of pgbench data (scale N) plus a table of M MB of
# less-compressible text, then measures, R times each (median shown):
# pg_dump > /dev/null, | gzip, | pigz, | zstd -3 -T0, backstop (zstd),
# backstop (gzip), and restore: backstop restore vs zstd -dc | psql (plain)
# and vs zstd -dc | pg_restore (custom), with and without --jobs.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/services.sh

scale=40
text_mb=120
reps=3
keep=""
while [ $# -gt 0 ]; do
  case "$1" in
    --scale) scale=$2; shift 2 ;;
    --text-mb) text_mb=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

ensure_postgres
apt_install pigz time bc
cargo build --release --locked -q
bin=$PWD/target/release/backstop
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
export PGHOST=127.0.0.1 PGPORT=5432 PGUSER=postgres

db="bench_backstop_s${scale}_t${text_mb}"
work=$(mktemp -d /tmp/backstop-bench.XXXXXX)
cleanup() {
  psql -Xq -d postgres -c "DROP DATABASE IF EXISTS bench_restore WITH (FORCE)" >/dev/null 2>&1 || true
  [ -n "$keep" ] || psql -Xq -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

if [ "$(psql -XAtd postgres -c "SELECT count(*) FROM pg_database WHERE datname = '$db'")" = 0 ]; then
  echo "creating $db (pgbench scale $scale + ${text_mb} MB text)" >&2
  psql -Xq -d postgres -c "CREATE DATABASE $db"
  "$pgbin/pgbench" -q -i -s "$scale" "$db" >/dev/null 2>&1
  # Random-ish text: compresses about as badly as real application data.
  rows=$((text_mb * 1024 * 1024 / 200))
  psql -Xq -d "$db" -c "CREATE TABLE notes AS SELECT g AS id,
      encode(sha256(g::text::bytea), 'base64') || ' ' || md5(random()::text) || ' ' ||
      encode(sha512(random()::text::bytea), 'hex') AS body
    FROM generate_series(1, $rows) g"
fi

# The zstd levels `level = "auto"` used in the last backup (its manifest).
levels_used() {
  python3 -c 'import json,sys; print(" ".join(str(l) for l in json.load(open(sys.argv[1]))["compression"].get("levels", [])))' \
    "$(find "$work/backups" -name '*.manifest.json' | head -n 1)"
}

# measure NAME COMMAND...: runs it $reps times; records wall, cpu, rss, size.
results=()
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
measure() {
  local name=$1; shift
  local walls=() cpus=() rsss=()
  for _ in $(seq 1 "$reps"); do
    rm -rf "$work/out" "$work/backups"; mkdir -p "$work/out"
    /usr/bin/time -f '%e %U %S %M' -o "$work/time" bash -c "$*" >/dev/null 2>"$work/stderr" || {
      echo "$name failed:" >&2; cat "$work/stderr" >&2; exit 1; }
    read -r wall user sys rss <"$work/time"
    walls+=("$wall"); cpus+=("$(echo "$user + $sys" | bc)"); rsss+=("$rss")
  done
  local size
  size=$(find "$work/out" "$work/backups" -type f -printf '%s\n' 2>/dev/null | awk '{s+=$1} END {print s+0}' || true)
  results+=("$name@$(printf '%s\n' "${walls[@]}" | median)@$(printf '%s\n' "${cpus[@]}" | median)@$(printf '%s\n' "${rsss[@]}" | sort -n | tail -n 1)@$size")
}

cfg() { # algorithm format [level] (level "auto" is the zstd default)
  local storage=${storage_toml:-}
  [ -n "$storage" ] || storage=$(printf '[storage]\ntype = "local"\npath = "%s"\ncreate = true' "$work/backups")
  cat >"$work/backstop-$1-$2${3:-}.toml" <<TOML
$storage
[compression]
algorithm = "$1"
${3:+level = $3}
[[targets]]
name = "bench"
type = "postgres"
host = "127.0.0.1"
database = "$db"
format = "$2"
TOML
  echo "$work/backstop-$1-$2${3:-}.toml"
}

dump="$pgbin/pg_dump -d $db"
raw=$($dump | wc -c)
measure "pg_dump > /dev/null"            "$dump > /dev/null"
measure "pg_dump | gzip"                 "$dump | gzip > $work/out/d.sql.gz"
measure "pg_dump | pigz"                 "$dump | pigz > $work/out/d.sql.gz"
measure "pg_dump | zstd -3 -T0"          "$dump | zstd -q -3 -T0 > $work/out/d.sql.zst"
measure "backstop backup zstd auto (plain)" "$bin backup --log-format json -c $(cfg zstd plain)"
levels_auto_plain=$(levels_used)
measure "backstop backup zstd auto (custom)" "$bin backup --log-format json -c $(cfg zstd custom)"
levels_auto_custom=$(levels_used)
measure "backstop backup zstd -3 (plain)" "$bin backup --log-format json -c $(cfg zstd plain 3)"
measure "pg_dump | zstd -1 -T0"          "$dump | zstd -q -1 -T0 > $work/out/d.sql.zst"
measure "backstop backup zstd -1 (plain)" "$bin backup --log-format json -c $(cfg zstd plain 1)"
measure "backstop backup zstd -1 (custom)" "$bin backup --log-format json -c $(cfg zstd custom 1)"
measure "backstop backup gzip (plain)"   "$bin backup --log-format json -c $(cfg gzip plain)"

# A slow storage (rclone to a local directory at 20 MiB/s): auto spends the
# wait on a better ratio than level 3.
printf '[disk]\ntype = local\n' > "$work/rclone.conf"
storage_toml="[storage]
type = \"rclone\"
remote = \"disk:$work/backups\"
rclone_config = \"$work/rclone.conf\""
export RCLONE_BWLIMIT=20M
measure "slow storage: zstd -3 (custom)"  "$bin backup --log-format json -c $(cfg zstd custom 3)"
measure "slow storage: zstd auto (custom)" "$bin backup --log-format json -c $(cfg zstd custom)"
levels_slow=$(levels_used)
unset RCLONE_BWLIMIT storage_toml

# Restore: the same plain zstd dump through both paths into a fresh database.
rm -rf "$work/keep"; mkdir -p "$work/keep"
$dump | zstd -q -3 -T0 > "$work/keep/d.sql.zst"
$bin backup --log-format json -c "$(cfg zstd plain)" >/dev/null 2>&1
mv "$work/backups" "$work/keep/backups"
sed -i "s|$work/backups|$work/keep/backups|" "$work/backstop-zstd-plain.toml"
reset_restore="psql -Xq -d postgres -c 'DROP DATABASE IF EXISTS bench_restore WITH (FORCE)' -c 'CREATE DATABASE bench_restore'"
measure "zstd -dc | psql (restore)"      "$reset_restore && zstd -dc $work/keep/d.sql.zst | psql -Xq -v ON_ERROR_STOP=1 -1 -d bench_restore"
measure "backstop restore"               "$reset_restore && $bin restore --log-format json -c $work/backstop-zstd-plain.toml -t bench --into postgres://postgres@127.0.0.1:5432/bench_restore"

# Restore of a custom-format backup: streamed, and with parallel jobs
# (spooled to a file first, as pg_restore --jobs needs).
$dump -Fc -Z0 | zstd -q -3 -T0 > "$work/keep/d.dump.zst"
$bin backup --log-format json -c "$(cfg zstd custom)" >/dev/null 2>&1
mv "$work/backups" "$work/keep/backups-custom"
sed -i "s|$work/backups|$work/keep/backups-custom|" "$work/backstop-zstd-custom.toml"
drop_restore="psql -Xq -d postgres -c 'DROP DATABASE IF EXISTS bench_restore WITH (FORCE)'"
measure "zstd -dc | pg_restore (restore)" "$reset_restore && zstd -dc $work/keep/d.dump.zst | $pgbin/pg_restore -d bench_restore"
measure "backstop restore custom"         "$drop_restore && $bin restore --log-format json -c $work/backstop-zstd-custom.toml --into postgres://postgres@127.0.0.1:5432/bench_restore --create"
measure "backstop restore custom --jobs 2" "$drop_restore && $bin restore --log-format json -c $work/backstop-zstd-custom.toml --into postgres://postgres@127.0.0.1:5432/bench_restore --create --jobs 2 --spool-dir $work"
measure "backstop restore custom --jobs 4" "$drop_restore && $bin restore --log-format json -c $work/backstop-zstd-custom.toml --into postgres://postgres@127.0.0.1:5432/bench_restore --create --jobs 4 --spool-dir $work"

base=$(echo "${results[0]}" | cut -d@ -f2)
pigz_wall=$(printf '%s\n' "${results[@]}" | grep '^pg_dump | pigz' | cut -d@ -f2)
restore_base=$(printf '%s\n' "${results[@]}" | grep '^zstd -dc | psql' | cut -d@ -f2)
custom_base=$(printf '%s\n' "${results[@]}" | grep '^zstd -dc | pg_restore' | cut -d@ -f2)
echo
echo "database $db: plain dump $((raw / 1024 / 1024)) MiB; $(nproc) cores; median of $reps"
printf '%-36s %8s %8s %10s %12s %8s\n' "command" "wall s" "cpu s" "peak RSS" "output" "ratio"
for r in "${results[@]}"; do
  IFS=@ read -r name wall cpu rss size <<<"$r"
  ref=$base
  case "$name" in
    *custom*restore*|*restore*custom*) ref=$custom_base ;;
    *restore*) ref=$restore_base ;;
  esac
  printf '%-36s %8.2f %8.2f %7d MiB %8.1f MiB %7.2fx\n' "$name" "$wall" "$cpu" $((rss / 1024)) "$(echo "$size / 1048576" | bc -l)" "$(echo "$wall / $ref" | bc -l)"
done
echo
echo "ratios: backups vs pg_dump > /dev/null; plain restores vs zstd -dc | psql; custom restores vs zstd -dc | pg_restore. pigz: ${pigz_wall}s"
echo "zstd levels used by auto: plain [$levels_auto_plain], custom [$levels_auto_custom], slow storage [$levels_slow]"

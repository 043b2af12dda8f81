#!/usr/bin/env bash
# The shared PostgreSQL store (issue 14) beside the Maildir store, in one run, on
# loopback, as ratios (see bench/README.md):
#
#   bench/store_compare.sh [--quick] [--rounds N] [--users N] [--messages N] [--size BYTES]
#                          [--big N] [--repeat N] [--bodies database|s3] [--small N]
#                          [--json FILE]
#                          [--results FILE | --no-results]
#
# One command from a clean checkout, as root: builds `correio` (release), makes a
# temporary directory and starts PostgreSQL on 127.0.0.1 and a port chosen at run time
# (initdb; runs as nobody; durability settings left at PostgreSQL's defaults: fsync
# on, synchronous_commit on; pg_stat_statements loaded to count statements), and with
# --bodies s3 an s3s-fs S3 server. It writes the same mail for both stores: --users
# users with --messages messages of --size bytes each, and one user `big` with --big
# messages of 1 KB (Maildir files written directly; the PostgreSQL store filled from
# them by `correio store migrate`, which keeps UIDLs; with --bodies s3, --small N
# keeps bodies up to N octets in PostgreSQL: small_bodies_in_database). Then `correio serve` on the
# Maildirs and three `correio serve` frontends on the PostgreSQL store.
#
# Measured, each round in the order Maildir, PostgreSQL with 1, 2 and 3 frontends:
# - download: `correio bench download --pipeline`, each user's mailbox --repeat times
#   (one session each), the users split evenly between the frontends (one bench process per frontend, run at
#   the same time). Reported: messages/s, and server CPU per message: the process
#   trees of the frontends plus, for the PostgreSQL store, the postmaster's tree
#   (every backend) and with --bodies s3 the S3 server, from /proc before and after; and statements per session from
#   pg_stat_statements (the database round trips a session costs, BEGIN/COMMIT
#   included).
# - open: `correio bench open` (login, STAT, UIDL, LIST, QUIT) of the --big mailbox,
#   after a warm-up open of each (the Maildir's index made, the file system cache and
#   PostgreSQL's buffers warm): median STAT+UIDL+LIST latency and median session.
# All four on the same two cores: more frontends do not add hardware here, they
# show the cost of sharing one database. Prints one table and, unless --no-results
# (the default with --quick), appends it to bench/RESULTS.md.
#
# Needs (Debian packages): postgresql, python3; cargo (and s3s-fs for --bodies s3).
# Every run is bounded (--count, --duration, --timeout); the daemons it started are
# stopped by PID and the temporary directory removed on any exit.
# CORREIO_BIN=PATH uses that binary instead of building.
set -euo pipefail

QUICK=0
ROUNDS=
USERS=
MESSAGES=
SIZE=4096
BIG=
REPEAT=
SMALL=0
BODIES=database
JSON_OUT=
RESULTS=default
ARGS_SEEN="$*"
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --rounds) ROUNDS=$2; shift ;;
    --users) USERS=$2; shift ;;
    --messages) MESSAGES=$2; shift ;;
    --size) SIZE=$2; shift ;;
    --big) BIG=$2; shift ;;
    --repeat) REPEAT=$2; shift ;;
    --bodies) BODIES=$2; shift ;;
    --small) SMALL=$2; shift ;;
    --json) JSON_OUT=$2; shift ;;
    --results) RESULTS=$2; shift ;;
    --no-results) RESULTS= ;;
    -h|--help) sed -n '2,40p' "$0"; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [ "$QUICK" = 1 ]; then
  : "${ROUNDS:=1}" "${USERS:=12}" "${MESSAGES:=100}" "${BIG:=5000}" "${REPEAT:=2}"
else
  : "${ROUNDS:=3}" "${USERS:=24}" "${MESSAGES:=500}" "${BIG:=50000}" "${REPEAT:=10}"
fi
case "$BODIES" in database|s3) ;; *) echo "--bodies database|s3" >&2; exit 2 ;; esac
[ $((USERS % 6)) = 0 ] || { echo "--users must be a multiple of 6 (split over 1, 2 and 3 frontends)" >&2; exit 2; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ "$RESULTS" = default ]; then
  if [ "$QUICK" = 1 ]; then RESULTS=; else RESULTS=$ROOT/bench/RESULTS.md; fi
fi

PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
for p in "$PGBIN/initdb" "$PGBIN/postgres" "$PGBIN/psql" setpriv python3; do
  command -v "$p" >/dev/null || [ -x "$p" ] ||
    { echo "missing $p (apt-get install postgresql python3)" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "run as root (PostgreSQL drops to nobody)" >&2; exit 1; }
ulimit -n 65536 2>/dev/null || true

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
if [ -n "${CORREIO_BIN:-}" ]; then
  CORREIO=$CORREIO_BIN
else
  echo "== building correio (release)" >&2
  (cd "$ROOT" && cargo build --release -q -p correio --locked)
  CORREIO=$CARGO_TARGET_DIR/release/correio
fi

T=$(mktemp -d /tmp/correio-store.XXXXXX)
chmod 755 "$T"
mkdir -p "$T/res" "$T/mail" "$T/logs"
NOBODY=65534
NOGROUP=$(id -g nobody 2>/dev/null || echo 65534)
PIDS=()
stop_pid() {
  local pid=$1
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 300); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() { local p; for p in "${PIDS[@]}"; do stop_pid "$p"; done; rm -rf "$T"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_tcp() {
  for _ in $(seq 600); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1',$1),1).close()" 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || { echo "$3 exited at start" >&2; return 1; }
    sleep 0.1
  done
  echo "$3 does not listen on port $1" >&2; return 1
}
# CPU seconds (user+system) of the process trees under the PIDs given, with the reaped
# children of each root.
tree_cpu() {
  python3 - "$@" <<'PY'
import os, sys
hz = os.sysconf("SC_CLK_TCK")
roots = {int(p) for p in sys.argv[1:]}
procs = {}
for d in os.listdir("/proc"):
    if not d.isdigit():
        continue
    try:
        with open(f"/proc/{d}/stat") as f:
            s = f.read()
    except OSError:
        continue
    rest = s[s.rindex(")") + 2:].split()
    procs[int(d)] = (int(rest[1]), [int(x) for x in rest[11:15]])
def under(pid):
    seen = set()
    while pid in procs and pid not in seen:
        if pid in roots:
            return pid
        seen.add(pid)
        pid = procs[pid][0]
    return None
total = 0
for pid, (ppid, (ut, st, cut, cst)) in procs.items():
    r = under(pid)
    if r is None:
        continue
    total += ut + st
    if pid == r:
        total += cut + cst
print(total / hz)
PY
}

# ---------------------------------------------------------------- PostgreSQL
echo "== PostgreSQL ($PGBIN)" >&2
mkdir -p "$T/pg/data" "$T/pg/run"
chmod 700 "$T/pg/data"; chmod 755 "$T/pg" "$T/pg/run"
chown -R "$NOBODY:$NOGROUP" "$T/pg"
(cd "$T/pg" && setpriv --reuid="$NOBODY" --regid="$NOGROUP" --clear-groups -- env HOME="$T/pg" LC_ALL=C \
   "$PGBIN/initdb" --pgdata "$T/pg/data" --username postgres --auth=trust --encoding=UTF8 \
   --locale=C --no-instructions >"$T/logs/initdb.log" 2>&1) || { cat "$T/logs/initdb.log" >&2; exit 1; }
printf 'local all postgres trust\nlocal all all scram-sha-256\nhost all all 127.0.0.1/32 scram-sha-256\n' \
  > "$T/pg/data/pg_hba.conf"
chown "$NOBODY:$NOGROUP" "$T/pg/data/pg_hba.conf"
PG_PORT=$(free_port)
(cd "$T/pg" && exec setpriv --reuid="$NOBODY" --regid="$NOGROUP" --clear-groups -- \
   env HOME="$T/pg" LC_ALL=C "$PGBIN/postgres" -D "$T/pg/data" -p "$PG_PORT" \
   -c listen_addresses=127.0.0.1 -c unix_socket_directories="$T/pg/run" \
   -c shared_buffers=256MB -c max_connections=200 -c logging_collector=off \
   -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track_utility=on \
   -c ssl=off -c password_encryption=scram-sha-256 >"$T/logs/postgres.log" 2>&1) &
PG_PID=$!; PIDS+=("$PG_PID")
wait_tcp "$PG_PORT" "$PG_PID" PostgreSQL || { cat "$T/logs/postgres.log" >&2; exit 1; }
psql_admin() { "$PGBIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$T/pg/run" -p "$PG_PORT" -U postgres "$@"; }
for _ in $(seq 100); do psql_admin -d postgres -c 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.1; done
DB_PASS=bench-$$
psql_admin -d postgres -c "CREATE ROLE correio LOGIN PASSWORD '$DB_PASS';" \
  -c "CREATE DATABASE mail OWNER correio;" >/dev/null
psql_admin -d mail -c "CREATE EXTENSION pg_stat_statements;" >/dev/null
PG_URL="postgres://correio:$DB_PASS@127.0.0.1:$PG_PORT/mail"

S3_TOML=
if [ "$BODIES" = s3 ]; then
  S3S=${S3S_FS:-$(command -v s3s-fs || echo "$HOME/.cargo/bin/s3s-fs")}
  [ -x "$S3S" ] || { echo "missing s3s-fs (cargo install s3s-fs --features binary --version 0.14.1)" >&2; exit 1; }
  mkdir -p "$T/s3/correio-bench"
  S3_PORT=$(free_port)
  "$S3S" --host 127.0.0.1 --port "$S3_PORT" --access-key BENCHKEY --secret-key BENCHSECRET \
    "$T/s3" >"$T/logs/s3.log" 2>&1 &
  S3_PID=$!; PIDS+=("$S3_PID")
  wait_tcp "$S3_PORT" "$S3_PID" s3s-fs
  S3_TOML="bodies = \"s3://correio-bench/mail\"
s3_endpoint = \"http://127.0.0.1:$S3_PORT\"
s3_allow_http = true
s3_access_key_id = \"BENCHKEY\"
s3_secret_access_key = \"BENCHSECRET\"
small_bodies_in_database = $SMALL"
fi

# ---------------------------------------------------------------- mail and users
echo "== writing $USERS x $MESSAGES x $SIZE B and $BIG x 1 KB (Maildir)" >&2
python3 - "$T" "$USERS" "$MESSAGES" "$SIZE" "$BIG" <<'PY'
import os, sys
root, users, n, size, big = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
import base64, random
rng = random.Random(14)
def body(tag, i, size):
    # Text, then a base64 part of random bytes (as an attachment): compresses about as
    # badly as real mail, so neither store gets an easy ride from compression.
    head = f"From: bench@example.org\nTo: {tag}@example.org\nSubject: {tag} {i}\nMessage-ID: <{tag}.{i}@bench>\n\n"
    line = "The quick brown fox jumps over the lazy dog, again and again, 0123456789.\n"
    b = head
    while len(b) + len(line) <= size // 3:
        b += line
    while len(b) + 77 <= size:
        b += base64.b64encode(rng.randbytes(57)).decode() + "\n"
    return (b + "x" * (size - len(b) - 1) + "\n").encode()
def maildir(name, count, size):
    d = os.path.join(root, "mail", name)
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
    for i in range(count):
        with open(os.path.join(d, "new", f"{1700000000 + i}.M{i}P1.bench"), "wb") as f:
            f.write(body(name, i, size))
names = [f"u{i:02}" for i in range(users)]
for u in names:
    maildir(u, n, size)
maildir("big", big, 1024)
with open(os.path.join(root, "users"), "w") as f:
    for u in names + ["big"]:
        f.write(f"{u}:{{PLAIN}}pw-{u}\n")
for k in (1, 2, 3):
    for j in range(k):
        with open(os.path.join(root, f"bench-users-{k}-{j}"), "w") as f:
            for u in names[j::k]:
                f.write(f"{u}:pw-{u}\n")
PY
chown -R "$NOBODY:$NOGROUP" "$T/mail"

config() {   # config NAME LOCATION PORT
  cat > "$T/$1.toml" <<EOF
data_dir = "$T/$1"
users_file = "$T/users"
mail_location = "$2"
user = "nobody"
trusted_networks = ["127.0.0.0/8"]

[listen]
pop3 = ["127.0.0.1:$3"]

[limits]
max_connections_per_ip = 1000

[store.pgsql]
kind = "postgresql"
url = "$PG_URL"
$S3_TOML
EOF
  mkdir -p "$T/$1"; chown "$NOBODY:$NOGROUP" "$T/$1"
}
M_PORT=$(free_port); config maildir "maildir:$T/mail/%u" "$M_PORT"
P_PORTS=()
for k in 1 2 3; do P_PORTS+=("$(free_port)"); config "pg$k" "pgsql:%u" "${P_PORTS[$((k-1))]}"; done

echo "== filling the PostgreSQL store (correio store migrate, UIDLs kept)" >&2
start_migrate=$SECONDS
ALL=$(cut -d: -f1 "$T/users" | grep -v '^big$' | tr '\n' ' ')
# shellcheck disable=SC2086
"$CORREIO" store migrate --config "$T/pg1.toml" --from "maildir:$T/mail/%u" $ALL >"$T/logs/migrate1.log" &
M1=$!
"$CORREIO" store migrate --config "$T/pg1.toml" --from "maildir:$T/mail/%u" big >"$T/logs/migrate2.log"
wait "$M1"
MIGRATE_S=$((SECONDS - start_migrate))
MIGRATED=$(psql_admin -d mail -c "SELECT count(*) FROM correio_message")
echo "   $MIGRATED messages in ${MIGRATE_S}s" >&2
chown -R "$NOBODY:$NOGROUP" "$T/mail"

serve() {   # serve NAME PORT -> pid in SERVE_PID
  "$CORREIO" serve --config "$T/$1.toml" >"$T/logs/$1.log" 2>&1 &
  SERVE_PID=$!; PIDS+=("$SERVE_PID")
  wait_tcp "$2" "$SERVE_PID" "correio serve $1"
}
serve maildir "$M_PORT"; M_PID=$SERVE_PID
PG_FRONT_PIDS=()
for k in 1 2 3; do serve "pg$k" "${P_PORTS[$((k-1))]}"; PG_FRONT_PIDS+=("$SERVE_PID"); done

bench() { "$CORREIO" bench "$@" --timeout 60s --json; }
statements() { psql_admin -d mail -c "SELECT coalesce(sum(calls),0) FROM pg_stat_statements WHERE query NOT ILIKE '%pg_stat_statements%'"; }

# Warm-up: every mailbox opened once on each store (the Maildir index is made).
echo "== warm-up" >&2
bench open --port "$M_PORT" --users-file "$T/bench-users-1-0" --user "big:pw-big" -c 1 --count $((USERS + 1)) >/dev/null
bench open --port "${P_PORTS[0]}" --users-file "$T/bench-users-1-0" --user "big:pw-big" -c 1 --count $((USERS + 1)) >/dev/null

# download CONFIG FRONTENDS: one bench per frontend at once; writes res/download-CONFIG-ROUND.json
download() {
  local label=$1 k=$2 round=$3 ports=() pids=() j
  if [ "$label" = maildir ]; then ports=("$M_PORT"); pids=("$M_PID"); else
    for j in $(seq 0 $((k - 1))); do ports+=("${P_PORTS[$j]}"); pids+=("${PG_FRONT_PIDS[$j]}"); done
    pids+=("$PG_PID")
    [ -z "${S3_PID:-}" ] || pids+=("$S3_PID")
  fi
  [ "$label" = maildir ] || psql_admin -d mail -c "SELECT pg_stat_statements_reset()" >/dev/null
  local per=$((USERS / k)) before after db_before=0 db_after=0
  before=$(tree_cpu "${pids[@]}")
  [ "$label" = maildir ] || db_before=$(tree_cpu "$PG_PID")
  local bpids=()
  for j in $(seq 0 $((k - 1))); do
    bench download --pipeline --port "${ports[$j]}" --users-file "$T/bench-users-$k-$j" \
      -c "$per" --count $((per * REPEAT)) --duration 300s > "$T/res/dl-$label-$k-$round-$j.json" &
    bpids+=($!)
  done
  for j in "${bpids[@]}"; do wait "$j"; done
  after=$(tree_cpu "${pids[@]}")
  [ "$label" = maildir ] || db_after=$(tree_cpu "$PG_PID")
  local st=0
  [ "$label" = maildir ] || st=$(statements)
  python3 - "$T/res" "$label" "$k" "$round" "$before" "$after" "$st" "$db_before" "$db_after" <<'PY'
import glob, json, sys
res, label, k, rnd, before, after, st, db_before, db_after = sys.argv[1:]
runs = [json.load(open(f)) for f in sorted(glob.glob(f"{res}/dl-{label}-{k}-{rnd}-*.json"))]
msgs = sum(r["messages"] for r in runs)
sessions = sum(r["sessions"] for r in runs)
failed = sum(r["sessions_failed"] + r["errors"] for r in runs)
wall = max(r["elapsed_s"] for r in runs)
cpu = float(after) - float(before)
out = {"store": label, "frontends": int(k), "round": int(rnd), "messages": msgs,
       "sessions": sessions, "failed": failed, "wall_s": wall, "msgs_per_s": msgs / wall,
       "cpu_s": cpu, "cpu_us_per_msg": cpu / msgs * 1e6 if msgs else None,
       "db_cpu_us_per_msg": (float(db_after) - float(db_before)) / msgs * 1e6 if msgs else None,
       "statements_per_session": int(st) / sessions if sessions and label != "maildir" else None}
json.dump(out, open(f"{res}/sum-dl-{label}-{k}-{rnd}.json", "w"))
print(f"   {label} x{k}: {msgs} msgs in {wall:.2f}s = {msgs/wall:.0f}/s, {out['cpu_us_per_msg']:.0f} us CPU/msg"
      f" (PostgreSQL {out['db_cpu_us_per_msg']:.0f}), failed {failed}", file=sys.stderr)
PY
}

open_big() {   # open_big LABEL PORT ROUND
  local label=$1 port=$2 round=$3
  [ "$label" = maildir ] || psql_admin -d mail -c "SELECT pg_stat_statements_reset()" >/dev/null
  bench open --port "$port" --user "big:pw-big" -c 1 --count 10 --duration 300s > "$T/res/open-$label-$round.json"
  local st=0
  [ "$label" = maildir ] || st=$(statements)
  python3 - "$T/res/open-$label-$round.json" "$st" "$label" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); st = int(sys.argv[2])
print(f"   open {sys.argv[3]}: op p50 {r['op_latency']['p50_ms']:.1f} ms, session p50 {r['session_latency']['p50_ms']:.1f} ms,"
      f" {st / max(r['sessions'], 1):.1f} statements/session", file=sys.stderr)
r["statements_per_session"] = st / max(r["sessions"], 1) if sys.argv[3] != "maildir" else None
json.dump(r, open(sys.argv[1], "w"))
PY
}

for round in $(seq 1 "$ROUNDS"); do
  echo "== round $round" >&2
  download maildir 1 "$round"
  for k in 1 2 3; do download pg "$k" "$round"; done
  open_big maildir "$M_PORT" "$round"
  open_big pg "${P_PORTS[0]}" "$round"
done

# ---------------------------------------------------------------- the table
python3 - "$T/res" "$USERS" "$MESSAGES" "$SIZE" "$BIG" "$BODIES" "$ROUNDS" \
  "$("$PGBIN/postgres" --version | awk '{print $3}')" "$MIGRATED" "$MIGRATE_S" "$ARGS_SEEN" \
  "${JSON_OUT:-}" "${RESULTS:-}" "$REPEAT" "$SMALL" <<'PY'
import glob, json, statistics, sys, datetime, platform, os
res, users, n, size, big, bodies, rounds, pgv, migrated, migrate_s, args, json_out, results, repeat, small = sys.argv[1:]
if bodies == "s3" and int(small) > 0:
    bodies = f"s3 (up to {small} B in PostgreSQL)"
med = statistics.median
def dl(store, k):
    rs = [json.load(open(f)) for f in glob.glob(f"{res}/sum-dl-{store}-{k}-*.json")]
    return {"msgs_per_s": med(r["msgs_per_s"] for r in rs),
            "cpu_us_per_msg": med(r["cpu_us_per_msg"] for r in rs),
            "db_cpu_us_per_msg": med(r["db_cpu_us_per_msg"] for r in rs),
            "statements_per_session": med(r["statements_per_session"] for r in rs) if store != "maildir" else None,
            "failed": sum(r["failed"] for r in rs)}
def op(store):
    rs = [json.load(open(f)) for f in glob.glob(f"{res}/open-{store}-*.json")]
    return {"op_p50_ms": med(r["op_latency"]["p50_ms"] for r in rs),
            "session_p50_ms": med(r["session_latency"]["p50_ms"] for r in rs),
            "statements_per_session": med(r["statements_per_session"] for r in rs) if store != "maildir" else None,
            "errors": sum(r["errors"] + r["sessions_failed"] for r in rs)}
m = dl("maildir", 1)
rows = [("Maildir, 1 frontend", m)] + [(f"PostgreSQL ({bodies} bodies), {k} frontend{'s' if k > 1 else ''}", dl("pg", k)) for k in (1, 2, 3)]
om, op_ = op("maildir"), op("pg")
lines = []
now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
lines.append(f"## Shared PostgreSQL store vs Maildir (bench/store_compare.sh, {now})\n")
lines.append(f"`bench/store_compare.sh {args}` — {platform.machine()}, {os.cpu_count()} cores, PostgreSQL {pgv} "
             f"(fsync on, synchronous_commit on), bodies in {bodies}; {users} users x {n} messages x {size} B, each mailbox downloaded {repeat} times per run, "
             f"user `big` with {big} x 1 KB; {rounds} round(s), medians. All processes on the same cores. "
             f"Filling the store: `correio store migrate` of {migrated} messages in {migrate_s} s.\n")
lines.append("| download (pipelined) | messages/s | vs Maildir | server CPU µs/message (frontends + PostgreSQL) | of which PostgreSQL | vs Maildir | statements/session | failed |")
lines.append("|---|---|---|---|---|---|---|---|")
for name, r in rows:
    st = f"{r['statements_per_session']:.1f}" if r["statements_per_session"] is not None else "—"
    db = f"{r['db_cpu_us_per_msg']:.0f}" if name.startswith("PostgreSQL") else "—"
    lines.append(f"| {name} | {r['msgs_per_s']:.0f} | {r['msgs_per_s']/m['msgs_per_s']:.2f} | {r['cpu_us_per_msg']:.0f} | {db} | "
                 f"{r['cpu_us_per_msg']/m['cpu_us_per_msg']:.2f} | {st} | {r['failed']} |")
lines.append("")
lines.append(f"| open of {big} messages, warm | login + open + STAT+UIDL+LIST + QUIT, p50 (session) | of which STAT+UIDL+LIST p50 | statements/session |")
lines.append("|---|---|---|---|")
lines.append(f"| Maildir | {om['session_p50_ms']:.1f} ms | {om['op_p50_ms']:.1f} ms | — |")
lines.append(f"| PostgreSQL | {op_['session_p50_ms']:.1f} ms ({op_['session_p50_ms']/om['session_p50_ms']:.2f}x) | {op_['op_p50_ms']:.1f} ms ({op_['op_p50_ms']/om['op_p50_ms']:.2f}x) | {op_['statements_per_session']:.1f} |")
text = "\n".join(lines) + "\n"
print(text)
if json_out:
    json.dump({"download": dict(rows), "open": {"maildir": om, "pg": op_}}, open(json_out, "w"), indent=1)
if results:
    with open(results, "a") as f:
        f.write("\n" + text)
PY

#!/usr/bin/env bash
# Correio vs Dovecot, side by side in one run, on loopback, as ratios (see bench/README.md).
#
#   bench/compare.sh [--quick] [--rounds N] [--json FILE] [--skip-fetch]
#
# One command from a clean checkout: builds `correio` (release), creates a corpus in a
# temporary directory, starts `correio serve` and Dovecot's POP3 server on the same
# Maildirs and the same passwd-file ({PLAIN} scheme for both, pop3_lock_session = yes),
# runs each scenario alternating A B A B with `correio bench`, and prints every figure
# as a ratio Correio/Dovecot with the target from issue 6, the server CPU time per
# message and per MB (/proc/PID/stat of the whole process tree: for Dovecot master,
# auth, pop3-login, every pop3 process and whatever else it spawned), and the loopback
# limit; also (issue #15) a slow poplib client (bench/poplib_client.py, server CPU from
# bench/proc_cpu.py) and TLS logins with each server's default password scheme. Then
# bench/fetch_compare.sh times `correio fetch`, mpop and fetchmail, on
# loopback and again over a link with 50 ms more round-trip time.
#
# Needs (Debian packages): dovecot-pop3d, mpop, fetchmail, python3, iproute2; cargo.
# Everything is bounded (each bench run by --count and --duration, each I/O by a
# timeout); the daemons it started are stopped by PID and the temporary directory and
# network namespace are removed on any exit. Full run ~10-15 min, --quick ~4 min.
set -euo pipefail

QUICK=0
ROUNDS=
JSON_OUT=
SKIP_FETCH=0
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --rounds) ROUNDS=$2; shift ;;
    --json) JSON_OUT=$2; shift ;;
    --skip-fetch) SKIP_FETCH=1 ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

if [ "$QUICK" = 1 ]; then
  : "${ROUNDS:=1}"; BIG_USERS=2; IDLE_CORREIO=2000; IDLE_DOVECOT=200; HUGE=50000
  STORM_SECS=5s; FETCH_ROUNDS=1
  POPLIB_SMALL_USERS=4; POPLIB_SESSIONS=5; CPU_SCALE=1
else
  : "${ROUNDS:=2}"; BIG_USERS=4; IDLE_CORREIO=10000; IDLE_DOVECOT=400; HUGE=50000
  STORM_SECS=10s; FETCH_ROUNDS=3
  POPLIB_SMALL_USERS=8; POPLIB_SESSIONS=5
  # Server CPU comes from /proc in 10 ms ticks: the runs whose CPU per message is a
  # target are this many times longer, so each measures a second or more of CPU.
  CPU_SCALE=4
fi
TLS_USERS=20
# For trying the script itself quickly (figures from such runs mean nothing).
HUGE=${CB_HUGE:-$HUGE}; IDLE_CORREIO=${CB_IDLE:-$IDLE_CORREIO}
IDLE_DOVECOT=$(( IDLE_DOVECOT < IDLE_CORREIO ? IDLE_DOVECOT : IDLE_CORREIO ))
SMALL_USERS=20
IDLE_USERS=$IDLE_CORREIO

ROOT=$(cd "$(dirname "$0")/.." && pwd)
for p in /usr/sbin/dovecot /usr/lib/dovecot/pop3 python3 cargo; do
  command -v "$p" >/dev/null || [ -x "$p" ] || {
    echo "missing $p (apt-get install dovecot-pop3d python3; Rust toolchain for cargo)" >&2; exit 1; }
done
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
# An idle Correio session holds two descriptors (socket, maildrop lock): fit the
# idle run under the limit rather than watch its last logins fail with EMFILE.
FD_ROOM=$(( ($(ulimit -n) - 1000) / 2 ))
if [ "$IDLE_CORREIO" -gt "$FD_ROOM" ]; then
  echo "open files limit $(ulimit -n): idle run reduced to $FD_ROOM sessions" >&2
  IDLE_CORREIO=$FD_ROOM
fi

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
echo "== building correio (release)" >&2
(cd "$ROOT" && cargo build --release -q -p correio)
CORREIO=$CARGO_TARGET_DIR/release/correio

T=$(mktemp -d /tmp/correio-compare.XXXXXX)
chmod 755 "$T"
CORREIO_PID=
CORREIO2_PID=
DOVECOT_PID=
NETNS=
cleanup() {
  [ -n "$CORREIO_PID" ] && kill "$CORREIO_PID" 2>/dev/null
  [ -n "$CORREIO2_PID" ] && kill "$CORREIO2_PID" 2>/dev/null
  [ -n "$DOVECOT_PID" ] && kill "$DOVECOT_PID" 2>/dev/null
  [ -n "$NETNS" ] && ip netns del "$NETNS" 2>/dev/null
  wait 2>/dev/null || true
  rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
C_POP3=$(free_port); C_POP3S=$(free_port); C_LMTP=$(free_port)
D_POP3=$(free_port); D_POP3S=$(free_port)
C2_POP3=$(free_port); C2_POP3S=$(free_port); C2_LMTP=$(free_port)

echo "== corpus in $T" >&2
mkdir -p "$T/mail" "$T/home" "$T/res" "$T/correio-data"
python3 - "$T" "$SMALL_USERS" "$BIG_USERS" "$HUGE" "$IDLE_USERS" <<'PY'
import os, random, sys
root, n_small, n_big, huge, n_idle = sys.argv[1], *map(int, sys.argv[2:])
mail = os.path.join(root, "mail")
rng = random.Random(6)
words = ("the quarterly figures are attached and we should meet on thursday to review "
         "them together with the budget for next year").split()

def message(i, size):
    head = (f"From: sender{i}@example.org\nTo: bench@example.org\nSubject: bench {i}\n"
            f"Message-ID: <{i}.{size}@bench>\nDate: Sun, 22 Nov 2026 04:00:00 +0000\n\n")
    out, n = [head], len(head)
    while n < size:
        line = " ".join(rng.choice(words) for _ in range(11)) + "\n"
        if rng.random() < 0.02:
            line = "." + line          # some lines need dot-stuffing
        out.append(line); n += len(line)
    data = "".join(out)[:size]
    if not data.endswith("\n"):
        data = data[:-1] + "\n"
    return data.encode()

def maildir(user):
    d = os.path.join(mail, user)
    for s in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(d, s), exist_ok=True)
    return d

def fill(user, count, size, tags, vary=False):
    d = maildir(user)
    cache = {}
    for i in range(count):
        sz = size if not vary else size + rng.randrange(-size // 2, size // 2)
        key = sz if not vary else None
        data = cache.get(key) if key else None
        if data is None:
            data = message(i, sz)
            if key: cache[key] = data
        base = f"{1700000000 + i}.M{i}P{os.getpid()}.bench"
        if tags:
            base += f",S={len(data)},W={len(data) + data.count(10)}"
        with open(os.path.join(d, "cur", base + ":2,S"), "wb") as f:
            f.write(data)

def fill_wire(user, count, size):
    """The 1 MB messages as `line_ends = "crlf"` stores them: CRLF, no line starting
    with a dot (those are the ones stored in wire form), named as Correio names them."""
    d = maildir(user)
    data = message(0, size).replace(b"\n.", b"\n,")
    data = data.replace(b"\n", b"\r\n")[:size]
    data = data[:data.rindex(b"\r\n") + 2]
    for i in range(count):
        base = f"{1700000000 + i}.M{i}P{os.getpid()}.bench,S={len(data)},W={len(data)},D=0"
        path = os.path.join(d, "cur", base + ":2,S")
        with open(path, "wb") as f:
            f.write(data)
        # Written when the name says it was delivered, as a delivery leaves it.
        os.utime(path, (1700000000 + i, 1700000000 + i))

users = []
for u in range(n_small):
    fill(f"small{u:02}", 500, 4096, True); users.append(f"small{u:02}")
for u in range(n_big):
    fill(f"big{u}", 50, 1 << 20, True); users.append(f"big{u}")
for u in range(n_big):
    fill_wire(f"bigw{u}", 50, 1 << 20); users.append(f"bigw{u}")
fill("hugew", huge, 2048, True, vary=True); users.append("hugew")
fill("hugenw", huge, 2048, False, vary=True); users.append("hugenw")
for u in range(n_idle):
    maildir(f"idle{u:05}"); users.append(f"idle{u:05}")
with open(os.path.join(root, "users"), "w") as f:
    for u in users:
        f.write(f"{u}:{{PLAIN}}pw-{u}:65534:65534::{root}/home/{u}::\n")
def creds(path, names):
    with open(os.path.join(root, path), "w") as f:
        for u in names:
            f.write(f"{u}:pw-{u}\n")
creds("u-small", [u for u in users if u.startswith("small")])
creds("u-big", [u for u in users if u.startswith("big") and not u.startswith("bigw")])
creds("u-bigw", [u for u in users if u.startswith("bigw")])
creds("u-hugew", ["hugew"]); creds("u-hugenw", ["hugenw"])
creds("u-idle", [u for u in users if u.startswith("idle")])
PY
# Logins with TLS and each server's default password scheme: 20 users per server,
# hashed by what `correio user add` writes (Correio, in the shared passwd-file) and by
# what `doveadm pw` writes with no -s (Dovecot, in a second passdb/userdb file).
: >"$T/users-dovecot-default"; : >"$T/u-ctls"; : >"$T/u-dtls"
for i in $(seq -w 0 $((TLS_USERS - 1))); do
  for u in ctls$i dtls$i; do
    mkdir -p "$T/mail/$u/cur" "$T/mail/$u/new" "$T/mail/$u/tmp"
  done
  rm -f "$T/users-scratch"
  printf 'pw-ctls%s\n' "$i" | "$CORREIO" user add --users "$T/users-scratch" --password-stdin "ctls$i" >/dev/null
  hash=$(cut -d: -f2 "$T/users-scratch")
  echo "ctls$i:$hash:65534:65534::$T/home/ctls$i::" >>"$T/users"
  echo "ctls$i:pw-ctls$i" >>"$T/u-ctls"
  hash=$(doveadm pw -p "pw-dtls$i" 2>/dev/null) || hash=
  echo "dtls$i:$hash:65534:65534::$T/home/dtls$i::" >>"$T/users-dovecot-default"
  echo "dtls$i:pw-dtls$i" >>"$T/u-dtls"
done
rm -f "$T/users-scratch"
C_SCHEME=$(grep -m1 '^ctls' "$T/users" | cut -d: -f2 | sed 's/}.*/}/')
D_SCHEME=$(head -1 "$T/users-dovecot-default" | cut -d: -f2 | cut -c1-14)
echo "   default schemes: correio $C_SCHEME, dovecot $D_SCHEME..." >&2
chmod 644 "$T/users" "$T/users-dovecot-default"
chown -R 65534:65534 "$T/mail" "$T/home"
"$CORREIO" cert --data "$T/correio-data" --host localhost >/dev/null 2>&1 ||
  { echo "correio cert failed" >&2; exit 1; }
CERT=$(find "$T/correio-data" -name cert.pem | head -1)
KEY=$(find "$T/correio-data" -name key.pem | head -1)
chmod 644 "$CERT" "$KEY"

cat > "$T/correio.toml" <<TOML
data_dir = "$T/correio-data"
users_file = "$T/users"
mail_location = "maildir:$T/mail/%u"
user = "nobody"
group = "nogroup"
[listen]
pop3 = ["127.0.0.1:$C_POP3"]
pop3s = ["127.0.0.1:$C_POP3S"]
lmtp = "127.0.0.1:$C_LMTP"
[tls]
cert = "$CERT"
key = "$KEY"
[limits]
max_connections = 30000
max_connections_per_ip = 30000
TOML

# A second Correio for the TLS-login scenario only: the same, with the authentication
# cache off (Correio's default has it on, Dovecot's has none), so that the hash is
# verified on every login as Dovecot does.
mkdir -p "$T/correio-data-nocache"
sed -e "s|^data_dir = .*|data_dir = \"$T/correio-data-nocache\"|" \
    -e "s|127.0.0.1:$C_POP3\"|127.0.0.1:$C2_POP3\"|" -e "s|127.0.0.1:$C_POP3S\"|127.0.0.1:$C2_POP3S\"|" \
    -e "s|127.0.0.1:$C_LMTP\"|127.0.0.1:$C2_LMTP\"|" "$T/correio.toml" >"$T/correio-nocache.toml"
printf '[auth]\ncache_size = 0\n' >>"$T/correio-nocache.toml"

# Dovecot in its high-performance login mode (login processes serve many
# connections), so it is measured at its best; one pop3 process per session, as always.
cat > "$T/dovecot.conf" <<CONF
base_dir = $T/dovecot-run
state_dir = $T/dovecot-state
log_path = $T/dovecot.log
protocols = pop3
listen = 127.0.0.1
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:$T/mail/%u
pop3_lock_session = yes
first_valid_uid = 1
mail_privileged_group =
default_login_user = dovenull
default_internal_user = dovecot
mail_max_userip_connections = 100000
default_process_limit = 20000
default_client_limit = 40000
default_vsz_limit = 0
ssl = yes
ssl_cert = <$CERT
ssl_key = <$KEY
passdb {
  driver = passwd-file
  args = scheme=PLAIN $T/users
}
userdb {
  driver = passwd-file
  args = $T/users
}
passdb {
  driver = passwd-file
  args = $T/users-dovecot-default
}
userdb {
  driver = passwd-file
  args = $T/users-dovecot-default
}
service pop3-login {
  inet_listener pop3 {
    address = 127.0.0.1
    port = $D_POP3
  }
  inet_listener pop3s {
    address = 127.0.0.1
    port = $D_POP3S
    ssl = yes
  }
  service_count = 0
  process_min_avail = 2
}
service pop3 {
  process_limit = 20000
}
CONF

wait_port() {
  for _ in $(seq 200); do
    python3 -c "import socket,sys; s=socket.create_connection(('127.0.0.1',$1),1); sys.exit(0 if s.recv(3)==b'+OK' else 1)" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing answers on port $1" >&2; return 1
}
"$CORREIO" serve --config "$T/correio.toml" 2>"$T/correio.log" &
CORREIO_PID=$!
/usr/sbin/dovecot -F -c "$T/dovecot.conf" 2>"$T/dovecot.stderr" &
DOVECOT_PID=$!
wait_port "$C_POP3" || { cat "$T/correio.log" >&2; exit 1; }
wait_port "$D_POP3" || { cat "$T/dovecot.stderr" "$T/dovecot.log" >&2; exit 1; }

# bench LABEL SERVER(correio|dovecot) ROUND ARGS...: one run, JSON kept in $T/res.
bench() {
  local name=$1 server=$2 round=$3; shift 3
  local port pid
  if [ "$server" = correio ]; then pid=$CORREIO_PID; else pid=$DOVECOT_PID; fi
  case " $* " in
    *" --tls implicit "*) if [ "$server" = correio ]; then port=$C_POP3S; else port=$D_POP3S; fi ;;
    *) if [ "$server" = correio ]; then port=$C_POP3; else port=$D_POP3; fi ;;
  esac
  if [ "$server" = correio-nocache ]; then
    pid=$CORREIO2_PID
    case " $* " in *" --tls implicit "*) port=$C2_POP3S ;; *) port=$C2_POP3 ;; esac
  fi
  local out="$T/res/$name.$server.$round.json"
  if "$CORREIO" bench "$@" --port "$port" --server-pid "$pid" --label "$server" --json >"$out" 2>"$T/res/err"; then :; else
    echo "   ($name $server: exit $?; $(head -c 300 "$T/res/err"))" >&2
  fi
  python3 - "$out" "$name" "$server" <<'PY' >&2
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except Exception:
    print(f"   {sys.argv[2]:<14} {sys.argv[3]:<8} no result"); sys.exit(0)
s = r.get("server") or {}
lat = r.get("session_latency") or {}
print(f"   {sys.argv[2]:<14} {sys.argv[3]:<8} {r['messages_per_s']:>9.0f} msg/s {r['mb_per_s']:>8.1f} MB/s "
      f"{r['sessions_per_s']:>8.1f} sess/s  cpu {s.get('cpu_s', 0):.2f}s  "
      f"session p50 {lat.get('p50_ms', 0):.1f} ms  errors {r['errors']}")
PY
}
# poplib LABEL SERVER ROUND USERS_FILE WORKERS SESSIONS_PER_USER: bench/poplib_client.py
# (Python's poplib, one RETR at a time read line by line) against SERVER's POP3 port,
# the server's CPU over the run from bench/proc_cpu.py before and after.
poplib() {
  local name=$1 server=$2 round=$3 users=$4 workers=$5 sessions=$6 port pid
  if [ "$server" = correio ]; then pid=$CORREIO_PID; port=$C_POP3; else pid=$DOVECOT_PID; port=$D_POP3; fi
  local out="$T/res/$name.$server.$round.json" c0 c1
  c0=$(python3 "$ROOT/bench/proc_cpu.py" "$pid") || c0=
  timeout 400 python3 "$ROOT/bench/poplib_client.py" 127.0.0.1 "$port" "$users" "$workers" "$sessions" \
    --timeout 30 --time-limit 300 >"$out.raw" 2>"$T/res/err" ||
    echo "   ($name $server: exit $?; $(head -c 300 "$T/res/err"))" >&2
  c1=$(python3 "$ROOT/bench/proc_cpu.py" "$pid") || c1=
  python3 - "$out.raw" "$out" "$name" "$server" "$c0" "$c1" <<'PY' >&2
import json, sys
raw, out, name, server, c0, c1 = sys.argv[1:7]
try:
    r = json.load(open(raw))
except Exception:
    print(f"   {name:<14} {server:<8} no result"); sys.exit(0)
cpu = float(c1) - float(c0) if c0 and c1 else None
r["server"] = dict(cpu_s=cpu,
                   cpu_us_per_message=cpu * 1e6 / r["messages"] if cpu is not None and r["messages"] else None,
                   cpu_ms_per_mb=cpu * 1e3 / (r["bytes"] / 1e6) if cpu is not None and r["bytes"] else None)
json.dump(r, open(out, "w"))
print(f"   {name:<14} {server:<8} {r['messages']:>6} msgs {r['messages_per_s']:>8.0f} msg/s "
      f"{r['wall_s']:>6.2f} s  cpu {cpu if cpu is not None else float('nan'):.2f}s  "
      f"{(r['server']['cpu_us_per_message'] or 0):.0f} us/msg  errors {r['errors']}"
      + (f" ({r['error_sample']})" if r.get("error_sample") else ""))
PY
  rm -f "$out.raw"
}
# Forget every index either server built for a Maildir (for first-open runs).
reset_indexes() {
  find "$T/mail/$1" -maxdepth 1 -type f \( -name 'dovecot*' -o -name 'correio-index*' \) -delete
}

echo "== warm-up (page cache, indexes of the download corpora)" >&2
for s in correio dovecot; do
  bench warmup $s 0 download --pipeline --users-file "$T/u-small" -c 20 --count 20 --duration 60s
  bench warmup $s 0 download --pipeline --users-file "$T/u-big" -c "$BIG_USERS" --count "$BIG_USERS" --duration 60s
  bench warmup $s 0 download --pipeline --users-file "$T/u-bigw" -c "$BIG_USERS" --count "$BIG_USERS" --duration 60s
  bench warmup $s 0 open --users-file "$T/u-hugew" -c 1 --count 1 --duration 120s --timeout 120s
done

head -n "$POPLIB_SMALL_USERS" "$T/u-small" >"$T/u-poplib-small"
"$CORREIO" serve --config "$T/correio-nocache.toml" 2>"$T/correio-nocache.log" &
CORREIO2_PID=$!
wait_port "$C2_POP3" || { cat "$T/correio-nocache.log" >&2; exit 1; }
for r in $(seq "$ROUNDS"); do
  echo "== round $r of $ROUNDS" >&2
  for s in correio dovecot; do
    bench dl4k-pipe $s "$r" download --pipeline --users-file "$T/u-small" -c 20 --count $((40 * CPU_SCALE)) --duration 120s
  done
  for s in correio dovecot; do
    bench dl4k-tls $s "$r" download --pipeline --tls implicit --insecure --users-file "$T/u-small" -c 20 --count $((40 * CPU_SCALE)) --duration 120s
  done
  for s in correio dovecot; do
    bench dl4k-seq $s "$r" download --users-file "$T/u-small" -c 20 --count 20 --duration 60s
  done
  for s in correio dovecot; do
    bench dl1m $s "$r" download --pipeline --users-file "$T/u-big" -c "$BIG_USERS" --count $((BIG_USERS * 2 * CPU_SCALE)) --duration 120s
  done
  for s in correio dovecot; do
    bench dl1m-wire $s "$r" download --pipeline --users-file "$T/u-bigw" -c "$BIG_USERS" --count $((BIG_USERS * 2 * CPU_SCALE)) --duration 120s
  done
  for s in correio dovecot; do
    bench open-warm $s "$r" open --users-file "$T/u-hugew" -c 1 --count 5 --duration 120s --timeout 120s
  done
  for s in correio dovecot; do
    reset_indexes hugenw
    bench open-first $s "$r" open --users-file "$T/u-hugenw" -c 1 --count 1 --duration 120s --timeout 120s
  done
  for s in correio dovecot; do
    bench login-storm $s "$r" login-storm --users-file "$T/u-idle" -c 20 --duration "$STORM_SECS"
  done
  for s in correio dovecot; do
    poplib poplib4k $s "$r" "$T/u-poplib-small" "$POPLIB_SMALL_USERS" $((POPLIB_SESSIONS * CPU_SCALE))
  done
  for s in correio dovecot; do
    poplib poplib1m $s "$r" "$T/u-big" "$BIG_USERS" $((2 * CPU_SCALE))
  done
  for s in correio dovecot; do
    poplib poplib1m-wire $s "$r" "$T/u-bigw" "$BIG_USERS" $((2 * CPU_SCALE))
  done
  for s in correio dovecot correio-nocache; do
    if [ $s = dovecot ]; then u=$T/u-dtls; else u=$T/u-ctls; fi
    bench login-tls-default $s "$r" login-storm --tls implicit --insecure --users-file "$u" -c "$TLS_USERS" --duration "$STORM_SECS"
  done
done

echo "== mixed RETR+DELE with LMTP deliveries (correio; Dovecot's LMTP is not installed)" >&2
bench mixed correio 1 mixed --users-file "$T/u-small" -c 10 --lmtp "127.0.0.1:$C_LMTP" --rcpt-domain localhost --duration 10s

echo "== idle sessions held" >&2
bench idle correio 1 idle --users-file "$T/u-idle" -c "$IDLE_CORREIO" --duration 30s --noop-every 10s
bench idle dovecot 1 idle --users-file "$T/u-idle" -c "$IDLE_DOVECOT" --duration 30s --noop-every 10s

echo "== this machine's limits" >&2
"$CORREIO" bench --self-test -c 20 --count 40 --duration 60s --json >"$T/res/selftest.json" || true
DL4K_BYTES=$(python3 -c "import json; print(json.load(open('$T/res/dl4k-pipe.correio.1.json'))['bytes'])" 2>/dev/null || echo 83400000)
DL1M_BYTES=$(python3 -c "import json; print(json.load(open('$T/res/dl1m.correio.1.json'))['bytes'])" 2>/dev/null || echo 400000000)
"$CORREIO" bench --loopback "$DL4K_BYTES" -c 20 --duration 60s --json >"$T/res/loopback4k.json" || true
"$CORREIO" bench --loopback "$DL1M_BYTES" -c "$BIG_USERS" --duration 60s --json >"$T/res/loopback1m.json" || true

# Stop the servers before the fetch comparison (it starts its own Dovecot).
kill "$CORREIO_PID" "$DOVECOT_PID" "$CORREIO2_PID" 2>/dev/null || true
wait "$CORREIO_PID" "$DOVECOT_PID" "$CORREIO2_PID" 2>/dev/null || true
CORREIO_PID= ; DOVECOT_PID= ; CORREIO2_PID=

FETCH_LAN=; FETCH_WAN=; FETCH_WAN_TLS=
if [ "$SKIP_FETCH" = 0 ]; then
  echo "== correio fetch vs mpop vs fetchmail, 500 messages, loopback" >&2
  FETCH_LAN=$("$ROOT/bench/fetch_compare.sh" 500 "$FETCH_ROUNDS" | tee -a /dev/stderr | awk '$1=="mean"{print $2, $3, $4}') || true
  echo "== the same with 50 ms more round-trip time" >&2
  # Preferred: a network namespace of our own whose loopback delays every packet by
  # 25 ms (netem; each direction crosses lo once, so +50 ms round trip), with the
  # whole comparison (Dovecot and the three clients) inside it. Kernels without
  # sch_netem (some VMs) get fetch_compare.sh's userspace delaying proxy instead.
  NS=correio-bench-$$
  if ip netns add "$NS" 2>/dev/null; then
    NETNS=$NS
    ip netns exec "$NS" ip link set lo up
    if ip netns exec "$NS" tc qdisc add dev lo root netem delay 25ms 2>/dev/null; then
      echo "   (netem in network namespace $NS)" >&2
      FETCH_WAN=$(ip netns exec "$NS" env DELAY_MS=50 DELAY_BY_NETEM=1 "$ROOT/bench/fetch_compare.sh" 500 1 |
        tee -a /dev/stderr | awk '$1=="mean"{print $2, $3, $4}') || true
    else
      echo "   (this kernel has no netem: userspace proxy adding 25 ms each way)" >&2
      FETCH_WAN=$(DELAY_MS=50 "$ROOT/bench/fetch_compare.sh" 500 1 | tee -a /dev/stderr | awk '$1=="mean"{print $2, $3, $4}') || true
    fi
    ip netns del "$NS" 2>/dev/null || true
    NETNS=
  else
    echo "   (cannot create a network namespace: userspace proxy adding 25 ms each way)" >&2
    FETCH_WAN=$(DELAY_MS=50 "$ROOT/bench/fetch_compare.sh" 500 1 | tee -a /dev/stderr | awk '$1=="mean"{print $2, $3, $4}') || true
  fi
  # Over implicit TLS (POP3S), correio fetch and mpop only (fetchmail needs a minute
  # per run at 50 ms), through the userspace proxy: 3 rounds.
  echo "== correio fetch vs mpop, 500 messages, implicit TLS, 50 ms more round-trip time" >&2
  FETCH_WAN_TLS=$(TLS=1 TOOLS="correio mpop" DELAY_MS=50 "$ROOT/bench/fetch_compare.sh" 500 "$FETCH_ROUNDS" |
    tee -a /dev/stderr | awk '$1=="mean"{print $2, $3, "-"}') || true
fi

C_SCHEME=$C_SCHEME D_SCHEME=$D_SCHEME \
python3 - "$T/res" "$JSON_OUT" "$FETCH_LAN" "$FETCH_WAN" "$QUICK" "$ROUNDS" "$FETCH_WAN_TLS" <<'PY'
import glob, json, os, statistics, sys
res, json_out, fetch_lan, fetch_wan, quick, rounds, fetch_wan_tls = sys.argv[1:8]
runs = {}
for p in glob.glob(os.path.join(res, "*.json")):
    parts = os.path.basename(p).split(".")
    try:
        r = json.load(open(p))
    except Exception:
        continue
    if len(parts) == 4 and parts[0] != "warmup":
        runs.setdefault((parts[0], parts[1]), []).append(r)

def get(r, path):
    for k in path.split("."):
        r = (r or {}).get(k)
    return r

def mean(name, server, path):
    vals = [get(r, path) for r in runs.get((name, server), [])]
    vals = [v for v in vals if isinstance(v, (int, float))]
    return statistics.mean(vals) if vals else None

rows = []
def row(figure, name, path, unit, target=None, better="higher", absolute=None, c_server="correio"):
    c, d = mean(name, c_server, path), mean(name, "dovecot", path)
    ratio = c / d if c is not None and d not in (None, 0) else None
    met = None
    if target is not None and ratio is not None:
        met = ratio >= target if better == "higher" else ratio <= target
    if absolute is not None and c is not None:
        met = c <= absolute
    rows.append(dict(figure=figure, scenario=name, metric=path, unit=unit, correio=c, dovecot=d,
                     ratio=ratio, target=(f"{'>=' if better == 'higher' else '<='} {target:.3g}x"
                                          if target is not None else
                                          (f"<= {absolute} {unit}" if absolute is not None else "")),
                     met=met))

row("server CPU per 4 KB message", "dl4k-pipe", "server.cpu_us_per_message", "us", 1/3, "lower")
row("server CPU per 1 MB message", "dl1m", "server.cpu_us_per_message", "us", 1/3, "lower")
row("server CPU per MB (1 MB messages)", "dl1m", "server.cpu_ms_per_mb", "ms")
row("20 x 500 x 4 KB pipelined, msg/s", "dl4k-pipe", "messages_per_s", "msg/s", 2)
row("20 x 500 x 4 KB pipelined, implicit TLS, msg/s", "dl4k-tls", "messages_per_s", "msg/s", 2)
row("server CPU per 4 KB message, TLS", "dl4k-tls", "server.cpu_us_per_message", "us")
row("20 x 500 x 4 KB one RETR at a time, msg/s", "dl4k-seq", "messages_per_s", "msg/s")
row("1 MB messages pipelined, MB/s", "dl1m", "mb_per_s", "MB/s")
row("server CPU per 1 MB message stored in wire form (CRLF, sendfile)", "dl1m-wire",
    "server.cpu_us_per_message", "us", 1/3, "lower")
row("1 MB messages stored in wire form, pipelined, MB/s", "dl1m-wire", "mb_per_s", "MB/s")
row("50,000 msgs warm: login+STAT+UIDL+LIST+QUIT", "open-warm", "session_latency.mean_ms", "ms", 0.3, "lower")
row("50,000 msgs first open, no size tags", "open-first", "session_latency.mean_ms", "ms", 1.0, "lower")
row("logins/s ({PLAIN} both), 20 at once", "login-storm", "sessions_per_s", "login/s", 2)
row("login latency p99 in the storm", "login-storm", "login_latency.p99_ms", "ms")
row("server CPU per 4 KB message, poplib client", "poplib4k", "server.cpu_us_per_message", "us", 1/3, "lower")
row("server CPU per 1 MB message, poplib client", "poplib1m", "server.cpu_us_per_message", "us", 1/3, "lower")
row("poplib client, 4 KB messages, msg/s", "poplib4k", "messages_per_s", "msg/s")
row("poplib client, 1 MB messages, msg/s", "poplib1m", "messages_per_s", "msg/s")
row("server CPU per 1 MB message in wire form, poplib client", "poplib1m-wire",
    "server.cpu_us_per_message", "us", 1/3, "lower")
for r in sum((runs.get(("login-tls-default", s), []) for s in ("correio", "dovecot", "correio-nocache")), []):
    cpu_us = get(r, "server.cpu_us_per_session")
    if isinstance(cpu_us, (int, float)):
        r.setdefault("server", {})["cpu_ms_per_session"] = cpu_us / 1e3
row(f"server CPU per TLS login, default scheme ({os.environ.get('C_SCHEME', '?')} vs "
    f"{os.environ.get('D_SCHEME', '?')}...)", "login-tls-default", "server.cpu_ms_per_session", "ms")
row("TLS logins/s, default scheme, 20 at once", "login-tls-default", "sessions_per_s", "login/s")
row("the same, Correio's auth cache off: server CPU per TLS login", "login-tls-default",
    "server.cpu_ms_per_session", "ms", c_server="correio-nocache")
row("the same, Correio's auth cache off: TLS logins/s", "login-tls-default", "sessions_per_s", "login/s",
    c_server="correio-nocache")
row("idle: server RSS per held session", "idle", "server.rss_kib_per_session", "KiB", absolute=32)
row("idle: server PSS per held session", "idle", "server.pss_kib_per_session", "KiB", absolute=32)
row("idle: sessions held", "idle", "held", "")
row("mixed RETR+DELE+LMTP: msg/s retrieved", "mixed", "messages_per_s", "msg/s")
row("mixed: LMTP deliveries in the run", "mixed", "deliveries", "")

def load(p):
    try:
        return json.load(open(os.path.join(res, p)))
    except Exception:
        return {}
st, lb4, lb1 = load("selftest.json"), load("loopback4k.json"), load("loopback1m.json")
extra = {
    "self_test_msgs_per_s": st.get("messages_per_s"), "self_test_mb_per_s": st.get("mb_per_s"),
    "loopback_4k_mb_per_s": lb4.get("mb_per_s"), "loopback_1m_mb_per_s": lb1.get("mb_per_s"),
}
def fetch(s):
    try:
        v = s.split()
        c, m = float(v[0].rstrip("s")), float(v[1].rstrip("s"))
        f = float(v[2].rstrip("s")) if len(v) > 2 and v[2] != "-" else None
        return dict(correio_s=c, mpop_s=m, fetchmail_s=f)
    except Exception:
        return None
extra["fetch_loopback"] = fetch(fetch_lan)
extra["fetch_delay50"] = fetch(fetch_wan)
extra["fetch_delay50_tls"] = fetch(fetch_wan_tls)

def fmt(v):
    if v is None: return "-"
    return f"{v:,.3f}" if abs(v) < 10 else f"{v:,.0f}"
print()
print(f"| figure | Correio | Dovecot | ratio C/D | target | met |")
print(f"|---|---:|---:|---:|---|---|")
for r in rows:
    met = {True: "yes", False: "NO", None: ""}[r["met"]]
    print(f"| {r['figure']} ({r['unit']}) | {fmt(r['correio'])} | {fmt(r['dovecot'])} | "
          f"{fmt(r['ratio'])} | {r['target']} | {met} |")
fl, fw = extra["fetch_loopback"], extra["fetch_delay50"]
if fl:
    ratio = fl["correio_s"] / fl["mpop_s"]
    print(f"| correio fetch 500 msgs vs mpop, wall s | {fl['correio_s']:.3f} | mpop {fl['mpop_s']:.3f} | "
          f"{ratio:.3f} | <= 0.8x | {'yes' if ratio <= 0.8 else 'NO'} |")
    print(f"| fetchmail on loopback, wall s | | {fl['fetchmail_s']:.3f} | | | |")
for label, fx in (("50 ms RTT", fw), ("50 ms RTT, implicit TLS", extra["fetch_delay50_tls"])):
    if fx:
        ratio = fx["correio_s"] / fx["mpop_s"]
        print(f"| {label}: correio fetch 500 msgs vs mpop, wall s | {fx['correio_s']:.3f} | "
              f"mpop {fx['mpop_s']:.3f} | {ratio:.3f} | <= 0.8x | {'yes' if ratio <= 0.8 else 'NO'} |")
if fw and fw["fetchmail_s"]:
    x = fw["fetchmail_s"] / fw["correio_s"]
    print(f"| 50 ms RTT: fetchmail / correio fetch | {fw['correio_s']:.3f} | fetchmail {fw['fetchmail_s']:.3f} "
          f"(mpop {fw['mpop_s']:.3f}) | {x:.1f}x faster | >= 10x | {'yes' if x >= 10 else 'NO'} |")
print()
print(f"load generator ceiling (canned in-process server, 20 x 500 x 4 KB pipelined): "
      f"{fmt(extra['self_test_msgs_per_s'])} msg/s, {fmt(extra['self_test_mb_per_s'])} MB/s")
print(f"loopback TCP limit for the same bytes: 4 KB corpus {fmt(extra['loopback_4k_mb_per_s'])} MB/s, "
      f"1 MB corpus {fmt(extra['loopback_1m_mb_per_s'])} MB/s")
lb = extra["loopback_1m_mb_per_s"]
for label, name in (("1 MB messages", "dl1m"), ("1 MB messages in wire form (sendfile)", "dl1m-wire")):
    c = mean(name, "correio", "mb_per_s")
    if c is not None and lb:
        extra[f"{name}_of_loopback"] = c / lb
        print(f"{label}: Correio at {100 * c / lb:.0f}% of that limit (target >= 80%)"
              + (f", Dovecot at {100 * mean(name, 'dovecot', 'mb_per_s') / lb:.0f}%"
                 if mean(name, "dovecot", "mb_per_s") else ""))
print(f"rounds {rounds}, quick {quick}; every run's JSON: correio bench --json")
if json_out:
    json.dump(dict(rows=rows, extra=extra, runs={f"{k[0]}.{k[1]}": v for k, v in runs.items()}),
              open(json_out, "w"), indent=1)
PY

#!/usr/bin/env bash
# Wall times for fetching the same messages from one Dovecot into a Maildir with
# `correio fetch` (release build), mpop and fetchmail, side by side in one run.
#
#   bench/fetch_compare.sh [MESSAGES] [ROUNDS]      (defaults: 500 messages, 3 rounds)
#   DELAY_MS=50 bench/fetch_compare.sh ...          (the clients see 50 ms more RTT)
#   TLS=1 bench/fetch_compare.sh ...                 (implicit TLS, POP3S: both clients
#                                                    trust the same self-signed certificate)
#
# DELAY_MS: the clients connect through bench/delay_proxy.py, which holds every chunk
# DELAY_MS/2 in each direction, unless DELAY_BY_NETEM=1 says the caller runs this
# script in a network namespace whose loopback already delays packets (compare.sh).
#
# Needs: dovecot-pop3d, mpop, fetchmail, python3 (Debian packages of those names).
# Everything runs on loopback in a temporary directory, in keep mode, each tool with a
# fresh Maildir and fresh UIDL state every round, so each fetches all messages.
# fetchmail cannot write a Maildir itself; it hands each message to an MDA, here a
# shell one-liner writing new/ files, the usual way it is set up for a Maildir.
set -euo pipefail
N=${1:-500}
ROUNDS=${2:-3}
TOOLS=${TOOLS:-"correio mpop fetchmail"}   # e.g. TOOLS=correio to time one tool
ROOT=$(cd "$(dirname "$0")/.." && pwd)
for p in /usr/sbin/dovecot mpop fetchmail python3; do
  command -v "$p" >/dev/null || { echo "missing $p (apt-get install dovecot-pop3d mpop fetchmail python3)" >&2; exit 1; }
done
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
(cd "$ROOT" && cargo build --release -q -p correio)
CORREIO=$CARGO_TARGET_DIR/release/correio

T=$(mktemp -d /tmp/correio-bench.XXXXXX)
chmod 755 "$T"
DOVECOT_PID=
PROXY_PID=
cleanup() {
  [ -n "$PROXY_PID" ] && kill "$PROXY_PID" 2>/dev/null
  [ -n "$DOVECOT_PID" ] && kill "$DOVECOT_PID" 2>/dev/null
  wait 2>/dev/null || true
  rm -rf "$T"
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$T/mail/bench/cur" "$T/mail/bench/new" "$T/mail/bench/tmp" "$T/home"
python3 - "$T/mail/bench/cur" "$N" <<'PY'
import os, random, sys
d, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(42)
words = "the quarterly figures are attached and we should meet on thursday to review".split()
total = 0
for i in range(n):
    # Sizes spread like a real mailbox: mostly small, some large attachments.
    target = int(rng.lognormvariate(8.8, 1.1))  # median ~6.6 KB
    target = max(600, min(target, 2_000_000))
    head = f"From: sender{i}@example.org\nTo: bench@example.org\nSubject: bench {i}\nMessage-ID: <{i}@bench>\nDate: Sun, 22 Nov 2026 04:00:00 +0000\n\n"
    body = []
    size = len(head)
    while size < target:
        line = " ".join(rng.choice(words) for _ in range(12)) + "\n"
        if rng.random() < 0.02: line = "." + line
        body.append(line); size += len(line)
    data = head + "".join(body)
    total += len(data)
    open(os.path.join(d, f"{1700000000+i}.M{i}P1.bench:2,"), "w").write(data)
print(f"{n} messages, {total} bytes", file=sys.stderr)
PY
chown -R 65534:65534 "$T/mail" "$T/home"
echo "bench:{PLAIN}pw:65534:65534::$T/home/bench::" > "$T/users"
SSL_CONF="ssl = no"
LISTENER="inet_listener pop3 {"
if [ "${TLS:-0}" = 1 ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1,DNS:localhost \
    -keyout "$T/key.pem" -out "$T/cert.pem" 2>/dev/null
  SSL_CONF="ssl = required
ssl_cert = <$T/cert.pem
ssl_key = <$T/key.pem"
  LISTENER="inet_listener pop3s {
    ssl = yes"
fi
cat > "$T/dovecot.conf" <<CONF
base_dir = $T/run
state_dir = $T/state
log_path = $T/dovecot.log
protocols = pop3
listen = 127.0.0.1
disable_plaintext_auth = no
mail_location = maildir:$T/mail/%u
first_valid_uid = 1
mail_privileged_group =
default_login_user = dovenull
default_internal_user = dovecot
$SSL_CONF
passdb {
  driver = passwd-file
  args = scheme=PLAIN $T/users
}
userdb {
  driver = passwd-file
  args = $T/users
}
service pop3-login {
  $LISTENER
    address = 127.0.0.1
    port = $PORT
  }
}
CONF
/usr/sbin/dovecot -F -c "$T/dovecot.conf" &
DOVECOT_PID=$!
# Ready when the port answers: the greeting in cleartext, a connection with TLS (the
# server waits for the ClientHello there).
ready() {
  if [ "${TLS:-0}" = 1 ]; then
    python3 -c "import socket; socket.create_connection(('127.0.0.1',$1), timeout=1).close()" 2>/dev/null
  else
    python3 -c "import socket; s=socket.create_connection(('127.0.0.1',$1), timeout=1); assert s.recv(10)" 2>/dev/null
  fi
}
for _ in $(seq 100); do
  ready "$PORT" && break
  sleep 0.1
done

# The port the clients use: Dovecot's, or the delaying proxy's in front of it.
FETCH_PORT=$PORT
if [ -n "${DELAY_MS:-}" ] && [ "${DELAY_BY_NETEM:-0}" != 1 ]; then
  FETCH_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  python3 "$ROOT/bench/delay_proxy.py" "$FETCH_PORT" "$PORT" "$DELAY_MS" >/dev/null &
  PROXY_PID=$!
  for _ in $(seq 100); do
    ready "$FETCH_PORT" && break
    sleep 0.1
  done
  echo "clients connect through a proxy adding ${DELAY_MS} ms round-trip time" >&2
fi

fresh() { rm -rf "$T/out" "$T/st"; mkdir -p "$T/out/cur" "$T/out/new" "$T/out/tmp" "$T/st"; }
count() { find "$T/out/new" "$T/out/cur" -type f | wc -l; }

if [ "${TLS:-0}" = 1 ]; then
  CORREIO_TLS=(--tls implicit --ca "$T/cert.pem")
  MPOP_TLS=(--tls=on --tls-starttls=off --tls-trust-file="$T/cert.pem")
  echo "implicit TLS (POP3S)" >&2
else
  CORREIO_TLS=(--tls none)
  MPOP_TLS=(--tls=off)
fi
run_correio() {
  ${CORREIO_WRAP:-} "$CORREIO" fetch --host 127.0.0.1 --port "$FETCH_PORT" --user bench "${CORREIO_TLS[@]}" \
    --password-command 'echo pw' --keep --to "maildir:$T/out" --state-dir "$T/st" --quiet
}
run_mpop() {
  mpop --host=127.0.0.1 --port="$FETCH_PORT" "${MPOP_TLS[@]}" --auth=user --user=bench \
    --passwordeval='echo pw' --keep=on --only-new=on --received-header=off \
    --pipelining=auto --uidls-file="$T/st/mpop-uidls" --delivery="maildir,$T/out" -q
}
run_fetchmail() {
  cat > "$T/st/rc" <<RC
set no syslog
set idfile "$T/st/fetchids"
poll 127.0.0.1 service $FETCH_PORT protocol pop3 uidl auth password:
  user "bench" there password "pw" is "root" here
  keep fetchall no rewrite $([ "${TLS:-0}" = 1 ] && echo ssl)
  mda "sh -c 'cat > $T/out/tmp/m.\$\$ && mv $T/out/tmp/m.\$\$ $T/out/new/\$(date +%s%N).\$\$'"
RC
  chmod 600 "$T/st/rc"
  HOME="$T/st" fetchmail -f "$T/st/rc" -N -s --nosslcertck 2>/dev/null || [ $? -eq 1 ]
}

time_it() { # prints seconds
  local s e
  s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N)
  python3 -c "print(f'{$e-$s:.3f}')"
}

# Warm Dovecot's index and the page cache once.
fresh; run_correio
printf '%-10s' "round"; for t in $TOOLS; do printf '%12s' "$t"; done; echo
declare -A SUM
for r in $(seq "$ROUNDS"); do
  printf '%-10s' "$r"
  for t in $TOOLS; do
    fresh
    secs=$(time_it "run_$t")
    got=$(count)
    [ "$got" -eq "$N" ] || { echo; echo "$t stored $got of $N messages" >&2; exit 1; }
    printf '%11ss' "$secs"
    SUM[$t]=$(python3 -c "print(${SUM[$t]:-0}+$secs)")
  done
  echo
done
printf '%-10s' "mean"
for t in $TOOLS; do printf '%11ss' "$(python3 -c "print(f'{${SUM[$t]}/$ROUNDS:.3f}')")"; done
echo

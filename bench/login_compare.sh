#!/usr/bin/env bash
# Login storms per user database (issue 11): Correio with and without its
# authentication cache beside Dovecot with its auth_cache, on the same user database,
# side by side in one run, on loopback, as ratios (see bench/README.md).
#
#   bench/login_compare.sh [--quick] [--rounds N] [--users N] [-c N] [--duration SECS]
#                          [--backends passwd-file,pgsql,mysql,ldap] [--json FILE]
#                          [--results FILE | --no-results]
#
# One command from a clean checkout, as root: builds `correio` (release), makes a
# temporary directory and starts, on 127.0.0.1 and ports chosen at run time,
# PostgreSQL (initdb; password logins over TCP), MariaDB (mariadb-install-db +
# mariadbd) and slapd (mdb, suffix dc=example,dc=org, a service account that may read
# userPassword). PostgreSQL and MariaDB run as nobody. The same users (ar00.. with
# ARGON2ID hashes, Dovecot's default m=65536,t=3,p=1, and sh00.. with SHA512-CRYPT,
# both made by `doveadm pw`, the same strings for both servers) go into a passwd-file,
# a table in each SQL database and posixAccount entries in the directory
# ({ARGON2}$argon2id$... through slapd's argon2 module, {CRYPT}$6$...).
#
# For each backend: `correio serve` with the cache (cache_size 10000), `correio serve`
# without it (cache_size = 0) and Dovecot (passdb passwd-file, sql with driver pgsql or
# mysql, ldap with auth_bind = yes; auth_cache_size = 10M, TTLs 1 hour; userdb static),
# all three on the same Maildirs. Per hash: a warm-up run of each (fills the caches:
# every user logs in once), then rounds alternating Correio+cache, Dovecot, Correio
# without cache. Each run is `correio bench login-storm` (login with USER/PASS over
# cleartext on loopback, QUIT) with the same -c and --duration, the same users and
# passwords again and again: the POP3 polling pattern a cache is for. Server CPU is
# the whole process tree of the server (--server-pid: correio serve and its helper;
# Dovecot's master with auth, auth-worker, pop3-login and every pop3 process),
# database CPU the tree of postgres / mariadbd / slapd from /proc before and after the
# run. Prints one table and, unless --no-results (the default with --quick), appends
# it as a section to bench/RESULTS.md.
#
# Needs (Debian packages): dovecot-pop3d, dovecot-pgsql, dovecot-mysql, dovecot-ldap,
# postgresql, mariadb-server, mariadb-client, slapd, ldap-utils, python3; cargo. Every
# run is bounded (--duration, --count, --timeout); the daemons it started are stopped
# by PID and the temporary directory removed on any exit. Full run ~13 min, --quick ~4.
# CORREIO_BIN=PATH uses that binary instead of building (for trying the script).
set -euo pipefail

QUICK=0
ROUNDS=
USERS=
CONC=
SECS=
BACKENDS=passwd-file,pgsql,mysql,ldap
JSON_OUT=
RESULTS=default
ARGS_SEEN="$*"
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --rounds) ROUNDS=$2; shift ;;
    --users) USERS=$2; shift ;;
    -c) CONC=$2; shift ;;
    --duration) SECS=$2; shift ;;
    --backends) BACKENDS=$2; shift ;;
    --json) JSON_OUT=$2; shift ;;
    --results) RESULTS=$2; shift ;;
    --no-results) RESULTS= ;;
    -h|--help) sed -n '2,40p' "$0"; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [ "$QUICK" = 1 ]; then
  : "${ROUNDS:=1}" "${USERS:=16}" "${CONC:=8}" "${SECS:=2}"
else
  : "${ROUNDS:=3}" "${USERS:=50}" "${CONC:=8}" "${SECS:=5}"
fi
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ "$RESULTS" = default ]; then
  if [ "$QUICK" = 1 ]; then RESULTS=; else RESULTS=$ROOT/bench/RESULTS.md; fi
fi
if [ "$USERS" -lt "$CONC" ]; then
  echo "--users must be at least -c (each session locks its user's maildrop)" >&2; exit 2
fi
# A cap that a run never reaches: every run lasts --duration.
COUNT=1000000

PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
for p in /usr/sbin/dovecot /usr/bin/doveadm "$PGBIN/initdb" "$PGBIN/postgres" mariadbd \
         mariadb-install-db mariadb slapd ldapadd setpriv python3 cargo; do
  command -v "$p" >/dev/null || [ -x "$p" ] || {
    echo "missing $p (apt-get install dovecot-pop3d dovecot-pgsql dovecot-mysql dovecot-ldap" \
         "postgresql mariadb-server mariadb-client slapd ldap-utils python3; cargo)" >&2; exit 1; }
done
for m in auth/libauthdb_ldap libdriver_pgsql libdriver_mysql; do
  [ -e "/usr/lib/dovecot/modules/$m.so" ] ||
    { echo "missing Dovecot module $m (dovecot-pgsql, dovecot-mysql, dovecot-ldap)" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "run as root (Dovecot, PostgreSQL and MariaDB drop to nobody)" >&2; exit 1; }
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
if [ -n "${CORREIO_BIN:-}" ]; then
  CORREIO=$CORREIO_BIN   # a correio binary built already (for trying the script)
else
  echo "== building correio (release)" >&2
  (cd "$ROOT" && cargo build --release -q -p correio --locked)
  CORREIO=$CARGO_TARGET_DIR/release/correio
fi

T=$(mktemp -d /tmp/correio-logins.XXXXXX)
chmod 755 "$T"
mkdir -p "$T/res" "$T/mail" "$T/home" "$T/logs"
NOBODY=65534
NOGROUP=$(id -g nobody 2>/dev/null || echo 65534)

# Every daemon this script started, by PID; stopped (and waited for) on any exit.
PIDS=()
stop_pid() {   # stop_pid PID [SIGNAL]: signal it and wait until it is gone (at most 30 s)
  local pid=$1 sig=${2:-TERM}
  [ -n "$pid" ] || return 0
  kill -"$sig" "$pid" 2>/dev/null || return 0
  for _ in $(seq 300); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
forget_pid() { local keep=() p; for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done; PIDS=("${keep[@]}"); }
cleanup() {
  local p
  for p in "${PIDS[@]}"; do stop_pid "$p"; done
  rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
as_nobody() { setpriv --reuid="$NOBODY" --regid="$NOGROUP" --clear-groups -- "$@"; }
wait_tcp() {   # wait_tcp PORT PID WHAT: until something accepts on PORT (PID must live)
  for _ in $(seq 600); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1',$1),1).close()" 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || { echo "$3 exited at start" >&2; return 1; }
    sleep 0.1
  done
  echo "$3 does not listen on port $1" >&2; return 1
}
wait_pop3() {
  for _ in $(seq 300); do
    python3 -c "import socket,sys; s=socket.create_connection(('127.0.0.1',$1),1); sys.exit(0 if s.recv(3)==b'+OK' else 1)" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "no POP3 greeting on port $1" >&2; return 1
}
has_backend() { case ",$BACKENDS," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

# ---------------------------------------------------------------- users and hashes
echo "== $USERS users per hash, hashed with doveadm pw" >&2
DB_PASS=dbpass-$$
SVC_PASS=svc-$$
python3 - "$T" "$USERS" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
with open(os.path.join(root, "names"), "w") as f:
    for prefix in ("ar", "sh"):
        for i in range(n):
            f.write(f"{prefix}{i:02}\n")
PY
# name TAB password TAB {SCHEME}hash, one user a line; both hashes made in parallel
# (ARGON2ID costs ~0.1 s per hash on purpose).
hash_one() {
  local name=$1 scheme
  case "$name" in ar*) scheme=ARGON2ID ;; *) scheme=SHA512-CRYPT ;; esac
  printf '%s\t%s\t%s\n' "$name" "pw-$name-x7" "$(doveadm pw -s "$scheme" -p "pw-$name-x7")"
}
export -f hash_one
xargs -P 2 -I{} bash -c 'hash_one "$@"' _ {} < "$T/names" > "$T/hashes.unsorted"
sort "$T/hashes.unsorted" > "$T/hashes"
[ "$(wc -l < "$T/hashes")" = $((USERS * 2)) ] || { echo "hashing failed" >&2; exit 1; }
grep -qF '{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$' "$T/hashes" ||
  { echo "doveadm pw -s ARGON2ID did not give m=65536,t=3,p=1" >&2; exit 1; }
python3 - "$T" <<'PY'
import os, sys
root = sys.argv[1]
rows = [l.rstrip("\n").split("\t") for l in open(os.path.join(root, "hashes"))]
with open(os.path.join(root, "users.passwd"), "w") as f:
    for name, pw, h in rows:
        f.write(f"{name}:{h}:65534:65534::{root}/home/{name}::\n")
for prefix, label in (("ar", "ARGON2ID"), ("sh", "SHA512-CRYPT")):
    with open(os.path.join(root, f"creds.{label}"), "w") as f:
        for name, pw, h in rows:
            if name.startswith(prefix):
                f.write(f"{name}:{pw}\n")
with open(os.path.join(root, "users.sql"), "w") as f:
    f.write("CREATE TABLE users (username VARCHAR(64) PRIMARY KEY, password VARCHAR(255) NOT NULL);\n")
    for name, pw, h in rows:
        f.write(f"INSERT INTO users VALUES ('{name}', '{h}');\n")
for name, pw, h in rows:
    scheme, _, rest = h[1:].partition("}")
    # slapd: {CRYPT} is crypt(3); the argon2 module's scheme is {ARGON2} and takes
    # the PHC string ($argon2id$v=19$m=...) as Dovecot writes it.
    stored = ("{ARGON2}" if scheme == "ARGON2ID" else "{CRYPT}") + rest
    with open(os.path.join(root, f"users.{scheme}.ldif"), "a") as f:
        f.write(f"dn: uid={name},ou=people,dc=example,dc=org\n"
                "objectClass: inetOrgPerson\nobjectClass: posixAccount\n"
                f"uid: {name}\ncn: {name}\nsn: {name}\nuidNumber: 65534\ngidNumber: 65534\n"
                f"homeDirectory: {root}/home/{name}\nuserPassword: {stored}\n\n")
for name, pw, h in rows:
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(root, "mail", name, sub), exist_ok=True)
    os.makedirs(os.path.join(root, "home", name), exist_ok=True)
PY
chmod 644 "$T/users.passwd"
chown -R "$NOBODY:$NOGROUP" "$T/mail" "$T/home"

# ---------------------------------------------------------------- the databases
PG_PID=; PG_PORT=; MY_PID=; MY_PORT=; LDAP_PID=; LDAP_PORT=; LDAP_ARGON2=0
if has_backend pgsql; then
  echo "== PostgreSQL ($PGBIN)" >&2
  mkdir -p "$T/pg/data" "$T/pg/run"
  chmod 700 "$T/pg/data"; chmod 755 "$T/pg" "$T/pg/run"
  chown -R "$NOBODY:$NOGROUP" "$T/pg"
  (cd "$T/pg" && as_nobody env HOME="$T/pg" LC_ALL=C "$PGBIN/initdb" --pgdata "$T/pg/data" \
     --username postgres --auth=trust --encoding=UTF8 --locale=C --no-sync --no-instructions \
     >"$T/logs/initdb.log" 2>&1) || { cat "$T/logs/initdb.log" >&2; exit 1; }
  printf 'local all postgres trust\nlocal all all scram-sha-256\nhost all all 127.0.0.1/32 scram-sha-256\n' \
    > "$T/pg/data/pg_hba.conf"
  chown "$NOBODY:$NOGROUP" "$T/pg/data/pg_hba.conf"
  PG_PORT=$(free_port)
  (cd "$T/pg" && exec setpriv --reuid="$NOBODY" --regid="$NOGROUP" --clear-groups -- \
     env HOME="$T/pg" LC_ALL=C "$PGBIN/postgres" -D "$T/pg/data" -p "$PG_PORT" \
     -c listen_addresses=127.0.0.1 -c unix_socket_directories="$T/pg/run" \
     -c unix_socket_permissions=0777 -c fsync=off -c synchronous_commit=off \
     -c full_page_writes=off -c shared_buffers=32MB -c max_connections=100 \
     -c dynamic_shared_memory_type=mmap -c logging_collector=off -c lc_messages=C \
     -c ssl=off -c password_encryption=scram-sha-256 -c log_connections=off \
     >"$T/logs/postgres.log" 2>&1) &
  PG_PID=$!; PIDS+=("$PG_PID")
  wait_tcp "$PG_PORT" "$PG_PID" PostgreSQL || { cat "$T/logs/postgres.log" >&2; exit 1; }
  psql_admin() { "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$T/pg/run" -p "$PG_PORT" -U postgres "$@"; }
  for _ in $(seq 100); do psql_admin -d postgres -c 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.1; done
  psql_admin -d postgres -c "CREATE ROLE correio LOGIN PASSWORD '$DB_PASS';" \
    -c "CREATE DATABASE mail OWNER correio;" >/dev/null
  PGPASSWORD=$DB_PASS "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" \
    -U correio -d mail -f "$T/users.sql" >/dev/null
fi

if has_backend mysql; then
  echo "== MariaDB ($(mariadbd --version | awk '{print $3}'))" >&2
  mkdir -p "$T/my/data" "$T/my/run/tmp"
  chmod 700 "$T/my/data" "$T/my/run/tmp"; chmod 755 "$T/my" "$T/my/run"
  chown -R "$NOBODY:$NOGROUP" "$T/my"
  MY_INNODB=(--innodb-buffer-pool-size=32M --innodb-log-file-size=16M
             --innodb-flush-log-at-trx-commit=0 --innodb-doublewrite=0
             --innodb-use-native-aio=0 --innodb-temp-data-file-path=ibtmp1:1M:autoextend)
  (cd "$T/my" && as_nobody env HOME="$T/my" LC_ALL=C mariadb-install-db --no-defaults \
     --datadir="$T/my/data" --auth-root-authentication-method=normal --skip-test-db \
     --skip-name-resolve "${MY_INNODB[@]}" >"$T/logs/install-db.log" 2>&1) ||
    { cat "$T/logs/install-db.log" >&2; exit 1; }
  MY_PORT=$(free_port)
  (cd "$T/my" && exec setpriv --reuid="$NOBODY" --regid="$NOGROUP" --clear-groups -- \
     env HOME="$T/my" LC_ALL=C "$(command -v mariadbd)" --no-defaults --datadir="$T/my/data" \
     --port="$MY_PORT" --bind-address=127.0.0.1 --socket="$T/my/run/mysqld.sock" \
     --pid-file="$T/my/run/mysqld.pid" --tmpdir="$T/my/run/tmp" --skip-name-resolve \
     --skip-log-bin --performance-schema=OFF --max-connections=200 \
     --character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci "${MY_INNODB[@]}" \
     >"$T/logs/mariadb.log" 2>&1) &
  MY_PID=$!; PIDS+=("$MY_PID")
  wait_tcp "$MY_PORT" "$MY_PID" MariaDB || { cat "$T/logs/mariadb.log" >&2; exit 1; }
  my_admin() { mariadb --no-defaults --protocol=socket --socket="$T/my/run/mysqld.sock" -u root "$@"; }
  for _ in $(seq 100); do my_admin -e 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.1; done
  my_admin -e "CREATE USER 'correio'@'%' IDENTIFIED BY '$DB_PASS'; CREATE DATABASE mail;
               GRANT SELECT ON mail.* TO 'correio'@'%';"
  my_admin mail < "$T/users.sql"
fi

if has_backend ldap; then
  echo "== slapd ($(slapd -VV 2>&1 | head -1 | sed 's/.*slapd //; s/ .*//'))" >&2
  mkdir -p "$T/ldap/data"
  # slapd's argon2 module verifies {ARGON2} userPasswords (Debian builds it).
  ARGON2_LOAD=
  if [ -e /usr/lib/ldap/argon2.so ] || [ -e /usr/lib/ldap/argon2.la ]; then
    ARGON2_LOAD="moduleload argon2"; LDAP_ARGON2=1
  fi
  cat > "$T/ldap/slapd.conf" <<CONF
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/nis.schema
include /etc/ldap/schema/inetorgperson.schema
pidfile $T/ldap/slapd.pid
argsfile $T/ldap/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
$ARGON2_LOAD
database mdb
suffix "dc=example,dc=org"
rootdn "cn=admin,dc=example,dc=org"
rootpw admin-$$
directory $T/ldap/data
maxsize 104857600
dbnosync
index objectClass eq
index uid,cn eq
access to attrs=userPassword
	by self read
	by dn.exact="cn=correio,dc=example,dc=org" read
	by anonymous auth
	by * none
access to *
	by self read
	by dn.exact="cn=correio,dc=example,dc=org" read
	by * none
CONF
  chmod 600 "$T/ldap/slapd.conf"
  LDAP_PORT=$(free_port)
  # -d 0: in the foreground (its PID is ours to stop), logging nothing per operation.
  (cd "$T/ldap" && exec slapd -d 0 -f "$T/ldap/slapd.conf" -h "ldap://127.0.0.1:$LDAP_PORT/" \
     >"$T/logs/slapd.log" 2>&1) &
  LDAP_PID=$!; PIDS+=("$LDAP_PID")
  wait_tcp "$LDAP_PORT" "$LDAP_PID" slapd || { cat "$T/logs/slapd.log" >&2; exit 1; }
  {
    printf 'dn: dc=example,dc=org\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n\n'
    printf 'dn: ou=people,dc=example,dc=org\nobjectClass: organizationalUnit\nou: people\n\n'
    printf 'dn: cn=correio,dc=example,dc=org\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\ncn: correio\nuserPassword: %s\n\n' "$SVC_PASS"
    cat "$T/users.SHA512-CRYPT.ldif"
    [ "$LDAP_ARGON2" = 0 ] || cat "$T/users.ARGON2ID.ldif"
  } > "$T/ldap/init.ldif"
  ldapadd -x -H "ldap://127.0.0.1:$LDAP_PORT/" -D cn=admin,dc=example,dc=org -w "admin-$$" \
    -f "$T/ldap/init.ldif" >"$T/logs/ldapadd.log" 2>&1 || { cat "$T/logs/ldapadd.log" >&2; exit 1; }
  # Does the directory check Dovecot's strings? One bind with each hash.
  for h in ar00 sh00; do
    pw=$(awk -F'\t' -v u=$h '$1==u{print $2}' "$T/hashes")
    if ! ldapwhoami -x -H "ldap://127.0.0.1:$LDAP_PORT/" -D "uid=$h,ou=people,dc=example,dc=org" \
         -w "$pw" >/dev/null 2>&1; then
      echo "   slapd refuses the bind of $h: that hash is left out of the LDAP rows" >&2
      case $h in ar*) LDAP_ARGON2=0 ;; sh*) LDAP_CRYPT_BROKEN=1 ;; esac
    fi
  done
fi

# ---------------------------------------------------------------- the servers
write_correio() {   # write_correio NAME BACKEND CACHE_SIZE PORT
  local name=$1 backend=$2 cache=$3 port=$4 auth
  mkdir -p "$T/$name-data"
  case $backend in
    passwd-file) auth='backend = "passwd-file"' ;;
    pgsql) auth="backend = \"sql\"
[auth.sql]
url = \"postgresql://correio:$DB_PASS@127.0.0.1:$PG_PORT/mail\"
password_query = \"SELECT username AS user, password FROM users WHERE username = '%u'\"" ;;
    mysql) auth="backend = \"sql\"
[auth.sql]
url = \"mysql://correio:$DB_PASS@127.0.0.1:$MY_PORT/mail\"
password_query = \"SELECT username AS user, password FROM users WHERE username = '%u'\"" ;;
    ldap) auth="backend = \"ldap\"
[auth.ldap]
uri = \"ldap://127.0.0.1:$LDAP_PORT\"
bind_dn = \"cn=correio,dc=example,dc=org\"
bind_password = \"$SVC_PASS\"
base = \"ou=people,dc=example,dc=org\"
auth_bind = true" ;;
  esac
  # [auth] keys must precede its sub-tables.
  local head=${auth%%$'\n'*} rest=
  [ "$head" = "$auth" ] || rest=${auth#*$'\n'}
  cat > "$T/$name.toml" <<TOML
data_dir = "$T/$name-data"
users_file = "$T/users.passwd"
mail_location = "maildir:$T/mail/%u"
user = "nobody"
group = "$(id -gn nobody 2>/dev/null || echo nogroup)"
[listen]
pop3 = ["127.0.0.1:$port"]
[admin]
socket = ""
[limits]
max_connections = 30000
max_connections_per_ip = 30000
[auth]
cache_size = $cache
cache_ttl = "1h"
cache_negative_ttl = "1h"
$head
$rest
TOML
  chmod 600 "$T/$name.toml"
}

write_dovecot() {   # write_dovecot NAME BACKEND PORT
  local name=$1 backend=$2 port=$3 passdb
  case $backend in
    passwd-file) passdb="driver = passwd-file
  args = $T/users.passwd" ;;
    pgsql) printf 'driver = pgsql\nconnect = host=127.0.0.1 port=%s dbname=mail user=correio password=%s\ndefault_pass_scheme = SHA512-CRYPT\npassword_query = SELECT username AS user, password FROM users WHERE username = '"'"'%%u'"'"'\n' \
             "$PG_PORT" "$DB_PASS" > "$T/$name-sql.conf.ext"
           passdb="driver = sql
  args = $T/$name-sql.conf.ext" ;;
    mysql) printf 'driver = mysql\nconnect = host=127.0.0.1 port=%s dbname=mail user=correio password=%s\ndefault_pass_scheme = SHA512-CRYPT\npassword_query = SELECT username AS user, password FROM users WHERE username = '"'"'%%u'"'"'\n' \
             "$MY_PORT" "$DB_PASS" > "$T/$name-sql.conf.ext"
           passdb="driver = sql
  args = $T/$name-sql.conf.ext" ;;
    ldap) cat > "$T/$name-ldap.conf.ext" <<EXT
uris = ldap://127.0.0.1:$LDAP_PORT
dn = cn=correio,dc=example,dc=org
dnpass = $SVC_PASS
auth_bind = yes
base = ou=people,dc=example,dc=org
scope = subtree
pass_filter = (&(objectClass=posixAccount)(uid=%n))
pass_attrs = uid=user
EXT
          passdb="driver = ldap
  args = $T/$name-ldap.conf.ext" ;;
  esac
  chmod 644 "$T"/"$name"-*.conf.ext 2>/dev/null || true
  cat > "$T/$name.conf" <<CONF
base_dir = $T/$name-run
state_dir = $T/$name-state
log_path = $T/logs/$name.log
protocols = pop3
listen = 127.0.0.1
ssl = no
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
auth_cache_size = 10M
auth_cache_ttl = 1 hour
auth_cache_negative_ttl = 1 hour
# Verify cached hashes in the auth-worker processes (all cores), not only in the
# single auth process: Dovecot at its best.
auth_cache_verify_password_with_worker = yes
passdb {
  $passdb
}
userdb {
  driver = static
  args = uid=$NOBODY gid=$NOGROUP home=$T/home/%u
}
service pop3-login {
  inet_listener pop3 {
    address = 127.0.0.1
    port = $port
  }
  service_count = 0
  process_min_avail = 2
}
service pop3 {
  process_limit = 20000
}
CONF
}

SERVER_PIDS=()
start_servers() {   # start_servers BACKEND: sets C_PORT N_PORT D_PORT and the PIDs
  local b=$1
  C_PORT=$(free_port); N_PORT=$(free_port); D_PORT=$(free_port)
  write_correio "correio-cache-$b" "$b" 10000 "$C_PORT"
  write_correio "correio-nocache-$b" "$b" 0 "$N_PORT"
  write_dovecot "dovecot-$b" "$b" "$D_PORT"
  "$CORREIO" serve --config "$T/correio-cache-$b.toml" 2>"$T/logs/correio-cache-$b.log" &
  C_PID=$!; PIDS+=("$C_PID")
  "$CORREIO" serve --config "$T/correio-nocache-$b.toml" 2>"$T/logs/correio-nocache-$b.log" &
  N_PID=$!; PIDS+=("$N_PID")
  /usr/sbin/dovecot -F -c "$T/dovecot-$b.conf" 2>"$T/logs/dovecot-$b.stderr" &
  D_PID=$!; PIDS+=("$D_PID")
  wait_pop3 "$C_PORT" || { cat "$T/logs/correio-cache-$b.log" >&2; exit 1; }
  wait_pop3 "$N_PORT" || { cat "$T/logs/correio-nocache-$b.log" >&2; exit 1; }
  wait_pop3 "$D_PORT" || { cat "$T/logs/dovecot-$b.stderr" "$T/logs/dovecot-$b.log" >&2; exit 1; }
}
stop_servers() {
  local p
  for p in "$C_PID" "$N_PID" "$D_PID"; do stop_pid "$p"; forget_pid "$p"; done
}

# CPU seconds of a process tree (live processes' utime+stime plus the root's reaped
# children), as `correio bench --server-pid` counts it.
tree_cpu() {
  python3 - "$1" <<'PY'
import os, sys
root = int(sys.argv[1]); tck = os.sysconf("SC_CLK_TCK")
kids, stat = {}, {}
for d in os.listdir("/proc"):
    if not d.isdigit():
        continue
    try:
        s = open(f"/proc/{d}/stat").read()
    except OSError:
        continue
    f = s[s.rindex(")") + 2:].split()
    pid, ppid = int(d), int(f[1])
    stat[pid] = (int(f[11]) + int(f[12]), int(f[13]) + int(f[14]))
    kids.setdefault(ppid, []).append(pid)
total, todo = 0, [root]
while todo:
    p = todo.pop()
    if p in stat:
        total += stat[p][0]
    todo.extend(kids.get(p, []))
total += stat.get(root, (0, 0))[1]
print(total / tck)
PY
}

# run BACKEND HASH VARIANT ROUND ARGS...: one login storm, JSON kept in $T/res.
run() {
  local b=$1 h=$2 v=$3 r=$4; shift 4
  local port pid db=
  case $v in
    correio-cache) port=$C_PORT; pid=$C_PID ;;
    correio-nocache) port=$N_PORT; pid=$N_PID ;;
    dovecot) port=$D_PORT; pid=$D_PID ;;
  esac
  case $b in pgsql) db=$PG_PID ;; mysql) db=$MY_PID ;; ldap) db=$LDAP_PID ;; esac
  local out="$T/res/$b.$h.$v.$r.json" db0=0 db1=0
  [ -n "$db" ] && db0=$(tree_cpu "$db")
  if "$CORREIO" bench login-storm --port "$port" --users-file "$T/creds.$h" -c "$CONC" \
       --timeout 30s --server-pid "$pid" --label "$v" --json "$@" >"$out" 2>"$T/res/err"; then :; else
    echo "   ($b $h $v: exit $?; $(head -c 300 "$T/res/err"))" >&2
  fi
  [ -n "$db" ] && db1=$(tree_cpu "$db")
  python3 - "$out" "$db0" "$db1" "$b" "$h" "$v" "$r" <<'PY' >&2
import json, sys
out, db0, db1, b, h, v, r = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), *sys.argv[4:]
try:
    res = json.load(open(out))
except Exception:
    print(f"   {b:<11} {h:<12} {v:<15} {r:<6} no result"); sys.exit(0)
res["database_cpu_s"] = db1 - db0
json.dump(res, open(out, "w"))
s = res.get("server") or {}
n = res.get("sessions") or 0
cpu = s.get("cpu_s", 0)
print(f"   {b:<11} {h:<12} {v:<15} {r:<6} {res.get('sessions_per_s', 0):>8.1f} logins/s "
      f"server {1000 * cpu / max(n, 1):7.3f} ms/login  db {1000 * (db1 - db0) / max(n, 1):7.3f} ms/login  "
      f"logins {n}  errors {res.get('errors', 0)}")
PY
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
IFS=, read -r -a BACKEND_LIST <<< "$BACKENDS"
for b in "${BACKEND_LIST[@]}"; do
  case $b in passwd-file|pgsql|mysql|ldap) ;; *) echo "unknown backend $b" >&2; exit 2 ;; esac
  echo "== backend $b: correio (cache), correio (no cache), dovecot (auth_cache)" >&2
  start_servers "$b"
  for h in ARGON2ID SHA512-CRYPT; do
    if [ "$b" = ldap ] && { { [ "$h" = ARGON2ID ] && [ "$LDAP_ARGON2" = 0 ]; } ||
                            { [ "$h" = SHA512-CRYPT ] && [ -n "${LDAP_CRYPT_BROKEN:-}" ]; }; }; then
      echo "   ldap $h: the directory cannot check these hashes; skipped" >&2
      continue
    fi
    # Warm-up: every user logs in (fills both caches, the SQL pools, Dovecot's
    # login and auth-worker processes).
    run "$b" "$h" correio-cache warmup --count $((USERS + CONC)) --duration 120s
    run "$b" "$h" dovecot warmup --count $((USERS + CONC)) --duration 120s
    run "$b" "$h" correio-nocache warmup --count $((CONC * 2)) --duration 60s
    for r in $(seq "$ROUNDS"); do
      run "$b" "$h" correio-cache "$r" --count "$COUNT" --duration "${SECS}s"
      run "$b" "$h" dovecot "$r" --count "$COUNT" --duration "${SECS}s"
      run "$b" "$h" correio-nocache "$r" --count "$COUNT" --duration "${SECS}s"
    done
  done
  # Dovecot's own count of its auth cache (SIGUSR2 to auth logs hits and misses).
  AUTH_PID=$(pgrep -P "$D_PID" -xf dovecot/auth || true)   # not the workers (auth -w)
  if [ -n "$AUTH_PID" ]; then
    kill -USR2 "$AUTH_PID" 2>/dev/null || true
    for _ in $(seq 20); do grep -q "cache hits" "$T/logs/dovecot-$b.log" && break; sleep 0.1; done
    grep -h "cache hits" "$T/logs/dovecot-$b.log" | tail -1 | sed 's/.*Info: //' > "$T/res/$b.dovecot-cache.txt" || true
    sed "s/^/   dovecot $b: /" "$T/res/$b.dovecot-cache.txt" >&2
  fi
  stop_servers
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

COMMIT=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(cd "$ROOT" && git status --porcelain 2>/dev/null | grep -qv '^??' && echo " (with uncommitted changes)" || true)
python3 - "$T/res" "$JSON_OUT" "$RESULTS" "$ROUNDS" "$USERS" "$CONC" "$SECS" "$QUICK" \
  "$COMMIT$DIRTY" "$LOAD_BEFORE" "$LOAD_AFTER" "bench/login_compare.sh $ARGS_SEEN" \
  "$(dovecot --version | awk '{print $1}')" "$("$PGBIN/postgres" --version | sed 's/^[^)]*) *\([0-9.]*\).*/\1/')" \
  "$(mariadbd --version | awk '{print $3}')" "$(slapd -VV 2>&1 | sed -n 's/.*slapd \([0-9.]*\).*/\1/p' | head -1)" \
  "$LDAP_ARGON2" "$BACKENDS" <<'PY'
import datetime, glob, json, os, platform, statistics, sys
(res, json_out, results, rounds, users, conc, secs, quick, commit, load0, load1, command,
 v_dovecot, v_pg, v_my, v_slapd, ldap_argon2, backends) = sys.argv[1:19]
runs = {}
def round_of(p):
    r = os.path.basename(p)[:-5].split(".")[-1]
    return int(r) if r.isdigit() else 0
for p in sorted(glob.glob(os.path.join(res, "*.json")), key=round_of):
    b, h, v, r = os.path.basename(p)[:-5].split(".")
    if r == "warmup":
        continue
    try:
        runs.setdefault((b, h, v), []).append(json.load(open(p)))
    except Exception:
        pass

def agg(key):
    rs = runs.get(key) or []
    if not rs:
        return None
    n = sum(r.get("sessions") or 0 for r in rs)
    el = sum(r.get("elapsed_s") or 0 for r in rs)
    srv = sum((r.get("server") or {}).get("cpu_s", 0) for r in rs)
    db = sum(r.get("database_cpu_s", 0) for r in rs)
    rates = [r.get("sessions_per_s") or 0 for r in rs]
    return dict(rate=statistics.mean(rates), rates=rates, logins=n,
                errors=sum(r.get("errors") or 0 for r in rs),
                server_ms=1000 * srv / n if n else None, db_ms=1000 * db / n if n else None,
                p99=statistics.mean([(r.get("login_latency") or {}).get("p99_ms", 0) for r in rs]))

names = {"passwd-file": "passwd-file", "pgsql": "sql (PostgreSQL)", "mysql": "sql (MariaDB)",
         "ldap": "ldap (auth bind)"}
variants = [("correio-cache", "Correio, cache on"), ("correio-nocache", "Correio, cache off"),
            ("dovecot", "Dovecot, auth_cache on")]
rows, lines = [], []
def fmt(v, digits=3):
    if v is None: return "-"
    return f"{v:,.{digits}f}" if abs(v) < 10 else f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.1f}"
lines.append("| backend | hash | variant | logins/s | server CPU ms/login | database CPU ms/login "
             "| together ms/login | Correio/Dovecot logins/s | verdict |")
lines.append("|---|---|---|---:|---:|---:|---:|---:|---|")
for b in ["passwd-file", "pgsql", "mysql", "ldap"]:
    for h in ["ARGON2ID", "SHA512-CRYPT"]:
        d = agg((b, h, "dovecot"))
        if d is None and agg((b, h, "correio-cache")) is None:
            if b == "ldap" and h == "ARGON2ID" and ldap_argon2 == "0" and "ldap" in backends.split(","):
                lines.append(f"| {names[b]} | {h} | (not run: slapd cannot check Dovecot's $argon2id$ string) | | | | | | |")
            continue
        for v, label in variants:
            a = agg((b, h, v))
            if a is None:
                continue
            ratio = a["rate"] / d["rate"] if d and d["rate"] else None
            if v == "correio-cache":
                verdict = "-" if ratio is None else ("met (>= 2x)" if ratio >= 2 else "NOT met (< 2x)")
            elif v == "correio-nocache":
                verdict = "-" if ratio is None else ("faster than Dovecot" if ratio >= 1 else "slower than Dovecot")
            else:
                verdict = "reference"
            if a["errors"]:
                verdict += f"; {a['errors']} errors"
            together = None if a["server_ms"] is None else a["server_ms"] + (a["db_ms"] or 0)
            dbcell = "-" if b == "passwd-file" else fmt(a["db_ms"])
            lines.append(f"| {names[b]} | {h} | {label} | {fmt(a['rate'], 1)} | {fmt(a['server_ms'])} | "
                         f"{dbcell} | {fmt(together)} | "
                         f"{'' if v == 'dovecot' else (fmt(ratio, 2) + 'x' if ratio else '-')} | {verdict} |")
            rows.append(dict(backend=b, hash=h, variant=v, ratio_vs_dovecot=ratio, verdict=verdict, **a))
table = "\n".join(lines)
rounds_lines = ["| backend | hash | variant | logins/s per round |", "|---|---|---|---|"]
for r in rows:
    rounds_lines.append(f"| {names[r['backend']]} | {r['hash']} | {r['variant']} | "
                        + " / ".join(f"{x:,.1f}" for x in r["rates"]) + " |")
now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
head = (f"## Login storms per user database (issue #11) — commit {commit}, {now}\n\n"
        f"```\n{command.strip()}\n```\n\n"
        f"**Machine**: {os.cpu_count()} cores ({platform.machine()}, Linux {platform.release()}), "
        f"load average {load0} before and {load1} after the run (the machine is shared). "
        f"Dovecot {v_dovecot}, PostgreSQL {v_pg}, MariaDB {v_my}, OpenLDAP slapd {v_slapd}.\n\n"
        f"**Runs**: `correio bench login-storm` (USER/PASS in cleartext on loopback, then QUIT), "
        f"-c {conc}, {users} users per hash with their own passwords, each run {secs} s "
        f"(--count only a cap), after a warm-up that logs every user in once; {rounds} round(s) "
        f"alternating Correio with cache, Dovecot, Correio without cache; figures are means "
        f"over the rounds. CPU per login = CPU time of the process tree during the runs / "
        f"logins done: server = correio serve (with its helper) or Dovecot (master, auth, "
        f"auth-worker, pop3-login, every pop3); database = postgres / mariadbd / slapd. "
        f"Target (issue #11): with the cache, >= 2x Dovecot's logins/s for every backend.\n")
hits = []
for p in sorted(glob.glob(os.path.join(res, "*.dovecot-cache.txt"))):
    t = open(p).read().strip()
    if t:
        hits.append(f"{names.get(os.path.basename(p).split('.')[0])}: {t}")
hits_text = ("Dovecot's own count (SIGUSR2 to its auth process, warm-ups included): "
             + "; ".join(hits) + ".") if hits else ""
print()
print(table)
print()
print("\n".join(rounds_lines))
print(hits_text)
if results:
    with open(results, "a") as f:
        f.write("\n" + head + "\n" + table + "\n\nEach round's logins/s:\n\n" + "\n".join(rounds_lines)
                + "\n\n" + hits_text + "\n")
    print(f"\nappended to {results}")
if json_out:
    json.dump(dict(rows=rows, runs={".".join(k): v for k, v in runs.items()}), open(json_out, "w"), indent=1)
PY

#!/usr/bin/env bash
# TLS for the TLS tests: a throwaway certificate authority, a server
# certificate for 127.0.0.1/localhost and a client certificate signed by
# it, and a second authority that signed nothing (the "wrong CA").
# PostgreSQL is switched to that certificate (ALTER SYSTEM + reload: plain
# connections keep working); two TLS-only Redis servers are started beside
# the plain one, the second demanding a client certificate.
#
# Prints the variables the tests read, for `eval`.
# Usage: eval "$(bash .ci/tls-services.sh [DIR] [REDIS_TLS_PORT])"
#   (the Redis demanding client certificates listens on REDIS_TLS_PORT + 1)
set -euo pipefail
dir="${1:-${TMPDIR:-/tmp}/coffer-test-tls}"
redis_tls_port="${2:-6380}"
redis_mtls_port=$((redis_tls_port + 1))
mkdir -p "$dir"
cd "$dir"

if [ ! -s client.pem ] || ! openssl x509 -checkend 86400 -noout -in server.pem >/dev/null 2>&1; then
  subject() { printf '/CN=%s' "$1"; }
  for ca in ca other-ca; do
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "$(subject "coffer test $ca")" \
      -keyout "$ca.key" -out "$ca.pem" >/dev/null 2>&1
  done
  openssl req -newkey rsa:2048 -nodes -subj "$(subject localhost)" -keyout server.key -out server.csr >/dev/null 2>&1
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >server.ext
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 \
    -extfile server.ext -out server.pem >/dev/null 2>&1
  openssl req -newkey rsa:2048 -nodes -subj "$(subject coffer-client)" -keyout client.key -out client.csr >/dev/null 2>&1
  openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 -out client.pem >/dev/null 2>&1
  chmod 0644 ./*.pem
  chmod 0600 ./*.key
fi

# PostgreSQL reads its key as its own user, from a directory it can reach.
pg_dir=/var/lib/postgresql/coffer-test-tls
if command -v psql >/dev/null && psql -h 127.0.0.1 -U postgres -d test -Atqc 'select 1' >/dev/null 2>&1; then
  mkdir -p "$pg_dir"
  cp server.pem server.key "$pg_dir/"
  chown -R postgres:postgres "$pg_dir" 2>/dev/null || true
  chmod 0600 "$pg_dir/server.key"
  psql -h 127.0.0.1 -U postgres -d test -qc "ALTER SYSTEM SET ssl = on" \
    -c "ALTER SYSTEM SET ssl_cert_file = '$pg_dir/server.pem'" \
    -c "ALTER SYSTEM SET ssl_key_file = '$pg_dir/server.key'" \
    -c "SELECT pg_reload_conf()" >/dev/null
fi

# start_redis PORT AUTH_CLIENTS: a TLS-only Redis, unless one answers there.
start_redis() {
  local port=$1 auth_clients=$2
  local ping=(redis-cli --tls --cacert ca.pem --cert client.pem --key client.key -h 127.0.0.1 -p "$port" ping)
  if ! "${ping[@]}" >/dev/null 2>&1; then
    # One left from certificates made earlier: replace it.
    redis-cli --tls --insecure --cert client.pem --key client.key -h 127.0.0.1 -p "$port" shutdown nosave \
      >/dev/null 2>&1 || true
    redis-server --daemonize yes --bind 127.0.0.1 --port 0 --tls-port "$port" \
      --tls-cert-file "$dir/server.pem" --tls-key-file "$dir/server.key" --tls-ca-cert-file "$dir/ca.pem" \
      --tls-auth-clients "$auth_clients" --save "" --appendonly no >/dev/null
    for _ in $(seq 1 30); do
      "${ping[@]}" >/dev/null 2>&1 && break
      sleep 0.2
    done
  fi
}
start_redis "$redis_tls_port" no
start_redis "$redis_mtls_port" yes

echo "export COFFER_TEST_TLS_DIR='$dir'"
echo "export COFFER_TEST_REDIS_TLS_URL='rediss://127.0.0.1:$redis_tls_port'"
echo "export COFFER_TEST_REDIS_MTLS_URL='rediss://127.0.0.1:$redis_mtls_port'"

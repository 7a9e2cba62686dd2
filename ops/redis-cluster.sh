#!/usr/bin/env bash
# A local Redis Cluster for resq's cluster tests: three primaries on
# ports BASE..BASE+2 (default 7000-7002), each with one replica on
# BASE+3..BASE+5 (REPLICAS=0 for primaries only). No persistence, a short
# node timeout (failover tests promote a replica within seconds).
#
#   ops/redis-cluster.sh start   # idempotent: nothing to do when healthy
#   ops/redis-cluster.sh status  # CLUSTER INFO of the first node
#   ops/redis-cluster.sh stop    # shuts down the nodes this script runs
#
# Data and logs live under DIR (default /tmp/resq-redis-cluster).
#
# TLS=1: the nodes speak only TLS (clients, the cluster bus and
# replication), with a certificate for 127.0.0.1 signed by a CA made for
# the purpose: DIR/tls/ca.crt, which clients must trust (resq:
# `rediss+cluster://127.0.0.1:PORT/?tls_ca_file=DIR/tls/ca.crt`). Client
# certificates are accepted but not required.
set -euo pipefail

BASE="${RESQ_CLUSTER_BASE_PORT:-7000}"
REPLICAS="${REPLICAS:-1}"
DIR="${RESQ_CLUSTER_DIR:-/tmp/resq-redis-cluster}"
HOST=127.0.0.1
TLS="${TLS:-0}"
TLS_ARGS=()
if [ "$TLS" = "1" ]; then TLS_ARGS=(--tls --cacert "$DIR/tls/ca.crt"); fi

# redis-cli on node PORT, over TLS when the cluster uses it.
cli() {
  local port=$1
  shift
  redis-cli -h "$HOST" -p "$port" "${TLS_ARGS[@]}" "$@"
}

# A CA and a certificate for 127.0.0.1 signed by it (once).
make_certs() {
  local d="$DIR/tls"
  [ -s "$d/node.crt" ] && return
  mkdir -p "$d"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=resq test CA" \
    -keyout "$d/ca.key" -out "$d/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$d/node.key" -out "$d/node.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' >"$d/ext.cnf"
  openssl x509 -req -in "$d/node.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
    -days 3650 -extfile "$d/ext.cnf" -out "$d/node.crt" 2>/dev/null
}

primaries=("$BASE" "$((BASE + 1))" "$((BASE + 2))")
replicas=()
if [ "$REPLICAS" -gt 0 ]; then replicas=("$((BASE + 3))" "$((BASE + 4))" "$((BASE + 5))"); fi
ports=("${primaries[@]}" "${replicas[@]}")

healthy() {
  cli "$BASE" cluster info 2>/dev/null | grep -q '^cluster_state:ok' || return 1
  # No node is marked failing (a restarted node is cleared a little later).
  if cli "$BASE" cluster nodes 2>/dev/null | awk '{print $3}' | grep -q fail; then return 1; fi
  # Every replica is attached (a restarted primary turns into its former
  # replica's replica a few seconds after it rejoins).
  local attached
  attached=$(cli "$BASE" cluster nodes 2>/dev/null | awk '$3 ~ /slave/ && $8 == "connected"' | wc -l)
  [ "$attached" -ge "${#replicas[@]}" ] || return 1
  # Every node answers and knows the cluster.
  for p in "${ports[@]}"; do
    cli "$p" cluster info 2>/dev/null | grep -q '^cluster_state:ok' || return 1
  done
}

start_node() {
  local port=$1
  if cli "$port" ping >/dev/null 2>&1; then return; fi
  mkdir -p "$DIR/$port"
  local listen=(--port "$port")
  if [ "$TLS" = "1" ]; then
    listen=(--port 0 --tls-port "$port" --tls-cert-file "$DIR/tls/node.crt" --tls-key-file "$DIR/tls/node.key"
      --tls-ca-cert-file "$DIR/tls/ca.crt" --tls-cluster yes --tls-replication yes --tls-auth-clients optional)
  fi
  redis-server "${listen[@]}" --bind "$HOST" --cluster-enabled yes \
    --cluster-config-file "$DIR/$port/nodes.conf" --cluster-node-timeout 2000 \
    --save "" --appendonly no --dir "$DIR/$port" --daemonize yes \
    --logfile "$DIR/$port/redis.log" --pidfile "$DIR/$port/redis.pid"
  for _ in $(seq 1 50); do cli "$port" ping >/dev/null 2>&1 && return; sleep 0.1; done
  echo "redis node $port did not come up" >&2
  exit 1
}

start() {
  if [ "$TLS" = "1" ]; then make_certs; fi
  if healthy; then return; fi
  for p in "${ports[@]}"; do start_node "$p"; done
  # A node that already knows its cluster (restarted with its nodes.conf)
  # rejoins by itself; otherwise create the cluster.
  local slots
  slots=$(cli "$BASE" cluster info | sed -n 's/^cluster_slots_assigned:\([0-9]*\).*/\1/p')
  if [ "${slots:-0}" = "0" ]; then
    echo "creating a redis cluster on ports ${ports[*]}"
    local addrs=()
    for p in "${ports[@]}"; do addrs+=("$HOST:$p"); done
    redis-cli "${TLS_ARGS[@]}" --cluster create "${addrs[@]}" --cluster-replicas "$REPLICAS" --cluster-yes >"$DIR/create.log"
  fi
  for _ in $(seq 1 100); do healthy && return; sleep 0.2; done
  echo "the redis cluster did not become healthy; see $DIR" >&2
  exit 1
}

stop() {
  for p in "${ports[@]}"; do
    cli "$p" shutdown nosave >/dev/null 2>&1 || true
  done
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  status) cli "$BASE" cluster info ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac

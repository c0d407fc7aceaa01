#!/usr/bin/env bash
# Write and linearizable-read throughput of 3 server processes on loopback (8 shards), through
# the Rust gRPC client: 64 requests in flight, 100 B values. `--tls` runs the same with TLS on
# every link (certificates made with openssl; mutual TLS between nodes and for the client).
# Not part of CI.
#   scripts/bench-server.sh [--tls] [--seconds N] [--concurrency N]
set -euo pipefail
cd "$(dirname "$0")/.."
tls=0
if [ "${1:-}" = "--tls" ]; then tls=1; shift; fi
scripts/setup.sh
. scripts/env.sh
cargo build --quiet --bins --examples
bin="$CARGO_TARGET_DIR/debug"
dir=$(mktemp -d)
server_tls=()
client_tls=()
if [ "$tls" = 1 ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -keyout "$dir/ca.key" -out "$dir/ca.pem" -subj /CN=bench-ca 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$dir/node.key" -out "$dir/node.csr" -subj /CN=node 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n' > "$dir/ext"
  openssl x509 -req -in "$dir/node.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
    -days 2 -extfile "$dir/ext" -out "$dir/node.pem" 2>/dev/null
  server_tls=(--tls-cert "$dir/node.pem" --tls-key "$dir/node.key" --tls-ca "$dir/ca.pem")
  client_tls=(--cacert "$dir/ca.pem" --cert "$dir/node.pem" --key "$dir/node.key")
fi
members=1=127.0.0.1:7301,2=127.0.0.1:7302,3=127.0.0.1:7303
pids=()
for i in 1 2 3; do
  "$bin/scalestore-server" --id "$i" --listen "127.0.0.1:730$i" --data-dir "$dir/node-$i" \
    --initial-cluster "$members" --shards 8 "${server_tls[@]}" 2> "$dir/node-$i.log" &
  pids+=($!)
done
trap 'kill -TERM "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
endpoints=127.0.0.1:7301,127.0.0.1:7302,127.0.0.1:7303
# Ready once a read answers (a missing key exits 1; unreachable exits 2).
for _ in $(seq 1 120); do
  code=0
  "$bin/scalestore" --endpoints "$endpoints" "${client_tls[@]}" --timeout 1 get probe > /dev/null 2>&1 || code=$?
  [ "$code" = 1 ] && break
  sleep 1
done
label=$([ "$tls" = 1 ] && echo "TLS" || echo "plaintext")
echo "== 3 processes, 8 shards, $label"
"$bin/examples/bench_grpc" --endpoints "$endpoints" --workload write "${client_tls[@]}" "$@"
"$bin/examples/bench_grpc" --endpoints "$endpoints" --workload read "${client_tls[@]}" "$@"

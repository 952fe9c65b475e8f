#!/usr/bin/env bash
# Starts a single-node Garage S3 server on 127.0.0.1 for tests and drills, and makes it ready:
# config, layout (assign + apply), one access key, one bucket per site.
#
#   tests/garage/start.sh DIR BUCKET...
#
# DIR receives garage.toml, the server's data, its log, garage.pid, and `env`: shell
# assignments of GARAGE_ENDPOINT, GARAGE_REGION, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
# Ports are free ones picked by the kernel unless GARAGE_S3_PORT / GARAGE_RPC_PORT are set.
# Stop the server with `kill "$(cat DIR/garage.pid)"`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dir="$1"
shift
garage="${GARAGE_BIN:-$("$here/install.sh")}"
mkdir -p "$dir/meta" "$dir/data"
dir="$(cd "$dir" && pwd)"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
s3_port="${GARAGE_S3_PORT:-$(free_port)}"
rpc_port="${GARAGE_RPC_PORT:-$(free_port)}"
admin_port="$(free_port)"
rpc_secret="$(openssl rand -hex 32)"
admin_token="$(openssl rand -hex 32)"

cat >"$dir/garage.toml" <<TOML
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc_port"
rpc_public_addr = "127.0.0.1:$rpc_port"
rpc_secret = "$rpc_secret"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3_port"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$admin_port"
admin_token = "$admin_token"
TOML
chmod 600 "$dir/garage.toml"

g() { "$garage" -c "$dir/garage.toml" "$@"; }

RUST_LOG="${GARAGE_LOG:-garage=warn}" "$garage" -c "$dir/garage.toml" server >"$dir/garage.log" 2>&1 &
echo $! >"$dir/garage.pid"

for _ in $(seq 1 200); do
  if g status >/dev/null 2>&1; then break; fi
  if ! kill -0 "$(cat "$dir/garage.pid")" 2>/dev/null; then
    echo "garage exited at start; its log:" >&2
    cat "$dir/garage.log" >&2
    exit 1
  fi
  sleep 0.1
done
node_id="$(g node id -q | cut -d@ -f1)"
g layout assign -z dc1 -c 1G "$node_id" >/dev/null
g layout apply --version 1 >/dev/null

# A key named by us (Garage key ids are GK + 24 hex digits, secrets 64 hex digits), so no
# output needs parsing.
key_id="GK$(openssl rand -hex 12)"
secret="$(openssl rand -hex 32)"
g key import --yes -n bunsan "$key_id" "$secret" >/dev/null
for bucket in "$@"; do
  g bucket create "$bucket" >/dev/null
  g bucket allow --read --write --owner "$bucket" --key "$key_id" >/dev/null
done

cat >"$dir/env" <<ENV
GARAGE_ENDPOINT=http://127.0.0.1:$s3_port
GARAGE_REGION=garage
AWS_ACCESS_KEY_ID=$key_id
AWS_SECRET_ACCESS_KEY=$secret
ENV
chmod 600 "$dir/env"
echo "garage ready: http://127.0.0.1:$s3_port (buckets: $*), settings in $dir/env" >&2

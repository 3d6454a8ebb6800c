#!/usr/bin/env bash
# Stop the A1111 server that start.sh started on this port (only that process group).
#   tools/real_hosts/a1111/stop.sh [--dest <hosts>/a1111] [--port 7860]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
hosts=${SEG_HOSTS_DIR:-$(cd "$here/../../.." && cd .. && pwd)/hosts}   # <hosts>: $SEG_HOSTS_DIR, else <checkout>/../hosts
dest=$hosts/a1111 port=7860
while [[ $# -gt 0 ]]; do
  case $1 in --dest) dest=$2; shift 2;; --port) port=$2; shift 2;; *) echo "unknown argument $1" >&2; exit 2;; esac
done
python3 "$here/../serve.py" stop --pidfile "$dest/run/webui-$port.pid"

#!/usr/bin/env bash
# reForge: the same start script as Forge's (tools/real_hosts/forge/start.sh), default port 7871.
exec "$(dirname "${BASH_SOURCE[0]}")/../forge/start.sh" --host reforge --port 7871 "$@"

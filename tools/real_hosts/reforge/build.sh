#!/usr/bin/env bash
# reForge: the same build as Forge's (tools/real_hosts/forge/build.sh), with reForge's pins.
exec "$(dirname "${BASH_SOURCE[0]}")/../forge/build.sh" --host reforge "$@"

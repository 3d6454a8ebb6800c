#!/usr/bin/env bash
# Start the A1111 test install in the background and wait until it serves (API, our script, its
# defaults, a tiny txt2img).  Stop it with stop.sh (same --dest/--port).
#
#   tools/real_hosts/a1111/start.sh [--dest <hosts>/a1111] [--port 7860]
#       [--models <hosts>/models] [--checkpoint seg-random-sd15.safetensors]
#       [--lock shared|exclusive|none] [-- extra WebUI flags]
#
# MALLOC_MMAP_THRESHOLD_ (1 MiB): glibc then maps every tensor >= 1 MiB on its own and returns it on free.
# Without it, switching SDXL base -> refiner -> base (A1111's refiner, fp32) grew the server to 24 GiB and the
# kernel killed it; with it the same switches peak at 15 GiB.
# --lock: the team's memory lock (/tmp/seg-mem.lock), held as long as the server runs: shared for
# SD1.5 work, exclusive when SDXL or the refiner will be loaded.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
hosts=${SEG_HOSTS_DIR:-$(cd "$here/../../.." && cd .. && pwd)/hosts}   # <hosts>: $SEG_HOSTS_DIR, else <checkout>/../hosts
dest=$hosts/a1111 port=7860 models=$hosts/models ckpt=seg-random-sd15.safetensors lock=shared
while [[ $# -gt 0 ]]; do
  case $1 in
    --dest) dest=$2; shift 2;;
    --port) port=$2; shift 2;;
    --models) models=$2; shift 2;;
    --checkpoint) ckpt=$2; shift 2;;
    --lock) lock=$2; shift 2;;
    --) shift; break;;
    *) echo "unknown argument $1" >&2; exit 2;;
  esac
done
# Another helper's server on this port would answer `serve.py wait` for ours (it checks the URL, and the
# SEG script is listed by every host): refuse instead of testing the wrong server.
if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
  echo "port $port is already taken (another server answers there): choose another --port" >&2; exit 1
fi
lockarg=(); [[ $lock != none ]] && lockarg=(--lock "$lock")
run=$dest/run; mkdir -p "$run"
python3 "$here/../serve.py" start --pidfile "$run/webui-$port.pid" --log "$run/webui-$port.log" --cwd "$dest" \
  "${lockarg[@]}" \
  --env HF_HOME="$dest/hf" --env HF_HUB_OFFLINE=1 --env TRANSFORMERS_OFFLINE=1 \
  --env PYTHONUNBUFFERED=1 --env MALLOC_MMAP_THRESHOLD_="${MALLOC_MMAP_THRESHOLD_:-1048576}" \
  -- nice -n 10 "$dest/venv/bin/python" launch.py \
  --skip-prepare-environment --skip-install --skip-version-check --skip-python-version-check \
  --skip-torch-cuda-test --use-cpu all --precision full --no-half --no-half-vae \
  --api --port "$port" --ckpt-dir "$models" --ckpt "$models/$ckpt" --no-download-sd-model \
  --disable-console-progressbars "$@"
python3 "$here/../serve.py" wait --url "http://127.0.0.1:$port" --pidfile "$run/webui-$port.pid" \
  --timeout "${WAIT_TIMEOUT:-1500}" --log-ready "Startup time:"
touch "$dest/READY"

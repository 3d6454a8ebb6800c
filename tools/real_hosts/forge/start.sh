#!/usr/bin/env bash
# Run a Forge, reForge or Forge Neo install made by build.sh, in the foreground, on the CPU, offline, API on
# 127.0.0.1 only. The process that runs the server is this one (exec): stop it by its PID.
#
#   tools/real_hosts/forge/start.sh [--host forge|reforge|forge-neo] [--dest DIR] [--port N] [--models DIR]
#                                   [--probe] [--tiny-dit] [--no-extensions] [--data-dir DIR [--ext PATH]]
#                                   [-- extra host flags]
#
# --models         checkpoint folder (default <hosts>/models; <hosts> is $SEG_HOSTS_DIR, else <checkout>/../hosts)
# --probe          also load tools/real_hosts/forge/probe: GET /seg-probe/calls lists every UNet call
#                  (rows, SEG rows, cond/uncond labels); it changes no computation
# --tiny-dit       also load tools/real_hosts/forge/tiny_dit (Forge, Forge Neo): Flux / Chroma transformers and T5 text
#                  encoders are sized from their weights, so the tiny checkpoints of make_dit_checkpoints.py load
#                  small (see tiny_dit/README.md); without it the link is removed
# --data-dir DIR   a private data folder (the host's --data-dir): its own extensions/ and config.json (copied
#                  from the install's on first use), so a session neither sees nor changes the shared install's
#                  extension links and settings; --probe / --tiny-dit links then go into DIR/extensions
# --ext PATH       with --data-dir: link the SEG extension from PATH as DIR/extensions/sd-webui-seg
# --no-extensions  start without any non-built-in extension (--disable-extra-extensions): the reference
#                  for "SEG disabled is bit-identical to no extension"
# Environment: THREADS (torch threads, default 2).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
hosts=${SEG_HOSTS_DIR:-$(cd "$here/../../.." && cd .. && pwd)/hosts}
host=forge dest= port=7870 models=$hosts/models probe=0 tiny=0 bare=0 data= ext=
while [[ $# -gt 0 ]]; do
  case $1 in
    --host) host=$2; shift 2 ;;
    --dest) dest=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --models) models=$2; shift 2 ;;
    --probe) probe=1; shift ;;
    --tiny-dit) tiny=1; shift ;;
    --data-dir) data=$2; shift 2 ;;
    --ext) ext=$2; shift 2 ;;
    --no-extensions) bare=1; shift ;;
    --) shift; break ;;
    -h|--help) sed -n 2,22p "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
: "${dest:=$hosts/$host}"
[[ -f "$dest/BUILT" ]] || { echo "$dest is not built (no BUILT file): run build.sh first" >&2; exit 1; }

extensions=$dest/extensions
flags=()
if [[ -n $data ]]; then
  mkdir -p "$data/extensions"
  data=$(cd "$data" && pwd)
  extensions=$data/extensions
  [[ -f "$data/config.json" ]] || cp "$dest/config.json" "$data/config.json"
  [[ -n $ext ]] && ln -sfn "$(cd "$ext" && pwd)" "$extensions/sd-webui-seg"
  flags+=(--data-dir "$data")
elif [[ -n $ext ]]; then
  echo "--ext needs --data-dir (the shared install's extension link is build.sh's)" >&2; exit 2
fi
if [[ $probe == 1 ]]; then
  ln -sfn "$here/probe" "$extensions/seg-probe"
else
  rm -f "$extensions/seg-probe"
fi
if [[ $tiny == 1 ]]; then
  ln -sfn "$here/tiny_dit" "$extensions/seg-tiny-dit"
else
  rm -f "$extensions/seg-tiny-dit"
fi
[[ $bare == 1 ]] && flags+=(--disable-extra-extensions)

# Forge Neo parses its command line strictly (modules/shared_cmd_options.py: parser.parse_args) and dropped
# A1111's precision and model flags: no --no-half / --no-half-vae / --precision (its backend runs fp32 on the
# CPU by itself, backend/memory_management.py), no --no-download-sd-model, --ckpt-dirs for --ckpt-dir, and no
# --ckpt: the model is the setting sd_model_checkpoint, so a --ckpt FILE among the extra flags is written there
# (in the config.json this server reads) instead. --attention-pytorch: on the CPU Neo 7862a96 otherwise picks
# attention_basic, whose get_attn_precision (backend/attention.py line 59) reads args.dont_upcast_attention, an
# option Neo no longer defines: every generation fails with AttributeError.
config=${data:-$dest}/config.json
if [[ $host == forge-neo ]]; then
  host_flags=(--ckpt-dirs "$models" --attention-pytorch)
  rest=()
  while [[ $# -gt 0 ]]; do
    if [[ $1 == --ckpt ]]; then
      "$dest/venv/bin/python" -c 'import json, sys
path, name = sys.argv[1], sys.argv[2]
with open(path) as f:
    config = json.load(f)
config["sd_model_checkpoint"] = name
with open(path, "w") as f:
    json.dump(config, f, indent=2)' "$config" "$(basename "$2")"
      shift 2
    else
      rest+=("$1"); shift
    fi
  done
  set -- ${rest[@]+"${rest[@]}"}
else
  host_flags=(--no-half --no-half-vae --precision full --ckpt-dir "$models" --no-download-sd-model)
fi

threads=${THREADS:-2}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DIFFUSERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
export GRADIO_ANALYTICS_ENABLED=False DO_NOT_TRACK=1 PYTHONUNBUFFERED=1
export OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads
# glibc maps every allocation >= 1 MiB on its own and returns it on free: fp32 SDXL on a 24 GiB machine
# otherwise keeps freed weights in a fragmented heap across model (re)loads (see ../a1111/start.sh)
export MALLOC_MMAP_THRESHOLD_=${MALLOC_MMAP_THRESHOLD_:-1048576}
export CUDA_VISIBLE_DEVICES=  # the torch build is a CUDA one; make sure it never looks for a GPU
cd "$dest"
rm -f READY
exec nice -n 10 "$dest/venv/bin/python" launch.py \
  --skip-prepare-environment --skip-python-version-check --skip-torch-cuda-test --skip-version-check \
  --always-cpu --api --server-name 127.0.0.1 --port "$port" --no-hashing \
  "${host_flags[@]}" ${flags[@]+"${flags[@]}"} "$@"

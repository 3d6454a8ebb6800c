#!/usr/bin/env bash
# Build a CPU test install of AUTOMATIC1111 stable-diffusion-webui 1.10.1 that runs offline.
#
#   tools/real_hosts/a1111/build.sh [--src GIT_URL_OR_CLONE] [--dest DIR] [--ext EXTENSION_DIR]
#                                   [--repos DIR_OF_CLONES] [--probe]
#
# --src    where to clone the WebUI from (default: $A1111_SRC, else the official repository URL);
#          it must contain commit $A1111_COMMIT.
# --dest   the install (default $SEG_HOSTS_DIR/a1111, else <checkout>/../hosts/a1111).
# --repos  (default $SEG_MIRROR_DIR) a folder holding clones (or bare mirrors) of the repositories the WebUI itself clones at
#          start-up, named like the fetch mirrors: Stability-AI+stablediffusion/repo, ...; a repository
#          missing there is cloned from its GitHub URL.
# --probe  also install tools/real_hosts/a1111/probe (extensions/seg-probe: counts UNet calls; tests only).
# --ext    the extension to install (symlinked as extensions/sd-webui-seg; default: this repository).
# The host needs no network once built: HF tokenizer/config files for CLIP ViT-L/14 are generated
# from open_clip's bundled BPE, OpenCLIP bigG's config is bundled with open_clip.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
A1111_COMMIT=82a973c04367123ae98bd9abdf80d9eda9b910e2   # v1.10.1
src=${A1111_SRC:-https://github.com/AUTOMATIC1111/stable-diffusion-webui.git}
hosts=${SEG_HOSTS_DIR:-$(cd "$here/../../.." && cd .. && pwd)/hosts}   # default installs folder: <checkout>/../hosts
dest=$hosts/a1111
ext=$(cd "$here/../../.." && pwd)
repos=${SEG_MIRROR_DIR:-}
python=${PYTHON:-python3.11}
probe=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --src) src=$2; shift 2;;
    --dest) dest=$2; shift 2;;
    --ext) ext=$(cd "$2" && pwd); shift 2;;
    --repos) repos=$2; shift 2;;
    --probe) probe=1; shift;;
    *) echo "unknown argument $1" >&2; exit 2;;
  esac
done
log() { echo "[build a1111 $(date -u +%H:%M:%S)] $*"; }

# clone_at URL_OR_PATH DIR COMMIT: a plain checkout of one commit (no network when given a local path)
# Fetched mirrors can lack some large blobs (sample images); those paths are left out (checked out
# path by path, HEAD detached at the commit) instead of failing the whole checkout.
clone_at() {
  if [[ ! -d $2/.git ]]; then git clone -q --no-checkout "$1" "$2"; fi
  local tree=$2/.git/tree-$3
  git -C "$2" ls-tree -r "$3" | awk '$2 == "blob"' > "$tree"
  cut -d' ' -f3 "$tree" | cut -f1 | git -C "$2" cat-file --batch-check='%(objecttype)' |
    awk '{ print ($2 == "missing") ? "missing" : "present" }' > "$tree.kind"   # a missing one reads "SHA missing"
  if grep -q missing "$tree.kind"; then
    paste -d' ' "$tree.kind" "$tree" | awk '$1 != "missing"' | cut -f2- > "$tree.present"
    git -C "$2" checkout -q -f "$3" --pathspec-from-file="$tree.present"
    git -C "$2" update-ref --no-deref HEAD "$3"
    echo "  $2: left out (absent from the source): $(paste -d' ' "$tree.kind" "$tree" | awk '$1 == "missing"' | cut -f2- | tr '\n' ' ')"
  else
    git -C "$2" -c advice.detachedHead=false checkout -q -f "$3"
  fi
}

log "webui from $src at $A1111_COMMIT"
clone_at "$src" "$dest" "$A1111_COMMIT"

# The repositories launch_utils.prepare_environment() would clone, at the commits 1.10.1 pins there.
mkdir -p "$dest/repositories"
while read -r dir name commit; do
  from=https://github.com/${name/+//}.git
  [[ -n $repos && -d $repos/$name/repo ]] && from=$repos/$name/repo
  log "repositories/$dir from $from"
  clone_at "$from" "$dest/repositories/$dir" "$commit"
done <<'LIST'
stable-diffusion-webui-assets AUTOMATIC1111+stable-diffusion-webui-assets 6f7db241d2f8ba7457bac5ca9753331f0c266917
stable-diffusion-stability-ai Stability-AI+stablediffusion cf1d67a6fd5ea1aa600c4df58e5b47da45f6bdbf
generative-models Stability-AI+generative-models 45c443b316737a4ab6e40413d7794a7f5657c19f
k-diffusion crowsonkb+k-diffusion ab527a9a6d347f364e3d185ba6d714e22d80cb3c
BLIP salesforce+BLIP 48211a1594f1321b00f14c9f7a5b4813144b2fb9
CLIP openai+CLIP d50d76daa670286dd6cacf3bcd80b5e4823fc8e1
LIST

if [[ ! -x $dest/venv/bin/python ]]; then
  log "venv"
  "$python" -m venv "$dest/venv"
fi
pip=("$dest/venv/bin/python" -m pip install -q --disable-pip-version-check)
torch=(torch==2.14.1 torchvision==0.29.1)
# requirements_versions.txt pins setuptools==69.5.1, which torch >= 2.13 refuses (pip would quietly fall
# back to torch 2.12): take a setuptools torch accepts that still ships pkg_resources.
sed -E 's#^setuptools==69\.5\.1.*#setuptools>=77.0.3,<81#' "$dest/requirements_versions.txt" > "$dest/seg-requirements.txt"
stamp=$dest/venv/.seg-installed
want=$(cat "$dest/seg-requirements.txt"; echo "${torch[*]} CLIP")
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  log "torch + requirements"
  nice -n 10 "${pip[@]}" "${torch[@]}" -r "$dest/seg-requirements.txt"
  # what prepare_environment installs besides the requirements: OpenAI's CLIP (k-diffusion imports it)
  nice -n 10 "${pip[@]}" --no-build-isolation "${torch[@]}" "$dest/repositories/CLIP"
  echo "$want" > "$stamp"
fi
"$dest/venv/bin/python" -c "import torch, torchvision, clip; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"

log "offline Hugging Face files"
"$dest/venv/bin/python" "$here/hf_offline.py" "$dest/hf"

log "settings and extension"
"$dest/venv/bin/python" - "$dest/config.json" <<'PY'
import json, os, sys
path = sys.argv[1]
cfg = json.load(open(path)) if os.path.exists(path) else {}
cfg.update({
    "live_previews_enable": False,       # no preview decoding (TAESD would be downloaded)
    "show_progress_every_n_steps": -1,
    "sd_checkpoint_cache": 0,
    "sd_vae_checkpoint_cache": 0,
    "auto_launch_browser": "Disable",
})
json.dump(cfg, open(path, "w"), indent=2)
PY
mkdir -p "$dest/extensions"
ln -sfn "$ext" "$dest/extensions/sd-webui-seg"
if [[ $probe = 1 ]]; then ln -sfn "$here/probe" "$dest/extensions/seg-probe"; else rm -f "$dest/extensions/seg-probe"; fi
log "done: $dest (start with tools/real_hosts/a1111/start.sh)"

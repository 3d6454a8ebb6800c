#!/usr/bin/env bash
# Build a CPU test install of Forge (2024+ `backend/` layout), reForge (`ldm_patched`) or Forge Neo (the
# WebUI-Neo-Forge fork of Haoming02's `neo` branch) at a pinned commit, with this extension linked in. Nothing here
# is committed: the host lives under --dest.
#
#   tools/real_hosts/forge/build.sh [--host forge|reforge|forge-neo] [--src GIT_URL_OR_LOCAL_CLONE] [--commit SHA]
#                                   [--dest DIR] [--ext PATH] [--mirror DIR]
#
# --src      the host's repository (default: its GitHub URL); a local clone or bare git dir works too
# --mirror   a folder holding bare clones as OWNER+NAME/repo (default $SEG_MIRROR_DIR); the host and its helper
#            repositories are taken from there when present
# --ext      the extension to link as extensions/sd-webui-seg (default: the repository this script is in)
# Environment: PYTHON (default python3.11), PIP_FLAGS (extra flags for every pip install).
# Writes DEST/BUILT when the install is complete; tools/real_hosts/forge/start.sh runs it.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
host=forge src= commit= dest= ext=$(cd "$here/../../.." && pwd) mirror=
while [[ $# -gt 0 ]]; do
  case $1 in
    --host) host=$2; shift 2 ;;
    --src) src=$2; shift 2 ;;
    --commit) commit=$2; shift 2 ;;
    --dest) dest=$2; shift 2 ;;
    --ext) ext=$2; shift 2 ;;
    --mirror) mirror=$2; shift 2 ;;
    -h|--help) sed -n 2,15p "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

# Pinned commits: the host, and the helper repositories its launcher would clone into repositories/
# (same commits as the host's modules/launch_utils.py names). reqs: the host's pinned requirements file;
# launcher_pkgs: what its prepare_environment installs besides that file (with --skip-prepare-environment nothing
# else would).
reqs=requirements_versions.txt launcher_pkgs=()
case $host in
  forge)
    github=lllyasviel/stable-diffusion-webui-forge
    : "${commit:=dfdcbab685e57677014f05a3309b48cc87383167}"  # main, 2025-06-26
    helpers=(
      "AUTOMATIC1111/stable-diffusion-webui-assets 6f7db241d2f8ba7457bac5ca9753331f0c266917 stable-diffusion-webui-assets"
      "lllyasviel/huggingface_guess 84826248b49bb7ca754c73293299c4d4e23a548d huggingface_guess"
      "salesforce/BLIP 48211a1594f1321b00f14c9f7a5b4813144b2fb9 BLIP"
      "openai/CLIP d50d76daa670286dd6cacf3bcd80b5e4823fc8e1 CLIP"
    ) ;;
  reforge)
    github=Panchovix/stable-diffusion-webui-reForge
    : "${commit:=3b56b268ad9158ee8b30900973b6ccda4ec22241}"  # main, 2026-03-11
    # reForge's launcher names joypaul162/Stability-AI-stablediffusion f16630a9 (a re-upload of the
    # withdrawn Stability-AI repository); the original at the commit A1111 uses has the same `ldm` package.
    helpers=(
      "AUTOMATIC1111/stable-diffusion-webui-assets 6f7db241d2f8ba7457bac5ca9753331f0c266917 stable-diffusion-webui-assets"
      "Stability-AI/stablediffusion cf1d67a6fd5ea1aa600c4df58e5b47da45f6bdbf stable-diffusion-stability-ai"
      "Stability-AI/generative-models 45c443b316737a4ab6e40413d7794a7f5657c19f generative-models"
      "crowsonkb/k-diffusion ab527a9a6d347f364e3d185ba6d714e22d80cb3c k-diffusion"
      "salesforce/BLIP 48211a1594f1321b00f14c9f7a5b4813144b2fb9 BLIP"
      "openai/CLIP d50d76daa670286dd6cacf3bcd80b5e4823fc8e1 CLIP"
    ) ;;
  forge-neo)
    github=papaioannou-themistoklis/WebUI-Neo-Forge
    : "${commit:=7862a9646a01c7268bec3a425d3ea80598d72e48}"  # main, 2025-10-05
    # Neo's launcher clones no repositories: huggingface_guess and k_diffusion are bundled under
    # modules_forge/packages, the UI assets under modules/web. Its prepare_environment installs OpenAI's CLIP from
    # a GitHub zip of d50d76da (the commit cloned here, then pip-installed below like the other hosts'), and
    # packaging 24.2, gradio 4.40.0 with gradio_imageslider 0.0.20 and gradio_rangeslider 0.0.6 (not in its
    # requirements.txt). nunchaku (a CUDA wheel from GitHub; the launcher goes on without it), xformers, sage and
    # flash attention are left out: GPU only.
    helpers=(
      "openai/CLIP d50d76daa670286dd6cacf3bcd80b5e4823fc8e1 CLIP"
    )
    reqs=requirements.txt
    launcher_pkgs=(packaging==24.2 gradio==4.40.0 gradio_imageslider==0.0.20 gradio_rangeslider==0.0.6) ;;
  *) echo "--host must be forge, reforge or forge-neo" >&2; exit 2 ;;
esac
hosts=${SEG_HOSTS_DIR:-$(cd "$here/../../.." && cd .. && pwd)/hosts}   # default installs folder: <checkout>/../hosts
: "${dest:=$hosts/$host}"
: "${mirror:=${SEG_MIRROR_DIR:-}}"
python=${PYTHON:-python3.11}
read -r -a pip_flags <<< "${PIP_FLAGS:-}"

source_of() {  # owner/name -> a local mirror when there is one, else the GitHub URL
  local m="${mirror:+$mirror/${1/\//+}/repo}"
  if [[ -n "$m" && -d "$m" ]]; then echo "$m"; else echo "https://github.com/$1.git"; fi
}

checkout() {  # source commit dir: a clean checkout of one commit (re-runs reuse the clone)
  local from=$1 sha=$2 dir=$3
  [[ -d "$dir/.git" ]] || git clone -q --no-checkout "$from" "$dir"
  git -C "$dir" cat-file -e "$sha^{commit}" 2>/dev/null || git -C "$dir" fetch -q origin
  # Snapshots may lack their largest files (sample images, an LLM tokenizer SD never uses): leave those
  # out of the work tree instead of failing the checkout, and say which.
  local missing
  missing=$(git -C "$dir" ls-tree -r --full-tree "$sha" | awk '$2 == "blob" {print $3}' \
    | git -C "$dir" cat-file --batch-check='%(objectname) %(objecttype)' | awk '$2 == "missing" {print $1}')
  if [[ -n "$missing" ]]; then
    local paths
    paths=$(git -C "$dir" ls-tree -r --full-tree "$sha" | grep -F -f <(echo "$missing") | cut -f2-)
    echo "   $(basename "$dir"): not in this snapshot, left out: $(echo $paths)"
    git -C "$dir" sparse-checkout set --no-cone '/*' $(sed 's#^#!/#' <<< "$paths") 2>/dev/null
  fi
  git -C "$dir" -c advice.detachedHead=false checkout -q -f "$sha"
}

started=$(date +%s)
rm -f "$dest/BUILT" "$dest/READY"
mkdir -p "$dest"
echo "== $host $commit -> $dest"
checkout "${src:-$(source_of "$github")}" "$commit" "$dest"
mkdir -p "$dest/repositories"
for h in "${helpers[@]}"; do
  read -r name sha dir <<< "$h"
  checkout "$(source_of "$name")" "$sha" "$dest/repositories/$dir"
done

# The host's own venv. torch first (this machine serves a CUDA build of torch 2.14.1 that runs on the CPU),
# then the host's pinned requirements; lines pip cannot take from a package index are rewritten.
[[ -x "$dest/venv/bin/python" ]] || "$python" -m venv "$dest/venv"
pip=("$dest/venv/bin/python" -m pip install -q --disable-pip-version-check "${pip_flags[@]}")
torch=(torch==2.14.1 torchvision==0.29.1)
nice -n 10 "${pip[@]}" "${torch[@]}"
# All three hosts pin setuptools==69.5.1, which torch >= 2.13 refuses (it needs >= 77.0.3; pip would quietly
# go back to torch 2.12): take a setuptools that torch accepts and that still ships pkg_resources.
# reForge pins a pydantic 1.10.15 re-release from a GitHub download; PyPI's 1.10.15 is the same version.
# Neo's requirements.txt ends with an unpinned `torch` line: the pins given here decide it.
sed -E -e 's#^setuptools==69\.5\.1.*#setuptools>=77.0.3,<81#' \
  -e 's#^https://github.com/Panchovix/pydantic-fixreforge/.*#pydantic==1.10.15#' \
  "$dest/$reqs" > "$dest/seg-requirements.txt"
# Neo's launcher installs gradio before its requirements, in a pip call of its own: gradio 4.40.0 asks for
# pillow < 11, requirements.txt pins Pillow 11.3.0, and one resolve of both is impossible. Two calls in the
# launcher's order end where Neo's own install ends (Pillow 11.3.0; pip warns about gradio's bound).
(( ${#launcher_pkgs[@]} )) && nice -n 10 "${pip[@]}" "${torch[@]}" "${launcher_pkgs[@]}"
nice -n 10 "${pip[@]}" "${torch[@]}" -r "$dest/seg-requirements.txt"
# What the launchers install besides the requirements: OpenAI's CLIP package from that repository (reForge's
# k-diffusion imports `clip` at startup); joblib for the built-in soft-inpainting script.
nice -n 10 "${pip[@]}" --no-build-isolation "${torch[@]}" "$dest/repositories/CLIP" joblib
# Forge: the requirements pull in sentencepiece 0.2.3, whose sentencepiece_model_pb2 needs protobuf >= 5
# (google.protobuf.runtime_version), but Forge pins protobuf 3.20. A T5 tokenizer shipped without tokenizer.json
# (Forge's SD3 T5, converted from the slow tokenizer at load) then fails with ImportError and SD3 never loads;
# 0.2.0 works with protobuf 3.20. (Flux's and Chroma's T5 tokenizers load without it.)
[[ $host == forge ]] && nice -n 10 "${pip[@]}" sentencepiece==0.2.0

# The extension, linked so that edits in the repository are live.
mkdir -p "$dest/extensions"
ln -sfn "$(cd "$ext" && pwd)" "$dest/extensions/sd-webui-seg"

# Settings: no live previews (reForge's default preview method downloads an approximation model),
# nothing fetched for the UI.
[[ -f "$dest/config.json" ]] || echo '{}' > "$dest/config.json"
"$dest/venv/bin/python" - "$dest/config.json" <<'EOF'
import json, sys
path = sys.argv[1]
with open(path) as f:
    config = json.load(f)
config.update({
    "live_previews_enable": False,
    "show_progress_every_n_steps": -1,
    "show_progress_type": "Approx cheap",
    "auto_launch_browser": "Disable",
    "samples_save": False,
    "grid_save": False,
})
with open(path, "w") as f:
    json.dump(config, f, indent=2)
EOF

{
  echo "host=$host"
  echo "commit=$(git -C "$dest" rev-parse HEAD)"
  echo "extension=$(readlink "$dest/extensions/sd-webui-seg")"
  echo "torch=$("$dest/venv/bin/python" -c 'import torch; print(torch.__version__)')"
  echo "seconds=$(( $(date +%s) - started ))"
  echo "disk=$(du -sh "$dest" | cut -f1)"
} > "$dest/BUILT"
cat "$dest/BUILT"

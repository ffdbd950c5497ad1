#!/usr/bin/env bash
# Does a SISTA release load under transformers VERSION? Builds (or reuses) a venv with the CPU torch and that
# transformers, then runs check_transformers_version.py with the project's environment (the active venv) building
# the releases and the new venv loading them through the Auto classes with trust_remote_code=True.
#
#   . .venv/bin/activate && bash tests/compat/check_transformers_version.sh 5.20.0
#
# Environment: COMPAT_VENV_ROOT (default /tmp), TORCH_SPEC (default torch==2.13.0, the CPU build; installed first so
# that no CUDA torch is pulled), PYTHON (the interpreter the venv is made from, default python3).
# Needs PyPI the first time; nothing else touches the network.
set -euo pipefail
if [ $# -ne 1 ]; then
    echo "usage: $0 TRANSFORMERS_VERSION (e.g. 5.20.0)" >&2
    exit 2
fi
version="$1"
repo_root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="${COMPAT_VENV_ROOT:-/tmp}/sista-compat-transformers-${version}"

if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import transformers, sys; sys.exit(transformers.__version__ != '$version')" 2>/dev/null; then
    rm -rf "$venv"
    "${PYTHON:-python3}" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet "${TORCH_SPEC:-torch==2.13.0}"
    # the library's own requirements only (setup.cfg install_requires), at the version under test
    "$venv/bin/python" -m pip install --quiet "transformers==${version}" safetensors numpy pillow
fi
"$venv/bin/python" -m pip list 2>/dev/null | grep -iE '^(torch|transformers|tokenizers|huggingface[-_]hub) ' || true

cd "$repo_root"
HF_HUB_OFFLINE=1 python tests/compat/check_transformers_version.py --python "$venv/bin/python"

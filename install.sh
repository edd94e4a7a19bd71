#!/usr/bin/env bash
# One command to install Finetune Studio on Linux or macOS:
#   ./install.sh [--with-llama-cpp] [--venv DIR]
# A virtual environment (uv where it is installed, else python -m venv), the torch build that fits this machine (a
# CUDA build where an NVIDIA driver is present, the CPU build elsewhere; the rule is studio/core/system/
# torch_build.py, the doctor's too), the studio with the versions CI tests, a desktop entry, then the doctor.
#
# Environment: PYTHON (the interpreter to build the venv from, default python3), FINETUNE_STUDIO_NO_UV=1 (use
# python -m venv even where uv is installed), TORCH_WHEELS=DIR (a folder holding the chosen torch wheel, for offline
# or mirrored installs; the build chosen still pins the wheel's tag).
set -euo pipefail
cd "$(dirname "$0")"
REPO=$PWD

VENV=.venv
LLAMA=""
while [ $# -gt 0 ]; do
    case "$1" in
        --with-llama-cpp) LLAMA=1 ;;
        --venv) VENV=$2; shift ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown option $1 (see ./install.sh --help)" >&2; exit 2 ;;
    esac
    shift
done

PYTHON=${PYTHON:-python3}
command -v "$PYTHON" >/dev/null || { echo "install.sh: $PYTHON not found: install Python 3.10 or newer" >&2; exit 2; }
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || { echo "install.sh: $("$PYTHON" --version) is too old: Finetune Studio needs Python 3.10 or newer" >&2; exit 2; }

# The machine's facts, and the torch build for them.
case "$(uname -s)" in
    Linux) OS=linux ;;
    Darwin) OS=darwin ;;
    *) echo "install.sh: $(uname -s) is not Linux or macOS; on Windows follow the README's steps" >&2; exit 2 ;;
esac
MACHINE=$(uname -m)
DRIVER=""
if command -v nvidia-smi >/dev/null; then
    DRIVER=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n1 | tr -d ' ' || true)
fi
CHOICE=$("$PYTHON" -I studio/core/system/torch_build.py --os "$OS" --machine "$MACHINE" --driver "$DRIVER") || {
    echo "install.sh: $(echo "$CHOICE" | sed -n 3p)" >&2; exit 2; }
LOCAL=$(echo "$CHOICE" | sed -n 1p)
INDEX=$(echo "$CHOICE" | sed -n 2p)
LABEL=$LOCAL
[ "$LOCAL" = "-" ] && LABEL="PyPI's"
echo "torch build: $LABEL — $(echo "$CHOICE" | sed -n 3p)"
TORCH_VERSION=$(sed -n 's/^torch==\([^ #]*\).*/\1/p' resources/ci-constraints.txt)
TORCH="torch==$TORCH_VERSION"
[ "$LOCAL" != "-" ] && TORCH="$TORCH+$LOCAL"

if [ -z "${FINETUNE_STUDIO_NO_UV:-}" ] && command -v uv >/dev/null; then
    echo "virtual environment: $VENV (uv)"
    uv venv --quiet --allow-existing --python "$PYTHON" "$VENV"
    install() { uv pip install --quiet --python "$VENV/bin/python" "$@"; }
else
    echo "virtual environment: $VENV (python -m venv)"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    install() { "$VENV/bin/python" -m pip install --quiet "$@"; }
fi

if [ -n "${TORCH_WHEELS:-}" ]; then
    install --find-links "$TORCH_WHEELS" "$TORCH"
elif [ "$INDEX" != "-" ]; then
    install --extra-index-url "$INDEX" "$TORCH"   # the tag in the pin picks the build; see install_command
else
    install "$TORCH"
fi
EXTRAS=""
[ -n "$LLAMA" ] && EXTRAS="[llama-cpp]"   # llama.cpp's quantizer for K-quant GGUF (compiles: minutes)
install -c resources/ci-constraints.txt "$REPO$EXTRAS"

# The desktop entry (Linux): the menu finds the studio, its icon and this venv's command.
if [ "$OS" = linux ]; then
    APPS=${XDG_DATA_HOME:-$HOME/.local/share}/applications
    ICONS=${XDG_DATA_HOME:-$HOME/.local/share}/icons/hicolor/256x256/apps
    mkdir -p "$APPS" "$ICONS"
    sed "s|^Exec=.*|Exec=$(cd "$VENV" && pwd)/bin/finetune-studio|" packaging/linux/finetune-studio.desktop \
        > "$APPS/finetune-studio.desktop"
    [ -f resources/icons/finetune-studio.png ] && cp resources/icons/finetune-studio.png "$ICONS/finetune-studio.png"
    echo "desktop entry: $APPS/finetune-studio.desktop"
fi

echo "checking this machine (finetune-studio doctor):"
status=0
"$VENV/bin/finetune-studio" doctor || status=$?
echo
if [ "$status" -eq 0 ]; then
    echo "Installed. Start it from the applications menu, or: $VENV/bin/finetune-studio"
else
    echo "Installed, but a check failed (above, with its fix). After fixing it: $VENV/bin/finetune-studio doctor"
fi
exit "$status"

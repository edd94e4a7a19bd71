#!/usr/bin/env bash
# The wheels a lent GPU machine lacks (its image has torch, transformers and peft, not the rest of the stack),
# downloaded here for its Python and split into two folders that each fit the device tool's 64 MiB carry:
#   .gpu-wheels/a  bitsandbytes (CUDA build, ~43 MB), trl, accelerate, datasets and the small dependencies
#   .gpu-wheels/b  pyarrow (~55 MB), which datasets needs
# On the device, install each carry as it arrives, in two calls made back to back (the machine stays warm):
#   run(carry=[".gpu-wheels/a"], command="pip install -q --no-deps .gpu-wheels/a/*.whl")
#   run(carry=[".gpu-wheels/b"], command="pip install -q --no-deps .gpu-wheels/b/*.whl && python benchmarks/fit_gpu.py ...")
# Usage: bash benchmarks/gpu_wheels.sh [PYTHON_VERSION]   (default 3.11; check the device's with `python -V`)
set -euo pipefail
cd "$(dirname "$0")/.."
py="${1:-3.11}"
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux2010_x86_64)
fetch() {  # fetch FOLDER REQUIREMENT...
    local folder="$1"; shift
    mkdir -p "$folder"
    python -m pip download --quiet --no-deps --only-binary=:all: "${platforms[@]}" --python-version "$py" \
        -d "$folder" "$@"
}
fetch .gpu-wheels/a "bitsandbytes==0.50.2" "trl==1.16.0" "accelerate>=1.0" "datasets>=3.0" pandas dill multiprocess \
    xxhash fsspec platformdirs psutil tomli-w nvidia-ml-py "gguf>=0.19" sacrebleu
fetch .gpu-wheels/b pyarrow
for folder in .gpu-wheels/a .gpu-wheels/b; do
    size=$(du -sm "$folder" | cut -f1)
    echo "$folder: ${size} MiB"
    if [ "$size" -ge 64 ]; then echo "$folder is over the 64 MiB carry limit" >&2; exit 1; fi
done

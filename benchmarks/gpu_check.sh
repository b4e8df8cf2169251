#!/usr/bin/env bash
# The GPU check on the device machine (no package registry there; its own CUDA torch stays).
# Here, first:  bash benchmarks/gpu_check.sh --prepare   (wheels into .whl/, IBSR18 into data/)
# Then, with the device tool:  run(command="bash benchmarks/gpu_check.sh", carry=[".whl", "data/IBSR18"])
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--prepare" ]; then
  # every dependency but torch and torchvision, pure-Python where possible; the machine's
  # numpy, scipy and pandas are used when its Python has them (pip says what is missing)
  .venv/bin/python -m pip download -q --no-deps -d .whl monai segmentation-models-pytorch \
    timm safetensors huggingface_hub nibabel edt einops seaborn tabulate psutil tqdm pyyaml
  mkdir -p data && rm -rf data/IBSR18 && cp -r ../shared/data/IBSR18 data/IBSR18
  du -sh .whl data/IBSR18
  exit 0
fi
python -m pip install -q --no-index --find-links .whl --no-deps .whl/*.whl \
  || echo "gpu_check: some wheels did not install (pip says why above); going on with what the machine has"
python -m pip install -q --no-deps --no-build-isolation -e . || export PYTHONPATH="$PWD"
python -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))"
python benchmarks/gpu_check.py "$@"

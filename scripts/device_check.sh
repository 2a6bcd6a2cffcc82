#!/usr/bin/env bash
# One run on a lent GPU machine (the device tool's `run`; see README "Benchmark"): the CUDA tests, the
# benchmark's CUDA figures, logs and JSON under $OUT. Python packages the machine lacks (zarr and its
# needs, imagecodecs, openslide) travel as wheels in .whl/ (carry it), made here with:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#     zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c==1.9.0 imagecodecs==2026.3.6 \
#     openslide-python==1.4.7 openslide-bin==4.0.1.2
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-/tmp/device-out}"
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 ZOOMIN_DATA=/tmp/zoomin-data ZOOMIN_RESULTS="$OUT/results"
nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total --format=csv
python3 -c "import torch, zarr, tifffile; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name())"
echo "== CUDA tests"
timeout "${TESTS_TIMEOUT:-200}" python3 -m pytest tests/core/test_cuda.py -q -p no:cacheprovider -rfE 2>&1 | tee "$OUT/cuda_tests.log" | tail -25
echo "== benchmark, CUDA"
timeout "${BENCH_TIMEOUT:-330}" python3 -m zoomin_lib.bench --device cuda --out "$OUT/bench_cuda.json" 2>&1 | tee "$OUT/bench_cuda.log"
echo "== zoomin predict on a generated 1e9-pixel slide, CUDA (issue 17): smoke training on the stand-in, then predict"
cli() { timeout "${CLI_TIMEOUT:-300}" python3 -m zoomin_lib "$@" 2>&1 | tee -a "$OUT/cli.log" | tail -4; }
cli stand-in /tmp/zoomin-standin --profile smoke \
  && cli train --data-dir /tmp/zoomin-standin --config camelyon16 --out /tmp/zoomin-run --profile smoke --device cuda --no-progress \
  && mkdir -p /tmp/zoomin-data && python3 -c "from zoomin_lib.infra.slides import write_periodic_slide as w; w('/tmp/zoomin-data/gigapixel.tif', 31623)" \
  && cli predict --checkpoint /tmp/zoomin-run/checkpoint.pt --out "$OUT/predict_1e9" --device cuda /tmp/zoomin-data/gigapixel.tif

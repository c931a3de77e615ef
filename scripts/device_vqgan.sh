#!/usr/bin/env bash
# One lease of a lent GPU (the device tool's H200), in one call of at most 10 minutes:
#   1. scripts/bench_gpu.py (the GPU decode kernels, alone on the GPU),
#   2. image/vqgan training, every phase on a time budget (scripts/train_vqgan.py --minutes):
#      main (from the shipped model) -> levels -> finetune -> prior -> export -> restore,
#      with tests/test_kernels.py on the real GPU alongside,
#   3. the results packed under $OUT (the shipped-model files, the work state, logs).
# Prepare on the development machine: the training pool as JPEG q95 4:4:4 in .devdata/train (its
# PNGs are too big for the 64 MiB transfer) and Python 3.12 wheels of nzip's dependencies that the
# device image lacks in .whl, both ignored by git; then call the device tool with carry
# [".whl", ".devdata"] and the command `bash scripts/device_vqgan.sh`:
#   printf '/.whl/\n/.devdata/\n' >> .git/info/exclude; mkdir -p .devdata/train .whl
#   python -c "from PIL import Image; from pathlib import Path; [Image.open(f).convert('RGB').save(
#     f'.devdata/train/{f.stem}.jpg', quality=95, subsampling=0) for f in Path('data/images/train').glob('*.png')]"
#   for p in zarr==3.1.5 numcodecs==0.16.6 donfig==0.8.1.post1 crc32c==2.9.post0 google-crc32c==1.9.0 \
#            pytorch-msssim==1.0.0 constriction==0.5.0; do python3 -m pip download -q --no-deps \
#     --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
#     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl $p; done
# Afterwards: cat $OUT/pack.tar.* | tar x   (the new nzip/pretrained files and out/vqgan's logs).
# Usage there: bash scripts/device_vqgan.sh   (times in minutes: MAIN_MIN FT_MIN RESTORE_MIN; DEADLINE:
# seconds after the start at which training is interrupted and packing begins; SKIP_BENCH=1 and
# SKIP_TESTS=1 give the whole lease to training)
set -u
OUT=${OUT:-out/device}
mkdir -p "$OUT"
T0=$(date +%s)
log() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a "$OUT/run.log"; }
if [ -d .whl ] && [ -z "${NO_WHL:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=10
DATA=${DATA:-.devdata/train}
W=out/vqgan
MAIN_MIN=${MAIN_MIN:-2.8} FT_MIN=${FT_MIN:-1.6} RESTORE_MIN=${RESTORE_MIN:-0.8}
DEVICE=${DEVICE:-cuda} BATCH=${BATCH:-32} CROP=${CROP:-256} DEADLINE=${DEADLINE:-540}
nvidia-smi -L 2>&1 | tee -a "$OUT/run.log"
python3 -c "import torch, triton, numpy; print('torch', torch.__version__, 'triton', triton.__version__, 'numpy', numpy.__version__)" 2>&1 | tee -a "$OUT/run.log"
log "start; $(ls "$DATA" | wc -l) training images"

mkdir -p $W
[ -z "${SKIP_BENCH:-}" ] && timeout -s INT 90 python3 scripts/bench_gpu.py --scale 0.25 --repeat 5 --json $W/gpu_bench.json > "$OUT/gpu_bench.log" 2>&1
log "bench_gpu rc=$?"

late() { [ $(( $(date +%s) - T0 )) -gt $(( DEADLINE - 40 )) ] && log "no time left for $1" ; }
train() {
  local T="python3 scripts/train_vqgan.py"
  local A="--data $DATA --work $W --device $DEVICE --threads 8"
  $T main $A --init nzip/pretrained/vqgan-f16.safetensors --steps 1000000 --minutes "$MAIN_MIN" \
     --batch $BATCH --crop $CROP --lr 2e-4 || return 1
  log "main done: $(cat $W/main.json)"
  late levels && return 1
  $T levels $A || return 1
  log "levels done"
  late finetune && return 1
  $T finetune $A --steps 1000000 --minutes "$FT_MIN" --batch $BATCH --crop $CROP || return 1
  log "finetune done: $(cat $W/finetune.json)"
  local R=2  # prior tables counted on the grids the codec sends (~30 s on a CPU); nearest codes if late
  late "the prior's recount" && R=0
  $T prior $A --rounds $R && $T export $A || return 1
  log "export done"
  late restore && return 1
  $T restore $A --steps 1000000 --minutes "$RESTORE_MIN" --batch 64 || return 1
  log "restore done"
}
( train ) > "$OUT/train.log" 2>&1 &
PID=$!
[ -z "${SKIP_TESTS:-}" ] && timeout -s INT 170 python3 -m pytest -q -p no:cacheprovider tests/test_kernels.py > "$OUT/gpu_tests.log" 2>&1
log "gpu tests rc=$? ($(tail -1 "$OUT/gpu_tests.log"))"
# hard stop for training, leaving time to pack: DEADLINE seconds after the start
while kill -0 $PID 2>/dev/null && [ $(( $(date +%s) - T0 )) -lt "$DEADLINE" ]; do sleep 2; done
if kill -0 $PID 2>/dev/null; then
  log "training over time: interrupting"; pkill -INT -f train_vqgan.py; sleep 8
  pkill -9 -f train_vqgan.py; kill $PID 2>/dev/null
fi
wait $PID; log "training rc=$?"
tr '\r' '\n' < "$OUT/train.log" | grep -v "it/s\|s/it" | tail -40

# pack: the new shipped files if the export ran, else the work state in float16
PACK=(out/vqgan/*.json out/vqgan/*.log out/vqgan/levels.safetensors out/vqgan/restore/state.json)
if [ -f $W/prior.safetensors ] && [ nzip/pretrained/vqgan-f16.safetensors -nt $W/prior.safetensors ]; then
  PACK+=(nzip/pretrained/manifest.json nzip/pretrained/vqgan-f16*.safetensors)
else
  python3 - <<'PY'
import glob
from safetensors.torch import load_file, save_file
from safetensors import safe_open
for f in glob.glob("out/vqgan/main.safetensors") + glob.glob("out/vqgan/finetune.safetensors"):
    with safe_open(f, "pt") as h:
        meta = h.metadata()
    save_file({k: v.half() if k != "codebook" else v for k, v in load_file(f).items()}, f[:-12] + "f16.safetensors", metadata=meta)
PY
  PACK+=(out/vqgan/*.f16.safetensors)
fi
tar cf /tmp/pack.tar --ignore-failed-read "${PACK[@]}" 2>/dev/null
split -b 15m -d /tmp/pack.tar "$OUT/pack.tar."
ls -la "$OUT"; log "packed $(du -b /tmp/pack.tar | cut -f1) bytes"

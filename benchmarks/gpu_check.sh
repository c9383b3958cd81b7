#!/usr/bin/env bash
# The GPU check: one script for a machine with a GPU, about 8 minutes, its results under $OUT.
#
#   OUT=/tmp/gpu-check bash benchmarks/gpu_check.sh            # on a GPU machine (CUDA)
#   OUT=/tmp/gpu-check bash benchmarks/gpu_check.sh --dry-run  # the same steps on the CPU, tiny (under a minute)
#
# Steps (each one's output in $OUT/STEP.log, one line per step in $OUT/summary.txt):
#   tests      the default test run; on a GPU machine every command's --device auto picks CUDA
#   ddp        torchrun: one model trained on every GPU (NCCL; world size 1 with one GPU, 2 with two),
#              then the sharded evaluation of its checkpoint against one process's (same numbers)
#   rank       benchmarks/rank_speed.py: the rank report on the GPU against numpy's matrix_rank
#              (target: MoS at least 5x; 3.3x on 2 CPU cores)
#   scale      benchmarks/scale.py at 25M events: a training epoch's rate, full-ranking evaluation,
#              compare with MoS, and the rank report at 60k items, on the GPU
# A step that fails is reported and the next one runs; the exit status is the number of failed steps.
# Each step has a time limit (on the GPU 120 + 60 + 90 + 200 s: 7 min 50 s at worst). The dry run takes
# about 2.5 minutes beside two busy processes on 2 cores (130 s of CPU), so about a minute and a bit idle.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-results/gpu-check}
mkdir -p "$OUT"
DRY=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY=1; fi
PYTHON=${PYTHON:-python}
TORCHRUN="$PYTHON -m torch.distributed.run --standalone"
: > "$OUT/summary.txt"
FAILED=0

if [[ $DRY == 1 ]]; then
  DEVICE=cpu; NPROC=2; THREADS=1; EPOCHS=1
  TESTS=(tests/test_heads.py -q -x -p no:cacheprovider)
  RANK=(--contexts 256 --items 2000 --heads mos)
  SCALE=(--events 1e5 --items 2000 --train-events 1000 --eval-events 300 --skip reach capacity)
else
  DEVICE=cuda; THREADS=8; EPOCHS=2
  NPROC=$(nvidia-smi -L 2>/dev/null | wc -l); NPROC=$(( NPROC > 2 ? 2 : (NPROC < 1 ? 1 : NPROC) ))
  TESTS=(-m "not slow" -q -x -p no:cacheprovider)
  RANK=(--contexts 4096 --items 20000)
  SCALE=(--events 25e6 --items 60000 --skip reach capacity)
fi

step() {  # step NAME SECONDS COMMAND...: run it with a time limit, log it, and say how it went
  local name=$1 limit=$2; shift 2
  local began=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local status=$?
  [[ $status == 0 ]] || FAILED=$((FAILED + 1))
  echo "$name: exit $status in $((SECONDS - began)) s" | tee -a "$OUT/summary.txt"
}

{ echo "device $DEVICE, dry run $DRY, $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null)";
  $PYTHON -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"; } > "$OUT/machine.txt" 2>&1

step tests $(( DRY ? 60 : 120 )) $PYTHON -m pytest "${TESTS[@]}"

ddp() {
  local work="$OUT/ddp"
  rm -rf "$work" && mkdir -p "$work"
  $PYTHON -m softmax_bottleneck.prepare --synthetic --out "$work/data" --quiet || return 1
  local train=(--data "$work/data" --epochs "$EPOCHS" --hidden-dim 32 --batch-size 64 --device "$DEVICE" --json)
  $TORCHRUN --nproc-per-node "$NPROC" -m softmax_bottleneck.train "${train[@]}" --out "$work/model.pt" \
    > "$work/train.json" || return 1
  local evaluate=(--checkpoint "$work/model.pt" --data "$work/data" --split test --device "$DEVICE" --json)
  $PYTHON -m softmax_bottleneck.evaluate "${evaluate[@]}" > "$work/one.json" || return 1
  $TORCHRUN --nproc-per-node "$NPROC" -m softmax_bottleneck.evaluate "${evaluate[@]}" \
    > "$work/sharded.json" || return 1
  $PYTHON - "$work/one.json" "$work/sharded.json" <<'EOF'
import json, sys
skip = {"events_per_second", "world_size", "threads"}
one, sharded = ({k: v for k, v in json.load(open(p)).items() if k not in skip} for p in sys.argv[1:])
assert one == sharded, "the sharded evaluation differs from one process's"
print("sharded evaluation = one process's:", {k: one[k] for k in ("recall@20", "mrr@20")})
EOF
}
export -f ddp
export OUT DEVICE NPROC PYTHON TORCHRUN EPOCHS
step ddp $(( DRY ? 120 : 60 )) bash -c ddp

step rank $(( DRY ? 120 : 90 )) $PYTHON benchmarks/rank_speed.py --device "$DEVICE" "${RANK[@]}"

step scale $(( DRY ? 300 : 200 )) $PYTHON benchmarks/scale.py --device "$DEVICE" --threads "$THREADS" "${SCALE[@]}" \
  --work "$OUT/scale-work" --out "$OUT/scale"
rm -rf "$OUT/scale-work"

echo "failed steps: $FAILED" | tee -a "$OUT/summary.txt"
exit "$FAILED"

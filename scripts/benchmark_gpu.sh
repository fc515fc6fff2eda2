#!/bin/bash
# The GPU figures of the README's Speed section, in bf16 with
# jax.nn.dot_product_attention (XLA's; model.attention_impl='fused'):
#   vit      ViT-B/16 at 224, batch 128: baseline, 8 tokens at 6, 16 + TokenFuser
#   vivit    ViViT-B/16x2 on 16x224x224 clips, batch 32: baseline, 8 tokens at 6
#   cudnn    the same ViViT pair with cuDNN flash attention (attention_impl
#            'cudnn')
#   max_batch  the largest ViViT-B/16x2 + TokenLearner batch in 90% of the
#            GPU's memory, without remat and with remat (nothing_saveable),
#            both with nn.scan (fast compiles)
#
#   bash scripts/benchmark_gpu.sh OUT_DIR [vit] [vivit] [cudnn] [max_batch]
#
# Each part writes OUT_DIR/<part>.json and <part>.log; with no part named, all
# run. Needs jax with a GPU and flax, optax, ml_collections (no TensorFlow).
set -u
out=${1:?usage: benchmark_gpu.sh OUT_DIR [vit] [vivit] [cudnn] [max_batch]}
shift
parts=("${@:-vit vivit cudnn max_batch}")
mkdir -p "$out"
cd "$(dirname "$0")/.." || exit 1
export PYTHONUNBUFFERED=1
options=(--dtype=bfloat16 --attention=fused --steps=10 --warmup=2)
status=0

run() {
  local name=$1
  shift
  echo "== $name: $*"
  python3 scripts/benchmark.py "${options[@]}" "$@" --out="$out/$name.json" \
      2>&1 | tee "$out/$name.log"
  [ "${PIPESTATUS[0]}" = 0 ] || status=1
}

for part in ${parts[*]}; do
  case $part in
    vit) run vit --skip=compile,demo,input --batch=128 \
        --models=vit_b16,vit_b16_tl8at6,vit_b16_tl16at6_fuser ;;
    vivit) run vivit --skip=compile,demo,input --batch=32 \
        --models=vivit_b16x2,vivit_b16x2_tl8at6 ;;
    cudnn) run cudnn --skip=compile,demo,input --batch=32 --attention=cudnn \
        --models=vivit_b16x2,vivit_b16x2_tl8at6 ;;
    max_batch) XLA_PYTHON_CLIENT_MEM_FRACTION=0.9 run max_batch \
        --skip=models,compile,demo,input --scan \
        --max_batch=vivit_b16x2_tl8at6 --max_batch_remat=none,nothing_saveable ;;
    *) echo "unknown part '$part' (vit, vivit, cudnn, max_batch)" >&2; exit 2 ;;
  esac
done
exit $status

#!/usr/bin/env bash
# The README's "Using a real model on a GPU" walk-through, command for command, rehearsed on CPU
# with a tiny random-weight model of a real VLM family and ShapesWorld questions written in the
# authors' A-OKVQA annotated format. Only paths, devices, the accelerate process count and sizes
# differ from the README (tests/test_walkthrough.py diffs the `mmboundary` commands and options;
# the configs are the CPU-rehearsal twins in configs/cpu-rehearsal/, which the same test checks
# differ from the paper configs only in sizes and hardware).
#
#   examples/walkthrough.sh ARCH [--processes N] [--out DIR] [--train N] [--val N]
#
# ARCH: qwen2-vl, qwen2.5-vl, llava, llava-next or idefics3. --processes N > 1 runs `estimate` as N
# parallel shards + `estimate merge`, and `train sft` / `train rl` under
# `accelerate launch --config_file configs/accelerate/multi_gpu.yaml --num_processes N` (the
# multi-GPU path; on a machine without CUDA accelerate runs N CPU processes over gloo).
# Output: DIR (default runs/walkthrough-ARCH-pN) with the report in DIR/runs/report/ and each
# command's wall time in DIR/timings.tsv.
set -euo pipefail

usage() { sed -n '2,16p' "$0" >&2; exit 2; }

main() {  # the whole script is one function: bash parses it before running (edits mid-run are safe)
  [ $# -ge 1 ] || usage
  ARCH=$1
  shift
  PROCESSES=1 OUT="" N_TRAIN=16 N_VAL=8
  while [ $# -gt 0 ]; do
    case $1 in
      --processes) PROCESSES=$2; shift 2 ;;
      --out) OUT=$2; shift 2 ;;
      --train) N_TRAIN=$2; shift 2 ;;
      --val) N_VAL=$2; shift 2 ;;
      *) usage ;;
    esac
  done
  case $ARCH in
    qwen2-vl | qwen2.5-vl) FAMILY=qwen2vl_7b ;;
    llava | llava-next | idefics3) FAMILY=llava_next_7b ;;
    *) echo "unknown ARCH '$ARCH'; expected qwen2-vl, qwen2.5-vl, llava, llava-next or idefics3" >&2
       exit 2 ;;
  esac
  [ "$PROCESSES" -ge 1 ] 2>/dev/null || { echo "--processes must be a positive integer" >&2; exit 2; }

  REPO=$(cd "$(dirname "$0")/.." && pwd)
  OUT=$(realpath -m "${OUT:-$REPO/runs/walkthrough-$ARCH-p$PROCESSES}")
  cd "$REPO"  # the README's relative paths (configs/...) are relative to the repository
  if [ -d "$OUT" ] && [ -n "$(ls -A "$OUT")" ] && [ ! -f "$OUT/timings.tsv" ]; then
    echo "--out $OUT: not empty and not an earlier walk-through; give an empty or new folder" >&2
    exit 2
  fi
  rm -rf "$OUT"  # an earlier walk-through's output: start afresh
  mkdir -p "$OUT"
  export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
  CORES=$(nproc)
  export OMP_NUM_THREADS=$(( CORES / PROCESSES > 0 ? CORES / PROCESSES : 1 ))
  printf 'seconds\tcommand\n' > "$OUT/timings.tsv"
  t() {  # run a command and append its wall time to timings.tsv
    local start=$SECONDS
    "$@"
    printf '%s\t%s\n' "$((SECONDS - start))" "$*" >> "$OUT/timings.tsv"
  }
  if [ "$PROCESSES" -gt 1 ]; then  # the multi-GPU launch path; bf16 autocast off on CPU
    LAUNCH=(accelerate launch --config_file configs/accelerate/multi_gpu.yaml
            --num_processes "$PROCESSES" --mixed_precision no -m)
  else  # accelerate's multi-GPU path needs >= 2 processes; one process runs the module itself
    LAUNCH=(python -m)
  fi
  SECONDS=0
  echo "walkthrough $ARCH, $PROCESSES process(es), $CORES cores, in $OUT; $(uptime)"

  # --- what the GPU box already has: weights, annotated data, images -----------------------------
  t mmboundary models make-tiny "$OUT/models/vanilla" --arch "$ARCH"
  t mmboundary models make-tiny "$OUT/models/clip" --arch clip
  t mmboundary world make --out "$OUT/world" --n "$N_TRAIN" --split train --seed 0
  t mmboundary world make --out "$OUT/world" --n "$N_VAL" --split validation --seed 0
  mkdir -p "$OUT/data"
  t python examples/shapes_to_aokvqa.py "$OUT/world/train.json" "$OUT/data/aokvqa_train_mmb.json"
  t python examples/shapes_to_aokvqa.py "$OUT/world/validation.json" "$OUT/data/aokvqa_val_mmb.json"

  # --- README walk-through (BEGIN): the same commands, CPU paths and tiny sizes --------------------
  N=$PROCESSES
  MODEL=$OUT/models/vanilla CLIP=$OUT/models/clip IMAGES=$OUT/world/images
  TRAIN=$OUT/data/aokvqa_train_mmb.json VAL=$OUT/data/aokvqa_val_mmb.json RUN=$OUT/runs
  pids=()
  for i in $(seq 0 $((N - 1))); do
    CUDA_VISIBLE_DEVICES=$i t mmboundary estimate --model "$MODEL" --data "$TRAIN" \
        --images "$IMAGES" --clip "$CLIP" --out "$RUN/estimates.shard$i.jsonl" \
        --num-shards "$N" --shard-index "$i" --max-new-tokens 32 --batch-size 1 \
        --device cpu --dtype float32 &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid"; done
  t mmboundary estimate merge "$RUN/estimates.jsonl" "$RUN"/estimates.shard*.jsonl
  t mmboundary build-sft --estimates "$RUN/estimates.jsonl" --data "$TRAIN" \
      --images "$IMAGES" --out "$RUN/sft-data" --llamafactory "$RUN/llamafactory"
  t "${LAUNCH[@]}" mmboundary train sft --config "configs/cpu-rehearsal/sft_$FAMILY.yaml" \
      --model "$MODEL" --dataset "$RUN/sft-data" --output-dir "$RUN/sft"
  t mmboundary estimate --model "$RUN/sft/model" --data "$TRAIN" --images "$IMAGES" \
      --clip "$CLIP" --out "$RUN/sft-estimates.jsonl" --limit "$N_TRAIN" --max-new-tokens 32 \
      --device cpu --dtype float32
  t "${LAUNCH[@]}" mmboundary train rl --config "configs/cpu-rehearsal/rl_$FAMILY.yaml" \
      --model "$RUN/sft/model" --train-file "$TRAIN" --images-dir "$IMAGES" \
      --output-dir "$RUN/rl" --calibrator "$RUN/sft-estimates.calibrator.json" --clip-model "$CLIP"
  t mmboundary generate --model "$RUN/rl/model" --data "$VAL" --images "$IMAGES" \
      --out "$RUN/rl-val.jsonl" --max-new-tokens 32 --device cpu --dtype float32
  t mmboundary evaluate --predictions "$RUN/rl-val.jsonl" --data "$VAL" \
      --system "MMBoundary ($ARCH)" --out "$RUN/metrics/mmboundary.json"
  t mmboundary baselines --model "$MODEL" --data "$VAL" --images "$IMAGES" \
      --method token-prob,internal,constant,dpv,dps,sc,multisample \
      --calibrator "$RUN/estimates.calibrator.json" --clip "$CLIP" \
      --fit-responses "$RUN/estimates.jsonl" --fit-data "$TRAIN" --cache "$RUN/baselines/responses" \
      --out "$RUN/baselines/{method}.jsonl" --max-new-tokens 32 --device cpu --dtype float32
  for m in token-prob internal constant dpv dps sc multisample; do
    t mmboundary evaluate --predictions "$RUN/baselines/$m.jsonl" --data "$VAL" \
        --system "$m" --out "$RUN/metrics/$m.json"
  done
  t mmboundary report "$RUN"/metrics/*.json --out "$RUN/report" --published
  # --- README walk-through (END) --------------------------------------------------------------------

  printf '%s\t%s\n' "$SECONDS" "total" >> "$OUT/timings.tsv"
  echo "walkthrough $ARCH ($PROCESSES process(es)) done in ${SECONDS} s; report: $RUN/report/report.html"
  echo "$(uptime)"
}

main "$@"

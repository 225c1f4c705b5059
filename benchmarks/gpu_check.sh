#!/usr/bin/env bash
# One-GPU check of the paper-size path, in under 8 minutes, offline:
#   1. a random-weight Qwen2-VL-7B built from its config (the values are below; nothing is
#      downloaded), bf16, saved with a tiny offline tokenizer and Qwen2-VL's image processor
#      (448 x 448 images = 256 image tokens);
#   2. `estimate` timed against the bare forward pass (benchmarks/estimate_speed.py);
#   3. `estimate` -> `build-sft` -> 5 SFT steps with LoRA (configs/sft_qwen2vl_7b.yaml);
#   4. 5 GRPO steps with LoRA (configs/rl_qwen2vl_7b.yaml) from the same model, i_t calibrated
#      on its own steps (step 3's estimates);
#   and prints each phase's wall time, peak GPU memory (nvidia-smi, every 250 ms) and tokens/s.
#
#   benchmarks/gpu_check.sh [OUT]      (default OUT: runs/gpu-check; needs ~60 GB of disk)
#
# Status: written for the GPU rehearsal of issue #13; it has NOT run yet (no GPU was lent).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=$(realpath -m "${1:-$REPO/runs/gpu-check}")
cd "$REPO"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
  || { echo "gpu_check: no CUDA device visible" >&2; exit 2; }
rm -rf "$OUT"
mkdir -p "$OUT"
SECONDS=0
SUMMARY=$OUT/summary.tsv
printf 'phase\tseconds\tpeak_gpu_MiB\tnote\n' > "$SUMMARY"

phase() {  # phase NAME LIMIT_S COMMAND... : run with a time limit, watch GPU memory
  local name=$1 limit=$2 start=$SECONDS
  shift 2
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 250 \
    > "$OUT/mem-$name.log" &
  local watcher=$!
  local rc=0
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1 || rc=$?
  kill "$watcher" 2>/dev/null || true
  local peak
  peak=$(sort -n "$OUT/mem-$name.log" | tail -1)
  printf '%s\t%s\t%s\t%s\n' "$name" "$((SECONDS - start))" "${peak:-?}" "rc=$rc" >> "$SUMMARY"
  if [ "$rc" -ne 0 ]; then
    tail -30 "$OUT/$name.log" >&2
    echo "gpu_check: phase $name failed (rc $rc; 124 = over its ${limit} s)" >&2
    column -t -s $'\t' "$SUMMARY" >&2
    exit "$rc"
  fi
}

# --- 1. random Qwen2-VL-7B (config values of Qwen/Qwen2-VL-7B-Instruct's config.json) -----------
phase build 90 python - "$OUT" <<'EOF'
import sys
from pathlib import Path

import torch
import transformers as tf

from mmboundary.models.tiny import make_tiny
from mmboundary.models.vlm import load_processor

out = Path(sys.argv[1])
make_tiny("qwen2-vl", out / "proc", image_size=448, patch_size=14)
make_tiny("clip", out / "clip")
processor = load_processor(out / "proc", "qwen2_vl")
tok = processor.tokenizer
ids = {k: tok.convert_tokens_to_ids(t) for k, t in [
    ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
    ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>")]}
text = dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
            num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=32768,
            rms_norm_eps=1e-6, hidden_act="silu", tie_word_embeddings=False,
            rope_parameters={"rope_type": "default", "mrope_section": [16, 24, 24],
                             "rope_theta": 1000000.0},
            pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
            bos_token_id=tok.pad_token_id)
vision = dict(depth=32, embed_dim=1280, hidden_size=3584, num_heads=16, mlp_ratio=4,
              patch_size=14, spatial_merge_size=2, temporal_patch_size=2, in_channels=3)
config = tf.Qwen2VLConfig(text_config=text, vision_config=vision, **ids)
torch.set_default_dtype(torch.bfloat16)
with torch.device("cuda"):
    model = tf.Qwen2VLForConditionalGeneration(config)
torch.set_default_dtype(torch.float32)
model.generation_config = tf.GenerationConfig(
    eos_token_id=[tok.eos_token_id], pad_token_id=tok.pad_token_id, bos_token_id=tok.pad_token_id)
model.save_pretrained(out / "model")
processor.save_pretrained(out / "model")
n = sum(p.numel() for p in model.parameters())
print(f"random Qwen2-VL-7B: {n / 1e9:.2f}B parameters, bf16, saved to {out / 'model'}")
EOF

# --- 2. estimate vs the bare forward pass (bf16) ------------------------------------------------
phase estimate-speed 120 python benchmarks/estimate_speed.py --config qwen2-vl-7b --n 16 \
  --batch-size 8 --repeats 1 --device cuda

# --- 3. estimate -> build-sft -> 5 SFT steps (LoRA) -----------------------------------------------
mmboundary world make --out "$OUT/world" --n 32 --split train --seed 0 > /dev/null
python - "$OUT" <<'EOF'
import sys
from pathlib import Path

import yaml

out = Path(sys.argv[1])
sft = yaml.safe_load(Path("configs/sft_qwen2vl_7b.yaml").read_text())
sft.update(max_steps=5, logging_steps=1, merge=False, save_steps=1000)
(out / "sft.yaml").write_text(yaml.safe_dump(sft))
rl = yaml.safe_load(Path("configs/rl_qwen2vl_7b.yaml").read_text())
rl.update(max_steps=5, max_completion_length=128, merge_lora=False, save_steps=0)
(out / "rl.yaml").write_text(yaml.safe_dump(rl))
EOF
phase estimate 60 mmboundary estimate --model "$OUT/model" --data "$OUT/world/train.json" \
  --dataset shapes --clip "$OUT/clip" --out "$OUT/estimates.jsonl" --max-new-tokens 64 \
  --device cuda --dtype bfloat16 --no-progress
mmboundary build-sft --estimates "$OUT/estimates.jsonl" --data "$OUT/world/train.json" \
  --out "$OUT/sft-data" > /dev/null
phase sft-5-steps 90 mmboundary train sft --config "$OUT/sft.yaml" --model "$OUT/model" \
  --dataset "$OUT/sft-data" --output-dir "$OUT/sft"

# --- 4. 5 GRPO steps (LoRA; i_t by a frozen copy of the start model) ------------------------------
phase grpo-5-steps 110 mmboundary train rl --config "$OUT/rl.yaml" --model "$OUT/model" \
  --train-file "$OUT/world/train.json" --output-dir "$OUT/rl" \
  --calibrator "$OUT/estimates.calibrator.json" --clip-model "$OUT/clip"

# --- summary --------------------------------------------------------------------------------------
python - "$OUT" <<'EOF'
import json
import sys
from pathlib import Path

out = Path(sys.argv[1])
print((out / "estimate-speed.log").read_text().strip())
log = json.loads((out / "sft" / "train_log.json").read_text())
final = next(row for row in log if "train_runtime" in row)
tokens = max(row.get("num_tokens", 0) for row in log)
print(f"SFT: 5 steps x batch 16 in {final['train_runtime']:.1f} s, {tokens:.0f} tokens, "
      f"{tokens / final['train_runtime']:.0f} tokens/s (prompt + response, forward + backward)")
rows = [json.loads(line) for line in (out / "rl" / "reward_log.jsonl").read_text().splitlines()]
times = [r["step_time"] for r in rows if "step_time" in r]
tokens = [r["num_tokens"] for r in rows if "num_tokens" in r]
completion = [r["completions/mean_length"] for r in rows if "completions/mean_length" in r]
per_step = 12  # per_device_train_batch_size 6 x gradient_accumulation_steps 2, one GPU
if times and tokens:
    print(f"GRPO: {len(times)} steps, {sum(times) / len(times):.1f} s/step, "
          f"{tokens[-1] / sum(times):.0f} tokens/s (prompt + completion), "
          f"{sum(completion) * per_step / sum(times):.0f} completion tokens/s")
EOF
column -t -s $'\t' "$SUMMARY"
echo "gpu_check: done in ${SECONDS} s (limit 480 s)"

#!/usr/bin/env bash
# The paper-size recipe on one CUDA GPU: ViT-B/16 at 224 px + BERT-base, both from random initialisation, pre-trained
# on SynthCXR with `clip` and `sista` for the same budget in bf16, each evaluated on the test split like the demo
# (zero-shot AUROC, Recall@1/10 beside chance, pointing game beside its baselines); then the step-time benchmark of
# SISTA against transformers' VisionTextDualEncoder CLIP step on the same encoders (benchmarks/bench_gpu_scale.py).
# Everything it measures lands in RESULTS_DIR (default outputs/vit_base_gpu); docs/results/vit_base_gpu.md reads it.
#
#   bash research/vit_base_gpu.sh                                  # on a GPU machine with the package installed
#   PRESET=tiny IMAGE_SIZE=32 MAX_STEPS=2 NUM_PRETRAIN=64 BATCH_SIZE=8 SKIP_BENCHMARK=1 bash research/vit_base_gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PRESET=${PRESET:-base}
IMAGE_SIZE=${IMAGE_SIZE:-224}
NUM_PRETRAIN=${NUM_PRETRAIN:-8000}
MAX_STEPS=${MAX_STEPS:-400}
BATCH_SIZE=${BATCH_SIZE:-128}
LEARNING_RATE=${LEARNING_RATE:-5e-4}
NUM_WORKERS=${NUM_WORKERS:-12}
OBJECTIVES=${OBJECTIVES:-"clip sista"}
WARMUP_STEPS=${WARMUP_STEPS:-40}
EXTRA_ARGS=${EXTRA_ARGS:-}  # more pretrain.py arguments, e.g. "--vision_pooling mean"
WORK_DIR=${WORK_DIR:-outputs/vit_base_gpu_work}
RESULTS_DIR=${RESULTS_DIR:-outputs/vit_base_gpu}
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
mkdir -p "$RESULTS_DIR" "$WORK_DIR"
precision=()
if python -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then precision=(--bf16); fi

data_dir="$WORK_DIR/synthcxr_$IMAGE_SIZE"
for objective in $OBJECTIVES; do
    run_dir="$WORK_DIR/$objective"
    start=$(date +%s)
    python examples/pretrain.py \
        --dataset_path "$data_dir" --generate_synthcxr --synthcxr_num_pretrain "$NUM_PRETRAIN" \
        --synthcxr_num_validation 500 --synthcxr_num_train 500 --synthcxr_num_test 500 \
        --preprocessing_num_workers "$NUM_WORKERS" \
        --model_preset "$PRESET" --image_size "$IMAGE_SIZE" --objective "$objective" --text_pooling mean \
        --output_dir "$run_dir" --overwrite_output_dir "${precision[@]}" \
        --max_steps "$MAX_STEPS" --per_device_train_batch_size "$BATCH_SIZE" --per_device_eval_batch_size "$BATCH_SIZE" \
        --learning_rate "$LEARNING_RATE" --warmup_steps "$WARMUP_STEPS" --weight_decay 0.05 --lr_scheduler_type cosine \
        --max_grad_norm 1.0 --logging_steps 20 --eval_strategy no --save_strategy no --do_eval \
        --dataloader_num_workers "$NUM_WORKERS" --seed 0 $EXTRA_ARGS
    evaluate=(--model_name_or_path "$run_dir" --dataset_dir "$data_dir" --split test
              --output_dir "$RESULTS_DIR/$objective" --batch_size 100)
    python examples/zero_shot.py "${evaluate[@]}"
    python examples/retrieval.py "${evaluate[@]}"
    python examples/visualize_grounding.py "${evaluate[@]}" --num_figures 0
    python examples/summarize_evaluation.py --evaluation_dir "$RESULTS_DIR/$objective"
    cp "$run_dir"/{train_results.json,eval_results.json,run_arguments.json} "$RESULTS_DIR/$objective/"
    echo "{\"objective\": \"$objective\", \"wall_time_s\": $(( $(date +%s) - start ))}" > "$RESULTS_DIR/$objective/wall_time.json"
done

if [ -z "${SKIP_BENCHMARK:-}" ]; then
    python benchmarks/bench_gpu_scale.py --output "$RESULTS_DIR/bench_gpu_scale.json"
fi

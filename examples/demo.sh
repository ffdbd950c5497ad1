#!/usr/bin/env bash
# The main job on a fresh machine (package installed, no GPU, no download): generate SynthCXR, pre-train the `small`
# preset (ResNet 48/96/192 with an 8x8 grid / BERT 192x4, 128 px) with SISTA on CPU, then evaluate it on the test
# split and print what it learned: zero-shot AUROC, image->report Recall@1/10 and the pointing game, each beside its
# chance level or baseline, plus a grounding picture. About 5 minutes on 2 CPU cores. Override any size through the
# environment, e.g. `MAX_STEPS=100 bash examples/demo.sh`; extra arguments go to pretrain.py. A DATA_DIR generated
# before with other sizes is refused (its sista_dataset.json records them): remove it or set another DATA_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

DATA_DIR=${DATA_DIR:-data/synthcxr}
OUTPUT_DIR=${OUTPUT_DIR:-outputs/sista-small-demo}
NUM_PRETRAIN=${NUM_PRETRAIN:-4000}
MAX_STEPS=${MAX_STEPS:-300}
NUM_FIGURE_STUDIES=${NUM_FIGURE_STUDIES:-4}
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
# 1 compute thread + 1 loader worker = 2 cores: two OpenMP threads beside a loader on 2 cores oversubscribe them
# and each step becomes several times slower.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

start=$(date +%s)
python examples/pretrain.py \
    --dataset_path "$DATA_DIR" --generate_synthcxr \
    --synthcxr_num_pretrain "$NUM_PRETRAIN" --synthcxr_num_validation 500 \
    --synthcxr_num_train 500 --synthcxr_num_test 500 --synthcxr_seed 42 --preprocessing_num_workers 2 \
    --model_preset small --image_size 128 --objective sista --text_pooling mean \
    --output_dir "$OUTPUT_DIR" --overwrite_output_dir \
    --max_steps "$MAX_STEPS" --per_device_train_batch_size 32 --per_device_eval_batch_size 32 \
    --learning_rate 1e-3 --warmup_steps 20 --weight_decay 0.05 --lr_scheduler_type cosine --max_grad_norm 1.0 \
    --logging_steps 10 --eval_strategy no --save_strategy no --do_eval \
    --dataloader_num_workers 1 --seed 42 \
    "$@"

# what it learned, on the test split
EVALUATION_DIR="$OUTPUT_DIR/evaluation"
evaluate=(--model_name_or_path "$OUTPUT_DIR" --dataset_dir "$DATA_DIR" --split test --output_dir "$EVALUATION_DIR"
          --batch_size 50)
python examples/zero_shot.py "${evaluate[@]}"
python examples/retrieval.py "${evaluate[@]}"
python examples/visualize_grounding.py "${evaluate[@]}" --num_figures "$NUM_FIGURE_STUDIES"
python examples/summarize_evaluation.py --evaluation_dir "$EVALUATION_DIR"
echo "Demo wall time: $(( $(date +%s) - start )) s (data generation included when it ran)."

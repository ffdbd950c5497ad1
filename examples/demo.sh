#!/usr/bin/env bash
# The main job on a fresh machine (package installed, no GPU, no download): generate SynthCXR, pre-train a small
# SISTA (ViT 192x4 / BERT 192x4, 128 px) on CPU, save the model, TensorBoard logs and a loss curve. About 10 minutes
# on 2 CPU cores. Override any size through the environment, e.g. `NUM_EPOCHS=1 bash examples/demo.sh`; a DATA_DIR
# generated before with other sizes is refused (its sista_dataset.json records them): remove it or set another DATA_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

DATA_DIR=${DATA_DIR:-data/synthcxr}
OUTPUT_DIR=${OUTPUT_DIR:-outputs/sista-small-demo}
NUM_PRETRAIN=${NUM_PRETRAIN:-4000}
NUM_EPOCHS=${NUM_EPOCHS:-5}
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
# 1 compute thread + 1 loader worker = 2 cores: two OpenMP threads beside a loader on 2 cores oversubscribe them
# and each step becomes several times slower.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

start=$(date +%s)
python examples/pretrain.py \
    --dataset_path "$DATA_DIR" --generate_synthcxr \
    --synthcxr_num_pretrain "$NUM_PRETRAIN" --synthcxr_num_validation 500 \
    --synthcxr_num_train 500 --synthcxr_num_test 500 --synthcxr_seed 42 --preprocessing_num_workers 2 \
    --model_preset small --image_size 128 --objective sista --vision_pooling mean --text_pooling mean \
    --output_dir "$OUTPUT_DIR" \
    --num_train_epochs "$NUM_EPOCHS" --per_device_train_batch_size 32 --per_device_eval_batch_size 32 \
    --learning_rate 1e-3 --warmup_steps 20 --weight_decay 0.05 --lr_scheduler_type cosine \
    --logging_steps 10 --eval_strategy epoch --save_strategy epoch --save_total_limit 1 --do_eval \
    --dataloader_num_workers 1 --seed 42 \
    "$@"
echo "Demo wall time: $(( $(date +%s) - start )) s (data generation included when it ran)."

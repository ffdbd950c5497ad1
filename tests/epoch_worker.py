"""Worker of the epoch test, started by `accelerate launch` with 2 CPU processes (gloo).

Each process trains a tiny SISTA with `SistaTrainer` for 2 epochs on 16 random 32-pixel images, with one persistent
loader worker. The dataset, running inside that worker, appends `epoch index checksum` for every sample it
produces to `<output_dir>/samples_rank<rank>.txt`, so the test sees which epoch reached the augmentation on each
rank and whether a sample's augmented pixels changed between the epochs. Each rank also writes a checksum of its
initial weights and its torch seed after the trainer is built to `<output_dir>/seeds_rank<rank>.txt`.
"""

import os
import sys
import zlib

import numpy as np
import torch
from datasets import Dataset
from PIL import Image
from transformers import set_seed

# run as a script, so its own folder (tests/) is first on the import path
from conftest import build_tiny_tokenizer, tiny_sista_config
from modeling_sista import SistaModel
from processing_sista import SistaImageProcessor, SistaProcessor
from sista_examples.training.augmentation import XRayAugmentation
from sista_examples.training.collator import SistaDataCollator
from sista_examples.training.dataset import PretrainingDataset
from sista_examples.training.trainer import SistaTrainer, SistaTrainingArguments


class RecordingDataset(PretrainingDataset):
    """Writes what it produces, from whichever process produces it."""

    def __init__(self, *args, record_path: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.record_path = record_path

    def __getitems__(self, indices):
        features = super().__getitems__(indices)
        with open(self.record_path, "a") as record:
            for index, feature in zip(indices, features):
                checksum = zlib.crc32(feature["pixel_values"].numpy().tobytes())
                record.write(f"{self.epoch} {int(index)} {checksum} {os.getpid()}\n")
        return features


def main(output_dir: str) -> None:
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)) for _ in range(16)]
    raw = Dataset.from_dict({"image": images, "report": ["small left effusion"] * 16})
    image_processor = SistaImageProcessor(size=32)
    tokenizer = build_tiny_tokenizer()
    args = SistaTrainingArguments(
        output_dir=output_dir,
        num_train_epochs=2,
        per_device_train_batch_size=4,
        dataloader_num_workers=1,
        dataloader_persistent_workers=True,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    record_path = os.path.join(output_dir, f"samples_rank{args.process_index}.txt")
    dataset = RecordingDataset(raw, image_processor, XRayAugmentation(), seed=0, record_path=record_path)
    set_seed(0)  # as examples/pretrain.py does before building the model
    trainer = SistaTrainer(
        model=SistaModel(tiny_sista_config(sia_mode="off", sta_weight=0.0)),
        args=args,
        train_dataset=dataset,
        data_collator=SistaDataCollator(tokenizer, max_length=8),
        processing_class=SistaProcessor(image_processor=image_processor, tokenizer=tokenizer),
    )
    # the same initial weights on every rank, then a seed of each rank's own (dropout streams)
    weights = sum(zlib.crc32(tensor.numpy().tobytes()) for tensor in trainer.model.state_dict().values())
    with open(os.path.join(output_dir, f"seeds_rank{args.process_index}.txt"), "w") as record:
        record.write(f"{weights} {torch.initial_seed()}\n")
    trainer.train()
    trainer.accelerator.wait_for_everyone()
    sys.stdout.flush()
    os._exit(0)  # gloo sometimes aborts at interpreter exit after the work is done


if __name__ == "__main__":
    main(sys.argv[1])

# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""
The grounding testbed: builds a small SISTA model (ResNet or ViT vision tower, BERT text tower), pre-trains it on a
SynthCXR folder with the project's `PretrainingDataset`, `SistaDataCollator` and `XRayAugmentation` in a plain loop
(AdamW, linear warm-up, cosine decay, gradient clipping: the recipe of `examples/pretrain.py`), and evaluates it on
the test split: paired image→report R@1/R@10 beside chance, mean pairwise image cosine, and the pointing game of
several word maps beside the random-point, fixed-point, text-prior and oracle references, the same words mapped on
another study's image (the shuffled-image control) and BioViL's CNR of each, overall, per finding group and per
finding, all scored by `sista_examples.evaluation.grounding` (the pointing game of `examples/visualize_grounding.py`).
The text prior comes from `--text_prior_splits` (default `pretrain,train`) of the data folder.

    python research/grounding/testbed.py --data_dir data/synthcxr128 --backbone resnet --objective sista \
        --steps 300 --output_dir outputs/grounding/resnet_sista
"""

import argparse
from collections import Counter
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from datasets import load_from_disk
from transformers import BertConfig, ResNetConfig, ViTConfig, get_cosine_schedule_with_warmup, set_seed

from configuration_sista import SistaConfig
from modeling_sista import SistaModel
from processing_sista import SistaImageProcessor, SistaProcessor
from sista_examples.data.report_embeddings import add_report_embeddings
from sista_examples.evaluation import grounding
from sista_examples.training.augmentation import XRayAugmentation
from sista_examples.training.collator import SistaDataCollator, content_word_ids
from sista_examples.training.dataset import PretrainingDataset, normalize_pixel_values
from sista_examples.training.tokenizer import train_report_tokenizer


logger = logging.getLogger(__name__)

TEXT_SIZES = {"hidden_size": 192, "num_hidden_layers": 4, "num_attention_heads": 3, "intermediate_size": 768}
TFIDF_SIA_THRESHOLD = 0.44


def vision_config_for(backbone: str, image_size: int):
    """ResNet: 3 basic stages 48/96/192, output stride 16; ViT: 192 × 4, patch 16 (both an 8 × 8 grid at 128 px)."""
    if backbone == "resnet":
        return ResNetConfig(
            num_channels=3, embedding_size=32, hidden_sizes=[48, 96, 192], depths=[1, 1, 1], layer_type="basic"
        )
    if backbone == "vit":
        return ViTConfig(**TEXT_SIZES, patch_size=16, image_size=image_size)
    raise ValueError(f"`backbone` must be 'resnet' or 'vit', got {backbone!r}.")


def set_padding_mode(model: SistaModel, padding_mode: str) -> int:
    """Sets `padding_mode` of every padded convolution of the vision tower; returns how many were changed."""
    changed = 0
    for module in model.vision_model.modules():
        if isinstance(module, torch.nn.Conv2d) and any(pad > 0 for pad in module.padding):
            module.padding_mode = padding_mode
            changed += 1
    return changed


def build_model(args, tokenizer) -> SistaModel:
    uses_sia, uses_sta = args.objective in ("sia", "sista"), args.objective in ("sta", "sista")
    text_config = BertConfig(
        **TEXT_SIZES, vocab_size=len(tokenizer), max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id
    )
    fields = {
        "projection_dim": 128,
        "vision_pooling": "mean",
        "sia_threshold": TFIDF_SIA_THRESHOLD,
        "sia_mode": "eliminate" if uses_sia else "off",
        "sta_weight": 1.0 if uses_sta else 0.0,
        "sta_ignore_token_ids": sorted(set(tokenizer.all_special_ids)),
        **json.loads(args.config_overrides),
    }
    config = SistaConfig.from_vision_text_configs(
        vision_config_for(args.backbone, args.image_size), text_config, **fields
    )
    model = SistaModel(config)
    if args.padding_mode != "zeros":
        set_padding_mode(model, args.padding_mode)
    return model


def train(args, model, dataset, tokenizer, image_processor) -> list[dict]:
    augmentation = XRayAugmentation() if args.augment else None
    columns = "report_embeds" if model.config.sia_mode != "off" else None
    train_dataset = PretrainingDataset(
        dataset, image_processor, augmentation, seed=args.seed, report_embeds_column=columns
    )
    collator = SistaDataCollator(
        tokenizer, max_length=128, content_word_ids=model.config.sta_token_unit == "words"
    )
    num_channels = model.config.vision_config.num_channels
    generator = torch.Generator().manual_seed(args.seed)
    # weight decay on matrices only, as SistaTrainer does
    decayed = [parameter for parameter in model.parameters() if parameter.ndim >= 2]
    others = [parameter for parameter in model.parameters() if parameter.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decayed, "weight_decay": args.weight_decay}, {"params": others, "weight_decay": 0.0}], lr=args.lr
    )
    scheduler = get_cosine_schedule_with_warmup(optimizer, args.warmup_steps, args.steps)
    model.train()
    history, step, epoch, started = [], 0, 0, time.time()
    while step < args.steps:
        train_dataset.set_epoch(epoch)
        loader = torch.utils.data.DataLoader(
            train_dataset, batch_size=args.batch_size, shuffle=True, drop_last=True, collate_fn=collator,
            generator=generator,
        )
        for batch in loader:
            batch = {key: value.to(args.device) if torch.is_tensor(value) else value for key, value in batch.items()}
            # the dataset sends 8-bit frames, finished on the device as the trainer does
            batch["pixel_values"] = normalize_pixel_values(
                batch["pixel_values"], image_processor.image_mean, image_processor.image_std, num_channels
            )
            outputs = model(**batch, training_step=step)
            outputs.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            entry = {"step": step, "loss": outputs.loss.item()}
            for name in ("loss_sia", "loss_sta"):
                if getattr(outputs, name) is not None:
                    entry[name] = getattr(outputs, name).item()
            history.append(entry)
            if step % 25 == 0 or step == args.steps:
                rounded = {key: round(value, 4) for key, value in entry.items()}
                logger.info("step %d %s (%.0f s)", step, rounded, time.time() - started)
            if step >= args.steps:
                break
        epoch += 1
    history.append({"train_seconds": time.time() - started})
    return history


@torch.no_grad()
def encode_test(model, processor, dataset, batch_size: int = 50, images: list | None = None) -> dict:
    """Global embeddings, token/patch embeddings and the STA map of every test pair, with the grid size; `images`
    replaces the dataset's images (mismatched or blank pairs for the probes)."""
    tokenizer, image_processor = processor.tokenizer, processor.image_processor
    model.eval()
    image_embeds, text_embeds, pairs = [], [], []
    grid = None
    for start in range(0, len(dataset), batch_size):
        rows = dataset[start : start + batch_size]
        encoding = tokenizer(rows["report"], padding=True, truncation=True, max_length=128, return_tensors="pt")
        batch_images = rows["image"] if images is None else images[start : start + batch_size]
        pixel_values = image_processor(batch_images, return_tensors="pt")["pixel_values"]
        inputs = {key: value.to(model.device) for key, value in encoding.items()}
        if model.config.sta_token_unit == "words":
            word_ids = [content_word_ids(encoding.encodings[i], text) for i, text in enumerate(rows["report"])]
            inputs["word_ids"] = torch.tensor(word_ids, device=model.device)
        outputs = model(**inputs, pixel_values=pixel_values.to(model.device), output_token_patch_weights=True)
        grid = tuple(outputs.patch_grid_size)
        image_embeds.append(outputs.image_embeds.cpu())
        text_embeds.append(outputs.text_embeds.cpu())
        similarity = torch.einsum("bld,bpd->blp", outputs.text_token_embeds, outputs.image_patch_embeds)
        for index in range(len(rows["report"])):
            pairs.append(
                {
                    "encoding": encoding.encodings[index],
                    "weights": outputs.token_patch_weights[index].cpu().numpy(),
                    "similarity": similarity[index].cpu().numpy(),
                    "patch_embeds": outputs.image_patch_embeds[index].cpu().numpy(),
                    "token_embeds": outputs.text_token_embeds[index].cpu().numpy(),
                }
            )
    # the word's similarity to each grid position of an average image: what a map shows whatever the image
    mean_patch_embeds = np.mean([pair["patch_embeds"] for pair in pairs], axis=0)
    for pair in pairs:
        pair["similarity_centred"] = pair["similarity"] - pair.pop("token_embeds") @ mean_patch_embeds.T
    return {"image_embeds": torch.cat(image_embeds), "text_embeds": torch.cat(text_embeds), "pairs": pairs,
            "grid": grid}


def retrieval_metrics(image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> dict:
    """Paired image→report R@1/R@10 with chance k/N, and the mean pairwise cosine of distinct images."""
    similarity = image_embeds @ text_embeds.t()
    ranks = (similarity > similarity.diagonal()[:, None]).sum(dim=1)
    count = len(similarity)
    image_cosine = image_embeds @ image_embeds.t()
    off_diagonal = image_cosine[~torch.eye(count, dtype=torch.bool)]
    return {
        "i2t_R@1": (ranks < 1).float().mean().item(),
        "i2t_R@10": (ranks < 10).float().mean().item(),
        "chance_R@1": 1 / count,
        "chance_R@10": 10 / count,
        "mean_image_cosine": off_diagonal.mean().item(),
    }


def softmax_rows(values: np.ndarray, temperature: float) -> np.ndarray:
    logits = values / temperature
    logits = logits - logits.max(axis=-1, keepdims=True)
    weights = np.exp(logits)
    return weights / weights.sum(axis=-1, keepdims=True)


MAP_KINDS = {
    "sta_weights": lambda pair, temperature: pair["weights"],
    "similarity": lambda pair, temperature: pair["similarity"],
    "similarity_softmax": lambda pair, temperature: softmax_rows(pair["similarity"], temperature),
    "similarity_centred": lambda pair, temperature: pair["similarity_centred"],
}


def first_cell_centre(vision_config, stride: float) -> float:
    """Pixel coordinate of the first grid cell's centre: 0 for a ResNet (its symmetric 'same' padding centres cell
    i on input pixel `stride * i`), `stride / 2 - 0.5` for patch tokens (the centre of patch i)."""
    return 0.0 if vision_config.model_type == "resnet" else stride / 2 - 0.5


def upsample_at_centres(grid_map: np.ndarray, grid: tuple[int, int], size: tuple[int, int], first_centre: float):
    """Bilinear map from a grid whose cell `(r, c)` is centred on pixel `first_centre + stride * (r, c)`."""
    from scipy.ndimage import map_coordinates

    rows = (np.arange(size[0]) - first_centre) / (size[0] / grid[0])
    columns = (np.arange(size[1]) - first_centre) / (size[1] / grid[1])
    coordinates = np.meshgrid(rows, columns, indexing="ij")
    return map_coordinates(np.asarray(grid_map, dtype=np.float64).reshape(grid), coordinates, order=1, mode="nearest")


def word_maps_of_pair(report: str, pair: dict, map_kinds, temperature: float) -> dict:
    """`{kind: WordMaps}` of one encoded pair; tokens STA ignores have no map in any kind."""
    has_map = pair["weights"].sum(-1, keepdims=True) > 0
    return {
        kind: grounding.word_maps_from_encoding(report, pair["encoding"], MAP_KINDS[kind](pair, temperature) * has_map)
        for kind in map_kinds
    }


def pointing_game_records(
    dataset,
    encoded,
    image_processor,
    map_kinds=tuple(MAP_KINDS),
    temperature=0.1,
    first_centre=None,
    shuffled=None,
    text_prior=None,
) -> list:
    """
    One record per scorable finding: hits and CNRs of every map kind, of the same kind on another study's image
    (`shuffled`: `encode_test` of the test reports with the images of `grounding.shuffled_image_order`) and of the
    text prior (`text_prior`, a `grounding.TextPrior`), the oracle's hit, mask fraction, finding words.
    """
    grid = encoded["grid"]
    records, skipped = [], {}
    for index, example in enumerate(dataset):
        pair = encoded["pairs"][index]
        word_maps = word_maps_of_pair(example["report"], pair, map_kinds, temperature)
        shuffled_maps = (
            None if shuffled is None
            else word_maps_of_pair(example["report"], shuffled["pairs"][index], map_kinds, temperature)
        )
        counter = Counter()
        targets = grounding.finding_targets(example, word_maps["sta_weights"], counter)
        for reason, count in counter.items():
            skipped[reason] = skipped.get(reason, 0) + count
        for target in targets:
            mask = grounding.mask_to_model_frame(image_processor, target["mask"])
            record = {
                "study": index,
                "finding": target["finding"],
                "words": [word_maps["sta_weights"].words[i] for i in target["word_indices"]],
                "fallback": target["fallback"],
                "mask_fraction": grounding.random_point_baseline(mask),
                "oracle_hit": grounding.oracle_pointing_hit(mask, grid),
            }
            if text_prior is not None:
                record.update(grounding.text_prior_scores(text_prior, target["key"], mask))
            for kind, maps in word_maps.items():
                word_map = maps.maps[target["word_indices"]].mean(axis=0, keepdims=True)
                heatmap = grounding.upsample_maps(word_map, grid, mask.shape)[0]
                hit, peak = grounding.pointing_game_hit(heatmap, mask)
                record[f"{kind}_hit"] = hit
                record[f"{kind}_cnr"] = grounding.contrast_to_noise_ratio_or_zero(heatmap, mask)
                record[f"{kind}_peak_cell"] = int(np.argmax(word_map[0]))
                if shuffled_maps is not None:
                    control = grounding.shuffled_image_scores(shuffled_maps[kind], target["word_indices"], grid, mask)
                    record[f"{kind}_shuffled_hit"] = control["shuffled_hit"]
                    record[f"{kind}_shuffled_cnr"] = control["shuffled_cnr"]
                if first_centre is not None and kind == "sta_weights":
                    shifted = upsample_at_centres(word_map[0], grid, mask.shape, first_centre)
                    record["sta_weights_receptive_field_hit"] = grounding.pointing_game_hit(shifted, mask)[0]
            records.append(record)
            record["_mask"] = mask
    fixed = grounding.fixed_point_hits([r["finding"] for r in records], [r.pop("_mask") for r in records])
    for record, hit in zip(records, fixed):
        record["fixed_point_hit"] = hit
    return records, skipped


def summarise_pointing(records: list, map_kinds=tuple(MAP_KINDS)) -> dict:
    """`{"overall": entry, finding: entry, ...}`: per entry the references, each map kind's hit rate and CNR, and,
    where the records have them, the kind's shuffled-image control (`{kind}_shuffled`, `{kind}_shuffled_cnr`) and the
    text prior (`text_prior`, `text_prior_cnr`)."""

    def summary(group):
        entry = {
            "num_findings": len(group),
            "random_point": float(np.mean([r["mask_fraction"] for r in group])),
            "fixed_point": float(np.mean([r["fixed_point_hit"] for r in group])),
            "oracle": float(np.mean([r["oracle_hit"] for r in group])),
        }
        if "text_prior_hit" in group[0]:
            entry["text_prior"] = float(np.mean([r["text_prior_hit"] for r in group]))
            entry["text_prior_cnr"] = float(np.mean([r["text_prior_cnr"] for r in group]))
        for kind in map_kinds:
            entry[kind] = float(np.mean([r[f"{kind}_hit"] for r in group]))
            for suffix in ("cnr", "shuffled", "shuffled_cnr"):
                key = f"{kind}_{suffix}_hit" if suffix == "shuffled" else f"{kind}_{suffix}"
                if key in group[0]:
                    entry[f"{kind}_{suffix}"] = float(np.mean([r[key] for r in group]))
        if "sta_weights_receptive_field_hit" in group[0]:
            hits = [r["sta_weights_receptive_field_hit"] for r in group]
            entry["sta_weights_receptive_field"] = float(np.mean(hits))
        return entry

    names = sorted({r["finding"] for r in records})
    per_finding = {name: summary([r for r in records if r["finding"] == name]) for name in names}
    return {"overall": summary(records), **per_finding}


def summarise_pointing_groups(records: list, map_kinds=tuple(MAP_KINDS)) -> dict:
    """`summarise_pointing`'s entries per finding group (`grounding.FINDING_GROUPS`): the small or ambiguous findings
    apart from cardiomegaly and effusion, which a text prior nearly solves."""
    by_group = {}
    for record in records:
        by_group.setdefault(grounding.finding_group(record["finding"]), []).append(record)
    return {group: summarise_pointing(members, map_kinds)["overall"] for group, members in by_group.items()}


def pretrain_model(args, pretrain):
    """Tokenizer, report embeddings (tfidf, for SIA), model and the training loop; `(history, model, processor)`."""
    tokenizer = train_report_tokenizer(pretrain["report"], vocab_size=3000)
    if args.objective in ("sia", "sista") and "report_embeds" not in pretrain.column_names:
        from datasets import DatasetDict

        pretrain = add_report_embeddings(DatasetDict(pretrain=pretrain), encoder="tfidf", seed=args.seed)["pretrain"]
    model = build_model(args, tokenizer).to(args.device)
    image_processor = SistaImageProcessor(size={"height": args.image_size, "width": args.image_size}, num_channels=3)
    processor = SistaProcessor(image_processor=image_processor, tokenizer=tokenizer)
    history = train(args, model, pretrain, tokenizer, image_processor)
    return history, model, processor


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default="data/synthcxr128", help="A SynthCXR folder (generate_synthcxr.py).")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--backbone", default="resnet", choices=("resnet", "vit"))
    parser.add_argument("--objective", default="sista", choices=("clip", "sia", "sta", "sista"))
    parser.add_argument("--config_overrides", default="{}", help="JSON of extra SistaConfig fields.")
    parser.add_argument("--padding_mode", default="zeros", choices=("zeros", "reflect", "replicate"))
    parser.add_argument("--image_size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup_steps", type=int, default=20)
    parser.add_argument("--weight_decay", type=float, default=0.0, help="AdamW weight decay of the matrices.")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--augment", type=int, default=1)
    parser.add_argument("--num_test", type=int, default=500)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--eval_only", action="store_true", help="Evaluate output_dir/model again, no training.")
    parser.add_argument("--text_prior_splits", default="pretrain,train",
                        help="Comma-separated splits whose finding masks make the text prior.")
    parser.add_argument("--shuffle_seed", type=int, default=0, help="Seed of the shuffled-image control's pairing.")
    return parser.parse_args(argv)


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    set_seed(args.seed)
    splits = load_from_disk(args.data_dir)
    pretrain, test = splits["pretrain"], splits["test"].select(range(min(args.num_test, len(splits["test"]))))
    if args.eval_only:
        model = SistaModel.from_pretrained(output_dir / "model").eval()
        processor = SistaProcessor.from_pretrained(output_dir / "model")
        image_processor = processor.image_processor
        history = json.loads((output_dir / "history.json").read_text())
    else:
        history, model, processor = pretrain_model(args, pretrain)
        image_processor = processor.image_processor
        model.save_pretrained(output_dir / "model")
        processor.save_pretrained(output_dir / "model")
        (output_dir / "history.json").write_text(json.dumps(history))

    encoded = encode_test(model, processor, test)
    arguments = vars(args)
    if args.eval_only and (output_dir / "results.json").exists():
        # the training run's arguments, with this evaluation's
        arguments = {**json.loads((output_dir / "results.json").read_text())["arguments"], "num_test": args.num_test}
    results = {"arguments": arguments, "grid": encoded["grid"], "final_loss": history[-2],
               "train_seconds": history[-1]["train_seconds"]}
    results.update(retrieval_metrics(encoded["image_embeds"], encoded["text_embeds"]))
    stride = args.image_size / encoded["grid"][1]
    first_centre = first_cell_centre(model.config.vision_config, stride)
    order = grounding.shuffled_image_order(len(test), args.shuffle_seed)
    shuffled = encode_test(model, processor, test, images=test.select_columns(["image"]).select(order)["image"])
    text_prior, references_skipped = None, {}
    prior_splits, not_used = grounding.text_prior_splits(splits, args.text_prior_splits.split(","), "test")
    if prior_splits:
        text_prior = grounding.synthcxr_text_prior(list(prior_splits.values()), image_processor, encoded["grid"])
    else:
        references_skipped["text_prior"] = f"no usable training split in {args.data_dir}: {not_used}"
    results["text_prior_splits"] = {name: len(split) for name, split in prior_splits.items()}
    records, skipped = pointing_game_records(
        test, encoded, image_processor, first_centre=first_centre, shuffled=shuffled, text_prior=text_prior
    )
    results["pointing_game"] = summarise_pointing(records)
    results["pointing_groups"] = summarise_pointing_groups(records)
    results["pointing_skipped"] = skipped
    results["pointing_references_skipped"] = references_skipped
    (output_dir / "results.json").write_text(json.dumps(results, indent=1))
    (output_dir / "records.json").write_text(json.dumps(records))
    logger.info(json.dumps({k: v for k, v in results.items() if k != "arguments"}, indent=1))
    return results


if __name__ == "__main__":
    main()

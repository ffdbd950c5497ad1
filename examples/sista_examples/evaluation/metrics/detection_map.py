# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""Mean average precision of object detection from pycocotools' COCOeval, as a local `evaluate` metric.

Load it offline with `evaluate.load("examples/sista_examples/evaluation/metrics/detection_map.py")`.
"""

import contextlib
import io

import datasets
import evaluate
import numpy as np


_DESCRIPTION = """
COCO-style mAP from `pycocotools.cocoeval.COCOeval` (bbox), area "all", 100 detections per image:

* `map_40_75`: averaged over IoU thresholds 0.40:0.05:0.75 (`params.iouThrs = np.linspace(0.4, 0.75, 8)`), the
  protocol of MGCA and the SISTA paper for RSNA Pneumonia;
* `map` (IoU 0.50:0.05:0.95, the standard COCO mAP), `map_50` and `map_75`.
Classes and images follow COCOeval: classes without ground truth are left out of the average.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: per image a dict with `boxes` (absolute [x_min, y_min, x_max, y_max]), `scores` and `labels`.
    references: per image a dict with `boxes` (absolute [x_min, y_min, x_max, y_max]) and `labels`.
Returns:
    dict with `map_40_75`, `map`, `map_50`, `map_75`, `map_40_75_per_class` (label → AP, for the labels with ground
    truth), `num_images`, `num_ground_truth_boxes`.
Examples:
    >>> metric = evaluate.load("examples/sista_examples/evaluation/metrics/detection_map.py")
    >>> box = {"boxes": [[0, 0, 10, 10]], "labels": [0]}
    >>> metric.compute(predictions=[{**box, "scores": [0.9]}], references=[box])["map"]
    1.0
"""

MGCA_IOU_THRESHOLDS = np.linspace(0.4, 0.75, 8)


def _box_sequence():
    return datasets.Sequence(datasets.Sequence(datasets.Value("float64"), length=4))


def _xyxy_to_xywh(box):
    x_min, y_min, x_max, y_max = box
    return [float(x_min), float(y_min), float(x_max - x_min), float(y_max - y_min)]


def _mean_precision(evaluator, category_index: int | None = None) -> float:
    """COCOeval.summarize's AP (area "all", the largest maxDets) over every IoU threshold of the evaluator, for all
    categories or the one at `category_index` of `params.catIds`."""
    precision = evaluator.eval["precision"][:, :, :, 0, -1]
    if category_index is not None:
        precision = precision[:, :, category_index]
    defined = precision[precision > -1]
    return float(defined.mean()) if defined.size else 0.0


class DetectionMap(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Lin et al., Microsoft COCO: Common Objects in Context, ECCV 2014.",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": {
                        "boxes": _box_sequence(),
                        "scores": datasets.Sequence(datasets.Value("float64")),
                        "labels": datasets.Sequence(datasets.Value("int64")),
                    },
                    "references": {"boxes": _box_sequence(), "labels": datasets.Sequence(datasets.Value("int64"))},
                }
            ),
            reference_urls=["https://github.com/cocodataset/cocoapi"],
        )

    def _compute(self, predictions, references):
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        if len(references) == 0:
            raise ValueError("No images to score: the mAP of an empty set is undefined.")
        images, annotations, detections, category_ids = [], [], [], set()
        for image_id, (prediction, reference) in enumerate(zip(predictions, references)):
            images.append({"id": image_id})
            for box, label in zip(reference["boxes"], reference["labels"]):
                xywh = _xyxy_to_xywh(box)
                # COCO category ids start at 1 by convention; the shift only names categories
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "category_id": int(label) + 1,
                        "bbox": xywh,
                        "area": xywh[2] * xywh[3],
                        "iscrowd": 0,
                    }
                )
                category_ids.add(int(label) + 1)
            for box, score, label in zip(prediction["boxes"], prediction["scores"], prediction["labels"]):
                detections.append(
                    {
                        "image_id": image_id,
                        "category_id": int(label) + 1,
                        "bbox": _xyxy_to_xywh(box),
                        "score": float(score),
                    }
                )
                category_ids.add(int(label) + 1)
        if not annotations:
            raise ValueError("The references hold no box: mAP is undefined without ground truth.")
        results = {"num_images": len(images), "num_ground_truth_boxes": len(annotations)}
        if not detections:  # COCO.loadRes cannot take an empty list; no detection means zero precision
            labels = sorted({annotation["category_id"] - 1 for annotation in annotations})
            zeros = {"map_40_75": 0.0, "map": 0.0, "map_50": 0.0, "map_75": 0.0}
            return {**zeros, "map_40_75_per_class": {str(label): 0.0 for label in labels}, **results}

        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
            ground_truth = COCO()
            ground_truth.dataset = {
                "images": images,
                "annotations": annotations,
                "categories": [{"id": category_id} for category_id in sorted(category_ids)],
            }
            ground_truth.createIndex()
            predicted = ground_truth.loadRes(detections)

            standard = COCOeval(ground_truth, predicted, iouType="bbox")
            standard.evaluate()
            standard.accumulate()
            standard.summarize()

            mgca = COCOeval(ground_truth, predicted, iouType="bbox")
            mgca.params.iouThrs = MGCA_IOU_THRESHOLDS
            mgca.evaluate()
            mgca.accumulate()
        ground_truth_labels = {annotation["category_id"] - 1 for annotation in annotations}
        per_class = {
            str(category_id - 1): _mean_precision(mgca, index)
            for index, category_id in enumerate(mgca.params.catIds)
            if category_id - 1 in ground_truth_labels
        }
        return {
            "map_40_75": _mean_precision(mgca),
            "map_40_75_per_class": per_class,
            "map": max(float(standard.stats[0]), 0.0),
            "map_50": max(float(standard.stats[1]), 0.0),
            "map_75": max(float(standard.stats[2]), 0.0),
            **results,
        }

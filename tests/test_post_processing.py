"""SistaImageProcessor's post-processing: detections and label maps mapped from the processed frame back onto the
original image, checked against the forward mapping the fine-tuning scripts use and against pixels drawn on a
non-square image; the object-detection and image-segmentation pipelines against direct calls."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_sista_config
from modeling_sista import SistaForObjectDetection, SistaForSemanticSegmentation
from processing_sista import SistaImageProcessor
from sista_examples.finetuning import boxes_to_model_frame


HEIGHT, WIDTH = 60, 100  # a non-square image: the processor pads (or crops) it
BOX_XYWH = [30.0, 20.0, 20.0, 15.0]  # inside the central square, so a centre crop keeps it whole


def detection_outputs(boxes_cxcywh, scores=None, labels=None):
    boxes = torch.as_tensor(boxes_cxcywh, dtype=torch.float32).reshape(1, -1, 4)
    count = boxes.shape[1]
    scores = torch.full((1, count), 0.9) if scores is None else torch.as_tensor(scores)[None]
    labels = torch.zeros(1, count, dtype=torch.long) if labels is None else torch.as_tensor(labels)[None]
    return SimpleNamespace(scores=scores, pred_class_labels=labels, pred_boxes=boxes)


def corners(box_xywh):
    x, y, w, h = box_xywh
    return [x, y, x + w, y + h]


@pytest.mark.parametrize("resize_mode", ["pad", "crop"])
def test_detections_map_back_through_the_forward_box_mapping(resize_mode):
    processor = SistaImageProcessor(size=64, resize_mode=resize_mode)
    frame_boxes, kept = boxes_to_model_frame([BOX_XYWH], WIDTH, HEIGHT, processor)
    assert kept == [0]
    (result,) = processor.post_process_object_detection(
        detection_outputs(frame_boxes), threshold=0.5, target_sizes=[(HEIGHT, WIDTH)]
    )
    torch.testing.assert_close(result["boxes"], torch.tensor([corners(BOX_XYWH)]), atol=1e-3, rtol=0)
    # without target sizes: normalised corners in the processed frame
    (framed,) = processor.post_process_object_detection(detection_outputs(frame_boxes), threshold=0.5)
    cx, cy, w, h = frame_boxes[0].tolist()
    expected = torch.tensor([[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]])
    torch.testing.assert_close(framed["boxes"], expected, atol=1e-6, rtol=0)


PROCESSOR_SETTINGS = {
    "pad": {"size": 64},
    "crop": {"size": 64, "resize_mode": "crop"},
    "non-square size": {"size": {"height": 48, "width": 80}},
    "tall size": {"size": {"height": 80, "width": 40}},
    "no pad": {"size": 64, "do_pad": False},
    "centre crop inside": {"size": 64, "do_center_crop": True, "crop_size": {"height": 56, "width": 60}},
    "centre crop larger": {"size": 64, "do_center_crop": True, "crop_size": {"height": 80, "width": 72}},
    "no resize": {"size": 128, "do_resize": False},
}


@pytest.mark.parametrize("setting", list(PROCESSOR_SETTINGS))
def test_detections_map_back_onto_a_rectangle_drawn_on_the_image(setting):
    image = np.zeros((HEIGHT, WIDTH), np.uint8)
    x_min, y_min, x_max, y_max = (int(value) for value in corners(BOX_XYWH))
    image[y_min:y_max, x_min:x_max] = 255
    processor = SistaImageProcessor(do_normalize=False, **PROCESSOR_SETTINGS[setting])
    frame = processor(image, return_tensors="np")["pixel_values"][0, 0]
    frame_height, frame_width = frame.shape
    geometry = processor.frame_geometry(HEIGHT, WIDTH)
    assert (geometry["frame_height"], geometry["frame_width"]) == frame.shape
    rows, cols = np.nonzero(frame > 0.5)  # the rectangle as the model sees it
    frame_box = [(cols.min() + cols.max() + 1) / 2 / frame_width, (rows.min() + rows.max() + 1) / 2 / frame_height,
                 (cols.max() + 1 - cols.min()) / frame_width, (rows.max() + 1 - rows.min()) / frame_height]
    (result,) = processor.post_process_object_detection(
        detection_outputs([frame_box]), target_sizes=torch.tensor([[HEIGHT, WIDTH]])
    )
    # within one frame pixel, in original pixels
    tolerance = torch.tensor([1 / geometry["scale_x"], 1 / geometry["scale_y"]] * 2)
    error = (result["boxes"][0] - torch.tensor(corners(BOX_XYWH))).abs()
    assert (error <= tolerance + 1e-4).all(), (error, tolerance)


def test_a_box_that_maps_into_the_padding_is_dropped():
    processor = SistaImageProcessor(size=64)  # a 60 x 100 image fills rows 13-50 of the frame
    outputs = detection_outputs([[0.5, 0.05, 0.3, 0.08], [0.5, 0.5, 0.3, 0.2]])
    (result,) = processor.post_process_object_detection(outputs, target_sizes=[(HEIGHT, WIDTH)])
    assert len(result["boxes"]) == 1 and result["boxes"][0, 1] > 0


def test_detections_are_thresholded_clipped_and_suppressed_per_class():
    processor = SistaImageProcessor(size=64)
    boxes = [[0.5, 0.5, 0.2, 0.2], [0.51, 0.5, 0.2, 0.2], [0.51, 0.5, 0.2, 0.2], [0.95, 0.5, 0.3, 0.2], [0.2, 0.2, 0.1, 0.1]]
    outputs = detection_outputs(boxes, scores=[0.9, 0.8, 0.7, 0.6, 0.1], labels=[0, 0, 1, 0, 0])
    (result,) = processor.post_process_object_detection(outputs, threshold=0.5, target_sizes=[(64, 64)])
    # box 1 overlaps box 0 of its class and goes; box 2 has another class and stays; box 4 is under the threshold
    assert result["scores"].tolist() == pytest.approx([0.9, 0.7, 0.6])
    assert result["labels"].tolist() == [0, 1, 0]
    assert result["boxes"][2].tolist() == pytest.approx([51.2, 25.6, 64.0, 38.4])  # clipped at the right edge
    (unsuppressed,) = processor.post_process_object_detection(outputs, 0.5, [(64, 64)], nms_iou_threshold=1.0)
    assert len(unsuppressed["scores"]) == 4
    with pytest.raises(ValueError, match="target_sizes"):
        processor.post_process_object_detection(outputs, target_sizes=[(64, 64), (64, 64)])


@pytest.mark.parametrize("resize_mode", ["pad", "crop"])
@pytest.mark.parametrize("num_labels", [1, 3])
def test_label_maps_map_back_onto_the_original_mask(resize_mode, num_labels):
    mask = np.zeros((HEIGHT, WIDTH), bool)
    x_min, y_min, x_max, y_max = (int(value) for value in corners(BOX_XYWH))
    mask[y_min:y_max, x_min:x_max] = True
    processor = SistaImageProcessor(size=64, resize_mode=resize_mode, do_normalize=False)
    framed = torch.from_numpy(processor(mask.astype(np.uint8) * 255, return_tensors="np")["pixel_values"][0, 0] > 0.5)
    if num_labels == 1:
        logits = torch.where(framed, 5.0, -5.0)[None, None]
    else:  # class 2 inside the mask, class 1 elsewhere
        logits = torch.stack([torch.zeros(64, 64), torch.where(framed, 0.0, 5.0), torch.where(framed, 5.0, 0.0)])[None]
    outputs = SimpleNamespace(logits=logits)
    (in_frame,) = processor.post_process_semantic_segmentation(outputs)
    foreground = 1 if num_labels == 1 else 2
    assert torch.equal(in_frame == foreground, framed)
    (label_map,) = processor.post_process_semantic_segmentation(outputs, target_sizes=[(HEIGHT, WIDTH)])
    assert label_map.shape == (HEIGHT, WIDTH)
    predicted = label_map.numpy() == foreground
    iou = (predicted & mask).sum() / (predicted | mask).sum()
    assert iou > 0.9, iou
    if resize_mode == "crop":  # the left and right ends of the image were cropped away: label 0 there
        assert (label_map[:, :10] == 0).all() and (label_map[:, -10:] == 0).all()
    # logits at a lower resolution than the frame still cover the whole frame
    coarse = torch.nn.functional.interpolate(logits, size=(16, 16), mode="bilinear", align_corners=False)
    (coarse_map,) = processor.post_process_semantic_segmentation(
        SimpleNamespace(logits=coarse), target_sizes=[(HEIGHT, WIDTH)]
    )
    predicted = coarse_map.numpy() == foreground
    assert (predicted & mask).sum() / (predicted | mask).sum() > 0.6


def test_frame_geometry_of_pad_and_crop():
    pad = SistaImageProcessor(size=64).frame_geometry(HEIGHT, WIDTH)
    assert pad["scale_x"] == 64 / 100 and pad["scale_y"] == 38 / 60  # round(60 * 0.64) = 38 rows
    assert (pad["offset_y"], pad["offset_x"], pad["frame_height"], pad["frame_width"]) == (13, 0, 64, 64)
    crop = SistaImageProcessor(size=64, resize_mode="crop").frame_geometry(HEIGHT, WIDTH)
    assert crop["scale_y"] == 64 / 60 and crop["scale_x"] == 107 / 100  # round(100 * 64 / 60) = 107 columns
    assert (crop["offset_y"], crop["offset_x"]) == (0, -21)
    # a centre crop larger than the 64 x 64 frame pads it: ceil(16 / 2) = 8 rows and ceil(7 / 2) = 4 columns
    larger = SistaImageProcessor(size=64, do_center_crop=True, crop_size={"height": 80, "width": 71})
    geometry = larger.frame_geometry(HEIGHT, WIDTH)
    assert (geometry["offset_y"], geometry["offset_x"]) == (13 + 8, 0 + 4)
    assert (geometry["frame_height"], geometry["frame_width"]) == (80, 71)


# ---------------------------------------------------------------------------------------------------------------------
# Pipelines, through remote code
# ---------------------------------------------------------------------------------------------------------------------


def saved_head(tmp_path, model_class, **config_kwargs):
    torch.manual_seed(0)
    model = model_class(tiny_sista_config(decoder_hidden_size=32, **config_kwargs)).eval()
    processor = SistaImageProcessor(size=32)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    return model, processor


def xray(height=48, width=40, seed=0):
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width), dtype=np.uint8)
    return Image.fromarray(pixels, mode="L")


def test_object_detection_pipeline_equals_the_post_processed_model_output(tmp_path):
    from transformers import pipeline

    id2label = {0: "nodule", 1: "effusion"}
    model, processor = saved_head(tmp_path, SistaForObjectDetection, num_labels=2, id2label=id2label)
    image = xray()
    detector = pipeline("object-detection", model=str(tmp_path), trust_remote_code=True)
    got = detector(image, threshold=0.0)
    with torch.no_grad():
        outputs = model(**processor(image, return_tensors="pt"))
    (expected,) = processor.post_process_object_detection(outputs, threshold=0.0, target_sizes=[(48, 40)])
    assert len(got) == len(expected["scores"]) > 0
    for detection, score, label, box in zip(got, expected["scores"], expected["labels"], expected["boxes"]):
        assert detection["score"] == pytest.approx(score.item(), abs=1e-4)
        assert detection["label"] == id2label[label.item()]
        assert [detection["box"][key] for key in ("xmin", "ymin", "xmax", "ymax")] == [int(v) for v in box.tolist()]


def test_image_segmentation_pipeline_gives_the_label_maps_of_a_multiclass_head(tmp_path):
    from transformers import pipeline

    id2label = {0: "background", 1: "left lung", 2: "right lung"}
    model, processor = saved_head(tmp_path, SistaForSemanticSegmentation, num_labels=3, id2label=id2label)
    image = xray()
    segmenter = pipeline("image-segmentation", model=str(tmp_path), trust_remote_code=True)
    got = segmenter(image)
    with torch.no_grad():
        outputs = model(**processor(image, return_tensors="pt"))
    (expected,) = processor.post_process_semantic_segmentation(outputs, target_sizes=[(48, 40)])
    assert [segment["label"] for segment in got] == [id2label[int(v)] for v in np.unique(expected.numpy())]
    for segment in got:
        label = next(index for index, name in id2label.items() if name == segment["label"])
        assert np.array_equal(np.asarray(segment["mask"]) > 0, expected.numpy() == label)

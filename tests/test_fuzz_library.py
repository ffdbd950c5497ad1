"""
Fuzz suite of the library: bad inputs to the processor, the model, the task heads and checkpoint loading. Each case
gets either a clear error (its type and the words that name the argument or the file) or a documented finite value
checked against an oracle; never an error from deep inside torch, PIL or the tokenizer.
"""

import io
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import SPECIAL_TOKEN_IDS, TINY_VOCAB, build_tiny_tokenizer, tiny_batch, tiny_sista_config
from modeling_sista import (
    SistaForImageClassification,
    SistaForObjectDetection,
    SistaForSemanticSegmentation,
    SistaModel,
    check_report_embeds,
    check_text_inputs,
)
from processing_sista import SistaImageProcessor, SistaProcessor


MAX_POSITIONS = tiny_sista_config().text_config.max_position_embeddings


@pytest.fixture(scope="module")
def processor():
    return SistaProcessor(SistaImageProcessor(size=32), build_tiny_tokenizer(), model_max_length=MAX_POSITIONS)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return SistaModel(tiny_sista_config()).eval()


def encoded(image: Image.Image, image_format: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return buffer.getvalue()


def gradient_image(mode: str = "L", height: int = 40, width: int = 30) -> Image.Image:
    rows = np.linspace(0, 255, height, dtype=np.uint8)[:, None].repeat(width, axis=1)
    return Image.fromarray(rows).convert(mode)


def truncated(image_format: str) -> Image.Image:
    """An image whose header is whole and whose pixel data is cut (noise, so that pixel data is most of the file)."""
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    data = encoded(noise, image_format)
    return Image.open(io.BytesIO(data[: len(data) // 2]))


def pixels(processor, images) -> torch.Tensor:
    return processor(images=images, return_tensors="pt")["pixel_values"]


# ---------------------------------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------------------------------

BAD_IMAGES = {
    "empty list": (lambda: [], ValueError, r"`images` must be .*non-empty list"),
    "None in a list": (lambda: [gradient_image(), None], TypeError, r"`images\[1\]`.*NoneType"),
    "truncated PNG in a list": (lambda: [gradient_image(), truncated("PNG")], OSError, r"`images\[1\]`.*truncated"),
    "truncated JPEG in a list": (lambda: [gradient_image(), truncated("JPEG")], OSError, r"`images\[1\]`.*truncated"),
    "NaN array": (lambda: np.full((8, 8), np.nan, np.float32), ValueError, r"`images` must hold finite values"),
    "inf array": (lambda: np.full((8, 8), np.inf, np.float32), ValueError, r"`images` must hold finite values"),
    "zero height": (lambda: np.zeros((0, 5), np.uint8), ValueError, r"`images` must have a non-zero height"),
    "complex array": (lambda: np.zeros((8, 8), np.complex64), TypeError, r"`images` must hold real.*complex64"),
    "object array": (lambda: np.array([[None, 1]]), TypeError, r"`images` must hold real numbers.*object"),
    "5-d array": (lambda: np.zeros((1, 1, 3, 8, 8), np.float32), ValueError, r"`images` must be \(H, W\)"),
    "5 channels": (lambda: np.zeros((8, 8, 5), np.uint8), ValueError, r"`images`.*channel"),
    "a number": (lambda: 3, TypeError, r"`images` must be .*int"),
    "a dict": (lambda: {"image": gradient_image()}, TypeError, r"`images` must be .*dict"),
    "encoded bytes": (lambda: encoded(gradient_image(), "PNG"), TypeError, r"`images` must be .*bytes"),
}


@pytest.mark.parametrize("case", list(BAD_IMAGES))
def test_bad_images_are_named(processor, case):
    make_images, error, match = BAD_IMAGES[case]
    with pytest.raises(error, match=match):
        processor(images=make_images())


def test_an_undecodable_file_is_named_with_its_index(processor, tmp_path):
    data = encoded(gradient_image(), "PNG")
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.png").write_bytes(b"not an image")
    with pytest.raises(OSError, match=r"`images\[1\]`.*cut\.png.*truncated"):
        processor(images=[gradient_image(), str(tmp_path / "cut.png")])
    with pytest.raises(OSError, match=r"`images\[0\]`.*garbage\.png"):
        processor(images=[str(tmp_path / "garbage.png")])


@pytest.mark.parametrize(
    "mode, reference_mode",
    [("RGBA", "RGB"), ("LA", "L"), ("CMYK", "RGB"), ("P", "RGB"), ("PA", "RGBA"), ("1", "L"), ("YCbCr", "RGB")],
)
def test_every_pil_mode_equals_its_plain_conversion(processor, mode, reference_mode):
    # a mode without plain intensities is read as PIL's own conversion of it; alpha is dropped
    image = gradient_image("RGB").convert(mode)
    got, expected = pixels(processor, image), pixels(processor, image.convert(reference_mode))
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_sixteen_bit_image_is_windowed_not_clipped_to_eight_bits(processor):
    ramp = np.linspace(0, 4095, 32 * 32).reshape(32, 32).astype(np.uint16)  # at the processed size: no resampling
    got = pixels(processor, Image.fromarray(ramp))
    eight_bit = pixels(processor, Image.fromarray((ramp / 4095 * 255).round().astype(np.uint8)))
    # the window maps the 0.5 and 99.5 percentiles to the ends: the full range [-1, 1] is used
    assert got.min() == -1 and got.max() == 1
    torch.testing.assert_close(got, eight_bit, atol=0.05, rtol=0)


@pytest.mark.parametrize("shape", [(1, 1), (1, 500), (4097, 4096)])
def test_tiny_and_huge_constant_images_give_the_constant(processor, shape):
    # a constant 8-bit image stays constant where the image lies; the rest of the frame is black padding
    value = 200
    image = np.full(shape, value, dtype=np.uint8)
    got = pixels(processor, image)[0, 0]
    content = got[got != -1]
    assert content.numel() > 0
    torch.testing.assert_close(content, torch.full_like(content, (value / 255 - 0.5) / 0.5))


def test_float_extremes_are_windowed_without_overflow(processor):
    # max - min overflows float64 here; the window still maps the range onto [0, 1] like a tame copy of it
    extreme = np.linspace(-1, 1, 32 * 32).reshape(32, 32) * 1e308
    with np.errstate(over="ignore"):
        assert np.isfinite(extreme).all() and not np.isfinite(extreme.max() - extreme.min())
    got = pixels(processor, extreme)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, pixels(processor, extreme / 1e300))


def test_boolean_image_is_black_and_white(processor):
    mask = np.zeros((32, 32), dtype=bool)
    mask[:, 16:] = True
    got = pixels(processor, mask)[0, 0]
    assert set(got.unique().tolist()) == {-1.0, 1.0}


def test_frames_of_different_sizes_cannot_become_one_tensor():
    unpadded = SistaImageProcessor(size=32, do_pad=False)
    portrait, landscape = np.zeros((40, 20), np.uint8), np.zeros((20, 40), np.uint8)
    with pytest.raises(ValueError, match=r"`images` became frames of different sizes \[\(16, 32\), \(32, 16\)\]"):
        unpadded([portrait, landscape], return_tensors="pt")
    # the documented way out: a list of arrays of their own sizes
    frames = unpadded([portrait, landscape])["pixel_values"]
    assert [frame.shape for frame in frames] == [(3, 32, 16), (3, 16, 32)]


def test_a_misspelt_image_argument_is_not_silently_dropped(processor):
    with pytest.raises(TypeError, match=r"Unexpected keyword arguments \['resize_mod'\] for images alone.*resize_"):
        processor(images=gradient_image(), resize_mod="crop")


def test_a_datasets_column_of_images_is_a_list(processor):
    datasets = pytest.importorskip("datasets")
    images = [gradient_image(), gradient_image("RGB", 30, 50)]
    dataset = datasets.Dataset.from_dict({"image": images}).cast_column("image", datasets.Image())
    column = dataset.select([0, 1])["image"]
    assert not isinstance(column, (list, tuple))
    torch.testing.assert_close(pixels(processor, column), pixels(processor, images))
    reports = dataset.add_column("report", ["no effusion .", "small left effusion ."]).select([0, 1])["report"]
    assert processor(text=reports)["input_ids"] == processor(text=list(reports))["input_ids"]


# ---------------------------------------------------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------------------------------------------------

BAD_TEXTS = {
    "None in a list": (["no effusion", None], TypeError, r"`text\[1\]` must be a str, got NoneType"),
    "int in a list": (["no effusion", 3], TypeError, r"`text\[1\]` must be a str, got int"),
    "NaN in a list": (["no effusion", float("nan")], TypeError, r"`text\[1\]` must be a str, got float"),
    "bytes in a list": ([b"no effusion"], TypeError, r"`text\[0\]` must be a str, got bytes"),
    "a number": (3, TypeError, r"`text` must be a str or a list of str, got int"),
    "bytes": (b"no effusion", TypeError, r"`text` must be a str or a list of str, got bytes"),
    "a dict": ({"report": "no effusion"}, TypeError, r"`text` must be a str or a list of str, got dict"),
    "empty list": ([], ValueError, r"`text` must hold at least one report"),
    "None without images": (None, ValueError, r"`text` and `images` are both None"),
}


@pytest.mark.parametrize("case", list(BAD_TEXTS))
def test_bad_text_is_named(processor, case):
    text, error, match = BAD_TEXTS[case]
    with pytest.raises(error, match=match):
        processor(text=text)


def test_control_characters_are_dropped_like_the_tokenizer_does(processor):
    tokenizer = build_tiny_tokenizer()
    got = processor(text=["\x00\x07 effusion \u200b\x1b"])["input_ids"]
    assert got == [tokenizer("effusion")["input_ids"]]


def test_an_empty_report_is_a_documented_finite_value(processor, model):
    # "" tokenises to [CLS] [SEP]: no token is left for STA, so loss_sta is 0, and the other losses are finite
    inputs = processor(text=["", "small left effusion ."], images=[gradient_image()] * 2, return_tensors="pt")
    assert inputs["input_ids"][0, :2].tolist() == [2, 3]
    with torch.no_grad():
        outputs = model(**inputs, report_embeds=torch.randn(2, 8), return_loss=True, output_token_patch_weights=True)
    assert torch.isfinite(outputs.loss) and torch.isfinite(outputs.logits_per_image).all()
    assert outputs.token_patch_weights[0].abs().sum() == 0


def test_long_reports_are_truncated_to_the_text_tower(processor):
    tokenizer = build_tiny_tokenizer()
    report = " ".join(["small left pleural effusion ."] * 100)
    input_ids = processor(text=[report])["input_ids"][0]
    full = tokenizer(report)["input_ids"]
    assert len(full) > MAX_POSITIONS
    assert input_ids == full[: MAX_POSITIONS - 1] + [tokenizer.sep_token_id]


@pytest.mark.parametrize("max_length", [0, 2, 1.5])
def test_a_max_length_without_room_for_a_word_is_refused(processor, max_length):
    # the tokenizer would ignore it and return longer sequences
    with pytest.raises(ValueError, match=rf"`max_length` must be an int of at least 3 .*got {max_length}"):
        processor(text=["small left effusion ."], max_length=max_length)


def test_model_max_length_only_lowers_the_tokenizers_limit():
    tokenizer = build_tiny_tokenizer()
    tokenizer.model_max_length = 16
    SistaProcessor(SistaImageProcessor(size=32), tokenizer, model_max_length=MAX_POSITIONS)
    assert tokenizer.model_max_length == 16
    with pytest.raises(ValueError, match="`model_max_length` must be a positive int, got 0"):
        SistaProcessor(SistaImageProcessor(size=32), build_tiny_tokenizer(), model_max_length=0)


def test_the_saved_processor_keeps_the_text_length(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["model_max_length"] == MAX_POSITIONS
    assert SistaProcessor.from_pretrained(tmp_path).tokenizer.model_max_length == MAX_POSITIONS


def test_readme_quick_start_on_a_500_word_report_with_remote_code(processor, model, tmp_path):
    checkpoint = tmp_path / "sista"
    model.save_pretrained(checkpoint)
    processor.save_pretrained(checkpoint)
    report = " ".join((TINY_VOCAB[len(SPECIAL_TOKEN_IDS) :] * 10)[:500])
    np.save(tmp_path / "image.npy", np.asarray(gradient_image()))
    script = f"""
import numpy as np, torch
from PIL import Image
from transformers import AutoModel, AutoProcessor
model = AutoModel.from_pretrained({str(checkpoint)!r}, trust_remote_code=True)
processor = AutoProcessor.from_pretrained({str(checkpoint)!r}, trust_remote_code=True)
image = Image.fromarray(np.load({str(tmp_path / "image.npy")!r}))
reports = [{report!r}, "small left pleural effusion ."]
inputs = processor(text=reports, images=[image], return_tensors="pt", padding=True)
with torch.no_grad():
    outputs = model(**inputs)
torch.save({{"input_ids": inputs["input_ids"], "logits": outputs.logits_per_image}}, {str(tmp_path / "out.pt")!r})
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"), "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    remote = torch.load(tmp_path / "out.pt")
    assert remote["input_ids"].shape == (2, MAX_POSITIONS)
    local_inputs = processor(
        text=[report, "small left pleural effusion ."], images=[gradient_image()], return_tensors="pt"
    )
    with torch.no_grad():
        local = model(**local_inputs).logits_per_image
    assert torch.equal(remote["input_ids"], local_inputs["input_ids"])
    torch.testing.assert_close(remote["logits"], local)


# ---------------------------------------------------------------------------------------------------------------------
# Model tensors
# ---------------------------------------------------------------------------------------------------------------------


def _batch_with(name: str, change):
    """A tiny batch whose entry `name` is replaced by `change(batch)` (a new entry when absent)."""

    def make():
        batch = tiny_batch()
        batch[name] = change(batch)
        return batch

    return make


def _fill(name: str, dim: int, index: int, value):
    return _batch_with(name, lambda batch: batch[name].index_fill(dim, torch.tensor([index]), value))


def _longer_batch():
    batch = tiny_batch()
    return {**batch, **{name: batch[name].repeat(1, 7) for name in ("input_ids", "attention_mask")}}


VOCAB_LIMIT = rf"\[0, {len(TINY_VOCAB) - 1}\] \(the text tower's vocab_size={len(TINY_VOCAB)}\)"
BAD_MODEL_INPUTS = {
    "input_ids as a list": (
        _batch_with("input_ids", lambda b: b["input_ids"].tolist()), TypeError, r"`input_ids` must be a Long.*list"
    ),
    "float input_ids": (
        _batch_with("input_ids", lambda b: b["input_ids"].float()), TypeError, r"`input_ids` must be an int.*float32"
    ),
    "1-d input_ids": (
        _batch_with("input_ids", lambda b: b["input_ids"][0]), ValueError, r"`input_ids` must have shape .*got \(10,\)"
    ),
    "3-d input_ids": (
        _batch_with("input_ids", lambda b: b["input_ids"][..., None]), ValueError, r"`input_ids` must have shape"
    ),
    "input_ids too long": (
        _longer_batch, ValueError, rf"`input_ids` has 70 tokens, more than .*max_position_embeddings={MAX_POSITIONS}"
    ),
    "id beyond the vocabulary": (
        _fill("input_ids", 1, 5, 999), ValueError, rf"`input_ids` must lie in {VOCAB_LIMIT}, got ids from \d+ to 999"
    ),
    "negative id": (
        _fill("input_ids", 1, 5, -1), ValueError, rf"`input_ids` must lie in {VOCAB_LIMIT}, got ids from -1 to \d+"
    ),
    "token_type_ids beyond type_vocab_size": (
        _batch_with("token_type_ids", lambda b: torch.full_like(b["input_ids"], 2)),
        ValueError,
        r"`token_type_ids` must lie in \[0, 1\] \(type_vocab_size=2\)",
    ),
    "attention_mask of another shape": (
        _batch_with("attention_mask", lambda b: b["attention_mask"][:, :5]),
        ValueError,
        r"`attention_mask` must have the shape of `input_ids` \(4, 10\), got \(4, 5\)",
    ),
    "attention_mask of 2s": (
        _batch_with("attention_mask", lambda b: b["attention_mask"] * 2),
        ValueError,
        r"`attention_mask` must hold only 0 \(padding\) and 1 \(token\), got values \[0, 2\]",
    ),
    "int16 input_ids": (
        _batch_with("input_ids", lambda b: b["input_ids"].short()), TypeError, r"`input_ids` must be .*int16"
    ),
    "position_ids beyond the positions": (
        _batch_with("position_ids", lambda b: torch.arange(10).expand(4, 10) + 60),
        ValueError,
        rf"`position_ids` must lie in \[0, {MAX_POSITIONS - 1}\].*from 60 to 69",
    ),
    "attention_mask as a list": (
        _batch_with("attention_mask", lambda b: b["attention_mask"].tolist()), TypeError, r"`attention_mask` .*list"
    ),
    "all-padding report": (
        _fill("attention_mask", 0, 1, 0), ValueError, r"`attention_mask` has no token for rows \[1\]"
    ),
    "no report": (
        _batch_with("input_ids", lambda b: b["input_ids"][:0]), ValueError, r"`input_ids` must hold at least one"
    ),
    "no image": (
        _batch_with("pixel_values", lambda b: b["pixel_values"][:0]), ValueError, r"`pixel_values` must hold at least"
    ),
    "report_embeds as a list": (
        _batch_with("report_embeds", lambda b: b["report_embeds"].tolist()),
        TypeError,
        r"`report_embeds` must be a float tensor of shape \(4, dim\), got a list",
    ),
    "complex report_embeds": (
        _batch_with("report_embeds", lambda b: b["report_embeds"].to(torch.complex64)),
        TypeError,
        r"`report_embeds` must be a float tensor.*complex",
    ),
    "1-d report_embeds": (
        _batch_with("report_embeds", lambda b: b["report_embeds"][0]),
        ValueError,
        r"`report_embeds` must have shape \(4, dim\).*got \(8,\)",
    ),
    "report_embeds of another batch": (
        _batch_with("report_embeds", lambda b: b["report_embeds"][:3]),
        ValueError,
        r"`report_embeds` must have shape \(4, dim\).*got \(3, 8\)",
    ),
    "report_embeds without dimensions": (
        _batch_with("report_embeds", lambda b: b["report_embeds"][:, :0]),
        ValueError,
        r"`report_embeds` must have shape \(4, dim\) with dim >= 1, got \(4, 0\)",
    ),
    "NaN report_embeds": (
        _fill("report_embeds", 0, 2, float("nan")), ValueError, r"`report_embeds` must be finite.*rows \[2\]"
    ),
    "inf report_embeds": (
        _fill("report_embeds", 1, 0, float("inf")), ValueError, r"`report_embeds` must be finite.*rows \[0, 1, 2, 3\]"
    ),
    "pixel_values as a list": (
        _batch_with("pixel_values", lambda b: b["pixel_values"].tolist()), TypeError, r"`pixel_values` must be a float"
    ),
    "integer pixel_values": (
        _batch_with("pixel_values", lambda b: b["pixel_values"].long()), TypeError, r"`pixel_values` must be a float"
    ),
    "3-d pixel_values": (
        _batch_with("pixel_values", lambda b: b["pixel_values"][0]),
        ValueError,
        r"`pixel_values` must have shape \(batch_size, 3, height, width\)",
    ),
    "one channel": (
        _batch_with("pixel_values", lambda b: b["pixel_values"][:, :1]),
        ValueError,
        r"`pixel_values` must have shape \(batch_size, 3, height, width\).*got \(4, 1, 32, 32\)",
    ),
    "smaller than a patch": (
        _batch_with("pixel_values", lambda b: b["pixel_values"][..., :4, :4]),
        ValueError,
        r"`pixel_values` of size \(4, 4\) is smaller than one patch",
    ),
    "NaN pixel_values": (_fill("pixel_values", 2, 3, float("nan")), ValueError, r"`pixel_values` must be finite"),
    "fewer images than reports": (
        _batch_with("pixel_values", lambda b: b["pixel_values"][:3]),
        ValueError,
        r"`pixel_values` and `input_ids` must hold the same number of samples.*3 images and 4 reports",
    ),
}


@pytest.mark.parametrize("case", list(BAD_MODEL_INPUTS))
def test_bad_model_inputs_are_named(model, case):
    make_batch, error, match = BAD_MODEL_INPUTS[case]
    with pytest.raises(error, match=match), torch.no_grad():
        model(**make_batch(), return_loss=True)


def test_label_vectors_as_report_embeds_equal_their_float_version(model):
    # integer label vectors (a labeller's output) are a documented report-similarity source
    batch = tiny_batch()
    labels = torch.tensor([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 1]])
    with torch.no_grad():
        got = model(**{**batch, "report_embeds": labels}, return_loss=True).loss
        expected = model(**{**batch, "report_embeds": labels.float()}, return_loss=True).loss
    torch.testing.assert_close(got, expected)


def test_an_all_zero_report_embedding_is_no_false_negative(model):
    # a zero row is similar to nothing: with every other report a false negative of each other, only row 0 keeps
    # negatives, which equals SIA with that row alone unflagged
    batch = tiny_batch()
    report_embeds = torch.ones(4, 8)
    report_embeds[0] = 0
    apart = torch.eye(4, 8)
    apart[1:] = 1
    with torch.no_grad():
        got = model(**{**batch, "report_embeds": report_embeds}, return_loss=True).loss_sia
        expected = model(**{**batch, "report_embeds": apart}, return_loss=True).loss_sia
    assert torch.isfinite(got)
    torch.testing.assert_close(got, expected)


def test_value_checks_are_skipped_off_the_cpu_and_under_compile(monkeypatch):
    # reading values off an accelerator would synchronise it; shape checks still apply there
    config = tiny_sista_config().text_config
    off_cpu_ids = torch.full((2, 5), 999, device="meta")
    check_text_inputs(off_cpu_ids, config)
    check_report_embeds(torch.full((2, 3), float("nan"), device="meta"), 2)
    with pytest.raises(ValueError, match="`input_ids` has 70 tokens"):
        check_text_inputs(torch.zeros((2, 70), dtype=torch.long, device="meta"), config)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    check_text_inputs(torch.full((2, 5), 999), config)
    check_report_embeds(torch.full((2, 3), float("nan")), 2)
    with pytest.raises(TypeError, match="`report_embeds` must be a float tensor"):
        check_report_embeds([[0.0]], 1)


def test_a_collator_can_check_its_cpu_batch_with_the_same_functions():
    config = tiny_sista_config().text_config
    batch = tiny_batch()
    check_text_inputs(batch["input_ids"], config, batch["attention_mask"])
    check_report_embeds(batch["report_embeds"], 4)
    with pytest.raises(ValueError, match="`input_ids` must lie in"):
        check_text_inputs(batch["input_ids"] + len(TINY_VOCAB), config)


# ---------------------------------------------------------------------------------------------------------------------
# Task heads' labels
# ---------------------------------------------------------------------------------------------------------------------

PIXELS = tiny_batch()["pixel_values"]
BOX = {"class_labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}
HEADS = {
    "classification": (SistaForImageClassification, {"num_labels": 3}),
    "multi-label": (SistaForImageClassification, {"num_labels": 3, "problem_type": "multi_label_classification"}),
    "regression": (SistaForImageClassification, {"num_labels": 1}),
    "segmentation": (SistaForSemanticSegmentation, {"num_labels": 3}),
    "detection": (SistaForObjectDetection, {"num_labels": 2}),
}


@pytest.fixture(scope="module")
def heads():
    torch.manual_seed(0)
    return {name: head_class(tiny_sista_config(**kwargs)).eval() for name, (head_class, kwargs) in HEADS.items()}


def _boxes(**changes):
    """One box per image for the 4 images of the batch, with `changes` to its `class_labels` or `boxes`."""
    return [{**BOX, **changes}] * 4


CLASS_LABELS = r"`labels\[0\]\['class_labels'\]`"
BOXES = r"`labels\[0\]\['boxes'\]`"
BAD_LABELS = {
    "classification, a list": ("classification", [0, 1, 2, 1], TypeError, r"`labels` must be a tensor, got list"),
    "classification, out of range": (
        "classification", torch.tensor([0, 1, 2, 3]), ValueError, r"`labels` must lie in \[0, 2\] \(num_labels=3\)"
    ),
    "classification, too few": (
        "classification", torch.tensor([0, 1]), ValueError, r"`labels` must be class indices of shape \(4,\)"
    ),
    "classification, float indices": (
        "classification", torch.tensor([0.0, 1.0, 2.0, 1.0]), ValueError, r"multi-hot.*inferred from the labels"
    ),
    "multi-label, NaN": ("multi-label", torch.full((4, 3), float("nan")), ValueError, r"`labels` must be finite"),
    "multi-label, above 1": (
        "multi-label", torch.full((4, 3), 2.0), ValueError, r"multi-label `labels` must lie in \[0, 1\]"
    ),
    "multi-label, too few classes": (
        "multi-label", torch.ones(4, 2), ValueError, r"multi-label `labels` must be multi-hot of shape \(4, 3\)"
    ),
    "regression, inf": ("regression", torch.tensor([1.0, float("inf"), 0, 0]), ValueError, r"`labels` must be finite"),
    "regression, wrong shape": (
        "regression", torch.ones(4, 5), ValueError, r"regression `labels` must have shape \(4,\) or \(4, 1\), got"
    ),
    "segmentation, a list": ("segmentation", [[0]], TypeError, r"`labels` must be a tensor, got list"),
    "segmentation, float mask": (
        "segmentation", torch.zeros(4, 32, 32), ValueError, r"`labels` must be an integer mask.*float32"
    ),
    "segmentation, NaN": ("segmentation", torch.full((4, 32, 32), torch.nan), ValueError, r"`labels` must be finite"),
    "segmentation, 0/255 mask": (
        "segmentation", torch.full((4, 32, 32), 255), ValueError, r"`labels` must lie in \[0, 2\].*0/255"
    ),
    "segmentation, wrong size": (
        "segmentation",
        torch.zeros(4, 16, 16, dtype=torch.long),
        ValueError,
        r"`labels` must be an integer mask of shape \(4, 32, 32\)",
    ),
    "detection, too few images": ("detection", [BOX] * 3, ValueError, r"`labels` must be a list of 4 dicts.*length 3"),
    "detection, no class_labels": (
        "detection", [{"boxes": BOX["boxes"]}] * 4, ValueError, r"`labels\[0\]` must be a dict with `class_labels`"
    ),
    "detection, float class_labels": (
        "detection",
        _boxes(class_labels=torch.tensor([1.0])),
        TypeError,
        CLASS_LABELS + r" must be an integer tensor of class indices, got dtype torch.float32",
    ),
    "detection, class_labels a list": (
        "detection", _boxes(class_labels=[1]), TypeError, CLASS_LABELS + r" must be a tensor, got list"
    ),
    "detection, boxes a list": (
        "detection", _boxes(boxes=[[0.5, 0.5, 0.2, 0.2]]), TypeError, BOXES + r" must be a tensor, got list"
    ),
    "detection, NaN box": (
        "detection", _boxes(boxes=torch.tensor([[float("nan"), 0.5, 0.2, 0.2]])), ValueError, BOXES + " must be finite"
    ),
    "detection, infinite box": (
        "detection", _boxes(boxes=torch.tensor([[0.5, 0.5, float("inf"), 0.2]])), ValueError, BOXES + " must be finite"
    ),
    "detection, empty box": (
        "detection", _boxes(boxes=torch.tensor([[0.5, 0.5, 0.0, 0.2]])), ValueError, BOXES + ".*positive sizes"
    ),
    "detection, 1-d boxes": (
        "detection", _boxes(boxes=torch.tensor([0.5, 0.5, 0.2, 0.2])), ValueError, r"`boxes` of shape \(num_boxes, 4\)"
    ),
    "detection, unknown class": (
        "detection", _boxes(class_labels=torch.tensor([2])), ValueError, CLASS_LABELS + r" must lie in \[0, 1\]"
    ),
}


@pytest.mark.parametrize("case", list(BAD_LABELS))
def test_bad_labels_are_named(heads, case):
    head, labels, error, match = BAD_LABELS[case]
    with pytest.raises(error, match=match), torch.no_grad():
        heads[head](PIXELS, labels=labels)


def test_integer_boxes_and_images_without_objects_are_documented_finite_values(heads):
    detector = heads["detection"]
    whole_image = {"class_labels": torch.tensor([0]), "boxes": torch.tensor([[1, 1, 1, 1]])}
    empty = {"class_labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)}
    with torch.no_grad():
        got = detector(PIXELS, labels=[whole_image, empty, empty, empty]).loss
        as_floats = {**whole_image, "boxes": whole_image["boxes"].float()}
        expected = detector(PIXELS, labels=[as_floats, empty, empty, empty]).loss
    assert torch.isfinite(got)
    torch.testing.assert_close(got, expected)


POST_PROCESSING = {
    "detection, image processor": ("detection", lambda processor, model: processor.post_process_object_detection),
    "detection, model": ("detection", lambda processor, model: model.post_process_object_detection),
    "segmentation": ("segmentation", lambda processor, model: processor.post_process_semantic_segmentation),
}


@pytest.mark.parametrize("target_size", [(0, 0), (-5, 10), (10,)])
@pytest.mark.parametrize("case", list(POST_PROCESSING))
def test_bad_target_sizes_are_named(heads, processor, case, target_size):
    task, post_processing_of = POST_PROCESSING[case]
    with torch.no_grad():
        outputs = heads[task](PIXELS)
    post_process = post_processing_of(processor.image_processor, heads[task])
    with pytest.raises(ValueError, match=r"`target_sizes\[1\]` must be a positive \(height, width\) pair"):
        post_process(outputs, target_sizes=[(40, 30), target_size, (40, 30), (40, 30)])


# ---------------------------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------------------------


def _saved(model, folder):
    model.save_pretrained(folder)
    return folder / "model.safetensors"


def _cut_in_half(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _write(name: str, text: str):
    return lambda folder, weights: (folder / name).write_text(text)


BAD_CHECKPOINTS = {
    "no config.json": (lambda folder, weights: (folder / "config.json").unlink(), FileNotFoundError, "has no config"),
    "no model.safetensors": (lambda folder, weights: weights.unlink(), OSError, r"no file named model\.safetensors"),
    "truncated model.safetensors": (
        lambda folder, weights: _cut_in_half(weights), OSError, r"model\.safetensors is not a complete safetensors"
    ),
    "empty model.safetensors": (
        lambda folder, weights: weights.write_bytes(b""), OSError, r"model\.safetensors is not a complete safetensors"
    ),
    "config.json not JSON": (_write("config.json", "{oops"), OSError, r"config\.json.*not a valid JSON"),
    "config.json a list": (_write("config.json", "[]"), ValueError, r"config\.json of .* must hold a JSON object"),
    "another architecture": (
        _write("config.json", json.dumps({"model_type": "bert"})), ValueError, r"not a SISTA checkpoint.*'bert'"
    ),
}


@pytest.mark.parametrize("model_class", [SistaModel, SistaForImageClassification])
@pytest.mark.parametrize("case", list(BAD_CHECKPOINTS))
def test_bad_checkpoints_are_named(model, tmp_path, case, model_class):
    spoil, error, match = BAD_CHECKPOINTS[case]
    spoil(tmp_path, _saved(model, tmp_path))
    with pytest.raises(error, match=match):
        model_class.from_pretrained(tmp_path)


def test_a_missing_local_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"checkpoint folder .*not-there.* does not exist"):
        SistaModel.from_pretrained(str(tmp_path / "not-there"))


def test_the_auto_classes_name_a_missing_config_too(model, tmp_path):
    # AutoModel reads the config before any SISTA code runs: transformers' own message, which names the file
    from transformers import AutoModel

    _saved(model, tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.raises(ValueError, match=r"config\.json"):
        AutoModel.from_pretrained(tmp_path, trust_remote_code=True)


def test_a_truncated_shard_of_a_subfolder_is_named(model, tmp_path):
    _cut_in_half(_saved(model, tmp_path / "sub"))
    with pytest.raises(OSError, match=r"sub.model\.safetensors is not a complete safetensors file"):
        SistaModel.from_pretrained(tmp_path, subfolder="sub")


def test_a_processor_folder_without_files_is_named(tmp_path):
    with pytest.raises(OSError, match=re.escape(str(tmp_path))):
        SistaProcessor.from_pretrained(tmp_path)

"""Hub release: the folder that would be uploaded, loaded in a clean interpreter; the model card; the push path.

Nothing here touches the network: the release folder is built and loaded locally, the push goes to a fake `HfApi`,
and the command line is run with HF_HUB_OFFLINE=1 and no token.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard, metadata_load
from safetensors.torch import load_file

import modeling_sista
import sista_examples.hub.model_card as model_card
import sista_examples.hub.release as push_to_hub
from conftest import build_tiny_tokenizer, load_script, tiny_sista_config
from modeling_sista import SistaModel
from processing_sista import SistaImageProcessor, SistaProcessor
from sista_examples.hub.load_check import CHECK_TEXTS, check_images
from sista_examples.hub.model_card import build_model_card, load_results
from sista_examples.hub.release import ReleaseError, check_release_folders, prepare_release_folder, push_sista_to_hub


REPO_ROOT = Path(__file__).resolve().parents[1]
IMAGE_SIZE = 32
BASE_FILES = {
    "README.md",
    "config.json",
    "model.safetensors",
    "configuration_sista.py",
    "modeling_sista.py",
    "processing_sista.py",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
}

ZERO_SHOT_RESULTS = {  # the shape examples/zero_shot.py writes
    "task": "zero_shot_classification",
    "model": "outputs/sista",
    "dataset": "SynthCXR (generated)",
    "split": "test",
    "num_images": 64,
    "macro_auroc": 0.7125,
    "num_classes_evaluated": 2,
    "per_class": {
        "pleural_effusion": {"auroc": 0.8125, "num_positives": 9, "skipped": None},
        "nodule": {"auroc": 0.6125, "num_positives": 4, "skipped": None},
        "pneumothorax": {"auroc": None, "num_positives": 0, "skipped": "no positive"},
    },
    "prompts": {"nodule": {"positive": ["nodule"], "negative": ["no nodule"]}},
    "arguments": {"model_name_or_path": "outputs/sista", "split": "test", "batch_size": 32, "max_samples": None},
}
RETRIEVAL_RESULTS = {  # the shape examples/retrieval.py writes
    "task": "retrieval",
    "dataset": "SynthCXR (generated)",
    "split": "test",
    "num_pairs": 64,
    "paired": {"image_to_report": {"R@1": 0.125, "R@5": 0.375}, "report_to_image": {"R@1": 0.0625, "R@5": 0.5}},
    "command": "python examples/retrieval.py --model_name_or_path outputs/sista --split test",
}
CLASSIFICATION_RESULTS = {  # a loosely shaped file: metrics under "metrics", dataset as a mapping
    "task": "classification",
    "dataset": {"name": "SynthCXR", "type": "synthcxr", "split": "test"},
    "label_fraction": 0.1,
    "metrics": {"auroc": 0.875, "accuracy": 0.8},
    "command": "python examples/finetune_classification.py --label_fraction 0.1",
}


def perturbed(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Weights away from any initialisation, so that a re-initialised load cannot match by accident."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


@pytest.fixture(scope="module")
def tiny_processor():
    tokenizer = build_tiny_tokenizer()
    assert tokenizer.unk_token_id not in tokenizer(CHECK_TEXTS[0])["input_ids"]
    return SistaProcessor(SistaImageProcessor(size=IMAGE_SIZE), tokenizer)


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, tiny_processor):
    """A pre-training output folder: model, processor, tokenizer, Trainer files and results files."""
    from transformers import TrainingArguments

    run_dir = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    model = perturbed(SistaModel(tiny_sista_config(sia_threshold=0.9)), seed=1)
    model.save_pretrained(run_dir)
    tiny_processor.save_pretrained(run_dir)
    arguments = TrainingArguments(
        output_dir=str(run_dir),
        learning_rate=3e-4,
        per_device_train_batch_size=8,
        num_train_epochs=2,
        seed=17,
        report_to=[],
        use_cpu=True,
    )
    torch.save(arguments, run_dir / "training_args.bin")
    (run_dir / "trainer_state.json").write_text(
        json.dumps(
            {
                "global_step": 40,
                "epoch": 2.0,
                "train_batch_size": 8,
                "log_history": [
                    {"loss": 2.5, "loss_sia": 1.5, "loss_sta": 1.0, "step": 20},
                    {"loss": 1.25, "step": 40},
                ],
            }
        )
    )
    (run_dir / "zero_shot_results.json").write_text(json.dumps(ZERO_SHOT_RESULTS))
    (run_dir / "retrieval_results.json").write_text(json.dumps(RETRIEVAL_RESULTS))
    return run_dir, model


@pytest.fixture(scope="module")
def base_release(tmp_path_factory, base_run):
    run_dir, _ = base_run
    return prepare_release_folder(
        run_dir, tmp_path_factory.mktemp("release") / "sista", repo_id="me/sista", revision="v0.1"
    )


# ---------------------------------------------------------------------------------------------------------------------
# The release folder
# ---------------------------------------------------------------------------------------------------------------------


def test_release_folder_holds_exactly_the_release_files(base_release):
    assert {path.name for path in base_release.iterdir()} == BASE_FILES  # no training_args.bin, no results files
    auto_map = json.loads((base_release / "config.json").read_text())["auto_map"]
    assert auto_map == {
        "AutoConfig": "configuration_sista.SistaConfig",
        "AutoModel": "modeling_sista.SistaModel",
        "AutoModelForZeroShotImageClassification": "modeling_sista.SistaModel",
    }
    processor_auto_map = json.loads((base_release / "processor_config.json").read_text())["auto_map"]
    assert processor_auto_map["AutoProcessor"] == "processing_sista.SistaProcessor"


def test_release_takes_processor_and_missing_code_from_elsewhere(tmp_path, base_run, tiny_processor):
    """A model saved alone: processor from --processor_dir, processing_sista.py from the project if nowhere else."""
    _, model = base_run
    model.save_pretrained(tmp_path / "model_only")
    tiny_processor.save_pretrained(tmp_path / "processor")
    (tmp_path / "processor" / "processing_sista.py").unlink()
    # modeling_sista.py imports the post-processing of processing_sista.py, so the model saves it too: remove it here
    (tmp_path / "model_only" / "processing_sista.py").unlink()
    assert not (tmp_path / "model_only" / "processing_sista.py").exists()

    with pytest.raises(ReleaseError, match="processor_dir"):
        prepare_release_folder(tmp_path / "model_only", tmp_path / "no_processor", results=[])
    release = prepare_release_folder(
        tmp_path / "model_only", tmp_path / "release", results=[], processor_dir=tmp_path / "processor"
    )
    assert {path.name for path in release.iterdir()} == BASE_FILES
    assert (release / "processing_sista.py").read_bytes() == (REPO_ROOT / "processing_sista.py").read_bytes()
    with pytest.raises(ReleaseError, match="not empty"):
        prepare_release_folder(tmp_path / "model_only", release, results=[], processor_dir=tmp_path / "processor")


def test_release_refuses_a_processor_other_than_the_models_own(tmp_path, base_run, tiny_processor):
    run_dir, model = base_run
    model.save_pretrained(tmp_path / "model")
    SistaImageProcessor(size=IMAGE_SIZE, resize_mode="crop").save_pretrained(tmp_path / "model")
    with pytest.raises(ReleaseError, match="resize_mode"):
        prepare_release_folder(tmp_path / "model", tmp_path / "release", results=[], processor_dir=run_dir)


def test_release_refuses_an_auto_map_that_points_nowhere(tmp_path, base_run):
    run_dir, model = base_run
    model.save_pretrained(tmp_path / "model")
    for name in ("processor_config.json", "tokenizer.json", "tokenizer_config.json", "processing_sista.py"):
        (tmp_path / "model" / name).write_bytes((run_dir / name).read_bytes())
    processor_config = json.loads((run_dir / "processor_config.json").read_text())
    processor_config["auto_map"]["AutoProcessor"] = "processing_sista.NoSuchProcessor"
    (tmp_path / "model" / "processor_config.json").write_text(json.dumps(processor_config))
    with pytest.raises(ReleaseError, match="NoSuchProcessor"):
        prepare_release_folder(tmp_path / "model", tmp_path / "release", results=[])


def test_release_rejects_a_folder_without_safetensors(tmp_path, base_run):
    run_dir, _ = base_run
    (tmp_path / "config.json").write_text((run_dir / "config.json").read_text())
    with pytest.raises(ReleaseError, match="safetensors"):
        prepare_release_folder(tmp_path, tmp_path / "release")


HEADS = {
    "SistaForImageClassification": "AutoModelForImageClassification",
    "SistaForSemanticSegmentation": "AutoModelForSemanticSegmentation",
    "SistaForObjectDetection": "AutoModelForObjectDetection",
}


@pytest.fixture(scope="module")
def head_releases(tmp_path_factory, base_run, tiny_processor):
    """
    One release per task head, fine-tuned from the pre-trained run as the fine-tuning scripts do: the head's folder
    holds its weights and image processor only (config and auto_map inherited from the pre-trained model), the
    processor and tokenizer come from the pre-training folder. `{class_name: (model, release_folder)}`.
    """
    run_dir, _ = base_run
    releases = {}
    for seed, class_name in enumerate(HEADS, start=2):
        head_class = getattr(modeling_sista, class_name, None)
        if head_class is None:
            continue
        model = head_class.from_pretrained(run_dir, num_labels=3, id2label={0: "effusion", 1: "nodule", 2: "other"})
        model = perturbed(model, seed=seed)
        saved = tmp_path_factory.mktemp(class_name)
        model.save_pretrained(saved)
        tiny_processor.image_processor.save_pretrained(saved)
        release = prepare_release_folder(
            saved, saved.parent / f"{class_name}-release", results=[], processor_dir=run_dir
        )
        releases[class_name] = (model, release)
    return releases


@pytest.fixture(scope="module")
def loaded_in_clean_interpreter(tmp_path_factory, base_release, head_releases):
    """Every release loaded by one clean interpreter: `{folder_name: (summary, outputs)}`."""
    folders = [base_release] + [release for _, release in head_releases.values()]
    output_dir = tmp_path_factory.mktemp("outputs")
    output_files = [output_dir / f"{folder.name}.safetensors" for folder in folders]
    summaries = check_release_folders(folders, output_files)
    assert len(summaries) == len(folders)
    return {
        folder.name: (summary, load_file(path))
        for folder, summary, path in zip(folders, summaries, output_files, strict=True)
    }


def outputs_on_one_thread(model, **inputs):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the child runs on one thread too: identical sums
    try:
        with torch.no_grad():
            return model(**inputs)
    finally:
        torch.set_num_threads(threads)


def test_release_loads_in_a_clean_interpreter_with_identical_outputs(
    base_release, base_run, tiny_processor, loaded_in_clean_interpreter
):
    _, model = base_run
    summary, remote = loaded_in_clean_interpreter[base_release.name]
    expected_classes = {
        "AutoConfig": "SistaConfig",
        "AutoModel": "SistaModel",
        "AutoModelForZeroShotImageClassification": "SistaModel",
        "AutoProcessor": "SistaProcessor",
        "AutoImageProcessor": "SistaImageProcessor",
        "pipeline.model": "SistaModel",
    }
    for name, class_name in expected_classes.items():
        module, _, loaded_class = summary["classes"][name].rpartition(".")
        assert module.startswith("transformers_modules.") and loaded_class == class_name, summary["classes"][name]
    assert summary["tokenizer"].startswith("BertTokenizer")

    inputs = tiny_processor(text=CHECK_TEXTS, images=check_images(IMAGE_SIZE), return_tensors="pt", padding=True)
    for key, value in inputs.items():
        assert torch.equal(remote[f"processor.{key}"], value), key
    outputs = outputs_on_one_thread(model, **inputs, output_token_patch_weights=True)
    compared = 0
    for auto_class in ("AutoModel", "AutoModelForZeroShotImageClassification"):
        for key, value in outputs.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(remote[f"{auto_class}.{key}"], value), f"{auto_class}.{key}"
                compared += 1
    assert compared >= 14 and outputs.token_patch_weights.abs().sum() > 0
    assert not torch.allclose(outputs.logits_per_image[:, 0], outputs.logits_per_image[:, 1])  # two distinct texts
    # the pipeline: softmax over the labels of image 0's logits
    single = tiny_processor(text=CHECK_TEXTS, images=check_images(IMAGE_SIZE)[:1], return_tensors="pt")
    expected_scores = outputs_on_one_thread(model, **single).logits_per_image[0].softmax(-1)
    torch.testing.assert_close(remote["pipeline.scores"], expected_scores, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("class_name", list(HEADS))
def test_head_release_loads_through_its_auto_class(
    class_name, head_releases, tiny_processor, loaded_in_clean_interpreter
):
    if class_name not in head_releases:
        pytest.skip(f"modeling_sista.{class_name} does not exist yet")
    model, release = head_releases[class_name]
    auto_class = HEADS[class_name]
    card = ModelCard.load(release / "README.md")
    assert card.data.pipeline_tag == model_card.PIPELINE_TAGS[class_name]
    assert f"{auto_class}.from_pretrained" in card.text
    # only the head's own class: the inherited AutoModel -> SistaModel would load it with a random text tower
    assert json.loads((release / "config.json").read_text())["auto_map"] == {
        "AutoConfig": "configuration_sista.SistaConfig",
        auto_class: f"modeling_sista.{class_name}",
    }
    assert {path.name for path in release.iterdir()} == BASE_FILES

    summary, remote = loaded_in_clean_interpreter[release.name]
    assert summary["classes"][auto_class] == f"{summary['classes'][auto_class].rsplit('.', 1)[0]}.{class_name}"
    assert summary["classes"][auto_class].startswith("transformers_modules.")
    inputs = tiny_processor(images=check_images(IMAGE_SIZE), return_tensors="pt")
    outputs = outputs_on_one_thread(model, pixel_values=inputs["pixel_values"])
    compared = [key for key, value in outputs.items() if isinstance(value, torch.Tensor)]
    assert compared
    for key in compared:
        assert torch.equal(remote[f"{auto_class}.{key}"], outputs[key]), key


# ---------------------------------------------------------------------------------------------------------------------
# The model card
# ---------------------------------------------------------------------------------------------------------------------


def test_card_metadata_and_model_index_match_the_results_files(base_release):
    card = ModelCard.load(base_release / "README.md")
    data = card.data
    assert data.license == "apache-2.0" and data.library_name == "transformers"
    assert data.pipeline_tag == "zero-shot-image-classification"
    assert {"sista", "medical", "chest-x-ray"} <= set(data.tags)
    assert data.datasets == ["SynthCXR (generated)"]
    assert metadata_load(base_release / "README.md")["model-index"][0]["name"] == "sista"

    values = {(result.task_type, result.metric_name): result.metric_value for result in data.eval_results}
    expected = {
        ("zero-shot-image-classification", "macro_auroc"): 0.7125,
        ("zero-shot-image-classification", "per_class/pleural_effusion/auroc"): 0.8125,
        ("zero-shot-image-classification", "per_class/nodule/auroc"): 0.6125,
        ("image-text-retrieval", "paired/image_to_report/R@1"): 0.125,
        ("image-text-retrieval", "paired/image_to_report/R@5"): 0.375,
        ("image-text-retrieval", "paired/report_to_image/R@1"): 0.0625,
        ("image-text-retrieval", "paired/report_to_image/R@5"): 0.5,
    }
    assert values == expected  # counts (num_positives), skipped classes and arguments are not metrics
    types = {result.metric_name: result.metric_type for result in data.eval_results}
    assert types["macro_auroc"] == "roc_auc" and types["paired/report_to_image/R@5"] == "recall@5"
    assert all(result.dataset_split == "test" for result in data.eval_results)


def test_card_text_has_the_sections_the_run_supports(base_release):
    text = (base_release / "README.md").read_text()
    for heading in (
        "## Intended use",
        "### Out-of-scope use",
        "## How to use",
        "## Training",
        "## Evaluation",
        "## Limitations and biases",
        "## Citation",
        "### Zero-shot classification",
        "### Image-report retrieval",
    ):
        assert heading in text, heading
    for absent in ("### Word-to-region grounding", "### Classification", "### Segmentation", "### Detection"):
        assert absent not in text, absent  # no results file, no section
    assert "Not for clinical use" in text
    assert 'repo_id, revision = "me/sista", "v0.1"' in text and "trust_remote_code=True" in text
    assert "zero-shot-image-classification" in text  # the pipeline example
    # the exact commands: recorded, or rebuilt from the saved arguments
    assert RETRIEVAL_RESULTS["command"] in text
    assert "python examples/zero_shot.py --model_name_or_path outputs/sista --split test --batch_size 32" in text
    # training arguments from training_args.bin, summary from trainer_state.json
    assert "| `learning_rate` | 0.0003 |" in text and "| `seed` | 17 |" in text
    assert "| global_step | 40 |" in text and "| last loss | 1.25 |" in text
    assert "| `sia_threshold` | 0.9 |" in text
    bibtex = text.split("```bibtex")[1].split("```")[0]
    assert "2601.08165" in bibtex and "Bui" in bibtex
    assert not re.search(r"^\s*title\s*=", bibtex, re.MULTILINE)  # no invented title


def test_card_without_results_reports_none_and_head_cards_keep_their_task(tmp_path, base_run):
    run_dir, _ = base_run
    card = build_model_card(run_dir, results=[])
    assert card.data.eval_results is None and "model-index" not in metadata_load_text(str(card))
    assert "No evaluation results were supplied" in card.text

    (tmp_path / "classification_results.json").write_text(json.dumps(CLASSIFICATION_RESULTS))
    (tmp_path / "zero_shot_results.json").write_text(json.dumps(ZERO_SHOT_RESULTS))
    (tmp_path / "eval_results.json").write_text(json.dumps({"eval_auroc": 0.5}))  # no task: skipped, not guessed
    results, _ = load_results([tmp_path])
    assert sorted(result.task for result in results) == ["classification", "zero-shot"]

    head_dir = tmp_path / "head"
    head_dir.mkdir()
    config = json.loads((run_dir / "config.json").read_text())
    (head_dir / "config.json").write_text(json.dumps({**config, "architectures": ["SistaForImageClassification"]}))
    head_card = build_model_card(head_dir, results=[tmp_path], base_model="me/sista")
    assert head_card.data.pipeline_tag == "image-classification" and head_card.data.base_model == "me/sista"
    values = {(result.task_name, result.metric_name): result.metric_value for result in head_card.data.eval_results}
    assert values == {
        ("Classification (0.1 of the labels)", "auroc"): 0.875,
        ("Classification (0.1 of the labels)", "accuracy"): 0.8,
    }
    assert "AutoModelForImageClassification.from_pretrained" in head_card.text


def metadata_load_text(text: str) -> dict:
    return ModelCard(text).data.to_dict()


def test_results_errors_name_the_file(tmp_path, base_run):
    run_dir, _ = base_run
    (tmp_path / "zero_shot_results.json").write_text("{not json")
    with pytest.raises(ValueError, match="zero_shot_results.json"):
        build_model_card(run_dir, results=[tmp_path / "zero_shot_results.json"])
    with pytest.raises(FileNotFoundError, match="missing.json"):
        build_model_card(run_dir, results=[tmp_path / "missing.json"])


# ---------------------------------------------------------------------------------------------------------------------
# Pushing
# ---------------------------------------------------------------------------------------------------------------------


class FakeHfApi:
    """Records the calls `push_sista_to_hub` makes and what the uploaded folder held."""

    calls: list = []

    def __init__(self, token=None):
        FakeHfApi.calls.append(("init", token))

    def create_repo(self, repo_id, **kwargs):
        FakeHfApi.calls.append(("create_repo", repo_id, kwargs))
        from huggingface_hub import RepoUrl

        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def create_branch(self, repo_id, **kwargs):
        FakeHfApi.calls.append(("create_branch", repo_id, kwargs))

    def upload_folder(self, repo_id, folder_path, **kwargs):
        files = {path.name: path.read_bytes() for path in Path(folder_path).iterdir()}
        FakeHfApi.calls.append(("upload_folder", repo_id, kwargs, files))
        from huggingface_hub import CommitInfo

        return CommitInfo(
            commit_url=f"https://huggingface.co/{repo_id}/commit/{'a' * 40}",
            commit_message=kwargs["commit_message"],
            commit_description="",
            oid="a" * 40,
        )

    def create_tag(self, repo_id, **kwargs):
        FakeHfApi.calls.append(("create_tag", repo_id, kwargs))


def test_push_passes_revision_private_message_and_uploads_the_release_folder(monkeypatch, base_run, base_release):
    import huggingface_hub

    run_dir, _ = base_run
    FakeHfApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    monkeypatch.setattr(push_to_hub, "hub_offline", lambda: False)
    commit = push_sista_to_hub(
        str(run_dir),
        "me/sista",
        revision="v0.1",
        private=True,
        commit_message="SISTA tiny",
        token="hf_fake",
        tag="v0.1.0",
        check=False,
    )
    assert commit.oid == "a" * 40
    names = [call[0] for call in FakeHfApi.calls]
    assert names == ["init", "create_repo", "create_branch", "upload_folder", "create_tag"]
    assert FakeHfApi.calls[0] == ("init", "hf_fake")
    assert FakeHfApi.calls[1] == ("create_repo", "me/sista", {"private": True, "exist_ok": True})
    assert FakeHfApi.calls[2] == ("create_branch", "me/sista", {"branch": "v0.1", "exist_ok": True})
    _, repo_id, upload_kwargs, files = FakeHfApi.calls[3]
    assert upload_kwargs["revision"] == "v0.1" and upload_kwargs["commit_message"] == "SISTA tiny"
    assert set(files) == BASE_FILES
    for name in BASE_FILES - {"README.md"}:  # the card differs only by the pinned tag
        assert files[name] == (base_release / name).read_bytes(), name
    assert b'"me/sista", "v0.1.0"' in files["README.md"]
    assert FakeHfApi.calls[4] == ("create_tag", "me/sista", {"tag": "v0.1.0", "revision": "a" * 40})


def test_push_without_token_fails_before_any_network_call(monkeypatch, tmp_path, base_run):
    import huggingface_hub

    def no_api(*args, **kwargs):
        raise AssertionError("HfApi must not be created without a token")

    monkeypatch.setattr(huggingface_hub, "HfApi", no_api)
    monkeypatch.setattr(push_to_hub, "hub_offline", lambda: False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "hf_home" / "token"))
    monkeypatch.setattr(
        huggingface_hub.constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "hf_home" / "stored_tokens")
    )
    with pytest.raises(ReleaseError, match="No Hugging Face token"):
        push_sista_to_hub(str(base_run[0]), "me/sista")


def test_push_cli_offline_fails_with_one_line(tmp_path, base_run):
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "PYTHONPATH")
    }
    env |= {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")}
    completed = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "examples" / "push_to_hub.py"),
            "--model_dir",
            str(base_run[0]),
            "--repo_id",
            "me/sista",
            "--private",
            "true",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode != 0
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in completed.stderr, completed.stderr
    assert lines[0].startswith("push_to_hub.py: error: HF_HUB_OFFLINE")


# ---------------------------------------------------------------------------------------------------------------------
# --push_to_hub on the training scripts
# ---------------------------------------------------------------------------------------------------------------------


def test_training_flag_hands_the_push_to_the_release_path(monkeypatch, tmp_path, base_run, base_release):
    import huggingface_hub
    from transformers import TrainingArguments

    from sista_examples.hub.release import hub_push_request, push_after_training

    run_dir, _ = base_run
    FakeHfApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    monkeypatch.setattr(push_to_hub, "hub_offline", lambda: False)
    arguments = TrainingArguments(
        output_dir=str(tmp_path / "sista-run"),
        push_to_hub=True,
        hub_model_id="me/sista",
        hub_revision="dev",
        hub_private_repo=True,
        hub_token="hf_fake",
        report_to="none",
    )
    request = hub_push_request(arguments)
    # the Trainer's own upload (generic card, no load check) is off; ours runs after training
    assert arguments.push_to_hub is False
    assert request == {"repo_id": "me/sista", "revision": "dev", "private": True, "token": "hf_fake"}
    assert push_after_training(None, run_dir) is None and FakeHfApi.calls == []
    commit = push_after_training(request, run_dir)
    assert commit.oid == "a" * 40
    assert [call[0] for call in FakeHfApi.calls] == ["init", "create_repo", "create_branch", "upload_folder"]
    _, repo_id, upload_kwargs, files = FakeHfApi.calls[3]
    assert repo_id == "me/sista" and upload_kwargs["revision"] == "dev" and set(files) == BASE_FILES
    for name in BASE_FILES - {"README.md"}:
        assert files[name] == (base_release / name).read_bytes(), name


@pytest.mark.parametrize(
    "script", ["pretrain", "finetune_classification", "finetune_segmentation", "finetune_detection"]
)
def test_training_scripts_with_push_to_hub_offline_stop_before_training(monkeypatch, tmp_path, base_run, script):
    module = load_script(f"examples/{script}.py")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    output_dir = tmp_path / "run"
    encoder = [] if script == "pretrain" else ["--model_name_or_path", str(base_run[0])]
    with pytest.raises(SystemExit, match=r"^--push_to_hub: HF_HUB_OFFLINE is set"):
        module.main([*encoder, "--output_dir", str(output_dir), "--push_to_hub", "true", "--report_to", "none"])
    assert not any(output_dir.glob("*.safetensors"))


def test_a_head_pushed_from_scratch_is_refused_before_training(tmp_path):
    finetune_classification = load_script("examples/finetune_classification.py")

    with pytest.raises(ValueError, match=r"--push_to_hub.*--model_name_or_path.*processor_config.json.*--from_scratch"):
        finetune_classification.main(
            ["--from_scratch", "true", "--output_dir", str(tmp_path / "run"), "--push_to_hub", "true"]
        )


def test_a_head_is_pushed_with_the_processor_of_its_pre_training_folder(monkeypatch, tmp_path, base_run):
    import huggingface_hub

    from modeling_sista import SistaForImageClassification
    from sista_examples.hub.release import push_after_training

    run_dir, _ = base_run
    head_dir = tmp_path / "head"
    # what finetune_classification.py leaves: the head, its image processor and its results
    SistaForImageClassification.from_pretrained(run_dir, num_labels=2).save_pretrained(head_dir)
    SistaProcessor.from_pretrained(run_dir).image_processor.save_pretrained(head_dir)
    (head_dir / "classification_results.json").write_text(json.dumps(CLASSIFICATION_RESULTS))
    FakeHfApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    monkeypatch.setattr(push_to_hub, "hub_offline", lambda: False)
    request = {"repo_id": "me/sista-cls", "revision": None, "private": None, "token": "hf_fake"}
    push_after_training(request, head_dir, processor_dir=run_dir)
    _, repo_id, _, files = FakeHfApi.calls[2]
    assert repo_id == "me/sista-cls"
    assert {"processor_config.json", "tokenizer.json", "model.safetensors"} <= set(files)
    assert b"AutoModelForImageClassification" in files["config.json"]
    assert b"Classification" in files["README.md"]


def test_card_licence_limitations_and_dataset_names_follow_the_training_data(tmp_path, base_run, monkeypatch):
    import shutil

    monkeypatch.chdir(tmp_path)
    prepared = tmp_path / "data" / "mimic_cxr"
    prepared.mkdir(parents=True)
    (prepared / "sista_dataset.json").write_text(json.dumps({"dataset": "mimic_cxr"}))
    mimic_run = tmp_path / "mimic_run"
    shutil.copytree(base_run[0], mimic_run)
    (mimic_run / "run_arguments.json").write_text(json.dumps({"data": {"dataset_path": "data/mimic_cxr"}}))
    results = tmp_path / "retrieval_results.json"
    results.write_text(json.dumps({"task": "retrieval", "dataset": "data/mimic_cxr", "split": "test", "R@1": 0.5}))

    card = build_model_card(mimic_run, results=[results])
    data = card.data.to_dict()
    assert data["license"] == "other" and data["license_name"] == "physionet-credentialed-health-data-license-1.5.0"
    assert data["datasets"] == ["mimic_cxr"]  # the prepared name, not the folder
    assert "These weights derive from MIMIC-CXR**, credentialed data" in card.text
    assert "Training data**: mimic_cxr" in card.text
    assert "Real data." in card.text and "Synthetic data." not in card.text

    renamed = build_model_card(mimic_run, results=[results], datasets=["data/mimic_cxr=physionet/mimic-cxr-jpg"])
    assert renamed.data.to_dict()["datasets"] == ["physionet/mimic-cxr-jpg"]
    assert renamed.data.to_dict()["model-index"][0]["results"][0]["dataset"]["type"] == "physionet/mimic-cxr-jpg"
    assert build_model_card(mimic_run, results=[results], license="apache-2.0").data.license == "apache-2.0"
    with pytest.raises(ValueError, match="not a local path"):
        build_model_card(mimic_run, results=[results], datasets=[str(prepared)])

    synthetic = tmp_path / "synthetic_run"
    shutil.copytree(base_run[0], synthetic)
    (synthetic / "run_arguments.json").write_text(json.dumps({"data": {"dataset_path": "data/synthcxr"}}))
    card = build_model_card(synthetic, results=[])
    assert card.data.license == "apache-2.0" and "Synthetic data." in card.text and "derive from" not in card.text


def test_model_card_metrics_leave_out_the_references_of_the_grounding_results():
    from sista_examples.hub.model_card import flatten_metrics

    grounding = {
        "overall": {"accuracy": 0.1, "cnr": 0.9, "random_point_baseline": 0.025, "oracle": 0.59,
                    "text_prior_baseline": 0.46, "shuffled_image_accuracy": 0.04, "text_prior_cnr": 3.2,
                    "shuffled_image_cnr": 0.7, "text_prior_levels": {"finding+side+zone": 200, "finding": 3}},
        "per_group": {"small_or_ambiguous": {"accuracy": 0.05, "oracle": 0.4}},
        "retrieval": {"R@1": 0.2, "chance": 0.01},
    }  # fmt: skip
    assert flatten_metrics(grounding) == {
        "overall/accuracy": 0.1, "overall/cnr": 0.9, "per_group/small_or_ambiguous/accuracy": 0.05, "retrieval/R@1": 0.2
    }

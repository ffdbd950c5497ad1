# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""
Releases a SISTA checkpoint (the pre-trained model or a fine-tuned task head) on the Hugging Face Hub.

Its command line is `examples/push_to_hub.py`. Three steps, each usable alone:

1. `prepare_release_folder` builds, offline, exactly the folder that is uploaded: `config.json` (with `auto_map`),
   the safetensors weights, the processor and tokenizer files, the three code files (`configuration_sista.py`,
   `modeling_sista.py`, `processing_sista.py`, the last taken from the project when only the model was saved) and
   `README.md`, the model card filled from the run's results files (`sista_examples.hub.model_card`).
2. `check_release_folder` loads that folder in a clean interpreter (`python -I`, the project's modules blocked)
   through the Auto classes with `trust_remote_code=True`, as a Hub user would.
3. `push_sista_to_hub` creates the repository (`create_repo(exist_ok=True)`), the branch if `--revision` names a
   new one, and uploads the folder in one commit (`HfApi.upload_folder`); `--tag` then tags that commit, and the
   card's usage code pins that tag.

The training scripts take the Trainer's `--push_to_hub` (with `--hub_model_id`, `--hub_revision`,
`--hub_private_repo`, `--hub_token`): [`hub_push_request`] checks the token before training and turns off the
Trainer's own upload, and [`push_after_training`] releases the output folder through these three steps.

`--dry_run` (or `--output_dir` without `--repo_id`) stops after step 2. Pushing needs the network and a token
(`hf auth login`, `HF_TOKEN` or `--token`); both are checked before any work, and a failure prints one line.
"""

import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..checkpoints import read_sista_config as read_checkpoint_config
from .model_card import PIPELINE_TAGS, build_model_card


logger = logging.getLogger(__name__)

CODE_FILES = ("configuration_sista.py", "modeling_sista.py", "processing_sista.py")
WEIGHT_PATTERNS = ("model.safetensors", "model-*-of-*.safetensors", "model.safetensors.index.json")
PROCESSOR_FILES = (
    "processor_config.json",
    "preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "chat_template.jinja",
)
# The auto classes each architecture must be reachable from.
AUTO_CLASSES = {
    "SistaModel": ("AutoModel", "AutoModelForZeroShotImageClassification"),
    "SistaForImageClassification": ("AutoModelForImageClassification",),
    "SistaForSemanticSegmentation": ("AutoModelForSemanticSegmentation",),
    "SistaForObjectDetection": ("AutoModelForObjectDetection",),
}
# run by file path in an isolated interpreter (`python -I`), so that only the release folder's code can load
RELEASE_CHECK_SCRIPT = Path(__file__).resolve().parent / "load_check.py"


class ReleaseError(Exception):
    """A release cannot be built or pushed; the message says why and what to do."""


# ---------------------------------------------------------------------------------------------------------------------
# 1. The release folder
# ---------------------------------------------------------------------------------------------------------------------


def project_code_file(name: str) -> Path | None:
    """The installed copy of one of the three library modules (`configuration_sista.py`, ...)."""
    spec = importlib.util.find_spec(Path(name).stem)
    return Path(spec.origin) if spec is not None and spec.origin else None


def read_sista_config(model_dir: Path) -> dict:
    """The checkpoint's `config.json` under the project's one checkpoint rule, as a `ReleaseError`."""
    try:
        return read_checkpoint_config(model_dir, argument="--model_dir")
    except ValueError as error:
        raise ReleaseError(str(error)) from None


def complete_auto_map(config: dict) -> tuple[dict, list[str]]:
    """
    `auto_map` with exactly the model entries of the checkpoint's architecture (and `AutoConfig`); returns it and
    the keys that changed.
    """
    architecture = (config.get("architectures") or ["SistaModel"])[0]
    if architecture not in AUTO_CLASSES:
        raise ReleaseError(f"Unknown SISTA architecture {architecture!r}; expected one of {sorted(AUTO_CLASSES)}.")
    # a head fine-tuned from the pre-trained model inherits its AutoModel entries, which would load this checkpoint
    # into SistaModel with a random text tower: only the checkpoint's own class stays
    auto_map = {
        key: value
        for key, value in (config.get("auto_map") or {}).items()
        if not key.startswith("AutoModel") or str(value).endswith(f".{architecture}")
    }
    required = {"AutoConfig": "configuration_sista.SistaConfig"}
    required |= {auto_class: f"modeling_sista.{architecture}" for auto_class in AUTO_CLASSES[architecture]}
    changed = [key for key in required if auto_map.get(key) != required[key]]
    changed += [key for key in config.get("auto_map") or {} if key not in auto_map]
    auto_map |= required
    return auto_map, changed


def check_auto_map_targets(folder: Path, auto_map: dict) -> None:
    """Every `module.Class` of `auto_map` must be a file of the folder that defines that class."""
    for auto_class, target in auto_map.items():
        targets = target if isinstance(target, list | tuple) else [target]
        for reference in filter(None, targets):
            module, _, class_name = reference.rpartition(".")
            module_file = folder / f"{module.split('--')[-1]}.py"
            if not module_file.is_file():
                raise ReleaseError(f"auto_map[{auto_class!r}] points to {module_file.name}, which the release lacks.")
            if f"class {class_name}(" not in module_file.read_text():
                raise ReleaseError(
                    f"auto_map[{auto_class!r}] = {reference!r}, but {module_file.name} defines no class {class_name}: "
                    "re-save the model with the code it was trained with."
                )


def image_processor_settings(settings: dict) -> dict:
    return {key: value for key, value in settings.items() if key not in ("auto_map", "processor_class")}


def check_image_processor_matches(model_dir: Path, processor_dir: Path) -> None:
    """
    A model folder that saved its own image processor (the fine-tuning scripts do) and a processor taken from
    another folder must agree: the release ships one image processor, and it must be the one the model was trained
    with.
    """
    if model_dir.resolve() == processor_dir.resolve() or not (model_dir / "preprocessor_config.json").is_file():
        return
    own = image_processor_settings(json.loads((model_dir / "preprocessor_config.json").read_text()))
    processor_config = json.loads((processor_dir / "processor_config.json").read_text())
    taken = image_processor_settings(processor_config.get("image_processor") or {})
    if not taken and (processor_dir / "preprocessor_config.json").is_file():
        taken = image_processor_settings(json.loads((processor_dir / "preprocessor_config.json").read_text()))
    differences = sorted(key for key in own.keys() | taken.keys() if own.get(key) != taken.get(key))
    if differences:
        raise ReleaseError(
            f"The image processor saved with the model ({model_dir / 'preprocessor_config.json'}) differs from the "
            f"one in --processor_dir {str(processor_dir)!r} in {differences}: save the processor the model was "
            "trained with beside it, or pass the folder that holds it."
        )


def prepare_release_folder(
    model_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    results: Sequence[str | os.PathLike] | None = None,
    processor_dir: str | os.PathLike | None = None,
    run_dir: str | os.PathLike | None = None,
    repo_id: str | None = None,
    revision: str | None = None,
    base_model: str | None = None,
    license: str | None = None,
    overwrite: bool = False,
    datasets: Sequence[str] | None = None,
) -> Path:
    r"""
    Builds exactly the folder that [`push_sista_to_hub`] uploads; nothing touches the network.

    Args:
        model_dir: the `save_pretrained` folder of a [`SistaModel`] or a SISTA task head (safetensors weights).
        output_dir: the folder to build; must be absent or empty unless `overwrite=True` (which deletes it first).
        results: results JSON files or folders for the card (see `sista_examples.hub.model_card`); `None` reads the results
            files in `model_dir` and `run_dir`.
        processor_dir: where the processor and tokenizer were saved, when not in `model_dir` (a fine-tuned head
            saved alone takes them from its pre-training folder).
        run_dir: where the Trainer wrote `training_args.bin` / `trainer_state.json` (defaults to `model_dir`).
        repo_id, revision: written into the card's usage code; `revision` should be a tag or commit to pin.
        base_model: the Hub id this model was trained from (for a head, the pre-trained SISTA release).
        license: the card's licence identifier (`None`: apache-2.0, or the terms of restricted training data).
        datasets: the card's dataset names, `NAME` or `LOCAL=NAME` (see `sista_examples.hub.model_card`).

    Returns:
        `Path` of the built folder.
    """
    model_dir, output_dir = Path(model_dir), Path(output_dir)
    processor_dir = Path(processor_dir) if processor_dir is not None else model_dir
    run_dir = Path(run_dir) if run_dir is not None else model_dir
    config = read_sista_config(model_dir)

    weights = sorted({path for pattern in WEIGHT_PATTERNS for path in model_dir.glob(pattern)})
    if not any(path.suffix == ".safetensors" for path in weights):
        found = sorted(path.name for path in model_dir.glob("*.bin") if path.name != "training_args.bin")
        raise ReleaseError(
            f"{str(model_dir)!r} holds no safetensors weights{f' (only {found})' if found else ''}: save the model "
            "with `save_pretrained` (safetensors) before releasing it."
        )
    processor_files = [processor_dir / name for name in PROCESSOR_FILES if (processor_dir / name).is_file()]
    if not any(path.name == "processor_config.json" for path in processor_files):
        raise ReleaseError(
            f"No processor_config.json in {str(processor_dir)!r}: save the SistaProcessor beside the model "
            "(`processor.save_pretrained`) or pass --processor_dir (e.g. the pre-training output folder)."
        )

    check_image_processor_matches(model_dir, processor_dir)

    if output_dir.exists() and any(output_dir.iterdir()):
        if not overwrite:
            raise ReleaseError(f"Release folder {str(output_dir)!r} is not empty; pass overwrite=True / --overwrite.")
        shutil.rmtree(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    for path in weights + processor_files:
        shutil.copy2(path, output_dir / path.name)
    for name in CODE_FILES:
        # the code saved with the weights matches them; the project's copy fills what the run did not save
        source = next(
            (folder / name for folder in (model_dir, processor_dir) if (folder / name).is_file()),
            project_code_file(name),
        )
        if source is None:
            raise ReleaseError(
                f"{name} is neither in {str(model_dir)!r} nor in the project: cannot build the release."
            )
        logger.info("%s from %s", name, source.parent)
        shutil.copy2(source, output_dir / name)

    auto_map, changed = complete_auto_map(config)
    if changed:
        logger.info("auto_map of config.json: %s set to the checkpoint's own classes.", ", ".join(sorted(changed)))
    config["auto_map"] = auto_map
    (output_dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    check_auto_map_targets(output_dir, auto_map)
    processor_config = json.loads((output_dir / "processor_config.json").read_text())
    check_auto_map_targets(output_dir, processor_config.get("auto_map") or {})
    if "AutoProcessor" not in (processor_config.get("auto_map") or {}):
        raise ReleaseError("processor_config.json has no auto_map['AutoProcessor']: re-save the SistaProcessor.")

    card = build_model_card(
        output_dir,
        results=list(results) if results is not None else sorted({model_dir, run_dir}),
        repo_id=repo_id,
        revision=revision,
        run_dir=run_dir,
        base_model=base_model,
        license=license,
        datasets=datasets,
    )
    card.save(output_dir / "README.md")
    logger.info("Release folder %s: %s", output_dir, ", ".join(sorted(path.name for path in output_dir.iterdir())))
    return output_dir


# ---------------------------------------------------------------------------------------------------------------------
# 2. Loading it as a Hub user would
# ---------------------------------------------------------------------------------------------------------------------


def check_release_folders(
    folders: Sequence[str | os.PathLike],
    outputs: Sequence[str | os.PathLike] | None = None,
    python: str | None = None,
    timeout: float = 600,
) -> list[dict[str, Any]]:
    r"""
    Loads each folder in a clean interpreter (one for all) through AutoConfig, AutoProcessor, AutoImageProcessor,
    AutoTokenizer and every `AutoModel*` class of its `auto_map` (plus the zero-shot pipeline for the pre-trained
    model), with `trust_remote_code=True` and the project's modules blocked (`sista_examples/hub/load_check.py`).

    Args:
        folders: release folders.
        outputs: one safetensors file per folder, where the child writes the processor's and the models' outputs on
            fixed inputs.
        python: the interpreter (defaults to this one); another venv's checks another transformers version.

    Returns:
        One summary per folder: transformers version and the class of every object loaded.
    """
    with tempfile.TemporaryDirectory(prefix="sista-release-check-") as scratch:
        env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}
        # the folders are local: no network; a fresh modules cache so that no earlier copy of the code is reused
        env |= {
            "HF_HUB_OFFLINE": "1",
            "HF_MODULES_CACHE": str(Path(scratch) / "modules"),
            "TOKENIZERS_PARALLELISM": "false",
        }
        command = [python or sys.executable, "-I", str(RELEASE_CHECK_SCRIPT)]
        command += [str(Path(folder).resolve()) for folder in folders]
        if outputs is not None:
            command += ["--outputs", *(str(Path(path).resolve()) for path in outputs)]
        completed = subprocess.run(command, cwd=scratch, env=env, capture_output=True, text=True, timeout=timeout)
    if completed.returncode != 0:
        last_lines = [line for line in completed.stderr.strip().splitlines() if line.strip()][-3:]
        raise ReleaseError(f"The release folder does not load through the Auto classes: {' | '.join(last_lines)}")
    return [json.loads(line) for line in completed.stdout.strip().splitlines() if line.startswith("{")]


def check_release_folder(
    folder: str | os.PathLike, outputs: str | os.PathLike | None = None, python: str | None = None
) -> dict[str, Any]:
    """[`check_release_folders`] for one folder; returns its summary."""
    return check_release_folders([folder], None if outputs is None else [outputs], python)[0]


# ---------------------------------------------------------------------------------------------------------------------
# 3. Pushing
# ---------------------------------------------------------------------------------------------------------------------


def hub_offline() -> bool:
    from huggingface_hub import constants

    return constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def resolve_token(token: str | None) -> str:
    """The token to push with; raises a [`ReleaseError`] saying how to get one, before any network call."""
    if hub_offline():
        raise ReleaseError(
            "HF_HUB_OFFLINE is set, and pushing needs the network: unset it, or build the folder only with --dry_run."
        )
    from huggingface_hub import get_token

    token = token or get_token()
    if not token:
        raise ReleaseError("No Hugging Face token: run `hf auth login`, set HF_TOKEN, or pass --token.")
    return token


def push_sista_to_hub(
    folder_or_model,
    repo_id: str,
    revision: str | None = None,
    private: bool | None = None,
    commit_message: str | None = None,
    token: str | None = None,
    card_results: Sequence[str | os.PathLike] | None = None,
    processor=None,
    processor_dir: str | os.PathLike | None = None,
    run_dir: str | os.PathLike | None = None,
    base_model: str | None = None,
    tag: str | None = None,
    license: str | None = None,
    check: bool = True,
    datasets: Sequence[str] | None = None,
):
    r"""
    Uploads a SISTA model (pre-trained or a task head) with its processor, code and model card in one commit.

    Args:
        folder_or_model: a `save_pretrained` folder, or a model object (saved to a temporary folder with
            `processor`, when given).
        repo_id: `"owner/name"`; created if absent (`exist_ok=True`).
        revision: branch to commit to (created from the default branch if absent); `None` is the default branch.
        private: visibility of a repository this call creates (`None`: the account's default). An existing
            repository keeps its visibility.
        commit_message: defaults to "Upload {architecture}".
        token: defaults to the logged-in token (`hf auth login` or `HF_TOKEN`).
        card_results: results JSON files or folders for the card (see [`prepare_release_folder`]).
        processor: a `SistaProcessor` to save with a model object.
        processor_dir, run_dir, base_model, license, datasets: see [`prepare_release_folder`].
        tag: tag created on the new commit; the card's usage code pins it (else `revision`, else "main").
        check: load the folder in a clean interpreter before uploading ([`check_release_folder`]).

    Returns:
        `huggingface_hub.CommitInfo` of the upload (its `oid` is the commit to pin, `commit_url` the page).
    """
    token = resolve_token(token)
    from huggingface_hub import HfApi

    with tempfile.TemporaryDirectory(prefix="sista-release-") as scratch:
        if isinstance(folder_or_model, str | os.PathLike):
            model_dir = Path(folder_or_model)
        else:
            model_dir = Path(scratch) / "saved"
            folder_or_model.save_pretrained(model_dir)
            if processor is not None:
                processor.save_pretrained(model_dir)
        staging = prepare_release_folder(
            model_dir,
            Path(scratch) / "release",
            results=card_results,
            processor_dir=processor_dir,
            run_dir=run_dir,
            repo_id=repo_id,
            revision=tag or revision,
            base_model=base_model,
            license=license,
            datasets=datasets,
        )
        if check:
            summary = check_release_folder(staging)
            logger.info("Release folder loads through the Auto classes (transformers %s).", summary["transformers"])
        architecture = json.loads((staging / "config.json").read_text())["architectures"][0]

        api = HfApi(token=token)
        repo_url = api.create_repo(repo_id, private=private, exist_ok=True)
        if revision is not None:
            api.create_branch(repo_url.repo_id, branch=revision, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_url.repo_id,
            folder_path=staging,
            revision=revision,
            commit_message=commit_message or f"Upload {architecture} ({PIPELINE_TAGS[architecture]})",
            delete_patterns=["*.safetensors", "*.safetensors.index.json"],  # no stale shards beside the new ones
        )
    if tag is not None:
        api.create_tag(repo_url.repo_id, tag=tag, revision=commit.oid)
    logger.info(
        "Pushed %s to %s (commit %s%s).", architecture, commit.commit_url, commit.oid, f", tag {tag}" if tag else ""
    )
    return commit


def hub_push_request(training_args) -> dict | None:
    """
    What a training script run with `--push_to_hub` pushes when it ends, checked before training starts.

    The Trainer's own upload would send the output folder with a generic card and without the clean-interpreter load
    check; this turns it off (`training_args.push_to_hub = False`) and returns the arguments of
    [`push_sista_to_hub`] instead: `hub_model_id` (default: the output folder's name under the token's account),
    `hub_revision`, `hub_private_repo` and the token. `None` without `--push_to_hub`. A missing token or
    `HF_HUB_OFFLINE` ends the script here with one line, before any training.
    """
    if not training_args.push_to_hub:
        return None
    try:
        token = resolve_token(training_args.hub_token)
    except ReleaseError as error:
        raise SystemExit(f"--push_to_hub: {error}") from None
    training_args.push_to_hub = False
    return {
        "repo_id": training_args.hub_model_id or Path(training_args.output_dir).resolve().name,
        "revision": training_args.hub_revision,
        "private": training_args.hub_private_repo,
        "token": token,
    }


def push_after_training(request: dict | None, output_dir, processor_dir=None):
    """
    Releases a training script's `output_dir` as [`hub_push_request`] asked (nothing when `request` is None), with
    the folder's results files in the card. `processor_dir` is where the processor files live when the folder lacks
    them (a head's pre-training folder). Call it on the main process only.
    """
    if request is None:
        return None
    try:
        return push_sista_to_hub(output_dir, **request, card_results=[output_dir], processor_dir=processor_dir)
    except ReleaseError as error:
        raise SystemExit(f"--push_to_hub: {error}") from None


__all__ = [
    "ReleaseError",
    "check_release_folder",
    "check_release_folders",
    "hub_push_request",
    "push_after_training",
    "prepare_release_folder",
    "push_sista_to_hub",
]

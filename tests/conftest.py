"""Shared tiny configurations for the tests: hidden size 32, 2 layers, 32-pixel images, patch 8."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertTokenizer, ViTConfig

from configuration_sista import SistaConfig


# Keep tests offline and quiet whatever the machine's environment says.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(
    set(
        "a an the of and or no with without is are there seen small large moderate left right bilateral upper middle "
        "lower zone lobe lung lungs apical basal base effusion pleural pneumothorax consolidation opacity nodule mass "
        "cardiomegaly heart size normal clear atelectasis findings impression acute cardiopulmonary process stable "
        "photo chest x ray mild new . , : -".split()
    )
)
SPECIAL_TOKEN_IDS = [0, 1, 2, 3, 4]


REPOSITORY = Path(__file__).resolve().parents[1]


def run_two_processes(tmp_path: Path, case: dict, timeout: int = 600) -> dict:
    """Runs `tests/distributed_worker.py` on 2 gloo processes for `case` and returns what rank 0 wrote."""
    torch.save(case, tmp_path / "case.pt")
    env = {**os.environ, "TMPDIR": str(tmp_path), "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(REPOSITORY / "tests" / "distributed_worker.py"), str(tmp_path),
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPOSITORY, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return torch.load(tmp_path / "distributed.pt")


def load_script(relative_path: str):
    """
    A runnable script (`examples/pretrain.py`, `research/reproduce.py`, ...) loaded from its path as a module, for
    its `main` and its own functions; scripts are not importable by name.
    """
    path = REPOSITORY / relative_path
    name = f"script_{path.parent.name}_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the script runs
    spec.loader.exec_module(module)
    return module


def tiny_sista_config(**kwargs) -> SistaConfig:
    vision_config = ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8
    )
    text_config = BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        vocab_size=len(TINY_VOCAB),
        max_position_embeddings=64,
    )
    kwargs.setdefault("projection_dim", 16)
    kwargs.setdefault("sta_ignore_token_ids", SPECIAL_TOKEN_IDS)
    return SistaConfig.from_vision_text_configs(vision_config, text_config, **kwargs)


def without_dropout(model):
    """`model` with every dropout probability set to 0 (a training-mode forward that a second run can repeat)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


def tiny_batch(batch_size=4, sequence_length=10, report_dim=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(len(SPECIAL_TOKEN_IDS), len(TINY_VOCAB), (batch_size, sequence_length), generator=generator)
    input_ids[:, 0] = 2  # [CLS]
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, sequence_length - 3 :] = 0  # some padding
    input_ids[0, sequence_length - 3 :] = 0
    input_ids[0, sequence_length - 4] = 3  # [SEP]
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "pixel_values": torch.randn(batch_size, 3, 32, 32, generator=generator),
        "report_embeds": torch.randn(batch_size, report_dim, generator=generator),
    }


def build_tiny_tokenizer() -> BertTokenizer:
    # transformers 5 ignores `vocab_file=` for BERT tokenizers (every word becomes [UNK]); `vocab=` is honoured
    return BertTokenizer(vocab={token: index for index, token in enumerate(TINY_VOCAB)}, do_lower_case=True)


@pytest.fixture
def tiny_tokenizer():
    tokenizer = build_tiny_tokenizer()
    assert tokenizer.unk_token_id not in tokenizer("small left effusion")["input_ids"]
    return tokenizer

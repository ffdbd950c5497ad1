# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""A deterministic WordPiece tokenizer built from the reports, for runs without a downloaded one."""

import logging
import os
import string
from collections import Counter

from tokenizers.normalizers import BertNormalizer
from tokenizers.pre_tokenizers import BertPreTokenizer
from transformers import BertTokenizerFast


logger = logging.getLogger(__name__)

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def train_report_tokenizer(reports, vocab_size: int = 3000, save_directory: str | os.PathLike | None = None):
    r"""
    Builds a lower-cased WordPiece `BertTokenizerFast` from `reports`: BERT's normaliser and pre-tokenizer split the
    words; every character seen and every ASCII letter, digit and punctuation mark, alone and as a `##`
    continuation, is a token; the most frequent words (ties broken alphabetically) fill the vocabulary up to
    `vocab_size` as whole tokens, and the rarer ones fall back to characters.

    Deterministic: the `tokenizers` WordPiece trainer breaks ties between equally frequent merges differently from
    run to run, which would give two runs on the same data different vocabularies and different initial weights.
    """
    normalizer, pre_tokenizer = BertNormalizer(lowercase=True), BertPreTokenizer()
    word_counts = Counter()
    for report in reports:
        words = pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(report))
        word_counts.update(word for word, _ in words)
    # letters, digits and punctuation always, so an unseen word still splits into pieces instead of one [UNK]
    always = string.ascii_lowercase + string.digits + string.punctuation
    characters = sorted({character for word in word_counts for character in word} | set(always))
    vocab = list(SPECIAL_TOKENS) + characters + [f"##{character}" for character in characters]
    known = set(vocab)
    room = max(vocab_size - len(vocab), 0)
    ranked_words = sorted((word for word in word_counts if word not in known), key=lambda w: (-word_counts[w], w))
    vocab += ranked_words[:room]
    if len(ranked_words) > room:
        logger.info(f"Tokenizer: {len(ranked_words) - room} rare words fall back to characters (vocab {vocab_size}).")

    # transformers 5 tokenizers take the vocabulary itself (`vocab=`); a `vocab_file=` argument is ignored
    tokenizer = BertTokenizerFast(vocab={token: index for index, token in enumerate(vocab)}, do_lower_case=True)
    if save_directory is not None:
        tokenizer.save_pretrained(save_directory)
    return tokenizer

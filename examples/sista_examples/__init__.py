# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""
The shared code of SISTA's example scripts, split by concern: `data` (SynthCXR, preparation of real datasets, report
embeddings), `checkpoints` (reading a SISTA checkpoint folder: config, training image size, model and processor),
`utils` (logging), `evaluation` (retrieval, results, prompts, metrics), `training` (pre-training: augmentation,
dataset, collator, Trainer subclasses, GradCache, tokenizer), `finetuning` (the fine-tuning scripts' helpers) and `hub`
(release folder, model card, load check). It imports the three library modules (`configuration_sista`,
`modeling_sista`, `processing_sista`), never the scripts; the allowed directions between its parts are checked by
`tests/test_layering.py`.
"""

# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""
The shared code of SISTA's example scripts, split by concern: `data` (SynthCXR, preparation of real datasets, report
embeddings), `training` (augmentation, dataset, collator, Trainer subclasses, GradCache, tokenizer), `evaluation`
(checkpoint loading, retrieval, results, fine-tuning helpers, metrics) and `hub` (release folder, model card, load
check). It imports the three library modules (`configuration_sista`, `modeling_sista`, `processing_sista`), never the
scripts.
"""

# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""
Zero-shot prompt sets for real chest X-ray label vocabularies: positive and negative sentences per class, worded as
radiologists write findings and impressions. `examples/zero_shot.py` picks a class's prompts by its name.
"""

# The 14 CheXpert-labeler observations (MIMIC-CXR's `class_names`; CheXpert's 5 competition classes are among them).
CHEXPERT_CLASS_PROMPTS = {
    "Atelectasis": {
        "positive": ["bibasilar atelectasis.", "mild left basilar atelectasis.", "right lower lobe atelectasis.",
                     "subsegmental atelectasis."],
        "negative": ["no atelectasis.", "the lungs are well expanded.", "no evidence of atelectasis."],
    },
    "Cardiomegaly": {
        "positive": ["cardiomegaly.", "the heart is enlarged.", "moderate cardiomegaly.",
                     "the cardiac silhouette is enlarged."],
        "negative": ["heart size is normal.", "no cardiomegaly.", "the cardiac silhouette is normal in size."],
    },
    "Consolidation": {
        "positive": ["focal consolidation.", "right lower lobe consolidation.", "left lower lobe consolidation.",
                     "dense airspace consolidation."],
        "negative": ["no focal consolidation.", "the lungs are clear.", "no consolidation."],
    },
    "Edema": {
        "positive": ["mild pulmonary edema.", "moderate pulmonary edema.", "interstitial edema.",
                     "pulmonary vascular congestion and edema."],
        "negative": ["no pulmonary edema.", "no evidence of pulmonary edema.", "no vascular congestion or edema."],
    },
    "Enlarged Cardiomediastinum": {
        "positive": ["the cardiomediastinal silhouette is enlarged.", "widened mediastinum.",
                     "enlarged cardiomediastinal silhouette."],
        "negative": ["the cardiomediastinal silhouette is normal.", "normal mediastinal contours.",
                     "the mediastinum is not widened."],
    },
    "Fracture": {
        "positive": ["acute rib fracture.", "healing left rib fracture.", "displaced fracture.",
                     "compression fracture of a thoracic vertebral body."],
        "negative": ["no acute fracture.", "no displaced fracture.", "the osseous structures are intact."],
    },
    "Lung Lesion": {
        "positive": ["pulmonary nodule.", "lung mass.", "right upper lobe nodule.",
                     "spiculated mass in the left lung."],
        "negative": ["no pulmonary nodule or mass.", "no lung lesion.", "no suspicious pulmonary nodule."],
    },
    "Lung Opacity": {
        "positive": ["patchy opacity.", "bibasilar opacities.", "left lower lobe opacity.",
                     "hazy opacity in the right lung."],
        "negative": ["the lungs are clear.", "no focal opacity.", "no airspace opacity."],
    },
    "No Finding": {
        "positive": ["no acute cardiopulmonary process.", "normal chest radiograph.",
                     "the lungs are clear and the heart size is normal.", "no acute intrathoracic abnormality."],
        "negative": ["acute cardiopulmonary process.", "abnormal chest radiograph.",
                     "findings of acute cardiopulmonary disease."],
    },
    "Pleural Effusion": {
        "positive": ["pleural effusion.", "small left pleural effusion.", "moderate right pleural effusion.",
                     "bilateral pleural effusions."],
        "negative": ["no pleural effusion.", "no effusion.", "the costophrenic angles are sharp."],
    },
    "Pleural Other": {
        "positive": ["pleural thickening.", "apical pleural thickening.", "calcified pleural plaques.",
                     "pleural scarring at the costophrenic angle."],
        "negative": ["no pleural thickening.", "no pleural abnormality.", "the pleural surfaces are smooth."],
    },
    "Pneumonia": {
        "positive": ["pneumonia.", "right lower lobe pneumonia.", "consolidation concerning for pneumonia.",
                     "opacity consistent with pneumonia."],
        "negative": ["no pneumonia.", "no evidence of pneumonia.", "no focal consolidation to suggest pneumonia."],
    },
    "Pneumothorax": {
        "positive": ["small right apical pneumothorax.", "left pneumothorax.", "large pneumothorax.",
                     "tension pneumothorax."],
        "negative": ["no pneumothorax.", "there is no pneumothorax.", "no evidence of pneumothorax."],
    },
    "Support Devices": {
        "positive": ["endotracheal tube in standard position.", "right internal jugular central venous catheter.",
                     "nasogastric tube in the stomach.", "left chest wall pacemaker with leads in place."],
        "negative": ["no support devices.", "no lines or tubes.", "no tubes or catheters are seen."],
    },
}  # fmt: skip


# RSNA Pneumonia's one class (`Lung Opacity`, Target 1) scored as pneumonia against normal, the binary zero-shot task
# MedCLIP and MGCA report on RSNA: the positive prompts describe pneumonia, the negative ones a normal radiograph.
RSNA_PNEUMONIA_PROMPTS = {
    "Lung Opacity": {
        "positive": ["pneumonia.", "right lower lobe pneumonia.", "airspace opacity consistent with pneumonia.",
                     "multifocal pneumonia.", "patchy consolidation concerning for pneumonia."],
        "negative": ["no acute cardiopulmonary process.", "the lungs are clear.", "normal chest radiograph.",
                     "no focal consolidation to suggest pneumonia."],
    },
}  # fmt: skip

# Prompt sets that belong to one prepared dataset (its `sista_dataset.json` "dataset"), chosen before the sets by
# class name.
DATASET_CLASS_PROMPTS = {"rsna_pneumonia": RSNA_PNEUMONIA_PROMPTS}


def find_class_prompts(class_name: str, prompt_sets: dict[str, dict]) -> dict | None:
    """The prompts of `class_name` in `prompt_sets`, matched without regard to case, `_` or spaces; else `None`."""

    def key(name: str) -> str:
        return " ".join(name.replace("_", " ").lower().split())

    by_key = {key(name): prompts for name, prompts in prompt_sets.items()}
    return by_key.get(key(class_name))


__all__ = ["CHEXPERT_CLASS_PROMPTS", "DATASET_CLASS_PROMPTS", "RSNA_PNEUMONIA_PROMPTS", "find_class_prompts"]

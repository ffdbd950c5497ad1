# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""Rule-based chest X-ray report labeler and label-vector report embeddings for SIA.

The labeler follows the CheXpert labeler and NegBio: it finds mentions of the 14 CheXpert observations
in a report and classifies each mention as positive, negated or uncertain, here with spaCy (an entity
ruler for the mentions, the sentencizer) and negspacy's NegEx for negation and uncertainty within a
sentence, with radiology-specific rules. Output per report and observation, as in MIMIC-CXR's CheXpert CSV:

* ``1`` positive, ``0`` negated, ``-1`` uncertain, ``nan`` not mentioned; a mention that is
  positive anywhere in the report wins over an uncertain one, which wins over a negated one.
  Hypothetical ("if", "to evaluate for") and historical ("history of") mentions do not count.
* ``No Finding`` is ``1`` when no observation other than Support Devices is positive or uncertain
  and no other significant abnormality (emphysema, COPD, fibrosis, hiatal hernia) is mentioned,
  ``nan`` otherwise. Incidental findings (calcified granulomas, degenerative spine changes,
  scarring, tortuous aorta, low lung volumes) are not observations and leave a report normal.

A label vector becomes a report embedding (`label_embeddings`): one dimension per observation
(No Finding included) set when it is positive, plus, with the default ``uncertain="separate"``,
one dimension per observation set when it is uncertain; then L2-normalised. Two reports have
cosine 1 exactly when they have the same label vector up to negated versus not mentioned, so
normal reports match each other and nothing else. Two different sets of n and n + 1 dimensions
have cosine ``sqrt(n / (n + 1))``, the largest possible between different sets, which is below
0.99 for every n < 49: `SAME_FINDINGS_THRESHOLD` = 0.99 is the SIA threshold of "same label vector"
for any label set of fewer than 49 dimensions. A report with no observation at all (empty text, or
only an abnormality outside the 14) embeds to zero and matches nothing, and so does a report the labeler
cannot read (`labeler_can_read`: another language, a non-Latin script, control characters only): it is
"unlabelled", not normal.

The same embedding serves a dataset's own labels (the ``labels`` encoder): MIMIC-CXR's CheXpert
columns, or multi-hot classes without a no-finding column (SynthCXR), where an all-zero row is
normal.

Example:

```python
>>> labels = label_reports(["No focal consolidation, pneumothorax or effusion.", "Mild cardiomegaly."])
>>> embeddings = label_embeddings(labels, OBSERVATIONS)
>>> float(embeddings[0] @ embeddings[1]) < SAME_FINDINGS_THRESHOLD
True

```
"""

import itertools
import math
import re
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from typing import Optional, Sequence

import numpy as np

from processing_sista import report_has_content

# The 14 observations of the CheXpert labeler, in the column order of MIMIC-CXR's CheXpert CSV.
OBSERVATIONS = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Enlarged Cardiomediastinum",
    "Fracture",
    "Lung Lesion",
    "Lung Opacity",
    "No Finding",
    "Pleural Effusion",
    "Pleural Other",
    "Pneumonia",
    "Pneumothorax",
    "Support Devices",
)
NO_FINDING = "No Finding"
SUPPORT_DEVICES = "Support Devices"
POSITIVE, NEGATIVE, UNCERTAIN = 1.0, 0.0, -1.0
UNCERTAIN_POLICIES = ("positive", "negative", "separate")
DEFAULT_UNCERTAIN_POLICY = "separate"
# Cosine of two different sets of n and n + 1 observations is sqrt(n / (n + 1)) < 0.99 for n < 49.
SAME_FINDINGS_THRESHOLD = 0.99
# Target category of abnormalities outside the 14 observations: they only rule out No Finding.
OTHER_ABNORMALITY = "OTHER_ABNORMALITY"
# Target category of phrases that contain an observation's word but are not that observation.
NOT_AN_OBSERVATION = "NOT_AN_OBSERVATION"

_COPULA = {"is", "are", "appears", "appear", "remains", "remain", "seems", "again", "now", "still", "be", "been"}
_DEGREE = {
    "mildly", "moderately", "markedly", "severely", "slightly", "minimally", "borderline", "stably", "massively",
    "significantly", "somewhat", "likely", "probably", "possibly", "not", "no", "longer",
}
_ENLARGED = {"enlarged", "enlargement", "large", "increased", "prominent", "widened", "widening"}


def _phrase(text: str) -> list:
    """Token pattern matching `text` word by word (case-insensitive); `|` separates alternatives of one word."""
    return [{"LOWER": {"IN": word.split("|")}} for word in text.split()]


def _enlarged_after(subject: str) -> list:
    """`<subject> [is|appears ...] [mildly|not ...] enlarged`: the degree words may include a negation,
    which `_mention_state` reads inside the mention."""
    return [
        *_phrase(subject),
        {"LOWER": {"IN": sorted(_COPULA)}, "OP": "*"},
        {"LOWER": {"IN": sorted(_DEGREE)}, "OP": "*"},
        {"LOWER": {"IN": sorted(_ENLARGED)}},
    ]


def _enlarged_before(subject: str) -> list:
    return [{"LOWER": {"IN": sorted(_ENLARGED | {"enlarging"})}}, *_phrase(subject)]


_HEART = "heart|cardiac"
_HEART_OUTLINE = "heart|cardiac size|silhouette|shadow|contour|contours"
_MEDIASTINUM = "cardiomediastinal|mediastinal silhouette|contour|contours|shadow"

# Mentions of each observation, as token patterns; plural and spelling variants are listed.
_TARGET_PATTERNS = {
    "Atelectasis": [
        _phrase("atelectasis|atelectases|atelectatic"),
        _phrase("collapse|collapsed"),
    ],
    "Cardiomegaly": [
        _phrase("cardiomegaly"),
        _enlarged_after(_HEART),
        _enlarged_after(_HEART_OUTLINE),
        _enlarged_before(_HEART),
        _enlarged_before(_HEART_OUTLINE),
        _phrase("enlargement of the heart|cardiac"),
        _phrase("enlargement of the cardiac silhouette"),
        _phrase("borderline heart|cardiac size|silhouette|enlargement"),
    ],
    "Consolidation": [_phrase("consolidation|consolidations|consolidative|consolidated")],
    "Edema": [
        _phrase("edema|oedema"),
        _phrase("vascular|pulmonary|venous congestion"),
        _phrase("congestive heart failure|changes"),
        _phrase("chf"),
        _phrase("vascular redistribution|prominence|engorgement"),
        _phrase("cephalization"),
        _phrase("kerley"),
    ],
    "Enlarged Cardiomediastinum": [
        _enlarged_after(_MEDIASTINUM),
        _enlarged_before(_MEDIASTINUM),
        _enlarged_after("mediastinum"),
        _enlarged_before("mediastinum"),
        _phrase("mediastinal widening|enlargement"),
        _phrase("widening of the mediastinum"),
    ],
    "Fracture": [_phrase("fracture|fractures|fractured|fx")],
    "Lung Lesion": [
        _phrase("nodule|nodules|mass|masses|lesion|lesions|neoplasm|neoplasms|carcinoma|metastasis|metastases"),
    ],
    "Lung Opacity": [
        _phrase("opacity|opacities|opacification|opacifications|opacified|infiltrate|infiltrates|infiltration"),
        _phrase("density|densities|haziness|hazy"),
        _phrase("airspace|air-space disease|process|processes|opacity|opacities"),
        _phrase("air space disease|process|opacity|opacities"),
    ],
    "Pleural Effusion": [
        _phrase("effusion|effusions|hydrothorax"),
        _phrase("pleural fluid"),
        # De-identification often removed "angle": "blunting of the left costophrenic."
        [
            {"LOWER": {"IN": ["blunting", "blunted", "obscuration"]}},
            {"LOWER": {"IN": ["of", "the", "right", "left", "lateral", "posterior", "bilateral", "both"]}, "OP": "*"},
            {"LOWER": "costophrenic"},
        ],
        _phrase("costophrenic angle|angles|sulcus|sulci blunting|blunted"),
    ],
    "Pleural Other": [
        _phrase("pleural thickening|plaque|plaques|scarring|calcification|calcifications"),
        _phrase("fibrothorax"),
    ],
    "Pneumonia": [
        _phrase("pneumonia|pneumonias|pneumonitis|bronchopneumonia"),
        _phrase("infection|infectious|inflammatory process|processes"),
        _phrase("infection"),
    ],
    "Pneumothorax": [_phrase("pneumothorax|pneumothoraces|hydropneumothorax|pneumothoraxes")],
    "Support Devices": [
        _phrase(
            "pacemaker|pacer|defibrillator|aicd|icd|catheter|catheters|picc|port|port-a-cath|portacath|stent|stents"
        ),
        _phrase("clip|clips|staples|sutures|suture|cerclage|hardware|tube|tubes|tracheostomy|drain|drains"),
        _phrase("central|venous|dialysis|picc line|lines"),
        _phrase("loop recorder"),
        _phrase("cardiac|pacemaker|pacer generator|device|leads|lead"),
        _phrase("sternal|sternotomy wires|wire"),
        _phrase("valve replacement|replacements|prosthesis|prostheses"),
        _phrase("prosthetic valve|valves"),
        _phrase("prosthetic|prosthesis|prostheses|arthroplasty|electrode|electrodes|device|devices"),
        _phrase("tip|tips in|at|overlying|overlies|near|terminating|terminates|projecting|projects"),
    ],
    OTHER_ABNORMALITY: [
        _phrase("emphysema|emphysematous|copd|bullae|bullous|hyperlucent|hyperlucency"),
        _phrase("chronic obstructive pulmonary|lung disease"),
        _phrase("hiatal|hiatus hernia"),
        _phrase("fibrosis|fibrotic"),
    ],
    NOT_AN_OBSERVATION: [
        # Longer matches win, so these keep their words from being read as the observation.
        _phrase("pericardial effusion|effusions"),
        _phrase("calcified nodule|nodules|granuloma|granulomas|density|densities|lymph"),
        _phrase("granulomatous nodule|nodules|disease"),
        _phrase("nipple shadow|shadows"),
        _phrase("bone|bony|osseous|sclerotic|lytic density|densities|lesion|lesions"),
        _phrase("soft tissue density|densities|mass|masses"),
        _phrase("cystic fibrosis"),
        _phrase("soft tissue edema|swelling"),
        _phrase("subcutaneous|mediastinal emphysema"),
        _phrase("port film|view"),
    ],
}

# NegEx cues for radiology reports (the spirit of NegBio's and the CheXpert labeler's rules), one negspacy
# `Negex` pipe per span attribute: "negated", "uncertain" and "hypothetical" (hypothetical or historical).
# Each entry: (literal, attribute, role); a "preceding" cue modifies the mentions after it in its sentence, a
# "following" cue those before it; a "termination" (any attribute) ends a cue's scope, and a "pseudo" cue, as
# any longer cue, keeps the shorter cues inside it from counting.
_CUES = [
    *[
        (literal, "negated", "preceding")
        for literal in (
            "no", "not", "without", "negative for", "free of", "clear of", "absence of", "absent", "no evidence of",
            "no signs of", "no sign of", "no definite", "no convincing", "rather than", "resolution of",
            "resolved", "no longer", "removal of", "excluded", "rules out", "ruled out", "nor", "never",
            "negative", "deny", "denies", "instead of", "cleared", "no acute", "no new", "no residual",
        )
    ],
    *[
        (literal, "negated", "following")
        # A bare "resolved", "absent" or "excluded" after a mention is too loose ("COPD with almost completely
        # resolved pleural air collection"): only its longer forms count.
        for literal in (
            "has resolved", "have resolved", "has cleared", "have cleared", "removed", "not seen",
            "not identified", "not visualized", "not present", "is gone", "are gone", "none",
            "has been removed", "have been removed", "unlikely", "is unlikely", "not evident", "not appreciated",
            "are not seen", "is not seen", "not demonstrated", "within normal limits",
            "within limits of normal", "within the limits of normal", "is normal",
            "are normal", "appears normal", "appear normal",
        )
    ],
    *[
        (literal, "uncertain", "preceding")
        for literal in (
            "possible", "possibly", "may", "might", "could", "questionable", "question of", "suspicious for",
            "suspected", "concerning for", "concern for", "suggestive of", "suggesting", "suggests", "cannot exclude",
            "can not exclude", "cannot rule out", "can not rule out", "not excluded", "not entirely excluded",
            "differential", "versus", "vs", "equivocal", "indeterminate", "uncertain", "borderline",
            "cannot be excluded", "can't exclude", "difficult to exclude", "worrisome for", "probable",
            "presumably", "suspicious", "?", "not completely excluded", "not ruled out", "cannot be ruled out",
            "would be difficult to exclude", "less likely", "suggestion of",
        )
    ],
    *[
        (literal, "uncertain", "following")
        for literal in (
            "is possible", "are possible", "could be excluded", "is suspected", "are suspected", "is questioned", "?",
            # "cannot be excluded", "not entirely ruled out", "can not be completely excluded", ...
            *(
                " ".join(filter(None, words))
                for words in itertools.product(
                    ("cannot be", "can not be", "cannot", "can not", "not", "not be", "not been"),
                    ("", "entirely", "completely", "definitely", "confidently"),
                    ("excluded", "ruled"),
                )
            ),
        )
    ],
    *[
        (literal, "hypothetical", "preceding")
        for literal in (
            "history of", "h/o", "prior history of",
            "if", "evaluate for", "assess for", "to assess", "to evaluate", "rule out", "r/o", "eval for",
        )
    ],
    *[
        (literal, "any", "termination")
        for literal in (
            "but", "however", "although", "though", "which", "except", "aside from", "apart from", "otherwise",
            "there is", "there are", "likely", "due to", "secondary to", "represents", "representing",
            "consistent with", "compatible with", "yet", "whereas", "persistent", "persists", "unchanged", "stable",
            "again",
        )
    ],
    *[
        (literal, "any", "pseudo")
        for literal in (
            "no change", "no significant change", "no interval change", "no significant interval change",
            "not changed", "without change", "without interval change", "not significantly changed",
            "no substantial change", "no appreciable change", "no increase", "no decrease",
            "not well seen", "not well visualized", "not only",
        )
    ],
]
_ATTRIBUTES = ("negated", "uncertain", "hypothetical")
_NEGEX_FACTORY = "longest_cue_negex"
_TERMSET_KEYS = {
    "pseudo": "pseudo_negations",
    "preceding": "preceding_negations",
    "following": "following_negations",
    "termination": "termination",
}


def _termset(attribute: str) -> dict:
    """negspacy termset of one attribute. The other attributes' cues are its pseudo cues, so that a longer cue
    wins over a shorter one inside it whatever their attributes ("cannot be excluded" is no "not")."""
    termset = {key: [] for key in _TERMSET_KEYS.values()}
    for literal, cue_attribute, role in _CUES:
        if cue_attribute not in (attribute, "any"):
            role = "pseudo"
        key = _TERMSET_KEYS[role]
        if literal not in termset[key]:
            termset[key].append(literal)
    return termset


def _register_negex_factory() -> None:
    """Register negspacy's `Negex` with ConText's rule for overlapping cues: only the longest counts."""
    from negspacy.negation import Negex
    from spacy.language import Language
    from spacy.tokens import Span
    from spacy.util import filter_spans

    if Language.has_factory(_NEGEX_FACTORY):
        return

    class LongestCueNegex(Negex):
        def process_negations(self, doc):
            # As in ConText, of overlapping cues only the longest counts; negspacy itself drops only the cues
            # that start inside a pseudo cue or right after one.
            matches = self.matcher(doc)
            longest = filter_spans([Span(doc, start, end) for _, start, end in matches])
            kept = {(span.start, span.end) for span in longest}
            roles = {"Preceding": [], "Following": [], "Termination": []}
            for match_id, start, end in matches:
                role = self.nlp.vocab.strings[match_id]
                if role in roles and (start, end) in kept:
                    roles[role].append((match_id, start, end))
            return roles["Preceding"], roles["Following"], roles["Termination"]

    Language.factory(_NEGEX_FACTORY, func=LongestCueNegex)


def _build_pipeline():
    """A spaCy pipeline with this module's rules: sentences, observation mentions, then one NegEx per attribute."""
    import spacy

    _register_negex_factory()
    nlp = spacy.blank("en")
    # Cleaned reports end their sentences with punctuation.
    nlp.add_pipe("sentencizer")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns(
        [
            {"label": category, "pattern": pattern}
            for category, patterns in _TARGET_PATTERNS.items()
            for pattern in patterns
        ]
    )
    for attribute in _ATTRIBUTES:
        nlp.add_pipe(
            _NEGEX_FACTORY,
            name=f"negex_{attribute}",
            config={"neg_termset": _termset(attribute), "extension_name": attribute},
        )
    return nlp


@lru_cache(maxsize=1)
def _pipeline():
    return _build_pipeline()


_NEGATION_WORDS = {"not", "no"}
_UNCERTAINTY_WORDS = {"possibly", "borderline"}


def _mention_state(entity) -> Optional[float]:
    """Positive, negated or uncertain for one mention; None for a mention that does not count
    (hypothetical, historical, or a phrase that only contains an observation's word)."""
    if entity.label_ == NOT_AN_OBSERVATION or entity._.hypothetical:
        return None
    # "heart is not enlarged", "heart is possibly enlarged": the cue sits inside the mention, where NegEx
    # does not look.
    if entity._.negated or any(token.lower_ in _NEGATION_WORDS for token in entity):
        return NEGATIVE
    if entity._.uncertain or any(token.lower_ in _UNCERTAINTY_WORDS for token in entity):
        return UNCERTAIN
    return POSITIVE


# Words of English chest X-ray reports besides the labeler's own terms and English function words: what a report
# that mentions no observation ("Lungs are clear. Heart size normal.") is written with. Together they are the
# vocabulary `labeler_can_read` measures a report against.
_REPORT_WORDS = frozenset(
    """
    lung lungs clear normal heart size mediastinum mediastinal cardiomediastinal silhouette silhouettes contour
    contours acute cardiopulmonary process abnormality abnormalities unremarkable intact osseous bony structures
    structure visualized visible seen identified evidence focal airspace disease change changes changed stable
    interval unchanged prior comparison compared study studies exam examination radiograph radiographs film films
    view views frontal lateral portable upright supine semi erect chest thorax thoracic right left bilateral
    bilaterally both upper lower middle mid lobe lobes zone zones base bases basal basilar apex apices apical hilar
    hila hilum perihilar retrocardiac costophrenic angle angles hemidiaphragm hemidiaphragms diaphragm
    pulmonary vascular vasculature vascularity trachea midline aorta aortic arch tortuous tortuosity calcified
    calcification calcifications atherosclerotic mild mildly moderate moderately severe severely small large
    minimal minor slight slightly subtle new old chronic acute improved improving worsened worsening increased
    decreased decrease increase persistent again redemonstrated demonstrated noted present within limits
    degenerative spine thoracolumbar spondylosis scoliosis curvature granuloma granulomas scarring scar volumes
    volume low expanded expansion inspiration inspiratory hyperinflated hyperinflation flattening line lines tube
    tubes position positioned terminates terminating projects projecting overlying status post median sternotomy
    cabg wires clips surgical valve replacement placement removal placed removed patient clinical history
    findings impression indication technique recommend recommended follow correlation suggest consistent likely
    possible probable unlikely definite definitely significant significantly appreciable appreciated overt frank
    pleural effusion effusions pneumothorax free air subdiaphragmatic soft tissue tissues obscured obscuring
    limited evaluation rotation rotated technique exposure penetration underpenetrated overlapping overlap
    there here otherwise than also well seen size shape configuration appearance appears appear unremarkable
    region regions area areas streaky linear patchy nodular reticular interstitial markings prominence prominent
    vessels vessel engorgement distension distention elevated elevation blunting blunted costophrenic sulcus
    bronchial bronchovascular peribronchial thickening wall walls cuffing subsegmental segmental platelike plate
    dependent layering loculated tracking fissure fissures minor major horizontal azygos paratracheal
    cm mm x ct tiny trace sized sided measuring extensive bibasilar confluent dense support displaced rib ribs
    atrium ventricle bronchi larger smaller intrathoracic hyperexpanded like
    """.split()
)
# Share of a report's words that must come from that vocabulary for the labeler to read it as English.
ENGLISH_WORD_SHARE = 0.6


@lru_cache(maxsize=1)
def _english_vocabulary() -> frozenset:
    """English function words (spaCy's), the words of the labeler's mention and cue rules, and `_REPORT_WORDS`."""
    from spacy.lang.en.stop_words import STOP_WORDS

    rule_words = set(_COPULA | _DEGREE | _ENLARGED)
    for patterns in _TARGET_PATTERNS.values():
        for pattern in patterns:
            for token in pattern:
                value = token.get("LOWER")
                rule_words.update(value.get("IN", []) if isinstance(value, dict) else [value])
    rule_words.update(literal for literal, _, _ in _CUES)
    words = {word for phrase in rule_words for word in re.findall(r"[a-z]+", str(phrase).lower())}
    return frozenset(words | set(STOP_WORDS) | _REPORT_WORDS)


def labeler_can_read(text) -> bool:
    """
    Whether the rule-based labeler can read `text`: it has content (`processing_sista.report_has_content`) and at
    least `ENGLISH_WORD_SHARE` of its words (runs of letters, any script) are English words of chest X-ray reports
    (`_english_vocabulary`). A report it cannot read (another language, a non-Latin script, NUL or control characters
    only) is no evidence of a normal study: its label vector stays all unknown, with no No Finding, so its embedding
    is zero and matches nothing.

    Example:

    ```python
    >>> [labeler_can_read(text) for text in ("No acute cardiopulmonary process.", "Derrame pleural izquierdo.", "")]
    [True, False, False]

    ```
    """
    if not report_has_content(text):
        return False
    words = re.findall(r"[^\W\d_]+", text.lower())
    if not words:
        return False  # digits alone
    vocabulary = _english_vocabulary()
    return sum(word in vocabulary for word in words) >= ENGLISH_WORD_SHARE * len(words)


def _labels_of_doc(doc) -> np.ndarray:
    """The label vector of one processed report (see the module docstring for the rules)."""
    labels = np.full(len(OBSERVATIONS), np.nan, dtype=np.float32)
    if not labeler_can_read(doc.text):
        return labels
    other_abnormality = False
    for entity in doc.ents:
        state = _mention_state(entity)
        if state is None:
            continue
        if entity.label_ == OTHER_ABNORMALITY:
            other_abnormality |= state != NEGATIVE
            continue
        column = OBSERVATIONS.index(entity.label_)
        current = labels[column]
        # Positive beats uncertain beats negated.
        if math.isnan(current) or state == POSITIVE or (state == UNCERTAIN and current == NEGATIVE):
            labels[column] = state
    findings = [
        labels[column] for column, name in enumerate(OBSERVATIONS) if name not in (NO_FINDING, SUPPORT_DEVICES)
    ]
    if not other_abnormality and not any(value in (POSITIVE, UNCERTAIN) for value in findings):
        labels[OBSERVATIONS.index(NO_FINDING)] = POSITIVE
    return labels


def _label_chunk(texts: list, batch_size: int) -> np.ndarray:
    nlp = _pipeline()
    rows = [_labels_of_doc(doc) for doc in nlp.pipe(texts, batch_size=batch_size)]
    return np.stack(rows) if rows else np.zeros((0, len(OBSERVATIONS)), dtype=np.float32)


def _check_texts(texts) -> list:
    if isinstance(texts, str):
        raise TypeError("`texts` must be a sequence of report strings, got a single str; wrap it in a list.")
    texts = list(texts)
    for row, text in enumerate(texts):
        if text is not None and not isinstance(text, str):
            raise TypeError(f"`texts` must contain strings (or None), got {type(text).__name__} at row {row}.")
    return ["" if text is None else text for text in texts]


def label_reports(texts: Sequence[str], batch_size: int = 256, num_workers: int = 1) -> np.ndarray:
    """
    Label reports with the 14 CheXpert observations.

    Args:
        texts (`Sequence[str]`): report texts (cleaned with `processing_sista.clean_report` or raw);
            `None`, empty texts and texts the labeler cannot read (`labeler_can_read`) get an all-NaN row
            (No Finding NaN too).
        batch_size (`int`, *optional*, defaults to 256): reports per `nlp.pipe` batch.
        num_workers (`int`, *optional*, defaults to 1): processes; each builds its own pipeline and
            labels a contiguous chunk, so the rows keep the order of `texts`.

    Returns:
        `np.ndarray` of shape `(len(texts), 14)`, float32, columns in `OBSERVATIONS` order, values
        1 (positive), 0 (negated), -1 (uncertain) or NaN (not mentioned).
    """
    texts = _check_texts(texts)
    for name, value in (("batch_size", batch_size), ("num_workers", num_workers)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    if num_workers == 1 or len(texts) < 2 * batch_size:
        return _label_chunk(texts, batch_size)
    chunk_size = math.ceil(len(texts) / num_workers)
    chunks = [texts[start : start + chunk_size] for start in range(0, len(texts), chunk_size)]
    with ProcessPoolExecutor(max_workers=num_workers) as executor:
        return np.concatenate(list(executor.map(_label_chunk, chunks, [batch_size] * len(chunks))))


def _no_finding_column(class_names) -> Optional[int]:
    normalized = [str(name).strip().lower().replace("_", " ") for name in class_names]
    matches = [column for column, name in enumerate(normalized) if name == NO_FINDING.lower()]
    if len(matches) > 1:
        raise ValueError(f"`class_names` must name at most one no-finding column, got {list(class_names)}.")
    return matches[0] if matches else None


def label_embeddings(
    labels, class_names: Optional[Sequence[str]] = None, uncertain: str = DEFAULT_UNCERTAIN_POLICY
) -> np.ndarray:
    """
    Turn label vectors into L2-normalised report embeddings: same set of findings <=> cosine 1.

    Dimensions: one per finding class (positive), then No Finding; with ``uncertain="separate"`` one
    more per finding class for its uncertain state. The No Finding dimension is the data's own
    no-finding column when ``class_names`` has one (`"No Finding"`, any case, `_` for space), else it
    is set when no finding class is positive (multi-hot labels such as SynthCXR's, where an
    all-zero row is normal).

    Args:
        labels (array-like or `pandas.DataFrame`): shape `(N, K)`, values in {1, 0, -1, NaN}
            (positive, negative, uncertain, not mentioned); NaN and 0 mean absent. A DataFrame's
            columns are its class names.
        class_names (`Sequence[str]`, *optional*): the K column names, to find a no-finding column.
        uncertain (`str`, *optional*, defaults to `"separate"`): `"positive"` counts an uncertain
            finding as present (U-Ones), `"negative"` as absent (U-Zeros), `"separate"` gives it
            its own dimension so it matches only the same uncertain finding.

    Returns:
        `np.ndarray` of shape `(N, D)`, float32; rows with no dimension set are zero and match nothing.
    """
    if uncertain not in UNCERTAIN_POLICIES:
        raise ValueError(f"`uncertain` must be one of {UNCERTAIN_POLICIES}, got {uncertain!r}.")
    if class_names is None and hasattr(labels, "columns"):
        class_names = list(labels.columns)
    try:
        values = np.asarray(labels, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise TypeError(f"`labels` must be numeric (1, 0, -1 or NaN), got values that are not: {error}") from error
    if values.ndim != 2:
        raise ValueError(f"`labels` must have shape (N, num_classes), got shape {values.shape}.")
    known = np.isnan(values) | np.isin(values, (POSITIVE, NEGATIVE, UNCERTAIN))
    if not known.all():
        row, column = np.argwhere(~known)[0]
        raise ValueError(
            f"`labels` values must be 1, 0, -1 or NaN, got {float(values[row, column])} at row {row}, column {column}."
        )
    if class_names is not None and len(class_names) != values.shape[1]:
        raise ValueError(f"`class_names` must name the {values.shape[1]} label columns, got {len(class_names)} names.")
    no_finding_column = None if class_names is None else _no_finding_column(class_names)
    finding_columns = [column for column in range(values.shape[1]) if column != no_finding_column]
    findings = values[:, finding_columns]
    positive = findings == POSITIVE
    if uncertain == "positive":
        positive |= findings == UNCERTAIN
    if no_finding_column is None:
        no_finding = ~positive.any(axis=1)
    else:
        no_finding = values[:, no_finding_column] == POSITIVE
    parts = [positive, no_finding[:, None]]
    if uncertain == "separate":
        parts.append(findings == UNCERTAIN)
    embeddings = np.concatenate(parts, axis=1).astype(np.float32)
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    return embeddings / np.where(norms > 0, norms, 1.0)


def embed_reports(
    texts: Sequence[str], uncertain: str = DEFAULT_UNCERTAIN_POLICY, batch_size: int = 256, num_workers: int = 1
) -> np.ndarray:
    """`label_embeddings(label_reports(texts), OBSERVATIONS, uncertain)`: the labeler as a report encoder."""
    return label_embeddings(label_reports(texts, batch_size, num_workers), OBSERVATIONS, uncertain)

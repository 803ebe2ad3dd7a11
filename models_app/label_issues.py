"""Likely-mislabeled records, confident-learning style: pure numpy/scikit-learn/cleanlab.

1. Features: the texts' sentence embeddings (mean-pooled encoder states) side by side with
   TF-IDF weights of their words and word pairs. Embeddings alone miss what single words say
   (on TREC questions "how many" vs "how"): together the out-of-fold accuracy went from 0.84
   to 0.89 and the flags' precision from 0.41 to 0.77 (benchmarks/mislabeled.py).
2. Out-of-fold probabilities: the records are cut into k stratified folds; a logistic
   regression fitted on the other folds predicts each fold, so no record is judged by a model
   that saw its own label.
3. cleanlab's ``find_label_issues`` (confident learning, Northcutt et al. 2021) estimates from
   the confident joint how many given labels are really another class, and flags that many
   records, those whose given label has the lowest probability ("low_self_confidence"); they
   are ranked most likely wrong first.

The baseline to beat is the plain rule "the out-of-fold prediction differs from the given
label" (``disagreements``), which flags every mistake of the model as well.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_FOLDS = 5
MIN_RECORDS = 20  # fewer labeled records cannot be cross-validated into anything useful
MIN_PER_CLASS = 2  # a class needs a record outside the fold being predicted
# Inverse regularization strength of the logistic regression: 3 beat 1, 10 and 30 on TREC.
DEFAULT_REGULARIZATION = 3.0
# Which of cleanlab's filters picks the flagged records. Its default, "prune_by_noise_rate",
# flagged about 35% more records at a lower precision (benchmarks/mislabeled.py compares them).
DEFAULT_FILTER = "low_self_confidence"
FILTERS = (
    "low_self_confidence",
    "low_normalized_margin",
    "prune_by_noise_rate",
    "prune_by_class",
    "both",
    "confident_learning",
)


class ScanRefused(ValueError):
    """The labels cannot be scanned; the message says why in a sentence."""


@dataclass(frozen=True)
class LabelIssue:
    index: int  # position in the arrays passed in
    given: int  # class index of the given label
    suggested: int  # class index the model believes in
    suggested_probability: float  # out-of-fold probability of the suggested class
    given_probability: float  # out-of-fold probability of the given label
    score: float  # label quality in [0, 1] (self-confidence); lower: more likely wrong


def text_features(embeddings: np.ndarray, texts: Sequence[str]):
    """Embeddings and TF-IDF word (1-2 gram) weights side by side, as one sparse matrix. Texts
    with no word seen twice (tiny or unusual data) get the embeddings alone."""
    import scipy.sparse as sparse
    from sklearn.feature_extraction.text import TfidfVectorizer

    dense = sparse.csr_matrix(np.asarray(embeddings, dtype=np.float64))
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    try:
        words = vectorizer.fit_transform(list(texts))
    except ValueError:  # empty vocabulary
        return dense
    return sparse.hstack([dense, words]).tocsr()


def scannable_classes(counts: Mapping[str, int]) -> tuple[list[str], list[str]]:
    """(classes kept, classes left out for having fewer than MIN_PER_CLASS records), by name,
    from the count of records per label."""
    kept = sorted(name for name, count in counts.items() if count >= MIN_PER_CLASS)
    dropped = sorted(name for name, count in counts.items() if count < MIN_PER_CLASS)
    return kept, dropped


def check_scannable(class_counts: Sequence[int]) -> None:
    """Raise ScanRefused unless records with these counts per class can be cross-validated."""
    total = int(sum(class_counts))
    if total < MIN_RECORDS:
        raise ScanRefused(
            f"A scan needs at least {MIN_RECORDS} labeled records; this dataset has "
            f"{total}. Label more records first."
        )
    if sum(1 for count in class_counts if count >= MIN_PER_CLASS) < 2:
        raise ScanRefused(
            f"A scan needs at least two labels with {MIN_PER_CLASS} or more records each, to "
            "compare them."
        )


def out_of_fold_probabilities(
    features: np.ndarray,
    labels: Sequence[int],
    *,
    class_count: int,
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
    regularization: float = DEFAULT_REGULARIZATION,
    on_fold: Callable[[int, int], object] | None = None,
) -> np.ndarray:
    """(n, class_count) probabilities, each row from a model that did not see that row.

    ``folds`` is lowered to the smallest class's size when a class is smaller (each fold then
    still holds every class in its training part). ``on_fold(done, total)`` after each fold.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(labels, dtype=np.int64)
    check_scannable(np.bincount(labels, minlength=class_count).tolist())
    smallest = int(np.bincount(labels, minlength=class_count)[np.unique(labels)].min())
    folds = max(2, min(folds, smallest))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    probabilities = np.zeros((len(labels), class_count), dtype=np.float64)
    for number, (train, held_out) in enumerate(splitter.split(features, labels), start=1):
        model = LogisticRegression(C=regularization, max_iter=2000)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence chatter on near-separable folds
            model.fit(features[train], labels[train])
        probabilities[np.ix_(held_out, model.classes_)] = model.predict_proba(features[held_out])
        if on_fold is not None:
            on_fold(number, folds)
    return probabilities


def find_issues(
    probabilities: np.ndarray, labels: Sequence[int], *, filter_by: str = DEFAULT_FILTER
) -> list[LabelIssue]:
    """The records cleanlab flags, most likely wrong first."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    if filter_by not in FILTERS:
        raise ScanRefused(f"The filter must be one of {', '.join(FILTERS)}.")
    labels = np.asarray(labels, dtype=np.int64)
    probabilities = _checked(probabilities, labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mask = find_label_issues(labels, probabilities, filter_by=filter_by, n_jobs=1)
        scores = get_label_quality_scores(labels, probabilities, method="self_confidence")
    flagged = np.flatnonzero(mask)
    return _issues(
        flagged[np.argsort(scores[flagged], kind="stable")], probabilities, labels, scores
    )


def disagreements(probabilities: np.ndarray, labels: Sequence[int]) -> list[LabelIssue]:
    """The baseline: every record whose out-of-fold argmax is not its given label."""
    from cleanlab.rank import get_label_quality_scores

    labels = np.asarray(labels, dtype=np.int64)
    probabilities = _checked(probabilities, labels)
    scores = get_label_quality_scores(labels, probabilities, method="self_confidence")
    flagged = np.flatnonzero(probabilities.argmax(axis=1) != labels)
    return _issues(
        flagged[np.argsort(scores[flagged], kind="stable")], probabilities, labels, scores
    )


def _checked(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    if probabilities.ndim != 2 or len(probabilities) != len(labels):
        raise ValueError("probabilities must be (records, classes) with one row per label")
    if len(labels) and labels.max() >= probabilities.shape[1]:
        raise ValueError("a label index is outside the probability columns")
    return probabilities


def _issues(
    order: np.ndarray, probabilities: np.ndarray, labels: np.ndarray, scores: np.ndarray
) -> list[LabelIssue]:
    issues = []
    for index in order:
        row = probabilities[index].copy()
        given = int(labels[index])
        row[given] = -1.0  # the suggestion is the likeliest class other than the given one
        suggested = int(row.argmax())
        issues.append(
            LabelIssue(
                index=int(index),
                given=given,
                suggested=suggested,
                suggested_probability=float(probabilities[index, suggested]),
                given_probability=float(probabilities[index, given]),
                score=float(scores[index]),
            )
        )
    return issues


def precision_recall(flagged: Sequence[int], planted: Sequence[int]) -> tuple[float, float]:
    """Precision and recall of flagged indices against the indices known to be wrong."""
    flagged_set, planted_set = set(flagged), set(planted)
    hits = len(flagged_set & planted_set)
    precision = hits / len(flagged_set) if flagged_set else 0.0
    recall = hits / len(planted_set) if planted_set else 0.0
    return precision, recall

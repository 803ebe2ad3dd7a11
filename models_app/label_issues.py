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


# Texts embedded at a time when the features are built while embedding (text_features_streamed):
# only this many embeddings exist outside the feature matrix at once.
EMBED_CHUNK = 8_192


def word_features(texts: Sequence[str]):
    """TF-IDF weights (float32 CSR) of the texts' words and word pairs seen at least twice;
    None when no word is seen twice (tiny or unusual data)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, dtype=np.float32)
    try:
        return vectorizer.fit_transform(list(texts)).tocsr()
    except ValueError:  # empty vocabulary
        return None


class FeatureMatrix:
    """Embeddings and word weights side by side in one float32 CSR matrix, its arrays allocated
    once at their final size and filled in place: an embedding block is copied straight into its
    rows (no float64 copy, no CSR or COO intermediate of the dense block, no stacking copy), so a
    scan holds the finished matrix plus one block of embeddings at a time. About 8 bytes per
    embedding value and per word weight (value and column index)."""

    def __init__(self, rows: int, dimensions: int, words=None):
        self.rows, self.dimensions, self.words = rows, dimensions, words
        word_counts = (
            np.diff(words.indptr).astype(np.int64)
            if words is not None
            else np.zeros(rows, np.int64)
        )
        indptr = np.zeros(rows + 1, dtype=np.int64)
        np.cumsum(word_counts + dimensions, out=indptr[1:])
        width = dimensions + (words.shape[1] if words is not None else 0)
        index_type = np.int32 if max(int(indptr[-1]), width) < 2**31 else np.int64
        self.indptr = indptr.astype(index_type)
        self.data = np.empty(int(indptr[-1]), dtype=np.float32)
        self.indices = np.empty(int(indptr[-1]), dtype=index_type)
        self.width = width
        if words is not None and words.nnz:
            # Each row's word weights follow its embedding, their columns shifted past it.
            starts = indptr[:-1] + dimensions
            positions = np.repeat(starts - words.indptr[:-1], word_counts) + np.arange(
                words.nnz, dtype=np.int64
            )
            self.data[positions] = words.data
            self.indices[positions] = words.indices + dimensions
            del positions
        self._filled = 0

    def put(self, start: int, block: np.ndarray) -> None:
        """Rows ``start`` … ``start + len(block)`` get their embeddings."""
        block = np.asarray(block, dtype=np.float32)
        if block.ndim != 2 or block.shape[1] != self.dimensions:
            raise ValueError(f"embeddings must be (rows, {self.dimensions})")
        stop = start + len(block)
        if not 0 <= start <= stop <= self.rows:
            raise ValueError("embedding rows outside the matrix")
        offsets = self.indptr[start:stop].astype(np.int64)
        positions = (offsets[:, None] + np.arange(self.dimensions, dtype=np.int64)).ravel()
        self.data[positions] = block.ravel()
        self.indices[positions] = np.tile(
            np.arange(self.dimensions, dtype=self.indices.dtype), len(block)
        )
        self._filled += len(block)

    def matrix(self):
        """The finished matrix (its arrays, not a copy); every row must have been put."""
        import scipy.sparse as sparse

        if self._filled != self.rows:
            raise ValueError(f"{self.rows - self._filled} rows have no embeddings yet")
        self.words = None
        result = sparse.csr_matrix(
            (self.data, self.indices, self.indptr), shape=(self.rows, self.width), copy=False
        )
        result.has_sorted_indices = True
        return result


def text_features(embeddings: np.ndarray, texts: Sequence[str]):
    """Embeddings and TF-IDF word (1-2 gram) weights side by side, as one float32 sparse matrix.
    Texts with no word seen twice (tiny or unusual data) get the embeddings alone."""
    embeddings = np.asarray(embeddings)
    builder = FeatureMatrix(len(embeddings), embeddings.shape[1], word_features(texts))
    for start in range(0, len(embeddings), EMBED_CHUNK):
        builder.put(start, embeddings[start : start + EMBED_CHUNK])
    return builder.matrix()


def text_features_streamed(
    texts: Sequence[str],
    *,
    dimensions: int,
    embed: Callable[[Sequence[str], int], np.ndarray],
    chunk: int = EMBED_CHUNK,
):
    """``text_features`` without holding every embedding: the word weights first, then
    ``embed(texts_of_the_chunk, offset)`` for ``chunk`` texts at a time, each block copied into
    the matrix and let go."""
    builder = FeatureMatrix(len(texts), dimensions, word_features(texts))
    for start in range(0, len(texts), chunk):
        builder.put(start, embed(texts[start : start + chunk], start))
    return builder.matrix()


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
    weights = np.empty(len(labels), dtype=np.float64)
    for number, (_train, held_out) in enumerate(splitter.split(labels, labels), start=1):
        model = LogisticRegression(C=regularization, max_iter=2000)
        # The held-out rows get weight 0 instead of the training rows being copied out (a copy
        # of 1 - 1/folds of the features per fold): scikit-learn scales the loss and the
        # penalty by the weights' sum, so the fit is that of the training rows alone.
        weights.fill(1.0)
        weights[held_out] = 0.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence chatter on near-separable folds
            model.fit(features, labels, sample_weight=weights)
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

"""A tiny BERT classifier trained in seconds on a toy rule: the label is `positive` exactly when
the word "good" (or "great") is in the text. Explanations must single those words out; batch
prediction and the playground get a real model folder to load."""

from __future__ import annotations

import random
from pathlib import Path

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
FILLER = ["the", "a", "movie", "film", "plot", "was", "is", "very", "story", "and", "it"]
POSITIVE = ["good", "great"]
PIECES = ["##ness", "##s"]  # "goodness" -> good ##ness: a word of two pieces
LABELS = ["negative", "positive"]


def toy_sentence(rng: random.Random, *, positive: bool) -> str:
    words = [rng.choice(FILLER) for _ in range(rng.randint(3, 7))]
    if positive:
        words.insert(rng.randrange(len(words) + 1), rng.choice(POSITIVE))
    return " ".join(words)


def toy_rows(count: int, *, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)  # noqa: S311 (test data)
    rows = []
    for index in range(count):
        positive = index % 2 == 0
        rows.append((toy_sentence(rng, positive=positive), LABELS[int(positive)]))
    return rows


def save_toy_classifier(folder: Path, *, steps: int = 150) -> Path:
    """Train the toy classifier and save it as a Hugging Face folder (with id2label)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(SPECIAL + FILLER + POSITIVE + PIECES) + "\n")
    tokenizer = BertTokenizerFast(vocab=str(vocab))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(SPECIAL + FILLER + POSITIVE + PIECES),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=2,
        id2label=dict(enumerate(LABELS)),
        label2id={name: index for index, name in enumerate(LABELS)},
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    model = BertForSequenceClassification(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rows = toy_rows(2000, seed=1)
    rng = random.Random(2)  # noqa: S311 (test data)
    model.train()
    for _ in range(steps):
        batch = rng.sample(rows, 32)
        encoded = tokenizer([text for text, _ in batch], padding=True, return_tensors="pt")
        labels = torch.tensor([LABELS.index(label) for _, label in batch])
        loss = model(**encoded, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder

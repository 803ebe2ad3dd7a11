"""A tiny BERT sequence classifier saved as a version folder (config, weights, tokenizer)."""

from pathlib import Path

from tests.training_app.tiny_model import SPECIAL, WORDS

TASK_PROBLEM_TYPES = {
    "single_label": "single_label_classification",
    "multi_label": "multi_label_classification",
    "regression": "regression",
}


def save_tiny_classifier(
    folder: Path,
    *,
    task: str = "single_label",
    labels: tuple[str, ...] = ("negative", "positive"),
    seed: int = 0,
    max_length: int = 32,
) -> Path:
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    digits = [str(i) for i in range(10)] + [f"##{i}" for i in range(10)]
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(SPECIAL + WORDS + digits) + "\n")
    tokenizer = BertTokenizerFast(vocab=str(vocab))
    names = [] if task == "regression" else list(labels)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(SPECIAL + WORDS + digits),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=1 if task == "regression" else len(names),
        problem_type=TASK_PROBLEM_TYPES[task],
        id2label=dict(enumerate(names)) if names else {0: "LABEL_0"},
        label2id={name: i for i, name in enumerate(names)} if names else {"LABEL_0": 0},
    )
    config.lepton_max_length = max_length
    model = BertForSequenceClassification(config)
    with torch.no_grad():  # a head with clear margins, so labels differ by text
        model.classifier.weight.mul_(20)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder

"""A tiny BERT saved as a Hugging Face folder, for tests that train for real in seconds."""

from pathlib import Path

WORDS = [
    "good",
    "great",
    "fine",
    "bad",
    "awful",
    "poor",
    "this",
    "is",
    "movie",
    "number",
    "a",
    "the",
]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def save_tiny_bert(folder: Path) -> Path:
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    digits = [str(i) for i in range(10)] + [f"##{i}" for i in range(10)]
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(SPECIAL + WORDS + digits) + "\n")
    tokenizer = BertTokenizerFast(vocab=str(vocab))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(SPECIAL + WORDS + digits),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder

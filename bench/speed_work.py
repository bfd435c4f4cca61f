"""Before/after measurements of the data-side speed work on real data (MiniLM, ../shared/data).

    python -m bench.speed_work [--data-dir ../shared/data] [--backbone minilm] [--out FILE]

Writes ``results/perf/speed_work.json`` (or ``--out``) and prints a table:

1. tokenization: first call (tokenize and write the Arrow cache), the same call again in this
   process (memo), and in a fresh process (disk cache);
2. evaluation of CoNLL-2003 validation (3,250 sentences): in file order at batch 16 (before)
   and sorted by length at batch 64 (after), same model, same metrics;
3. padding waste of a training epoch of SST-2 at batch 16: random batches (before) and
   length-grouped batches (after), as tokens computed per real token;
4. data starvation: the share of a real training run's time its loop spent waiting for batches.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def tokenization(data_dir: str, backbone: str) -> dict[str, float]:
    import os

    from bench.backbones import load_tokenizer, resolve_backbone
    from bench.data import load_task, tokenize_task
    from tasks import get_task

    os.environ["PEFT_BENCH_CACHE"] = tempfile.mkdtemp(prefix="peft-bench-cache-")
    spec = get_task("sst2")
    ref = resolve_backbone(backbone)
    tokenizer = load_tokenizer(ref, spec)
    loaded = load_task(spec, data_dir)
    start = time.perf_counter()
    tokenize_task(loaded, tokenizer, ref.identity, 64)
    first = time.perf_counter() - start
    start = time.perf_counter()
    tokenize_task(loaded, tokenizer, ref.identity, 64)
    memo = time.perf_counter() - start
    code = (
        "import time; from bench.backbones import load_tokenizer, resolve_backbone;"
        "from bench.data import load_task, tokenize_task; from tasks import get_task;"
        f"s=get_task('sst2'); r=resolve_backbone({backbone!r}); t=load_tokenizer(r,s);"
        f"l=load_task(s,{data_dir!r}); a=time.perf_counter();"
        "tokenize_task(l,t,r.identity,64); print(time.perf_counter()-a)"
    )
    fresh = float(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ
        ).stdout.split()[-1]
    )
    return {"first_s": first, "same_process_s": memo, "fresh_process_disk_cache_s": fresh}


def evaluation(data_dir: str, backbone: str) -> dict[str, float]:
    import torch

    import bench.train as train
    from bench.backbones import load_backbone, load_tokenizer, resolve_backbone
    from bench.config import TrainConfig
    from bench.data import Collator, load_task, tokenize_task
    from methods import build_method
    from tasks import get_task

    spec = get_task("conll2003")
    ref = resolve_backbone(backbone)
    tokenizer = load_tokenizer(ref, spec)
    data = tokenize_task(load_task(spec, data_dir), tokenizer, ref.identity, 128)
    examples = data["validation"].to_list()
    torch.manual_seed(0)
    model = build_method("p_tuning_v2", {}).attach(
        load_backbone(ref, spec, tokenizer.pad_token_id), spec, None
    )
    collator = Collator(tokenizer)
    import builtins

    real_sorted = builtins.sorted

    def unsorted(items, key=None, reverse=False):  # evaluation as before: file order
        return list(items)

    out = {}
    variants = [("before_file_order_b16", 16, False), ("after_sorted_b64", 64, True)]
    for label, batch, sort in variants:
        train.sorted = real_sorted if sort else unsorted
        start = time.perf_counter()
        metrics = train.evaluate(
            model, examples, spec, collator, TrainConfig(eval_batch_size=batch), "cpu", False
        )
        out[f"{label}_s"] = time.perf_counter() - start
        out[f"{label}_f1"] = metrics["f1"]
    del train.sorted  # back to the builtin
    return out


def padding(data_dir: str, backbone: str) -> dict[str, float]:
    import torch

    from bench.backbones import load_tokenizer, resolve_backbone
    from bench.data import LengthGroupedBatches, load_task, tokenize_task
    from tasks import get_task

    spec = get_task("sst2")
    ref = resolve_backbone(backbone)
    data = tokenize_task(load_task(spec, data_dir), load_tokenizer(ref, spec), ref.identity, 64)
    lengths = [len(ids) for ids in data["train"]["input_ids"]]
    order = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(0)).tolist()
    random_batches = [order[i : i + 16] for i in range(0, len(order), 16)]
    grouped = list(LengthGroupedBatches(lengths, 16, torch.Generator().manual_seed(0)))

    def computed(batches):
        return sum(len(b) * max(lengths[i] for i in b) for b in batches)

    real = sum(lengths)
    return {
        "real_tokens": real,
        "before_random_tokens_computed_per_real": computed(random_batches) / real,
        "after_grouped_tokens_computed_per_real": computed(grouped) / real,
    }


def data_wait(data_dir: str, backbone: str) -> dict[str, float]:
    """A real training run (SST-2, prompt tuning, 600 examples, 2 epochs at batch 16): the
    seconds its loop waited for batches (the record's ``data_wait_s``) against training time."""
    from bench.runner import PlanRequest, build_plan
    from bench.train import train_run

    (run,) = build_plan(
        PlanRequest(
            tasks=["sst2"],
            methods=["prompt_tuning"],
            seeds=[13],
            backbones=[backbone],
            data_dir=data_dir,
            train={"epochs": 2, "batch_size": 16, "max_train_samples": 600, "max_length": 64,
                   "max_eval_samples": 100},  # fmt: skip
        )
    )
    result = train_run(run, device="cpu", progress=False)
    timing = result.timing
    return {
        "steps": timing["steps"],
        "train_s": timing["train_s"],
        "data_wait_s": timing["data_wait_s"],
        "data_wait_share_of_train": timing["data_wait_s"] / timing["train_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--backbone", default="minilm")
    parser.add_argument("--out", default=str(REPO / "results" / "perf" / "speed_work.json"))
    args = parser.parse_args()
    torch_threads = __import__("torch").get_num_threads()
    report = {
        "backbone": args.backbone,
        "torch_threads": torch_threads,
        "tokenization_sst2": tokenization(args.data_dir, args.backbone),
        "evaluation_conll2003_validation": evaluation(args.data_dir, args.backbone),
        "padding_sst2_train_b16": padding(args.data_dir, args.backbone),
        "data_wait_sst2_prompt_tuning": data_wait(args.data_dir, args.backbone),
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

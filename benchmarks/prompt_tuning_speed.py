"""Seconds per epoch of soft prompt tuning (evo.search.tuning) for the packaged Gemma-3-270M on this CPU.

Protocol: the paper's tuning settings (16 virtual tokens, batch 16, lr 0.1) on 16 training texts in
the prompt format (the prelude, then two MNIST-1D seed programs with their Metrics docstrings),
truncated to ``--tokens`` tokens (~400). One batch = one optimisation step per epoch. ``--epochs``
separate ``train`` calls of one epoch each (so each is timed; the later ones continue from the
tuned prompt, as rounds do). Also checks that cached sampling with the soft prompt matches a
token-by-token forward pass (greedy), and measures sampling speed with and without it.

    python benchmarks/prompt_tuning_speed.py [--epochs 2] [--micro-batch 1] [--threads 1]

Also records the mean token loss on the training texts of the base model (no soft prompt), of
the freshly initialised prompt, and after the epochs. Writes
benchmarks/results/prompt_tuning_speed.json (``--out``). Peak RSS ~7 GB (Gemma-270M, bf16).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import resource
import sys
import time
import warnings

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def training_texts(n: int) -> list[str]:
    from evo.search.prompt import metrics_docstring, normalise_entry
    from evo.tasks.mnist1d.task import PRELUDE
    seeds = sorted((ROOT / "seeds" / "mnist1d").glob("*.py"))
    codes = [normalise_entry(p.read_text()) for p in seeds]
    pairs = [(a, b) for a in range(len(codes)) for b in range(len(codes)) if a != b]
    texts = []
    for i in range(n):
        a, b = pairs[i % len(pairs)]
        blocks = [metrics_docstring(1000 * (a + 1) + 37 * i, 0.80 + 0.01 * (i % 10)) + "\n" + codes[a],
                  metrics_docstring(1000 * (b + 1) + 53 * i, 0.75 + 0.01 * (i % 7)) + "\n" + codes[b]]
        texts.append(PRELUDE + "\n\n" + "\n\n".join(blocks) + "\n")
    return texts


def rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2   # Linux: KiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="packaged:gemma3-270m")
    ap.add_argument("--texts", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=400)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--micro-batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--gen-tokens", type=int, default=24)
    ap.add_argument("--init", default="random", choices=["random", "vocab"])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "prompt_tuning_speed.json"))
    args = ap.parse_args()
    warnings.filterwarnings("ignore")

    import peft
    import torch
    import transformers

    from evo.lm.hf import HFCausalLM
    from evo.search.tuning import PromptTuningConfig, SoftPromptTuner

    lm = HFCausalLM(args.model, threads=args.threads, max_new_tokens=args.gen_tokens)
    texts = training_texts(args.texts)
    lengths = [min(len(lm.tokenizer(t).input_ids), args.tokens) for t in texts]
    cfg = PromptTuningConfig(epochs=1, max_length=args.tokens, micro_batch_size=args.micro_batch, init=args.init)
    t0 = time.time()
    tuner = SoftPromptTuner(lm, cfg, seed=0)
    wrap_s = time.time() - t0
    t0 = time.time()
    losses_at = {"base_model": tuner.loss(texts, with_prompt=False), "before": tuner.loss(texts)}
    eval_s = (time.time() - t0) / 2
    epochs = []
    for epoch in range(args.epochs):
        t0 = time.time()
        losses = tuner.train(texts, seed=epoch)
        epochs.append({"seconds": round(time.time() - t0, 2), "loss": losses[0]})
        print(f"epoch {epoch + 1}: {epochs[-1]['seconds']} s, loss {losses[0]:.4f}, peak RSS {rss_gb():.1f} GB",
              flush=True)

    losses_at[f"after_{args.epochs}_epochs"] = tuner.loss(texts)

    # Generation with the soft prompt: cached greedy vs a token-by-token forward, and speed.
    prompt = texts[0][: len(texts[0]) // 2]
    enc = lm.tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        cached = tuner.peft_model.generate(**enc, do_sample=False, max_new_tokens=args.gen_tokens)
        ids = enc.input_ids
        for _ in range(args.gen_tokens):
            logits = tuner.peft_model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
            ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    new_cached, new_forward = cached[0, enc.input_ids.shape[1]:], ids[0, enc.input_ids.shape[1]:]
    agree = int((new_cached == new_forward).int().cumprod(0).sum())
    speed = {}
    for label in ("base", "soft_prompt"):
        if label == "soft_prompt":
            tuner.activate()
        t0 = time.time()
        comps = lm.sample(prompt, [0.8], seed=0)
        speed[label] = {"tokens": comps[0].tokens_out, "tokens_per_s": round(comps[0].tokens_out / (time.time() - t0), 2),
                        "tokens_in": comps[0].tokens_in}
    tuner.deactivate()

    per_epoch = [e["seconds"] for e in epochs]
    result = {
        "protocol": {"model": args.model, "dtype": str(lm.dtype), "texts": len(texts), "tokens_per_text": lengths,
                     "num_virtual_tokens": cfg.num_virtual_tokens, "batch_size": cfg.batch_size,
                     "micro_batch_size": cfg.micro_batch_size, "learning_rate": cfg.learning_rate, "init": cfg.init,
                     "steps_per_epoch": -(-len(texts) // cfg.batch_size), "threads": args.threads},
        "load_s": round(lm.load_seconds, 2), "wrap_s": round(wrap_s, 2),
        "trainable_values": tuner.num_trainable(),
        "epochs": epochs, "seconds_per_epoch": round(sum(per_epoch) / len(per_epoch), 2),
        "tokens_per_s_training": round(sum(lengths) / (sum(per_epoch) / len(per_epoch)), 1),
        "peak_rss_gb": round(rss_gb(), 2),
        "loss_eval_s": round(eval_s, 2),
        "loss_per_token": {k: round(v, 4) for k, v in losses_at.items()},
        "generation_check": {"new_tokens": args.gen_tokens, "cached_equals_forward_prefix": agree},
        "sampling": speed,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
                     "python": platform.python_version()},
        "machine": f"{platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores visible",
        "date": time.strftime("%Y-%m-%d"),
    }
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

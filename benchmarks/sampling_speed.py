"""Tokens/s of sampling the n children of a prompt: one batch vs n calls vs raw ``transformers`` generate.

Protocol: the default LM (packaged Gemma-3-270M, bf16, ``--threads`` torch threads), a real
2-parent few-shot prompt as the search writes it (``CrossMut.make_prompt``: the GRU and CNN seeds
with their metrics, fittest last, the prefill), the demo's temperatures {0.6, 0.8, 1.0} drawn per
sample as the loop draws them. Variants, measured in the same process and interleaved
(A, B, C, D, A, B, C, D, ...) so that load from other jobs hits all of them alike:

- ``evo_batched``: ``lm.sample(prompt, temps, seed)``, the n rows in one call (what the search does).
- ``evo_sequential``: n calls ``lm.sample(prompt, [temps[i]], seed + i)``.
- ``raw_generate``: ``lm.model.generate`` on the same model and the same n-row batch (the prompt
  repeated n times), sampling at one temperature (0.8), none of evo's logits processors or
  stopping criteria.
- ``evo_batched_classstop`` (informational, not in the goals): ``lm.sample`` exactly as the search
  calls it (``CrossMut.sample``): the real ``ClassStop`` rule, the banned words, and the search's
  token cap (``--stop-max-new-tokens``, lm.max_new_tokens=160). Rows stop at different points, so
  its tokens/s counts the tokens kept (sum of ``tokens_out``), not the row-steps computed.

Equal work: in the first three variants every row generates exactly ``--max-new-tokens`` tokens:
no stop rule (stop=None), and ``min_new_tokens = max_new_tokens`` for all of them (evo's through
``model.generation_config``, raw's as a generate argument), so EOS can never be sampled; the
benchmark checks every row's count. Both paths sample from the full vocabulary (top_k=0, top_p=1;
transformers' own default would add a top-50 filter to the raw path only). Wall time includes
tokenising the prompt and the prefill, in every variant. The time spent inside evo's per-row
temperature and stop criterion is measured separately (``wrapper_s``).

Ratios are the medians of the per-repetition ratios (each repetition's variants ran back to back).
Goals (issue): batched >= 4x sequential tokens/s, batched >= 0.9x raw generate. ``anatomy``:
the prompt's prefill at 1 and n rows, and the per-step decode time derived from it.

    python benchmarks/sampling_speed.py                                    # n=8, 64 tokens, 3 repetitions (~10 min)
    python benchmarks/sampling_speed.py --n 16 --repeats 2 --no-classstop  # adds (or replaces) the n=16 entry (~9 min)

Writes benchmarks/results/sampling_speed.json (``--out``): one entry per n, the entries for the
n values measured now replace earlier ones, the others are kept.

``--decoders`` (issue 14) compares the samplers instead, interleaved the same way, with ratios to
``generate`` (transformers' generate, the sampler before issue 14): evo's cached loop with none of its
speed-ups (``cached_plain``: n prefills, the model's own attention), each alone (``+shared_prefix``,
``+grouped_attention``), both (``cached``, the default), the code-token head on top
(``cached_code_head``, changes the distribution); equal work as above. Then, informational, as the search
calls it (ClassStop, banned words, 160-token cap; rows stop early, kept tokens counted):
``generate_classstop``, ``cached_classstop`` and ``all_classstop`` (code head + the MNIST-1D grammar).
Entries go under ``decoders_n<N>``:

    python benchmarks/sampling_speed.py --decoders --repeats 2           # ~10 min on a loaded 2-core machine
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import random
import statistics
import sys
import time
import warnings
from collections import Counter
from contextlib import contextmanager

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# The seeds' metrics as the search shows them (README "Seeds", 8000 steps, seed 0).
SEED_METRICS = {"cnn": (5210, 0.920), "gru": (5110, 0.904), "mlp": (15210, 0.642), "residual_cnn": (91082, 0.896)}
GOALS = {"batched_over_sequential": 4.0, "batched_over_raw": 0.9}

# Seconds spent inside evo's own generate hooks (per-row temperature and stop criterion).
WRAPPER = {"seconds": 0.0, "calls": 0}


def _timed(fn):
    def wrapper(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(self, *args, **kwargs)
        finally:
            WRAPPER["seconds"] += time.perf_counter() - t0
            WRAPPER["calls"] += 1
    return wrapper


def search_setup(n: int, parents: list[str]):
    """The task, operator and prompt as `python -m evo.run experiment=demo` builds them."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from evo.config import compose_config
    from evo.search.crossmut import CrossMut
    from evo.search.filter_eval import fitness
    from evo.search.prompt import Example
    from evo.search.repair import ClassStop

    cfg = compose_config(["experiment=demo", f"crossmut.samples_per_prompt={n}"])
    task = instantiate(cfg.task)
    cm = CrossMut(**OmegaConf.to_container(cfg.crossmut, resolve=True))
    examples = [Example(code=(ROOT / "seeds" / "mnist1d" / f"{p}.py").read_text(), num_params=SEED_METRICS[p][0],
                        val_accuracy=SEED_METRICS[p][1], child_id=i + 1) for i, p in enumerate(parents)]
    if cm.parent_order == "fittest_last":
        examples.sort(key=lambda e: fitness(e.num_params, e.val_accuracy))
    prompt, _ = cm.make_prompt(task, examples)
    stop = ClassStop(task.prefill, cm.rules(task))
    bad_words = [*cm.banned_words, *task.banned_words]
    return task, cm, prompt, stop, bad_words


@contextmanager
def token_budget(lm, max_new_tokens: int, fixed: bool):
    """Cap evo's generation at max_new_tokens; ``fixed``: also forbid stopping earlier (min_new_tokens)."""
    gc = lm.model.generation_config
    saved = (lm.max_new_tokens, gc.min_new_tokens)
    lm.max_new_tokens, gc.min_new_tokens = max_new_tokens, (max_new_tokens if fixed else None)
    try:
        yield
    finally:
        lm.max_new_tokens, gc.min_new_tokens = saved


def run_variant(name: str, lm, prompt: str, temps: list[float], seed: int, tokens: int, stop, bad_words,
                stop_tokens: int) -> dict:
    import torch
    n = len(temps)
    WRAPPER["seconds"], WRAPPER["calls"] = 0.0, 0
    extra: dict = {}
    if name == "evo_batched":
        with token_budget(lm, tokens, fixed=True):
            t0 = time.perf_counter()
            comps = lm.sample(prompt, temps, seed)
            seconds = time.perf_counter() - t0
        outs = [c.tokens_out for c in comps]
    elif name == "evo_sequential":
        with token_budget(lm, tokens, fixed=True):
            t0 = time.perf_counter()
            comps = [c for i, t in enumerate(temps) for c in lm.sample(prompt, [t], seed + i)]
            seconds = time.perf_counter() - t0
        outs = [c.tokens_out for c in comps]
    elif name == "raw_generate":
        pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
        t0 = time.perf_counter()
        enc = lm.tokenizer(prompt, return_tensors="pt")
        ids, mask = enc.input_ids.to(lm.device).repeat(n, 1), enc.attention_mask.to(lm.device).repeat(n, 1)
        torch.manual_seed(seed)
        with torch.no_grad():
            out = lm.model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=0.8, top_k=0,
                                    top_p=1.0, max_new_tokens=tokens, min_new_tokens=tokens, pad_token_id=pad)
        seconds = time.perf_counter() - t0
        outs = [out.shape[1] - ids.shape[1]] * n
    elif name == "evo_batched_classstop":
        with token_budget(lm, stop_tokens, fixed=False):
            t0 = time.perf_counter()
            comps = lm.sample(prompt, temps, seed, stop=stop, bad_words=bad_words)
            seconds = time.perf_counter() - t0
        outs = [c.tokens_out for c in comps]
        steps = max(outs)
        extra = {"max_new_tokens": stop_tokens, "tokens_out": outs,
                 "stop_reasons": dict(Counter(c.stop_reason for c in comps)),
                 "steps": steps, "kept_share_of_row_steps": round(sum(outs) / (n * max(steps, 1)), 3)}
    else:
        raise ValueError(name)
    if name != "evo_batched_classstop" and outs != [tokens] * n:
        raise SystemExit(f"{name}: rows generated {outs} tokens, not {tokens} each: the comparison would be unfair")
    return {"tokens": sum(outs), "seconds": seconds, "tokens_per_s": sum(outs) / seconds,
            "wrapper_s": WRAPPER["seconds"], "wrapper_calls": WRAPPER["calls"], **extra}


# name -> (decoder, shared_prefix, attention, head_vocab, grammar, as the search calls it)
DECODERS = {
    "generate": ("generate", True, "model", "full", False, False),
    "cached_plain": ("cached", False, "model", "full", False, False),
    "+shared_prefix": ("cached", True, "model", "full", False, False),
    "+grouped_attention": ("cached", False, "auto", "full", False, False),
    "cached": ("cached", True, "auto", "full", False, False),
    "cached_code_head": ("cached", True, "auto", "code", False, False),
    "generate_classstop": ("generate", True, "model", "full", False, True),
    "cached_classstop": ("cached", True, "auto", "full", False, True),
    "all_classstop": ("cached", True, "auto", "code", True, True),
}


def run_decoder(name: str, lm, task, prompt: str, temps: list[float], seed: int, tokens: int, stop, bad_words,
                stop_tokens: int) -> dict:
    decoder, shared, attention, head, grammar, searchlike = DECODERS[name]
    lm.decoder, lm.shared_prefix, lm.attention, lm.head_vocab = decoder, shared, attention, head
    extra = {"grammar": task.grammar()} if grammar else {}
    with token_budget(lm, stop_tokens if searchlike else tokens, fixed=not searchlike):
        t0 = time.perf_counter()
        comps = lm.sample(prompt, temps, seed, **({"stop": stop, "bad_words": bad_words} if searchlike else {}),
                          **extra)
        seconds = time.perf_counter() - t0
    outs = [c.tokens_out for c in comps]
    if not searchlike and outs != [tokens] * len(temps):
        raise SystemExit(f"{name}: rows generated {outs} tokens, not {tokens} each: the comparison would be unfair")
    res = {"tokens": sum(outs), "seconds": seconds, "tokens_per_s": sum(outs) / seconds,
           "samples_per_hour": 3600 * len(temps) / seconds}
    if searchlike:
        res.update(tokens_out=outs, stop_reasons=dict(Counter(c.stop_reason for c in comps)))
    return res


def decoders_main(args, lm) -> dict:
    entries = {}
    for n in args.n:
        task, cm, prompt, stop, bad_words = search_setup(n, args.parents)
        temps = cm.draw_temperatures(n, random.Random(args.seed))
        for name in DECODERS:   # warm-up (first-call costs; the head slice and the grammar tokenizer are built here)
            run_decoder(name, lm, task, prompt, temps[:2], args.seed, 2, stop, bad_words, 4)
        runs = {name: [] for name in DECODERS}
        t_start = time.time()
        for rep in range(args.repeats):
            for name in DECODERS:
                res = run_decoder(name, lm, task, prompt, temps, args.seed + rep, args.max_new_tokens, stop,
                                  bad_words, args.stop_max_new_tokens)
                runs[name].append(res)
                print(f"n={n} rep {rep + 1}/{args.repeats} {name:20s} {res['tokens']:5d} tokens "
                      f"{res['seconds']:7.2f} s {res['tokens_per_s']:7.2f} tokens/s", flush=True)
        summary = {}
        for name, rs in runs.items():
            base = "generate_classstop" if DECODERS[name][5] else "generate"
            per_rep = [a["seconds"] and (b["seconds"] / a["seconds"]) for a, b in zip(rs, runs[base])]
            summary[name] = {"tokens_median": med([r["tokens"] for r in rs]),
                             "seconds_median": round(med([r["seconds"] for r in rs]), 3),
                             "tokens_per_s_median": round(med([r["tokens_per_s"] for r in rs]), 2),
                             "samples_per_hour_median": round(med([r["samples_per_hour"] for r in rs]), 1),
                             f"speedup_over_{base}": round(med(per_rep), 3),
                             "speedup_per_repetition": [round(x, 3) for x in per_rep]}
            if DECODERS[name][5]:
                summary[name]["stop_reasons"] = rs[-1]["stop_reasons"]
        entries[f"decoders_n{n}"] = {"n": n, "max_new_tokens": args.max_new_tokens,
                                     "stop_max_new_tokens": args.stop_max_new_tokens, "repeats": args.repeats,
                                     "temperatures": temps, "variants": summary,
                                     "speedup": "median over repetitions of generate's seconds / the variant's seconds "
                                                "(same rows and tokens; the classstop variants: same prompt, seeds "
                                                "and cap, each row stops at its own point)",
                                     "wall_s": round(time.time() - t_start, 1), "date": time.strftime("%Y-%m-%d %H:%M"),
                                     "load": "taken while other jobs shared the 2 cores (load average "
                                             f"{os.getloadavg()[0]:.1f} at the end)"}
        print("\n| variant | tokens/s | samples/hour | speed-up |\n|---|---:|---:|---:|")
        for name, v in summary.items():
            key = next(k for k in v if k.startswith("speedup_over_"))
            print(f"| {name} | {v['tokens_per_s_median']} | {v['samples_per_hour_median']} | {v[key]}x |")
    return entries


def prefill_seconds(lm, prompt: str, rows: int) -> float:
    import torch
    enc = lm.tokenizer(prompt, return_tensors="pt")
    ids = enc.input_ids.to(lm.device).repeat(rows, 1)
    t0 = time.perf_counter()
    with torch.no_grad():
        lm.model(input_ids=ids, attention_mask=torch.ones_like(ids), logits_to_keep=1)
    return time.perf_counter() - t0


def med(values):
    return statistics.median(values)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="packaged:gemma3-270m")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--n", type=int, nargs="+", default=[8], help="samples per prompt (rows); several: one entry each")
    ap.add_argument("--max-new-tokens", type=int, default=64, help="tokens per row in the equal-work variants")
    ap.add_argument("--stop-max-new-tokens", type=int, default=160,
                    help="token cap of the informational ClassStop variant (the search's lm.max_new_tokens)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--parents", nargs=2, default=["gru", "cnn"], choices=sorted(SEED_METRICS))
    ap.add_argument("--no-classstop", action="store_true", help="skip the informational ClassStop variant")
    ap.add_argument("--decoders", action="store_true", help="compare the samplers of issue 14 (see above)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sampling_speed.json"))
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import torch
    import transformers

    from evo.lm import hf
    from evo.lm.hf import HFCausalLM

    torch.set_num_threads(args.threads)
    hf._PerRowStop.__call__ = _timed(hf._PerRowStop.__call__)
    hf._PerRowTemperature.__call__ = _timed(hf._PerRowTemperature.__call__)
    lm = HFCausalLM(args.model, dtype=args.dtype, threads=args.threads, max_new_tokens=args.max_new_tokens)
    lm.max_batch_size = max(lm.max_batch_size, *args.n)   # one batch of n rows, whatever n
    print(f"loaded {args.model} in {lm.load_seconds:.1f} s ({lm.dtype}, {torch.get_num_threads()} thread(s))", flush=True)
    if args.decoders:
        out = pathlib.Path(args.out)
        payload = json.loads(out.read_text()) if out.exists() else {"results": {}}
        payload["results"].update(decoders_main(args, lm))
        out.write_text(json.dumps(payload, indent=1) + "\n")
        print(f"\nwrote {out}")
        return

    variants = ["evo_batched", "evo_sequential", "raw_generate"] + ([] if args.no_classstop else ["evo_batched_classstop"])
    entries = {}
    for n in args.n:
        task, cm, prompt, stop, bad_words = search_setup(n, args.parents)
        temps = cm.draw_temperatures(n, random.Random(args.seed))
        prompt_tokens = len(lm.tokenizer(prompt).input_ids)
        for name in variants:   # warm-up: first-call costs (allocations, lazy inits) out of the timings
            run_variant(name, lm, prompt, temps[:2], args.seed, 2, stop, bad_words, 2)
        runs = {name: [] for name in variants}
        anatomy_runs = {"prefill_1_row_s": [], f"prefill_{n}_rows_s": []}
        t_start = time.time()
        for rep in range(args.repeats):
            for name in variants:
                res = run_variant(name, lm, prompt, temps, args.seed, args.max_new_tokens, stop, bad_words,
                                  args.stop_max_new_tokens)
                runs[name].append(res)
                print(f"n={n} rep {rep + 1}/{args.repeats} {name:22s} {res['tokens']:5d} tokens "
                      f"{res['seconds']:7.2f} s {res['tokens_per_s']:7.2f} tokens/s", flush=True)
            anatomy_runs["prefill_1_row_s"].append(prefill_seconds(lm, prompt, 1))
            anatomy_runs[f"prefill_{n}_rows_s"].append(prefill_seconds(lm, prompt, n))

        summary = {}
        for name, rs in runs.items():
            summary[name] = {"tokens": rs[0]["tokens"], "seconds_median": round(med([r["seconds"] for r in rs]), 3),
                             "tokens_per_s_median": round(med([r["tokens_per_s"] for r in rs]), 3),
                             "tokens_per_s_all": [round(r["tokens_per_s"], 3) for r in rs],
                             "wrapper_s_median": round(med([r["wrapper_s"] for r in rs]), 4),
                             "wrapper_share_of_wall": round(med([r["wrapper_s"] / r["seconds"] for r in rs]), 5)}
            summary[name].update({k: v for k, v in rs[0].items()
                                  if k in ("max_new_tokens", "tokens_out", "stop_reasons", "steps", "kept_share_of_row_steps")})
        ratios = {}
        for key, (num, den) in {"batched_over_sequential": ("evo_batched", "evo_sequential"),
                                "batched_over_raw": ("evo_batched", "raw_generate")}.items():
            per_rep = [a["tokens_per_s"] / b["tokens_per_s"] for a, b in zip(runs[num], runs[den])]
            value = med(per_rep)
            ratios[key] = {"value": round(value, 3), "per_repetition": [round(r, 3) for r in per_rep],
                           "goal": GOALS[key], "pass": value >= GOALS[key]}
        p1, pn = med(anatomy_runs["prefill_1_row_s"]), med(anatomy_runs[f"prefill_{n}_rows_s"])
        T = args.max_new_tokens
        batched_s, seq_s = summary["evo_batched"]["seconds_median"], summary["evo_sequential"]["seconds_median"]
        anatomy = {"prefill_1_row_s": round(p1, 3), f"prefill_{n}_rows_s": round(pn, 3),
                   "prefill_share_batched": round(pn / batched_s, 3),
                   "prefill_share_sequential": round(n * p1 / seq_s, 3),
                   "decode_step_1_row_s": round((seq_s / n - p1) / T, 4),
                   f"decode_step_{n}_rows_s": round((batched_s - pn) / T, 4)}
        anatomy["decode_step_cost_ratio"] = round(anatomy[f"decode_step_{n}_rows_s"] / anatomy["decode_step_1_row_s"], 2)
        entries[str(n)] = {"n": n, "prompt_tokens": prompt_tokens, "temperatures": temps,
                           "max_new_tokens": T, "repeats": args.repeats, "variants": summary, "ratios": ratios,
                           "anatomy": anatomy, "wall_s": round(time.time() - t_start, 1),
                           "date": time.strftime("%Y-%m-%d %H:%M")}

    out = pathlib.Path(args.out)
    earlier = json.loads(out.read_text()).get("results", {}) if out.exists() else {}
    result = {
        "protocol": {"model": args.model, "dtype": str(lm.dtype), "threads": args.threads,
                     "parents": args.parents, "parent_order": "fittest_last", "temperatures": [0.6, 0.8, 1.0],
                     "raw_generate_temperature": 0.8, "top_k": 0, "top_p": 1.0, "seed": args.seed,
                     "equal_work": "stop=None and min_new_tokens=max_new_tokens in evo_batched, evo_sequential and "
                                   "raw_generate: every row generates exactly max_new_tokens tokens (checked)",
                     "tokens_per_s": "sum of generated tokens over the batch / wall seconds of the call(s), "
                                     "prompt tokenisation and prefill included",
                     "ratios": "median of per-repetition ratios; variants interleaved within each repetition",
                     "goals": GOALS},
        "results": {**earlier, **entries},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "python": platform.python_version()},
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores visible",
        "date": time.strftime("%Y-%m-%d"),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")

    for n_key, e in entries.items():
        print(f"\nn={e['n']}, {e['max_new_tokens']} tokens per row, prompt {e['prompt_tokens']} tokens, "
              f"{e['repeats']} repetitions (medians):\n")
        print("| variant | tokens | seconds | tokens/s | in evo's hooks |\n|---|---:|---:|---:|---:|")
        for name, s in e["variants"].items():
            print(f"| {name} | {s['tokens']} | {s['seconds_median']:.2f} | {s['tokens_per_s_median']:.2f} | "
                  f"{100 * s['wrapper_share_of_wall']:.2f}% |")
        for key, r in e["ratios"].items():
            print(f"{key}: {r['value']:.2f}x (goal >= {r['goal']}x: {'PASS' if r['pass'] else 'FAIL'}) "
                  f"per repetition {r['per_repetition']}")
        print("anatomy:", json.dumps(e["anatomy"]))
        if "evo_batched_classstop" in e["variants"]:
            s = e["variants"]["evo_batched_classstop"]
            print(f"ClassStop (cap {s['max_new_tokens']}): tokens_out {s['tokens_out']}, {s['steps']} steps, "
                  f"stop reasons {s['stop_reasons']}, kept {100 * s['kept_share_of_row_steps']:.0f}% of row-steps")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()

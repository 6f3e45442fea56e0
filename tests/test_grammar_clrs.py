"""The CLRS child grammar (evo/tasks/clrs/grammar.py) through llguidance, the library the sampler
enforces it with: it accepts the nine seeds, refuses invented keywords, modules and undefined names,
its keywords are the installed Haiku's, and constrained sampling writes only text it accepts (the tiny
real LM through the operator; Gemma-3-270M through a real CLRS search, slow)."""

from __future__ import annotations

import ast
import inspect
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from evo.lm.hf import HFCausalLM
from evo.search.crossmut import CrossMut
from evo.search.prompt import Example, normalise_entry
from evo.tasks.clrs.grammar import MODULES, lark_grammar
from evo.tasks.clrs.task import PREFILL, CLRSTask
from grammar_check import grammar_accepts
from runs import REPO, rows

SEEDS = REPO / "seeds" / "clrs"


@pytest.fixture(scope="module")
def tiny(tiny_lm_dir):
    return HFCausalLM(str(tiny_lm_dir), max_new_tokens=120)


def accepts(lm, text: str) -> bool:
    return grammar_accepts(lm, lark_grammar(), text)


def body(code: str) -> str:
    """What the LM writes after the prefill, for a program as the prompt shows it."""
    text = normalise_entry(code, "get_triplet_msgs")
    assert text.startswith(PREFILL)
    return text[len(PREFILL):] + "\n"


@pytest.mark.parametrize("seed", sorted(p.stem for p in SEEDS.glob("*.py")))
def test_grammar_accepts_every_seed(tiny, seed):
    assert accepts(tiny, body((SEEDS / f"{seed}.py").read_text()))


def test_grammar_rejects_invented_keywords_modules_and_names(tiny):
    v1, v8 = body((SEEDS / "v1.py").read_text()), body((SEEDS / "v8.py").read_text())
    first = "hk.Linear(nb_triplet_fts)(z)"
    assert accepts(tiny, v1.replace(first, "hk.Linear(nb_triplet_fts, with_bias=False)(z)", 1))   # a real keyword
    assert not accepts(tiny, v1.replace(first, "hk.Linear(nb_triplet_fts, in_dim=3)(z)", 1))      # no such keyword
    assert not accepts(tiny, v1.replace(first, "hk.Linear(nb_triplet_fts, with_bias=True, with_bias=False)(z)", 1))
    assert not accepts(tiny, v1.replace("hk.Linear(nb_triplet_fts)(edge_fts)", "hk.Conv1d(nb_triplet_fts)(edge_fts)", 1))
    assert not accepts(tiny, v8.replace("jnp.tile(", "jnp.tiles("))                              # no such function
    # names read before they are assigned: tri_2 in a body that defines only tri_1, tri_g before its line
    assert not accepts(tiny, v8.replace("jnp.expand_dims(tri_1", "jnp.expand_dims(tri_2"))
    undefined = v1.replace("tri_e_1 = hk.Linear(nb_triplet_fts)(edge_fts)", "tri_e_1 = hk.Linear(nb_triplet_fts)(tri_g)")
    assert undefined != v1 and not accepts(tiny, undefined)
    assert not accepts(tiny, v8.replace("tri_1", "in_planes"))
    assert not accepts(tiny, v8.split("    return")[0])                                          # no return
    # every line introduces the next name; only triplets is reassigned (a reassigned representation is
    # how unconstrained-by-order samples ran in cycles to the token cap)
    tail = "    return hk.Linear(out_size)(jnp.max(triplets, axis=1))\n"
    assert not accepts(tiny, v1.replace(tail, "    tri_1 = jax.nn.relu(tri_1)\n" + tail))
    assert accepts(tiny, v1.replace(tail, "    triplets = jax.nn.relu(triplets)\n" + tail))
    # what the grammar allows beyond the seeds: other Haiku modules and keywords, None-indexing
    assert accepts(tiny, v8.replace("hk.Linear(out_size)(z)", "hk.LayerNorm(axis=-1, create_scale=True, "
                                    "create_offset=True)(hk.nets.MLP([out_size, out_size], activation=jax.nn.gelu)(z))"))
    assert accepts(tiny, v8.replace("jnp.expand_dims(tri_1, axis=1)", "tri_1[:, None]"))


def test_module_keywords_are_the_installed_signatures():
    import haiku as hk
    grammar = lark_grammar()
    for path in MODULES:
        cls = hk
        for attr in path.split("."):
            cls = getattr(cls, attr)
        line = next(l for l in grammar.splitlines() if l.startswith(path.split(".")[-1].lower() + ":"))
        written = set(re.findall(r'"(?:, )?([a-z_]+)="', line))
        assert written and written <= set(inspect.signature(cls).parameters), (path, written)
    assert '"output_size="' in grammar and '", create_scale="' in grammar


def test_constrained_sampling_writes_only_the_grammar(tiny):
    """The tiny LM knows Flax, not Haiku: whatever it would write, the grammar keeps it to the body language."""
    task = CLRSTask()
    op = CrossMut(samples_per_prompt=6, constrain="grammar", max_body_lines=40)
    seeds = task.seed_programs()
    parents = [Example(code=seeds["v8"], num_params=9043, val_accuracy=0.9),
               Example(code=seeds["v1"], num_params=9995, val_accuracy=0.92)]
    prompt, _ = op.make_prompt(task, parents)
    samples = op.sample(tiny, task, prompt, [0.6, 0.8, 1.0, 1.0, 1.2, 1.5], seed=0)
    for s in samples:
        assert s.repairs[0] == "constrained:grammar"
        text = s.completion.text
        if s.completion.stop_reason in ("rule", "grammar"):   # ended at its return line
            assert accepts(tiny, text), text
        else:   # cut at the token cap: still a prefix the grammar can continue
            matcher = tiny._matcher(lark_grammar())
            assert matcher.consume_tokens(tiny.tokenizer(text, add_special_tokens=False).input_ids), text
        ast.parse(s.code)   # every constrained sample is a program (after the usual repairs)


@pytest.mark.slow
def test_gemma_clrs_search_under_the_grammar(tmp_path):
    """A real CLRS search round with the default operator (Gemma-3-270M, offline) and crossmut.constrain=grammar:
    every child's row records the constraint, and each body that ended at its return line is one the grammar
    accepts. One short seed (v8, two lines) keeps the samples short and the run cheap (~3-5 min here, most of it
    the seed's training compile)."""
    from test_clrs_search import TINY_CLRS
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    v8 = (SEEDS / "v8.py").read_text()
    (seeds / "v8.py").write_text(v8)
    run_dir = tmp_path / "run"
    settings = ("lm.max_new_tokens=60", "search.rounds=1", "search.prompts_per_round=1", "crossmut.samples_per_prompt=2",
                "crossmut.constrain=grammar", "search.alpha=1.0", "selection.survivors=2", "progress=false")
    # lm.cache_dir: where HFCausalLM's default (and so the matcher below) keeps Gemma converted from its GGUF, once per
    # machine (~45 s), instead of converting it again into this test's fresh cache_dir
    cmd = [sys.executable, "-m", "evo.run", "lm=gemma270m", *settings, *TINY_CLRS, f"task.seeds_dir={seeds}",
           f"hydra.run.dir={run_dir}", f"cache_dir={tmp_path / 'cache'}", f"lm.cache_dir={Path.home() / '.cache' / 'evo'}"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    said = proc.stdout + proc.stderr + (run_dir / "run.log").read_text()
    assert "samples are unconstrained" not in said   # CLRS declares its grammar now
    children = rows(run_dir, "SELECT code, repairs, stop_reason FROM children WHERE round = 0")
    assert len(children) == 2
    lm = HFCausalLM("packaged:gemma3-270m", max_new_tokens=1)   # its tokenizer, for the matcher
    for c in children:
        assert json.loads(c["repairs"])[0] == "constrained:grammar"
        if c["stop_reason"] in ("rule", "grammar"):   # ended at its return line (the stop rule sees it first)
            assert accepts(lm, body(c["code"])), c["code"]
    assert any(c["stop_reason"] in ("rule", "grammar") for c in children)


def test_a_return_line_cut_at_the_token_cap_is_dropped_and_closed():
    """A constrained sample cut at the cap is a valid prefix, often of its return line: that line is
    incomplete like any cut-off line, so it is dropped and the body closed with the task's return."""
    from evo.search.repair import finish
    from evo.search.program import check_static
    task = CLRSTask()
    rules = CrossMut().rules(task)
    text = " hk.Linear(nb_triplet_fts)(z)\n    return jnp.abs(((jnp.max(tri_1"
    code, repairs = finish(task.prelude, task.prefill, text, rules, task.closing_return, task.entry)
    assert "dropped_cutoff_line" in repairs and "closed_with_return" in repairs
    assert check_static(code, task.allowed_imports, task.entry) is None
    assert code.rstrip().endswith(task.closing_return) and "jnp.abs" not in code
    complete = " hk.Linear(out_size)(z)\n    return jnp.tile(jnp.expand_dims(tri_1, axis=1), (1, z.shape[1], 1, 1))"
    code, repairs = finish(task.prelude, task.prefill, complete, rules, task.closing_return, task.entry)
    assert repairs == [] and "jnp.tile" in code   # a complete last return line (eos after it) is kept


def test_a_task_without_a_grammar_is_said_once_and_sampled_unconstrained(tiny, caplog):
    """Both model tasks declare one now; NAS-Bench-Graph's class text does not (yet): the operator says so once."""
    import logging
    from evo.tasks.nas_bench_graph.task import NASBenchGraphTask
    op = CrossMut(constrain="grammar")
    assert op.grammar_for(tiny, CLRSTask()) == lark_grammar()
    with caplog.at_level(logging.WARNING, logger="evo.search.crossmut"):
        assert op.grammar_for(tiny, NASBenchGraphTask()) is None
        assert op.grammar_for(tiny, NASBenchGraphTask()) is None
    said = [r.getMessage() for r in caplog.records if "samples are unconstrained" in r.getMessage()]
    assert said == ["crossmut.constrain=grammar, but task nas_bench_graph declares no grammar: samples are unconstrained"]

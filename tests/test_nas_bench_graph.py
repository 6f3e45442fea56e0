"""task=nas_bench_graph (the NAS-Bench-Graph tables of the nas-bench-graph package): rendering, parsing,
lookup, bad input, a real search, the structural encodings and BANANAS."""

from __future__ import annotations

import ast
import random
import subprocess
import sys
from types import SimpleNamespace

import pytest

from evo import outcome
from runs import REPO, rows, search_cmd

nbg = pytest.importorskip("nas_bench_graph", reason="pip install nas-bench-graph (scripts/setup.sh installs it)")

from evo.config import ConfigError, validate  # noqa: E402
from evo.tasks.nas_bench_graph import render as rnd  # noqa: E402
from evo.tasks.nas_bench_graph.space import Architecture, SpaceError, lookup, space, table  # noqa: E402

FINAL = {*outcome.WORKING, *outcome.FAILED, outcome.DUPLICATE}   # every status a search leaves on a sampled child

# a chain, two branches, a fan-out from node 1, and every operation at least once
EXAMPLES = [Architecture((0, 1, 2, 3), ("gcn", "gat", "gin", "cheb")),
            Architecture((0, 0, 1, 2), ("sage", "arma", "graph", "fc")),
            Architecture((0, 1, 1, 1), ("skip", "gcn", "sage", "gat")),
            Architecture((0, 0, 0, 0), ("gin", "cheb", "fc", "graph"))]


class Sym:
    """A stand-in layer for running a rendered ``forward`` symbolically: it returns the expression it
    computes, so the returned value spells out the DAG the text really follows."""

    def __init__(self, op):
        self.op = op

    def __call__(self, h, *graph):
        return f"{self.op}({h})"


def run_symbolically(code: str) -> str:
    """Execute the rendered class (not its imports: torch_geometric is not installed here) with every
    layer class bound to a Sym factory; return forward('x', 'E')."""
    layer = {cls: (lambda op: (lambda *a, **k: Sym(op)))(op) for cls, op in rnd.CLASS_TO_OP.items()}
    nn = SimpleNamespace(Module=object, Sequential=lambda *a: None, ReLU=lambda: None,
                         Linear=lambda *a, **k: Sym("fc"), Identity=lambda: Sym("skip"))
    namespace = {"torch": SimpleNamespace(nn=nn), **{k: v for k, v in layer.items() if k not in ("Linear", "Identity")}}
    body = code.split("\n\n\n", 1)[1]
    exec(compile(body, "rendered.py", "exec"), namespace)
    model = namespace["Model"].__new__(namespace["Model"])
    namespace["Model"].__init__(model, 64)
    return model.forward("x", "E")


@pytest.mark.parametrize("arch", EXAMPLES, ids=lambda a: "-".join(a.ops))
def test_rendered_class_is_python_that_names_every_op_and_follows_the_dag(arch):
    code = rnd.render(arch)
    compile(code, "child.py", "exec")
    tree = ast.parse(code)
    called = {n.func.id if isinstance(n.func, ast.Name) else n.func.attr for n in ast.walk(tree) if isinstance(n, ast.Call)}
    for op in arch.ops:
        assert rnd.LAYERS[op].split("(")[0].split(".")[-1] in called
    # run the text: the forward's output is the sum of the leaves, each the DAG's path from the input
    node = []
    for src, op in zip(arch.link, arch.ops):
        node.append(f"{op}({'x' if src == 0 else node[src - 1]})")
    assert run_symbolically(code) == "".join(node[i] for i in arch.leaves())
    assert rnd.parse(code) == arch


def test_parse_reads_back_every_listing_and_other_spellings():
    rng = random.Random(0)
    archs = rng.sample(space("cora"), 1500)
    assert all(rnd.parse(rnd.render(a)) == a for a in archs)
    # the LM's spelling: other names, nn.Linear, the input reassigned, the leaves summed in another order
    text = ("import torch\nfrom torch import nn\nfrom torch_geometric.nn import GCNConv, SAGEConv\n\n\n"
            "class Model(nn.Module):\n    def __init__(self, dim):\n        super().__init__()\n"
            "        self.a = GCNConv(dim, dim)\n        self.b = nn.Linear(dim, dim)\n"
            "        self.c = SAGEConv(dim, 32)\n        self.d = nn.Identity()\n\n"
            "    def forward(self, feats, edge_index):\n        x = self.a(feats, edge_index)\n"
            "        y = self.b(feats)\n        x = self.c(x, edge_index)\n        z = self.d(y)\n"
            "        return x + z\n")
    assert rnd.parse(text) == Architecture((0, 0, 1, 2), ("gcn", "fc", "sage", "skip"))


@pytest.mark.parametrize("change, why", [
    (("self.node2 = GATConv(dim, dim // 2, heads=2)", "self.node2 = torch.nn.Conv1d(dim, dim, 3)"), "not an operation"),
    (("h2 = self.node2(h1, edge_index)", "h2 = self.node1(h1, edge_index)"), "runs twice"),
    (("        return h4", "        return h3 + h4"), "sum of the leaves"),
    (("        h4 = self.node4(h3, edge_index)\n", ""), "4 nodes"),
    (("h2 = self.node2(h1, edge_index)", "h2 = torch.relu(self.node2(h1, edge_index))"), "only runs layers"),
    (("h3 = self.node3(h2, edge_index)", "h3 = self.node3(h9, edge_index)"), "earlier node"),
])
def test_a_class_outside_the_space_is_refused_with_its_reason(change, why):
    code = rnd.render(EXAMPLES[0])
    assert change[0] in code
    with pytest.raises(SpaceError, match=why):
        rnd.parse(code.replace(*change))


def test_lookup_agrees_with_the_package_table():
    assert len(space("cora")) == 26206 and len(space("proteins")) == 2021
    rng = random.Random(1)
    for dataset in ("cora", "pubmed", "proteins"):
        bench = nbg.light_read(dataset)
        for arch in rng.sample(space(dataset), 50):
            # the package's own canonical hash of its all_archs() listing, not our lookup path
            row = bench[nbg.Arch(list(arch.link), list(arch.ops)).hash_arch()]
            rec = lookup(arch, dataset)
            assert (rec.val_accuracy, rec.test_accuracy) == (row["valid_perf"], row["perf"])
            assert rec.num_params == round(row["para"] * 1e6)
    # another listing of one network (its two branches swapped) is the same table row
    a, b = Architecture((0, 0, 1, 2), ("gcn", "sage", "gat", "fc")), Architecture((0, 0, 2, 1), ("sage", "gcn", "gat", "fc"))
    assert a.key() == b.key() and lookup(a, "cora") == lookup(b, "cora")
    with pytest.raises(SpaceError, match="not in the proteins table"):
        lookup(Architecture((0, 1, 2, 3), ("gat", "gat", "gat", "gat")), "proteins")


def test_bad_input_fails_before_compute(cfg_factory):
    cfg = cfg_factory("task=nas_bench_graph", "task.dataset=corra")
    with pytest.raises(ConfigError, match=r"task\.dataset") as err:
        validate(cfg, needs_lm=False)
    assert "cora" in str(err.value) and "Fix:" in str(err.value)
    with pytest.raises(SpaceError, match="cell input or an earlier node"):
        Architecture((0, 2, 1, 3), ("gcn",) * 4).check()
    with pytest.raises(SpaceError, match="all four operations are skip"):
        Architecture((0, 1, 2, 3), ("skip",) * 4).key()
    # the package missing: the same check in a process where importing it fails
    probe = ("import sys; sys.modules['nas_bench_graph'] = None\n"
             "from evo.config import compose_config, validate, ConfigError\n"
             "try:\n    validate(compose_config(['task=nas_bench_graph']), needs_lm=False)\n"
             "except ConfigError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120).stdout
    assert "pip install nas-bench-graph" in out and "Fix:" in out


@pytest.mark.slow
def test_search_looks_children_up_and_records_one_outside_the_space(tmp_path, tiny_lm_dir):
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    inside = [EXAMPLES[0], EXAMPLES[1]]
    for i, arch in enumerate(inside):
        (seeds / f"in{i}.py").write_text(rnd.render(arch))
    (seeds / "shared.py").write_text(rnd.render(EXAMPLES[0]).replace("self.node2(h1", "self.node1(h1"))
    run_dir = tmp_path / "run"
    cmd = search_cmd(run_dir, tiny_lm_dir, tmp_path / "cache", "task=nas_bench_graph", "task.dataset=citeseer",
                     f"task.seeds_dir={seeds}", "search.rounds=1", "search.prompts_per_round=1",
                     "crossmut.samples_per_prompt=2", "lm.max_new_tokens=40", "selection.survivors=2", "progress=false",
                     settings=())
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seed_rows = {r["code"]: r for r in rows(run_dir, "SELECT * FROM children WHERE round = -1")}
    for arch in inside:
        row, rec = seed_rows[rnd.render(arch)], lookup(arch, "citeseer")
        assert row["status"] == "ok" and (row["num_params"], row["val_accuracy"]) == (rec.num_params, rec.val_accuracy)
    shared = [r for r in seed_rows.values() if "self.node1(h1" in r["code"]][0]
    assert shared["status"] == "build_error" and "runs twice" in shared["reason"]
    children = rows(run_dir, "SELECT * FROM children WHERE round = 0")
    assert len(children) == 2, children   # crossmut.samples_per_prompt=2
    for c in children:   # each has its final status and says why; a looked-up one names the table
        assert c["status"] in FINAL and c["reason"], c
        assert c["status"] not in outcome.WORKING or "NAS-Bench-Graph table" in c["reason"], c
    prompt = rows(run_dir, "SELECT prompt FROM prompts")[0]["prompt"]
    assert prompt.endswith("self.node1 =") and "torch_geometric" in prompt


# ---------------------------------------------------------------- encodings and BANANAS

def test_path_encoding_of_isomorphic_listings_is_equal():
    from evo.tasks.nas_bench_graph.encodings import adjacency_encoding, path_encoding
    a = Architecture((0, 0, 1, 2), ("gcn", "sage", "gat", "fc"))
    b = Architecture((0, 0, 2, 1), ("sage", "gcn", "gat", "fc"))     # the same network, branches listed swapped
    assert a.key() == b.key()
    assert (path_encoding(a) == path_encoding(b)).all() and path_encoding(a).sum() == 2   # two paths: gcn-gat, sage-fc
    assert not (adjacency_encoding(a) == adjacency_encoding(b)).all()   # the adjacency encoding sees the listing
    c = Architecture((0, 0, 1, 2), ("gcn", "sage", "fc", "gat"))     # another network: gcn-fc, sage-gat
    assert a.key() != c.key() and not (path_encoding(a) == path_encoding(c)).all()
    # over many random listings: equal keys give equal path encodings
    rng = random.Random(2)
    for arch in rng.sample(space("cora"), 200):
        for other in _relistings(arch, rng):
            assert other.key() == arch.key() and (path_encoding(other) == path_encoding(arch)).all()


def _relistings(arch, rng, count=3):
    """Other listings of ``arch``: its nodes renumbered in another order that keeps every node after its input."""
    out = []
    for _ in range(20):
        order, placed = [], set()
        while len(order) < 4:   # a random topological order of the 4 nodes
            ready = [i for i in range(4) if i not in placed and (arch.link[i] == 0 or arch.link[i] - 1 in placed)]
            pick = rng.choice(ready)
            order.append(pick)
            placed.add(pick)
        new = {old: k for k, old in enumerate(order)}
        link = tuple(0 if arch.link[old] == 0 else new[arch.link[old] - 1] + 1 for old in order)
        out.append(Architecture(link, tuple(arch.ops[old] for old in order)))
        if len(out) == count:
            break
    return out


def test_bananas_with_an_oracle_beats_random_search_and_with_a_shuffled_predictor_does_not():
    import numpy as np
    from evo.tasks.nas_bench_graph.bananas import Oracle, bananas, evaluations_to_reach, neighbour_table, random_search
    from evo.tasks.nas_bench_graph.space import arrays
    rng = np.random.default_rng(0)
    archs = [space("citeseer")[i] for i in rng.permutation(26206)[:300]]   # a small search set
    _, val, _ = arrays("citeseer", archs)
    near, best, encode = neighbour_table(archs), val.max(), (lambda idx: np.asarray(idx)[:, None])
    found = {"oracle": [], "shuffled": [], "random": []}
    for seed in range(60):   # 60 seeds: the means' noise is ~0.1 of random's, the margins below are ~3x that
        # a predictor that knows the values of other networks: a new permutation per seed, so on average it
        # knows nothing (one fixed permutation would be a fixed lucky or unlucky order)
        shuffled_values = val[np.random.default_rng(1000 + seed).permutation(len(val))]
        found["oracle"].append(evaluations_to_reach(bananas(val, encode, near, 300, seed, lambda s: Oracle(val)).values, best))
        found["shuffled"].append(evaluations_to_reach(
            bananas(val, encode, near, 300, seed, lambda s: Oracle(shuffled_values)).values, best))
        found["random"].append(evaluations_to_reach(random_search(val, 300, seed).values, best))
    mean = {k: float(np.mean(v)) for k, v in found.items()}   # the best is always found within the whole set
    assert mean["oracle"] < 0.4 * mean["random"], mean
    assert mean["shuffled"] > 0.7 * mean["random"], mean


def test_mlp_ensemble_learns_a_ranking_from_path_encodings():
    import numpy as np
    from scipy.stats import kendalltau
    from evo.tasks.nas_bench_graph.bananas import MLPEnsemble
    from evo.tasks.nas_bench_graph.encodings import structural
    from evo.tasks.nas_bench_graph.space import arrays
    archs = [space("cora")[i] for i in np.random.default_rng(3).permutation(26206)[:700]]
    _, val, _ = arrays("cora", archs)
    X = structural("path", archs)
    X = X[:, X.std(0) > 0]
    head = MLPEnsemble(seed=0).fit(X[:200], val[:200])
    members = head.predict_members(X[200:])
    assert members.shape == (5, 500) and members.std(0).mean() > 0    # members disagree: ITS has a spread
    assert kendalltau(head.predict(X[200:]), val[200:])[0] > 0.2      # and they rank unseen networks

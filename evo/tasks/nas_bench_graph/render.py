"""An architecture as the class definition COLE embeds and the LM writes, and a class text back.

``render`` writes a PyTorch Geometric-style ``Model``: one layer per node in ``__init__`` (named
``node1``..``node4``, in the order ``forward`` runs them) and a ``forward`` that follows the DAG and
returns the sum of the leaves (the nodes no other node reads). ``parse`` reads such a text with
``ast`` (never running it) and returns the ``Architecture``, or raises ``SpaceError`` naming what is
outside the space: the text is generated, untrusted, and the task only ever looks it up.

The rendering describes the benchmark's networks; it is not the authors' training code: their hidden
size, dropout, pre/post-processing layers and activations are not in the text (they are the same for
every architecture of a table, so they do not help to rank them).
"""

from __future__ import annotations

import ast

from evo.tasks.nas_bench_graph.space import NODES, Architecture, SpaceError

PRELUDE = ("import torch\n"
           "from torch_geometric.nn import ARMAConv, ChebConv, GATConv, GCNConv, GINConv, GraphConv, SAGEConv")
ENTRY = "Model"

# operation -> the layer that builds it (the package's notes: gat has 2 heads, graph is k-GNN's GraphConv)
LAYERS = {
    "gat": "GATConv(dim, dim // 2, heads=2)",
    "gcn": "GCNConv(dim, dim)",
    "gin": "GINConv(torch.nn.Sequential(torch.nn.Linear(dim, dim), torch.nn.ReLU(), torch.nn.Linear(dim, dim)))",
    "cheb": "ChebConv(dim, dim, K=2)",
    "sage": "SAGEConv(dim, dim)",
    "arma": "ARMAConv(dim, dim)",
    "graph": "GraphConv(dim, dim)",
    "fc": "torch.nn.Linear(dim, dim)",
    "skip": "torch.nn.Identity()",
}
# the class a layer's constructor names -> operation (how ``parse`` reads a layer back)
CLASS_TO_OP = {text.split("(")[0].split(".")[-1]: op for op, text in LAYERS.items()}
NEEDS_GRAPH = {op for op in LAYERS if op not in ("fc", "skip")}   # message passing reads edge_index


def render(arch: Architecture) -> str:
    """The full program text of ``arch`` (prelude and class)."""
    arch.check()
    lines = [PRELUDE, "", "", f"class {ENTRY}(torch.nn.Module):", "    def __init__(self, dim):",
             "        super().__init__()"]
    lines += [f"        self.node{i + 1} = {LAYERS[op]}" for i, op in enumerate(arch.ops)]
    lines += ["", "    def forward(self, x, edge_index):"]
    for i, (src, op) in enumerate(zip(arch.link, arch.ops)):
        inp = "x" if src == 0 else f"h{src}"
        args = f"{inp}, edge_index" if op in NEEDS_GRAPH else inp
        lines.append(f"        h{i + 1} = self.node{i + 1}({args})")
    lines.append("        return " + " + ".join(f"h{i + 1}" for i in arch.leaves()))
    return "\n".join(lines) + "\n"


def _class_name(call: ast.expr) -> str:
    func = call.func if isinstance(call, ast.Call) else None
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return ""


def _summands(node: ast.expr) -> list:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _summands(node.left) + _summands(node.right)
    return [node]


def parse(code: str) -> Architecture:
    """The architecture a ``Model`` class text describes. Raises SpaceError (with the line) when the
    text is not a network of the space: layers other than the space's operations, a layer used twice
    (shared weights), other statements in ``forward``, not 4 nodes, or an output other than the sum of
    the leaves."""
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        raise SpaceError(f"line {exc.lineno}: {exc.msg}") from None
    cls = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == ENTRY), None)
    if cls is None:
        raise SpaceError(f"no top-level class {ENTRY}")
    methods = {n.name: n for n in cls.body if isinstance(n, ast.FunctionDef)}
    if "__init__" not in methods or "forward" not in methods:
        raise SpaceError(f"{ENTRY} needs __init__ (the layers) and forward (the DAG)")
    layers = {}   # attribute -> operation
    for stmt in methods["__init__"].body:
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
            continue   # super().__init__()
        target = stmt.targets[0] if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 else None
        if not (isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self"):
            raise SpaceError(f"line {stmt.lineno}: __init__ only assigns layers to self.<name>")
        name = _class_name(stmt.value)
        if name not in CLASS_TO_OP:
            raise SpaceError(f"line {stmt.lineno}: layer {name or ast.unparse(stmt.value)!r} is not an operation of the "
                             f"space ({', '.join(sorted(CLASS_TO_OP))})")
        layers[target.attr] = CLASS_TO_OP[name]
    forward = methods["forward"]
    params = [a.arg for a in forward.args.args]
    if len(params) < 2:
        raise SpaceError("forward(self, x, edge_index) takes the node features first")
    where = {params[1]: 0}          # variable -> 0 (the cell input) or the 1-based node that wrote it
    link, ops, used, returned = [], [], set(), None
    for stmt in forward.body:
        if isinstance(stmt, ast.Return):
            returned = stmt
            break
        call = stmt.value if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 \
            and isinstance(stmt.targets[0], ast.Name) else None
        func = getattr(call, "func", None)
        if not (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "self"
                and func.attr in layers and call.args and isinstance(call.args[0], ast.Name)):
            raise SpaceError(f"line {stmt.lineno}: forward only runs layers, one per line "
                             f"(h = self.<layer>(<input>, edge_index)), not {ast.unparse(stmt)!r}")
        if func.attr in used:
            raise SpaceError(f"line {stmt.lineno}: self.{func.attr} runs twice (shared weights are not in the space)")
        if call.args[0].id not in where:
            raise SpaceError(f"line {stmt.lineno}: {call.args[0].id!r} is not the input or an earlier node's output")
        used.add(func.attr)
        link.append(where[call.args[0].id])
        ops.append(layers[func.attr])
        where[stmt.targets[0].id] = len(ops)
    if len(ops) != NODES:
        raise SpaceError(f"forward runs {len(ops)} layers; the space's cells have {NODES} nodes")
    arch = Architecture(tuple(link), tuple(ops)).check()
    if returned is None or returned.value is None:
        raise SpaceError("forward returns nothing: it returns the sum of the nodes no other node reads")
    out = []
    for term in _summands(returned.value):
        if not (isinstance(term, ast.Name) and where.get(term.id, 0) > 0):
            raise SpaceError(f"line {returned.lineno}: the output sums node outputs, not {ast.unparse(term)!r}")
        out.append(where[term.id] - 1)
    if sorted(out) != list(arch.leaves()):
        raise SpaceError(f"line {returned.lineno}: the output is the sum of the leaves (nodes "
                         f"{', '.join(str(i + 1) for i in arch.leaves())} in run order), each once")
    return arch

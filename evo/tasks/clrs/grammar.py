"""The child language of CLRS as a grammar: what the LM may write after the prefill's ``    tri_1 =``.

Constrained decoding (``crossmut.constrain=grammar``) enforces it token by token (llguidance, in
``evo.lm.hf``), so a sample is a complete ``get_triplet_msgs`` body in the style the prompt shows
(``ast.unparse``: 4-space indents, one statement a line, no comments) and every name it writes exists
when it is read:

- the function's arguments (``z``, ``edge_fts``, ``graph_fts`` as tensors, ``nb_triplet_fts`` and
  ``out_size`` as sizes) and the seeds' variables, introduced in the seeds' order: the representations
  ``tri_1, tri_2, tri_3, tri_e_1, tri_e_2, tri_e_3, tri_g`` (each a prefix of that list, as every seed
  defines one), then ``triplets``. The grammar is a small state machine over "how many representations
  are defined, and is ``triplets``": a line may only read names already assigned, so an undefined name
  (the README's clrs_demo run lost samples to them) cannot be written. Only ``triplets`` may be
  reassigned: every other line introduces the next name. Nothing computable is lost (a chain of
  reassignments is one expression), and it bounds the body: with reassignment allowed, Gemma-270M wrote
  runaway cycles of ``tri_e_1 = ...; tri_e_2 = ...; tri_e_3 = ...`` redefinitions until the token cap
  (benchmarks/operator_yield_clrs.py, README);
- Haiku modules constructed and applied in place (``hk.Linear(nb_triplet_fts)(z)``): ``hk.Linear``,
  ``hk.nets.MLP``, ``hk.LayerNorm``, ``hk.RMSNorm``, with keyword arguments taken from the installed
  ``inspect.signature`` of each (so an invented keyword cannot be written, and a new Haiku brings its
  own), each keyword at most once, in signature order (a repeated keyword is a SyntaxError), its values
  shaped by its annotation. Modules that need state or an RNG at apply time (BatchNorm, dropout) are
  left out: ``checks.py`` and the processor run the function under ``hk.transform`` with no RNG at apply;
- ``jax.numpy`` / ``jax.nn`` functions the seeds and the processor's style use (``jnp.expand_dims``,
  reductions over an axis, ``jnp.tile``, ``jnp.concatenate``, activations...), each checked to exist in
  the installed JAX, with keywords the installed signatures have; broadcasting by ``jnp.expand_dims``
  or by indexing with ``None``; and a closing ``return`` of the messages.

The grammar is the Lark dialect llguidance reads (its ``%llguidance`` extensions are not used).
"""

from __future__ import annotations

import inspect
from functools import lru_cache

# The function's arguments (evo/tasks/clrs/task.py SIGNATURE): tensors, and the two sizes.
TENSOR_ARGS = ("z", "edge_fts", "graph_fts")
SIZE_ARGS = ("nb_triplet_fts", "out_size")
# The seeds' variables, in the order every seed introduces them (v7 stops at tri_e_3, v8 at tri_1).
REPRESENTATIONS = ("tri_1", "tri_2", "tri_3", "tri_e_1", "tri_e_2", "tri_e_3", "tri_g")
TRIPLETS = "triplets"
# Haiku modules a child may construct (attribute paths under ``hk``).
MODULES = ("Linear", "nets.MLP", "LayerNorm", "RMSNorm")
# Elementwise functions a child may apply: (module, name), checked against the installed JAX.
ACTIVATIONS = (("jax.nn", "relu"), ("jax.nn", "gelu"), ("jax.nn", "sigmoid"), ("jax.nn", "silu"),
               ("jax.nn", "elu"), ("jax.nn", "leaky_relu"), ("jax.nn", "softplus"), ("jnp", "tanh"),
               ("jnp", "abs"))
REDUCTIONS = ("max", "sum", "mean", "min")
BINARY = ("maximum", "minimum")
# Keywords that take objects (initialisers) or name modules: not writable.
_SKIP = {"name", "w_init", "b_init", "scale_init", "offset_init"}

COMMON = r"""
op: " + " | " - " | " * "
index: "[" idx (", " idx)* "]"
idx: ":" | "None" | "..."
axes: AXIS | "(" AXIS ",)" | "(" AXIS (", " AXIS)+ ")"
perm: "(" AXIS (", " AXIS)+ ")"
dims: "(" dim (", " dim)+ ")"
dim: INT | tensor_arg ".shape[" AXIS "]"
size: size_atom ((" * " | " // ") size_atom)?
size_atom: "nb_triplet_fts" | "out_size" | INT
sizes: "[" size (", " size)* "]"
bool: "True" | "False"

INT: /[1-9][0-9]{0,3}/
AXIS: /-?[0-4]/
FLOAT: /[0-9]\.[0-9]{1,6}(e-[0-9]{1,2})?/
"""


def _lit(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _value_rule(param: inspect.Parameter) -> str | None:
    """The grammar rule for a Haiku keyword's values, from its annotation; None: not writable."""
    if param.name in _SKIP:
        return None
    ann = param.annotation
    text = "" if ann is inspect.Parameter.empty else (ann.__name__ if isinstance(ann, type) else str(ann))
    if text == "bool":
        return "bool"
    if text == "float":
        return "FLOAT"
    if text == "int":
        return "size"
    if "Iterable[int]" in text or text.startswith(("collections.abc.Sequence[int]", "typing.Sequence[int]")):
        return "sizes"
    if "slice" in text and "int" in text:   # an axis or axes (LayerNorm's axis, param_axis)
        return "axes"
    if "Callable[[jax" in text and "Sequence" not in text:   # an activation (x -> x), not an initialiser
        return "act_ref"
    return None


def _module_rule(rule: str, path: str, cls) -> str:
    """``hk.<path>(req1, req2=..., [opt1=...], ...)``: the first required argument positional or by
    keyword (the seeds write ``hk.Linear(nb_triplet_fts)``), the other required ones by keyword, then
    each writable optional keyword at most once, in signature order."""
    params = [p for p in inspect.signature(cls).parameters.values() if p.kind is not p.VAR_KEYWORD]
    required = [p for p in params if p.default is inspect.Parameter.empty]
    optional = [(p, _value_rule(p)) for p in params if p.default is not inspect.Parameter.empty]
    parts = []
    for i, p in enumerate(required):
        value = _value_rule(p)
        if value is None:
            raise ValueError(f"hk.{path}: no grammar for its required argument {p.name!r} ({p.annotation})")
        if i == 0:
            parts.append(f'({value} | "{p.name}=" {value})')
        else:
            parts.append(f'", {p.name}=" {value}')
    for p, value in optional:
        if value is None:
            continue
        sep = ", " if required or parts else ""
        parts.append(f'(", {p.name}=" {value})?' if sep else f'("{p.name}=" {value})?')
    return f'{rule}: "hk.{path}(" {" ".join(parts)} ")"'


def _function(module, name: str, *keywords: str) -> str:
    """``jnp.<name>`` / ``jax.nn.<name>`` as the child writes it, after checking that the installed JAX has
    it and that its signature takes ``keywords`` (a keyword it lacks would be a build error)."""
    # jax and haiku only when the grammar is built (crossmut.constrain=grammar): the search imports this task module
    import jax
    import jax.numpy as jnp
    owner = {"jnp": jnp, "jax.nn": jax.nn}[module]
    fn = getattr(owner, name, None)
    if fn is None:
        raise ValueError(f"{module}.{name} does not exist in the installed jax {jax.__version__}")
    if keywords:
        have = set(inspect.signature(fn).parameters)
        missing = [k for k in keywords if k not in have]
        if missing:
            raise ValueError(f"{module}.{name} takes no keyword {missing} in the installed jax {jax.__version__}")
    return f"{module}.{name}"


def _states() -> list[tuple[str, tuple[str, ...]]]:
    """(state, the names defined in it): r0 (arguments only), rK (K representations), tK (and triplets)."""
    out = [("r0", ())]
    for k in range(1, len(REPRESENTATIONS) + 1):
        out.append((f"r{k}", REPRESENTATIONS[:k]))
        out.append((f"t{k}", REPRESENTATIONS[:k] + (TRIPLETS,)))
    return out


def _expression_rules(state: str, names: tuple[str, ...]) -> str:
    """``expr_<state>``: a tensor expression that reads only the arguments and ``names``."""
    e = f"expr_{state}"
    n = f"name_{state}"
    reduce_fns = " | ".join(_lit(_function("jnp", r, "axis", "keepdims")) for r in REDUCTIONS)
    binary = " | ".join(_lit(_function("jnp", b)) for b in BINARY)
    lines = [
        f"{e}: term_{state} (op term_{state})*",
        f"{n}: " + " | ".join(_lit(x) for x in TENSOR_ARGS + names),
        f"term_{state}: {n}",
        f"    | {n} index",
        f'    | module "(" {e} ")"',
        f'    | act "(" {e} ")"',
        f'    | "{_function("jax.nn", "softmax", "axis")}(" {e} (", axis=" AXIS)? ")"',
        f'    | "{_function("jnp", "expand_dims", "axis")}(" {e} ", axis=" axes ")"',
        f'    | ({reduce_fns}) "(" {e} ", axis=" axes (", keepdims=" bool)? ")"',
        f'    | "{_function("jnp", "concatenate", "axis")}([" {e} (", " {e})+ "], axis=" AXIS ")"',
        f'    | "{_function("jnp", "stack", "axis")}([" {e} (", " {e})+ "], axis=" AXIS ")"',
        f'    | "{_function("jnp", "tile")}(" {e} ", " dims ")"',
        f'    | ({binary}) "(" {e} ", " {e} ")"',
        f'    | "{_function("jnp", "swapaxes")}(" {e} ", " AXIS ", " AXIS ")"',
        f'    | "{_function("jnp", "transpose")}(" {e} ", " perm ")"',
        f'    | "(" {e} ")"',
    ]
    return "\n".join(lines)


def _body_rules() -> str:
    """The lines after the prefill's first one, as a state machine over the names defined so far."""
    lines = ['start: " " expr_r0 "\\n" body_r1']
    k_max = len(REPRESENTATIONS)
    for k in range(1, k_max + 1):
        alts = []
        if k < k_max:   # introduce the next representation
            alts.append(f'{_lit("    " + REPRESENTATIONS[k] + " = ")} expr_r{k} "\\n" body_r{k + 1}')
        alts.append(f'{_lit(f"    {TRIPLETS} = ")} expr_r{k} "\\n" body_t{k}')
        alts.append(f'"    return " expr_r{k} "\\n"')
        lines.append(f"body_r{k}: " + "\n    | ".join(alts))
        lines.append(f'body_t{k}: {_lit(f"    {TRIPLETS} = ")} expr_t{k} "\\n" body_t{k}\n    | "    return " expr_t{k} "\\n"')
    return "\n".join(lines)


@lru_cache(maxsize=1)
def lark_grammar() -> str:
    """The grammar, built from the installed Haiku and JAX (cached: they do not change in a process)."""
    import haiku as hk  # only when the grammar is built: haiku imports jax, which the search process may not need

    parts = [_body_rules(), COMMON]
    parts.append("tensor_arg: " + " | ".join(_lit(x) for x in TENSOR_ARGS))
    rules = []
    for path in MODULES:
        cls = hk
        for attr in path.split("."):
            cls = getattr(cls, attr)
        rule = path.split(".")[-1].lower()
        rules.append(rule)
        parts.append(_module_rule(rule, path, cls))
    parts.append("module: " + " | ".join(rules))
    acts = [_function(m, a) for m, a in ACTIVATIONS]
    parts.append("act: " + " | ".join(_lit(a) for a in acts))
    parts.append("act_ref: " + " | ".join(_lit(a) for a in acts if a.startswith("jax.nn.")))
    for state, names in _states():
        parts.append(_expression_rules(state, names))
    return "\n".join(parts) + "\n"

"""The child language of MNIST-1D as a grammar: what the LM may write after the prefill's ``x =``.

Constrained decoding (``crossmut.constrain=grammar``) enforces it token by token (llguidance, in
``evo.lm.hf``), so a sample is a syntactically complete ``@nn.compact`` body in the style the prompt
shows (``ast.unparse``: 4-space indents, no comments) and every name it writes exists:

- one variable, ``x`` (the seeds need no other; a second name is how samples wrote undefined names
  such as ``in_planes``), assigned line by line and in ``for _ in range(N):`` blocks, ending with
  ``return <expr>``;
- layers of ``flax.linen`` constructed and applied in place (``nn.Conv(...)(x)``), with keyword
  arguments taken from the installed ``inspect.signature`` of each layer (so an invented keyword
  such as ``in_dim=`` cannot be written, and a new flax version brings its own keywords), each
  keyword's values shaped by its annotation (ints, int tuples, bools, padding strings);
- activations, pooling, reshapes and a few ``jax.numpy`` reductions the seeds and the docs use.

The grammar is the Lark dialect llguidance reads (its ``%llguidance`` extensions are not used).
"""

from __future__ import annotations

import inspect
from functools import lru_cache

# Layers a child may construct: the seeds' layers and their close relatives. BatchNorm and Dropout
# are left out: they need mutable state / an RNG the harness does not give a child.
LAYERS = ("Dense", "Conv", "ConvTranspose", "LayerNorm", "GroupNorm")
CELLS = ("GRUCell", "LSTMCell", "SimpleCell")
ACTIVATIONS = ("relu", "gelu", "tanh", "sigmoid", "silu", "swish", "elu", "leaky_relu", "softplus", "selu")
POOLS = ("avg_pool", "max_pool")
# Keywords that take objects (dtypes, initialisers, callables, masks) or name modules: not writable.
_SKIP = {"parent", "name", "dtype", "param_dtype", "precision", "mask", "promote_dtype", "dot_general",
         "dot_general_cls", "conv_general_dilated", "conv_general_dilated_cls", "preferred_element_type",
         "axis_name", "axis_index_groups", "variable_axes", "variable_broadcast", "variable_carry", "split_rngs",
         "gate_fn", "activation_fn", "merge_fn", "inputs"}

RULES = r"""
start: " " expr "\n" line* ret
line: "        x = " expr "\n"
    | "        for _ in range(" SMALL "):\n" inner+
inner: "            x = " expr "\n"
ret: "        return " expr "\n"

expr: term (op term)*
op: " + " | " - " | " * "
term: "x"
    | module "(" expr ")"
    | act "(" expr ")"
    | pool "(" expr ", " pool_args ")"
    | "x[..., None]"
    | "x.reshape(" shape ")"
    | "jnp.reshape(" expr ", " shape ")"
    | reduce "(" expr ", axis=" AXIS ")"
    | "jnp.concatenate([" expr (", " expr)+ "], axis=" AXIS ")"
    | "(" expr ")"
shape: "(x.shape[0], -1)" | "(x.shape[0], " INT ", " INT ")" | "(x.shape[0], -1, " INT ")"
reduce: "jnp.mean" | "jnp.max" | "jnp.sum"

ints: INT | "(" INT ",)" | "(" INT ", " INT ("," " " INT)* ")"
pad: "'SAME'" | "'VALID'" | "'CAUSAL'" | ints | "((" INT ", " INT "),)"
bool: "True" | "False"

INT: /[1-9][0-9]{0,3}/
SMALL: /[1-8]/
AXIS: /-?[0-3]/
FLOAT: /[0-9]\.[0-9]{1,6}(e-[0-9]{1,2})?/
"""


def _value_rule(param: inspect.Parameter) -> str | None:
    """The grammar rule for a keyword's values, from its annotation (or, unannotated, its name)."""
    ann = param.annotation
    text = "" if ann is inspect.Parameter.empty else (ann.__name__ if isinstance(ann, type) else str(ann))
    if param.name == "padding":
        return "pad"
    if not text:   # the pooling functions are not annotated: go by name
        return {"window_shape": "ints", "strides": "ints", "count_include_pad": "bool"}.get(param.name)
    if text == "bool":
        return "bool"
    if text == "float":
        return "FLOAT"
    if "Sequence[int]" in text:
        return "ints"
    if text == "int" or text in ("int | None", "typing.Optional[int]"):
        return "INT"
    if "int" in text and "Sequence" in text:
        return "ints"
    return None


def _call_rule(rule: str, prefix: str, fn) -> str:
    """``prefix(req1, kw=..., ...)``: required arguments first (the first may be positional, as the
    seeds write ``nn.Dense(10)``), then any writable keyword of the signature."""
    params = [p for p in inspect.signature(fn).parameters.values() if p.name not in _SKIP]
    required = [p for p in params if p.default is inspect.Parameter.empty]
    optional = [(p, _value_rule(p)) for p in params if p.default is not inspect.Parameter.empty]
    optional = [(p, v) for p, v in optional if v is not None]
    head = []
    for i, p in enumerate(required):
        value = _value_rule(p) or "INT"
        sep = "" if i == 0 else '", " '
        head.append(f'{sep}({value} | "{p.name}=" {value})' if i == 0 else f'{sep}"{p.name}=" {value}')
    lines = [f'{rule}: "{prefix}(" {" ".join(head)} {rule}_kw* ")"']
    if optional:
        first = '", "' if required else '""'
        alts = " | ".join(f'"{p.name}=" {v}' for p, v in optional)
        lines.append(f"{rule}_kw: {first} ({alts})" if not required else f'{rule}_kw: ", " ({alts})')
        if not required:   # no required argument: keywords separated by commas, none leading
            lines[0] = f'{rule}: "{prefix}(" ({rule}_kwarg (", " {rule}_kwarg)*)? ")"'
            lines[1] = f"{rule}_kwarg: {alts}"
    else:
        lines[0] = f'{rule}: "{prefix}(" {" ".join(head)} ")"'
    return "\n".join(lines)


@lru_cache(maxsize=1)
def lark_grammar() -> str:
    """The grammar, built from the installed flax.linen (cached: it does not change in a process)."""
    import flax.linen as nn   # heavy (jax): the search process builds the grammar once, children never

    parts = [RULES]
    for layer in LAYERS:
        parts.append(_call_rule(layer.lower(), f"nn.{layer}", getattr(nn, layer)))
    for cell in CELLS:
        parts.append(_call_rule(cell.lower(), f"nn.{cell}", getattr(nn, cell)))
    parts.append('cell: ' + " | ".join(c.lower() for c in CELLS))
    rnn_kws = [p for p in inspect.signature(nn.RNN).parameters.values()
               if p.name not in _SKIP and p.name != "cell" and _value_rule(p) is not None]
    kw = " | ".join(f'"{p.name}=" {_value_rule(p)}' for p in rnn_kws)
    parts.append(f'rnn: "nn.RNN(" cell (", " ({kw}))* ")"')
    parts.append('bidirectional: "nn.Bidirectional(" rnn ", " rnn ")"')
    parts.append("module: " + " | ".join([l.lower() for l in LAYERS] + ["rnn", "bidirectional"]))
    parts.append("act: " + " | ".join(f'"nn.{a}"' for a in ACTIVATIONS if hasattr(nn, a)))
    parts.append("pool: " + " | ".join(f'"nn.{p}"' for p in POOLS))
    pool_params = [p for p in inspect.signature(nn.avg_pool).parameters.values()
                   if p.name not in _SKIP and _value_rule(p) is not None]
    # window_shape is required: positional or keyword, then the optional keywords
    opt = " | ".join(f'"{p.name}=" {_value_rule(p)}' for p in pool_params if p.name != "window_shape")
    parts.append(f'pool_args: (ints | "window_shape=" ints) (", " ({opt}))*')
    return "\n".join(parts) + "\n"

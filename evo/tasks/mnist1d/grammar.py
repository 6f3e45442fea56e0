"""The child language of MNIST-1D as a grammar: what the LM may write after the prefill's ``x =``.

Constrained decoding (``crossmut.constrain=grammar``) enforces it token by token (llguidance, in
``evo.lm.hf``), so a sample is a syntactically complete ``@nn.compact`` body in the style the prompt
shows (``ast.unparse``: 4-space indents, no comments) and every name it writes exists:

- one variable, ``x`` (the seeds need no other; a second name is how samples wrote undefined names
  such as ``in_planes``), assigned line by line and in ``for _ in range(N):`` blocks, ending with
  ``return nn.Dense(10)(<expr>)``;
- layers of ``flax.linen`` constructed and applied in place (``nn.Conv(...)(x)``), with keyword
  arguments taken from the installed ``inspect.signature`` of each layer (so an invented keyword
  such as ``in_dim=`` cannot be written, and a new flax version brings its own keywords), each
  keyword's values shaped by its annotation (ints, int tuples, bools, padding strings);
- activations, pooling, reshapes and a few ``jax.numpy`` reductions the seeds and the docs use;
- the rank of ``x`` tracked line by line (flat or a sequence; see RULES), so convolutions, pools and RNNs
  apply to sequences, kernels and windows are 1-d, and the body ends with ``nn.Dense(10)`` of a flat x.

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
# Keywords with only one writable value: an RNN's carry is a tuple, and a time-major RNN scans the batch axis;
# neither fits a one-variable body, but samples write the defaults out (``return_carry=False``).
_ONLY = {"return_carry": '"False"', "time_major": '"False"'}

# The logits a child returns: (batch, CLASSES). Every seed ends with ``return nn.Dense(10)(x)``, and a
# sample that ended with another head (``nn.Dense(1)``, a 12-wide Dense) was a shape error every time.
CLASSES = 10

# The body is a small state machine over the rank of ``x``: flat (batch, features) or a sequence
# (batch, length, channels), the only two ranks a child of (batch, 40) signals can use. Each line reads x
# in one rank and writes it in one; convolutions, pools and RNNs take sequences only, a reduction or a
# flattening reshape turns a sequence flat, ``x[..., None]`` or a 3-d reshape turns it back. So a pool
# over the batch axis (a flat x pooled: the batch-dependence and shape errors of unconstrained samples),
# a 2-d kernel on a 1-d signal, and a head that is not ``nn.Dense(10)`` of a flat x cannot be written.
# Widths are not tracked (a residual sum of two widths still fails at build, and is recorded so).
RULES = r"""
start: " " e_ff "\n" body_f | " " e_fs "\n" body_s
body_f: "        x = " e_ff "\n" body_f
      | "        x = " e_fs "\n" body_s
      | "        for _ in range(" SMALL "):\n" inner_f+ body_f
      | "        return nn.Dense(CLASSES)(" e_ff ")\n"
body_s: "        x = " e_ss "\n" body_s
      | "        x = " e_sf "\n" body_f
      | "        for _ in range(" SMALL "):\n" inner_s+ body_s
      | "        return nn.Dense(CLASSES)(" e_sf ")\n"
inner_f: "            x = " e_ff "\n"
inner_s: "            x = " e_ss "\n"
op: " + " | " - " | " * "
flat_shape: "(x.shape[0], -1)"
seq_shape: "(x.shape[0], " INT ", " INT ")" | "(x.shape[0], -1, " INT ")"
reduce: "jnp.mean" | "jnp.max" | "jnp.sum"
SEQ_AXIS: "1" | "2" | "-1" | "-2"

ints: INT | "(" INT ",)"
window: "(" INT ",)"
pad: "'SAME'" | "'VALID'" | "'CAUSAL'" | INT | "((" INT ", " INT "),)"
pool_pad: "'SAME'" | "'VALID'" | "((" INT ", " INT "),)"
bool: "True" | "False"

INT: /[1-9][0-9]{0,3}/
SMALL: /[1-8]/
FLOAT: /[0-9]\.[0-9]{1,6}(e-[0-9]{1,2})?/
""".replace("CLASSES", str(CLASSES))


def _expression_rules() -> str:
    """``e_<x's rank><result's rank>``: an expression over x (f: flat, s: sequence) of the given rank."""
    rules = []
    for c in "fs":
        for r in "fs":
            e = f"e_{c}{r}"
            alts = ['"(" ' + e + ' ")"', f'act "(" {e} ")"', f'dense "(" {e} ")"', f'layernorm "(" {e} ")"',
                    f'groupnorm "(" {e} ")"', f'"jnp.concatenate([" {e} (", " {e})+ "], axis=-1)"']
            if c == r:
                alts.append('"x"')
            if r == "s":   # layers over a length axis
                alts += [f'seq_module "(" {e} ")"', f'pool "(" {e} ", " pool_args ")"',
                         f'"jnp.reshape(" (e_{c}f | e_{c}s) ", " seq_shape ")"', '"x.reshape(" seq_shape ")"']
                if c == "f":
                    alts.append('"x[..., None]"')
            else:          # a sequence made flat
                alts += [f'"jnp.reshape(" (e_{c}s | e_{c}f) ", " flat_shape ")"', '"x.reshape(" flat_shape ")"',
                         f'reduce "(" e_{c}s ", axis=" SEQ_AXIS ")"']
            rules.append(f"{e}: t_{c}{r} (op t_{c}{r})*")
            rules.append(f"t_{c}{r}: " + "\n    | ".join(alts))
    return "\n".join(rules)


def _value_rule(param: inspect.Parameter) -> str | None:
    """The grammar rule for a keyword's values, from its annotation (or, unannotated, its name)."""
    ann = param.annotation
    text = "" if ann is inspect.Parameter.empty else (ann.__name__ if isinstance(ann, type) else str(ann))
    if param.name == "padding":
        return "pad"
    if param.name in _ONLY:
        return _ONLY[param.name]
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

    parts = [RULES, _expression_rules()]
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
    parts.append("seq_module: conv | convtranspose | rnn | bidirectional")   # dense and the norms: either rank
    parts.append("act: " + " | ".join(f'"nn.{a}"' for a in ACTIVATIONS if hasattr(nn, a)))
    parts.append("pool: " + " | ".join(f'"nn.{p}"' for p in POOLS))
    pool_params = [p for p in inspect.signature(nn.avg_pool).parameters.values()
                   if p.name not in _SKIP and _value_rule(p) is not None]
    # window_shape is required: positional or keyword, then the optional keywords. The pools take only
    # tuples (an int window fails in len()) and no 'CAUSAL' padding.
    pool_rule = {"window_shape": "window", "strides": "window", "padding": "pool_pad"}
    opt = " | ".join(f'"{p.name}=" {pool_rule.get(p.name, _value_rule(p))}' for p in pool_params
                     if p.name != "window_shape")
    parts.append(f'pool_args: (window | "window_shape=" window) (", " ({opt}))*')
    return "\n".join(parts) + "\n"

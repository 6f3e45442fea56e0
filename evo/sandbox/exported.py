"""Exported models across the trust boundary: bytes from the untrusted process, checks in the trusted one.

The untrusted (sandboxed) process runs the child's Python only to *build* its model and export it with
``jax.export`` (serialized StableHLO). A separate, trusted process deserializes the modules, inspects them
here, and does all training and scoring itself, so the child's Python never sees any data and never runs in
the process that computes the numbers the search acts on.

A StableHLO module is data, not code: it can only compute on the arrays it is given. Its ways out are
custom calls (native kernels named by a string, among them the host callbacks that call back into Python),
host transfers (infeed/outfeed/send/recv) and side effects; :func:`inspect_modules` rejects all of them but a
small allowlist of custom calls. What a module can still do is carry *information* in constants (for
instance weights the child trained on data it generated itself): every non-splat array constant, and every
distinct scalar constant, beyond a small allowance, is counted as a parameter by :func:`inspect_modules`, so
baking weights in costs as much model size as learning them.

Light at import (no jax): the search process imports this module.
"""

from __future__ import annotations

import base64
import math
import re
from dataclasses import dataclass, field

from evo.outcome import BUILD_ERROR, ChildFailure

# Custom calls a module may contain: jax.export's own checks of symbolic dimensions (they raise on a wrong
# shape, nothing else) and the linear-algebra / random-bits kernels that jaxlib itself ships for jnp.linalg and
# jax.random (Flax's orthogonal initialiser, used by the GRU seed, is a QR: lapack_sgeqrf_ffi on CPU; threefry
# is a custom call on GPU). They compute on the buffers XLA hands them. Everything else, host callbacks
# included, is refused.
ALLOWED_CUSTOM_CALLS = re.compile(r"shape_assertion|lapack_\w+_ffi|cusolver_\w+_ffi|hipsolver_\w+_ffi"
                                  r"|cu_threefry2x32_ffi|hip_threefry2x32_ffi|cu_lu_pivots_to_permutation"
                                  r"|hip_lu_pivots_to_permutation")
# Operations that move data between the module and the host: refused outright.
FORBIDDEN_OPS = frozenset({"stablehlo.infeed", "stablehlo.outfeed", "stablehlo.send", "stablehlo.recv",
                           "mhlo.infeed", "mhlo.outfeed", "mhlo.send", "mhlo.recv"})
# Constant values the modules may hold for free (0, 1, eps, shapes, threefry's rotation table, ...): the seeds'
# modules hold a few dozen. Beyond this each distinct scalar and each array element counts as a parameter.
FREE_CONSTANTS = 512
MAX_MODULE_BYTES = 64 << 20


def encode(blob: bytes) -> str:
    """Serialized module bytes -> text for the JSON result channel."""
    return base64.b64encode(blob).decode("ascii")


def decode(text, what: str) -> bytes:
    if not isinstance(text, str) or len(text) > MAX_MODULE_BYTES * 4 // 3 + 4:
        raise ChildFailure(BUILD_ERROR, f"the exported {what} is missing or too large")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        raise ChildFailure(BUILD_ERROR, f"the exported {what} is not valid base64") from None


def deserialize(text, what: str):
    """Bytes from the untrusted process -> ``jax.export.Exported``; BUILD_ERROR if unreadable."""
    from jax import export  # jax here, not at import: the search process imports this module (docstring)

    blob = decode(text, what)
    try:
        return export.deserialize(bytearray(blob))
    except Exception as e:  # noqa: BLE001 - any garbage the child sent
        raise ChildFailure(BUILD_ERROR, f"the exported {what} could not be read: "
                                        f"{type(e).__name__}: {str(e)[:200]}") from None


@dataclass
class ModuleReport:
    custom_calls: set = field(default_factory=set)
    array_constant_elements: int = 0   # elements of the distinct non-splat array constants
    scalar_constants: int = 0          # distinct scalar / splat constant values

    @property
    def baked_parameters(self) -> int:
        """Constants counted as model size (see the module docstring)."""
        return max(0, self.array_constant_elements + self.scalar_constants - FREE_CONSTANTS)


def inspect_modules(named: dict, platform: str | None = None) -> ModuleReport:
    """Check every ``jax.export.Exported`` in ``named`` ({what: exported}); return the constants they hold.

    Raises ChildFailure(BUILD_ERROR) for a custom call outside ALLOWED_CUSTOM_CALLS, a host transfer, a side
    effect, more than one device, or a module not lowered for ``platform``. Distinct constants are counted
    once across all modules (the gradient module repeats the forward pass's constants)."""
    # jax here, not at import: the search process imports this module (docstring)
    from jax._src.interpreters import mlir as jax_mlir
    from jax._src.lib.mlir import ir

    report = ModuleReport()
    arrays: dict = {}  # constant text -> elements (text: deduplicated by value across modules)
    scalars: set = set()
    for what, exp in named.items():
        if exp.ordered_effects or exp.unordered_effects:
            raise ChildFailure(BUILD_ERROR, f"the exported {what} has side effects "
                                            f"({list(exp.ordered_effects) + list(exp.unordered_effects)})")
        if exp.nr_devices != 1:
            raise ChildFailure(BUILD_ERROR, f"the exported {what} is for {exp.nr_devices} devices, not 1")
        wanted = {"gpu": ("cuda", "rocm")}.get(platform, (platform,))  # jax.default_backend() says "gpu"
        if platform is not None and not set(wanted) & set(exp.platforms):
            raise ChildFailure(BUILD_ERROR, f"the exported {what} is lowered for {list(exp.platforms)}, "
                                            f"not {platform}")
        with jax_mlir.make_ir_context():
            module = ir.Module.parse(exp.mlir_module())
            problems: list[str] = []

            def visit(op) -> "ir.WalkResult":
                op = getattr(op, "operation", op)
                name = op.name
                if name in FORBIDDEN_OPS:
                    problems.append(f"host transfer {name}")
                elif name.endswith(".custom_call"):
                    target = ir.StringAttr(op.attributes["call_target_name"]).value
                    report.custom_calls.add(target)
                    if not ALLOWED_CUSTOM_CALLS.fullmatch(target):
                        problems.append(f"custom call {target!r}")
                elif name.endswith(".constant") and "value" in op.attributes:
                    attr = op.attributes["value"]
                    try:
                        dense = ir.DenseElementsAttr(attr)
                    except (TypeError, ValueError):
                        scalars.add(str(attr))
                        return ir.WalkResult.ADVANCE
                    shape = ir.ShapedType(dense.type).shape
                    if dense.is_splat or not shape:
                        scalars.add(str(attr))
                    else:
                        arrays[str(attr)] = math.prod(shape)
                return ir.WalkResult.ADVANCE

            module.operation.walk(visit)
            if problems:
                raise ChildFailure(BUILD_ERROR, f"the exported {what} uses {', '.join(sorted(set(problems))[:5])}: "
                                                "only pure array computations are accepted")
    report.array_constant_elements = sum(arrays.values())
    report.scalar_constants = len(scalars)
    return report

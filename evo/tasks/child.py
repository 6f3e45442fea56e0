"""Child-side pieces every task harness shares: the JAX child environment, running a program's
module code, and naming the failures of the child's own code.

Light on purpose (no jax at import): the search process imports ``JAX_CHILD_ENV`` from here.
"""

from __future__ import annotations

from evo.outcome import BUILD_ERROR, MEMORY, SYNTAX_ERROR, ChildFailure
from evo.sandbox.worker import exception_outcome

# Environment for a 1-thread child process; must be set before jax is imported (XLA reads
# XLA_FLAGS once). Measured with jaxlib 0.10.2 on the 2-core VM:
# * PIN THE PROCESS TO ONE CORE (taskset -c N / os.sched_setaffinity before jax starts): XLA:CPU
#   sizes its intra-op thread pool by the CPU affinity and no flag limits it. Unpinned, the
#   residual-CNN seed used 2 threads (2.3 vs 3.3 ms/step) and its results differed from a pinned
#   run's (the split of its matmuls changes the summation order).
# * --xla_cpu_multi_thread_eigen=false: no measurable effect in this jaxlib (kept: harmless, and
#   effective in older ones). `intra_op_parallelism_threads=1` is not an XLA flag at all (a
#   TensorFlow session option); XLA silently ignores the bare word.
# * --xla_cpu_experimental_ynn_fusion_type= (empty): no YNNPACK fusions for small dots and
#   reductions. GRU seed 1.8-2.2 vs 2.6-2.7 ms/step pinned, CNN and residual CNN the same speed
#   (compile ~0.15 s slower); and the CNN, MLP and GRU seeds then train bit-identically on 1 or 2
#   cores. The flag is jaxlib-specific: XLA aborts on an unknown flag, so re-check it on upgrades.
XLA_FLAGS = "--xla_cpu_multi_thread_eigen=false --xla_cpu_experimental_ynn_fusion_type="
JAX_CHILD_ENV = {
    "XLA_FLAGS": XLA_FLAGS,
    "JAX_PLATFORMS": "cpu",            # do not probe for GPU/TPU plugins
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "TF_CPP_MIN_LOG_LEVEL": "2",
}



def describe(exc: BaseException, limit: int = 300) -> str:
    """One line: exception type and the first line of its message."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def build_failure(exc: BaseException, what: str) -> ChildFailure:
    """The failure for an exception raised by the child's own code: running out of memory is
    MEMORY (the sandbox's cap), anything else a build error."""
    status, reason = exception_outcome(exc)
    if status == MEMORY:
        return ChildFailure(MEMORY, f"{what} raised {reason}")
    return ChildFailure(BUILD_ERROR, f"{what} raised {describe(exc)}")


def run_program(code: str, entry: str):
    """Compile and run a program's module code (inside the sandbox); return its ``entry`` object."""
    try:
        compiled = compile(code, "child.py", "exec")
    except (SyntaxError, ValueError) as e:  # ValueError: e.g. null bytes in the source
        raise ChildFailure(SYNTAX_ERROR, describe(e)) from None
    namespace = {"__name__": "child"}
    try:
        exec(compiled, namespace)  # noqa: S102 - untrusted, but we are inside the sandbox
    except (Exception, SystemExit) as e:  # noqa: BLE001
        raise build_failure(e, "running the program") from None
    if entry not in namespace:
        raise ChildFailure(BUILD_ERROR, f"the program defines no `{entry}`")
    return namespace[entry]

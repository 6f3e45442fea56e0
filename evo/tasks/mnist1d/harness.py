"""Sandbox entry point for MNIST-1D children: source code in, EVAL metrics out.

``evaluate_source`` runs INSIDE the sandboxed subprocess. jax is imported lazily so that the
search process can import ``CHILD_ENV`` from here cheaply.
"""

from __future__ import annotations

from evo.outcome import BUILD_ERROR, SYNTAX_ERROR, ChildFailure

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
CHILD_ENV = {
    "XLA_FLAGS": XLA_FLAGS,
    "JAX_PLATFORMS": "cpu",            # do not probe for GPU/TPU plugins
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "TF_CPP_MIN_LOG_LEVEL": "2",
}


def evaluate_source(code: str, data_path: str, **train_kwargs) -> dict:
    """Build the child's ``Model`` from ``code``, check it, train it on the splits at ``data_path``.

    Raises ``ChildFailure`` (SYNTAX_ERROR, BUILD_ERROR, SHAPE_ERROR, BATCH_DEPENDENCE, NAN);
    other exceptions escape to the caller. ``train_kwargs`` go to ``train_and_evaluate``.
    """
    from evo.tasks.mnist1d.checks import build_failure, check_model, describe
    from evo.tasks.mnist1d.data import load_splits
    from evo.tasks.mnist1d.train import train_and_evaluate

    try:
        compiled = compile(code, "child.py", "exec")
    except (SyntaxError, ValueError) as e:  # ValueError: e.g. null bytes in the source
        raise ChildFailure(SYNTAX_ERROR, describe(e)) from None
    namespace = {"__name__": "child"}
    try:
        exec(compiled, namespace)  # noqa: S102 - untrusted, but we are inside the sandbox
    except (Exception, SystemExit) as e:  # noqa: BLE001
        raise build_failure(e, "running the program") from None
    if "Model" not in namespace:
        raise ChildFailure(BUILD_ERROR, "the program defines no `Model`")
    try:
        model = namespace["Model"]()
    except (Exception, SystemExit) as e:  # noqa: BLE001
        raise build_failure(e, "Model()") from None
    if not hasattr(model, "init") or not hasattr(model, "apply"):
        raise ChildFailure(BUILD_ERROR, f"Model is a {type(model).__name__}, not a flax.linen Module")
    check_model(model)
    return train_and_evaluate(model, load_splits(data_path), **train_kwargs)

"""MNIST-1D task: data splits, the child checks and training harness, and the sandbox entry point.

Modules: ``data`` (splits, .npz cache), ``checks`` (pre-training checks of a child),
``train`` (the jitted AdamW trainer, the paper's EVAL) and ``harness`` (``evaluate_source``,
run inside the sandboxed subprocess). This file deliberately imports nothing heavy (no jax).
"""

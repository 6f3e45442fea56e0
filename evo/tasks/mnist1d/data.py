"""MNIST-1D splits for the search (paper protocol: 4000 train / 1000 test, 500 train held out as val).

The data is *generated* by the ``mnist1d`` package (``make_dataset``), never downloaded:
``mnist1d.data.get_dataset`` would fetch a pickle from GitHub and write it to the cwd, so it is
not used. The search process calls :func:`make_splits` once and :func:`save_splits` to a single
``.npz`` file; sandboxed children only :func:`load_splits` it (read-only, numpy only, fast).
"""

from __future__ import annotations

import os
import random
import tempfile

import numpy as np

KEYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")


def make_splits(dataset_seed: int = 42, val_size: int = 500, split_seed: int = 0) -> dict[str, np.ndarray]:
    """Generate MNIST-1D in memory and hold out ``val_size`` random training examples as validation.

    ``dataset_seed`` is mnist1d's generator seed (42 = the standard dataset); ``split_seed`` picks the
    held-out examples. x arrays are float32 (N, 40), y arrays int32 (N,).
    """
    from mnist1d.data import get_dataset_args, make_dataset  # imported lazily: pulls in matplotlib

    args = get_dataset_args()  # an ObjectView of plain values; make_dataset neither downloads nor writes
    args.seed = int(dataset_seed)
    # make_dataset reseeds the global `random` and `np.random` generators: restore them afterwards.
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)

    x, y = np.asarray(data["x"], np.float32), np.asarray(data["y"], np.int32)
    if not 0 < val_size < len(y):
        raise ValueError(f"val_size must be in (0, {len(y)}), got {val_size}")
    perm = np.random.default_rng(split_seed).permutation(len(y))
    val_idx, train_idx = np.sort(perm[:val_size]), np.sort(perm[val_size:])
    return {
        "x_train": x[train_idx], "y_train": y[train_idx],
        "x_val": x[val_idx], "y_val": y[val_idx],
        "x_test": np.asarray(data["x_test"], np.float32), "y_test": np.asarray(data["y_test"], np.int32),
    }


def save_splits(splits: dict[str, np.ndarray], path: str | os.PathLike) -> None:
    """Write the splits to one uncompressed ``.npz`` file, atomically (temp file + rename)."""
    path = os.fspath(path)
    missing = [k for k in KEYS if k not in splits]
    if missing:
        raise KeyError(f"splits lack {missing}")
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".npz", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **{k: np.asarray(splits[k]) for k in KEYS})
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_splits(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read splits written by :func:`save_splits` (no pickle: ``allow_pickle=False``)."""
    with np.load(os.fspath(path), allow_pickle=False) as f:
        return {k: f[k] for k in KEYS}

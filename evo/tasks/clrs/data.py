"""CLRS datasets: generated once per setting with ``clrs.build_sampler``, cached on disk, read by every child.

The pipeline is dm-clrs's own (``clrs/examples/run.py``): the same sampler arguments (lower edge
probability for the long-trajectory graph algorithms, needle length for the string matchers),
``process_pred_as_input`` and ``process_permutations``, and ``process_random_pos`` on the training
and validation splits. What differs is only *when* samples are drawn: run.py samples every training
batch afresh; here a fixed pool of ``num_samples`` trajectories per (split, length) is generated once
and batches are drawn from it (as ``Sampler.next(batch)`` does for a finite dataset), so that the
children of a run train on the same data and never pay for generation.

Every pool is padded in time to its own longest trajectory (dm-clrs's online sampler pads to the
longest it has seen so far; the padded steps are masked by ``lengths``): every batch of a pool then has one shape, and
a child compiles its training step once per training length instead of once per new hint length.

On disk a split is ``<name>.npz`` (the arrays) + ``<name>.json`` (the processed spec and the
name/location/type of every array): no pickle, readable without this package.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

# run.py: "Choose a lower connection probability for the above algorithms, otherwise trajectories
# are very long".
LOW_P_ALGORITHMS = ("articulation_points", "bridges", "mst_kruskal", "bipartite_matching")
STRING_MATCHERS = ("naive_string_matcher", "kmp_matcher")
LENGTH_NEEDLE = -8   # run.py's default for the string matchers' training and validation needles


def sampler_kwargs(algorithm: str, split: str) -> dict:
    """run.py's extra sampler arguments for ``algorithm`` (the test split uses the defaults)."""
    if split == "test":
        return {}
    p = tuple(0.1 + 0.1 * i for i in range(9))
    if algorithm in LOW_P_ALGORITHMS:
        p = tuple(np.array(p) / 2)
    return {"p": p, "length_needle": LENGTH_NEEDLE}


def sample_length(algorithm: str, length: int, split: str) -> int:
    """run.py: string matchers train on a 5/4 longer haystack+needle sequence."""
    if algorithm in STRING_MATCHERS and split != "test":
        return (length * 5) // 4
    return length


@dataclass
class Pool:
    """One split at one size: the processed spec and the whole pool as one clrs ``Feedback``."""
    spec: dict
    feedback: object   # clrs.Feedback, batch axis 0 (hints: time axis 0, batch axis 1)

    @property
    def size(self) -> int:
        return int(self.feedback.features.lengths.shape[0])

    def batch(self, indices: np.ndarray):
        """The trajectories at ``indices`` as a Feedback with the pool's shapes (but the batch axis)."""
        fb = self.feedback

        def take(dps, axis):
            return tuple(_datapoint(dp.name, dp.location, dp.type_, np.take(dp.data, indices, axis)) for dp in dps)
        features = fb.features._replace(inputs=take(fb.features.inputs, 0), hints=take(fb.features.hints, 1),
                                        lengths=fb.features.lengths[indices])
        return fb._replace(features=features, outputs=list(take(fb.outputs, 0)))


def _datapoint(name, location, type_, data):
    from clrs import DataPoint
    return DataPoint(name=name, location=location, type_=type_, data=data)


def pool_name(algorithm: str, split: str, length: int, num_samples: int, seed: int) -> str:
    return f"{algorithm}_{split}_n{length}_x{num_samples}_s{seed}"


def generate(algorithm: str, split: str, length: int, num_samples: int, seed: int) -> Pool:
    """Generate a pool with dm-clrs's sampler and run.py's processing (in this process: imports clrs)."""
    import inspect

    import clrs
    from clrs._src.samplers import SAMPLERS
    accepted = inspect.signature(SAMPLERS[algorithm]._sample_data).parameters  # as build_sampler filters,
    kwargs = {k: v for k, v in sampler_kwargs(algorithm, split).items() if k in accepted}  # minus its warning
    sampler, spec = clrs.build_sampler(algorithm, num_samples, sample_length(algorithm, length, split),
                                       seed=seed, **kwargs)
    full = sampler.next()   # no batch size: the whole pool, padded to its longest trajectory
    spec, it = clrs.process_pred_as_input(spec, iter([full]))
    spec, it = clrs.process_permutations(spec, it, True)
    full = next(it)
    if split == "val":  # run.py randomises `pos` of validation batches too; here once, with the pool's seed
        full = next(clrs.process_random_pos(iter([full]), np.random.RandomState(seed)))
    return Pool(spec=dict(spec), feedback=full)


def save(pool: Pool, folder: Path, name: str) -> None:
    """Write ``name.npz`` and ``name.json`` atomically (a temporary name, then rename)."""
    folder.mkdir(parents=True, exist_ok=True)
    fb = pool.feedback
    groups = {"inputs": fb.features.inputs, "hints": fb.features.hints, "outputs": fb.outputs}
    arrays = {f"{g}/{i}": np.asarray(dp.data) for g, dps in groups.items() for i, dp in enumerate(dps)}
    arrays["lengths"] = np.asarray(fb.features.lengths)
    meta = {"spec": {k: list(v) for k, v in pool.spec.items()},
            **{g: [[dp.name, dp.location, dp.type_] for dp in dps] for g, dps in groups.items()}}
    tmp = folder / f".{name}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, folder / f"{name}.npz")
    (folder / f".{name}.json.tmp").write_text(json.dumps(meta))
    os.replace(folder / f".{name}.json.tmp", folder / f"{name}.json")


def load(folder: Path, name: str) -> Pool:
    from clrs import Features, Feedback
    meta = json.loads((Path(folder) / f"{name}.json").read_text())
    with np.load(Path(folder) / f"{name}.npz") as z:
        arrays = {k: z[k] for k in z.files}
    dps = {g: tuple(_datapoint(*meta[g][i], arrays[f"{g}/{i}"]) for i in range(len(meta[g])))
           for g in ("inputs", "hints", "outputs")}
    features = Features(inputs=dps["inputs"], hints=dps["hints"], lengths=arrays["lengths"])
    return Pool(spec={k: tuple(v) for k, v in meta["spec"].items()}, feedback=Feedback(features, list(dps["outputs"])))


def exists(folder: Path, name: str) -> bool:
    return (Path(folder) / f"{name}.npz").exists() and (Path(folder) / f"{name}.json").exists()


def main(argv: Optional[Sequence[str]] = None) -> None:
    """``python -m evo.tasks.clrs.data FOLDER ALGORITHM SPLIT:LENGTH:NUM:SEED ...``: generate the
    missing pools (the search process runs this as a subprocess: dm-clrs imports tensorflow)."""
    import argparse
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("folder", type=Path)
    ap.add_argument("algorithm")
    ap.add_argument("pools", nargs="+", help="split:length:num_samples:seed")
    args = ap.parse_args(argv)
    for item in args.pools:
        split, length, num, seed = item.split(":")
        name = pool_name(args.algorithm, split, int(length), int(num), int(seed))
        if not exists(args.folder, name):
            save(generate(args.algorithm, split, int(length), int(num), int(seed)), args.folder, name)
            print(f"generated {name}", flush=True)


if __name__ == "__main__":
    main()

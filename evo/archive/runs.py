"""The one way to find runs and open what they stored: run folders of ``python -m evo.run``, their
``archive.sqlite`` files, and dataset files (``python -m evo.dataset``: the evaluated children of some runs as
one gzip JSON-lines file, read here like an archive).

Used by the analysis (evo.compare, evo.heldout, evo.dataset, evo.surrogate_quality, evo.lineage) and by the
search's surrogate (``surrogate.prior``). Errors are :class:`RunsError`, worded for the command line.
"""

from __future__ import annotations

import glob
import gzip
import json
import re
import sqlite3
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

from evo import outcome
from evo.archive.database import Archive

ARCHIVE = "archive.sqlite"
DATASET_FORMAT = "evo-children/1"
DATASET_SUFFIXES = (".jsonl.gz", ".jsonl")
T = TypeVar("T")
# Task keys that change what the LM is shown or may write, or only how fast a program trains (train_loop), not how it
# is scored; every other task key (train steps, batch size, learning rate, data and seeds...) is part of the protocol.
NOT_PROTOCOL = ("allowed_imports", "banned_words", "seeds_dir", "train_loop")


class RunsError(Exception):
    """A path that names no run, or a run that cannot be read: reported as ``error: ...`` with exit code 2."""


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _expand(arg: str, nothing: str) -> list[Path]:
    """The paths a command-line argument names: the glob's matches, or the path itself."""
    matches = sorted(glob.glob(arg, recursive=True)) if glob.has_magic(arg) else [arg]
    if not matches:
        raise RunsError(f"{nothing}: nothing matches {arg!r}")
    return [Path(m) for m in matches]


def _natural(path: Path) -> list:
    """Sort key: sweep job 10 after job 9."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


# ---------------------------------------------------------------- finding runs

def find_run_folders(paths: Sequence[str]) -> list[Path]:
    """Run folders named by ``paths``: a folder holding archive.sqlite, a glob, or a folder searched
    recursively (a multirun sweep). Sorted naturally, each once."""
    found: list[Path] = []
    for arg in paths:
        for m in _expand(arg, "no run folders found"):
            if m.is_file() and m.name == ARCHIVE:
                found.append(m.parent)
            elif not m.exists():
                raise RunsError(f"{m} does not exist")
            elif not m.is_dir():
                raise RunsError(f"{m} is not a folder: pass run folders of `python -m evo.run` or a sweep folder")
            elif (m / ARCHIVE).is_file():
                found.append(m)
            else:
                below = sorted((p.parent for p in m.rglob(ARCHIVE)), key=_natural)
                if not below:
                    raise RunsError(f"{m} has no {ARCHIVE} (nor any folder below it): pass run folders of "
                                    "`python -m evo.run`, or a multirun sweep folder")
                for job in m.rglob(".hydra"):   # a sweep job that died before its archive was made
                    if not (job.parent / ARCHIVE).exists():
                        _warn(f"{job.parent} has no {ARCHIVE}: skipped")
                found.extend(below)
    unique = {p.resolve(): p for p in found}
    if not unique:
        raise RunsError("no run folders found")
    return sorted(unique.values(), key=_natural)


def find_archives(paths: Sequence[str]) -> list[Path]:
    """Archive (or dataset) files named by ``paths``: a file, a run folder holding archive.sqlite, a glob, or a
    folder searched recursively (a multirun sweep; as :func:`find_run_folders`). Each once."""
    found: list[Path] = []
    for arg in paths:
        for m in _expand(arg, "no archive found"):
            if m.is_file():
                found.append(m)
                continue
            try:
                found.extend(folder / ARCHIVE for folder in find_run_folders([str(m)]))
            except RunsError as exc:
                raise RunsError(f"no archive found: {exc}") from None
    return list({p.resolve(): p for p in found}.values())


# ---------------------------------------------------------------- opening archives

def open_run(path) -> Archive:
    """A run folder's (or an archive file's) archive, read-only."""
    path = Path(path)
    return Archive(path / ARCHIVE if path.is_dir() else path, readonly=True)


def open_archive(path: Path, cache: bool) -> tuple[Archive, bool]:
    """(archive, writable). Writable only for a cache kept in the archive (embeddings); an archive that
    refuses writes is read without caching."""
    if cache:
        try:
            return Archive(path), True
        except sqlite3.Error as exc:
            _warn(f"{path} cannot be written ({exc}): read without caching its embeddings")
    try:
        archive = Archive(path, readonly=True)
        archive.query("SELECT 1 FROM children LIMIT 1")   # a file that is no archive fails here, not later
        return archive, False
    except sqlite3.Error as exc:
        raise RunsError(f"{path} cannot be read as an archive: {exc}") from None


@contextmanager
def opened(paths: Iterable, open_one: Callable[[Any], T]) -> Iterator[list[T]]:
    """``with opened(folders, load_run) as runs:`` each of ``paths`` opened by ``open_one`` (into anything that
    holds its ``archive``, None for a dataset file), and every archive opened closed on leaving: also when a later
    path cannot be opened or the work raises."""
    items: list[T] = []
    try:
        for path in paths:
            items.append(open_one(path))
        yield items
    finally:
        for item in items:
            if item.archive is not None:
                item.archive.close()


def command(work: Callable[[], Any]) -> int:
    """A command line's exit code for ``work`` (a command's body): 0, or 2 with ``error: ...`` on stderr for a
    :class:`RunsError` (each command's own errors derive from it)."""
    try:
        work()
    except RunsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def stored_settings(archive: Archive, path) -> dict:
    """A run's stored settings (evo.run keeps them in archive meta ``fingerprint``)."""
    stored = archive.get_meta("fingerprint")
    if stored is None:
        raise RunsError(f"{path} has no stored settings (meta 'fingerprint'): not a run's archive")
    return json.loads(stored)


def trained_programs(archive: Archive) -> list[dict]:
    """What a surrogate learns from: every program of the archive that trained to the end (seeds included),
    once, as first trained (code_hash, code, num_params, val_accuracy, round), in id order."""
    first: dict = {}
    for r in archive.query("SELECT round, code, code_hash, num_params, val_accuracy FROM children WHERE status IN "
                           "(?, ?) AND num_params IS NOT NULL AND val_accuracy IS NOT NULL ORDER BY id", outcome.WORKING):
        first.setdefault(r["code_hash"], r)
    return list(first.values())


# ---------------------------------------------------------------- dataset files

def is_dataset(path) -> bool:
    return str(path).endswith(DATASET_SUFFIXES)


def read_dataset(path, header_only: bool = False) -> tuple[dict, list[dict]]:
    """(header, rows) of a dataset file; ``header_only``: no rows are parsed (the config check at start-up)."""
    path = Path(path)
    if not path.is_file():
        raise RunsError(f"no dataset file at {path}")
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rt") as f:
            header = json.loads(f.readline())
            rows = [] if header_only else [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError) as exc:
        raise RunsError(f"{path} cannot be read as a dataset ({DATASET_FORMAT}): {exc}") from None
    if header.get("format") != DATASET_FORMAT:
        raise RunsError(f"{path} is not an evo dataset: its first line says format {header.get('format')!r}, "
                        f"expected {DATASET_FORMAT!r}")
    return header, rows


def dataset_trained(path) -> list[dict]:
    """The dataset's trained programs as :func:`trained_programs` gives an archive's."""
    _, rows = read_dataset(path)
    return [{k: r[k] for k in ("round", "code", "code_hash", "num_params", "val_accuracy")} for r in rows
            if r["status"] in outcome.WORKING and r["num_params"] is not None and r["val_accuracy"] is not None]


def read_trained(path) -> list[dict]:
    """:func:`trained_programs` of a run folder, an archive file or a dataset file."""
    if is_dataset(path):
        return dataset_trained(path)
    archive = open_run(path)
    try:
        return trained_programs(archive)
    finally:
        archive.close()


# ---------------------------------------------------------------- training protocols

def protocol(fingerprint: dict) -> dict:
    """The training protocol of a run, from its stored settings (archive meta ``fingerprint``)."""
    task = fingerprint.get("task") or {}
    return {k: v for k, v in task.items() if k not in NOT_PROTOCOL}


def source_protocol(path) -> dict:
    """The training protocol of a dataset file, a run folder or an archive file."""
    if is_dataset(path):
        return read_dataset(path, header_only=True)[0]["protocol"]
    archive = open_run(path)
    try:
        return protocol(stored_settings(archive, path))
    finally:
        archive.close()


def protocol_difference(a: dict, b: dict) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))

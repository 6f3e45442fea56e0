"""``python -m evo.dataset``: the evaluated children of some runs as one portable file.

    python -m evo.dataset outputs/benchmarks/surrogate_efficiency/* --out benchmarks/data/mnist1d_children.jsonl.gz

A dataset is gzip-compressed JSON lines: a header line, then one line per program that FILTERANDEVAL
judged (trained, or stopped by one of its checks, with the status; copies, children never evaluated
and children the surrogate skipped are left out), once per code hash, first run first. Each line has
the code and what its evaluation gave (status, parameter count, validation and test accuracy,
fitness), plus where it came from (run, round, LM, temperature). It is what predictor results are
checked on without the archives: ``python -m evo.surrogate_quality FILE`` and ``surrogate.prior=[FILE]``
read it like an archive.

The header records the task and its training protocol (train steps, batch size, learning rate, data
and seed settings, from each run's stored settings). A score means something only under one protocol,
so runs that trained their children differently are refused, naming the keys that differ. The file is
byte-for-byte reproducible from the same runs (rows in run then child order, no gzip timestamp).
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Optional, Sequence

from evo import outcome
from evo.archive.runs import (DATASET_FORMAT, RunsError, command, find_archives, is_dataset, open_run, protocol,
                              protocol_difference, read_dataset, stored_settings)

EVALUATED = (*outcome.WORKING, *outcome.FAILED)
COLUMNS = ("code_hash", "status", "num_params", "val_accuracy", "test_accuracy", "fitness", "round", "run",
           "child_id", "seed", "lm_name", "temperature", "reason", "code")


class DatasetError(RunsError):
    """A bad input: reported as ``error: ...`` with exit code 2."""


def _run_rows(archive_path: Path, run: str) -> tuple[dict, list[dict]]:
    archive = open_run(archive_path)
    try:
        fp = stored_settings(archive, archive_path)
        rows = [{"child_id": r.pop("id"), **r} for r in archive.rows(
            ("id", "round", "code", "code_hash", "status", "reason", "num_params", "val_accuracy", "test_accuracy",
             "fitness", "lm_name", "temperature"), status=EVALUATED)]
    finally:
        archive.close()
    for r in rows:
        r.update(run=run, seed=fp.get("seed"))
        if r["reason"] and len(r["reason"]) > 300:   # tracebacks stay in the archive; the gist travels
            r["reason"] = r["reason"][:300] + "..."
    return fp, rows


def build(run_dirs: Sequence[Path], names: Optional[Sequence[str]] = None) -> tuple[dict, list[dict]]:
    """(header, rows) of the dataset of these runs (folders or archive files), one row per code hash."""
    archives = find_archives([str(p) for p in run_dirs])
    names = list(names) if names else [_run_name(a) for a in archives]
    first_protocol, sources, seen, rows = None, [], set(), []
    for path, name in zip(archives, names):
        fp, run_rows = _run_rows(path, name)
        prot = protocol(fp)
        if first_protocol is None:
            first_protocol, first_path = prot, path
        elif prot != first_protocol:
            keys = protocol_difference(prot, first_protocol)
            raise DatasetError(f"{path} trained its children under another protocol than {first_path} "
                               f"(task keys {', '.join(keys)}): their scores cannot be pooled in one dataset")
        new = [r for r in run_rows if r["code_hash"] not in seen]
        seen.update(r["code_hash"] for r in new)
        rows += new
        lm = fp.get("lm") if isinstance(fp.get("lm"), dict) else {"model": fp.get("lm.model")}   # older runs: lm.model
        sources.append({"run": name, "seed": fp.get("seed"), "lm": lm.get("model"),
                        "evaluated": len(run_rows), "new": len(new)})
    counts = Counter(r["status"] for r in rows)
    header = {"format": DATASET_FORMAT, "task": first_protocol.get("name"), "protocol": first_protocol,
              "children": len(rows), "trained": sum(counts[s] for s in outcome.WORKING),
              "statuses": dict(sorted(counts.items())), "sources": sources}
    return header, rows


def _run_name(archive: Path) -> str:
    """A run's name in the dataset: its folder relative to the working directory when inside it."""
    folder = archive.parent.resolve()
    try:
        return str(folder.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(folder)


def write(path: Path, header: dict, rows: Sequence[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, compresslevel=9) as gz:   # mtime=0: reproducible bytes
        gz.write((json.dumps(header, sort_keys=True) + "\n").encode())
        for r in rows:
            gz.write((json.dumps({k: r.get(k) for k in COLUMNS}) + "\n").encode())
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buf.getvalue() if str(path).endswith(".gz") else gzip.decompress(buf.getvalue()))
    tmp.replace(path)


def summary_text(header: dict) -> str:
    lines = [f"{header['children']} evaluated children ({header['trained']} trained: ok or filtered), task "
             f"{header['task']}, from {len(header['sources'])} runs",
             "statuses: " + ", ".join(f"{k} {v}" for k, v in header["statuses"].items()),
             "protocol: " + ", ".join(f"{k}={v}" for k, v in header["protocol"].items() if k != "_target_")]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m evo.dataset", epilog="Read one back: python -m evo.dataset --show FILE",
        description="Write the evaluated children of some runs (trained, or stopped by a check, with its status; "
                    "once per program) as one gzip JSON-lines file that python -m evo.surrogate_quality and "
                    "surrogate.prior read like an archive. Runs trained under different task settings are refused.")
    p.add_argument("runs", nargs="*", metavar="RUN", help="run folders, archive files, globs or sweep folders")
    p.add_argument("--out", type=Path, help="the dataset file to write (.jsonl.gz)")
    p.add_argument("--show", type=Path, metavar="FILE", help="print what a dataset file holds")
    args = p.parse_args(argv)
    if not args.show and not (args.runs and args.out):
        p.error("give the runs and --out FILE (or --show FILE)")

    def work():
        if args.show:
            print(summary_text(read_dataset(args.show)[0]))
            return
        if not is_dataset(args.out):
            raise DatasetError(f"--out {args.out}: name the file *.jsonl.gz (or *.jsonl)")
        header, rows = build([Path(r) for r in args.runs])
        write(args.out, header, rows)
        print(summary_text(header) + f"\nwrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")
    return command(work)   # exit code 2 for a RunsError (DatasetError among them)


if __name__ == "__main__":
    sys.exit(main())

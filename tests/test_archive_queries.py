"""The archive's named queries (no SQL outside evo/archive) and the status enum, on a real SQLite file."""

from __future__ import annotations

import json
import shutil
import sqlite3
from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace

import pytest

from evo import outcome
from evo.archive import Archive
from evo.archive.database import RESULT_COLUMNS
from evo.archive.runs import RunsError, command, open_archive, opened
from evo.search.program import code_hash

OLD_RUN = Path(__file__).resolve().parent / "data" / "old_layout_run" / "run"


def prog(i: int) -> str:
    return f"import flax.linen as nn\n\nclass Model(nn.Module):\n    width: int = {i}\n"


@pytest.fixture
def archive(tmp_path):
    """Seeds (round -1), two rounds, one prompt's batch with a copy, the surrogate's decisions, a submission."""
    a = Archive(tmp_path / "archive.sqlite")
    ids = {}
    for i, (rnd, status, fit) in enumerate([(-1, outcome.OK, -5.0), (-1, outcome.FILTERED, None), (-1, outcome.CRASHED, None),
                                            (0, outcome.OK, -3.0), (0, outcome.OK, -1.0), (0, outcome.SYNTAX_ERROR, None),
                                            (1, outcome.OK, -2.0)]):
        cid = a.insert_child(round=rnd, code=prog(i), code_hash=code_hash(prog(i)), seed_name=f"s{i}" if rnd < 0 else None)
        a.record_result(cid, status=status, fitness=fit, num_params=100 * (i + 1) if fit is not None else None)
        ids[i] = cid
    prompt = a.insert_prompt(1, 0, [ids[3]], {"n": 1}, "the prompt")
    first = a.insert_child(round=1, code=prog(10), code_hash=code_hash(prog(10)), prompt_id=prompt, attempt=0)
    copy = a.insert_child(round=1, code=prog(10), code_hash=code_hash(prog(10)), prompt_id=prompt, attempt=0)
    screened = a.insert_child(round=1, code=prog(11), code_hash=code_hash(prog(11)))
    a.set_screening(screened, 0.5, "explore")
    a.log_event("eval_started", child_id=first, detail={"job": "42"})
    a.start_round(0, [ids[0]], "seeds")
    a.finish_round(0)
    a.start_round(1, [ids[3], ids[4]], "paper_topk")
    return a, ids, {"first": first, "copy": copy, "screened": screened, "prompt": prompt}


def test_children_rows_and_counts_filter_by_keyword(archive):
    a, ids, new = archive
    assert [c.id for c in a.children(round=-1, status=outcome.WORKING)] == [ids[0], ids[1]]
    assert [c.id for c in a.children(round=1, status=outcome.PENDING, screening=None)] == [new["first"]]
    assert [c.id for c in a.children(round=1, status=outcome.PENDING, screening=("train", "explore"))] == [new["screened"]]
    assert a.count() == 10 and a.count(min_round=0) == 7 and a.count(max_round=-1) == 3
    assert a.count(prompt_id=new["prompt"], attempt=0, status=outcome.DUPLICATE) == 1
    assert a.rows(("id", "fitness"), min_round=0, max_round=0, status=outcome.OK) == [
        {"id": ids[3], "fitness": -3.0}, {"id": ids[4], "fitness": -1.0}]
    assert [r["id"] for r in a.rows(("id",), not_null=("num_params",))] == [ids[0], ids[3], ids[4], ids[6]]
    assert [b["id"] for b in a.best(2)] == [ids[4], ids[6]]
    assert a.largest_seed_size() == 100
    assert a.rounds_finished() == 1 and [json.loads(r["parents"]) for r in a.rounds()] == [[ids[0]], [ids[3], ids[4]]]
    assert [(p["round"], p["prompt"]) for p in a.prompts()] == [(1, "the prompt")]
    assert a.unrecorded_submissions() == {new["first"]: {"job": "42"}}
    assert a.get(new["copy"]).status == outcome.DUPLICATE


def test_a_column_that_does_not_exist_is_refused_not_interpolated(archive):
    a, _, _ = archive
    with pytest.raises(KeyError, match="no column"):
        a.rows(("id", "1; DROP TABLE children"))
    with pytest.raises(KeyError, match="no column"):
        a.count(not_null=("nothing",))
    assert a.count() == 10


def test_statuses_are_one_str_enum_stored_as_their_plain_values(archive):
    a, ids, _ = archive
    assert issubclass(outcome.Status, str) and outcome.OK is outcome.Status.OK
    assert [s.value for s in outcome.Status] == [s for s in outcome.Status]   # equal to its string
    assert f"{outcome.SKIPPED}" == str(outcome.SKIPPED) == "skipped_by_surrogate"
    db = sqlite3.connect(a.path)
    assert db.execute("SELECT status, typeof(status) FROM children WHERE id = ?", (ids[0],)).fetchone() == ("ok", "text")
    stored = {s for (s,) in db.execute("SELECT DISTINCT status FROM children")}
    db.close()
    assert stored <= {s.value for s in outcome.Status} and {outcome.Status(s) for s in stored} >= {outcome.OK}


def test_an_archive_written_before_the_enum_reads_through_the_named_queries(tmp_path):
    shutil.copy(OLD_RUN / "archive.sqlite", tmp_path / "archive.sqlite")   # by commit 6f02ef3: plain strings
    a = Archive(tmp_path / "archive.sqlite", readonly=True)
    statuses = [r["status"] for r in a.rows(("status",))]
    assert statuses and all(outcome.Status(s) in outcome.Status for s in statuses)
    assert len(a.children(round=-1)) == 4 and a.count(min_round=0, status=outcome.OK) == 1
    a.close()


OLD_ARCHIVES = [OLD_RUN / "archive.sqlite",
                *sorted((Path(__file__).resolve().parent / "data" / "ablation_flags_6f02ef3").glob("*.sqlite"))]


@pytest.mark.parametrize("old", [None, *OLD_ARCHIVES], ids=lambda p: "new" if p is None else p.stem)
def test_an_evaluation_is_stored_whole_in_new_and_old_archives(tmp_path, old):
    # RESULT_COLUMNS is read from outcome.Evaluation's fields: every field must be a column that record_result
    # can write and read back, in a fresh archive and in archives written by older code (after their migration).
    assert RESULT_COLUMNS == tuple(f.name for f in fields(outcome.Evaluation)) and "log_tail" in RESULT_COLUMNS
    path = tmp_path / "archive.sqlite"
    if old is not None:
        shutil.copy(old, path)
    a = Archive(path)
    n_before = a.count()
    ev = outcome.Evaluation(status=outcome.OK, reason="r", num_params=7, val_accuracy=0.5, test_accuracy=0.25,
                            fitness=-3.5, eval_seconds=1.5, train_seconds=1.0, compile_seconds=0.5, device="cpu",
                            isolation="bwrap", log_tail="tail")
    cid = a.insert_child(round=99, code=prog(1234), code_hash=code_hash(prog(1234)))
    a.record_result(cid, **ev.as_dict())
    assert a.rows(RESULT_COLUMNS, round=99) == [ev.as_dict()]
    assert a.count() == n_before + 1
    with pytest.raises(KeyError, match="not result columns"):
        a.record_result(cid, wall_s=1.0)
    a.close()


def test_opened_closes_every_archive_it_opened_when_a_later_one_fails_or_the_work_raises(tmp_path, capsys):
    for name in ("a", "b"):
        Archive(tmp_path / name / "archive.sqlite").close()
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "archive.sqlite").write_text("not a database")
    seen = []

    def open_one(folder):
        archive, _ = open_archive(folder / "archive.sqlite", cache=False)   # RunsError for c
        seen.append(SimpleNamespace(archive=archive))
        return seen[-1]

    def is_closed(archive) -> bool:
        try:
            archive.count()
        except sqlite3.ProgrammingError:   # "Cannot operate on a closed database"
            return True
        return False

    with opened([tmp_path / "a", tmp_path / "b"], open_one) as runs:
        assert len(runs) == 2 and not any(is_closed(r.archive) for r in runs)
    assert all(is_closed(r.archive) for r in runs)
    seen.clear()
    with pytest.raises(RunsError, match="cannot be read as an archive"):
        with opened([tmp_path / "a", tmp_path / "b", tmp_path / "c"], open_one):
            raise AssertionError("not reached: c fails to open")
    assert len(seen) == 2 and all(is_closed(r.archive) for r in seen)
    seen.clear()
    with pytest.raises(ZeroDivisionError):
        with opened([tmp_path / "a"], open_one):
            1 / 0
    assert len(seen) == 1 and is_closed(seen[0].archive)
    # a command's RunsError is its exit code 2 and one line on stderr; any other error is not swallowed
    assert command(lambda: None) == 0
    assert command(lambda: open_archive(tmp_path / "c" / "archive.sqlite", cache=False)) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'c' / 'archive.sqlite'} cannot be read")
    with pytest.raises(ZeroDivisionError):
        command(lambda: 1 / 0)

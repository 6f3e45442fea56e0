"""The SQLite archive: WAL, append-only rows, duplicates by normalised AST, transactions."""

from __future__ import annotations

import sqlite3

import pytest

from evo import outcome
from evo.archive import Archive
from evo.search.program import code_hash

PROG = "import flax.linen as nn\n\nclass Model(nn.Module):\n    pass\n"


def test_wal_and_round_trip(tmp_path):
    a = Archive(tmp_path / "archive.sqlite")
    assert a.query("PRAGMA journal_mode")[0]["journal_mode"] == "wal"
    cid = a.insert_child(round=0, code=PROG, code_hash=code_hash(PROG), parents=[1, 2], repairs=["x"], temperature=0.6)
    a.record_result(cid, status=outcome.OK, num_params=10, val_accuracy=0.9, test_accuracy=0.8, fitness=-1.0)
    a.close()
    b = Archive(tmp_path / "archive.sqlite")
    child = b.get(cid)
    assert (child.status, child.num_params, child.parents, child.fitness) == (outcome.OK, 10, (1, 2), -1.0)


def test_rows_are_final_once_evaluated_and_never_deleted(tmp_path):
    a = Archive(tmp_path / "a.sqlite")
    cid = a.insert_child(round=0, code=PROG, code_hash=code_hash(PROG))
    a.record_result(cid, status=outcome.CRASHED, reason="boom")
    with pytest.raises(sqlite3.IntegrityError, match="final"):
        a.record_result(cid, status=outcome.OK)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        a._exec("DELETE FROM children")
    with pytest.raises(sqlite3.IntegrityError):
        a._exec("UPDATE children SET code = 'x' WHERE id = ?", (cid,))
    assert a.get(cid).status == outcome.CRASHED


def test_same_program_modulo_formatting_is_a_duplicate(tmp_path):
    a = Archive(tmp_path / "a.sqlite")
    first = a.insert_child(round=0, code=PROG, code_hash=code_hash(PROG))
    reformatted = '"""A docstring."""\nimport flax.linen as nn\n\n\nclass Model(nn.Module):  # comment\n  pass\n'
    assert code_hash(reformatted) == code_hash(PROG)
    second = a.insert_child(round=0, code=reformatted, code_hash=code_hash(reformatted))
    row = a.query("SELECT status, duplicate_of FROM children WHERE id = ?", (second,))[0]
    assert row == {"status": outcome.DUPLICATE, "duplicate_of": first}
    other = PROG.replace("pass", "x = 1")
    assert code_hash(other) != code_hash(PROG)


def test_transaction_is_all_or_nothing(tmp_path):
    a = Archive(tmp_path / "a.sqlite")
    with pytest.raises(RuntimeError):
        with a.transaction():
            a.insert_child(round=0, code=PROG, code_hash="h1")
            raise RuntimeError("killed mid-batch")
    assert a.query("SELECT COUNT(*) AS n FROM children")[0]["n"] == 0


def test_retired_and_history(tmp_path):
    a = Archive(tmp_path / "a.sqlite")
    ids = []
    for i in range(3):
        code = PROG.replace("pass", f"x = {i}")
        ids.append(a.insert_child(round=0, code=code, code_hash=code_hash(code)))
        a.record_result(ids[-1], status=outcome.OK if i else outcome.FILTERED, fitness=-float(i))
    seed = a.insert_child(round=-1, seed_name="cnn", code=PROG, code_hash=code_hash(PROG))
    a.record_result(seed, status=outcome.OK, fitness=-5.0)
    assert [c.id for c in a.history()] == ids[1:]  # scored children only; seeds are not in G
    a.start_round(0, [seed], "seeds")
    a.start_round(1, [ids[1]], "paper_topk")
    assert a.retired() == {ids[1]}

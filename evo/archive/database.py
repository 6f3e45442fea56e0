"""The search archive: one SQLite database (WAL) per run folder, the record of truth.

Table ``children`` holds one row per generated program (and per seed, ``round = -1``), inserted as
soon as it is generated with status ``pending``. Its evaluation result is written once; triggers
make a row final after that and forbid deletes, so nothing is ever overwritten or lost. ``rounds``
records the parents chosen for each round and when it finished, ``prompts`` each prompt and whether
all its samples were stored, ``events`` an append-only log (evaluation starts and finishes) that
makes "no child was evaluated twice" checkable. Resume reads all of this back.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from evo import outcome
from evo.outcome import Evaluation

SCHEMA_VERSION = 4   # 2: children.soft_prompt_round and the tuning table; 3: children.device, cost_ledger;
                     # 4: children.predicted and .surrogate, the embeddings table

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rounds (
    round INTEGER PRIMARY KEY,
    parents TEXT NOT NULL,            -- JSON list of children.id used as in-context parents
    selection TEXT,                   -- how they were chosen (e.g. "seeds", "paper_topk")
    started_at REAL NOT NULL,
    finished_at REAL
);
CREATE TABLE IF NOT EXISTS prompts (
    id INTEGER PRIMARY KEY,
    round INTEGER NOT NULL,
    prompt_index INTEGER NOT NULL,
    parents TEXT NOT NULL,            -- JSON list of children.id in prompt order
    target TEXT NOT NULL,             -- JSON target metrics written into the prompt
    prompt TEXT NOT NULL,
    complete INTEGER NOT NULL DEFAULT 0,
    UNIQUE (round, prompt_index)
);
CREATE TABLE IF NOT EXISTS children (
    id INTEGER PRIMARY KEY,
    round INTEGER NOT NULL,           -- -1: a seed program (initial population, not in the history G)
    seed_name TEXT,
    prompt_id INTEGER REFERENCES prompts(id),
    sample_index INTEGER,
    attempt INTEGER NOT NULL DEFAULT 0,  -- 0: the prompt's first batch; >0: a resample after copies
    parents TEXT,                     -- JSON list of children.id
    prompt TEXT,
    temperature REAL,
    raw_completion TEXT,              -- what the LM wrote, before any repair
    code TEXT NOT NULL,               -- the full program that is evaluated
    code_hash TEXT NOT NULL,          -- sha256 of the normalised AST
    repairs TEXT NOT NULL DEFAULT '[]',  -- JSON list of repairs applied to raw_completion
    stop_reason TEXT,
    duplicate_of INTEGER REFERENCES children(id),
    status TEXT NOT NULL DEFAULT 'pending',
    reason TEXT,
    num_params INTEGER,
    val_accuracy REAL,
    test_accuracy REAL,
    fitness REAL,
    lm_name TEXT,
    tokens_in INTEGER,
    tokens_out INTEGER,
    lm_seconds REAL,
    soft_prompt_round INTEGER,        -- sampled with the soft prompt tuned after this round; NULL: the base LM
    eval_seconds REAL,
    train_seconds REAL,
    compile_seconds REAL,
    device TEXT,                      -- the backend the child trained on: cpu | gpu | tpu
    predicted REAL,                   -- the surrogate's predicted score (surrogate=cole), before training
    surrogate TEXT,                   -- its decision: train | explore | skip | all (too little data to rank)
    isolation TEXT,
    log_tail TEXT,
    created_at REAL NOT NULL,
    evaluated_at REAL
);
CREATE INDEX IF NOT EXISTS children_round ON children(round);
CREATE INDEX IF NOT EXISTS children_hash ON children(code_hash);
CREATE INDEX IF NOT EXISTS children_status ON children(status);
CREATE TABLE IF NOT EXISTS tuning (
    round INTEGER PRIMARY KEY,        -- TRAIN after this round: the soft prompt that round + 1 samples with
    children TEXT NOT NULL,           -- JSON list of children.id trained on (C_ev minus the new parents)
    texts INTEGER NOT NULL,           -- programs actually used (0: nothing to train on, prompt unchanged)
    tokens INTEGER NOT NULL,
    step_losses TEXT NOT NULL,        -- JSON: mean token cross-entropy of each optimiser step (nats)
    epoch_losses TEXT NOT NULL,       -- JSON: per-epoch mean
    seconds REAL NOT NULL,
    adapter TEXT,                     -- folder of the saved soft prompt, relative to the run folder
    finished_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    round INTEGER,
    child_id INTEGER,
    detail TEXT
);
CREATE TABLE IF NOT EXISTS embeddings (   -- the surrogate's embedding of each program, by embedder
    code_hash TEXT NOT NULL,
    embedder TEXT NOT NULL,
    vector BLOB NOT NULL,             -- float32, little-endian
    PRIMARY KEY (code_hash, embedder)
);
CREATE TRIGGER IF NOT EXISTS children_no_delete BEFORE DELETE ON children
BEGIN SELECT RAISE(ABORT, 'children rows are append-only'); END;
CREATE TRIGGER IF NOT EXISTS children_final_v4 BEFORE UPDATE ON children
WHEN OLD.status NOT IN ('pending', 'skipped_by_surrogate') OR NEW.code IS NOT OLD.code OR NEW.code_hash IS NOT OLD.code_hash
     OR NEW.raw_completion IS NOT OLD.raw_completion OR NEW.parents IS NOT OLD.parents
BEGIN SELECT RAISE(ABORT, 'a child row is final once evaluated; its program never changes'); END;
CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
"""

# The cost ledger: what each round spent, in the archive itself (``SELECT * FROM cost_ledger``).
# Round -1 is the seeds. LM seconds are per sample (a batch's time split over its samples); training
# seconds count the trained children only, split by the backend they trained on; eval seconds are
# the sandbox's wall time of every child, failures included; tuning is TRAIN after that round.
COST_LEDGER = """
CREATE VIEW IF NOT EXISTS cost_ledger AS
SELECT c.round AS round,
       COUNT(*) AS children,
       COALESCE(SUM(c.tokens_in), 0) AS lm_tokens_in,
       COALESCE(SUM(c.tokens_out), 0) AS lm_tokens_out,
       COALESCE(SUM(c.lm_seconds), 0.0) AS lm_seconds,
       COALESCE(SUM(CASE WHEN c.device IS NOT 'gpu' THEN c.train_seconds END), 0.0) AS train_seconds_cpu,
       COALESCE(SUM(CASE WHEN c.device = 'gpu' THEN c.train_seconds END), 0.0) AS train_seconds_gpu,
       COALESCE(SUM(c.eval_seconds), 0.0) AS eval_seconds,
       COALESCE((SELECT t.seconds FROM tuning t WHERE t.round = c.round), 0.0) AS tuning_seconds
FROM children c GROUP BY c.round;
"""

# The columns an evaluation writes (record_result): the fields of outcome.Evaluation, its one owner.
RESULT_COLUMNS = tuple(f.name for f in fields(Evaluation))


_ANY = object()   # a filter left out (``screening=None`` means "not screened yet")


@dataclass
class Child:
    """A row of ``children`` as the search uses it."""
    id: int
    round: int
    code: str
    code_hash: str
    status: str
    num_params: Optional[int] = None
    val_accuracy: Optional[float] = None
    test_accuracy: Optional[float] = None
    fitness: Optional[float] = None
    seed_name: Optional[str] = None
    parents: tuple = ()


class Archive:
    def __init__(self, path: str | Path, readonly: bool = False):
        """``readonly``: for tools that only read a run (evo.compare): no schema change, no write."""
        self.path = Path(path)
        self._lock = threading.RLock()
        self._columns: Optional[set[str]] = None   # children's columns, read once (Archive._column)
        if readonly:
            self._db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False,
                                       isolation_level=None)
            self._db.row_factory = sqlite3.Row
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One connection shared by the search thread and evaluator threads, serialised by a lock.
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable at checkpoints, safe on kill -9
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.execute("PRAGMA foreign_keys=ON")
        with self._lock:
            self._db.executescript(SCHEMA)
            self._migrate()
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    def _migrate(self) -> None:
        """Older archives lack ``children.soft_prompt_round`` (schema 1; NULL there: no tuning existed)
        and ``children.device`` (schema 2; NULL there: every child trained on the CPU)."""
        columns = {r["name"] for r in self._db.execute("PRAGMA table_info(children)")}
        self._db.execute("DROP TRIGGER IF EXISTS children_final")   # schema < 4: skipped children were final
        for column, sql_type in (("soft_prompt_round", "INTEGER"), ("device", "TEXT"), ("predicted", "REAL"),
                                 ("surrogate", "TEXT")):
            if column not in columns:
                self._db.execute(f"ALTER TABLE children ADD COLUMN {column} {sql_type}")
                self._db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
        self._db.executescript(COST_LEDGER)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- low level -------------------------------------------------------------------------------
    def _exec(self, sql: str, args: Iterable[Any] = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, tuple(args))

    def _rows(self, sql: str, args: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, tuple(args)).fetchall()

    def query(self, sql: str, args: Iterable[Any] = ()) -> list[dict]:
        """Read-only helper for reports and tests."""
        return [dict(r) for r in self._rows(sql, args)]

    def transaction(self):
        """``with archive.transaction():`` groups writes so a kill leaves all or none of them."""
        return _Transaction(self)

    # -- meta ------------------------------------------------------------------------------------
    def get_meta(self, key: str) -> Optional[str]:
        rows = self._rows("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0]["value"] if rows else None

    def set_meta(self, key: str, value: str) -> None:
        self._exec("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def log_event(self, kind: str, round: Optional[int] = None, child_id: Optional[int] = None,
                  detail: Any = None) -> None:
        self._exec("INSERT INTO events (at, kind, round, child_id, detail) VALUES (?, ?, ?, ?, ?)",
                   (time.time(), kind, round, child_id, json.dumps(detail) if detail is not None else None))

    # -- children --------------------------------------------------------------------------------
    def find_by_hash(self, code_hash: str) -> Optional[int]:
        rows = self._rows("SELECT id FROM children WHERE code_hash = ? ORDER BY id LIMIT 1", (code_hash,))
        return rows[0]["id"] if rows else None

    def insert_child(self, *, round: int, code: str, code_hash: str, **fields: Any) -> int:
        """Insert a generated program. A program already in the archive becomes a ``duplicate``
        of its first occurrence and is never evaluated again."""
        with self._lock:
            first = self.find_by_hash(code_hash)
            if first is not None and "status" not in fields:
                fields.update(status=outcome.DUPLICATE, duplicate_of=first,
                              reason=f"same program (normalised AST) as child {first}", evaluated_at=time.time())
            for key in ("parents", "repairs"):
                if key in fields and not isinstance(fields[key], str):
                    fields[key] = json.dumps(list(fields[key]))
            cols = ["round", "code", "code_hash", "created_at", *fields]
            vals = [round, code, code_hash, time.time(), *fields.values()]
            cur = self._db.execute(
                f"INSERT INTO children ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", vals)
            return cur.lastrowid

    def record_result(self, child_id: int, **result: Any) -> None:
        unknown = set(result) - set(RESULT_COLUMNS)
        if unknown:
            raise KeyError(f"not result columns: {sorted(unknown)}")
        sets = ", ".join(f"{k} = ?" for k in result)
        with self._lock:
            self._db.execute(f"UPDATE children SET {sets}, evaluated_at = ? WHERE id = ?",
                             (*result.values(), time.time(), child_id))
            # a skip is a decision, not an evaluation: "evaluated" stays once per trained child
            kind = "skipped" if result.get("status") == outcome.SKIPPED else "evaluated"
            self.log_event(kind, child_id=child_id, detail={"status": result.get("status")})

    def _child(self, row: sqlite3.Row) -> Child:
        return Child(id=row["id"], round=row["round"], code=row["code"], code_hash=row["code_hash"],
                     status=row["status"], num_params=row["num_params"], val_accuracy=row["val_accuracy"],
                     test_accuracy=row["test_accuracy"], fitness=row["fitness"], seed_name=row["seed_name"],
                     parents=tuple(json.loads(row["parents"] or "[]")))

    # The named queries: what the search, the reports and the tools ask of the children, by keyword, so no
    # SQL is written outside this module. ``round``: one round (-1: the seeds); ``min_round``/``max_round``: a
    # range; ``status``: one status or several; ``screening``: the surrogate's decision (None: not screened
    # yet, or a tuple of decisions); ``prompt_id``/``attempt``: one prompt's batch; ``not_null``: columns
    # that must hold a value.
    def _children_where(self, *, round: Optional[int] = None, min_round: Optional[int] = None,
                        max_round: Optional[int] = None, status=None, screening=_ANY, prompt_id: Optional[int] = None,
                        attempt: Optional[int] = None, not_null: Sequence[str] = ()) -> tuple[str, list]:
        clauses, args = [], []
        for sql, value in (("round = ?", round), ("round >= ?", min_round), ("round <= ?", max_round),
                           ("prompt_id = ?", prompt_id), ("attempt = ?", attempt)):
            if value is not None:
                clauses.append(sql)
                args.append(value)
        if status is not None:
            statuses = (status,) if isinstance(status, str) else tuple(status)
            clauses.append(f"status IN ({', '.join('?' * len(statuses))})")
            args += statuses
        if screening is None:
            clauses.append("surrogate IS NULL")
        elif screening is not _ANY:
            clauses.append(f"surrogate IN ({', '.join('?' * len(screening))})")
            args += list(screening)
        clauses += [f"{self._column(c)} IS NOT NULL" for c in not_null]
        return " AND ".join(clauses) or "1", args

    def _column(self, name: str) -> str:
        """``name`` if it is a column of ``children`` (column names cannot be bound as parameters)."""
        if self._columns is None:
            self._columns = {r["name"] for r in self._rows("PRAGMA table_info(children)")}
        if name not in self._columns:
            raise KeyError(f"children has no column {name!r}")
        return name

    def children(self, **where: Any) -> list[Child]:
        """The children that match ``where`` (the keywords above), as the search uses them, in id order."""
        sql, args = self._children_where(**where)
        return [self._child(r) for r in self._rows(f"SELECT * FROM children WHERE {sql} ORDER BY id", args)]

    def rows(self, columns: Sequence[str], **where: Any) -> list[dict]:
        """Plain rows (``columns`` of ``children``) of the children that match ``where``, in id order."""
        sql, args = self._children_where(**where)
        cols = ", ".join(self._column(c) for c in columns)
        return [dict(r) for r in self._rows(f"SELECT {cols} FROM children WHERE {sql} ORDER BY id", args)]

    def count(self, **where: Any) -> int:
        """How many children match ``where``."""
        sql, args = self._children_where(**where)
        return self._rows(f"SELECT COUNT(*) AS n FROM children WHERE {sql}", args)[0]["n"]

    def best(self, limit: int) -> list[dict]:
        """The ``limit`` fittest scored children (seeds included), fittest first."""
        return [dict(r) for r in self._rows(
            "SELECT id, round, seed_name, num_params, val_accuracy, test_accuracy, fitness FROM children "
            "WHERE status = ? ORDER BY fitness DESC, id LIMIT ?", (outcome.OK, limit))]

    def largest_seed_size(self) -> Optional[int]:
        return self._rows("SELECT MAX(num_params) AS n FROM children WHERE round = -1 AND num_params IS NOT NULL")[0]["n"]

    def get(self, child_id: int) -> Child:
        return self._child(self._rows("SELECT * FROM children WHERE id = ?", (child_id,))[0])

    def pending(self, round: int) -> list[Child]:
        return self.children(round=round, status=outcome.PENDING)

    def seed_ids(self) -> dict[str, int]:
        return {r["seed_name"]: r["id"] for r in self._rows("SELECT id, seed_name FROM children WHERE round = -1")}

    def history(self) -> list[Child]:
        """G of Algorithm 1: every scored child of every round (seeds excluded, as in the paper)."""
        return self.children(min_round=0, status=outcome.OK)

    # -- rounds and prompts ----------------------------------------------------------------------
    def round_parents(self, round: int) -> Optional[list[int]]:
        rows = self._rows("SELECT parents FROM rounds WHERE round = ?", (round,))
        return json.loads(rows[0]["parents"]) if rows else None

    def start_round(self, round: int, parents: list[int], selection: str) -> None:
        self._exec("INSERT INTO rounds (round, parents, selection, started_at) VALUES (?, ?, ?, ?)",
                   (round, json.dumps(parents), selection, time.time()))

    def finish_round(self, round: int) -> None:
        self._exec("UPDATE rounds SET finished_at = ? WHERE round = ? AND finished_at IS NULL", (time.time(), round))

    def round_finished(self, round: int) -> bool:
        return bool(self._rows("SELECT 1 FROM rounds WHERE round = ? AND finished_at IS NOT NULL", (round,)))

    def rounds(self) -> list[dict]:
        """Every started round: its parents (JSON), selection rule, start and finish times."""
        return [dict(r) for r in self._rows("SELECT * FROM rounds ORDER BY round")]

    def rounds_finished(self) -> int:
        return self._rows("SELECT COUNT(*) AS n FROM rounds WHERE finished_at IS NOT NULL")[0]["n"]

    def prompts(self) -> list[dict]:
        """Every prompt sent to the LM: round, index in the round, parents and target (JSON), the text."""
        return [dict(r) for r in self._rows("SELECT id, round, prompt_index, parents, target, prompt FROM prompts "
                                            "ORDER BY id")]

    def unrecorded_submissions(self) -> dict[int, dict]:
        """Pending children that were sent to an evaluator, each with its last submission's detail (a SLURM
        job id): what a restarted search finds still running from the process before."""
        rows = self._rows("SELECT e.child_id, e.detail FROM events e JOIN children c ON c.id = e.child_id "
                          "WHERE e.kind = 'eval_started' AND c.status = ? ORDER BY e.id", (outcome.PENDING,))
        return {r["child_id"]: json.loads(r["detail"]) for r in rows if r["detail"]}

    def retired(self) -> set[int]:
        """Children already used as parents: GETTOP retires them permanently."""
        ids: set[int] = set()
        for r in self._rows("SELECT parents, selection FROM rounds"):
            if r["selection"] != "seeds":
                ids.update(json.loads(r["parents"]))
        return ids

    # -- soft prompt tuning ----------------------------------------------------------------------
    def record_tuning(self, round: int, *, children: list[int], texts: int, tokens: int, step_losses: list[float],
                      epoch_losses: list[float], seconds: float, adapter: Optional[str]) -> None:
        self._exec("INSERT INTO tuning (round, children, texts, tokens, step_losses, epoch_losses, seconds, adapter, "
                   "finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (round, json.dumps(children), texts, tokens, json.dumps(step_losses), json.dumps(epoch_losses),
                    seconds, adapter, time.time()))

    def tuning(self) -> list[dict]:
        """Every TRAIN step so far, by round, with its JSON columns decoded."""
        out = []
        for r in self.query("SELECT * FROM tuning ORDER BY round"):
            for key in ("children", "step_losses", "epoch_losses"):
                r[key] = json.loads(r[key])
            out.append(r)
        return out

    # -- the surrogate's embeddings --------------------------------------------------------------
    def embeddings(self, embedder: str, hashes: list[str]) -> dict:
        """code hash -> float32 vector, for those of ``hashes`` embedded before by ``embedder``."""
        import numpy as np   # only for the embeddings: `evo.run --help` and the analysis open archives without it
        out = {}
        for start in range(0, len(hashes), 500):   # SQLite's variable limit
            part = hashes[start:start + 500]
            for r in self._rows(f"SELECT code_hash, vector FROM embeddings WHERE embedder = ? AND code_hash IN "
                                f"({', '.join('?' * len(part))})", (embedder, *part)):
                out[r["code_hash"]] = np.frombuffer(r["vector"], dtype="<f4")
        return out

    def store_embeddings(self, embedder: str, vectors: dict) -> None:
        import numpy as np   # only for the embeddings: `evo.run --help` and the analysis open archives without it
        with self.transaction():
            self._db.executemany("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?)",
                                 [(h, embedder, np.asarray(v, dtype="<f4").tobytes()) for h, v in vectors.items()])

    def set_screening(self, child_id: int, predicted, decision: str) -> None:
        self._exec("UPDATE children SET predicted = ?, surrogate = ? WHERE id = ?", (predicted, decision, child_id))

    def cost_ledger(self) -> dict:
        """Per round and in total: LM tokens in/out, LM seconds, child training seconds (CPU, GPU),
        sandbox seconds and soft prompt tuning seconds. Round -1 is the seeds."""
        rounds = self.query("SELECT * FROM cost_ledger ORDER BY round")
        keys = [k for k in (rounds[0] if rounds else {}) if k != "round"]
        return {"rounds": rounds, "total": {k: sum(r[k] for r in rounds) for k in keys}}

    def tuned(self, round: int) -> bool:
        return bool(self._rows("SELECT 1 FROM tuning WHERE round = ?", (round,)))

    def latest_adapter(self, before_round: int) -> tuple[Optional[int], Optional[str]]:
        """(round, folder) of the newest saved soft prompt trained before ``before_round`` starts."""
        rows = self._rows("SELECT round, adapter FROM tuning WHERE round < ? AND adapter IS NOT NULL "
                          "ORDER BY round DESC LIMIT 1", (before_round,))
        return (rows[0]["round"], rows[0]["adapter"]) if rows else (None, None)

    def prompt_row(self, round: int, prompt_index: int) -> Optional[dict]:
        rows = self._rows("SELECT * FROM prompts WHERE round = ? AND prompt_index = ?", (round, prompt_index))
        return dict(rows[0]) if rows else None

    def insert_prompt(self, round: int, prompt_index: int, parents: list[int], target: dict, prompt: str) -> int:
        cur = self._exec("INSERT INTO prompts (round, prompt_index, parents, target, prompt) VALUES (?, ?, ?, ?, ?)",
                         (round, prompt_index, json.dumps(parents), json.dumps(target), prompt))
        return cur.lastrowid

    def complete_prompt(self, prompt_id: int) -> None:
        self._exec("UPDATE prompts SET complete = 1 WHERE id = ?", (prompt_id,))

    def prompt_attempts(self, prompt_id: int) -> int:
        rows = self._rows("SELECT MAX(attempt) AS a FROM children WHERE prompt_id = ?", (prompt_id,))
        a = rows[0]["a"]
        return -1 if a is None else a


class _Transaction:
    def __init__(self, archive: Archive):
        self.a = archive

    def __enter__(self):
        self.a._lock.acquire()
        self.a._db.execute("BEGIN IMMEDIATE")
        return self.a

    def __exit__(self, exc_type, exc, tb):
        try:
            self.a._db.execute("ROLLBACK" if exc_type else "COMMIT")
        finally:
            self.a._lock.release()

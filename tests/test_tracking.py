"""logger=wandb (evo/tracking.py): real wandb runs in offline mode, read back from the run's .wandb
file with wandb's own protobuf records. No network, no mocks of wandb."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from evo import outcome
from evo.archive import Archive
from evo.config import ConfigError
from evo.run import CONF_DIR
from evo.tracking import META_LAST_ROUND, META_RUN_ID, NoLogger, WandbLogger
from runs import REPO

pytest.importorskip("wandb")
from wandb.proto import wandb_internal_pb2 as pb  # noqa: E402

SEED = "import flax.linen as nn\n\nclass Model(nn.Module):\n    # {}\n    pass\n"


# -- reading what wandb wrote ------------------------------------------------------------------------
def wandb_records(path: Path) -> list:
    """The records of a .wandb file. wandb 0.31 has no Python reader any more (the datastore moved
    to wandb-core, in Go); the format is a LevelDB-style log: a 7-byte header (":W&B", magic,
    version), then 32 KiB blocks of chunks (crc32 u32, length u16, type u8: 1 full, 2 first,
    3 middle, 4 last), each record a serialised ``wandb_internal.Record``."""
    data = path.read_bytes()
    assert data[:4] == b":W&B", data[:7]
    pos, buf, out = 7, b"", []
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:            # a block's tail too short for a header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:
            pos += left
            continue
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        buf = chunk if kind in (1, 2) else buf + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            out.append(record)
            buf = b""
    return out


def of_type(records, kind: str) -> list:
    return [getattr(r, kind) for r in records if r.WhichOneof("record_type") == kind]


def history(records) -> list[dict]:
    """One dict per history row, keys as logged (nested keys joined with '.'), values decoded."""
    rows = []
    for h in of_type(records, "history"):
        row = {}
        for item in h.item:
            key = item.key or ".".join(item.nested_key)
            row[key] = json.loads(item.value_json)
        rows.append(row)
    return rows


def config_of(records) -> dict:
    config = {}
    for r in of_type(records, "run"):
        config.update({u.key: json.loads(u.value_json) for u in r.config.update})
    for c in of_type(records, "config"):
        config.update({u.key: json.loads(u.value_json) for u in c.update})
    return config


def summary_of(records) -> dict:
    out = {}
    for s in of_type(records, "summary"):
        for u in s.update:
            out[u.key or ".".join(u.nested_key)] = json.loads(u.value_json)
    return out


def offline_runs(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob("wandb/offline-run-*"))


# -- a small real archive ----------------------------------------------------------------------------
def build_archive(run_dir: Path) -> Archive:
    """Two seeds; round 0: two scored children, a crash, a duplicate; the soft prompt tuned after round 0."""
    a = Archive(run_dir / "archive.sqlite")
    seeds = []
    for name, params, acc in (("mlp", 4000, 0.70), ("cnn", 2000, 0.80)):
        code = SEED.format(name)
        cid = a.insert_child(round=-1, seed_name=name, code=code, code_hash=f"h-{name}")
        a.record_result(cid, status=outcome.OK, num_params=params, val_accuracy=acc, test_accuracy=acc - 0.01,
                        fitness=-params * (1 - acc), train_seconds=3.0, device="cpu", eval_seconds=4.0)
        seeds.append(cid)
    a.start_round(0, seeds, "seeds")
    children = []
    for i, (params, acc) in enumerate(((1500, 0.82), (1000, 0.75))):
        code = SEED.format(f"child {i}")
        cid = a.insert_child(round=0, code=code, code_hash=f"h0-{i}", parents=seeds, tokens_in=100, tokens_out=40,
                             lm_seconds=2.0, temperature=0.6)
        a.record_result(cid, status=outcome.OK, num_params=params, val_accuracy=acc, test_accuracy=acc - 0.02,
                        fitness=-params * (1 - acc), train_seconds=5.0, device="gpu" if i else "cpu", eval_seconds=6.0)
        children.append(cid)
    crash = a.insert_child(round=0, code=SEED.format("crash"), code_hash="h0-crash", parents=seeds, tokens_in=100,
                           tokens_out=30, lm_seconds=2.0, temperature=1.0)
    a.record_result(crash, status=outcome.CRASHED, reason="boom", eval_seconds=1.0)
    a.insert_child(round=0, code=SEED.format("child 0"), code_hash="h0-0", parents=seeds, tokens_in=100,
                   tokens_out=20, lm_seconds=1.0, temperature=0.2)          # a duplicate of the first child
    a.finish_round(0)
    adapter = run_dir / "soft_prompt" / "round_0"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text('{"num_virtual_tokens": 16}')
    (adapter / "adapter_model.safetensors").write_bytes(b"\0" * 64)
    a.record_tuning(0, children=[children[1]], texts=1, tokens=50, step_losses=[2.0, 1.5], epoch_losses=[1.75],
                    seconds=7.0, adapter="soft_prompt/round_0")
    return a


def add_round_1(a: Archive) -> None:
    a.start_round(1, [a.history()[0].id], "paper_topk")
    cid = a.insert_child(round=1, code=SEED.format("round 1"), code_hash="h1-0", parents=[3], tokens_in=90,
                         tokens_out=50, lm_seconds=3.0, temperature=0.8)
    a.record_result(cid, status=outcome.OK, num_params=800, val_accuracy=0.9, test_accuracy=0.88,
                    fitness=-800 * 0.1, train_seconds=5.0, device="cpu", eval_seconds=6.0)
    a.finish_round(1)


@pytest.fixture
def wandb_env(monkeypatch, tmp_path):
    """No key, no network, nothing outside tmp_path: HOME and NETRC point at an empty folder."""
    home = tmp_path / "home"
    home.mkdir()
    for key in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL", "WANDB_MODE", "WANDB_DIR",
                "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR",
                *(k for k in os.environ if k.startswith("SLURM_"))):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("NETRC", str(home / ".netrc"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    return home


def report_files(run_dir: Path, archive: Archive) -> dict:
    from evo.analysis.report import write_report
    return write_report(archive, run_dir, survivors=3)


# -- tests -------------------------------------------------------------------------------------------
def test_offline_run_logs_rounds_table_and_artifacts(cfg_factory, tmp_path, wandb_env, monkeypatch):
    run_dir = tmp_path / "run"
    cfg = cfg_factory("seed=3", "ablation=no_prompt_tuning")
    user_cache = tmp_path / "user-cache"       # exported by the user: kept, never replaced
    monkeypatch.setenv("WANDB_CACHE_DIR", str(user_cache))
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    archive = build_archive(run_dir)

    logger = WandbLogger(project="evo", mode="offline", tags=["smoke"], best_programs=2)
    logger.start(cfg, run_dir, archive, resumed=False)
    assert os.environ["WANDB_CACHE_DIR"] == str(user_cache)
    assert os.environ["WANDB_DATA_DIR"] == str(run_dir.resolve() / "wandb" / "data")
    logger.log_round(archive, -1)
    logger.log_round(archive, 0)
    logger.log_round(archive, 0)               # called again: not logged twice
    summary = report_files(run_dir, archive)
    logger.finish(archive, run_dir, summary)
    assert "WANDB_DATA_DIR" not in os.environ   # ours is removed again; the user's stays
    assert os.environ["WANDB_CACHE_DIR"] == str(user_cache)

    runs = offline_runs(run_dir)
    assert len(runs) == 1
    run_id = archive.get_meta(META_RUN_ID)
    assert runs[0].name.endswith(f"-{run_id}") and archive.get_meta(META_LAST_ROUND) == "0"
    records = wandb_records(runs[0] / f"run-{run_id}.wandb")
    run = of_type(records, "run")[0]
    assert run.run_id == run_id and run.project == "evo"
    assert run.run_group == f"mnist1d-{cfg.lm.name}-no_prompt_tuning"
    assert run.display_name == "no_prompt_tuning-seed3"
    assert list(run.tags) == ["mnist1d", cfg.lm.name, "no_prompt_tuning", "seed=3", "smoke"]
    config = config_of(records)
    assert config["task"]["name"] == "mnist1d" and config["seed"] == 3
    assert config["run_dir"] == str(run_dir)
    assert config["slurm"] == {"job_id": "4242", "restart_count": "0"}

    rows = history(records)
    by_step = {r["_step"]: r for r in rows if "round/index" in r}
    assert sorted(by_step) == [0, 1]                           # seeds at step 0, round 0 at step 1, once each
    seeds, r0 = by_step[0], by_step[1]
    assert seeds["round/index"] == -1 and seeds["round/samples"] == 2 and seeds["round/scored"] == 2
    assert seeds["round/best_fitness"] == pytest.approx(-2000 * 0.2)
    assert seeds["round/hypervolume"] == 0.0
    assert seeds["cost/sandbox_seconds"] == pytest.approx(8.0) and seeds["round/train_seconds_cpu"] == 6.0
    assert r0["round/index"] == 0 and r0["round/samples"] == 4 and r0["round/scored"] == 2
    assert r0["round/valid_rate"] == pytest.approx(0.5)        # 2 working of 4 samples (a crash, a duplicate)
    assert r0["round/best_fitness"] == pytest.approx(-1000 * 0.25)
    assert r0["round/median_fitness"] == pytest.approx((-1500 * 0.18 - 1000 * 0.25) / 2)
    assert r0["round/best_fitness_so_far"] == pytest.approx(-1000 * 0.25)
    from evo.analysis.metrics import run_hypervolume
    assert r0["round/hypervolume"] > 0
    assert r0["round/hypervolume"] == pytest.approx(run_hypervolume(archive, upto_round=0))
    assert (r0["round/lm_tokens_in"], r0["round/lm_tokens_out"], r0["round/lm_seconds"]) == (400, 130, 7.0)
    assert r0["round/new_working_per_lm_hour"] == pytest.approx(2 / (7.0 / 3600))   # 2 working in 7 LM seconds
    assert (r0["round/train_seconds_cpu"], r0["round/train_seconds_gpu"]) == (5.0, 5.0)
    assert r0["round/tuning_seconds"] == 0.0                   # tuned after round 0: spent in round 1
    assert r0["cost/sandbox_seconds"] == pytest.approx(8.0 + 13.0) and r0["cost/children"] == 6
    assert r0["cost/lm_tokens_out"] == 130

    table = [r for r in rows if "children._type" in r]
    assert len(table) == 1 and table[0]["children._type"] == "table-file" and table[0]["_step"] == 1
    table_json = json.loads((runs[0] / "files" / table[0]["children.path"]).read_text())
    assert table_json["columns"][:4] == ["id", "round", "seed_name", "status"] and table_json["columns"][-1] == "code"
    assert len(table_json["data"]) == 6
    assert {r[3] for r in table_json["data"]} == {"ok", "crashed", "duplicate"}
    lineage = [r for r in rows if "lineage._type" in r]   # the tree as a table: parent ids as lists, diffs
    assert len(lineage) == 1 and lineage[0]["lineage._type"] == "table-file"
    lineage_json = json.loads((runs[0] / "files" / lineage[0]["lineage.path"]).read_text())
    assert lineage_json["columns"][:3] == ["child_id", "parent_ids", "round"]
    by_child = {r[0]: r for r in lineage_json["data"]}
    assert sorted(by_child) == [r["id"] for r in archive.query("SELECT id FROM children ORDER BY id")]
    for r in archive.query("SELECT id, parents, round, code FROM children"):
        assert by_child[r["id"]][1] == list(dict.fromkeys(json.loads(r["parents"] or "[]")))
        assert by_child[r["id"]][2] == r["round"] and by_child[r["id"]][12] == r["code"]
    assert any(r.get("report/lineage._type") == "html-file" for r in rows)   # lineage.html as an HTML panel
    assert any(r.get("report/pareto._type") == "image-file" for r in rows)

    summary_values = summary_of(records)
    assert summary_values["final/best_fitness"] == pytest.approx(-1000 * 0.25)
    assert summary_values["final/lm_tokens_in"] == 400 and summary_values["final/tuning_seconds"] == 7.0
    assert summary_values["final/hypervolume_val"] == pytest.approx(r0["round/hypervolume"])

    artifacts = {a.type: a for a in of_type(records, "artifact")}
    assert artifacts["archive"].name == f"archive-{run_id}"
    (entry,) = artifacts["archive"].manifest.contents
    assert entry.path == "archive.sqlite"
    assert Path(entry.local_path).is_relative_to(run_dir.resolve() / "wandb" / "data")   # staged in the run folder
    copy = sqlite3.connect(entry.local_path)    # the staged copy: a whole, self-contained database
    assert copy.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert copy.execute("SELECT COUNT(*) FROM children").fetchone()[0] == 6
    copy.close()
    programs = {c.path: Path(c.local_path).read_text() for c in artifacts["programs"].manifest.contents}
    assert artifacts["programs"].name == f"programs-{run_id}" and len(programs) == 2
    best = programs["rank01_child4.py"]
    assert best.startswith("# evo child 4 (round 0), rank 1 of 2") and "num_params 1000" in best
    assert best.endswith(SEED.format("child 1")) and "rank02_child3.py" in programs
    soft = sorted(c.path for c in artifacts["soft_prompt"].manifest.contents)
    assert soft == ["round_0/adapter_config.json", "round_0/adapter_model.safetensors"]
    assert of_type(records, "exit")                             # wandb.finish() ran
    archive.close()


def test_resumed_run_keeps_the_run_and_logs_each_round_once(cfg_factory, tmp_path, wandb_env, monkeypatch):
    run_dir = tmp_path / "run"
    cfg = cfg_factory()
    archive = build_archive(run_dir)
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    first = WandbLogger(mode="offline", log_artifacts=False, log_children_table=False)
    first.start(cfg, run_dir, archive, resumed=False)
    first.log_round(archive, -1)
    first.log_round(archive, 0)
    first._run.finish()      # the job is preempted here: no finish() of ours, no report
    first._run = None
    run_id = archive.get_meta(META_RUN_ID)

    add_round_1(archive)                         # what the requeued job did before it died again ...
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    second = WandbLogger(mode="offline", log_artifacts=False, log_children_table=False)
    second.start(cfg, run_dir, archive, resumed=True)
    second.log_round(archive, -1)                # the loop reports the seeds on every start
    second.finish(archive, run_dir, {})          # ... and round 1 is back-filled, rounds -1 and 0 are not
    assert archive.get_meta(META_RUN_ID) == run_id and archive.get_meta(META_LAST_ROUND) == "1"

    runs = offline_runs(run_dir)
    assert len(runs) == 2 and all(f"-{run_id}" in r.name for r in runs)
    steps = []
    for folder in runs:
        records = wandb_records(folder / f"run-{run_id}.wandb")
        steps.append(sorted(r["_step"] for r in history(records) if "round/index" in r))
    assert steps == [[0, 1], [2]]
    resumed = wandb_records(runs[1] / f"run-{run_id}.wandb")
    assert of_type(resumed, "run")[0].resume                   # the segment resumes the same W&B run
    assert config_of(resumed)["slurm"] == {"job_id": "77", "restart_count": "1"}
    r1 = [r for r in history(resumed) if r.get("round/index") == 1][0]
    assert r1["round/tuning_seconds"] == 7.0                   # tuned after round 0, at the start of round 1
    assert r1["cost/tuning_seconds"] == 7.0 and r1["round/best_fitness_so_far"] == pytest.approx(-80.0)
    archive.close()


def auto_mode_of_a_new_process() -> list:
    """What ``logger.mode=auto`` resolves to in a fresh process with this environment. Fresh, since a credential
    wandb has found stays in its session for the rest of the process (as it should within one run)."""
    code = "import json; from evo.tracking import WandbLogger; print(json.dumps(WandbLogger(mode='auto').resolve_mode()))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_auto_mode_is_offline_without_a_key_and_online_with_one(wandb_env, monkeypatch, caplog, cfg_factory,
                                                                 tmp_path):
    # auto without a key starts a real offline run and says how to upload it
    run_dir = tmp_path / "run"
    archive = build_archive(run_dir)
    auto = WandbLogger(mode="auto", log_artifacts=False, log_children_table=False)
    with caplog.at_level(logging.INFO, logger="evo.tracking"):
        auto.start(cfg_factory(), run_dir, archive, resumed=False)
        auto.finish(archive, run_dir, {})
    assert auto._run is None and len(offline_runs(run_dir)) == 1
    assert f"wandb sync {run_dir.resolve() / 'wandb'}/offline-run-*-{archive.get_meta(META_RUN_ID)}*" in caplog.text
    assert "logging offline (no W&B credential: wandb found none" in caplog.text
    archive.close()

    # wandb's own credential lookup decides, in each new run process
    (wandb_env / ".netrc").write_text("machine example.org login x password y\n")
    assert auto_mode_of_a_new_process()[0] == "offline"             # an entry for another host is no key
    (wandb_env / ".netrc").write_text(f"machine api.wandb.ai login user password {'a' * 40}\n")
    assert auto_mode_of_a_new_process() == ["online", "wandb found a W&B credential"]   # read through NETRC
    (wandb_env / ".netrc").unlink()
    monkeypatch.setenv("WANDB_API_KEY", "b" * 40)
    assert auto_mode_of_a_new_process()[0] == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")                    # an exported WANDB_MODE wins under auto
    assert WandbLogger(mode="auto").resolve_mode()[0] == "disabled"
    assert WandbLogger(mode="offline").resolve_mode()[0] == "offline"


def test_disabled_mode_writes_and_stores_nothing(cfg_factory, tmp_path, wandb_env):
    run_dir = tmp_path / "run"
    archive = build_archive(run_dir)
    logger = WandbLogger(mode="disabled")
    logger.start(cfg_factory(), run_dir, archive, resumed=False)
    logger.log_round(archive, -1)
    logger.log_round(archive, 0)
    logger.finish(archive, run_dir, {})
    assert not (run_dir / "wandb").exists()
    assert archive.get_meta(META_RUN_ID) is None and archive.get_meta(META_LAST_ROUND) is None
    archive.close()


def test_logging_failures_are_warnings_not_crashes(cfg_factory, tmp_path, wandb_env, caplog):
    run_dir = tmp_path / "run"
    archive = build_archive(run_dir)
    logger = WandbLogger(mode="offline", log_children_table=False)
    logger.start(cfg_factory(), run_dir, archive, resumed=False)
    archive.close()                              # every archive read now raises
    with caplog.at_level(logging.WARNING, logger="evo.tracking"):
        logger.log_round(archive, 0)
        logger.finish(archive, run_dir, {})
    assert "could not log round 0" in caplog.text and "could not log the archive" in caplog.text
    assert logger._run is None                   # the run was still finished
    run_id = offline_runs(run_dir)[0].name.rsplit("-", 1)[1]
    assert of_type(wandb_records(offline_runs(run_dir)[0] / f"run-{run_id}.wandb"), "exit")


def test_bad_options_fail_in_the_constructor_naming_the_key():
    with pytest.raises(ConfigError, match=r"logger\.mode='cloud'.*auto, online, offline, disabled"):
        WandbLogger(mode="cloud")
    with pytest.raises(ConfigError, match=r"logger\.best_programs"):
        WandbLogger(best_programs=-1)
    with pytest.raises(ConfigError, match=r"logger\.tags"):
        WandbLogger(tags="a,b")


def test_missing_wandb_names_pip_install(monkeypatch, cfg_factory, tmp_path):
    monkeypatch.setitem(sys.modules, "wandb", None)   # `import wandb` raises ImportError, as when not installed
    archive = Archive(tmp_path / "a.sqlite")
    with pytest.raises(ImportError, match="pip install wandb"):
        WandbLogger(mode="offline").start(cfg_factory(), tmp_path, archive, resumed=False)
    archive.close()


def test_logger_group_files_instantiate():
    node = OmegaConf.load(Path(CONF_DIR) / "logger" / "wandb.yaml")
    logger = instantiate(node)
    assert isinstance(logger, WandbLogger)
    assert (logger.project, logger.entity, logger.mode, logger.group, logger.name, logger.tags) == \
        ("evo", None, "auto", None, None, [])
    assert (logger.best_programs, logger.log_children_table, logger.log_artifacts) == (10, True, True)
    assert isinstance(instantiate(OmegaConf.load(Path(CONF_DIR) / "logger" / "none.yaml")), NoLogger)


def test_multirun_group_is_the_sweep_folder(cfg_factory):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from evo.tracking import _default_group, hydra_info

    cfg = cfg_factory("ablation=random_parents")
    assert _default_group(cfg) == f"mnist1d-{cfg.lm.name}-random_parents" and hydra_info() == {}
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        full = compose(config_name="config", return_hydra_config=True,
                       overrides=["run_dir=x", "seed=1", "hydra.mode=MULTIRUN", "hydra.sweep.dir=multirun/abl/sweep-7",
                                  "hydra.job.num=2"])
    GlobalHydra.instance().clear()
    HydraConfig.instance().set_config(full)
    try:
        assert _default_group(cfg) == "abl-sweep-7"   # <experiment>-<timestamp> of multirun/<task>/<experiment>/<timestamp>
        assert hydra_info() == {"mode": "MULTIRUN", "overrides": ["run_dir=x", "seed=1"],
                                 "sweep_dir": "multirun/abl/sweep-7", "job_num": 2}
    finally:
        HydraConfig.instance().cfg = None
    assert not HydraConfig.initialized()


@pytest.mark.slow   # a whole search subprocess
def test_a_search_that_raises_closes_its_wandb_run_as_failed(cfg_factory, tmp_path, wandb_env, tiny_lm_dir):
    """The LM folder has a config but no weights: the pre-compute check passes, the search raises when it
    loads the LM after scoring the seeds. The W&B run is closed with exit code 1 (not left open for the next
    --multirun job), and the archive is closed with the seeds' results in it."""
    import shutil

    from hydra.errors import InstantiationException

    from evo.run import run

    broken = tmp_path / "lm_without_weights"
    shutil.copytree(tiny_lm_dir, broken)
    for weights in [*broken.glob("*.safetensors"), *broken.glob("*.bin")]:
        weights.unlink()
    cfg = cfg_factory("logger=wandb", "logger.mode=offline", "lm=hf", f"lm.model={broken}", "search.rounds=1",
                      "search.prompts_per_round=1", "crossmut.samples_per_prompt=1", "task.train_steps=20",
                      "task.eval_every=10", "progress=false")
    with pytest.raises(InstantiationException, match="Could not load the model"):
        run(cfg)
    run_dir = Path(cfg.run_dir)
    [offline] = offline_runs(run_dir)
    run_id = offline.name.rsplit("-", 1)[1]
    exits = of_type(wandb_records(offline / f"run-{run_id}.wandb"), "exit")
    assert [e.exit_code for e in exits] == [1]
    db = sqlite3.connect(run_dir / "archive.sqlite")   # closed by run(): no WAL left for another writer
    seeds = db.execute("SELECT COUNT(*) FROM children WHERE round = -1 AND status IS NOT NULL").fetchone()[0]
    db.close()
    assert seeds == 4
    assert not (run_dir / "archive.sqlite-wal").exists()

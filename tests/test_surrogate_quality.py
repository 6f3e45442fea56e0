"""evo.surrogate_quality: the metrics, the cross-validation, the baselines, a real MiniLM learning a
signal that is in the code (and not a shuffled one), the embedding cache, and the CLI on a real archive."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from evo import outcome
from evo.archive import Archive
from evo.search.surrogate import ColeSurrogate, MiniLMEmbedder, ridge_head
from evo.archive.runs import opened
from evo.analysis.surrogate_quality import (bag_of_tokens_predictor, cross_validate, embed_programs, main, open_source,
                                            params_predictor, pool_programs, top_precision, usable_sizes)

REPO = Path(__file__).resolve().parents[1]
WIDTHS = (8, 16, 32, 64, 128, 256)


def programs(n: int, seed: int = 0) -> list[tuple[str, float, int]]:
    """``n`` distinct Flax MLPs: (source, score, parameter count). The score is a function of the
    Dense widths written in the source (more and wider layers score higher) plus a little noise."""
    rng, seen, out = random.Random(seed), set(), []
    while len(out) < n:
        widths = tuple(rng.choice(WIDTHS) for _ in range(rng.randint(1, 4)))
        act = rng.choice(("relu", "gelu", "tanh"))   # varies the text without changing the score
        if (widths, act) in seen:
            continue
        seen.add((widths, act))
        body = "".join(f"    x = nn.{act}(nn.Dense({w})(x))\n" for w in widths)
        code = ("import flax.linen as nn\nimport jax.numpy as jnp\n\n\nclass Model(nn.Module):\n  @nn.compact\n"
                f"  def __call__(self, x):\n{body}    return nn.Dense(10)(x)\n")
        dims = (40, *widths, 10)
        params = sum(a * b + b for a, b in zip(dims, dims[1:]))
        out.append((code, sum(math.log2(w) for w in widths) / 4 + rng.gauss(0, 0.2), params))
    return out


class CountingMiniLM(MiniLMEmbedder):
    """The real MiniLM, counting the programs it is asked to embed."""

    def __init__(self):
        super().__init__()
        self.embedded = 0

    def embed(self, texts):
        self.embedded += len(texts)
        return super().embed(texts)


@pytest.fixture(scope="module")
def minilm():
    return CountingMiniLM()   # loaded once for the module (~5 s)


def make_archive(folder: Path, progs, seeds=1, failures=True, offset=0) -> Path:
    """A real run folder: ``seeds`` of ``progs`` at round -1, the rest round 0, all trained ('ok'),
    program i with code hash ``h<offset + i>``; plus a failed child and a duplicate, which are not pooled."""
    folder.mkdir(parents=True, exist_ok=True)
    a = Archive(folder / "archive.sqlite")
    for i, (code, score, params) in enumerate(progs):
        cid = a.insert_child(round=-1 if i < seeds else 0, code=code, code_hash=f"h{offset + i}",
                             seed_name=f"seed{i}" if i < seeds else None)
        val = 1 - 0.5 * 10 ** (-score / 3)   # higher score, lower error
        a.record_result(cid, status=outcome.OK, num_params=params, val_accuracy=val, test_accuracy=val,
                        fitness=-params * (1 - val))
    if failures:
        a.record_result(a.insert_child(round=0, code="broken(", code_hash="bad"), status=outcome.SYNTAX_ERROR,
                        reason="test")
        a.insert_child(round=0, code=progs[-1][0], code_hash=f"h{offset + len(progs) - 1}")   # a duplicate of the last
    a.close()
    return folder


# ---------------------------------------------------------------- metrics and cross-validation

def test_top_precision_counts_the_true_top_tenth_found_in_the_predicted_top_tenth():
    y = np.arange(20.0)
    assert top_precision(y, y) == 1.0
    assert top_precision(y, -y) == 0.0
    assert top_precision(y, np.zeros(20)) == 0.0          # ties go against the predictor, not by input order
    pred = y.copy()
    pred[[19, 0]] = pred[[0, 19]]                          # the best child predicted worst, the worst predicted best
    assert top_precision(y, pred) == 0.5                   # top 2 of 20: child 18 found, child 19 missed
    assert top_precision(np.arange(5.0), np.arange(5.0)) == 1.0   # at least one child
    y30 = np.arange(30.0)
    assert top_precision(y30, np.r_[y30[:27], -1, -2, -3]) == 0.0   # exactly 3 of 30, not 4


def test_cross_validate_gives_every_predictor_the_same_splits_and_the_params_baseline_ranks_by_size():
    rng = np.random.default_rng(0)
    params = rng.integers(1_000, 1_000_000, size=40).astype(float)
    y = -np.log10(params)                                  # smaller is better: exactly the size ranking
    runs = cross_validate(params[:, None], y, params_predictor, [10, 25], 4, 7)
    assert set(runs) == {10, 25} and all(len(runs[s][m]) == 4 for s in runs for m in ("tau", "rho", "p10", "seconds"))
    assert np.allclose(runs[10]["tau"], 1.0) and np.allclose(runs[25]["rho"], 1.0) and np.allclose(runs[25]["p10"], 1.0)
    noisy = y + rng.normal(0, 0.3, size=40)
    a = cross_validate(params[:, None], noisy, params_predictor, [10], 3, 7)
    b = cross_validate(params[:, None], noisy, params_predictor, [10], 3, 7)
    assert a[10]["tau"] == b[10]["tau"]                    # an int seed: the same splits, the same scores
    with pytest.raises(ValueError):
        cross_validate(params[:, None], y, params_predictor, [39], 1, 0)
    assert usable_sizes([10, 20, 40, 80], 45) == ([10, 20], [40, 80])


def test_bag_of_tokens_learns_a_score_written_as_tokens():
    progs = programs(60, seed=3)
    runs = cross_validate([c for c, _, _ in progs], [s for _, s, _ in progs], bag_of_tokens_predictor, [30], 3, 0)
    assert np.mean(runs[30]["tau"]) > 0.5


# ---------------------------------------------------------------- the real embedder

def test_cole_ridge_learns_a_signal_in_the_code_and_not_a_shuffled_one(minilm):
    """The issue's check: the head learns a real signal on a synthetic set where the score depends on
    the code, with tau clearly above a control whose scores are shuffled."""
    progs = programs(80)
    X = minilm.embed([c for c, _, _ in progs])
    y = np.array([s for _, s, _ in progs])
    real = np.mean(cross_validate(X, y, ridge_head, [40], 5, 0)[40]["tau"])
    shuffled = np.mean(cross_validate(X, np.random.default_rng(1).permutation(y), ridge_head, [40], 5, 0)[40]["tau"])
    assert real > 0.3 and real > shuffled + 0.2, (real, shuffled)
    assert abs(shuffled) < 0.2


def test_embeddings_are_deterministic_and_cached_in_the_archive(minilm, tmp_path):
    codes = {f"h{i}": code for i, (code, _, _) in enumerate(programs(8, seed=5))}
    cole = ColeSurrogate(minilm, ridge_head)
    archive = Archive(tmp_path / "archive.sqlite")
    before = minilm.embedded
    first = cole.embed(archive, codes)
    assert minilm.embedded - before == 8
    second = cole.embed(archive, codes)
    assert minilm.embedded - before == 8                   # all from the cache: the model is not called again
    assert all(np.array_equal(first[h], second[h]) for h in codes)
    fresh = ColeSurrogate(minilm, ridge_head).embed(Archive(tmp_path / "other.sqlite"), codes)
    assert all(np.allclose(first[h], fresh[h], atol=1e-5) for h in codes)   # recomputed: the same vectors
    assert first["h0"].shape == (384,) and first["h0"].dtype == np.float32


def test_pooled_archives_embed_each_program_once_and_no_cache_writes_nothing(minilm, tmp_path):
    progs = programs(15, seed=9)
    make_archive(tmp_path / "a", progs[:10], failures=False)
    make_archive(tmp_path / "b", progs[5:], seeds=0, failures=False, offset=5)   # programs 5..9 in both
    paths = [tmp_path / "a" / "archive.sqlite", tmp_path / "b" / "archive.sqlite"]

    with opened(paths, lambda p: open_source(p, cache=False)) as sources:
        pool = pool_programs(sources)
        assert len(pool) == 15 and [len(s.hashes) for s in sources] == [10, 10]
        _, cost = embed_programs(sources, pool, minilm, cache=False)
        assert cost["computed"] == 15 and cost["stored"] == 0 and cost["seconds_per_child"] > 0
        assert not any(s.writable for s in sources)
    for p in paths:   # read-only: nothing stored
        a = Archive(p, readonly=True)
        assert a.query("SELECT COUNT(*) AS n FROM embeddings")[0]["n"] == 0
        a.close()

    with opened(paths, lambda p: open_source(p, cache=True)) as sources:
        pool = pool_programs(sources)
        X, cost = embed_programs(sources, pool, minilm, cache=True)
        assert cost["computed"] == len(pool) and cost["stored"] == 20 and X.shape == (len(pool), 384)
    with opened(paths, lambda p: open_source(p, cache=True)) as sources:
        pool = pool_programs(sources)
        before = minilm.embedded
        X2, cost = embed_programs(sources, pool, minilm, cache=True)
        assert minilm.embedded == before and cost["computed"] == 0 and cost["cached"] == len(pool)
    assert np.array_equal(X, X2)


# ---------------------------------------------------------------- the command line

@pytest.mark.slow   # trains a real archive first
def test_cli_writes_the_table_json_and_plot_for_a_real_archive(tmp_path):
    run = make_archive(tmp_path / "run", programs(30, seed=2), seeds=2)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "evo.surrogate_quality", str(run), "--sizes", "10,15,40",
                           "--repeats", "3", "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "dropped 40" in proc.stdout and "| COLE ridge |" in proc.stdout and "s per child" in proc.stdout
    assert (out / "quality.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "quality.md").read_text()
    assert "n = 30 trained children" in md and "2 of them seeds" in md and "bag of tokens" in md
    data = json.loads((out / "quality.json").read_text())
    assert data["n"] == 30 and data["sizes"] == [10, 15] and data["dropped_sizes"] == [40]
    results = data["targets"]["log_fitness"]
    assert set(results) == {"cole_ridge", "cole_gbt", "bag_of_tokens", "params"}
    for r in results.values():
        assert set(r["sizes"]) == {"10", "15"}
        assert len(r["sizes"]["10"]["tau"]["values"]) == 3 and r["sizes"]["15"]["held_out"] == 15
    assert data["cost"]["computed"] == 30 and data["cost"]["seconds_per_child"] > 0
    a = Archive(run / "archive.sqlite", readonly=True)   # the default caches the vectors in the archive
    assert a.query("SELECT COUNT(*) AS n FROM embeddings WHERE embedder = 'minilm'")[0]["n"] == 30
    a.close()


def test_cli_refuses_too_few_children_unknown_names_and_missing_archives(tmp_path, capsys):
    run = make_archive(tmp_path / "small", programs(5), seeds=0)
    assert main([str(run), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "only 5 trained children" in err
    assert main([str(run), "--heads", "ridge,xgboost"]) == 2
    assert "unknown head 'xgboost'" in capsys.readouterr().err
    assert main([str(run), "--embedder", "operator"]) == 2
    assert "--lm-model" in (err := capsys.readouterr().err) and "minilm" in err
    assert main([str(run), "--target", "accuracy"]) == 2
    assert "unknown target" in capsys.readouterr().err
    assert main([str(tmp_path / "nowhere")]) == 2
    assert "no archive found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 2
    assert "no archive found" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()

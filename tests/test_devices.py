"""evo.search.devices: the assignment of children to GPUs (a pure function, many machines and configs), the sandbox's
device pass-through (a real bubblewrap child sees exactly the device files its slot names: stand-in character
devices here), and the CPU path of evaluator=local (unchanged on a machine without GPUs).

GPU-only checks (a real child training on CUDA under its memory share) need a GPU and are skipped here; the
GPU check script (benchmarks/device_check.sh) runs them on the project's GPU machine.
"""

from __future__ import annotations

import os
import pathlib
import stat

import pytest

from evo.search.devices import CONTROL_FILES, Gpu, plan_devices, visible_gpus
from evo.sandbox.runner import SandboxLimits, _bwrap_usable, run_in_sandbox

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
BWRAP_OK, BWRAP_WHY = _bwrap_usable()
needs_bwrap = pytest.mark.skipif(not BWRAP_OK, reason=f"needs bubblewrap: {BWRAP_WHY}")
HAS_GPU = bool(visible_gpus())
needs_gpu = pytest.mark.skipif(not HAS_GPU, reason="needs an NVIDIA GPU (/dev/nvidia<N>); benchmarks/device_check.sh "
                               "runs this on the project's GPU machine")


# ------------------------------------------------------------------------ the assignment (pure)

def _per_gpu(plan):
    counts = {}
    for s in plan.slots:
        counts[s.gpu.index] = counts.get(s.gpu.index, 0) + 1
    return counts


def test_no_gpu_is_todays_cpu_plan():
    for device in ("auto", "cpu"):
        plan = plan_devices([], device=device, cpu_workers=3)
        assert plan.workers == 3 and not plan.on_gpu and plan.lm_gpu is None
        assert all(s.gpu is None and s.env == {} and s.devices == () for s in plan.slots)
    assert plan_devices([], workers=5, cpu_workers=1).workers == 5


def test_device_cpu_ignores_gpus():
    plan = plan_devices([Gpu(0), Gpu(1)], device="cpu", cpu_workers=2, lm_device="auto")
    assert plan.workers == 2 and not plan.on_gpu


@pytest.mark.parametrize("n_gpus,per_gpu,lm_device,workers,expect", [
    # one GPU shared with the LM: the LM keeps 0.25, four children split the rest less 5% headroom
    (1, 4, "auto", None, {"slots": {0: 4}, "fraction": round(0.70 / 4, 4), "lm_gpu": 0, "lm_share": 0.25}),
    # one GPU, LM remote (openai): children split all of it but the headroom
    (1, 2, "cpu", None, {"slots": {0: 2}, "fraction": round(0.95 / 2, 4), "lm_gpu": None, "lm_share": None}),
    # two GPUs, LM on GPU 0: it keeps GPU 0 to itself, children on GPU 1 only
    (2, 3, "cuda", None, {"slots": {1: 3}, "fraction": round(0.95 / 3, 4), "lm_gpu": 0, "lm_share": None}),
    # eight GPUs, LM on the CPU: every GPU gets its children
    (8, 2, "cpu", None, {"slots": {i: 2 for i in range(8)}, "fraction": 0.475, "lm_gpu": None, "lm_share": None}),
    # workers given explicitly: round robin over the GPUs, the share sized by the fullest GPU
    (4, 1, "auto", 5, {"slots": {1: 2, 2: 2, 3: 1}, "fraction": round(0.95 / 2, 4), "lm_gpu": 0, "lm_share": None}),
])
def test_assignment(n_gpus, per_gpu, lm_device, workers, expect):
    plan = plan_devices([Gpu(i) for i in range(n_gpus)], workers_per_gpu=per_gpu, lm_device=lm_device,
                        workers=workers, control_files=("/dev/nvidiactl",))
    assert _per_gpu(plan) == expect["slots"]
    assert plan.lm_gpu == expect["lm_gpu"] and plan.lm_memory_fraction == expect["lm_share"]
    for s in plan.slots:
        assert s.memory_fraction == expect["fraction"]
        # the child sees its own GPU only: its id, its device file and the shared control file
        assert s.env["CUDA_VISIBLE_DEVICES"] == str(s.gpu.index)
        assert s.devices == (f"/dev/nvidia{s.gpu.index}", "/dev/nvidiactl")
        assert s.env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
        assert float(s.env["XLA_PYTHON_CLIENT_MEM_FRACTION"]) == expect["fraction"]
        assert s.env["JAX_PLATFORMS"] is None   # removes the sandbox's cpu default
    # the shares on each GPU, the LM's included, never exceed the GPU
    for index, count in _per_gpu(plan).items():
        lm = plan.lm_memory_fraction if index == plan.lm_gpu and plan.lm_memory_fraction else 0.0
        assert count * expect["fraction"] + lm <= 1.0


def test_uuid_preferred_and_given_fraction():
    plan = plan_devices([Gpu(1, "GPU-bbb"), Gpu(0, "GPU-aaa")], workers_per_gpu=2, memory_fraction=0.3,
                        lm_device="cpu", control_files=())
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in plan.slots] == ["GPU-aaa", "GPU-bbb", "GPU-aaa", "GPU-bbb"]
    assert {s.memory_fraction for s in plan.slots} == {0.3}


@pytest.mark.parametrize("kwargs,key", [
    (dict(device="tpu"), "evaluator.device"),
    (dict(workers_per_gpu=0), "evaluator.workers_per_gpu"),
    (dict(workers=0), "evaluator.workers"),
    (dict(memory_fraction=1.5), "evaluator.gpu_memory_fraction"),
    (dict(lm_memory_fraction=1.0), "evaluator.lm_memory_fraction"),
    # 4 children x 0.2 + the LM's 0.25 on the one GPU: over the GPU
    (dict(workers_per_gpu=4, memory_fraction=0.2, lm_device="auto"), "evaluator.gpu_memory_fraction"),
])
def test_bad_choices_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        plan_devices([Gpu(0)], **kwargs)


def test_gpu_required_but_absent():
    with pytest.raises(ValueError, match=r"evaluator\.device=gpu.*no GPU"):
        plan_devices([], device="gpu")


def test_visible_gpus_reads_device_files_and_cuda_visible_devices(tmp_path):
    for name in ("nvidia0", "nvidia1", "nvidia3", "nvidiactl", "nvidia-uvm"):
        (tmp_path / name).write_text("")
    found = visible_gpus({}, str(tmp_path), nvidia_smi=None)
    assert [g.index for g in found] == [0, 1, 3] and all(g.uuid is None for g in found)
    assert [g.index for g in visible_gpus({"CUDA_VISIBLE_DEVICES": "3,0"}, str(tmp_path), None)] == [3, 0]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}, str(tmp_path), None) == []
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"}, str(tmp_path), None) == []
    assert visible_gpus({}, str(tmp_path / "none"), None) == []


def test_uuids_from_nvidia_smi(tmp_path):
    """A stand-in nvidia-smi (a real executable, run by visible_gpus as it would run the real one)."""
    for name in ("nvidia0", "nvidia1"):
        (tmp_path / name).write_text("")
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho '0, GPU-aaaa-1111'\necho '1, GPU-bbbb-2222'\n")
    smi.chmod(0o755)
    found = visible_gpus({"CUDA_VISIBLE_DEVICES": "GPU-bbbb"}, str(tmp_path), str(smi))
    assert found == [Gpu(1, "GPU-bbbb-2222")]


# ------------------------------------------------------------------------ the sandbox's pass-through

def _stand_in_devices(folder) -> dict:
    """Character devices under the NVIDIA names: nvidia0 is /dev/null's device (reads nothing), nvidia1
    /dev/zero's (reads a zero byte), nvidiactl /dev/zero's too; made with mknod (needs root)."""
    spec = {"nvidia0": (1, 3), "nvidia1": (1, 5), "nvidiactl": (1, 5)}
    files = {}
    for name, (major, minor) in spec.items():
        path = os.path.join(folder, name)
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(major, minor))
        files[name] = path
    return files


@needs_bwrap
@pytest.mark.skipif(os.geteuid() != 0, reason="mknod of stand-in character devices needs root")
def test_bwrap_child_sees_exactly_its_gpu_files(tmp_path):
    folder = tmp_path / "devs"
    folder.mkdir()
    files = _stand_in_devices(str(folder))
    plan = plan_devices([Gpu(0), Gpu(1)], workers_per_gpu=1, lm_device="cpu",
                        device_files={0: [files["nvidia0"]], 1: [files["nvidia1"]]},
                        control_files=[files["nvidiactl"]])
    keys = ["CUDA_VISIBLE_DEVICES", "XLA_PYTHON_CLIENT_PREALLOCATE", "XLA_PYTHON_CLIENT_MEM_FRACTION",
            "JAX_PLATFORMS", "CUDA_DEVICE_ORDER"]
    for slot in plan.slots:
        res = run_in_sandbox("device_entries:seen_devices", {"folder": str(folder), "names": sorted(files),
                                                              "env_keys": keys}, "",
                             SandboxLimits(timeout_s=30, isolation="bwrap", memory_mb=None),
                             extra_pythonpath=[TESTS_DIR], extra_env=dict(slot.env), devices=slot.devices)
        assert res.status == "ok", res.reason + res.log_tail
        seen = res.payload
        own = f"nvidia{slot.gpu.index}"
        other = "nvidia1" if own == "nvidia0" else "nvidia0"
        assert seen["listing"] == sorted([own, "nvidiactl"])   # its GPU and the control file, nothing else
        assert seen["first_bytes"][other] == "FileNotFoundError"
        assert seen["first_bytes"][own] == ([] if own == "nvidia0" else [0])   # the real device behind the name
        assert seen["first_bytes"]["nvidiactl"] == [0]
        assert seen["dev_nvidia"] == []   # bwrap's /dev holds no GPU of the host
        assert seen["env"] == {"CUDA_VISIBLE_DEVICES": str(slot.gpu.index), "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
                               "XLA_PYTHON_CLIENT_MEM_FRACTION": f"{slot.memory_fraction:.4f}",
                               "JAX_PLATFORMS": None, "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}


@needs_bwrap
@pytest.mark.skipif(os.geteuid() != 0, reason="mknod of stand-in character devices needs root")
def test_the_untrusted_stage_of_a_gpu_child_runs_on_the_cpu_and_exports_for_cuda(tmp_path, monkeypatch):
    # run_in_sandbox's real two-stage path, with stand-in stages that report what they see (registered in TWO_STAGE)
    from evo.sandbox import runner
    monkeypatch.setitem(runner.TWO_STAGE, "device_entries:two_stage",
                        ("device_entries:export_seen", "device_entries:score_seen", ("folder", "names", "env_keys"),
                         ("exported",)))
    folder = tmp_path / "devs"
    folder.mkdir()
    files = _stand_in_devices(str(folder))
    slot = plan_devices([Gpu(0)], workers_per_gpu=1, lm_device="cpu", device_files={0: [files["nvidia0"]]},
                        control_files=[files["nvidiactl"]]).slots[0]
    keys = ["CUDA_VISIBLE_DEVICES", "XLA_PYTHON_CLIENT_PREALLOCATE", "JAX_PLATFORMS"]
    res = run_in_sandbox("device_entries:two_stage", {"folder": str(folder), "names": sorted(files), "env_keys": keys},
                         "", SandboxLimits(timeout_s=60, isolation="bwrap", memory_mb=None),
                         extra_pythonpath=[TESTS_DIR], extra_env=dict(slot.env), devices=slot.devices)
    assert res.status == "ok", res.reason + res.log_tail
    untrusted, trusted = res.payload["untrusted"], res.payload["trusted"]
    assert untrusted["listing"] == [] and untrusted["dev_nvidia"] == []   # no GPU device file at all
    assert untrusted["env"] == {"CUDA_VISIBLE_DEVICES": "", "XLA_PYTHON_CLIENT_PREALLOCATE": None, "JAX_PLATFORMS": "cpu"}
    assert untrusted["platforms"] == ["cuda"]
    assert trusted["listing"] == ["nvidia0", "nvidiactl"]                # the trusted trainer keeps its GPU
    assert trusted["env"] == {"CUDA_VISIBLE_DEVICES": "0", "XLA_PYTHON_CLIENT_PREALLOCATE": "false", "JAX_PLATFORMS": None}


def test_a_child_exported_on_this_cpu_for_cuda_passes_the_gpu_check_only():
    # the untrusted stage can export for a GPU it does not have: jax lowers for cuda here, and the trusted module
    # check accepts the modules for a GPU trainer and refuses them for a CPU one
    from evo.outcome import ChildFailure
    from evo.sandbox.exported import deserialize, inspect_modules
    from evo.tasks.mnist1d.harness import export_source
    code = (pathlib.Path(TESTS_DIR).parent / "seeds" / "mnist1d" / "cnn.py").read_text()
    modules = {name: deserialize(text, name) for name, text in export_source(code, platforms=["cuda"])["exported"].items()}
    assert all(m.platforms == ("cuda",) for m in modules.values())
    inspect_modules(modules, "gpu")
    with pytest.raises(ChildFailure, match="lowered for"):
        inspect_modules(modules, "cpu")


@needs_bwrap
def test_bwrap_cpu_child_gets_no_device_files():
    res = run_in_sandbox("device_entries:seen_devices", {"folder": "/nonexistent", "names": [],
                                                          "env_keys": ["JAX_PLATFORMS", "CUDA_VISIBLE_DEVICES"]},
                         "", SandboxLimits(timeout_s=30, isolation="bwrap"), extra_pythonpath=[TESTS_DIR])
    assert res.status == "ok", res.reason
    assert res.payload["dev_nvidia"] == [] and res.payload["env"] == {"JAX_PLATFORMS": "cpu",
                                                                       "CUDA_VISIBLE_DEVICES": None}


# ------------------------------------------------------------------------ evaluator=local

def test_local_evaluator_cpu_path_unchanged():
    """On this machine (no GPU) the composed evaluator=local is today's: CPU slots, the same FilterAndEval
    object for every child, no GPU environment or device files."""
    from evo.config import compose_config
    from hydra.utils import instantiate

    from evo.search.evaluators import LocalEvaluator, default_workers, evaluate_for_slot
    if HAS_GPU:
        pytest.skip("this machine has a GPU: the CPU path is checked with evaluator.device=cpu below")
    cfg = compose_config([])
    ev = instantiate(cfg.evaluator)
    assert isinstance(ev, LocalEvaluator) and not ev.plan.on_gpu
    assert ev.workers == default_workers(int(cfg.evaluator.reserve_cores))
    sentinel = object()
    assert all(evaluate_for_slot(sentinel, s) is sentinel for s in ev.plan.slots)


def test_gpu_slot_evaluate_gets_env_and_devices(tmp_path):
    """The FILTERANDEVAL a GPU slot runs: the slot's env on top of the task's, its device files, no RLIMIT_AS."""
    from evo.search.evaluators import evaluate_for_slot
    from evo.search.filter_eval import FilterAndEval
    from evo.tasks.base import Prepared

    class _Task:   # evaluate_for_slot only copies the cascade's settings; nothing is trained here
        pass

    base = FilterAndEval(_Task(), Prepared(harness_kwargs={}, env={"TASK_VAR": "1"}), SandboxLimits(memory_mb=2048), 0.5)
    slot = plan_devices([Gpu(2)], lm_device="cpu", control_files=CONTROL_FILES[:1]).slots[0]
    gpu = evaluate_for_slot(base, slot)
    assert gpu.devices == ("/dev/nvidia2", "/dev/nvidiactl")
    assert gpu.env["TASK_VAR"] == "1" and gpu.env["CUDA_VISIBLE_DEVICES"] == "2"
    assert gpu.env["XLA_PYTHON_CLIENT_MEM_FRACTION"] == f"{0.95:.4f}" and gpu.env["JAX_PLATFORMS"] is None
    assert gpu.limits.address_space is False and base.limits.address_space is True


def test_the_lm_is_told_its_share_of_gpu_0_when_children_share_it(tiny_lm_dir, caplog):
    """The search's LM loader (evo.run.load_lm) hands the LM the share the device plan keeps for it: here the plan of
    a 1-GPU machine with 4 children on it (0.25 for the LM). The tiny LM is on this CPU, so it has nothing to cap,
    and says so; evaluator.device=cpu plans no share, and the LM is not asked."""
    import logging

    from evo.config import compose_config
    from hydra.utils import instantiate

    from evo.run import load_lm
    cfg = compose_config(["lm=hf", f"lm.model={tiny_lm_dir}", "evaluator.device=cpu"])
    ev = instantiate(cfg.evaluator)
    with caplog.at_level(logging.INFO, logger="evo"):
        load_lm(cfg.lm, ev)
        assert ev.lm_gpu_share is None and not [r for r in caplog.records if r.getMessage().startswith("LM:")]
        ev.plan = plan_devices([Gpu(0)], workers_per_gpu=4, lm_device="auto")
        assert ev.lm_gpu_share == 0.25
        load_lm(cfg.lm, ev)
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("LM:")] == \
        ["LM: on cpu: no GPU share to keep"]


@needs_gpu
def test_the_lm_on_a_gpu_keeps_to_its_share(tiny_lm_dir):
    """On a GPU machine: after share_gpu(0.05), an allocation of a tenth of the GPU fails in the LM's process."""
    import torch

    from evo.lm.hf import HFCausalLM
    lm = HFCausalLM(str(tiny_lm_dir), device="cuda:0")
    assert lm.share_gpu(0.05) == "torch's CUDA allocator capped at 0.05 of cuda:0"
    total = torch.cuda.get_device_properties(0).total_memory
    with pytest.raises(torch.cuda.OutOfMemoryError):
        torch.empty(total // 10, dtype=torch.uint8, device="cuda:0")
    torch.cuda.set_per_process_memory_fraction(1.0, 0)


@needs_gpu
def test_real_gpu_child_trains_on_its_gpu(tmp_path):
    """On a GPU machine: a seed child through evaluator=local's GPU slot trains on CUDA."""
    from evo.config import compose_config
    from hydra.utils import instantiate

    from evo.search.evaluators import evaluate_for_slot
    from evo.search.filter_eval import FilterAndEval
    from evo.sandbox.runner import SandboxLimits as Limits
    cfg = compose_config(["task.train_steps=200", "task.eval_every=100", "evaluator.device=gpu"])
    task = instantiate(cfg.task)
    prepared = task.prepare(tmp_path)
    base = FilterAndEval(task, prepared, Limits(timeout_s=600, memory_mb=None), alpha=1.0)
    ev = instantiate(cfg.evaluator)
    result = evaluate_for_slot(base, ev.plan.slots[0])(next(iter(task.seed_programs().values())))
    assert result.status == "ok", result.reason
    assert result.device == "gpu"


@pytest.mark.slow   # times three trainings
def test_device_check_measures_loop_scan_and_torch():
    """benchmarks/device_check.py's train part on this CPU at a tiny size: every variant trains (finite loss)."""
    import math
    import sys
    sys.path.insert(0, os.path.join(TESTS_DIR, "..", "benchmarks"))
    import device_check
    from evo.tasks.mnist1d.data import make_splits
    splits = make_splits()
    loop, scan = device_check.bare_jax(splits, 20, 1), device_check.bare_jax(splits, 20, 10)
    assert loop["steps"] == scan["steps"] == 20
    assert math.isfinite(loop["mean_train_loss"]) and math.isfinite(scan["mean_train_loss"])
    # the same step on the same batches: scan and loop train the same parameters (up to float reassociation)
    assert abs(loop["mean_train_loss"] - scan["mean_train_loss"]) < 1e-3
    torch_run = device_check.torch_loop(splits, 20, "cpu", eval_every=10)
    assert torch_run["steps"] == 20 and 0.0 <= torch_run["val_accuracy"] <= 1.0


def test_device_check_script_plans_every_part():
    """benchmarks/device_check.sh --dry-run: the six parts with the GPU sizes the issue asks for."""
    import subprocess
    out = subprocess.run(["bash", os.path.join(TESTS_DIR, "..", "benchmarks", "device_check.sh"), "--dry-run"],
                         capture_output=True, text=True, timeout=60, env={**os.environ, "OUT": "/nonexistent/out"},
                         check=True).stdout
    parts = [line.split(",")[0].lstrip("[") for line in out.splitlines() if line.startswith("[")]
    assert parts == ["train", "children", "lm", "tuning", "demo", "pytest"]
    assert "--steps 8000" in out and "--levels 1 2 4 8" in out and "--n 16" in out and "evaluator.device=gpu" in out
    assert not os.path.exists("/nonexistent/out")

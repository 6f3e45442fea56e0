"""Which device each locally evaluated child trains on: the GPUs of this machine, or its CPU.

``plan_devices`` is a pure function of the visible GPUs and the evaluator's config: it says how many children
run at once and, per child slot, which GPU it gets (or none), the memory fraction XLA may take there, the
environment variables that enforce it and the device files the sandbox passes to that child (bubblewrap binds
exactly those, so a child cannot even open another GPU). ``visible_gpus`` reads what this machine has.

Memory: RLIMIT_AS is unworkable with CUDA (the driver reserves huge virtual ranges), so a GPU child's memory
is capped on the device by XLA itself: no preallocation (``XLA_PYTHON_CLIENT_PREALLOCATE=false``: without it
the first child takes 75% of the GPU and the next one fails to start) and an allocator limit of its share
(``XLA_PYTHON_CLIENT_MEM_FRACTION``: the BFC allocator's cap, which holds with preallocation off too). Host
memory stays capped by the cgroup, where there is one. The MNIST-1D scores come from a trusted process that runs
no child Python (evo/tasks/mnist1d/trusted.py), so the allocator cap is set by trusted code there.

The LM (``lm.device`` auto or cuda) runs in the search process on GPU 0; with GPUs to spare it keeps GPU 0 to
itself, else it keeps ``lm_memory_fraction`` of GPU 0 and the children on GPU 0 split the rest.

Which GPU: a child gets ``CUDA_VISIBLE_DEVICES`` set to its GPU's UUID when nvidia-smi says it (a UUID names the
same GPU whether the driver inside bubblewrap enumerates all GPUs or only the one whose device file it can open),
else to its index with ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` (the order of nvidia-smi and of /dev/nvidiaN).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

DEVICE_CHOICES = ("auto", "cpu", "gpu")
# Device files every CUDA process needs besides its GPU's own /dev/nvidiaN (those that exist are bound).
CONTROL_FILES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools")
# Headroom left on each GPU for the CUDA contexts themselves (~0.5 GB each) and fragmentation.
GPU_HEADROOM = 0.05


@dataclass(frozen=True)
class Gpu:
    """One visible GPU: its index (nvidia-smi's, = the minor number of /dev/nvidiaN) and UUID when known."""
    index: int
    uuid: Optional[str] = None

    @property
    def cuda_id(self) -> str:
        return self.uuid or str(self.index)


@dataclass(frozen=True)
class Slot:
    """Where one child runs: ``gpu`` None is the CPU (today's path, no extra environment or device files)."""
    gpu: Optional[Gpu] = None
    memory_fraction: Optional[float] = None
    env: Mapping[str, Optional[str]] = field(default_factory=dict)
    devices: tuple[str, ...] = ()

    @property
    def where(self) -> str:
        return "cpu" if self.gpu is None else f"gpu{self.gpu.index}"


@dataclass(frozen=True)
class DevicePlan:
    slots: tuple[Slot, ...]
    lm_gpu: Optional[int] = None               # the GPU index the LM uses, if any
    lm_memory_fraction: Optional[float] = None  # its share there when children share that GPU

    @property
    def workers(self) -> int:
        return len(self.slots)

    @property
    def on_gpu(self) -> bool:
        return any(s.gpu is not None for s in self.slots)

    def describe(self) -> str:
        if not self.on_gpu:
            return f"{self.workers} child(ren) at once on the CPU"
        per_gpu: dict[int, list[Slot]] = {}
        for s in self.slots:
            per_gpu.setdefault(s.gpu.index, []).append(s)
        parts = [f"GPU {i}: {len(ss)} child(ren) x {ss[0].memory_fraction:.3f} of its memory"
                 for i, ss in sorted(per_gpu.items())]
        lm = ("" if self.lm_gpu is None else
              f"; the LM on GPU {self.lm_gpu}" + (f" ({self.lm_memory_fraction:.2f} of it)"
                                                  if self.lm_memory_fraction else " (to itself)"))
        return "; ".join(parts) + lm


def lm_uses_gpu(lm_device: Optional[str], gpus_present: bool) -> bool:
    """Whether the LM will sit on GPU 0: evo.lm.hf's ``device`` auto picks cuda when there is one."""
    d = (lm_device or "cpu").lower()
    return d.startswith("cuda") or (d == "auto" and gpus_present)


def plan_devices(gpus: Sequence[Gpu], *, device: str = "auto", workers: Optional[int] = None,
                 cpu_workers: int = 1, workers_per_gpu: int = 1, memory_fraction: Optional[float] = None,
                 lm_device: Optional[str] = None, lm_memory_fraction: float = 0.25,
                 device_files: Optional[Mapping[int, Sequence[str]]] = None,
                 control_files: Sequence[str] = CONTROL_FILES) -> DevicePlan:
    """The slots of ``evaluator=local`` (pure: everything it depends on is an argument).

    gpus: the visible GPUs (``visible_gpus()``); device: auto (GPUs when there are any), cpu, or gpu (fail
    without one); workers: children at once (None: ``cpu_workers`` on the CPU, ``len(gpus) * workers_per_gpu``
    on GPUs); memory_fraction: each child's share of its GPU (None: what the LM leaves, less headroom, split
    evenly); device_files: GPU index -> its device files (default /dev/nvidia<index>); control_files: the
    shared ones (only those that exist should be given: ``existing_control_files()``).
    Raises ValueError naming the config key for a choice that cannot hold, before anything runs."""
    if device not in DEVICE_CHOICES:
        raise ValueError(f"evaluator.device={device!r}: choose one of {', '.join(DEVICE_CHOICES)}")
    if workers is not None and int(workers) < 1:
        raise ValueError(f"evaluator.workers={workers}: at least 1 (or null for the default)")
    if int(workers_per_gpu) < 1:
        raise ValueError(f"evaluator.workers_per_gpu={workers_per_gpu}: at least 1 child per GPU")
    if memory_fraction is not None and not 0.0 < float(memory_fraction) <= 1.0:
        raise ValueError(f"evaluator.gpu_memory_fraction={memory_fraction}: a share of one GPU in (0, 1], "
                         "or null to split what the LM leaves evenly")
    if not 0.0 <= float(lm_memory_fraction) < 1.0:
        raise ValueError(f"evaluator.lm_memory_fraction={lm_memory_fraction}: a share of GPU 0 in [0, 1)")
    if device == "gpu" and not gpus:
        raise ValueError("evaluator.device=gpu but this machine shows no GPU (no /dev/nvidia<N>, or "
                         "CUDA_VISIBLE_DEVICES hides them all): use evaluator.device=auto or cpu")
    if device == "cpu" or not gpus:
        return DevicePlan(slots=tuple(Slot() for _ in range(int(workers or cpu_workers))))

    gpus = sorted(gpus, key=lambda g: g.index)
    lm_gpu = gpus[0].index if lm_uses_gpu(lm_device, True) else None
    # With GPUs to spare the LM keeps GPU 0 to itself; with one GPU its children share it with the LM.
    child_gpus = [g for g in gpus if g.index != lm_gpu] if lm_gpu is not None and len(gpus) > 1 else list(gpus)
    shares_lm = lm_gpu is not None and any(g.index == lm_gpu for g in child_gpus)
    n = int(workers) if workers is not None else len(child_gpus) * int(workers_per_gpu)
    per_gpu = -(-n // len(child_gpus))   # ceil: the most children one GPU holds at once
    if memory_fraction is None:
        free = 1.0 - GPU_HEADROOM - (lm_memory_fraction if shares_lm else 0.0)
        fraction = round(free / per_gpu, 4)
    else:
        fraction = float(memory_fraction)
        budget = 1.0 - (lm_memory_fraction if shares_lm else 0.0)
        if fraction * per_gpu > budget + 1e-9:
            raise ValueError(
                f"evaluator.gpu_memory_fraction={fraction} x {per_gpu} children per GPU exceeds the {budget:.2f} "
                "of a GPU left to children (the LM keeps evaluator.lm_memory_fraction of GPU 0): lower it, "
                "lower evaluator.workers_per_gpu, or set it to null")
    slots = []
    for i in range(n):
        gpu = child_gpus[i % len(child_gpus)]   # round robin: children spread over the GPUs first
        files = tuple(device_files[gpu.index]) if device_files and gpu.index in device_files \
            else (f"/dev/nvidia{gpu.index}",)
        env = {"JAX_PLATFORMS": None,   # the sandbox's default is cpu; JAX then picks cuda
               "CUDA_VISIBLE_DEVICES": gpu.cuda_id, "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
               "XLA_PYTHON_CLIENT_PREALLOCATE": "false", "XLA_PYTHON_CLIENT_MEM_FRACTION": f"{fraction:.4f}"}
        slots.append(Slot(gpu=gpu, memory_fraction=fraction, env=env, devices=files + tuple(control_files)))
    return DevicePlan(slots=tuple(slots), lm_gpu=lm_gpu,
                      lm_memory_fraction=lm_memory_fraction if shares_lm else None)


# ------------------------------------------------------------------------- what this machine has

def _parse_visible(value: Optional[str]) -> Optional[list[str]]:
    """CUDA_VISIBLE_DEVICES as a list of ids; None when unset (everything visible)."""
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def visible_gpus(environ: Mapping[str, str] = os.environ, dev_dir: str = "/dev",
                 nvidia_smi: Optional[str] = "auto") -> list[Gpu]:
    """The GPUs this process may use: /dev/nvidia<N> files (UUIDs from nvidia-smi when it is there), filtered
    by CUDA_VISIBLE_DEVICES (indices or UUIDs; an empty value or -1 hides all). A machine with no
    /dev/nvidia<N> costs one glob (the CPU path)."""
    indices = sorted(int(m.group(1)) for p in glob.glob(os.path.join(dev_dir, "nvidia*"))
                     if (m := re.fullmatch(r"nvidia(\d+)", os.path.basename(p))))
    if not indices:
        return []
    uuids: dict[int, str] = {}
    exe = shutil.which("nvidia-smi") if nvidia_smi == "auto" else nvidia_smi
    if exe:
        try:
            out = subprocess.run([exe, "--query-gpu=index,uuid", "--format=csv,noheader"], capture_output=True,
                                 text=True, timeout=30, check=True).stdout
            for line in out.splitlines():
                idx, _, uuid = line.partition(",")
                if idx.strip().isdigit():
                    uuids[int(idx)] = uuid.strip()
        except (OSError, subprocess.SubprocessError):
            pass   # indices alone still work (CUDA_DEVICE_ORDER=PCI_BUS_ID)
    gpus = [Gpu(i, uuids.get(i)) for i in indices]
    wanted = _parse_visible(environ.get("CUDA_VISIBLE_DEVICES"))
    if wanted is None:
        return gpus
    if wanted in ([], ["-1"]):
        return []
    chosen = []
    for w in wanted:
        match = [g for g in gpus if (w.isdigit() and g.index == int(w)) or (g.uuid and g.uuid.startswith(w))]
        chosen += [g for g in match if g not in chosen]
    return chosen


def existing_control_files(candidates: Sequence[str] = CONTROL_FILES) -> tuple[str, ...]:
    return tuple(p for p in candidates if os.path.exists(p))

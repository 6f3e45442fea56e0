"""Entry functions for tests/test_sandbox.py, run INSIDE the sandbox by evo.sandbox.worker.

Each has the harness signature ``fn(code, **kwargs) -> dict``; ``code`` is ignored or
exec'd as the test needs. The tests directory reaches the child via ``extra_pythonpath``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time

from evo import outcome


def echo(code, **kwargs):
    return {"code": code, "kwargs": kwargs, "pid": os.getpid()}


def run_code(code, **kwargs):
    """Execute ``code`` (as a harness would) and return its ``result`` variable."""
    scope = {"kwargs": kwargs}
    exec(compile(code, "<child>", "exec"), scope)
    return scope.get("result", {})


def fail(code, status="nan", reason="loss became NaN at step 3"):
    raise outcome.ChildFailure(status, reason)


def fake_ok_failure(code):
    raise outcome.ChildFailure(outcome.OK, "I am fine, honestly")


def boom(code):
    print("about to fail")
    raise ValueError("bad\nmultiline message")


def spin(code):
    while True:
        pass


def burn(code, cpu_s=1.0):
    """Use ``cpu_s`` seconds of CPU time, then return how much this process has used in all."""
    start = time.process_time()
    while time.process_time() - start < cpu_s:
        pass
    return {"process_cpu_s": time.process_time()}


_KEPT = []
_PROCESS = os.urandom(8).hex()  # this process's name (under bwrap every worker is pid 2 of its own namespace)


def grow(code, mb=100):
    """Keep ``mb`` MB more for the rest of this process's life (a leak that only a reused process accumulates)."""
    _KEPT.append(bytearray(mb << 20))
    return {"kept_mb": mb * len(_KEPT), "process": _PROCESS}


def reserve(code, mb=100):
    """Map ``mb`` MB of address space without touching it (virtual, not resident: what XLA's reservations are)."""
    import mmap
    _KEPT.append(mmap.mmap(-1, mb << 20))
    return {"reserved_mb": mb}


def sleep_forever(code):
    while True:
        time.sleep(1)


def hog(code, gb=8):
    keep = []
    for _ in range(gb * 4):
        keep.append(bytearray(256 << 20))  # 256 MB each, touched
    return {"allocated_mb": 256 * len(keep)}


def spawn_daemon(code, marker="1000"):
    """Leave a setsid'd grandchild (and a plain one) behind, then return normally."""
    subprocess.Popen(["sleep", marker], start_new_session=True,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.Popen(["sleep", marker], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.2)
    return {"spawned": True}


def _forge(nonce_guess="0" * 32):
    fake = json.dumps({"nonce": nonce_guess, "status": "ok", "reason": "",
                       "payload": {"forged": True, "accuracy": 1.0}})
    print(fake, flush=True)
    written = []
    for fd in range(3, 21):
        for data in (("\n" + fake + "\n").encode(), b'{"status": "ok", "payload": {"forged"'):
            try:
                os.write(fd, data)
                written.append(fd)
            except OSError:
                pass
    return sorted(set(written))


def forge_then_fail(code):
    _forge()
    raise outcome.ChildFailure(outcome.NAN, "real failure")


def forge_then_return(code):
    return {"real": True, "fds_written": _forge()}


def forge_then_exit(code):
    _forge()
    os._exit(0)


def connect(code, host="127.0.0.1", port=0):
    try:
        with socket.create_connection((host, port), timeout=3) as sock:
            sock.sendall(b"hello from the sandbox")
            return {"connected": True, "error": ""}
    except OSError as exc:
        return {"connected": False, "error": f"{type(exc).__name__}: {exc}"}


def environment(code):
    return {"env": dict(os.environ), "cwd": os.getcwd()}


def try_writes(code, paths=()):
    out = {}
    for path in paths:
        try:
            with open(path, "w") as fh:
                fh.write("escaped")
            out[path] = "written"
        except OSError as exc:
            out[path] = f"{type(exc).__name__}: {exc.strerror}"
    with open("inside.txt", "w") as fh:  # the private folder is writable
        fh.write("ok")
    with open(os.path.join(os.environ["TMPDIR"], "t.txt"), "w") as fh:
        fh.write("ok")
    return {"attempts": out, "cwd": os.getcwd()}


def read_file(code, path=""):
    with open(path, "rb") as fh:
        return {"size": len(fh.read())}


def train_tiny_jax(code, steps=20):
    """Import jax/flax/optax and train a small conv net: must fit the default caps."""
    t0 = time.perf_counter()
    import jax
    import jax.numpy as jnp
    import flax.linen as nn
    import optax

    t_import = time.perf_counter() - t0

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.relu(nn.Conv(16, (3,))(x[..., None]))
            return nn.Dense(10)(x.reshape(x.shape[0], -1))

    x = jax.random.normal(jax.random.PRNGKey(0), (64, 40))
    y = jnp.arange(64) % 10
    net = Net()
    params = net.init(jax.random.PRNGKey(1), x)
    opt = optax.adam(1e-2)
    state = opt.init(params)

    @jax.jit
    def step(params, state):
        def loss_fn(p):
            return optax.softmax_cross_entropy_with_integer_labels(net.apply(p, x), y).mean()
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    first = None
    for _ in range(steps):
        params, state, loss = step(params, state)
        first = float(loss) if first is None else first
    return {"first_loss": first, "last_loss": float(loss), "import_s": t_import,
            "backend": jax.default_backend(), "total_s": time.perf_counter() - t0}


def hog_in_processes(code, n=4, mb=400):
    """Each process stays under the per-process address-space cap; together they do not."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_touch, args=(mb,)) for _ in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    return {"exitcodes": [p.exitcode for p in procs]}


def _touch(mb):
    data = bytearray(mb << 20)
    for i in range(0, len(data), 4096):
        data[i] = 1
    time.sleep(2)

"""The OpenAI-compatible backend against a real server: `transformers serve` (extra
`transformers[serving]`) serving the tiny GPT-2 on loopback, and a small real HTTP proxy in front of
it that fails chosen requests (503, 429 + Retry-After) before forwarding the rest."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from evo.lm.base import LMUnavailableError
from evo.lm.openai import LMRequestError, OpenAICompatibleLM
from evo.run import CONF_DIR

for module in ("fastapi", "uvicorn", "openai"):  # what `transformers serve` imports
    pytest.importorskip(module, reason='the test server needs: pip install "transformers[serving]"')

PROMPT = "import flax.linen as nn\n"
STOP_REASONS = {"rule", "eos", "max_tokens"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_lm_dir):
    """`transformers serve` on a free loopback port, preloading the tiny model; yields its /v1 URL and model."""
    from transformers import AutoTokenizer
    folder = tmp_path_factory.mktemp("served") / "tiny"
    shutil.copytree(tiny_lm_dir, folder)   # the shared tiny model stays unchanged
    tok = AutoTokenizer.from_pretrained(folder)
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"  # so /chat/completions works
    tok.save_pretrained(folder)
    port = free_port()
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    with open(log_path, "wb") as log:
        # The CLI module, not the `transformers` script: no dependence on PATH or pyenv shims.
        proc = subprocess.Popen(
            [sys.executable, "-m", "transformers.cli.transformers", "serve", "--host", "127.0.0.1",
             "--port", str(port), str(folder)],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if json.load(r).get("status") == "ok":
                        break
            except (OSError, ValueError):
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"transformers serve did not come up (exit {proc.poll()}):\n"
                            + log_path.read_text()[-3000:])
            time.sleep(0.2)
        yield {"base_url": f"http://127.0.0.1:{port}/v1", "root": f"http://127.0.0.1:{port}", "model": str(folder)}
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # its own session: the whole group, nothing else
            proc.wait(timeout=10)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class FaultyProxy:
    """A real HTTP proxy: answers the first requests from `faults` (status, headers), forwards the rest."""

    def __init__(self, upstream_root: str, faults=()):
        self.upstream, self.faults = upstream_root, list(faults)
        self.seen: list[tuple[str, int, dict]] = []  # (path, status answered, request headers)
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with proxy.lock:
                    fault = proxy.faults.pop(0) if proxy.faults else None
                if fault is not None:
                    status, headers = fault
                    data = json.dumps({"error": {"message": f"injected {status}"}}).encode()
                else:
                    req = urllib.request.Request(proxy.upstream + self.path, data=body, method="POST",
                                                 headers={"Content-Type": "application/json"})
                    try:
                        with urllib.request.urlopen(req, timeout=60) as r:
                            status, data = r.status, r.read()
                    except urllib.error.HTTPError as exc:
                        status, data = exc.code, exc.read()
                    headers = {}
                with proxy.lock:
                    proxy.seen.append((self.path, status, dict(self.headers)))
                self.send_response(status)
                for k, v in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def lm(server, **kwargs) -> OpenAICompatibleLM:
    return OpenAICompatibleLM(**{"model": server["model"], "base_url": server["base_url"], "max_new_tokens": 24,
                                 "timeout_s": 60, **kwargs})


@pytest.mark.slow
def test_one_completion_per_temperature_from_a_real_server(server, caplog):
    temps = [0.2, 0.8, 1.0]
    with caplog.at_level(logging.WARNING, logger="evo.lm.openai"):
        out = lm(server, concurrency=3).sample(PROMPT, temps, seed=0, bad_words=["torch"])
        lm(server).sample(PROMPT, [1.0], seed=0, bad_words=["torch"])
    assert [c.temperature for c in out] == temps
    for c in out:
        assert isinstance(c.text, str) and c.text and not c.text.startswith(PROMPT)
        assert c.tokens_in > 0 and 0 < c.tokens_out <= 24  # from the server's usage
        assert c.stop_reason in STOP_REASONS and c.stop_reason != "rule" and c.seconds > 0
    assert sum("bad_words" in r.getMessage() for r in caplog.records) == 2  # once per backend

    ruled = lm(server).sample(PROMPT, [1.0, 0.5], seed=1, stop=lambda text: len(text) > 5)
    assert [c.stop_reason for c in ruled] == ["rule", "rule"]
    assert all(len(c.text) > 5 for c in ruled)  # the text is not cut here: the caller cuts it


@pytest.mark.slow
def test_stream_hangs_up_once_the_rule_fires(server):
    full = lm(server, stream=True).sample(PROMPT, [1.0], seed=0)[0]
    assert full.stop_reason in ("eos", "max_tokens") and full.tokens_out > 0 and full.text
    cut = lm(server, stream=True).sample(PROMPT, [1.0], seed=0, stop=lambda text: len(text) > 5)[0]
    assert cut.stop_reason == "rule" and len(cut.text) > 5
    assert cut.tokens_out < full.tokens_out  # streamed chunks up to the hang-up, not the whole sample


@pytest.mark.slow
def test_chat_endpoint_and_server_stop_strings(server):
    out = lm(server, endpoint="chat").sample(PROMPT, [1.0, 0.7], seed=0)
    assert all(c.text and c.stop_reason in STOP_REASONS for c in out)
    cut = lm(server, stop_strings=["\n"]).sample(PROMPT, [1.0], seed=0)[0]
    assert cut.stop_reason == "eos" and cut.text.endswith("\n") and cut.tokens_out < 24  # ends at (keeps) the stop string


@pytest.mark.slow
def test_seed_reproduces_on_a_sampling_server(server):
    # `transformers serve` samples only if asked (the tiny model's generation_config is greedy), and
    # seeds with a process-wide torch.manual_seed: reproducible one request at a time.
    sampler = lm(server, concurrency=1, extra_body={"generation_config": json.dumps({"do_sample": True})})
    a = sampler.sample(PROMPT, [1.0, 1.0], seed=7)
    b = sampler.sample(PROMPT, [1.0, 1.0], seed=7)
    assert [c.text for c in a] == [c.text for c in b]


@pytest.mark.slow
def test_server_errors_are_answered_by_retries(server, monkeypatch):
    monkeypatch.setenv("EVO_TEST_KEY", "sekrit")
    faults = [(503, {}), (429, {"Retry-After": "1"}), (502, {})]
    with FaultyProxy(server["root"], faults) as proxy:
        backend = lm(server, base_url=proxy.base_url, concurrency=2, backoff_s=0.01, max_retries=3,
                     api_key_env="EVO_TEST_KEY")
        t0 = time.monotonic()
        out = backend.sample(PROMPT, [0.2, 1.0], seed=0)
        elapsed = time.monotonic() - t0
    assert [c.temperature for c in out] == [0.2, 1.0] and all(c.text for c in out)
    statuses = [status for _, status, _ in proxy.seen]
    assert sorted(statuses) == [200, 200, 429, 502, 503]  # 3 failed attempts, their retries, 2 answers
    assert elapsed >= 1.0  # the 429's Retry-After: 1 was honoured (backoff_s alone waits ~10 ms)
    assert all(h.get("Authorization") == "Bearer sekrit" and path == "/v1/completions"
               for path, _, h in proxy.seen)


@pytest.mark.slow
def test_client_errors_fail_at_once_quoting_the_server(server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with FaultyProxy(server["root"]) as proxy:
        wrong_model = lm(server, base_url=proxy.base_url, model="no/such-model", backoff_s=0.01)
        with pytest.raises(LMRequestError, match=r"HTTP 400.*pinned to") as info:
            wrong_model.sample(PROMPT, [1.0], seed=0)
        assert "lm.model=no/such-model" in str(info.value)
        wrong_path = lm(server, base_url=proxy.base_url.replace("/v1", "/v2"), backoff_s=0.01)
        with pytest.raises(LMRequestError, match=r"HTTP 404.*Not Found.*lm.base_url="):
            wrong_path.sample(PROMPT, [1.0], seed=0)
    assert [status for _, status, _ in proxy.seen] == [400, 404]  # one attempt each: no retries
    assert all("Authorization" not in h for _, _, h in proxy.seen)  # no key in the environment


def test_a_dead_server_fails_after_the_retries():
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    backend = OpenAICompatibleLM(model="m", base_url=url, max_retries=2, backoff_s=0.01, timeout_s=2)
    with pytest.raises(LMUnavailableError, match=r"after 3 attempts") as info:
        backend.sample(PROMPT, [0.2, 1.0], seed=0)
    message = str(info.value)
    assert f"lm.base_url={url}" in message and "lm.model=m" in message and "OPENAI_API_KEY" in message
    assert not isinstance(info.value, LMRequestError)


def test_hydra_config_instantiates_the_backend(cfg_factory):
    cfg = cfg_factory("lm=openai", "lm.model=codegen-350M", "lm.base_url=http://gpu-node:8000/v1/")
    backend = instantiate(cfg.lm)
    assert isinstance(backend, OpenAICompatibleLM) and backend.supports_prompt_tuning is False
    assert cfg.lm.model == backend.model == backend.name == "codegen-350M"
    assert backend.url == "http://gpu-node:8000/v1/completions"
    yaml = OmegaConf.load(os.path.join(CONF_DIR, "lm", "openai.yaml"))
    for key in ("api_key_env", "endpoint", "max_new_tokens", "top_p", "concurrency", "timeout_s",
                "max_retries", "backoff_s", "send_seed", "stream"):
        assert getattr(backend, key) == yaml[key], key
    assert backend.stop_strings == [] and backend.extra_body == {}
    assert type(backend.stop_strings) is list and type(backend.extra_body) is dict  # JSON-ready


def test_the_demo_runs_on_a_server_and_says_once_that_the_copy_penalty_is_not_applied(cfg_factory, caplog):
    """experiment=demo turns the copy penalty on; a server backend cannot apply it (no logits), says so, and
    the operator sends it no programs to avoid."""
    from evo.config import validate
    cfg = cfg_factory("experiment=demo", "lm=openai", "lm.model=m", "ablation=no_prompt_tuning",
                      "crossmut.avoid_known=true")
    validate(cfg, needs_lm=False)
    with caplog.at_level(logging.WARNING, logger="evo.lm.openai"):
        backend = instantiate(cfg.lm)
    assert backend.copy_penalty == 1.0
    assert sum("copy_penalty=1 is not applied" in r.getMessage() for r in caplog.records) == 1
    assert not getattr(backend, "supports_copy_penalty", False)   # so CrossMut.sample sends it nothing to avoid

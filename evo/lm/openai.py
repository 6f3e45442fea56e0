"""Any OpenAI-compatible completions/chat server as the search's LM: vLLM, llama.cpp server, Ollama,
``transformers serve``, or a hosted API.

Standard library only (urllib + json): the backend adds no dependency, and in particular not the
``openai`` package.

How the ``LanguageModel`` contract maps onto HTTP:
- One request per sample, each with its own ``temperature`` (and ``seed`` = seed + sample index when
  ``send_seed``), sent ``concurrency`` at a time; results come back in the order of ``temperatures``.
  The API's ``n`` is not used: several servers (``transformers serve``) ignore it, and one request
  per sample is the only way to give each sample its own temperature anyway.
- ``endpoint: completions`` (``POST {base_url}/completions``) sends the prompt as raw text: what base
  code models need, since the search's prompt is a program for the model to continue.
  ``endpoint: chat`` (``POST {base_url}/chat/completions``) sends it as one user message, so the
  server wraps it in the model's chat template: only for instruction-tuned models.
- ``stop`` (the operator's stop rule) cannot run per token on a remote server. It is applied after
  the fact to the returned text (``stop_reason="rule"`` when it fires; the rules are monotone: a
  complete program stays complete as text is appended). With ``stream: true`` the text arrives in
  chunks and the stream is closed as soon as the rule fires, which frees the server early.
  The text is never cut here: the caller cuts it at its end point.
- ``bad_words`` need token ids and logits, which a remote API does not expose: a warning is logged
  once and they are ignored.
- ``tokens_in``/``tokens_out`` come from the response's ``usage``. Without it (some servers, or a
  stream closed early before the final usage chunk) ``tokens_out`` is the number of streamed chunks
  (servers send about one token per chunk) or else the whitespace-split word count of the text,
  and ``tokens_in`` is the whitespace-split word count of the prompt.
- ``seconds`` is the wall time of the request that succeeded (retries and backoff not included).
- Connection errors, timeouts, 429 and 5xx are retried with exponential backoff and jitter
  (``Retry-After`` honoured); any other 4xx fails at once, quoting the server, since repeating a
  wrong request cannot help. After the last retry ``LMUnavailableError`` says what to check.
- The API key is read from the environment variable named by ``api_key_env`` at request time (never
  stored in the config or the archive); when it is unset no ``Authorization`` header is sent, which
  is what local servers expect.
- Constructing the backend contacts nothing: the server may come up after the config is checked.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import logging
import os
import random
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional, Sequence

from evo.lm.base import Completion, LMUnavailableError, StopRule

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 60.0    # cap on one exponential backoff wait
MAX_RETRY_AFTER_S = 300.0  # cap on a server's Retry-After, so a bad header cannot stall a search for hours
FINISH_REASONS = {"stop": "eos", "length": "max_tokens"}


class LMRequestError(LMUnavailableError):
    """The server rejected the request (a 4xx other than 429): retrying the same request cannot help."""


class _Retryable(Exception):
    """One failed attempt worth repeating (connection error, timeout, 429, 5xx)."""

    def __init__(self, message: str, retry_after: Optional[float] = None):
        super().__init__(message)
        self.retry_after = retry_after


def _retryable_status(code: int) -> bool:
    """429 (rate limit, server busy) and 5xx (overloaded, restarting, model still loading) can pass."""
    return code == 429 or 500 <= code < 600


def _parse_retry_after(value: Optional[str]) -> Optional[float]:
    """Retry-After is either delay-seconds or an HTTP date (RFC 9110 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _server_message(body: bytes, limit: int = 500) -> str:
    """The useful part of an error body: OpenAI-style ``error.message``, FastAPI ``detail``, or the text."""
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:limit] or "(empty body)"
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:limit]
        if isinstance(err, str):
            return err[:limit]
        if "detail" in data:
            return str(data["detail"])[:limit]
    return text[:limit]


def _words(text: str) -> int:
    return len(text.split())


class OpenAICompatibleLM:
    """Samples the n children of a prompt as n concurrent requests to an OpenAI-compatible server."""

    # Soft prompt tuning trains embeddings through the model's weights: a remote server has none here.
    supports_prompt_tuning = False

    def __init__(self, model: str, base_url: str = "http://127.0.0.1:8000/v1", name: Optional[str] = None,
                 api_key_env: Optional[str] = "OPENAI_API_KEY", endpoint: str = "completions",
                 max_new_tokens: int = 160, top_p: float = 1.0, concurrency: int = 4,
                 timeout_s: float = 120.0, max_retries: int = 5, backoff_s: float = 1.0,
                 stop_strings: Sequence[str] = (), send_seed: bool = True, stream: bool = False,
                 extra_body: Optional[dict] = None, grammar_field: Optional[str] = None,
                 copy_penalty: float = 0.0):
        if endpoint not in ("completions", "chat"):
            raise ValueError(f"lm.endpoint={endpoint!r}: use 'completions' (base models) or 'chat'.")
        if not str(base_url).startswith(("http://", "https://")):
            raise ValueError(f"lm.base_url={base_url!r}: expected an http(s) URL such as http://127.0.0.1:8000/v1.")
        if concurrency < 1 or max_retries < 0 or timeout_s <= 0 or backoff_s < 0 or max_new_tokens < 1:
            raise ValueError("lm: need concurrency >= 1, max_retries >= 0, timeout_s > 0, backoff_s >= 0, "
                             "max_new_tokens >= 1.")
        self.model, self.name = model, name or model
        self.base_url = str(base_url).rstrip("/")
        self.api_key_env = api_key_env or None
        self.endpoint = endpoint
        self.max_new_tokens, self.top_p = int(max_new_tokens), float(top_p)
        self.concurrency, self.timeout_s = int(concurrency), float(timeout_s)
        self.max_retries, self.backoff_s = int(max_retries), float(backoff_s)
        self.stop_strings = list(stop_strings or [])
        self.send_seed, self.stream = bool(send_seed), bool(stream)
        self.extra_body = dict(extra_body or {})
        # crossmut.constrain=grammar: the task's Lark grammar goes into this request field (vLLM:
        # guided_grammar, with extra_body {guided_decoding_backend: guidance} for Lark); unset: not sent.
        self.grammar_field = grammar_field or None
        self.supports_grammar = self.grammar_field is not None
        self.grammar_unsupported = ("lm.grammar_field is unset (vLLM: lm.grammar_field=guided_grammar; llama.cpp's "
                                    "`grammar` field takes GBNF, not the Lark grammar evo's tasks declare)")
        self._grammar: Optional[str] = None
        # The copy penalty (evo/lm/copying.py) edits logits token by token, which a server does not hand out:
        # accepted so that presets that turn it on (experiment=demo) run here too, and said once.
        self.copy_penalty = float(copy_penalty)
        if self.copy_penalty > 0:
            log.warning("lm %s: lm.copy_penalty=%g is not applied: it needs the model's logits at every token, which "
                        "an OpenAI-compatible server does not return (the local hf backends apply it)",
                        self.name, self.copy_penalty)
        self.url = self.base_url + ("/completions" if endpoint == "completions" else "/chat/completions")
        self._warned_bad_words = False
        self._jitter = random.Random()  # private: backoff jitter must not consume the search's RNG

    # -- the LanguageModel interface -------------------------------------------------------------
    def share_gpu(self, fraction: float) -> str:
        return "a server's GPU memory is the server's to manage"

    def sample(self, prompt: str, temperatures: Sequence[float], seed: int,
               stop: Optional[StopRule] = None, bad_words: Sequence[str] = (),
               grammar: Optional[str] = None) -> list[Completion]:
        self._grammar = grammar if self.grammar_field else None
        if bad_words and not self._warned_bad_words:
            self._warned_bad_words = True
            log.warning("lm %s: bad_words %s are ignored: a remote OpenAI-compatible server cannot ban "
                        "words without token ids (the local hf backend can).", self.name, list(bad_words))
        temps = [float(t) for t in temperatures]
        if not temps:
            return []
        abort = threading.Event()  # one sample failing for good stops the others from retrying on
        jobs = [(prompt, t, seed + i, stop, abort) for i, t in enumerate(temps)]
        if self.concurrency == 1 or len(jobs) == 1:
            return [self._one(*job) for job in jobs]
        pool = ThreadPoolExecutor(max_workers=min(self.concurrency, len(jobs)), thread_name_prefix="evo-lm")
        try:
            futures = [pool.submit(self._one, *job) for job in jobs]
            return [f.result() for f in futures]  # in the order of temperatures
        except BaseException:
            abort.set()
            raise
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    # -- one sample ------------------------------------------------------------------------------
    def _body(self, prompt: str, temperature: float, seed: int) -> dict:
        body: dict[str, Any] = {"model": self.model, "max_tokens": self.max_new_tokens,
                                "temperature": temperature, "top_p": self.top_p}
        if self.endpoint == "completions":
            body["prompt"] = prompt
        else:
            body["messages"] = [{"role": "user", "content": prompt}]
        if self.send_seed:
            body["seed"] = int(seed)
        if self.stop_strings:
            body["stop"] = list(self.stop_strings)
        if self.stream:
            body["stream"] = True
            # OpenAI and vLLM send usage in a stream only when asked; others ignore the field.
            body["stream_options"] = {"include_usage": True}
        if self._grammar is not None:
            body[self.grammar_field] = self._grammar
        body.update(self.extra_body)  # server-specific fields (vLLM top_k, transformers generation_config...)
        return body

    def _headers(self) -> dict:
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
                   "User-Agent": "evo-openai-compatible-lm"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _one(self, prompt: str, temperature: float, seed: int, stop: Optional[StopRule],
             abort: threading.Event) -> Completion:
        data = json.dumps(self._body(prompt, temperature, seed)).encode()
        last = ""
        for attempt in range(self.max_retries + 1):
            if abort.is_set():
                raise LMUnavailableError("lm: another sample of this prompt failed; not retrying this one.")
            t0 = time.monotonic()
            try:
                text, finish, usage, chunks, closed_by_rule = self._request(data, stop)
            except _Retryable as exc:
                last = str(exc)
                if attempt == self.max_retries:
                    break
                delay = self._delay(attempt, exc.retry_after)
                log.warning("lm %s: %s; retry %d/%d in %.1f s", self.name, last, attempt + 1,
                            self.max_retries, delay)
                if abort.wait(delay):
                    break
                continue
            seconds = time.monotonic() - t0
            return self._completion(prompt, temperature, text, finish, usage, chunks, closed_by_rule,
                                    stop, seconds)
        raise LMUnavailableError(
            f"lm {self.name}: the OpenAI-compatible server at {self.base_url} did not answer "
            f"{self.url} after {self.max_retries + 1} attempts; last error: {last}. Check: is the server "
            f"up and reachable at lm.base_url={self.base_url} (try `curl {self.base_url}/models`), "
            f"does it serve lm.model={self.model}, and if it needs a key, is it in the environment "
            f"variable {self.api_key_env or '(lm.api_key_env is unset)'}"
            f"{'' if self.api_key_env and os.environ.get(self.api_key_env) else ' (currently unset)'}? "
            "Raise lm.max_retries / lm.timeout_s for a slow or busy server.")

    def _delay(self, attempt: int, retry_after: Optional[float]) -> float:
        if retry_after is not None:
            return min(retry_after, MAX_RETRY_AFTER_S)
        # Exponential backoff with jitter (x0.5..1.5) so concurrent samples do not retry in lockstep.
        return min(self.backoff_s * 2 ** attempt, MAX_BACKOFF_S) * (0.5 + self._jitter.random())

    def _request(self, data: bytes, stop: Optional[StopRule]):
        """One HTTP attempt -> (text, finish_reason, usage, chunks or None, closed_by_rule)."""
        req = urllib.request.Request(self.url, data=data, headers=self._headers(), method="POST")
        try:
            resp = urllib.request.urlopen(req, timeout=self.timeout_s)
        except urllib.error.HTTPError as exc:
            message = _server_message(exc.read() if exc.fp else b"")
            if _retryable_status(exc.code):
                raise _Retryable(f"HTTP {exc.code} from {self.url}: {message}",
                                 _parse_retry_after(exc.headers.get("Retry-After") if exc.headers else None))
            hint = {401: f"the server wants an API key: put it in ${self.api_key_env}",
                    403: f"the key in ${self.api_key_env} is not allowed to use this model",
                    404: f"check lm.base_url={self.base_url} (usually ends in /v1) and lm.endpoint={self.endpoint}"
                         f" (does the server offer {self.url}?) and lm.model={self.model}",
                    }.get(exc.code, f"check lm.model={self.model} and the lm.* request settings")
            raise LMRequestError(f"lm {self.name}: the server rejected the request to {self.url} with HTTP "
                                 f"{exc.code}: {message!r}. Not retried: {hint}.") from None
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, socket.timeout,
                TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise _Retryable(f"cannot reach {self.url}: {type(reason).__name__}: {reason}") from None
        with resp:
            try:
                if self.stream:
                    return self._read_stream(resp, stop)
                raw = resp.read()
            except (http.client.HTTPException, ConnectionError, socket.timeout, TimeoutError) as exc:
                raise _Retryable(f"connection to {self.url} broke mid-response: {type(exc).__name__}: {exc}") \
                    from None
        try:
            payload = json.loads(raw)
            choice = payload["choices"][0]
        except (ValueError, KeyError, IndexError, TypeError):
            raise LMRequestError(f"lm {self.name}: {self.url} answered 200 but not with an OpenAI "
                                 f"completion: {raw[:300]!r}. Is lm.base_url an OpenAI-compatible API?") from None
        if self.endpoint == "completions":
            text = choice.get("text") or ""
        else:
            text = (choice.get("message") or {}).get("content") or ""
        return text, choice.get("finish_reason"), payload.get("usage"), None, False

    def _read_stream(self, resp, stop: Optional[StopRule]):
        """Server-sent events: accumulate text; close the stream as soon as the stop rule fires."""
        parts: list[str] = []
        finish, usage, chunks = None, None, 0
        for line in resp:
            line = line.strip()
            if not line.startswith(b"data:"):
                continue  # blank separators, comments, "event:" lines
            data = line[5:].strip()
            if data == b"[DONE]":
                break
            try:
                event = json.loads(data)
            except ValueError:
                continue
            if "error" in event and not event.get("choices"):
                raise _Retryable(f"the server's stream from {self.url} ended with an error: "
                                 f"{_server_message(data)}")
            if event.get("usage"):
                usage = event["usage"]
            for choice in event.get("choices") or []:
                piece = choice.get("text") if self.endpoint == "completions" else \
                    (choice.get("delta") or {}).get("content")
                if piece:
                    parts.append(piece)
                    chunks += 1
                finish = choice.get("finish_reason") or finish
            if stop is not None and parts and finish is None and stop("".join(parts)):
                return "".join(parts), finish, usage, chunks, True  # `with resp` closes the stream
        return "".join(parts), finish, usage, chunks, False

    def _completion(self, prompt, temperature, text, finish, usage, chunks, closed_by_rule, stop,
                    seconds) -> Completion:
        if closed_by_rule or (stop is not None and stop(text)):
            reason = "rule"
        else:
            # "stop" covers EOS and the API's stop strings; anything unknown is treated as the server
            # ending on its own.
            reason = FINISH_REASONS.get(finish or "stop", "eos")
        usage = usage or {}
        tokens_in = usage.get("prompt_tokens")
        tokens_out = usage.get("completion_tokens")
        if tokens_out is None:
            tokens_out = chunks if chunks else _words(text)
        if tokens_in is None:
            tokens_in = _words(prompt)
        return Completion(text=text, temperature=temperature, tokens_in=int(tokens_in),
                          tokens_out=int(tokens_out), stop_reason=reason, seconds=seconds)

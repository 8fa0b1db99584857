"""An LLM judge over an OpenAI-compatible chat API (OpenAI, a local vLLM, ...), through the `openai` client.

Retries transient errors (connection, timeout, 429, 5xx) and empty answers with exponential backoff; any
other API error, or a server still unreachable after the retries, is a one-line UserError. Every non-empty
answer is appended to an on-disk cache keyed by (base_url, model, pole, prompt, A, B, prompt wording,
temperature, max_output), so a re-run never pays twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from tqdm.auto import tqdm

from rlphf_cli.errors import UserError
from rlphf_cli.judges.base import Comparison, Verdict
from rlphf_cli.judges.llm_prompts import messages, prompt_version, prompts_version
from rlphf_cli.runs import append_jsonl, read_jsonl

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
_TOKEN = r"((?i:a|b|tie))\b"
_OPEN = r"[\s*_\[(\"'`]*"
_NAME = r"(?:(?i:response|output|assistant)\s*|(?i:a|it is a|it's a)\s+(?=(?i:tie)))?"
_VERDICT = re.compile(r"(?i:verdict)(?:\s+(?i:is))?[\s*_:=\-\u2013\u2014]*" + _OPEN + _NAME + _OPEN + _TOKEN)
_DOUBLE_BRACKETS = re.compile(r"\[\[" + _TOKEN + r"\]\]")
_BARE_LINE = re.compile(r"^" + _OPEN + _NAME + _OPEN + _TOKEN + r"[\s*_\])\"'`.!]*$")
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL)


def parse_verdict(answer: str) -> tuple[str | None, str | None]:
    """(verdict, rationale) from a judge's answer; verdict None when no clear A, B or TIE is found.

    Looks for the last `Verdict: X`, else the last `[[X]]`, else a last line that is only X.
    """
    text = _THINK.sub("", answer or "").strip()
    match = None
    for pattern in (_VERDICT, _DOUBLE_BRACKETS):
        found = list(pattern.finditer(text))
        if found:
            match = found[-1]
            break
    if match is None:
        lines = text.splitlines()
        last = lines[-1] if lines else ""
        m = _BARE_LINE.match(last)
        if m is None:
            return None, text or None
        return m.group(1).upper(), "\n".join(lines[:-1]).strip() or None
    return match.group(1).upper(), text[: match.start()].strip() or None


class JudgeCache:
    """Answers by key, in a JSON-lines file that only grows; a torn last line (from a crash) is dropped."""

    def __init__(self, path: Path | None):
        self.path = path
        self.answers: dict[str, str] = {}
        self.lock = threading.Lock()
        if path is None or not path.is_file():
            return
        for row in read_jsonl(path, appended=True):  # a line torn by a crash is dropped
            if isinstance(row, dict) and row.get("answer") and "key" in row:
                self.answers[row["key"]] = row["answer"]

    def get(self, key: str) -> str | None:
        return self.answers.get(key)

    def put(self, key: str, answer: str, **info) -> None:
        with self.lock:
            self.answers[key] = answer
            if self.path is None:
                return
            append_jsonl(self.path, [{"key": key, **info, "answer": answer}])


class EmptyAnswer(Exception):
    """The judge answered with no text (it happens under load): asked again, never cached."""


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    if exc.__cause__ is not None and str(exc.__cause__) not in text:
        text += f" ({exc.__cause__})"
    return " ".join(text.split())[:300]


class LLMJudge:
    kind = "llm"

    def __init__(self, cfg, cache_path: Path | None = None):
        import openai

        jc = cfg.eval.judge
        self.model = jc.model
        self.base_url = (jc.base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self.key_env = jc.key_env
        api_key = jc.api_key or os.environ.get(jc.key_env) or "EMPTY"  # local servers often want no key
        self.temperature = float(jc.temperature)
        self.max_output = int(jc.max_output)
        self.retries = int(jc.retries)
        self.backoff = float(jc.backoff)
        self.concurrency = max(1, int(jc.concurrency))
        self.client = openai.OpenAI(
            base_url=self.base_url, api_key=api_key, max_retries=0, timeout=jc.timeout
        )
        if cache_path is None and jc.cache:
            from rlphf_cli.runs import RunDir

            cache_path = RunDir(cfg.run_dir).root / "eval" / "judge_cache.jsonl"
        self.cache = JudgeCache(cache_path)
        self.length_param = "max_tokens"  # switched once if the server only takes max_completion_tokens
        self._abort = threading.Event()

    def describe(self) -> dict:
        return {
            "kind": self.kind,
            "model": self.model,
            "base_url": self.base_url,
            "temperature": self.temperature,
            "max_output": self.max_output,
            "prompts": prompts_version(),
        }

    def key(self, c: Comparison) -> str:
        """What an answer depends on: the server and model, the wording, the comparison and the sampling."""
        parts = [
            self.base_url,
            self.model,
            c.pole,
            c.prompt,
            c.a,
            c.b,
            prompt_version(c.pole),
            self.temperature,
            self.max_output,
        ]
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()

    def judge(self, comparisons: list[Comparison]) -> list[Verdict]:
        keys = [self.key(c) for c in comparisons]
        cached = {k for k in keys if self.cache.get(k) is not None}
        todo = {k: c for k, c in zip(keys, comparisons, strict=True) if k not in cached}
        log.info(
            "llm judge %s: %d comparisons, %d cached, %d to ask",
            self.model,
            len(keys),
            len(cached),
            len(todo),
        )
        self._ask_all(todo)
        out = []
        for k in keys:
            verdict, rationale = parse_verdict(self.cache.get(k) or "")
            out.append(Verdict(verdict, rationale, {"cached": k in cached}))
        return out

    def _ask_all(self, todo: dict[str, Comparison]) -> None:
        if not todo:
            return
        self._abort.clear()
        pool = ThreadPoolExecutor(self.concurrency)
        futures = {pool.submit(self.ask, c): (k, c) for k, c in todo.items()}
        try:
            for future in tqdm(
                as_completed(futures), total=len(futures), desc="llm judge", unit="judgment", disable=None
            ):
                key, c = futures[future]
                answer = future.result()
                if answer:  # an empty answer is never cached: a later run asks again
                    self.cache.put(key, answer, model=self.model, pole=c.pole)
        except BaseException:  # a failed request, or Ctrl-C: running requests stop retrying
            self._abort.set()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def ask(self, c: Comparison) -> str | None:
        """The judge's answer text, after retries on transient errors.

        Raises UserError when it cannot be had, and then stops every other request (they return None).
        """
        import openai

        delay, last = self.backoff, None
        for attempt in range(self.retries + 1):
            if self._abort.is_set():
                return None
            try:
                answer = self._create(c)
                if answer.strip():
                    return answer
                last = EmptyAnswer("the judge answered with no text")
            except openai.APIConnectionError as exc:  # includes timeouts
                last = exc
            except openai.APIStatusError as exc:
                if exc.status_code not in (408, 409, 429) and exc.status_code < 500:
                    self._abort.set()
                    raise UserError(self._refusal(exc)) from None
                last = exc
            if attempt < self.retries and self._abort.wait(delay):
                return None
            delay *= 2
        if isinstance(last, EmptyAnswer):
            log.warning("llm judge: no text after %d attempts; counted as unparseable", self.retries + 1)
            return None
        self._abort.set()
        tries = self.retries + 1
        raise UserError(
            f"judge API at {self.base_url} failed after {tries} attempt{'s' * (tries > 1)}: {_one_line(last)}"
        )

    def _create(self, c: Comparison) -> str:
        import openai

        try:
            response = self.client.chat.completions.create(
                model=self.model,
                messages=messages(c),
                temperature=self.temperature,
                **{self.length_param: self.max_output},
            )
        except openai.BadRequestError as exc:
            if self.length_param == "max_tokens" and "max_completion_tokens" in str(exc):
                self.length_param = "max_completion_tokens"
                return self._create(c)
            raise
        choices = response.choices or []
        return (choices[0].message.content or "") if choices else ""

    def _refusal(self, exc) -> str:
        status = exc.status_code
        if status in (401, 403):
            return (
                f"judge API at {self.base_url} refused the API key ({status}): "
                f"set ${self.key_env} or eval.judge.api_key"
            )
        if status == 404:
            return f"judge API at {self.base_url}: model {self.model!r} or the chat endpoint not found (404)"
        return f"judge API at {self.base_url} rejected the request ({status}): {_one_line(exc)}"

"""The P-Soups profile end to end at toy budgets on a small random model of any architecture.

`python tests/psoups_profile.py ARCH RUN_DIR [key=value ...]` builds `ARCH`'s folder (tests/architectures.py),
writes the release's prompt files (no pairs: the LLM judge labels them), starts a deterministic fake judge
on 127.0.0.1 and runs `rlphf pipeline benchmark=psoups` with the issue's toy budgets (`TOY`), then prints
the peak resident memory of this process and of the stage processes it waited for, in MB, as the last line:
`peak_rss_mb <self> <children>`. The memory test runs it in a subprocess under a cap.
"""

from __future__ import annotations

import json
import resource
import sys
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from architectures import save_small_model  # noqa: E402

# the budgets: the P-Soups recipe except these (pcm=tiny's sizes, two PCM steps, short responses)
TOY = [
    "pcm=tiny",
    "pcm.steps=2",
    "pcm.prompts_per_step=2",
    "pcm.max_new_tokens=16",
    "generate.max_new_tokens=16",
    "device=cpu",
]
# smaller still, for a test that runs in seconds: every stage's batch and length budgets cut
FAST = [
    "pairs.pairs_per_prompt=2",
    "pairs.max_new_tokens=12",
    "rm.max_steps=1",
    "rm.batch_size=4",
    "expert.max_steps=2",
    "expert.batch_size=2",
    "expert.ppo.mini_batch_size=2",
    "expert.ppo.epochs=1",
    "expert.max_new_tokens=8",
    "benchmark.max_eval_prompts=2",
    "generate.batch_size=8",
    "eval.bootstrap_samples=20",
]


def write_prompts(folder: Path) -> Path:
    """The release's prompt files only: no rm_training/, so the pairs are made in the run."""
    folder.mkdir(parents=True, exist_ok=True)
    topics = ["bees", "rain", "volcanoes", "the moon", "magnets", "snow"]
    alpaca = [{"instruction": f"Tell me about {t}.", "input": "", "output": "..."} for t in topics]
    (folder / "alpaca_gpt4_10k.json").write_text(json.dumps(alpaca))
    evals = [{"id": i, "prompt": f"Describe {t}."} for i, t in enumerate(topics[:2])]
    (folder / "koala_eval_50.json").write_text(json.dumps(evals))
    return folder


def _between(text: str, start: str, end: str) -> str:
    return text.split(start, 1)[1].split(end, 1)[0].strip()


def length_verdict(body: dict) -> str:
    """A deterministic judge: A poles prefer the shorter response, B poles the longer, equal length ties."""
    from rlphf_cli.judges.llm_prompts import CRITERIA

    user = body["messages"][-1]["content"]
    (pole,) = [p for p, text in CRITERIA.items() if text in user]
    a = _between(user, "[Response A]", "[End of Response A]")
    b = _between(user, "[Response B]", "[End of Response B]")
    if len(a) == len(b):
        return "Alike.\nVerdict: TIE"
    shorter = "A" if len(a) < len(b) else "B"
    return f"Reasons.\nVerdict: {shorter if pole.endswith('A') else 'BA'.replace(shorter, '')}"


@contextmanager
def length_judge_server():
    """An OpenAI-compatible chat endpoint on 127.0.0.1 answering with `length_verdict`; yields its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            message = {"role": "assistant", "content": length_verdict(body)}
            payload = {
                "id": "cmpl-1",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
            }
            data = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def profile_overrides(arch_folder: Path, data: Path, run_dir: Path, base_url: str) -> list[str]:
    return [
        f"run_dir={run_dir}",
        "benchmark=psoups",
        f"benchmark.data_dir={data}",
        f"model.name_or_path={arch_folder}",
        f"eval.judge.base_url={base_url}",
        "eval.judge.model=judge-1",
        "eval.judge.backoff=0.01",
        *TOY,
    ]


def run_profile(arch: str, root: Path, extra: list[str] = ()) -> Path:
    from rlphf_cli.config import compose
    from rlphf_cli.pipeline import pipeline

    root = Path(root)
    folder = root / f"small-{arch}"
    if not (folder / "config.json").is_file():
        save_small_model(arch, folder)
    data = write_prompts(root / "psoups")
    with length_judge_server() as url:
        return pipeline(compose([*profile_overrides(folder, data, root / "run", url), *extra]))


def peak_rss_mb() -> tuple[float, float]:
    """Peak resident memory of this process and of the largest child it waited for (Linux: KB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, children


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.INFO)
    run_profile(sys.argv[1], Path(sys.argv[2]), sys.argv[3:])
    own, children = peak_rss_mb()
    print(f"peak_rss_mb {own:.0f} {children:.0f}")

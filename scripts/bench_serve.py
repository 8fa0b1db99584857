#!/usr/bin/env python
"""The serving table: `rlphf serve` on a run directory under 8 and 32 concurrent requests, per method.

Starts the server (`rlphf serve`, a separate process) on a free port, then for every method and level of
concurrency sends `concurrency x rounds` requests, at most `concurrency` in flight, each with a prompt of the
benchmark's evaluation set and a preference drawn at random among the combinations (seeded), and reports
requests/s, completion tokens/s and the median and 95th-percentile latency. Methods: pcm, uniform, mod,
soups (batched: each merged soup is a LoRA adapter, rows of different soups share one forward) and
soups-merged (one merged model per combination, as the P-Soups paper serves them), whichever the run has.

    python scripts/bench_serve.py runs/demo                                 # the table (markdown)
    python scripts/bench_serve.py runs/demo --json serve.json --device cuda
    python scripts/bench_serve.py runs/x --methods pcm soups --concurrency 8 --rounds 1 -- model.hidden_size=32
Trailing `key=value` words after `--` are passed to `rlphf serve` (and used to read the benchmark's prompts).

`--mixed` measures one batch for every method instead, in one server run: N greedy requests of one method
(`--single`, default uniform) against the same N spread evenly over the `--mix` methods (default uniform,
mod, pcm, soups, genarm), each workload twice in alternation (A B A B; the best of each reported), and checks
that every mixed request's text equals the text the same request got when its method was served alone:

    python scripts/bench_serve.py runs/demo --mixed --requests 48 --concurrency 48
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import openai

METHODS = ["pcm", "uniform", "mod", "soups", "soups-merged"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run_dir: str, port: int, args, overrides: list[str], log) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "rlphf_cli",
        "serve",
        f"run_dir={run_dir}",
        f"serve.port={port}",
        f"serve.max_batch={args.max_batch}",
        f"serve.max_new_tokens={max(args.max_tokens, 1)}",
        "serve.soups_merged=true",
        f"device={args.device}",
        *overrides,
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)


def wait_ready(
    client: openai.OpenAI, proc: subprocess.Popen, log_path: str, timeout: float = 600
) -> list[str]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the server exited ({proc.returncode}):\n{open(log_path).read()[-3000:]}")
        try:
            return [m.id for m in client.models.list().data]
        except openai.APIConnectionError:
            time.sleep(0.5)
    sys.exit("the server did not answer within the timeout")


def one_request(client, method: str, prompt: str, preference: str, max_tokens: int) -> tuple[float, int]:
    start = time.perf_counter()
    out = client.completions.create(
        model=method,
        prompt=prompt,
        max_tokens=max_tokens,
        temperature=0,
        extra_body={"preference": preference},
    )
    return time.perf_counter() - start, out.usage.completion_tokens


def run_level(client, method: str, concurrency: int, rounds: int, prompts, combos, args, seed: int) -> dict:
    rng = random.Random(seed)
    jobs = [(rng.choice(prompts), rng.choice(combos)) for _ in range(concurrency * rounds)]
    with ThreadPoolExecutor(concurrency) as pool:
        start = time.perf_counter()
        results = list(pool.map(lambda j: one_request(client, method, j[0], j[1], args.max_tokens), jobs))
        wall = time.perf_counter() - start
    latencies = sorted(r[0] for r in results)
    tokens = sum(r[1] for r in results)
    return {
        "method": method,
        "concurrency": concurrency,
        "requests": len(jobs),
        "preferences": len({j[1] for j in jobs}),
        "seconds": wall,
        "requests_per_s": len(jobs) / wall,
        "tokens_per_s": tokens / wall,
        "completion_tokens": tokens,
        "latency_median_s": statistics.median(latencies),
        "latency_p95_s": latencies[min(len(latencies) - 1, int(round(0.95 * (len(latencies) - 1))))],
    }


def mixed_workload(client, args, prompts, combos) -> dict:
    """N requests of one method vs the same N spread over several methods (one server, alternated)."""
    rng = random.Random(args.seed)
    n = args.requests
    picks = [(rng.choice(prompts), rng.choice(combos)) for _ in range(n)]
    single = [(args.single, p, c) for p, c in picks]
    mixed = [(args.mix[i % len(args.mix)], p, c) for i, (p, c) in enumerate(picks)]

    def run(jobs):
        def one(job):
            method, prompt, combo = job
            out = client.completions.create(
                model=method,
                prompt=prompt,
                max_tokens=args.max_tokens,
                temperature=0,
                extra_body={"preference": combo},
            )
            return out.choices[0].text

        with ThreadPoolExecutor(args.concurrency[0]) as pool:
            start = time.perf_counter()
            texts = list(pool.map(one, jobs))
            return time.perf_counter() - start, texts

    # warm-up: every method and combination once (soups made, code paths run)
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda j: client.completions.create(
                    model=j[0],
                    prompt=prompts[0],
                    max_tokens=2,
                    temperature=0,
                    extra_body={"preference": j[1]},
                ),
                [(m, c) for m in dict.fromkeys([args.single, *args.mix]) for c in combos],
            )
        )
    times = {"single": [], "mixed": []}
    texts = {}
    for _ in range(args.rounds):
        for name, jobs in (("single", single), ("mixed", mixed)):
            seconds, got = run(jobs)
            times[name].append(seconds)
            texts[name] = got
            print(f"{name:6} {n / seconds:7.2f} req/s", file=sys.stderr, flush=True)
    # each method alone (same requests, one method at a time): the mixed batch must change no text
    alone = {}
    for method in args.mix:
        jobs = [j for j in mixed if j[0] == method]
        _, got = run(jobs)
        alone |= dict(zip(jobs, got, strict=True))
    same = sum(alone[j] == t for j, t in zip(mixed, texts["mixed"], strict=True))
    best = {k: n / min(v) for k, v in times.items()}
    return {
        "requests": n,
        "concurrency": args.concurrency[0],
        "single_method": args.single,
        "mixed_methods": args.mix,
        "seconds": times,
        "single_req_per_s": best["single"],
        "mixed_req_per_s": best["mixed"],
        "ratio": best["mixed"] / best["single"],
        "mixed_equal_alone": f"{same}/{n}",
    }


def main() -> None:
    argv = sys.argv[1:]
    overrides = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", help="a run directory with a base, experts and (for pcm) a trained PCM")
    ap.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    ap.add_argument("--concurrency", nargs="+", type=int, default=[8, 32])
    ap.add_argument("--rounds", type=int, default=2, help="requests per level: concurrency x rounds")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--max-batch", type=int, default=32, help="serve.max_batch: rows decoded together")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, metavar="PATH", help="also write every figure to PATH as JSON")
    ap.add_argument("--mixed", action="store_true", help="one method's workload vs the same over several")
    ap.add_argument("--requests", type=int, default=48, help="--mixed: requests per workload")
    ap.add_argument("--single", default="uniform", help="--mixed: the one method")
    ap.add_argument("--mix", nargs="+", default=["uniform", "mod", "pcm", "soups", "genarm"])
    args = ap.parse_args(argv)

    from rlphf_cli.benchmarks import get_benchmark
    from rlphf_cli.config import compose
    from rlphf_cli.preferences import all_combinations, combination_name

    cfg = compose([f"run_dir={args.run_dir}", *overrides])
    bench = get_benchmark(cfg.benchmark)
    prompts = [p.text for p in bench.eval_prompts()]
    combos = [combination_name(c) for c in all_combinations(bench.poles)]

    port = free_port()
    log_file = tempfile.NamedTemporaryFile("w", prefix="bench_serve_", suffix=".log", delete=False)
    proc = start_server(args.run_dir, port, args, overrides, log_file)
    client = openai.OpenAI(
        base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=3600
    )
    records = []
    try:
        served = wait_ready(client, proc, log_file.name)
        if args.mixed:
            missing = [m for m in [args.single, *args.mix] if m not in served]
            if missing:
                sys.exit(f"not served by this run: {', '.join(missing)}")
            out = mixed_workload(client, args, prompts, combos)
            print(json.dumps(out, indent=2))
            if args.json:
                with open(args.json, "w") as f:
                    json.dump(out, f, indent=2)
            return
        methods = [m for m in args.methods if m in served]
        skipped = [m for m in args.methods if m not in served]
        if skipped:
            print(f"not served by this run (no artifacts): {', '.join(skipped)}")
        for method in methods:
            # warm-up: every combination's soup (or merged model) made, every code path run once
            with ThreadPoolExecutor(len(combos)) as pool:
                list(pool.map(lambda c, m=method: one_request(client, m, prompts[0], c, 4), combos))
            for level in args.concurrency:
                rec = run_level(client, method, level, args.rounds, prompts, combos, args, args.seed + level)
                records.append(rec)
                print(
                    f"{method:13} c={level:<3} {rec['requests_per_s']:7.2f} req/s {rec['tokens_per_s']:8.1f} tok/s "
                    f"median {rec['latency_median_s']:.2f}s p95 {rec['latency_p95_s']:.2f}s",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log_file.close()

    import torch

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    machine = {
        "device": device,
        "device_name": torch.cuda.get_device_name() if device.startswith("cuda") else _cpu_name(),
        "cpus": os.cpu_count(),
        "run_dir": args.run_dir,
        "max_tokens": args.max_tokens,
        "max_batch": args.max_batch,
        "rounds": args.rounds,
        "overrides": overrides,
    }
    print(
        f"\nServing {args.run_dir} on {machine['device_name']} ({device}); greedy, max_tokens={args.max_tokens}, "
        f"serve.max_batch={args.max_batch}, preferences drawn among {len(combos)} combinations\n"
    )
    print("| method | concurrent | requests | req/s | tokens/s | median latency (s) | p95 latency (s) |")
    print("|---|---|---|---|---|---|---|")
    for r in records:
        print(
            f"| {r['method']} | {r['concurrency']} | {r['requests']} | {r['requests_per_s']:.2f} | "
            f"{r['tokens_per_s']:.1f} | {r['latency_median_s']:.2f} | {r['latency_p95_s']:.2f} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "results": records}, f, indent=2)
        print(f"\nwritten to {args.json}")


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return "cpu"


if __name__ == "__main__":
    main()

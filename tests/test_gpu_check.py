"""`make gpu-check` (scripts/gpu_check.py): it refuses without CUDA in one line, skips what the budget leaves
no time for, judges its targets, and its CPU smoke mode runs every section, so the script cannot rot before a
GPU runs it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
SCRIPT = SCRIPTS / "gpu_check.py"


def run_script(*args, env=None, timeout=900):
    env = {**os.environ, **(env or {}), "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(SCRIPTS.parent), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=timeout
    )


@pytest.fixture
def gpu_check(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))
    import gpu_check

    return gpu_check


@pytest.mark.slow
def test_refuses_without_cuda_in_one_line(tmp_path):
    out = run_script("--json", str(tmp_path / "r.json"), env={"CUDA_VISIBLE_DEVICES": ""}, timeout=120)
    assert out.returncode == 2
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "no CUDA device" in lines[0] and "--device cpu --tiny" in lines[0]
    assert not (tmp_path / "r.json").exists()


@pytest.mark.slow
def test_over_budget_sections_are_skipped_and_named(tmp_path):
    out = run_script(
        "--device", "cpu", "--tiny", "--budget", "1", "--work", str(tmp_path / "w"),
        "--json", str(tmp_path / "r.json"), "--markdown", str(tmp_path / "r.md"), timeout=120,
    )  # fmt: skip
    assert out.returncode == 3, out.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert {n: s["status"] for n, s in report["sections"].items()} == dict.fromkeys(
        ["decode", "run", "serve", "dpo", "ppo", "train-pcm"], "skipped"
    )
    assert "skipped: decode (over the global budget of 1s)" in out.stdout
    assert all(t["status"] == "not measured" for t in report["targets"])


def test_targets_met_and_not_met(gpu_check):
    def decode(stacked_ratio, overhead):
        return {
            "decode": [{"model": "1b", "B": 8, "ratios": {"stacked/base": stacked_ratio}}],
            "pcm": [{"B": 8, "overhead": {"pcm": overhead}}, {"B": 32, "overhead": {"pcm": 0.01}}],
        }

    def serve(pcm, merged):
        return {"results": [{"method": "pcm", "requests_per_s": pcm}, {"method": "soups-merged", "requests_per_s": merged}]}  # fmt: skip

    met = gpu_check.targets({"decode": decode(1.25, 0.14), "serve": serve(2.0, 1.0)}, tiny=False)
    assert [t["status"] for t in met] == ["met"] * 3
    missed = gpu_check.targets({"decode": decode(1.35, 0.16), "serve": serve(0.9, 1.0)}, tiny=False)
    assert [t["status"] for t in missed] == ["not met"] * 3
    assert missed[1]["shown"] == "B=8: +16%, B=32: +1%"  # judged on the worst batch


def test_token_mismatch_names_where_the_paths_part(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))
    from types import SimpleNamespace

    from bench_decode import token_mismatch

    built = SimpleNamespace(name="tiny")
    assert token_mismatch(built, 6, 2, {"stacked": [[1, 2], [3, 4]], "naive": [[1, 2], [3, 4]]}) is None
    line = token_mismatch(built, 6, 2, {"stacked": [[1, 2], [3, 4]], "naive": [[1, 2], [3, 5]]})
    assert line.startswith("FAILED: tiny K=6 B=2") and "row 1, step 1: 4 vs 5" in line


@pytest.mark.slow
def test_cpu_smoke_runs_every_section(tmp_path):
    """Every section at tiny sizes on the CPU, through the same code (and subprocesses) as on a GPU."""
    report_path, md = tmp_path / "r.json", tmp_path / "r.md"
    out = run_script(
        "--device", "cpu", "--tiny", "--budget", "900", "--work", str(tmp_path / "w"),
        "--json", str(report_path), "--markdown", str(md),
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(report_path.read_text())
    assert all(s["status"] == "ok" for s in report["sections"].values()), report["sections"]
    res = report["results"]
    dec = res["decode"]
    assert dec["tokens_identical_float32"] and dec["dtype"] == "bfloat16"
    assert [r["B"] for r in dec["decode"]] == [8, 32]
    for row in dec["decode"]:
        assert set(row["ms_per_step"]) == {"base", "stacked", "naive", "soups"}
        assert all(v > 0 for v in row["ms_per_step"].values())
    assert [r["B"] for r in dec["pcm"]] == [8, 32] and "pcm_bfloat16" in dec["pcm"][0]["ms_per_step"]
    served = {r["method"]: r for r in res["serve"]["results"]}
    assert set(served) == {"pcm", "uniform", "soups", "soups-merged"}
    assert all(r["requests"] == 32 and r["preferences"] == 8 for r in served.values())
    for step in ("dpo", "ppo", "train-pcm"):
        assert res[step]["s_per_step"] > 0 and res[step]["peak_mb"] > 0
    assert [t["status"] in ("met", "not met") for t in report["targets"]] == [True] * 3
    text = md.read_text()
    assert "Smoke run at tiny sizes" in text and "| serve | ok |" in text
    assert "stacked K=6 within 1.3x of the base per token at batch 8 on ~1B" in text


@pytest.mark.slow
def test_token_mismatch_exits_1_before_any_time(tmp_path):
    """A section that finds stacked and naive tokens differ stops the whole check: exit 1, no time, no report."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import sys\n"
        "if sys.argv[1:2] and 'decode' in sys.argv and '--section' in sys.argv:\n"
        "    import bench_decode\n"
        "    bench_decode.token_mismatch = lambda b, k, batch, got: f'FAILED: {b.name} K={k} B={batch}: forced'\n"
    )
    out = run_script(
        "--device", "cpu", "--tiny", "--work", str(tmp_path / "w"), "--json", str(tmp_path / "r.json"),
        "--markdown", str(tmp_path / "r.md"),
        env={"PYTHONPATH": os.pathsep.join([str(hook), str(SCRIPTS)])}, timeout=600,
    )  # fmt: skip
    assert out.returncode == 1, out.stdout + out.stderr
    assert "FAILED: tiny K=6 B=8: forced" in out.stdout
    assert " ms" not in out.stdout and "run " not in out.stdout  # no timing, no later section
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "r.md").exists()

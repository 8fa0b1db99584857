"""`rlphf pipeline` end to end at toy budgets on the synthetic benchmark, and its resume."""

import shutil

from rlphf_cli.config import compose
from rlphf_cli.pipeline import pipeline

TOY = [
    "pairs.max_prompts=24", "pairs.pairs_per_prompt=2", "pairs.max_new_tokens=48",
    "rm.max_steps=3", "expert.max_steps=3", "expert.eval_samples=1", "expert.max_new_tokens=48",
    "pcm.steps=1", "pcm.prompts_per_step=1", "pcm.max_new_tokens=32", "pcm.eval_prompts=2",
    "benchmark.max_eval_prompts=3", "generate.max_new_tokens=32", "eval.bootstrap_samples=50",
    "headroom.max_prompts=2", "headroom.grid_prompts=2",
]


def test_pipeline_runs_every_stage_and_resumes(base_run, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    shutil.copytree(base_run / "base", run_dir / "base")
    cfg = compose([f"run_dir={run_dir}", *TOY])
    summary = pipeline(cfg).read_text()
    for part in ("pcm", "soups", "Experts against the base", "Reward models", "Time per stage", "sentence oracle",
                 "by the decision a token makes", "trained with RLOO", "one seed"):
        assert part in summary, part
    assert (run_dir / "pcm" / "token_weights.png").stat().st_size > 0
    for method in ("sft", "prompted", "soups", "mod", "uniform", "pcm"):
        assert (run_dir / "generations" / f"{method}.manifest.json").exists()
    for name in ("pcm_vs_soups", "pcm_vs_sft", "soups_vs_prompted"):
        assert (run_dir / "eval" / name / "results.json").exists()
    stamp = (run_dir / "pcm" / "manifest.json").stat().st_mtime
    pipeline(cfg)  # everything complete: skipped, nothing retrained
    assert (run_dir / "pcm" / "manifest.json").stat().st_mtime == stamp


def test_pipeline_over_seeds_writes_one_run_per_seed_and_a_summary_over_them(base_run, tmp_path):
    root = tmp_path / "runs"
    for seed in (0, 1):
        shutil.copytree(base_run / "base", root / f"seed{seed}" / "base")
    cfg = compose([f"run_dir={root}", "seeds=0,1", "pcm.ablation=false", *TOY])
    summary = pipeline(cfg).read_text()
    assert "2 seeds" in summary and "n=2" in summary and "over seeds" in summary
    for seed in (0, 1):
        manifest = (root / f"seed{seed}" / "pcm" / "manifest.json").read_text()
        assert f'"seed": {seed}' in manifest

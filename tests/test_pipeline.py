"""`rlphf pipeline` end to end at toy budgets on the synthetic benchmark, and its resume."""

import json
import shutil

import pytest

from rlphf_cli.config import compose
from rlphf_cli.pipeline import pipeline

TOY = [
    "pairs.max_prompts=24",
    "pairs.pairs_per_prompt=2",
    "pairs.max_new_tokens=48",
    "rm.max_steps=3",
    "expert.max_steps=3",
    "expert.eval_samples=1",
    "expert.max_new_tokens=48",
    "pcm.steps=1",
    "pcm.prompts_per_step=1",
    "pcm.max_new_tokens=32",
    "pcm.eval_prompts=2",
    "benchmark.max_eval_prompts=3",
    "generate.max_new_tokens=32",
    "eval.bootstrap_samples=50",
    "headroom.max_prompts=2",
    "headroom.grid_prompts=2",
    "pareto.prompts=2",
    "pareto.lattice=3",
    "pareto.bootstrap_samples=20",
]


@pytest.fixture(scope="module")
def toy_run(base_run, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("pipeline") / "run"
    shutil.copytree(base_run / "base", run_dir / "base")
    return run_dir, pipeline(compose([f"run_dir={run_dir}", *TOY])).read_text()


@pytest.mark.slow
def test_pipeline_runs_every_stage_and_resumes(toy_run):
    run_dir, summary = toy_run
    for part in (
        "pcm",
        "soups",
        "Experts against the base",
        "Reward models",
        "Time per stage",
        "| train-arm |",
        "| train-parm |",
        "the one PARM at the pole's one-hot weights",
        "| P2A | parm |",
        "sentence oracle",
        "from one pole to the other",
        "by the decision a token makes",
        "trained with RLOO",
        "one seed",
        "Pareto fronts: hypervolume and MIP per method",
        "| soups-ties_svd | 3 |",
    ):
        assert part in summary, part
    assert (run_dir / "pcm" / "token_weights.png").stat().st_size > 0
    # the ablation's PCM is scored alone; its line compares it with the main PCM's uniform
    main = json.loads((run_dir / "pcm" / "manifest.json").read_text())["metrics"]
    other = json.loads((run_dir / "ablations" / "pcm-rloo" / "manifest.json").read_text())["metrics"]
    assert "pcm_reward" in other and "uniform_reward" not in other and "weight_sweep" not in other
    assert f"(uniform {main['uniform_reward']:.3f})" in summary
    for method in ("sft", "prompted", "soups", "mod", "uniform", "genarm", "parm", "pcm"):
        assert (run_dir / "generations" / f"{method}.manifest.json").exists()
    names = ("pcm_vs_soups", "pcm_vs_sft", "soups_vs_prompted", "pcm_vs_genarm", "genarm_vs_soups")
    for name in (*names, "pcm_vs_parm", "parm_vs_genarm"):
        assert (run_dir / "eval" / name / "results.json").exists()
    stamp = (run_dir / "pcm" / "manifest.json").stat().st_mtime
    pipeline(compose([f"run_dir={run_dir}", *TOY]))  # everything complete: skipped, nothing retrained
    assert (run_dir / "pcm" / "manifest.json").stat().st_mtime == stamp


@pytest.mark.slow
def test_pipeline_over_seeds_runs_each_seed_in_its_folder_and_sums_up(toy_run, tmp_path, monkeypatch):
    """`seeds=0,1`: one run directory per seed (here copies of a complete run, so every stage is skipped)."""
    from rlphf_cli import pipeline as module

    root = tmp_path / "runs"
    for seed in (0, 1):
        shutil.copytree(toy_run[0], root / f"seed{seed}")
    # made with seed 0: seed 1 makes its own (resuming refuses them)
    for stale in ("generations", "eval", "pareto"):
        shutil.rmtree(root / "seed1" / stale)
    _as_if_made_with_seed(root / "seed1", 1)  # else the copies would be refused as made with seed 0
    calls = []
    real = module.run_pipeline
    monkeypatch.setattr(
        module, "run_pipeline", lambda cfg: calls.append((cfg.run_dir, cfg.seed)) or real(cfg)
    )
    summary = pipeline(compose([f"run_dir={root}", "seeds=0,1", *TOY])).read_text()
    assert calls == [(str(root / "seed0"), 0), (str(root / "seed1"), 1)]
    assert "2 seeds" in summary and "over seeds" in summary and "sentence oracle" in summary
    assert "## Pareto fronts over seeds" in summary and "| P2A vs P3A | pcm |" in summary
    assert summary.count("n=2") > 10  # every cell is over both seeds
    assert (root / "summary.md").read_text() == summary


def _as_if_made_with_seed(run, seed: int) -> None:
    """Rewrite what a copied run's artifacts record as their seed (they stand in for that seed's own)."""
    import json

    for path in run.rglob("manifest.json"):
        manifest = json.loads(path.read_text())
        config = (manifest.get("made_from") or {}).get("config", {})
        for key in ("seed", "generate.seed"):
            if key in config:
                config[key] = seed
        path.write_text(json.dumps(manifest))

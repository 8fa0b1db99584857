"""The `rlphf` command: each subcommand composes the Hydra config and calls one function."""

from __future__ import annotations

import importlib
import logging
import os
import sys

import typer

from rlphf_cli.errors import Failure, Interrupted, RlphfError, first_line
from rlphf_cli.methods import NAMES as METHOD_NAMES  # the registry's table only: light to import

app = typer.Typer(
    help="Personalized alignment experiments (RLPHF): experts per preference pole, Personalized Soups, "
    "and the Preference Control Model, on one benchmark with one judge.\n\n"
    "Every command takes Hydra overrides as trailing key=value words, e.g. "
    "`rlphf train-sft run_dir=runs/demo sft.max_steps=200`. Add --cfg to print the resolved config and exit.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

OVERRIDES = typer.Argument(
    None, help="Config overrides, key=value (e.g. run_dir=runs/x seed=1).", show_default=False
)
SHOW_CFG = typer.Option(False, "--cfg", help="Print the resolved config and exit without running.")
FORCE = typer.Option(
    False,
    "--force",
    help="Redo the command's artifacts even if complete (e.g. after changing their settings).",
)

log = logging.getLogger("rlphf")


def _expand(overrides: list[str], section: str | None) -> list[str]:
    """Let a command's own keys be given bare: `rlphf train-expert pole=P1A` means `expert.pole=P1A`."""
    if section is None:
        return overrides
    from omegaconf import OmegaConf

    from rlphf_cli.config import RootConfig

    schema = OmegaConf.structured(RootConfig)
    out = []
    for ov in overrides:
        key = ov.split("=", 1)[0]
        if "=" in ov and key.isidentifier() and key not in schema and key in schema[section]:
            ov = f"{section}.{ov}"
        out.append(ov)
    return out


def run_command(
    command: str,
    target: str,
    overrides: list[str] | None,
    show_cfg: bool,
    section: str | None = None,
    force: bool = False,
):
    """Compose and check the config, print and save it, then call `target` ("module:function") with it."""
    from rlphf_cli import logs, validate
    from rlphf_cli.config import compose, to_dict, to_yaml
    from rlphf_cli.runs import RunDir

    try:
        cfg = compose(_expand(list(overrides or []), section) + (["force=true"] if force else []))
        if show_cfg:
            typer.echo(to_yaml(cfg))
            return None
        validate.check(cfg, command)  # before anything is written
        logs.setup(logs.log_file(cfg.run_dir, command))
        saved = RunDir(cfg.run_dir).save_config(command, to_dict(cfg))
        log.info("rlphf %s: run_dir=%s (config saved to %s)", command, cfg.run_dir, saved)
        module, func = target.split(":")
        return getattr(importlib.import_module(module), func)(cfg)
    except KeyboardInterrupt:
        raise Interrupted() from None  # typer would turn it into a silent exit
    except RuntimeError as exc:
        torch = sys.modules.get("torch")
        if torch is None or not isinstance(exc, torch.OutOfMemoryError):
            raise
        logs.keep_traceback("out of memory")
        raise Failure(
            f"out of GPU memory in {command} ({first_line(exc)}); lower a batch size (e.g. generate.batch_size, "
            "expert.batch_size), max_new_tokens, or use model.dtype=bfloat16 or a larger GPU"
        ) from None


@app.command("train-sft")
def train_sft(overrides: list[str] = OVERRIDES, cfg: bool = SHOW_CFG, force: bool = FORCE):
    """Make the run's base model: a tiny model trained on the synthetic corpus, or a real one recorded as is."""
    run_command("train-sft", "rlphf_cli.training.sft:train_sft", overrides, cfg, "sft", force)


@app.command("train-rm")
def train_rm(overrides: list[str] = OVERRIDES, cfg: bool = SHOW_CFG, force: bool = FORCE):
    """Train one reward model per pole from judge-labelled preference pairs (pole=P1A or pole=all)."""
    run_command("train-rm", "rlphf_cli.training.rm:train_rm", overrides, cfg, "rm", force)


@app.command("train-expert")
def train_expert(overrides: list[str] = OVERRIDES, cfg: bool = SHOW_CFG, force: bool = FORCE):
    """Train one LoRA expert per pole on the shared base (pole=P1A|all algo=dpo|ppo|grpo), GenARM's reward models (algo=arm), or PARM's one preference-conditioned reward model (algo=parm, saved as parm/)."""
    run_command("train-expert", "rlphf_cli.training.expert:train_expert", overrides, cfg, "expert", force)


@app.command("train-pcm")
def train_pcm(overrides: list[str] = OVERRIDES, cfg: bool = SHOW_CFG, force: bool = FORCE):
    """Train the Preference Control Model that mixes the experts token by token (online RL)."""
    run_command("train-pcm", "rlphf_cli.training.pcm:train_pcm", overrides, cfg, "pcm", force)


@app.command(
    "generate",
    help=(
        "Decode for preferences (preference=all|P1A,P2B,P3A|P1A:0.6,P2B:0.4|@users/NAME.json) with a method: "
        f"{'|'.join(METHOD_NAMES)} (the registry, rlphf_cli/methods/: one module each, saying what it decodes "
        "with and whether it takes weights; one that reads only the chosen poles says so in a log line)."
    ),
)
def generate(overrides: list[str] = OVERRIDES, cfg: bool = SHOW_CFG, force: bool = FORCE):
    run_command("generate", "rlphf_cli.decoding.generate:generate", overrides, cfg, "generate", force)


@app.command("eval")
def evaluate(
    overrides: list[str] = OVERRIDES,
    method: str = typer.Option(None, "--method", help="Method to evaluate (default: pcm)."),
    baseline: str = typer.Option(None, "--baseline", help="Baseline method, or `all` (default: soups)."),
    cfg: bool = SHOW_CFG,
    force: bool = FORCE,
):
    """Pairwise, criterion-wise win rates of a method against a baseline (default: pcm vs soups)."""
    extra = [f"eval.method={method}"] if method else []
    extra += [f"eval.baseline={baseline}"] if baseline else []
    run_command(
        "eval", "rlphf_cli.evaluation.evaluate:evaluate", [*extra, *(overrides or [])], cfg, "eval", force
    )


@app.command("headroom")
def headroom(overrides: list[str] = OVERRIDES, cfg: bool = SHOW_CFG, force: bool = FORCE):
    """Measure what routing could gain: the best fixed-weight mixture of a grid and a sentence-level oracle."""
    run_command("headroom", "rlphf_cli.evaluation.headroom:headroom", overrides, cfg, "headroom", force)


@app.command("pareto")
def pareto(overrides: list[str] = OVERRIDES, cfg: bool = SHOW_CFG, force: bool = FORCE):
    """Pareto fronts: every weight-honouring method decoded on a weight lattice per objective set
    (objective_sets="P2A,P3A;P1A,P2A,P3A" lattice=11), scored per objective; HV and MIP with intervals, figures."""
    run_command("pareto", "rlphf_cli.evaluation.pareto:pareto", overrides, cfg, "pareto", force)


@app.command("report")
def report(overrides: list[str] = OVERRIDES, cfg: bool = SHOW_CFG):
    """Gather every evaluation in the run directory into one table of methods x baselines."""
    run_command("report", "rlphf_cli.evaluation.report:report", overrides, cfg, "eval")


@app.command("personalize")
def personalize(overrides: list[str] = OVERRIDES, cfg: bool = SHOW_CFG):
    """Infer a user's weights from pairwise answers (PReF): mode=fit answers=F.jsonl user=NAME | mode=interactive
    user=NAME | mode=web user=NAME (the questions on a local page) | mode=simulate. Writes users/NAME.json; generate with preference=@users/NAME.json."""
    run_command("personalize", "rlphf_cli.personalize.run:personalize", overrides, cfg, "personalize")


@app.command("serve")
def serve(overrides: list[str] = OVERRIDES, cfg: bool = SHOW_CFG):
    """An OpenAI-compatible HTTP server on every method the run can decode (model=METHOD, body field preference)."""
    run_command("serve", "rlphf_cli.serving.server:serve", overrides, cfg, "serve")


@app.command("annotate")
def annotate(overrides: list[str] = OVERRIDES, cfg: bool = SHOW_CFG):
    """A study page for people over the run's generations (method=pcm baseline=soups,prompted items=N study=NAME):
    answers go to annotations/<study>.jsonl; read them with `rlphf eval eval.judge.kind=human`."""
    run_command("annotate", "rlphf_cli.annotate.server:annotate", overrides, cfg, "annotate")


@app.command("pipeline")
def pipeline(overrides: list[str] = OVERRIDES, cfg: bool = SHOW_CFG, force: bool = FORCE):
    """Run every stage end to end on the chosen benchmark, skipping what is complete."""
    run_command("pipeline", "rlphf_cli.pipeline:pipeline", overrides, cfg, None, force)


def main() -> None:
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    try:
        app()
    except Interrupted as exc:
        typer.echo(str(exc), err=True)
        sys.exit(exc.exit_code)
    except RlphfError as exc:
        from rlphf_cli.logs import keep_traceback

        keep_traceback(str(exc))
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()

"""`rlphf train-pcm`: train the Preference Control Model online, with the experts frozen.

Each step samples responses from the PCM-weighted mixture for training prompts under every combination,
scores each response on the combination's poles, normalises every pole's reward against a reference
response (the base's greedy answer) as sigmoid(bt_scale * (r_j(y) - r_j(y_ref))), averages over the poles,
and updates the PCM with REBEL (default) or RLOO. The experts' per-token log-probabilities of a sampled
response are recorded while decoding and reused for every update on it: only the PCM runs again.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from rlphf_cli import launcher, tracking, validate
from rlphf_cli.adapters import base_model_path
from rlphf_cli.benchmarks import get_benchmark
from rlphf_cli.config import to_dict
from rlphf_cli.decoding.engine import (
    BASE,
    FixedWeights,
    Sampler,
    decode,
    left_pad,
    rows_active,
)
from rlphf_cli.decoding.runtime import Runtime
from rlphf_cli.modeling import resolve_device, sentence_end_ids
from rlphf_cli.pcm.model import PreferenceControlModel, build_pcm
from rlphf_cli.pcm.provider import PCMWeights
from rlphf_cli.preferences import Preference, all_combinations
from rlphf_cli.rewards import get_reward
from rlphf_cli.runs import RunDir, input_hash, made_from, stage_keys
from rlphf_cli.training.common import set_deepspeed_micro_batch

log = logging.getLogger(__name__)


@dataclass
class Batch:
    """Sampled responses, `group` (>= 2) consecutive ones per prompt and preference.

    Rows may carry different preferences (`preference` [N, n_poles]) and mix different experts (`active`
    one list per row, as the engine takes it); one preference for every row is `preference` [n_poles].
    """

    active: list  # the experts every row mixes, or one list per row
    prompt_ids: list[list[int]]
    response_ids: list[list[int]]
    expert_logps: list[torch.Tensor]  # per response [T, Ka]: each of its experts' logp of the chosen token
    preference: torch.Tensor  # [n_poles] or [N, n_poles]
    rewards: torch.Tensor | None = None  # [N], normalised and averaged over the combination's poles
    old_logps: torch.Tensor | None = None  # [N] mixture log-likelihood under the sampling PCM
    weights: list[torch.Tensor] | None = None  # per response [T, Ka], the weights used while sampling

    def rows_preference(self) -> torch.Tensor:
        n = len(self.prompt_ids)
        return self.preference if self.preference.dim() == 2 else self.preference.expand(n, -1)

    def rows_active(self) -> list[tuple[str, ...]]:
        return rows_active(self.active, len(self.prompt_ids))

    def split(self, size: int) -> list[Batch]:
        """Consecutive slices of `size` rows (keep `size` a multiple of the group), for minibatch updates."""
        out = []
        for i in range(0, len(self.prompt_ids), size):
            rows = slice(i, i + size)
            out.append(
                Batch(
                    self.rows_active()[rows],
                    self.prompt_ids[rows],
                    self.response_ids[rows],
                    self.expert_logps[rows],
                    self.rows_preference()[rows],
                    None if self.rewards is None else self.rewards[rows],
                    None if self.old_logps is None else self.old_logps[rows],
                    None if self.weights is None else self.weights[rows],
                )
            )
        return out


# ----- the objective -----
def mixture_logps(pcm: PreferenceControlModel, batch: Batch) -> torch.Tensor:
    """Sequence log-likelihood of each response under the PCM-weighted mixture, differentiable in the PCM."""
    device = batch.preference.device
    seqs = [p + r for p, r in zip(batch.prompt_ids, batch.response_ids, strict=True)]
    ids, mask = left_pad(seqs, 0, device)
    logits, _ = pcm(ids, mask, batch.rows_preference())  # [N, L, K]
    plain = pcm.module if hasattr(pcm, "module") else pcm  # under DDP the helpers live on the module
    log_w = plain.log_weights(logits, batch.rows_active())  # [N, L, Ka]
    out = []
    width = ids.shape[1]
    for i, r in enumerate(batch.response_ids):
        start = width - len(r) - 1  # the position that predicts the first response token
        lw = log_w[i, start : start + len(r)]
        out.append(torch.logsumexp(lw + batch.expert_logps[i].to(device), dim=-1).sum())
    return torch.stack(out)


def rebel_loss(logps, old_logps, rewards, group: int, eta: float) -> torch.Tensor:
    """REBEL: regress (1/eta) * the difference of log-ratios of two responses onto their reward difference."""
    ratio = (logps - old_logps).view(-1, group)
    r = rewards.view(-1, group)
    return (((ratio[:, 0] - ratio[:, 1]) / eta - (r[:, 0] - r[:, 1])) ** 2).mean()


def rloo_loss(logps, rewards, group: int) -> torch.Tensor:
    """REINFORCE with a leave-one-out baseline over the responses to one prompt."""
    r = rewards.view(-1, group)
    advantage = r - (r.sum(1, keepdim=True) - r) / (group - 1)
    return -(advantage.detach() * logps.view(-1, group)).mean()


def sample_batch(pcm, experts, prompt_ids, active, preference, *, generator, device, **decode_kw) -> Batch:
    """Sample one response per prompt row from the PCM-weighted mixture, recording the experts' log-probs.

    `preference` is one vector for every row or one per row; `active` one expert list for every row or
    one per row.
    """
    batch = Batch(active, prompt_ids, [], [], preference)
    provider = PCMWeights(pcm, batch.rows_preference(), active)
    res = decode(
        experts, provider, prompt_ids, active, generator=generator, record=True, device=device, **decode_kw
    )
    batch.response_ids, batch.expert_logps, batch.weights = res.tokens, res.expert_logps, res.weights
    with torch.no_grad():
        batch.old_logps = mixture_logps(pcm, batch)
    return batch


def update(
    pcm,
    optimizer,
    batches: list[Batch],
    algo: str,
    epochs: int,
    group: int,
    eta: float,
    backward,
    max_grad_norm: float = 0.0,
) -> float:
    """RL updates of the PCM on sampled batches (their rewards set); gradients clipped to `max_grad_norm`
    (0: not clipped). Returns the mean gradient norm before clipping."""
    pcm.train()
    norms = []
    for _ in range(epochs):
        for batch in batches:
            logps = mixture_logps(pcm, batch)
            if algo == "rebel":
                loss = rebel_loss(logps, batch.old_logps, batch.rewards, group, eta)
            else:
                loss = rloo_loss(logps, batch.rewards, group)
            optimizer.zero_grad()
            backward(loss)
            norm = torch.nn.utils.clip_grad_norm_(pcm.parameters(), max_grad_norm or float("inf"))
            norms.append(float(norm))
            optimizer.step()
    pcm.eval()
    return sum(norms) / max(len(norms), 1)


def normalised_reward(scores: list[float], reference: list[float], scale: float) -> torch.Tensor:
    return torch.sigmoid(scale * (torch.tensor(scores) - torch.tensor(reference)))


# ----- the trainer -----
class PCMTrainer:
    def __init__(self, cfg):
        from accelerate import Accelerator

        self.cfg, self.p = cfg, cfg.pcm
        device = resolve_device(cfg.device)
        self.accelerator = Accelerator(cpu=device.type == "cpu")
        # launched in several processes, each holds its own GPU (accelerate's choice)
        self.device = self.accelerator.device if self.accelerator.num_processes > 1 else device
        self.bench = get_benchmark(cfg.benchmark)
        self.poles = list(self.bench.poles)
        self.combinations = all_combinations(self.poles)
        self.runtime = Runtime(cfg, self.device)
        self.runtime.load_adapters("experts", self.poles)
        self.tokenizer = self.runtime.tokenizer
        self.experts = self.runtime.experts
        # reward models load as adapters beside the experts: the base is held once
        self.reward = get_reward(cfg, self.p.reward, model=self.experts.model)
        self.sampler = Sampler(temperature=self.p.temperature)
        self._references: dict[str, dict[str, float]] = {}  # prompt id -> pole -> the base's greedy score

    def encode(self, text: str) -> list[int]:
        return self.runtime.encode(text)

    def _decode(self, provider, prompt_ids, active, generator, record=True, greedy=False, mixing="prob"):
        return decode(
            self.experts,
            provider,
            prompt_ids,
            active,
            mixing=mixing,
            eos_token_id=self.tokenizer.eos_token_id,
            pad_token_id=self.tokenizer.pad_token_id,
            max_new_tokens=self.p.max_new_tokens,
            sampler=Sampler(greedy=True) if greedy else self.sampler,
            generator=generator,
            record=record,
            device=self.device,
        )

    def text(self, tokens: list[int]) -> str:
        return self.runtime.text(tokens)

    def reference_scores(self, prompts: list) -> dict[str, dict[str, float]]:
        """Each prompt's reference response (the base, greedy) scored on every pole; made when first needed."""
        out = self._references
        todo = list({p.id: p for p in prompts if p.id not in out}.values())
        for start in range(0, len(todo), 32):
            chunk = todo[start : start + 32]
            ids = [self.encode(p.text) for p in chunk]
            res = self._decode(
                FixedWeights(torch.ones(len(chunk), 1)), ids, [BASE], None, record=False, greedy=True
            )
            texts = [self.text(t) for t in res.tokens]
            prompt_texts = [p.text for p in chunk]
            per_pole = self.reward.score_poles(self.poles, prompt_texts, texts)
            for i, p in enumerate(chunk):
                out[p.id] = {pole: per_pole[pole][i] for pole in self.poles}
        return out

    def sample(self, pcm, chosen: list[tuple[Preference, list]], generator) -> Batch:
        """One decode for every (preference, prompts) pair: each row mixes its own combination's experts.

        A row's reward is the preference-weighted sum of its poles' normalised rewards."""
        n = self.p.samples_per_prompt
        rows = [(pref, p) for pref, prompts in chosen for p in prompts for _ in range(n)]
        reference = self.reference_scores([p for _, p in rows])
        vectors = torch.stack([pcm.preference_vector(pref.combination, pref.weights) for pref, _ in rows])
        batch = sample_batch(
            pcm,
            self.experts,
            [self.encode(p.text) for _, p in rows],
            [pref.combination for pref, _ in rows],  # each row runs its own combination's experts only
            vectors.to(self.device),
            generator=generator,
            device=self.device,
            eos_token_id=self.tokenizer.eos_token_id,
            pad_token_id=self.tokenizer.pad_token_id,
            max_new_tokens=self.p.max_new_tokens,
            sampler=self.sampler,
        )
        texts = [self.text(t) for t in batch.response_ids]
        batch.rewards = torch.zeros(len(rows))
        for pole in self.poles:
            idx = [i for i, (pref, _) in enumerate(rows) if pole in pref.combination]
            if not idx:
                continue
            scores = self.reward.score(pole, [rows[i][1].text for i in idx], [texts[i] for i in idx])
            ref = [reference[rows[i][1].id][pole] for i in idx]
            share = torch.tensor([rows[i][0].weights[rows[i][0].combination.index(pole)] for i in idx])
            batch.rewards[idx] += normalised_reward(scores, ref, self.p.bt_scale) * share
        return batch

    def preferences(self, rng: random.Random) -> list[Preference]:
        """One step's preferences: every combination at equal weights, and `pcm.weighted_per_step` more,
        each a random combination with weights drawn from a Dirichlet(`pcm.weight_concentration`) over its
        poles (at 1, uniform over the simplex: a dimension often gets little weight)."""
        out = [Preference(c, (1 / len(c),) * len(c)) for c in self.combinations]
        for _ in range(self.p.weighted_per_step):
            combination = rng.choice(self.combinations)
            draws = [rng.gammavariate(self.p.weight_concentration, 1.0) for _ in combination]
            out.append(Preference(combination, tuple(d / sum(draws) for d in draws)))
        return out

    def train(self, work: Path) -> dict:
        p = self.p
        pcm = build_pcm(
            p, len(self.tokenizer), self.tokenizer.pad_token_id, self.poles, self.poles, self.cfg.seed
        )
        optimizer = torch.optim.AdamW(pcm.parameters(), lr=p.learning_rate)
        set_deepspeed_micro_batch(self.accelerator, p.prompts_per_step * p.samples_per_prompt)
        pcm, optimizer = self.accelerator.prepare(pcm.to(self.device), optimizer)
        plain = self.accelerator.unwrap_model(pcm)
        start = self._resume(work, plain, optimizer)
        rank = self.accelerator.process_index
        rng = random.Random(self.cfg.seed * 1000 + rank + start)
        train_prompts = self.bench.train_prompts()
        log.info("PCM: %.2fM parameters", sum(x.numel() for x in plain.parameters()) / 1e6)
        main = self.accelerator.is_main_process
        tracker = tracking.start(self.cfg, "train-pcm") if main else tracking.Run()
        history = []
        bar = tqdm(
            range(start, p.steps),
            desc="train-pcm",
            initial=start,
            total=p.steps,
            disable=not self.accelerator.is_main_process,
        )
        for step in bar:
            generator = torch.Generator(self.device).manual_seed(self.cfg.seed * 100003 + step * 97 + rank)
            plain.eval()
            chosen = [(pref, rng.sample(train_prompts, p.prompts_per_step)) for pref in self.preferences(rng)]
            sampled = self.sample(plain, chosen, generator)
            # one minibatch per combination: as many updates per step as when each was decoded on its own
            batches = sampled.split(p.prompts_per_step * p.samples_per_prompt)
            grad_norm = update(
                pcm,
                optimizer,
                batches,
                p.algo,
                p.update_epochs,
                p.samples_per_prompt,
                p.rebel_eta,
                self.accelerator.backward,
                p.max_grad_norm,
            )
            w = torch.cat(sampled.weights)
            pole_rewards = {
                pole: [
                    b.rewards.mean().item()
                    for (pref, _), b in zip(chosen, batches, strict=True)
                    if pole in pref.combination and len(set(pref.weights)) == 1
                ]
                for pole in self.poles
            }
            metrics = {
                "step": step + 1,
                "reward": sampled.rewards.mean().item(),
                "weight_entropy": -(w * w.clamp_min(1e-9).log()).sum(-1).mean().item(),
                "grad_norm": grad_norm,
                **{f"reward/{pole}": sum(v) / len(v) for pole, v in pole_rewards.items() if v},
            }
            history.append(metrics)
            bar.set_postfix(reward=f"{metrics['reward']:.3f}", entropy=f"{metrics['weight_entropy']:.3f}")
            tracker.log(metrics, step=metrics["step"])
            if (step + 1) % p.save_steps == 0 and step + 1 < p.steps:
                self._checkpoint(work, plain, optimizer, step + 1)
        tracker.finish()
        return plain, history

    def _checkpoint(self, work: Path, pcm, optimizer, step: int) -> None:
        if not self.accelerator.is_main_process:
            return
        tmp = work / "checkpoint.pt.tmp"
        torch.save({"model": pcm.state_dict(), "optimizer": optimizer.state_dict(), "step": step}, tmp)
        tmp.replace(work / "checkpoint.pt")

    def _resume(self, work: Path, pcm, optimizer) -> int:
        path = work / "checkpoint.pt"
        if not path.exists():
            return 0
        state = torch.load(path, map_location=self.device, weights_only=True)
        pcm.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        log.info("resuming the PCM from step %d", state["step"])
        return state["step"]


ROLES = ("first token", "after a sentence end", "inside a sentence")


def token_role(tokens: list[int], t: int, sentence_ends: set[int]) -> int:
    """Which decision the weights before token t steer: the response's opening, what follows a finished
    sentence (another sentence, a closer, or the end), or a word inside a sentence."""
    if t == 0:
        return 0
    return 1 if tokens[t - 1] in sentence_ends else 2


# the held-out check's variants: name -> (weights from the PCM, else uniform; mixing space)
CHECK_VARIANTS = {"pcm": (True, "prob"), "uniform": (False, "prob"), "pcm_log_mixing": (True, "log")}


def compare_with_uniform(
    trainer: PCMTrainer,
    pcm: PreferenceControlModel,
    n_prompts: int,
    seed: int,
    work: Path,
    methods: tuple[str, ...] = ("pcm", "uniform", "pcm_log_mixing"),
) -> dict:
    """Held-out mean normalised reward of the PCM mixture, the uniform mixture and the PCM under log mixing
    (`methods`: the PCM alone for the ablation's other-algorithm PCM, whose uniform is the main PCM's);
    where in a response each dimension's expert carries weight; a picture of the weights token by token."""
    from rlphf_cli.pcm.plots import plot_token_weights
    from rlphf_cli.preferences import POLES

    prompts = trainer.bench.eval_prompts()[:n_prompts]
    reference = trainer.reference_scores(prompts)
    dims = list(dict.fromkeys(POLES[p].dimension for p in trainer.poles))
    totals: dict[str, list[float]] = {m: [] for m in methods}
    by_fifth = torch.zeros(len(dims), 5)
    counts = torch.zeros(len(dims), 5)
    by_role = torch.zeros(len(dims), len(ROLES))
    role_counts = torch.zeros(len(dims), len(ROLES))
    ends = sentence_end_ids(trainer.tokenizer)
    examples = []
    pcm.eval()
    ids = [trainer.encode(p.text) for p in prompts]
    for combination in trainer.combinations:
        k = len(combination)
        for method in totals:
            generator = torch.Generator(trainer.device).manual_seed(seed)
            pref = pcm.preference_vector(combination, [1 / k] * k).to(trainer.device)
            from_pcm, mixing = CHECK_VARIANTS[method]
            provider = (
                PCMWeights(pcm, pref.expand(len(ids), -1), list(combination))
                if from_pcm
                else FixedWeights(torch.full((len(ids), k), 1 / k))
            )
            res = trainer._decode(provider, ids, list(combination), generator, mixing=mixing)
            texts = [trainer.text(t) for t in res.tokens]
            reward = torch.zeros(len(texts))
            for pole in combination:
                scores = trainer.reward.score(pole, [p.text for p in prompts], texts)
                ref = [reference[p.id][pole] for p in prompts]
                reward += normalised_reward(scores, ref, trainer.p.bt_scale) / k
            totals[method] += reward.tolist()
            if (from_pcm, mixing) != CHECK_VARIANTS["pcm"]:
                continue
            for w, tokens in zip(res.weights, res.tokens, strict=True):  # where each expert carries weight
                fifth = (torch.arange(len(w)) * 5 // max(len(w), 1)).clamp(max=4)
                role = torch.tensor([token_role(tokens, t, ends) for t in range(len(w))])
                for j, pole in enumerate(combination):
                    d = dims.index(POLES[pole].dimension)
                    for f in range(5):
                        if (fifth == f).any():
                            by_fifth[d, f] += w[fifth == f, j].mean()
                            counts[d, f] += 1
                    for r in range(len(ROLES)):
                        by_role[d, r] += w[role == r, j].sum()
                        role_counts[d, r] += (role == r).sum()
            tokens = trainer.tokenizer.convert_ids_to_tokens(res.tokens[0])
            examples.append({"combination": list(combination), "tokens": tokens, "weights": res.weights[0]})
    mean = {m: sum(v) / len(v) for m, v in totals.items()}
    plot_token_weights(examples, work / "token_weights.png")
    out = {"eval_prompts": len(prompts), "pcm_reward": round(mean["pcm"], 4)}
    if "uniform" in mean:
        out |= {
            "uniform_reward": round(mean["uniform"], 4),
            "pcm_minus_uniform": round(mean["pcm"] - mean["uniform"], 4),
        }
    if "pcm_log_mixing" in mean:
        out |= {
            "pcm_log_mixing_reward": round(mean["pcm_log_mixing"], 4),
            "ablations": {
                "mixing": f"PCM weights mixed in probability space {mean['pcm']:.3f}, in log space "
                f"{mean['pcm_log_mixing']:.3f} (held-out mean normalised reward)"
            },
        }
    return out | {
        "weight_by_token_role": {
            f"expert_of_dimension_{d}": dict(
                zip(
                    ROLES,
                    [round(x, 3) for x in (by_role[i] / role_counts[i].clamp_min(1)).tolist()],
                    strict=True,
                )
            )
            for i, d in enumerate(dims)
        },
        "weight_by_response_fifth": {
            f"expert_of_dimension_{d}": [round(x, 3) for x in (by_fifth[i] / counts[i].clamp_min(1)).tolist()]
            for i, d in enumerate(dims)
        },
    }


SWEEP = (("A", 0.6), ("A", 0.2), ("B", 0.2), ("B", 0.6))  # a dimension's weight, moving from pole A to B


def weight_sweep(trainer: PCMTrainer, pcm: PreferenceControlModel, n_prompts: int, seed: int) -> dict:
    """For every two-pole dimension: move its weight from its first pole to its second (0.6, 0.2, then
    0.2, 0.6; the other dimensions' first poles share the rest) and score the PCM's held-out responses on
    the second pole. A PCM that serves any weighting makes these scores rise step by step."""
    from rlphf_cli.preferences import dimensions

    prompts = trainer.bench.eval_prompts()[:n_prompts]
    ids = [trainer.encode(p.text) for p in prompts]
    dims = dimensions(trainer.poles)
    out = {}
    for dim, poles in dims.items():
        if len(poles) != 2:
            continue
        others = [ps[0] for d, ps in dims.items() if d != dim]
        scores = []
        for side, w in SWEEP:
            combination = (poles[0] if side == "A" else poles[1], *others)
            weights = (w, *[(1 - w) / len(others)] * len(others))
            pref = pcm.preference_vector(combination, weights).to(trainer.device)
            generator = torch.Generator(trainer.device).manual_seed(seed)
            provider = PCMWeights(pcm, pref.expand(len(ids), -1), list(combination))
            res = trainer._decode(provider, ids, list(combination), generator, record=False)
            texts = [trainer.text(t) for t in res.tokens]
            score = trainer.reward.score(poles[1], [p.text for p in prompts], texts)
            scores.append(round(sum(score) / len(score), 4))
        out[dim] = {
            "points": [f"{poles[0] if side == 'A' else poles[1]} {w}" for side, w in SWEEP],
            "score_of": poles[1],
            "scores": scores,
            "monotone": all(b >= a for a, b in zip(scores, scores[1:], strict=False)),
        }
    return out


def pcm_keys(cfg) -> tuple[str, ...]:
    """Every setting of the pcm section, the model's and the benchmark's (its poles are the PCM's experts),
    and the seed."""
    return stage_keys(cfg, ("seed", "model", "benchmark", "pcm"), ignore=("benchmark.max_eval_prompts",))


def pcm_made_from(cfg) -> dict:
    """The PCM's settings and inputs: the base, every expert it mixes, and the reward models it learns from."""
    root = RunDir(cfg.run_dir).root
    inputs = {"base": input_hash(root / "base")}
    inputs |= {f"experts/{p}": input_hash(root / "experts" / p) for p in cfg.benchmark.poles}
    if cfg.pcm.reward == "reward_model":
        inputs |= {f"rm/{p}": input_hash(root / "rm" / p) for p in cfg.benchmark.poles}
    return made_from(cfg, pcm_keys(cfg), inputs)


def train_pcm(cfg, name: str = "pcm", launch: tuple | None = None, ablation: bool = False) -> Path:
    """Train the PCM into `<run_dir>/<name>` (the ablation trains its other-algorithm PCM beside it, and
    evaluates only its held-out reward: uniform is the main PCM's, the rest are about the main PCM).

    `launch` is the (config, "module:function") that `launcher.num_processes>1` relaunches (default: this).
    """
    validate.check_pcm(cfg)
    art = RunDir(cfg.run_dir).artifact(name)
    made = pcm_made_from(cfg)
    if art.reuse(made, "train-pcm", cfg.force):
        log.info("PCM already complete in %s; skipping", art.path)
        return art.path
    if launcher.should_prepare():
        launcher.refuse_sharded_parameters(cfg, "train-pcm")
        base_model_path(cfg)
        if launcher.relaunch(*(launch or (cfg, "rlphf_cli.training.pcm:train_pcm"))):
            return art.path
    trainer = PCMTrainer(cfg)
    work = art.start(made)
    pcm, history = trainer.train(work)
    trainer.accelerator.wait_for_everyone()
    if not trainer.accelerator.is_main_process:
        return art.path
    metrics = {"final_reward": history[-1]["reward"] if history else None}
    if cfg.pcm.eval_prompts and ablation:
        metrics |= compare_with_uniform(trainer, pcm, cfg.pcm.eval_prompts, cfg.seed, work, methods=("pcm",))
        log.info("held-out mean normalised reward: PCM (%s) %.3f", cfg.pcm.algo, metrics["pcm_reward"])
    elif cfg.pcm.eval_prompts:
        metrics |= compare_with_uniform(trainer, pcm, cfg.pcm.eval_prompts, cfg.seed, work)
        metrics["weight_sweep"] = weight_sweep(trainer, pcm, cfg.pcm.eval_prompts, cfg.seed)
        log.info(
            "held-out mean normalised reward: PCM %.3f, uniform %.3f (%+.3f)",
            metrics["pcm_reward"],
            metrics["uniform_reward"],
            metrics["pcm_minus_uniform"],
        )
    pcm.save(work)
    (work / "checkpoint.pt").unlink(missing_ok=True)
    metrics["processes"] = trainer.accelerator.num_processes
    art.commit(
        "pcm",
        to_dict(cfg),
        experts=pcm.experts,
        poles=pcm.poles,
        metrics=metrics,
        history=history,
        made_from=made,
    )
    log.info("PCM saved to %s by process 0 of %d", art.path, metrics["processes"])
    return art.path


def train_ablation(cfg) -> Path | None:
    """The PCM paper's algorithm ablation: the same PCM trained with the other algorithm (REBEL <-> RLOO),
    same budget and samples, in `<run_dir>/ablations/pcm-<algo>`; off with `pcm.ablation=false`."""
    if not cfg.pcm.ablation:
        return None
    from omegaconf import OmegaConf

    other = "rloo" if cfg.pcm.algo == "rebel" else "rebel"
    change = {"algo": other, "samples_per_prompt": 2 if other == "rebel" else cfg.pcm.samples_per_prompt}
    return train_pcm(
        OmegaConf.merge(cfg, {"pcm": change}),
        f"ablations/pcm-{other}",
        launch=(cfg, "rlphf_cli.training.pcm:train_ablation"),
        ablation=True,
    )

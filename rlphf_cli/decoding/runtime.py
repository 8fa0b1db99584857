"""The run's models held once: the base, its tokenizer, the LoRA adapters (experts, ARMs, soups) and the PCM.

`generate`, `serve`, `train-pcm`, `headroom` and `personalize` load through one `Runtime`: every adapter
lives on one peft model (experts named by their pole, GenARM's ARMs `arm:<pole>`, soups by `soup_name`), so
rows of any method run in one forward. It also encodes instructions in the model's prompt format and
decodes tokens back to text.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from rlphf_cli.adapters import base_model_path, explain_load_failure
from rlphf_cli.decoding.engine import AdapterExperts, Sampler, decode
from rlphf_cli.errors import UserError
from rlphf_cli.modeling import format_prompt, load_causal_lm, load_tokenizer, resolve_device
from rlphf_cli.runs import RunDir

# the adapter folders of a run and how their adapters are named on the shared model
ADAPTER_FOLDERS = {"experts": "{pole}", "arms": "arm:{pole}"}
_TRAIN_HINT = {"experts": "rlphf train-expert pole={pole}", "arms": "rlphf train-expert pole={pole} algo=arm"}


def adapter_name(folder: str, pole: str) -> str:
    return ADAPTER_FOLDERS[folder].format(pole=pole)


class Runtime:
    """The base, tokenizer and adapters of a run, loaded once; `experts` decodes rows over them."""

    def __init__(self, cfg, device=None):
        self.cfg = cfg
        self.device = device if device is not None else resolve_device(cfg.device)
        self.base_path = base_model_path(cfg)
        self.tokenizer = load_tokenizer(self.base_path, cfg.model.trust_remote_code)
        self.base = load_causal_lm(self.base_path, cfg.model, self.device).eval()
        self.model = self.base  # the peft model once an adapter is loaded
        self.max_positions = getattr(self.base.config, "max_position_embeddings", None)
        self._experts: AdapterExperts | None = None
        self._pcm = None
        # called before the shared model changes (a soup is added): serving lifts its LoRA hooks first
        self.before_model_change: Callable[[], None] | None = None

    # --- loading
    def load_adapters(self, folder: str, poles) -> list[str]:
        """Load `<folder>/<pole>` for each pole (once) as adapters on the shared model; return their names."""
        from peft import PeftModel

        run = RunDir(self.cfg.run_dir)
        names = []
        for pole in poles:
            name = adapter_name(folder, pole)
            names.append(name)
            if name in getattr(self.model, "peft_config", {}):
                continue
            art = run.artifact(f"{folder}/{pole}")
            if not art.is_complete():
                what = "ARM" if folder == "arms" else "expert"
                hint = _TRAIN_HINT[folder].format(pole=pole)
                raise UserError(f"no {what} for {pole} in {art.path}: run `{hint}` first")
            self._changing()
            with explain_load_failure(f"{folder} {pole} ({art.path})", self.base_path):
                if self.model is self.base:
                    self.model = PeftModel.from_pretrained(self.base, str(art.path), adapter_name=name)
                else:
                    self.model.load_adapter(str(art.path), adapter_name=name)
            self.model.eval()
            self._experts = None  # new LoRA layers may have appeared: the stacked path collects them again
        return names

    def install(self, name: str, what: str, make: Callable) -> None:
        """Adapters of a method's own kind (PARM's parts) put on the shared model by `make(model) -> peft
        model`, once: skipped when adapter `name` is loaded. `what` names them in a load error."""
        if name in getattr(self.model, "peft_config", {}):
            return
        self._changing()
        with explain_load_failure(what, self.base_path):
            self.model = make(self.model).eval()
        self._experts = None

    def available(self, folder: str, poles) -> list[str]:
        """The poles whose `<folder>/<pole>` adapter is complete in the run."""
        run = RunDir(self.cfg.run_dir)
        return [p for p in poles if run.artifact(f"{folder}/{p}").is_complete()]

    def pcm(self, expert_poles):
        """The trained PCM (loaded on first use)."""
        if self._pcm is None:
            from rlphf_cli.pcm.provider import load_pcm

            self._pcm = load_pcm(self.cfg, self.device, expert_poles=list(expert_poles))
        return self._pcm

    def add_soup(self, poles, weights, merge: str, density: float = 0.5) -> str:
        """The merged adapter of `poles` with `weights` (made once) on the shared model (`density`: the
        ties_svd and dare_linear_svd merges' share of entries kept)."""
        from rlphf_cli.decoding.soups import add_soup, soup_name

        name = soup_name(poles, merge, weights, density)
        if name not in self.model.peft_config:
            self._changing()
            add_soup(self.model, list(poles), list(weights), merge, density)
        return name

    def remove_adapter(self, name: str) -> None:
        """Free an adapter made on demand (a soup): a long-running server keeps only those it may reuse."""
        self._changing()
        self.model.delete_adapter(name)

    def _changing(self) -> None:
        if self.before_model_change is not None:
            self.before_model_change()

    @property
    def experts(self) -> AdapterExperts:
        """Every loaded adapter (and the base, BASE) as experts of the decoding engine."""
        if self._experts is None:
            self._experts = AdapterExperts(self.model)
        return self._experts

    # --- text
    def encode(self, text: str) -> list[int]:
        """The instruction in the model's prompt format, as token ids."""
        return self.tokenizer(format_prompt(self.cfg.model.prompt_template, text, self.tokenizer)).input_ids

    def text(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True).strip()

    @property
    def eos(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def pad(self) -> int:
        return self.tokenizer.pad_token_id

    def sampler(self) -> Sampler:
        g = self.cfg.generate
        return Sampler(g.temperature, g.top_k, g.top_p, g.greedy)

    def decode(self, provider, prompt_ids, active, *, max_new_tokens: int, seed=None, generator=None, **kw):
        """The engine's `decode` over the loaded adapters with this tokenizer's EOS and padding."""
        if generator is None and seed is not None:
            generator = torch.Generator(self.device).manual_seed(seed)
        kw.setdefault("sampler", self.sampler())
        return decode(
            self.experts,
            provider,
            prompt_ids,
            active,
            eos_token_id=self.eos,
            pad_token_id=self.pad,
            max_new_tokens=max_new_tokens,
            generator=generator,
            device=self.device,
            **kw,
        )

"""Headroom: the sentence-level oracle switches experts at sentence boundaries; the grid covers the simplex."""

import pytest
import torch

from rlphf_cli.evaluation.headroom import sentence_oracle, simplex_grid

EOS, DOT = 2, 1
EXPERTS = ("P1A", "P2A")  # expert k writes word 10 + k


class FakeTokenizer:
    eos_token_id = EOS


class FakeMixtureBench:
    """Expert k writes the sentence "w<10+k> ." again and again (three sentences, then EOS).

    The judge wants the opener from expert 0 (worth 3) and the other sentences from expert 1 (1 each):
    expert 0 alone scores 3, expert 1 alone 2, switching after the first sentence 5.
    """

    max_new_tokens = 12
    sentence_ends = {DOT}
    tokenizer = FakeTokenizer()

    def encode(self, text):
        return [5]

    def text(self, tokens):
        return " ".join(f"w{t}" if t not in (DOT, EOS) else "." for t in tokens if t != EOS)

    def mixture(self, active, weights, prompt_ids, seed, max_new_tokens=None):
        rows = weights if isinstance(weights[0], list) else [weights] * len(prompt_ids)
        experts = active if isinstance(active[0], list) else [active] * len(prompt_ids)
        out = []
        for ids, a, w in zip(prompt_ids, experts, rows):
            k = EXPERTS.index(a[w.index(1.0)])
            written = (len(ids) - 1) // 2  # sentences already in the prefix
            row = []
            for _ in range(3 - written):
                row += [10 + k, DOT]
            out.append([*row, EOS][: max_new_tokens or self.max_new_tokens])
        return out

    def score(self, combination, prompts, texts):
        def one(text):
            words = [w for w in text.split() if w != "."]
            return float(
                sum(
                    value
                    for i, (w, value) in enumerate(zip(words, (3, 1, 1)))
                    if w == ("w10" if i == 0 else "w11")
                )
            )

        return torch.tensor([one(t) for t in texts])


def test_sentence_oracle_switches_experts_at_every_boundary():
    mb = FakeMixtureBench()
    texts = sentence_oracle(mb, EXPERTS, ["q1", "q2"], seed=0)
    assert texts == ["w10 . w11 . w11 ."] * 2  # expert 0, then 1: neither expert alone writes this
    assert mb.score(None, None, texts).tolist() == [5.0, 5.0]
    alone = [
        mb.text(mb.mixture(list(EXPERTS), [1.0, 0.0], [[5]], 0)[0]),
        mb.text(mb.mixture(list(EXPERTS), [0.0, 1.0], [[5]], 0)[0]),
    ]
    assert mb.score(None, None, alone).tolist() == [3.0, 2.0]


@pytest.mark.parametrize("k,steps,count", [(2, 2, 3), (3, 3, 10), (3, 4, 15)])
def test_simplex_grid(k, steps, count):
    grid = simplex_grid(k, steps)
    assert len(grid) == count and len(set(grid)) == count
    assert all(abs(sum(w) - 1) < 1e-9 and min(w) >= 0 for w in grid)
    assert tuple([1 / k] * k) in grid or steps % k

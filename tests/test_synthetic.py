import random

import pytest

from rlphf_cli.benchmarks.synthetic import INVALID_SCORE, SyntheticBenchmark, SyntheticWorld
from rlphf_cli.benchmarks.synthetic_world import TOPICS
from rlphf_cli.config import compose
from rlphf_cli.preferences import POLES

W = SyntheticWorld()
P = "tell me about volcanoes."


def bench():
    return SyntheticBenchmark(compose([]).benchmark)


def test_sentences_are_unambiguous():
    n_expected = 0
    for spec in TOPICS.values():
        for s in [*spec["facts"], spec["background"]]:
            n_expected += 2 ** s.count("[")
    n_tone = 12
    assert len(W.sentences) == n_expected + n_tone  # no two templates render to the same sentence


def test_eval_prompts_are_held_out_of_all_training_data():
    b = bench()
    train = {p.text for p in b.train_prompts()}
    evals = {p.text for p in b.eval_prompts()}
    assert len(evals) == 48 and len(train) == 240 and not (train & evals)
    corpus_prompts = {ex["prompt"] for ex in b.sft_corpus(2000, seed=0)}
    assert not any(e in cp for cp in corpus_prompts for e in evals if cp.startswith(e))
    assert {W.topic_of(t) for t in evals} == set(TOPICS)  # every topic is still seen in training


def test_topic_matching_uses_whole_words():
    assert W.topic_of("tell me about rainbows.") == "rainbows"
    assert W.topic_of("tell me about rain.") == "rain"
    assert W.topic_of("how do I bake a cake?") is None


def test_judges_score_each_dimension_from_text():
    simple = "volcanoes push out hot melted rock from deep in the ground."
    technical = "volcanoes push out molten magma from the upper mantle."
    assert W.score("P1A", P, simple) == 1.0 and W.score("P1B", P, technical) == 1.0
    assert W.compare("P1B", P, technical, simple) == "A" and W.compare("P1A", P, technical, simple) == "B"

    concise = technical
    informative = (
        technical
        + " volcanoes sit where tectonic plates meet. volcanoes can erupt explosively and throw ash "
        "into the sky. volcanoes build tall hills over a long time."
    )
    assert (
        W.compare("P2A", P, concise, informative) == "A" and W.compare("P2B", P, concise, informative) == "B"
    )

    friendly = "hey friend, great question! " + simple + " hope that helps, have a lovely day!"
    rude = "ugh, fine. " + simple + " now stop asking me."
    assert W.compare("P3A", P, friendly, rude) == "A" and W.compare("P3B", P, friendly, rude) == "B"
    assert W.compare("P3A", P, simple, simple) == "TIE"


def test_tie_margin():
    a = "volcanoes push out hot melted rock from deep in the ground."
    assert W.compare("P1A", P, a, a, tie_margin=0.05) == "TIE"


@pytest.mark.parametrize(
    "junk,reason",
    [
        ("", "empty"),
        ("hey friend, great question! hope that helps, have a lovely day!", "no fact"),
        ("bees make honey from floral nectar.", "off-topic"),
        ("volcanoes can erupt explosively. volcanoes can erupt explosively.", "malformed sentence"),
        (
            "volcanoes push out molten magma from the upper mantle. volcanoes push out molten magma from the upper mantle.",
            "repetition",
        ),
        ("volcanoes volcanoes volcanoes magma magma", "malformed sentence"),
    ],
)
def test_junk_loses_to_an_on_topic_answer_on_every_pole(junk, reason):
    parsed = W.parse(P, junk)
    assert not parsed.valid and parsed.reason == reason
    # the weakest valid answer for each pole still beats junk
    weakest = {
        "P1A": "volcanoes push out molten magma from the upper mantle.",
        "P1B": "volcanoes push out hot melted rock from deep in the ground.",
        "P2A": "volcanoes push out molten magma from the upper mantle. volcanoes sit where tectonic plates meet. "
        "volcanoes can erupt explosively and throw ash into the sky. volcanoes build tall hills over a long time.",
        "P2B": "volcanoes push out molten magma from the upper mantle.",
        "P3A": "ugh, fine. volcanoes push out molten magma from the upper mantle. now stop asking me.",
        "P3B": "hey friend, great question! volcanoes push out molten magma from the upper mantle. that is pretty neat, you rock!",
    }
    for pole in W.poles:
        assert W.score(pole, P, junk) == INVALID_SCORE
        assert W.compare(pole, P, weakest[pole], junk) == "A", pole
        assert W.compare(pole, P, junk, weakest[pole]) == "B", pole


def test_corpus_is_diverse_and_valid():
    b = bench()
    corpus = b.sft_corpus(600, seed=1)
    scores = {pole: [W.score(pole, ex["prompt"], ex["completion"]) for ex in corpus] for pole in W.poles}
    assert all(s >= 0 for ss in scores.values() for s in ss)  # every corpus response is valid
    for pole in W.poles:  # both poles of every dimension are well represented
        assert sum(s >= 0.99 for s in scores[pole]) > 0.15 * len(corpus), pole
    prompted = [ex for ex in corpus if any(p.text in ex["prompt"] for p in POLES.values())]
    assert 0.3 < len(prompted) / len(corpus) < 0.5  # the recipe's prompted_fraction is 0.4
    texts = [sum(p.text in ex["prompt"] for p in POLES.values()) for ex in prompted]
    assert set(texts) == {1, 2, 3}  # one to three preference texts, as P-Soups's prompts carry
    for ex in prompted:  # and the answer follows each of them
        for pole in (p for p in W.poles if POLES[p].text in ex["prompt"]):
            assert W.score(pole, ex["prompt"], ex["completion"]) >= 0.75, pole  # tone: an opener or a closer


def test_render_is_deterministic():
    r1 = W.render("bees", 2, 0.5, 1, random.Random(3))
    r2 = W.render("bees", 2, 0.5, 1, random.Random(3))
    assert r1 == r2 and W.parse("describe bees.", r1).valid

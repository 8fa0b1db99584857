"""Preference pairs: the P-Soups schema, the loader's checks, ties, and making them from the base."""

import json
from pathlib import Path

import pytest
from helpers import TEST_OVERRIDES, shared_run

from rlphf_cli.config import compose
from rlphf_cli.errors import UserError
from rlphf_cli.training.pairs import label_pairs, load_pairs, make_pairs, pairs_file, split_pairs


@pytest.fixture(scope="module")
def pairs_run(base_run, tmp_path_factory):
    return shared_run(base_run, tmp_path_factory.getbasetemp())


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_load_pairs_reads_psoups_json_and_json_lines(tmp_path):
    rec = {"user_input": "q?", "completion_a": "good", "completion_b": "bad", "extra": 1}
    as_list = _write(tmp_path / "P1A.json", json.dumps([rec, rec]))
    as_lines = _write(tmp_path / "P1B.json", json.dumps(rec) + "\n" + json.dumps(rec) + "\n")
    for path in (as_list, as_lines):
        pairs = load_pairs(path)
        assert pairs == [{"user_input": "q?", "completion_a": "good", "completion_b": "bad"}] * 2


@pytest.mark.parametrize(
    "content,message",
    [
        (None, "pairs file not found"),
        ("", "is empty"),
        ("[]", "holds no pairs"),
        ('[{"user_input": "q", "completion_a": "a"}]', "record 0 lacks field 'completion_b'"),
        ('[{"user_input": "q", "completion_a": "a", "completion_b": "  "}]', "record 0 has an empty"),
        ('[{"user_input": "q", "completion_a": "a", "completion_b": 3}]', "non-text field 'completion_b'"),
        ('[{"user_input": "q", ', "not valid JSON"),
        ('["just text"]', "record 0 is not an object"),
    ],
)
def test_load_pairs_errors_are_one_line(tmp_path, content, message):
    path = tmp_path / "P1A.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UserError) as err:
        load_pairs(path)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_label_pairs_drops_and_counts_ties():
    samples = [{"prompt": "p", "pairs": [("a1", "b1"), ("same", "same"), ("a3", "b3"), ("", "b4")]}]
    verdicts = {"a1": "A", "a3": "B", "": "A"}

    def label(pole, items):
        # identical responses are a tie without asking the judge
        assert pole == "P1A" and ("same", "same") not in [(a, b) for _, a, b in items]
        return [verdicts[a] for _, a, _ in items]

    records, ties = label_pairs(label, "P1A", samples)
    assert ties == 1  # the identical pair
    assert records == [
        {"user_input": "p", "completion_a": "a1", "completion_b": "b1"},
        {"user_input": "p", "completion_a": "b3", "completion_b": "a3"},  # B won: chosen first
    ]  # the pair with an empty response is dropped


def test_split_is_deterministic_and_disjoint():
    pairs = [{"user_input": str(i), "completion_a": "a", "completion_b": "b"} for i in range(50)]
    train, held = split_pairs(pairs, 0.1, seed=3)
    assert len(held) == 5 and len(train) == 45
    assert {p["user_input"] for p in train}.isdisjoint({p["user_input"] for p in held})
    assert split_pairs(pairs, 0.1, seed=3) == (train, held)
    with pytest.raises(UserError):
        split_pairs(pairs[:1], 0.1, 0)


@pytest.mark.slow
def test_make_pairs_writes_every_pole_in_the_psoups_schema(pairs_run):
    from rlphf_cli.runs import RunDir

    art = RunDir(pairs_run).artifact("data/pairs")
    manifest = art.manifest()
    cfg = compose([f"run_dir={pairs_run}", *TEST_OVERRIDES])
    assert manifest["poles"] == list(cfg.benchmark.poles)
    for pole in cfg.benchmark.poles:
        pairs = load_pairs(art.path / f"{pole}.json")
        counts = manifest["counts"][pole]
        assert counts["pairs"] == len(pairs) > 300
        assert counts["pairs"] + counts["ties_dropped"] + counts["empty_dropped"] == manifest["sampled_pairs"]
        assert counts["ties_dropped"] > 0
        assert all(p["completion_a"] != p["completion_b"] for p in pairs)
    # the chosen response is the better one by the pole's judge
    from rlphf_cli.benchmarks import get_benchmark

    bench = get_benchmark(cfg.benchmark)
    for p in load_pairs(art.path / "P2A.json")[:50]:
        assert bench.compare("P2A", p["user_input"], p["completion_a"], p["completion_b"]) == "A"
    assert make_pairs(cfg) == art.path  # complete: reused, not remade


def test_a_psoups_release_folder_is_used_instead_of_sampling(tmp_path):
    release = tmp_path / "psoups"
    rec = {"user_input": "Explain gravity.", "completion_a": "Things fall.", "completion_b": "No."}
    _write(release / "rm_training" / "P1A.json", json.dumps([rec] * 3))
    cfg = compose([f"run_dir={tmp_path / 'run'}", f"benchmark.data_dir={release}"])
    assert pairs_file(cfg, "P1A") == release / "rm_training" / "P1A.json"
    with pytest.raises(UserError, match="no pairs for pole P1B"):
        pairs_file(cfg, "P1B")
    cfg = compose([f"run_dir={tmp_path / 'run'}", f"pairs.data_dir={release / 'rm_training'}"])
    assert load_pairs(pairs_file(cfg, "P1A"))[0]["completion_a"] == "Things fall."
    assert not (tmp_path / "run").exists()  # nothing sampled, nothing written

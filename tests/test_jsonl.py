"""JSON-lines files: split on "\\n" only, a cut last line dropped, any other bad line named."""

import json

import pytest

from rlphf_cli.decoding.prompts import load_prompts_file
from rlphf_cli.errors import UserError
from rlphf_cli.evaluation import generations as eval_generations
from rlphf_cli.generations import GenerationsFile
from rlphf_cli.judges.llm import JudgeCache
from rlphf_cli.training.pairs import load_pairs

# characters that str.splitlines() breaks on but JSON keeps raw inside a string (seen in real BPE outputs)
LINE_BREAKERS = ["\u2028", "\u2029", "\x85", "\x1c", "\x1d", "\x1e", "\x0b", "\x0c"]
TEXTS = [f"before{c}after" for c in LINE_BREAKERS]


def rows(texts):
    return [
        {"prompt_id": f"p{i}", "prompt": "q", "combination": "P1A,P2A,P3A", "text": t}
        for i, t in enumerate(texts)
    ]


def test_generated_texts_with_unicode_line_breaks_read_back_everywhere(tmp_path):
    out = GenerationsFile(tmp_path, "soups")
    out.append(rows(TEXTS))
    assert [r["text"] for r in out.read()] == TEXTS
    assert [r["text"] for r in eval_generations.read(out.path)] == TEXTS

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"id": i, "prompt": t}, ensure_ascii=False) + "\n" for i, t in enumerate(TEXTS))
    )
    assert [p.text for p in load_prompts_file(prompts)] == TEXTS

    pairs = tmp_path / "P1A.json"
    pairs.write_text(
        "".join(
            json.dumps({"user_input": t, "completion_a": t, "completion_b": "b"}, ensure_ascii=False) + "\n"
            for t in TEXTS
        )
    )
    assert [p["user_input"] for p in load_pairs(pairs)] == TEXTS

    cache = JudgeCache(tmp_path / "cache.jsonl")
    for i, t in enumerate(TEXTS):
        cache.put(f"k{i}", t)
    assert JudgeCache(tmp_path / "cache.jsonl").answers == {f"k{i}": t for i, t in enumerate(TEXTS)}


def test_a_cut_last_line_is_dropped_and_cut_from_the_file(tmp_path):
    out = GenerationsFile(tmp_path, "mod")
    out.append(rows(["a", "b"]))
    whole = out.path.read_bytes()
    out.path.write_bytes(whole + b'{"prompt_id": "p2", "te')
    assert [r["text"] for r in out.read()] == ["a", "b"]
    assert out.path.read_bytes() == whole  # the next append starts a clean line


def test_a_corrupt_line_in_the_middle_is_an_error_naming_it(tmp_path):
    out = GenerationsFile(tmp_path, "mod")
    out.append(rows(["a"]))
    with open(out.path, "a") as f:
        f.write('{"prompt_id": "p1", "te\n')
    out.append(rows(["c"]))
    before = out.path.read_bytes()
    with pytest.raises(UserError, match=r"mod\.jsonl:2: not a JSON line"):
        out.read()
    with pytest.raises(UserError, match=r"mod\.jsonl:2: not a JSON line"):
        eval_generations.read(out.path)
    assert out.path.read_bytes() == before  # nothing is cut away


def test_a_user_file_without_a_final_newline_keeps_its_last_line(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"id": 1, "prompt": "a"}\n{"id": 2, "prompt": "b"}')
    assert [p.text for p in load_prompts_file(prompts)] == ["a", "b"]

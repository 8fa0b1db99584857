import json

import pytest

from rlphf_cli.runs import RunDir, atomic_write_text, content_hash, redact


def test_artifact_is_complete_only_after_commit(tmp_path):
    run = RunDir(tmp_path)
    art = run.artifact("experts/P1A")
    assert not art.is_complete()
    work = art.start()
    (work / "weights.bin").write_bytes(b"abc")
    assert not art.is_complete() and not art.path.exists()
    manifest = art.commit("expert", {"lr": 1.0, "api_key": "sk-secret"}, pole="P1A")
    assert art.is_complete() and not art.work.exists()
    on_disk = json.loads(art.manifest_path.read_text())
    assert on_disk == manifest
    assert on_disk["pole"] == "P1A" and on_disk["content_hash"] == content_hash(art.path)
    assert "torch" in on_disk["versions"] and on_disk["config"]["api_key"] == "***"
    assert "sk-secret" not in art.manifest_path.read_text()


def test_restarting_reuses_the_working_folder(tmp_path):
    art = RunDir(tmp_path).artifact("pcm")
    (art.start() / "checkpoint-10").mkdir()
    assert (art.start() / "checkpoint-10").is_dir()  # a re-run finds its checkpoints


def test_atomic_write_keeps_old_content_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "table.md"
    atomic_write_text(path, "old")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(OSError):
        atomic_write_text(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["table.md"]  # no temp file left behind


def test_content_hash_changes_with_content(tmp_path):
    (tmp_path / "a").write_text("1")
    h1 = content_hash(tmp_path)
    (tmp_path / "a").write_text("2")
    assert content_hash(tmp_path) != h1


def test_redact_nested():
    assert redact({"judge": {"api_key": "x", "model": "m"}, "hf_token": "hf_x", "max_new_tokens": 5}) == {
        "judge": {"api_key": "***", "model": "m"},
        "hf_token": "***",
        "max_new_tokens": 5,
    }

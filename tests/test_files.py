"""r2r's writers: whole outputs or none, and never over what r2r did not write."""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from r2r.data.convert import main as convert
from r2r.files import MARKER, OutputError, atomic_path, check_target
from r2r.rerank import main as rerank
from tests.data.test_convert import write_shared


def folder_output(target: Path, kind: str, text: str) -> None:
    with atomic_path(target, kind=kind) as staged:
        staged.mkdir()
        (staged / "out.txt").write_text(text)


def test_the_working_directory_and_its_parents_are_refused_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    monkeypatch.chdir(work)
    for target, kind in [(".", None), (".", "beir"), ("..", "system"), (str(work), "expert")]:
        with (
            pytest.raises(OutputError, match="working directory or one of its parents"),
            atomic_path(Path(target), kind=kind) as staged,
        ):
            staged.mkdir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]
    assert [p.name for p in work.iterdir()] == ["notes.txt"]


def test_a_folder_replaces_only_an_earlier_output_of_its_kind(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()  # an empty folder may be filled
    folder_output(target, "system", "one")
    assert (target / MARKER).read_text() == "system\n"
    folder_output(target, "system", "two")  # the same kind: replaced whole
    assert sorted(p.name for p in target.iterdir()) == [MARKER, "out.txt"]
    assert (target / "out.txt").read_text() == "two"
    with pytest.raises(OutputError, match="holds an r2r system output; r2r replaces only"):
        folder_output(target, "beir", "three")
    assert (target / "out.txt").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging left behind


def test_a_folder_with_other_files_is_refused_before_the_caller_writes(tmp_path: Path) -> None:
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    entered = False
    with (
        pytest.raises(OutputError, match="holds files r2r did not write"),
        atomic_path(user, kind="expert"),
    ):
        entered = True
    assert not entered
    assert [p.name for p in user.iterdir()] == ["notes.txt"]
    with pytest.raises(OutputError, match="is a folder; name the output file inside it"):
        check_target(user)  # a file output onto a folder
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is a file; the beir output is a folder"):
        check_target(tmp_path / "file", "beir")


def save_many(target: str, writer: int, n: int) -> None:
    for i in range(n):
        with atomic_path(Path(target), kind="system") as staged:
            staged.mkdir()
            (staged / "system.json").write_text(json.dumps({"writer": writer, "i": i}))


def test_concurrent_writers_all_succeed_and_readers_never_see_a_gap(tmp_path: Path) -> None:
    target = tmp_path / "system"
    save_many(str(target), -1, 1)
    # Threads, each with its own lock descriptor: flock excludes them as it would processes.
    with ThreadPoolExecutor(4) as pool:
        writers = [pool.submit(save_many, str(target), w, 25) for w in range(4)]
        missing = reads = 0
        deadline = time.monotonic() + 30
        while not all(w.done() for w in writers) and time.monotonic() < deadline:
            try:
                json.loads((target / "system.json").read_text())
            except FileNotFoundError:
                missing += 1
            reads += 1
        assert [w.result() for w in writers] == [None] * 4
    assert reads > 10
    assert missing == 0, f"system.json missing in {missing} of {reads} reads"
    assert json.loads((target / "system.json").read_text())["i"] == 24
    assert sorted(p.name for p in tmp_path.iterdir()) == ["system"]


def test_the_clis_refuse_folders_they_did_not_write_and_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = write_shared(tmp_path / "shared") / "medical" / "pubmedqa"
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine")
    assert convert(["pubmedqa", "--raw", str(raw), "--out", str(existing)]) == 2
    assert capsys.readouterr().err == (
        f"error: {existing}: holds files r2r did not write; r2r replaces only an earlier "
        "beir output (name a new folder)\n"
    )
    monkeypatch.chdir(existing)
    assert convert(["pubmedqa", "--raw", str(raw), "--out", "."]) == 2
    (existing / "in.jsonl").write_text('{"query": "q", "documents": ["d"]}\n')
    assert rerank(["no_system", "in.jsonl", "."]) == 2
    assert capsys.readouterr().err == (
        "error: .: is the working directory or one of its parents; name a new path\n" * 2
    )
    assert sorted(os.listdir(existing)) == ["in.jsonl", "notes.txt"]
    assert sorted(os.listdir(tmp_path)) == ["existing", "shared"]

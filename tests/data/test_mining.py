from __future__ import annotations

from pathlib import Path

import pytest

from r2r.data.mining import BM25Miner, MiningSettings
from r2r.types import Passage, Query, RetrievalDataset

# The paper's mining (conf/config.yaml holds the run's); each test changes what it checks.
PAPER = dict(
    top_k=20,
    depth={},
    include_positives=False,
    group_size=8,
    hard_negatives=4,
    hard_skip=0,
    hard_depth=30,
    seed=0,
)


def settings(**changes: int | bool | dict) -> MiningSettings:
    return MiningSettings(**(PAPER | changes))


def dataset() -> RetrievalDataset:
    texts = {
        "a": "aspirin treats headache pain",
        "b": "aspirin causes stomach bleeding",
        "c": "aspirin dose is 100 mg daily",
        "d": "metformin treats diabetes",
        "e": "metformin causes nausea",
        "f": "statins lower cholesterol",
        "g": "insulin regulates glucose",
        "h": "ibuprofen treats fever",
        "i": "vitamin d supports bones",
        "j": "zinc helps immunity",
    }
    corpus = {k: Passage(k, v) for k, v in texts.items()}
    queries = {
        "q1": Query("q1", "what side effects does aspirin have"),
        "q2": Query("q2", "metformin adverse effects"),
        "q3": Query("q3", "aspirin headache"),
    }
    qrels = {
        "train": {"q1": {"b": 1}, "q2": {"e": 1, "d": 0}},
        "dev": {},
        "test": {"q3": {"a": 1, "c": 1}},
    }
    return RetrievalDataset("toy", "medical", corpus, queries, qrels)


def test_candidate_lists_rank_by_bm25_with_id_tie_break() -> None:
    miner = BM25Miner(settings(top_k=4))
    (lst,) = miner.candidate_lists(dataset(), "test")
    assert lst.query.id == "q3" and lst.domain == "medical"
    ids = [p.id for p in lst.passages]
    # 'a' matches both terms; b and c match 'aspirin' only (c is longer, so lower);
    # the zero-score tail is ordered by id.
    assert ids == ["a", "b", "c", "d"]
    assert lst.first_stage_scores[0] > lst.first_stage_scores[1] > lst.first_stage_scores[2]
    assert lst.first_stage_scores[3] == 0.0
    assert lst.relevance == {"a": 1, "c": 1}


def test_include_positives_appends_missing_positive() -> None:
    (lst,) = BM25Miner(settings(top_k=1, include_positives=True)).candidate_lists(dataset(), "test")
    assert [p.id for p in lst.passages] == ["a", "c"]


def test_a_domain_depth_replaces_top_k_for_that_domain_only(tmp_path: Path) -> None:
    deep = BM25Miner(settings(top_k=2, depth={"medical": 5}), cache_dir=tmp_path)
    (lst,) = deep.candidate_lists(dataset(), "test")  # the toy dataset is medical
    assert [p.id for p in lst.passages] == ["a", "b", "c", "d", "e"]
    shallow = BM25Miner(settings(top_k=2, depth={"legal": 5}), cache_dir=tmp_path)
    (lst,) = shallow.candidate_lists(dataset(), "test")
    assert [p.id for p in lst.passages] == ["a", "b"]
    # Training groups do not depend on the depth: one cache entry, the same groups.
    assert deep.training_groups(dataset()) == shallow.training_groups(dataset())
    assert sorted(p.name.split("-")[1] for p in tmp_path.iterdir()) == [
        "candidates",
        "candidates",
        "groups",
    ]


def test_training_groups_shape_and_negatives() -> None:
    mining = settings(group_size=4, hard_negatives=2, hard_skip=0, hard_depth=2, seed=3)
    groups = BM25Miner(mining).training_groups(dataset())
    assert [(g.query.id, g.passages[0].id) for g in groups] == [("q1", "b"), ("q2", "e")]
    for g in groups:
        ids = [p.id for p in g.passages]
        assert len(ids) == 4 and len(set(ids)) == 4
    # q1's window (2 top non-positives) is {a, c}: both are hard; the 4th is random.
    assert [p.id for p in groups[0].passages] == ["b", "c", "a", "e"]
    # q2: 'd' (judged 0) ties 'e' and ranks first by id; window = [d, a] (zero-score tail by id).
    assert [p.id for p in groups[1].passages] == ["e", "d", "a", "f"]


def test_groups_are_seeded() -> None:
    s = dict(group_size=5, hard_negatives=1, hard_depth=5)
    a = BM25Miner(settings(**s, seed=0)).training_groups(dataset())
    b = BM25Miner(settings(**s, seed=0)).training_groups(dataset())
    c = BM25Miner(settings(**s, seed=1)).training_groups(dataset())
    assert a == b
    assert a != c


def test_cache_round_trip_and_key(tmp_path: Path) -> None:
    miner = BM25Miner(settings(top_k=3), cache_dir=tmp_path)
    first = miner.candidate_lists(dataset(), "test")
    assert len(list(tmp_path.iterdir())) == 1
    assert miner.candidate_lists(dataset(), "test") == first
    assert len(list(tmp_path.iterdir())) == 1  # same settings: served from the cache
    BM25Miner(settings(top_k=2), cache_dir=tmp_path).candidate_lists(dataset(), "test")
    assert len(list(tmp_path.iterdir())) == 2  # a setting changed: a new entry


def test_every_configured_setting_is_required() -> None:
    # Their one home is the config: a missing value is an error, never a silent default.
    with pytest.raises(TypeError, match="top_k"):
        MiningSettings(**{k: v for k, v in PAPER.items() if k != "top_k"})


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="group_size"):
        settings(group_size=1)
    with pytest.raises(ValueError, match="hard_negatives"):
        settings(group_size=4, hard_negatives=4)
    with pytest.raises(
        ValueError, match=r"depth must map domains to a top-k >= 1, got \{'legal': 0\}"
    ):
        settings(depth={"legal": 0})


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "r2r.data.mining"]


def mine(miner: BM25Miner, kind: str) -> list:
    if kind == "candidates":
        return miner.candidate_lists(dataset(), "test")
    return miner.training_groups(dataset())


@pytest.mark.parametrize("kind", ["candidates", "groups"])
@pytest.mark.parametrize(
    ("corrupt", "reason"),
    [
        (lambda b: b[: len(b) // 2], "(JSONDecodeError: "),  # a write cut short
        (lambda b: b"", "(JSONDecodeError: Expecting value: line 1 column 1 (char 0));"),
        (lambda b: b"\xff" + b, "(UnicodeDecodeError: "),
        (lambda b: b"[]" if b.startswith(b"{") else b"{}", "(expected "),  # wrong structure
    ],
)
def test_corrupt_cache_is_recomputed_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str, corrupt, reason: str
) -> None:
    mining = settings(top_k=3, group_size=4, hard_negatives=2, hard_depth=3)
    fresh = mine(BM25Miner(mining), kind)
    assert mine(BM25Miner(mining, cache_dir=tmp_path), kind) == fresh
    (path,) = tmp_path.iterdir()
    written = path.read_bytes()
    path.write_bytes(corrupt(written))

    with caplog.at_level("WARNING", logger="r2r.data.mining"):
        again = mine(BM25Miner(mining, cache_dir=tmp_path), kind)
    assert again == fresh
    (message,) = warnings(caplog)
    assert message.startswith(f"{path}: unreadable cache file {reason}")
    assert message.endswith("; recomputing")
    assert path.read_bytes() == written  # overwritten with the recomputed entry
    caplog.clear()
    assert mine(BM25Miner(mining, cache_dir=tmp_path), kind) == fresh
    assert warnings(caplog) == []


def test_cache_naming_unknown_documents_is_recomputed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    miner = BM25Miner(settings(top_k=2), cache_dir=tmp_path)
    fresh = miner.candidate_lists(dataset(), "test")
    (path,) = tmp_path.iterdir()
    path.write_text('{"q3": [["a", 1.5], ["zz", 0.5]]}', encoding="utf-8")
    with caplog.at_level("WARNING", logger="r2r.data.mining"):
        assert miner.candidate_lists(dataset(), "test") == fresh
    assert warnings(caplog) == [
        f"{path}: unreadable cache file (query 'q3': expected [document id, score] rows); "
        "recomputing"
    ]

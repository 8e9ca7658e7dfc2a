from __future__ import annotations

import json
from pathlib import Path

import pytest

from r2r.data.io import write_beir
from r2r.data.masking.coverage import main
from r2r.types import Passage, Query, RetrievalDataset

# Per domain: the positive of q1, the positive of q2, then six entity-free passages, and the
# two queries. Eight passages are exactly one group (1 positive + 7 negatives), so each of the
# two groups holds the whole corpus and the figures do not depend on BM25's ranking.
TEXTS = {
    "legal": (
        [
            "Meera Desai v. Rohan Rao was heard by the Supreme Court.",
            "The accused was convicted under Section 302 of the Indian Penal Code.",
            "The appeal was dismissed with costs.",
            "No order as to costs was made.",
            "The petition was allowed in part.",
            "The matter was remanded for a fresh hearing.",
            "The bail application was rejected.",
            "The suit was decreed with interest.",
        ],
        [
            "Did the Supreme Court hear Meera Desai v. Rohan Rao?",
            "Which section of the Indian Penal Code applies to murder?",
        ],
    ),
    "medical": (
        [
            "Calexanib 250 mg twice daily reduced chronic renal fibrosis.",
            "Patients with asthma carried BRCA1 mutations.",
            "The trial was stopped early.",
            "Most participants completed the study.",
            "Adverse events were mild.",
            "The protocol was approved by the board.",
            "Outcomes were assessed by blinded raters.",
            "No patient was lost to follow up.",
        ],
        ["Does Calexanib slow chronic renal fibrosis?", "Is metformin safe in asthma?"],
    ),
    "finance": (
        [
            "Zeekr Holdings reported revenue of $8.1 billion in fiscal 2019.",
            "Velora Group margins rose 12% in Q3 2021.",
            "The board approved a dividend.",
            "Costs were broadly flat.",
            "The outlook was unchanged.",
            "Demand weakened in the period.",
            "Inventory levels were reduced.",
            "The company repaid its debt.",
        ],
        [
            "What revenue did Zeekr Holdings report for fiscal 2019?",
            "How did margins change at Velora Group?",
        ],
    ),
}

# Counted by hand. Word tokens per group: the query's plus the whole corpus's (legal 61,
# medical 49, finance 46). Entities per group: the query's plus the two positives' (the
# fillers have none). Shared: q1 and its positive share every entity of q1; legal q2 names
# "Indian Penal Code" and its positive "Section 302 of the Indian Penal Code" (no match);
# medical q2 shares "asthma" but not "metformin"; finance q2 shares "Velora Group".
EXPECTED = {
    "legal": {
        "tokens": 10 + 61 + 10 + 61,
        # q1: CASE, COURT; q2: STATUTE; both groups: the CASE, COURT and STATUTE of d1, d2.
        "by_type": {"CASE": (3, 0.5), "COURT": (3, 0.5), "STATUTE": (3, 0.0)},
        "shared": 0.5,
        # q1 7 + q2 3 + twice (d1 7 + d2 7)
        "masked": 38,
        "rows": [
            "│ CASE    │        3 │           2.11 │  50.0% │",
            "│ all     │        9 │           6.34 │  50.0% │",
        ],
    },
    "medical": {
        "tokens": 6 + 49 + 5 + 49,
        # d1: DRUG, DOSAGE, DISEASE; d2: DISEASE, GENE; q1: DRUG, DISEASE; q2: DRUG, DISEASE.
        "by_type": {"DISEASE": (6, 1.0), "DOSAGE": (2, 0.0), "DRUG": (4, 0.5), "GENE": (2, 0.0)},
        "shared": 1.0,
        # q1 4 + q2 2 + twice (d1 8 + d2 2)
        "masked": 26,
        "rows": [
            "│ DRUG    │        4 │           3.67 │  50.0% │",
            "│ all     │       14 │          12.84 │ 100.0% │",
        ],
    },
    "finance": {
        "tokens": 9 + 46 + 7 + 46,
        # d1: COMPANY, MONEY, PERIOD; d2: COMPANY, PERCENT, PERIOD; q1: COMPANY, PERIOD;
        # q2: COMPANY.
        "by_type": {
            "COMPANY": (6, 1.0),
            "MONEY": (2, 0.0),
            "PERCENT": (2, 0.0),
            "PERIOD": (5, 0.5),
        },
        "shared": 1.0,
        # q1 4 + q2 2 + twice (d1 7 + d2 5)
        "masked": 30,
        "rows": [
            "│ PERIOD  │        5 │           4.63 │  50.0% │",
            "│ all     │       15 │          13.89 │ 100.0% │",
        ],
    },
}


def write_folder(root: Path, domain: str) -> Path:
    docs, queries = TEXTS[domain]
    dataset = RetrievalDataset(
        name=f"toy_{domain}",
        domain=domain,
        corpus={f"d{i}": Passage(f"d{i}", text) for i, text in enumerate(docs, start=1)},
        queries={f"q{i}": Query(f"q{i}", text) for i, text in enumerate(queries, start=1)},
        qrels={"train": {"q1": {"d1": 1}, "q2": {"d2": 1}}},
    )
    return write_beir(dataset, root / dataset.name)


@pytest.fixture(autouse=True)
def plain_console(monkeypatch: pytest.MonkeyPatch) -> None:
    # rich prints plain text to a captured stream unless the environment forces a terminal.
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COLUMNS", "120")


@pytest.mark.parametrize("domain", list(TEXTS))
def test_cli_figures_on_a_hand_counted_beir_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], domain: str
) -> None:
    folder = write_folder(tmp_path, domain)
    out = tmp_path / "coverage.json"
    argv = ["--data", "beir", "--folder", str(folder), "--domain", domain, "--json", str(out)]
    assert main(argv) == 0

    want = EXPECTED[domain]
    tokens = want["tokens"]
    entities = sum(n for n, _ in want["by_type"].values())
    assert json.loads(out.read_text(encoding="utf-8")) == {
        f"toy_{domain}": {
            "domain": domain,
            "split": "train",
            "groups": 2,
            "tokens": tokens,
            "entities": entities,
            "entities_per_100": pytest.approx(100 * entities / tokens),
            "masked_token_rate": round(want["masked"] / tokens, 6),
            "shared_entity_share": want["shared"],
            "by_type": {
                kind: {"entities": n, "per_100": pytest.approx(100 * n / tokens), "shared_share": s}
                for kind, (n, s) in want["by_type"].items()
            },
        }
    }
    printed = capsys.readouterr().out
    title = f"toy_{domain} ({domain}, train): 2 groups, {tokens} word tokens"
    assert title in " ".join(printed.split())  # rich wraps a title to the table's width
    for row in want["rows"]:
        assert row in printed.splitlines()
    assert f"masked word tokens: {want['masked'] / tokens:.1%}" in printed


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--data", "beir", "--folder", "{tmp}/nowhere", "--domain", "legal"],
            "{tmp}/nowhere: missing corpus.jsonl in BEIR folder",
        ),
        (["--data", "beir", "--domain", "legal"], "--data beir needs --folder and --domain"),
        (
            ["--data", "beir", "--folder", "{tmp}", "--domain", "sports"],
            "argument --domain: invalid choice: 'sports'",
        ),
        # The mining settings are the run config's (conf/), Hydra overrides included.
        (
            ["--data", "beir", "--folder", "{tmp}", "--domain", "legal", "mining.group_size=1"],
            "group_size must be >= 2 (1 positive + negatives), got 1",
        ),
        (["--data", "synthetic", "mining.top_kk=3"], "Could not override 'mining.top_kk'"),
    ],
    ids=["missing-folder", "no-folder", "unknown-domain", "mining-override", "misspelt-override"],
)
def test_bad_input_exits_2_with_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as info:
        main([a.format(tmp=tmp_path) for a in argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message.format(tmp=tmp_path) in err
    assert "Traceback" not in err

"""The tables a job logs to W&B, built from its results and routing.json."""

from __future__ import annotations

from r2r.tracking import forgetting_rows, routing_tables

# routing.json as r2r.routing.evaluation.routing_summary writes it (two domains, one router).
SUMMARY = {
    "domains": ["legal", "medical"],
    "routers": {
        "lsr": {
            "accuracy": 0.9,
            "macro_f1": 0.85,
            "n_params": 130,
            "fit_s": 1.0,
            "routing_s": 0.1,
            "reranking_s": 2.0,
            "time_fraction": 0.05,
            "metrics": {"all/ndcg@10": 61.0, "all/mrr@10": 55.0},
        }
    },
    "forgetting": {
        "base": {"legal/ndcg@10": 40.0, "medical/ndcg@10": 50.0, "all/ndcg@10": 45.0},
        "legal": {"legal/ndcg@10": 70.0, "legal/mrr@10": 65.0, "medical/ndcg@10": 48.0},
    },
}


def test_forgetting_rows_one_row_per_model_and_test_domain() -> None:
    columns, rows = forgetting_rows(SUMMARY["forgetting"])
    assert columns == ["model", "domain", "ndcg@10", "mrr@10"]
    assert rows == [
        ["base", "legal", 40.0, None],
        ["base", "medical", 50.0, None],
        ["base", "all", 45.0, None],
        ["legal", "legal", 70.0, 65.0],
        ["legal", "medical", 48.0, None],
    ]


def test_a_routed_job_logs_table2_and_table3_and_an_unrouted_one_neither() -> None:
    tables = routing_tables(SUMMARY)
    assert list(tables) == ["routing", "forgetting"]
    columns, rows = tables["routing"]
    assert columns[:3] == ["router", "accuracy", "macro_f1"] and rows[0][:3] == ["lsr", 0.9, 0.85]
    assert tables["forgetting"] == forgetting_rows(SUMMARY["forgetting"])
    assert routing_tables({}) == {}

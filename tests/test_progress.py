"""Progress lines (r2r.progress): when they are logged and what they say, with a fake clock."""

from __future__ import annotations

from functools import partial

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from r2r import progress
from r2r.data.collate import ExampleCollator, PairCollator, eval_pairs
from r2r.data.mining import BM25Miner, MiningSettings
from r2r.lit_progress import TrainingProgress
from r2r.lit_reranker import RerankerModule
from r2r.losses import infonce
from r2r.models.backbones import load_tiny
from r2r.models.experts import ExpertBank, add_lora
from r2r.models.scorer import RerankerScorer
from r2r.models.templates import QWEN3_RERANKER, PairEncoder
from r2r.routing.features import LatentFeaturizer
from r2r.types import CandidateList, Passage, Query, RetrievalDataset, TrainingExample

INPUTS = {"max_length": 128, "max_query_length": 16, "instruction": None}
SCORER = {"share_prefix": True, "chunk_tokens": None}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "r2r.progress"]


@pytest.fixture
def caplog(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level("INFO", logger="r2r.progress")
    return caplog


@pytest.fixture
def lines_every_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """As a job whose output is a file, configured with interval 0: a line per advance."""
    monkeypatch.setattr(progress, "is_terminal", lambda: False)
    monkeypatch.setattr(progress, "_interval_s", None)
    progress.configure(0)


@pytest.fixture(scope="module")
def backbone():
    return load_tiny("qwen", template=QWEN3_RERANKER, seed=0)


def test_lines_come_once_per_interval_with_rate_and_eta(caplog) -> None:
    clock = Clock()
    reporter = progress.Reporter(
        "score test", 50, "pairs", interval_s=10, interactive=False, clock=clock
    )
    for t in (0, 4, 11, 15, 23):
        clock.now = t
        reporter.advance(5)
    assert messages(caplog) == [
        "score test: 15/50 pairs (30%), 1.36 pairs/s, elapsed 0:00:11, ETA 0:00:26",
        "score test: 25/50 pairs (50%), 1.09 pairs/s, elapsed 0:00:23, ETA 0:00:23",
    ]
    clock.now = 40
    reporter.advance(25, note=lambda: "loss 0.5")
    clock.now = 41
    reporter.close()  # nothing done since the last line: no repeat
    assert messages(caplog)[2:] == [
        "score test: 50/50 pairs (100%), 1.25 pairs/s, elapsed 0:00:40, ETA 0:00:00 | loss 0.5"
    ]


def test_a_last_line_only_after_a_line_and_more_work(caplog) -> None:
    clock = Clock()
    with progress.Reporter(
        "mine toy", None, "queries", interval_s=5, interactive=False, clock=clock
    ) as r:
        r.advance(3)  # t=0: too early
        clock.now = 2
    assert messages(caplog) == []  # a short task says nothing
    with progress.Reporter(
        "mine toy", None, "queries", interval_s=5, interactive=False, clock=clock
    ) as r:
        clock.now = 7
        r.advance(2)
        clock.now = 8
        r.advance(1)
    assert messages(caplog) == [
        "mine toy: 2 queries, 0.4 queries/s, elapsed 0:00:05",
        "mine toy: 3 queries, 0.5 queries/s, elapsed 0:00:06",
    ]


def test_silent_in_a_terminal_and_until_configured(caplog, monkeypatch) -> None:
    monkeypatch.setattr(progress, "_interval_s", None)
    clock = Clock()
    quiet = [
        progress.Reporter("a", 2, "pairs", interval_s=0, interactive=True, clock=clock),
        progress.Reporter("b", 2, "pairs", interactive=False, clock=clock),
    ]
    for reporter in quiet:
        reporter.advance(2)
        reporter.close()
    assert messages(caplog) == []
    with pytest.raises(ValueError, match=r"progress\.interval_s must be >= 0 or null, got -1"):
        progress.configure(-1)


def test_formatting() -> None:
    assert [progress.rate_text(r) for r in (0.0512, 1.364, 25.61, 999.4, 1234.5)] == [
        "0.0512",
        "1.36",
        "25.6",
        "999",
        "1234",
    ]
    assert [progress.duration(s) for s in (0, 59.6, 3725)] == ["0:00:00", "0:01:00", "1:02:05"]


def test_scoring_mining_and_features_name_their_work(caplog, lines_every_call, backbone) -> None:
    bank = ExpertBank(backbone, {}, inputs=INPUTS, batch_size=2, scorer=SCORER)
    bank.score(None, ["q1", "q2", "q3"], ["d1", "d2", "d3"])
    corpus = {
        k: Passage(k, v) for k, v in {"a": "aspirin pain", "b": "zinc", "c": "aspirin"}.items()
    }
    queries = {"q1": Query("q1", "aspirin"), "q2": Query("q2", "zinc")}
    dataset = RetrievalDataset(
        "toy",
        "medical",
        corpus,
        queries,
        {"train": {}, "dev": {}, "test": {"q1": {"a": 1}, "q2": {"b": 1}}},
    )
    settings = MiningSettings(
        top_k=2,
        depth={},
        include_positives=False,
        group_size=2,
        hard_negatives=1,
        hard_skip=0,
        hard_depth=2,
        seed=0,
    )
    BM25Miner(settings).candidate_lists(dataset, "test")
    LatentFeaturizer.from_backbone(backbone, batch_size=2)(["q1", "q2", "q3"])
    # The rate and times come from the real clock: the lines are checked up to them.
    # Scoring advances a window of several batches at a time (here: all three pairs).
    assert [m.split(",")[0] for m in messages(caplog)] == [
        "score backbone: 3/3 pairs (100%)",
        "mine toy test: 1/2 queries (50%)",
        "mine toy test: 2/2 queries (100%)",
        "features tiny_qwen: 2/3 queries (67%)",
        "features tiny_qwen: 3/3 queries (100%)",
    ]


class _Timed(RerankerModule):
    """Each training step takes 10 s of the fake clock."""

    def __init__(self, *args, clock: Clock, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.clock = clock

    def training_step(self, batch, batch_idx):
        self.clock.now += 10
        return super().training_step(batch, batch_idx)


def test_training_logs_step_loss_and_pairs_per_second(caplog, backbone) -> None:
    clock = Clock()
    model = add_lora(backbone.model, r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])
    try:
        module = _Timed(
            RerankerScorer.from_backbone(backbone, model, share_prefix=True, chunk_tokens=None),
            loss=partial(infonce, temperature=1.0),
            optimizer=partial(torch.optim.AdamW, lr=1e-3),
            scheduler=None,
            log_prefix="legal/",
            clock=clock,
        )
        encoder = PairEncoder(backbone.tokenizer, backbone.template, **INPUTS)
        groups = [
            TrainingExample(
                "legal",
                Query(f"q{i}", f"query {i}"),
                (Passage("a", "bail"), Passage("b", "appeal"), Passage("c", "court")),
                (1.0, 0.0, 0.0),
            )
            for i in range(2)
        ]
        candidates = CandidateList(
            "legal",
            Query("q", "bail"),
            (Passage("a", "bail"), Passage("b", "appeal")),
            (2.0, 1.0),
            {"a": 1},
        )
        callback = TrainingProgress(
            "fine_tuned legal", interval_s=0, interactive=False, clock=clock
        )
        trainer = L.Trainer(
            max_steps=2,
            val_check_interval=2,
            logger=False,
            callbacks=[callback],
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(
            module,
            train_dataloaders=DataLoader(
                groups, batch_size=1, collate_fn=ExampleCollator(encoder, grouped=True)
            ),
            val_dataloaders=DataLoader(
                eval_pairs([candidates]), batch_size=2, collate_fn=PairCollator(encoder)
            ),
        )
        loss = float(trainer.callback_metrics["legal/train/loss"])
    finally:
        model.unload()
    lines = messages(caplog)
    assert lines[0].startswith(
        "train fine_tuned legal: 1/2 steps (50%), 0.1 steps/s, elapsed 0:00:10, ETA 0:00:10 "
        "| legal/train/loss "
    )
    assert lines[0].endswith(", 0.3 pairs/s")  # one group of 3 pairs in 10 s
    assert lines[1:] == [
        "train fine_tuned legal: 2/2 steps (100%), 0.1 steps/s, elapsed 0:00:20, ETA 0:00:00 "
        f"| legal/train/loss {loss:.4g}, 0.3 pairs/s",
        "validate fine_tuned legal: 1/1 batches (100%), ? batches/s, elapsed 0:00:00, ETA 0:00:00",
    ]

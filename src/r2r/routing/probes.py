"""Short one-line questions per domain, written by hand: how routers fare on questions
that look like none of the training queries.

The training queries of a domain share a register (AILA's queries are long case
narratives, PubMedQA's and TAT-QA's short questions); a router can learn that register
instead of the topic. The probe questions are what a user would type, one line each, so a
router's accuracy on them shows whether it learnt the topic. `PROBES_FILE` ships with the
package (15 per domain: legal, medical, finance). Router settings have been chosen by
their accuracy on it (conf/experiment/smollm2_routing.yaml), so it is no longer held out:
`HOLDOUT_FILE` (another 15 per domain, written before the last such choice was measured
on it) checks a choice made on the first (`routing.probes=<its path>`).
"""

from __future__ import annotations

from pathlib import Path

from r2r.data.io import read_jsonl
from r2r.errors import DataError
from r2r.types import LabelledQueries

PROBES_FILE = Path(__file__).with_name("probes.jsonl")
HOLDOUT_FILE = Path(__file__).with_name("probes_holdout.jsonl")


def load_probes(path: str | Path = PROBES_FILE) -> LabelledQueries:
    """One JSON object a line, `{"domain": ..., "text": ...}`; blank lines are skipped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"probe file {path} does not exist")
    texts, domains = [], []
    for number, row in read_jsonl(path):  # bad JSON: DataError naming file and line
        for field in ("domain", "text"):
            if not isinstance(row.get(field), str) or not row[field]:
                raise DataError("must be a non-empty string", file=path, line=number, field=field)
        texts.append(row["text"])
        domains.append(row["domain"])
    return LabelledQueries(tuple(texts), tuple(domains))

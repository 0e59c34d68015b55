"""What a score may claim: the notice every output of ``predict`` and ``export`` carries.

The only place of its wording. Every model's output says it is a research model, not a
diagnosis; a model that learned from synthetic faces (:mod:`data_prep.origin`: the synthetic
cohort or the toy store) also says that its number means nothing for a real person, and a
model whose training data nothing records says that it cannot tell. The printed lines, the
CSV's ``training_data`` and ``notice`` columns, the overlay's bottom band and an export's
``dlga.json`` and ``NOTICE.txt`` all take their text from :func:`notice_lines`.

Light (no TensorFlow): the command line imports it.
"""

from __future__ import annotations

from typing import Any

from data_prep.origin import SYNTHETIC, UNKNOWN, check_record, unknown

RESEARCH_NOTICE = "research model, not a diagnosis"
SYNTHETIC_NOTICE = "trained on SYNTHETIC faces: this number means nothing for a real person"
UNKNOWN_NOTICE = "training data unknown: if synthetic, this number means nothing for a real person"


def training_data_or_unknown(record: Any, why: str) -> dict[str, Any]:
    """``record`` if it is a valid :mod:`data_prep.origin` record, else ``unknown`` saying ``why``."""
    return check_record(record) or unknown(why)


def notice_lines(training_data: dict[str, Any] | None) -> tuple[str, ...]:
    """The notice, one line each: :data:`SYNTHETIC_NOTICE` (synthetic training faces) or
    :data:`UNKNOWN_NOTICE` (not recorded) first where it applies, :data:`RESEARCH_NOTICE` always."""
    kind = (check_record(training_data) or {}).get("kind", UNKNOWN)
    first = {SYNTHETIC: (SYNTHETIC_NOTICE,), UNKNOWN: (UNKNOWN_NOTICE,)}.get(kind, ())
    return (*first, RESEARCH_NOTICE)


def notice(training_data: dict[str, Any] | None) -> str:
    """:func:`notice_lines` as one line (``; `` between them): the CSV column and the printed note."""
    return "; ".join(notice_lines(training_data))


def describe(training_data: dict[str, Any] | None) -> str:
    """``synthetic (toy; <evidence>)``: the kind, the dataset and how it is known, for a header line."""
    record = check_record(training_data) or unknown("no record")
    detail = "; ".join(str(v) for v in (record["dataset"], record["evidence"]) if v)
    return f"{record['kind']} ({detail})" if detail else record["kind"]

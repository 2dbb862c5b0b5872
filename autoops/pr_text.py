"""What a retrain proposal says in words: the pull request's title and body and its commit's message.

One place, so the three agree: the commit's title is the PR's title (`git log` on main then reads
like the list of merged retrains), and the PR's body and the commit's body give the same reason (the
check's trigger) and verdict (champion vs challenger on the new month's holdout). `autoops propose`
writes the commit with them and hands the title and body to drift-watch as step outputs, which
`cml pr create` uses as they are. The evidence itself (tables, plots) is the CML comment, written by
autoops/evidence_report.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from autoops.branch import PROPOSED_TRAILER
from core.artifacts.comparison import Comparison
from core.paths import LOOP_DIR, LOOP_REPORT


@dataclass(frozen=True)
class ProposalText:
    title: str
    pr_body: str
    commit_body: str


def proposal_text(month: str, reference_month: str, reason: str, comparison: Comparison) -> ProposalText:
    """The words for proposing ``month``; ``reference_month`` is what the serving model learned from,
    ``reason`` the check's trigger reason, ``comparison`` autoops/evidence.py's comparison."""
    champion, challenger = comparison.champion.metrics, comparison.challenger.metrics
    title = f"Retrain on {month}: MAE {champion.mae:.2f} -> {challenger.mae:.2f} on the new month"
    why = f"The serving model was trained on {reference_month}: {reason}.\n\n{comparison.verdict}."
    pr_body = (
        f"Automated retrain proposed by drift-watch (`autoops propose`).\n\n{why}\n\n"
        f"The evidence is in the comment below and in {LOOP_REPORT.as_posix()}."
    )
    commit_body = (
        f"{why}\n\nProposed by `autoops propose`; the evidence is in {LOOP_DIR.as_posix()}/.\n\n"
        f"{PROPOSED_TRAILER}: {month}"
    )
    return ProposalText(title, pr_body, commit_body)

"""The status bar's progress prefix for a run."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from gui.jobs import RunJob


@pytest.mark.parametrize("entries, total, shown", [(1, 1, "step 1/1"), (2, 1, "step 1/1"), (2, 3, "step 2/3"),
                                                   (4, 3, "step 3/3")])
def test_run_prefix_never_counts_past_the_last_step(entries, total, shown):
    """steps[0] is the baseline: after the last step the record holds one entry more than the run's steps."""
    job = object.__new__(RunJob)
    job.record = SimpleNamespace(label="#2", steps=[object()] * entries, config=SimpleNamespace(steps=total))
    assert job.progress_prefix() == f"Run #2, {shown} · "

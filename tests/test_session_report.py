"""The session report: one self-contained HTML file of every run of a session (`report --session`; the
window's File ▸ Save session report… is in test_gui_session.py)."""
from __future__ import annotations

import json
import re

import pytest
import torch

import cli.main as cli
from engine.config import PruneConfig
from engine.errors import UserError
from engine.models import DemoResNet, ModelBundle
from engine.pruning import RunDone, run_pruning
from engine.report.session import Session, SessionRun, TeachShot, load_session, session_html


@pytest.fixture(scope="module")
def run_files(tmp_path_factory, fashion):
    torch.manual_seed(0)
    bundle = ModelBundle(DemoResNet(widths=(8, 16, 32)).eval(), "tiny", "demo:resnet", (1, 28, 28), 10,
                         fashion.norm, fashion.class_names, arch_kwargs={"widths": [8, 16, 32]})
    folder = tmp_path_factory.mktemp("session")
    for name, cfg in (("a_l1", PruneConfig(method="l1", pruning_ratio=0.3, steps=2, eval_limit=200,
                                           measure_speed=False, bn_recalibrate=True, bn_batches=2)),
                      ("b_l2", PruneConfig(method="l2", pruning_ratio=0.6, eval_limit=200, measure_speed=False))):
        done = list(run_pruning(bundle, fashion, cfg))[-1]
        assert isinstance(done, RunDone)
        (folder / f"{name}.json").write_text(json.dumps(done.to_json()))
    return folder


def test_report_session_writes_one_self_contained_file_of_every_run(run_files, tmp_path):
    out = tmp_path / "session.html"
    assert cli.main(["report", "--session", str(run_files), "--out", str(out)]) == 0
    html = out.read_text(encoding="utf-8")
    assert not list(tmp_path.glob("*.csv"))  # one file to hand in
    assert "<script" not in html and not re.search(r'(src|href)="https?:', html)  # nothing fetched
    assert "#1 a_l1" in html and "#2 b_l2" in html
    assert html.count("95 % CI") >= 4  # figures with their intervals
    assert "Top-1 against MACs" in html and "Top-1 after each step" in html  # the plots, as SVG
    assert "Per class" in html and "T-shirt/top" in html and "confusion matrix" in html
    assert "pruning_ratio" in html and "BN re-est." in html  # the configuration and the recovery column


def test_session_shows_teach_views_and_notes(run_files):
    session = load_session([run_files])
    session.runs[1].note = "cut too much <b>here</b>"
    session.shots.append(TeachShot("Why these channels", "L1 at 30 %", b"\x89PNG\r\n\x1a\n"))
    html = session_html(session)
    assert "cut too much &lt;b&gt;here&lt;/b&gt;" in html  # the student's words, escaped
    assert "Teach views opened" in html and 'src="data:image/png;base64,iVBORw0KGgo' in html


def test_report_session_refuses_bad_input_in_one_line(run_files, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"not": "a run"}')
    assert cli.main(["report", "--session", str(bad), "--out", str(tmp_path / "s.html")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "prune --json" in err[0] and not (tmp_path / "s.html").exists()
    assert cli.main(["report", "--out", str(tmp_path / "s.html")]) == 2
    assert "--session" in capsys.readouterr().err
    with pytest.raises(UserError, match="does not exist"):
        load_session([tmp_path / "missing"])

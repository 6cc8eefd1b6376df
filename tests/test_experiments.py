"""The validation study script runs end to end (smoke preset) and never reads a test split."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_guided_vs_rest_study_on_smoke_settings(tmp_path, capsys):
    study = _load("countdown_guided_vs_rest")
    assert study.explored("Exploring Operation: 1+2=3\nExploring Operation: 3*3=9\n") == 2
    run = tmp_path / "study"
    assert study.main(["--preset", "smoke", "--run-dir", str(run), "--n-problems", "4", "--n-samples", "2"]) == 0
    md = (run / "study" / "study.md").read_text()
    assert "## Paired differences" in md and "| ReST | Guided-ReST | pass@1 |" in md and "## Search effort" in md
    out = json.loads((run / "study" / "study.json").read_text())
    assert set(out["summaries"]) >= {"SoS", "ReST", "Guided-ReST", "ReST iter 1", "Guided-ReST iter 1"}
    assert all(list(s) == ["valid_unseen"] for s in out["summaries"].values())
    # only the validation splits were sampled: no test split appears under any eval directory
    sampled = {p.name for p in run.rglob("samples/*") if p.is_dir()}
    assert sampled and sampled <= {"valid", "valid_unseen"}
    # the splice-likelihood script reads that run's Guided-ReST data (smoke: all of it rescued)
    splice = _load("countdown_splice_logprobs")
    capsys.readouterr()
    assert splice.main(["--run-dir", str(run)]) == 0
    res = json.loads(capsys.readouterr().out)
    rescued = res["rescued (rounds >= 1)"]
    assert rescued["n"] > 0 and rescued["mean_token_logprob"] < 0 and 0 <= rescued["share_of_tokens_below_1pct"] <= 1

"""The demo's quick mode runs the whole job end to end and writes a complete report."""

import json

from nt2c_core.cli import main


def test_quick_demo_writes_report_with_scores(tmp_path):
    assert main(["demo", "-o", str(tmp_path), "--quick", "--device", "cpu"]) == 0
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert set(report["metrics"]) == {"raw", "gaussian", "general", "coarse", "fine", "chosen"}
    assert report["chosen_model"] in ("general", "coarse", "fine")
    assert all(v["psnr_db"] > 0 for v in report["metrics"].values())
    assert report["noise_patches"] >= 4
    assert (tmp_path / "report" / "before_after.png").stat().st_size > 10000
    for stage in ("simulate", "coarse", "noise", "gan", "fine", "denoised"):
        assert (tmp_path / "work" / stage / "DONE.json").is_file()
    assert len(list((tmp_path / "work" / "denoised").glob("*.mrc"))) == 2

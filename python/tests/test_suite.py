"""The fault suite from Python: every nemesis passes; bad names are refused."""

import pytest

import scalestore


def test_nemeses_are_the_kebab_case_names():
    assert "crash-all" in scalestore.NEMESES and "snapshot-storm" in scalestore.NEMESES
    assert "slow-sync-crashes" in scalestore.NEMESES
    assert len(scalestore.NEMESES) == 12


@pytest.mark.parametrize("nemesis", scalestore.NEMESES)
def test_run_suite_passes_for_every_nemesis(nemesis):
    report = scalestore.run_suite(nemesis=nemesis, seed=7, seconds=3)
    assert report.passed, report.summary
    assert report.verdict == "linearizable"
    assert report.operations > 50 and len(report.history) == report.operations
    assert report.lost == 0 and report.duplicated == 0
    assert report.lost_appends == [] and report.duplicated_appends == []
    assert report.recovery_s is not None and report.recovery_s >= 0
    assert {"reads", "max_ms_behind"} <= set(report.stale)
    assert "PASS" in report._repr_html_()
    assert scalestore.check_linearizable(report.history).ok


def test_an_unknown_nemesis_raises_invalid_argument():
    with pytest.raises(scalestore.InvalidArgument):
        scalestore.run_suite(nemesis="meteor-strike", seed=1, seconds=1)
    with pytest.raises(scalestore.InvalidType):
        scalestore.run_suite(nemesis=3)

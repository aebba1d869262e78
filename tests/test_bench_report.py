import pytest

from lightning_papers.bench.report import BenchReport, markdown_table, mean_std, write_report


def test_mean_std_and_table(tmp_path):
    assert mean_std([0.8, 0.82, 0.84]) == "0.820 ± 0.020"
    assert mean_std([0.5]) == "0.500"
    table = markdown_table(["a", "b"], [["x", 0.123456], ["y", 12345678.0]])
    assert table.splitlines()[2] == "| x | 0.1235 |" and "1.23e+07" in table
    report = BenchReport("demo", "Demo", ["a", "b"], [["x", 1]], notes="Goal: met.", headline="ok")
    path = write_report(report, tmp_path, "lightning-papers bench demo", seconds=1.0)
    text = path.read_text()
    assert path.name == "demo.md" and text.startswith("# Demo") and "Goal: met." in text
    assert "lightning-papers bench demo" in text
    with pytest.raises(ValueError, match="row 0 of 'bad' has 1 cells, expected 2"):
        BenchReport("bad", "Bad", ["a", "b"], [["x"]])

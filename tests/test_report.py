"""The report builder: same content in HTML and Markdown, model text escaped, plots that are real PNGs."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from judge.report import plot_win_rates
from prefloop.report import Report, fmt, pct
from trainer.report import plot_training_metrics, read_metrics

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _metrics_file(tmp_path: Path, steps: int = 12) -> Path:
    path = tmp_path / "metrics.jsonl"
    lines = []
    for step in range(1, steps + 1):
        lines.append({"step": step, "epoch": step / steps, "split": "train", "loss": 0.69 - 0.02 * step,
                      "rewards/margins": 0.05 * step, "rewards/accuracies": min(1.0, 0.4 + 0.05 * step),
                      "logps/chosen": -40 + step * 0.1, "logps/rejected": -40 - step * 0.3})
        if step % 4 == 0:
            lines.append({"step": step, "split": "eval", "loss": 0.7 - 0.015 * step, "rewards/margins": 0.04 * step})
    text = "\n".join(json.dumps(row) for row in lines) + "\n" + '{"step": 13, "loss": 0.'  # torn last line
    path.write_text(text)
    return path


def test_fmt_numbers():
    assert fmt(0.123456) == "0.123"
    assert fmt(12.3456) == "12.3"
    assert fmt(1234567) == "1,234,567"
    assert fmt(None) == "—"
    assert fmt(True) == "yes"
    assert fmt(0.0) == "0"
    assert fmt(2.5e-5) == "2.50e-05"
    assert pct(0.625) == "62.5%"


def test_model_text_is_escaped_in_html_and_fenced_in_markdown(tmp_path):
    evil = "<script>alert('x')</script> & ```` fence breaker\nsecond line"
    report = Report("Run <1>", subtitle="model **smollm2**")
    report.heading("Answers")
    report.example("prompt 1", "Say <b>hi</b>", {"reference": evil, "trained": ""}, note="judge: <A wins>")
    report.table([{"prompt": "<img src=x onerror=alert(1)>", "score": 87.5}])
    html_path, md_path = report.write(tmp_path)
    page = html_path.read_text()
    assert "<script>" not in page and "<img src=x" not in page and "<b>hi</b>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "&lt;A wins&gt;" in page
    assert "<strong>smollm2</strong>" in page  # our own markup still works
    assert "(empty answer)" in page
    md = md_path.read_text()
    # the fence around the model text is longer than the 4-backtick run inside it, so it cannot be closed early
    assert "`````text\n" + evil + "\n`````" in md
    assert "\\<img src=x onerror=alert(1)\\>" in md


def test_same_content_in_both_renderings(tmp_path):
    report = Report("Loop report")
    report.heading("Win rate").paragraph("Judged on **held-out** prompts, never on `loss`.")
    report.key_values({"win rate": 0.6251, "n": 40, "judge": "local:smollm2"}, caption="headline")
    report.table([[1, "a|b", None]], headers=["step", "text", "missing"])
    report.warning("the model cannot do the task yet")
    html_page, md = report.to_html(), report.to_markdown()
    for text in ("Win rate", "0.625", "local:smollm2", "the model cannot do the task yet", "headline"):
        assert text in html_page and text in md
    assert "<code>loss</code>" in html_page and "`loss`" in md
    assert "| 1 | a\\|b | — |" in md  # pipe escaped, None shown as a dash
    assert '<td class="num">40</td>' in html_page
    assert md.count("\n| ") >= 4


def test_images_embedded_or_linked(tmp_path):
    png = plot_training_metrics(_metrics_file(tmp_path), tmp_path / "plots" / "training.png")
    assert png is not None
    report = Report("r").image(png, caption="training curves")
    embedded = report.to_html(tmp_path)
    match = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', embedded)
    assert match and base64.b64decode(match.group(1)) == png.read_bytes()
    linked = report.to_html(tmp_path, embed_images=False)
    assert 'src="plots/training.png"' in linked
    assert "![training](plots/training.png)\n\n*training curves*" in report.to_markdown(tmp_path)
    report.image(tmp_path / "nope.png")
    assert "missing image" in report.to_html(tmp_path)


def test_read_metrics_keeps_train_and_eval_rows_and_skips_torn_tail(tmp_path):
    rows = read_metrics(_metrics_file(tmp_path))
    assert len(rows) == 15
    evals = [r for r in rows if r["split"] == "eval"]
    assert [r["step"] for r in evals] == [4, 8, 12]
    assert evals[0]["loss"] == pytest.approx(0.64)


def test_training_plot_is_a_png(tmp_path):
    out = plot_training_metrics(_metrics_file(tmp_path), tmp_path / "train.png", title="DPO")
    width, height = _png_size(out)
    assert width > 600 and height > 400
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"step": 1, "split": "train", "lr": 0.1}\n')
    assert plot_training_metrics(empty, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_win_rate_plot(tmp_path):
    out = plot_win_rates([{"name": "local:smollm2", "win_rate": 0.62, "ci_low": 0.48, "ci_high": 0.75, "n": 40},
                          {"name": "ollama:llama3", "win_rate": 0.55}], tmp_path / "wr.png")
    width, height = _png_size(out)
    assert width > 500 and height > 100
    assert plot_win_rates([{"name": "x", "win_rate": None}], tmp_path / "none.png") is None


def test_extend_nests_headings():
    inner = Report("Judge").heading("Diagnostics").paragraph("position bias 0.1")
    outer = Report("Loop").extend(inner)
    md = outer.to_markdown()
    assert "## Judge" in md and "### Diagnostics" in md and "position bias 0.1" in md


def test_repetition_detector():
    from prefloop.text import repeats_itself

    assert repeats_itself("I hope this helps: I hope this helps: I hope this helps: She walks.")
    assert not repeats_itself("The largest planet in our solar system is Jupiter, and it is a gas giant.")

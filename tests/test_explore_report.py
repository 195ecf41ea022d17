"""The ``fairrl explore`` report (fairrl.report.explore): front, knee and best trials by hand; the CSV, PNG,
self-contained HTML page and ``explore.md``."""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
import subprocess
from html.parser import HTMLParser

import pytest

from fairrl.errors import DataError
from fairrl.report.explore import (
    best_per_objective,
    knee_point,
    mask_url,
    pareto_front,
    plot_pareto,
    write_explore_report,
    write_pareto_html,
    write_trials_csv,
)

PNG = b"\x89PNG"
ACC_BIAS = [{"name": "accuracy", "metric": "reasoning: accuracy", "direction": "maximize"},
            {"name": "bias", "metric": "bbq_templates: bias rate", "direction": "minimize"}]  # fmt: skip


def trial(number, values, state="COMPLETE", feasible=None, params=None, error=None, groups=None):
    names = [o["name"] for o in ACC_BIAS]
    return {"number": number, "state": state, "params": params or {"method": "grpo", "lr": 1e-4},
            "values": None if values is None else dict(zip(names, values, strict=True)), "feasible": feasible,
            "error": error, "run_dir": f"runs/t{number}", "seeds": 1, "groups": groups or {}, "minutes": 2.5}  # fmt: skip


def study() -> list[dict]:
    """Six complete trials (accuracy up, bias down), then four that must not count:

    - #0 (0.60, 0.30), #1 (0.70, 0.40), #2 (0.50, 0.20): each beats the others on one objective: front.
    - #3 (0.55, 0.35): #0 is more accurate (0.60 > 0.55) and less biased (0.30 < 0.35): dominated.
    - #4 (0.70, 0.45): #1 is as accurate (0.70) and less biased (0.40 < 0.45): dominated.
    - #5 (0.50, 0.20): identical to #2; neither is strictly better, so both are on the front.
    - #6 failed, #7 has a NaN bias, #8 is infeasible, #9 is still running; #7 and #8 would dominate
      everything (accuracy 0.9 / 0.95) if they counted.
    """
    return [
        trial(0, (0.60, 0.30), params={"method": "grpo", "lr": 1e-4},
              groups={"accuracy": {"Age": 0.6, "Gender": 0.7}, "bias rate": {"Age": 0.2}}),
        trial(1, (0.70, 0.40), params={"method": "sft", "lr": 3e-5}),
        trial(2, (0.50, 0.20), params={"method": "dpo", "lr": 1e-4, "beta": 0.1}),
        trial(3, (0.55, 0.35), params={"method": "grpo", "lr": 1e-3}),
        trial(4, (0.70, 0.45), params={"method": "sft", "lr": 1e-3}),
        trial(5, (0.50, 0.20), params={"method": "dpo", "lr": 1e-4, "beta": 0.1}),
        trial(6, None, state="FAIL", error="ValueError: bad | mixture\nTraceback (most recent call last): ..."),
        trial(7, (0.90, math.nan)),
        trial(8, (0.95, 0.10), feasible=False),
        trial(9, None, state="RUNNING"),
    ]  # fmt: skip


def test_front_excludes_dominated_failed_nan_and_infeasible():
    """Front sorted by accuracy (ascending), ties by number: #2, #5 (0.50), #0 (0.60), #1 (0.70)."""
    assert pareto_front(study(), ACC_BIAS) == [2, 5, 0, 1]
    assert pareto_front([t for t in study() if t["number"] != 8] + [trial(8, (0.95, 0.10), feasible=True)],
                        ACC_BIAS) == [8]  # fmt: skip
    assert pareto_front([], ACC_BIAS) == []


def test_best_per_objective_ties_go_to_the_lowest_number():
    """Accuracy: #1 and #4 both 0.70 -> #1 (#7, #8 do not count). Bias: #2 and #5 both 0.20 -> #2."""
    assert best_per_objective(study(), ACC_BIAS) == {"accuracy": 1, "bias": 2}
    assert best_per_objective([trial(0, None, state="FAIL")], ACC_BIAS) == {}


XY = [{"name": "x", "metric": "x", "direction": "maximize"}, {"name": "y", "metric": "y", "direction": "maximize"}]


def _points(points, objectives=XY, first=10):
    return [{"number": first + i, "state": "COMPLETE", "params": {}, "feasible": None,
             "values": {o["name"]: v for o, v in zip(objectives, p, strict=True)}} for i, p in enumerate(points)]  # fmt: skip


def test_knee_is_farthest_from_the_chord_with_two_objectives():
    """Front #10 (0, 1), #11 (0.2, 0.9), #12 (0.5, 0.5), #13 (1, 0), both maximised, already in [0, 1].
    Chord through the extremes #13 (best x) and #10 (best y): x + y = 1; distance |x + y - 1| / sqrt(2):
    #10: 0, #11: 0.1 / 1.414 = 0.0707, #12: 0, #13: 0 -> knee #11. (Closest to the ideal (1, 1) would be
    #12: sqrt(0.5) = 0.707 < #11: sqrt(0.64 + 0.01) = 0.806, so this tells the two rules apart.)"""
    trials = _points([(0, 1), (0.2, 0.9), (0.5, 0.5), (1, 0)])
    front = pareto_front(trials, XY)
    assert front == [10, 11, 12, 13]
    assert knee_point(trials, XY, front) == 11
    # scaling x by 100 and minimising -y instead of maximising y move nothing after normalisation
    flipped = [{"name": "x", "metric": "x", "direction": "maximize"},
               {"name": "y", "metric": "y", "direction": "minimize"}]  # fmt: skip
    other = _points([(0, -1), (20, -0.9), (50, -0.5), (100, 0)], flipped)
    assert knee_point(other, flipped, pareto_front(other, flipped)) == 11


def test_knee_small_fronts_constant_objectives_and_three_objectives():
    """Two points always scale to (0, 1) and (1, 0), both sqrt(1) from the ideal -> tie -> lower number.
    One point -> itself. Identical points: every objective constant, all (1, 1) -> lowest number.
    Three objectives: #20 (1, 0, 0), #21 (0, 1, 0), #22 (0, 0, 1) are sqrt(2) = 1.414 from (1, 1, 1);
    #23 (0.6, 0.6, 0.6) is sqrt(3 * 0.16) = 0.693 -> knee #23."""
    two = _points([(0.3, 0.2), (0, 1)])
    assert knee_point(two, XY, pareto_front(two, XY)) == 10
    assert knee_point(two[:1], XY, [10]) == 10
    assert knee_point(two, XY, []) is None
    same = _points([(0.4, 0.4)] * 3)
    assert pareto_front(same, XY) == [10, 11, 12] and knee_point(same, XY, [10, 11, 12]) == 10
    xyz = XY + [{"name": "z", "metric": "z", "direction": "maximize"}]
    three = _points([(1, 0, 0), (0, 1, 0), (0, 0, 1), (0.6, 0.6, 0.6)], xyz, first=20)
    assert pareto_front(three, xyz) == [21, 22, 23, 20]
    assert knee_point(three, xyz, pareto_front(three, xyz)) == 23


def test_trials_csv_has_one_row_per_trial_and_the_union_of_params(tmp_path):
    path = write_trials_csv(tmp_path / "trials.csv", study(), ACC_BIAS)
    rows = list(csv.DictReader(path.open()))
    assert list(rows[0]) == ["number", "state", "params_beta", "params_lr", "params_method", "values_accuracy",
                             "values_bias", "feasible", "seeds", "minutes", "run_dir", "error"]  # fmt: skip
    assert len(rows) == 10
    assert rows[2]["params_beta"] == "0.1" and rows[0]["params_beta"] == ""
    assert (rows[0]["values_accuracy"], rows[0]["values_bias"], rows[0]["feasible"]) == ("0.6", "0.3", "")
    assert rows[6]["values_accuracy"] == "" and rows[6]["error"].startswith("ValueError: bad | mixture\nTraceback")
    assert rows[7]["values_bias"] == "nan" and rows[8]["feasible"] == "False"


def test_pareto_png_is_written(tmp_path):
    trials = study()
    front = pareto_front(trials, ACC_BIAS)
    path = plot_pareto(tmp_path / "pareto.png", trials, ACC_BIAS, front, knee_point(trials, ACC_BIAS, front))
    assert path.read_bytes()[:4] == PNG and path.stat().st_size > 5000
    xyz = XY + [{"name": "z", "metric": "z", "direction": "minimize"}]
    three = _points([(1, 0, 0), (0, 1, 0), (0, 0, 1), (0.6, 0.6, 0.6)], xyz)
    path = plot_pareto(tmp_path / "three.png", three, xyz, pareto_front(three, xyz), None)
    assert path.read_bytes()[:4] == PNG


class _Page(HTMLParser):
    """Collects start tags, attribute values, text and the content of the JSON data tag."""

    def __init__(self):
        super().__init__()
        self.tags, self.attr_values, self.text, self.data, self._in = [], [], [], None, None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self.attr_values += [v or "" for _, v in attrs]
        self._in = "json" if tag == "script" and dict(attrs).get("type") == "application/json" else None

    def handle_endtag(self, tag):
        self._in = None

    def handle_data(self, data):
        if self._in == "json":
            self.data = data
        self.text.append(data)


EVIL = "</script><b>bold</b><!--"


def _html(tmp_path, trials=None, objectives=ACC_BIAS):
    trials = trials or [t for t in study() if t["number"] != 7] + [trial(10, (0.65, 0.35), params={"method": EVIL})]
    front = pareto_front(trials, objectives)
    path = write_pareto_html(tmp_path / "pareto.html", trials, objectives, front, knee_point(trials, objectives, front),
                             "study <i>x</i>")  # fmt: skip
    return trials, path.read_text()


def test_html_is_self_contained_and_escapes_the_data(tmp_path):
    """No script src, no http(s) URL anywhere (the SVG namespace comes from the parsed <svg>); the JSON tag
    reads back to the trials; a param holding ``</script><b>`` neither ends the data tag nor makes a tag."""
    trials, page = _html(tmp_path)
    parser = _Page()
    parser.feed(page)
    assert not re.search(r"https?://", page)
    assert all("src" not in attrs for tag, attrs in parser.tags if tag == "script")
    assert [t for t, _ in parser.tags].count("script") == 2
    assert not {"b", "i"} & {t for t, _ in parser.tags}
    assert json.loads(parser.data) == {"objectives": ACC_BIAS, "trials": trials, "front": [2, 5, 0, 10, 1],
                                       "knee": knee_point(trials, ACC_BIAS, [2, 5, 0, 10, 1])}  # fmt: skip
    assert EVIL not in page and "&lt;/script&gt;&lt;b&gt;" in page
    assert any(EVIL in text for text in parser.text)  # the table shows the value as text
    rows = [a.get("id") for t, a in parser.tags if t == "tr" and a.get("id")]
    assert rows == [f"trial-{t['number']}" for t in trials]
    assert not any(a.get("id", "").startswith("pick-") for _, a in parser.tags)  # pickers only for 3+ objectives


def test_html_has_pickers_with_three_objectives_and_nan_becomes_null(tmp_path):
    xyz = XY + [{"name": "z", "metric": "z", "direction": "minimize"}]
    trials = _points([(1, 0, 0), (0, 1, 0), (0, 0, 1), (0.6, 0.6, math.nan)], xyz)
    _, page = _html(tmp_path, trials, xyz)
    parser = _Page()
    parser.feed(page)
    assert [a["id"] for t, a in parser.tags if t == "select"] == ["pick-x", "pick-y"]
    assert json.loads(parser.data)["trials"][3]["values"]["z"] is None


def _script(page: str) -> str:
    return page.rsplit("<script>", 1)[1].split("</script>", 1)[0]


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed: the page's script is not syntax-checked")
def test_html_script_parses_in_node(tmp_path):
    _, page = _html(tmp_path)
    (tmp_path / "page.js").write_text(_script(page))
    done = subprocess.run(["node", "--check", str(tmp_path / "page.js")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(BROWSER is None, reason="no chromium or chromium-browser on PATH to render the page headless")
def test_html_renders_in_headless_chromium(tmp_path):
    trials, _ = _html(tmp_path)
    done = subprocess.run([BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                           (tmp_path / "pareto.html").as_uri()], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    dom = done.stdout
    assert all(f'id="trial-{t["number"]}"' in dom for t in trials)
    assert dom.count("<circle") >= len([t for t in trials if t["state"] == "COMPLETE"])  # the script drew points


def test_mask_url_hides_passwords_only():
    assert mask_url("postgresql://u:secret@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert mask_url("mysql+pymysql://u:p%40ss:w@h/db?charset=utf8") == "mysql+pymysql://u:***@h/db?charset=utf8"
    assert mask_url("postgresql://h/db?user=u&password=secret") == "postgresql://h/db?user=u&password=***"
    for unchanged in ("sqlite:///runs/study.db", "sqlite:////abs/x@y:z.db", "postgresql://u@h/db", "runs/journal.log"):
        assert mask_url(unchanged) == unchanged


def test_explore_md_by_hand(tmp_path):
    """explore.md names the study, masks the storage password, lists the front #2, #5, #0, #1 (knee #0: scaled,
    they are (0, 1), (0, 1), (0.5, 0.5), (1, 0), all on the chord x + y = 1, so the lowest number wins), the best
    trials (#1, #2), the constraint, the failed trial's first error line, and #0's per-group results."""
    info = {"study": "fairreason", "sampler": "NSGAIISampler", "storage": "postgresql://u:secret@h:5432/db"}
    constraints = [{"metric": "reasoning: retained %", "op": ">=", "value": 88}]
    path = write_explore_report(tmp_path, study(), ACC_BIAS, constraints, info)
    md = path.read_text()
    assert path.name == "explore.md" and "secret" not in md and "`postgresql://u:***@h:5432/db`" in md
    assert "# fairrl explore: fairreason" in md and "- sampler: NSGAIISampler" in md
    assert "- trials: 10 (8 complete, 1 failed, 1 running)" in md
    front = md.split("## Pareto front")[1].split("##")[0]
    assert [int(n) for n in re.findall(r"^\| #(\d+) ", front, re.M)] == [2, 5, 0, 1]
    assert "| #2 | 0.1 | 0.0001 | dpo | 0.500 | 0.200 | – |" in front
    assert "Trial #0 is the knee only by tie-break" in md and "extremes, #1 (best accuracy) and #2 (best bias)" in md
    assert "| accuracy (higher is better) | #1 | 0.700 | yes |" in md
    assert "| bias (lower is better) | #2 | 0.200 | yes |" in md
    assert "- `reasoning: retained %` >= 88" in md
    assert "| #6 | lr=0.0001, method=grpo | ValueError: bad \\| mixture |" in md and "Traceback" not in md
    assert "| trial | Age | Gender |" in md and "| #0 | 0.600 | 0.700 |" in md and "| #1 | – | – |" in md
    for name in ("pareto.png", "pareto.html", "trials.csv"):
        assert f"]({name})" in md and (tmp_path / name).stat().st_size > 0


def test_markup_and_mathtext_in_names_stay_text(tmp_path):
    """A method named like markup is backslash-escaped in explore.md (no raw HTML tag or comment opens); a
    ``$`` in a method name is not read as (broken) matplotlib mathtext."""
    trials = [trial(0, (0.5, 0.2), params={"method": EVIL}), trial(1, (0.6, 0.3), params={"method": "a$\\frac{$b"})]
    md = write_explore_report(tmp_path, trials, ACC_BIAS, [], {"study": "<b>s</b>"}).read_text()
    assert "| \\</script>\\<b>bold\\</b>\\<!-- |" in md and "# fairrl explore: \\<b>s\\</b>" in md
    assert (tmp_path / "pareto.png").read_bytes()[:4] == PNG


def test_objectives_are_checked(tmp_path):
    with pytest.raises(DataError, match="direction"):
        pareto_front(study(), [{"name": "accuracy", "metric": "m", "direction": "max"}])
    with pytest.raises(DataError, match="at least 2"):
        plot_pareto(tmp_path / "x.png", study(), ACC_BIAS[:1], [], None)
    # accuracy alone: #7's NaN bias no longer matters, its 0.90 is best; no scatter with one objective
    path = write_explore_report(tmp_path, study(), ACC_BIAS[:1], [], {})
    assert "Trial #7 is the knee" in path.read_text() and not (tmp_path / "pareto.png").exists()

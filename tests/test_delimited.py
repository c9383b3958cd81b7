"""prepare --format csv: any delimited log, a folder or a .tar.gz of files, columns named by flags."""

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, run_cli
from softmax_bottleneck.data import load_interactions
from softmax_bottleneck.data.delimited import Columns
from softmax_bottleneck.errors import InputError
from softmax_bottleneck.prepare import main

GLOBO = REPO.parent / "shared" / "data" / "globo-news" / "clicks.tar.gz"
HEADER = "user_id,session_id,click_article_id,click_timestamp,extra\n"
HOURS = {  # file name → rows (user, session, item, time in ms, extra); names out of order on purpose
    "clicks_hour_001.csv": [(7, 20, "b", 3_600_000, "x"), (7, 20, "c", 3_601_000, "y")],
    "clicks_hour_000.csv": [(5, 10, "a", 1000, "x"), (5, 10, "b", 2000, ""), (6, 11, "c", 1500, "z"),
                            (6, 11, "a", 1500, "z")],  # a tie at 1,500 ms: file order kept
    "clicks_hour_002.csv": [],  # only its header, as one Globo hour
}
SESSIONS = Columns(session="session_id", item="click_article_id", time="click_timestamp", time_unit="ms")


def _text(rows, header=HEADER, sep=","):
    return header.replace(",", sep) + "".join(sep.join(map(str, r)) + "\n" for r in rows)


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "clicks"
    root.mkdir()
    for name, rows in HOURS.items():
        (root / name).write_text(_text(rows))
    return root


def _archive(folder, path, order):
    with tarfile.open(path, "w:gz") as archive:
        for name in order:
            archive.add(folder / name, arcname=f"clicks/{name}")
    return path


def test_a_folder_and_an_archive_read_in_name_order_then_file_order(folder, tmp_path):
    expected_items = ["a", "b", "c", "a", "b", "c"]  # hour 000 then 001; hour 002 adds nothing
    for source in (folder, _archive(folder, tmp_path / "clicks.tar.gz", sorted(HOURS, reverse=True))):
        got = load_interactions(source, "csv", columns=SESSIONS)
        assert got.item_ids[got.item].tolist() == expected_items, source
        assert got.timestamp.tolist() == [1.0, 2.0, 1.5, 1.5, 3600.0, 3601.0]  # milliseconds → seconds
        assert got.sessionised and len(set(got.user.tolist())) == 3
        assert got.source["files"] == 3 and got.source["delimiter"] == ","
    assert not any(p.suffix == ".csv" for p in tmp_path.iterdir())  # nothing extracted beside the archive


def test_user_column_sessions_come_from_the_gap_and_a_tab_delimiter_is_sniffed(tmp_path):
    rows = [(1, 0, "a", 0, "-"), (1, 0, "b", 10, "-"), (1, 0, "c", 10_000, "-"), (1, 0, "a", 10_005, "-")]
    path = tmp_path / "log.tsv"
    path.write_text(_text(rows, sep="\t"))
    got = load_interactions(path, "csv", columns=Columns(user="user_id", item="click_article_id",
                                                         time="click_timestamp"))
    assert not got.sessionised and got.source["delimiter"] == "\t"
    from softmax_bottleneck.data.preprocess import sessionize

    assert sessionize(got.user, got.timestamp, 3600, got.sessionised).tolist() == [0, 0, 1, 1]


BAD = {
    "missing column": ("clicks_hour_000.csv", "user_id,session_id,item,click_timestamp\n1,2,a,3\n",
                       "clicks_hour_000.csv: line 1: no column 'click_article_id'"),
    "too many fields": ("clicks_hour_001.csv", HEADER + "1,2,a,3,x\n1,2,b,4,x,surplus,more\n",
                        "clicks_hour_001.csv: line 3: malformed row"),
    "empty time": ("clicks_hour_001.csv", HEADER + "1,2,a,3,x\n1,2,b,,x\n",
                   "clicks_hour_001.csv: line 3: empty time column 'click_timestamp'"),
    "text time": ("clicks_hour_001.csv", HEADER + "1,2,a,3,x\n1,2,a,4,x\n1,2,b,soon,x\n",
                  "clicks_hour_001.csv: line 4: time column 'click_timestamp' holds 'soon'"),
    "empty item": ("clicks_hour_000.csv", HEADER + "1,2,,3,x\n", "clicks_hour_000.csv: line 2: empty item column"),
    "empty file": ("clicks_hour_002.csv", "", "clicks_hour_002.csv: empty file"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_every_malformed_file_or_row_is_one_line_naming_the_file_and_line(folder, tmp_path, case, capsys):
    name, text, needle = BAD[case]
    (folder / name).write_text(text)
    for source in (folder, _archive(folder, tmp_path / "c.tar.gz", sorted(HOURS))):
        with pytest.raises(InputError, match=needle.replace("(", r"\(")):
            load_interactions(source, "csv", columns=SESSIONS)
    status, _, err = run_cli(main, ["--input", folder, "--format", "csv", "--session-column", "session_id",
                                    "--item-column", "click_article_id", "--time-column", "click_timestamp",
                                    "--out", tmp_path / "out"], capsys)
    assert status == 2 and len(err.strip().splitlines()) == 1 and needle in err and not (tmp_path / "out").exists()


def test_bad_column_flags_are_refused_before_reading(tmp_path, folder, capsys):
    base = ["--input", folder, "--out", tmp_path / "out"]
    for argv, needle in (
            (["--format", "csv", "--item-column", "i", "--time-column", "t"], "--session-column or --user-column"),
            (["--format", "csv", "--session-column", "s", "--user-column", "u", "--item-column", "i",
              "--time-column", "t"], "--session-column or --user-column"),
            (["--format", "csv", "--session-column", "s", "--time-column", "t"], "needs --item-column"),
            (["--format", "csv", "--session-column", "s", "--item-column", "s", "--time-column", "t"],
             "the same column twice"),
            (["--format", "gru4rec", "--item-column", "i"], "--item-column: for --format csv only")):
        status, _, err = run_cli(main, base + argv, capsys)
        assert status == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "out").exists()


def test_the_same_log_as_a_file_folder_or_archive_prepares_the_same_data(folder, tmp_path, capsys):
    rng = np.random.default_rng(0)
    rows = [(s, s, f"i{rng.zipf(1.5) % 40}", 60_000 * s + 1000 * k, "-") for s in range(400) for k in range(4)]
    (folder / "clicks_hour_000.csv").write_text(_text(rows[:800]))
    (folder / "clicks_hour_001.csv").write_text(_text(rows[800:]))
    single = tmp_path / "all.csv"
    single.write_text(_text(rows))
    flags = ["--format", "csv", "--session-column", "session_id", "--item-column", "click_article_id",
             "--time-column", "click_timestamp", "--time-unit", "ms", "--json", "--quiet"]
    prints = []
    for index, source in enumerate((single, folder, _archive(folder, tmp_path / "c.tgz", sorted(HOURS)))):
        status, out, err = run_cli(main, ["--input", source, "--out", tmp_path / f"p{index}", *flags], capsys)
        assert status == 0, err
        prints.append(json.loads(out)["fingerprint"])
    assert len(set(prints)) == 1


@pytest.mark.skipif(not GLOBO.is_file(), reason=f"the Globo.com clicks are not at {GLOBO} (shared/data/globo-news)")
def test_the_globo_clicks_read_as_their_readme_counts_them():
    got = load_interactions(GLOBO, "csv", columns=SESSIONS, hash_file=False)
    assert len(got) == 2_988_181 and len(np.unique(got.user)) == 1_048_594 and len(got.item_ids) == 46_033
    assert got.source["files"] == 385

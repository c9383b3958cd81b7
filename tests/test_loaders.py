"""Raw loaders: every format, file order kept, and one clear InputError per kind of bad input."""

import numpy as np
import pytest

from conftest import write
from softmax_bottleneck.errors import InputError
from softmax_bottleneck.data import load_interactions

ROWS = [(7, 30, 4.0, 100), (7, 10, 2.0, 100), (3, 20, 5.0, 50), (7, 20, 3.5, 90)]


def _movielens_csv(tmp_path):
    body = "".join(f"{u},{i},{r},{t}\n" for u, i, r, t in ROWS)
    return write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n" + body)


def _movielens_dat(tmp_path):
    return write(tmp_path / "ratings.dat", "".join(f"{u}::{i}::{int(r)}::{t}\n" for u, i, r, t in ROWS))


def _udata(tmp_path):
    return write(tmp_path / "u.data", "".join(f"{u}\t{i}\t{int(r)}\t{t}\n" for u, i, r, t in ROWS))


def _recbole(tmp_path):
    header = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    return write(tmp_path / "x.inter", header + "".join(f"u{u}\tm{i}\t{r}\t{t}\n" for u, i, r, t in ROWS))


def _gru4rec(tmp_path):
    return write(tmp_path / "x.tsv", "SessionId\tItemId\tTime\n" + "".join(f"{u}\t{i}\t{t}\n" for u, i, _, t in ROWS))


@pytest.mark.parametrize("make, fmt", [(_movielens_csv, "movielens"), (_movielens_dat, "movielens"),
                                       (_udata, "movielens"), (_recbole, "recbole"), (_gru4rec, "gru4rec")])
def test_every_format_reads_the_rows_in_file_order(tmp_path, make, fmt):
    inter = load_interactions(make(tmp_path), fmt)
    labels = [x.lstrip("m") for x in inter.item_ids[inter.item]]
    assert labels == [str(i) for _, i, _, _ in ROWS]
    assert inter.timestamp.tolist() == [float(t) for *_, t in ROWS]
    assert inter.timestamp.dtype == np.float64 and inter.item.dtype == np.int32
    users = inter.user.tolist()
    assert users[0] == users[1] == users[3] != users[2]
    assert inter.sessionised == (fmt == "gru4rec")
    assert len(inter.source["sha256"]) == 64


def test_min_rating_keeps_only_high_ratings(tmp_path):
    inter = load_interactions(_movielens_csv(tmp_path), "movielens", min_rating=3.5)
    assert inter.item_ids[inter.item].tolist() == ["30", "20", "20"]


def test_movielens_reads_only_narrow_columns(tmp_path):
    inter = load_interactions(_movielens_csv(tmp_path), "movielens")
    assert inter.user.dtype == np.int32


def test_real_movielens_100k_as_recbole(ml100k_path):
    inter = load_interactions(ml100k_path, "recbole")
    assert len(inter) == 100_000
    assert len(inter.item_ids) == 1682
    assert len(np.unique(inter.user)) == 943


BAD_INPUTS = [
    ("missing", None, "movielens", "no such file"),
    ("empty", "", "movielens", "empty"),
    ("header only", "userId,movieId,rating,timestamp\n", "movielens", "no rows"),
    ("misnamed column", "userId,itemId,rating,timestamp\n1,2,3,4\n", "movielens", "missing movieId"),
    ("non-numeric timestamp", "userId,movieId,rating,timestamp\n1,2,3,4\n1,3,3,soon\n", "movielens",
     "'soon'"),
    ("missing timestamp", "userId,movieId,rating,timestamp\n1,2,3,4\n1,3,3,\n", "movielens", "timestamp"),
    ("NaN timestamp", "SessionId\tItemId\tTime\n1\t2\t5\n1\t3\tNaN\n", "gru4rec", "NaN"),
    ("wrong format", "SessionId\tItemId\tTime\n1\t2\t5\n", "movielens", "does not look like format movielens"),
    ("recbole without timestamp", "user_id:token\titem_id:token\n1\t2\n", "recbole", "missing timestamp"),
    ("unknown content", "hello world\n", "recbole", "no format we know"),
]


@pytest.mark.parametrize("name, text, fmt, needle", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_is_one_clear_error_naming_the_file(tmp_path, name, text, fmt, needle):
    path = tmp_path / "ratings.csv"
    if text is not None:
        write(path, text)
    with pytest.raises(InputError) as err:
        load_interactions(path, fmt)
    message = str(err.value)
    assert "\n" not in message
    assert str(path) in message
    assert needle in message


@pytest.mark.parametrize("make, fmt", [(_movielens_csv, "movielens"), (_recbole, "recbole"), (_gru4rec, "gru4rec")])
def test_a_utf8_bom_is_not_part_of_the_first_column(tmp_path, make, fmt):
    plain = load_interactions(make(tmp_path), fmt, hash_file=False)
    path = make(tmp_path / "bom")
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    with_bom = load_interactions(path, fmt, hash_file=False)
    assert np.array_equal(plain.item_ids[plain.item], with_bom.item_ids[with_bom.item])
    assert np.array_equal(plain.timestamp, with_bom.timestamp)


def test_a_compressed_file_says_to_decompress_it(tmp_path):
    import gzip

    path = tmp_path / "ratings.csv.gz"
    path.write_bytes(gzip.compress(_movielens_csv(tmp_path).read_bytes()))
    with pytest.raises(InputError, match=r"is gzip-compressed; decompress it first \(gunzip ratings.csv.gz\)"):
        load_interactions(path, "movielens")


def test_a_fifo_is_refused_instead_of_blocking_forever(tmp_path):
    import os

    fifo = tmp_path / "ratings.csv"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="not a regular file"):
        load_interactions(fifo, "movielens")

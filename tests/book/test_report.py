"""Markdown tables render the rows they are given."""

import pytest

from zoomin_lib.book.report import format_cell, markdown_table


def test_markdown_table_by_hand():
    md = markdown_table([{"K": 2, "holds": True, "err": 1.23456e-16}, {"K": 3, "holds": False, "err": 0.5}])
    assert md.data.splitlines() == [
        "| K | holds | err |",
        "|---|---|---|",
        "| 2 | yes | 1.23e-16 |",
        "| 3 | no | 0.5 |",
    ]


def test_cells_and_errors():
    assert format_cell("a|b") == "a\\|b"
    assert format_cell(0.123456, digits=2) == "0.12"
    with pytest.raises(ValueError, match="at least one row"):
        markdown_table([])


def test_large_floats_are_written_whole():
    """No exponent for an ordinary number: a quoted 3260 MB, a 100 % recall, 20851 MiB."""
    assert format_cell(3260.0) == "3260"
    assert format_cell(20851.3) == "20851"
    assert format_cell(100.0, digits=1) == "100"
    assert format_cell(50.0, digits=1) == "50"
    assert format_cell(16.67, digits=1) == "17"
    assert format_cell(99.7, digits=1) == "100"  # rounding that carries to 10^digits
    assert format_cell(9.7, digits=1) == "10"
    assert format_cell(5.5, digits=1) == "6"
    assert format_cell(12.5, digits=3) == "12.5"
    assert format_cell(-4321.0) == "-4321"
    assert format_cell(2.5e9) == "2.5e+09"  # huge and tiny numbers keep their exponent
    assert format_cell(float("inf")) == "inf"
    assert format_cell(float("nan")) == "nan"

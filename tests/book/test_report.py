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

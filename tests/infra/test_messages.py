"""Error messages say enough to act on: the digits that show the difference, the most specific cause first."""

from __future__ import annotations

import pytest
import torch

from zoomin_lib.sampling import validate_probs


def test_probability_row_off_by_1e7_shows_the_difference():
    """A float64 row summing to 1 - 1e-7 is rejected with digits that show it does not sum to 1."""
    probs = torch.tensor([[0.25, 0.75 - 1e-7]], dtype=torch.float64)
    with pytest.raises(ValueError) as info:
        validate_probs(probs)
    message = str(info.value)
    assert "row 0 sums to 0.9999999," in message
    assert "off by -1e-07" in message
    assert "tolerance 1e-08" in message
    assert "sums to 1 " not in message  # the old message read as if the row had passed


def test_probability_row_within_tolerance_passes():
    """A row 1e-9 off in float64 (inside the tolerance) is accepted."""
    validate_probs(torch.tensor([[0.5, 0.5 - 1e-9]], dtype=torch.float64))


def test_damaged_npz_and_crop_errors_name_the_file(tmp_path):
    """A truncated .npz of a generated testbed and a garbled NeedleCamelyon crop: errors name the file."""
    import numpy as np

    from data_prep.mnist_digits import load_npz, save_npz
    from data_prep.problems import DataFileError, read_rgb

    path = save_npz(tmp_path / "train.npz", {"x": np.arange(1000, dtype=np.uint8)})
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(DataFileError, match=rf"{path}: not a readable .npz file \(.*\); regenerate"):
        load_npz(path)
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path / 'gone.npz'}: prepared arrays missing"):
        load_npz(tmp_path / "gone.npz")
    crop = tmp_path / "crop.png"
    crop.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataFileError, match=rf"{crop}: not a readable image \("):
        read_rgb(crop)

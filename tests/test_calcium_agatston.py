"""Agatston scoring against phantoms whose scores are computed by hand."""
import numpy as np
import pytest

from pipelines.calcium.agatston import DEFAULT_RISK, KAPPA_RISK, RiskScheme, agatston, density_weight


def _vol(z=6, n=40):
    hu = np.full((z, n, n), 40, dtype=np.int16)
    lab = np.zeros((z, n, n), dtype=np.uint8)
    return hu, lab


def test_density_weight_bands():
    assert [density_weight(v) for v in (129, 130, 199, 200, 299, 300, 399, 400, 1500)] == [0, 1, 1, 2, 2, 3, 3, 4, 4]


def test_single_lesion_by_hand():
    # 4x5 px lesion, 0.5 mm pixels -> 5 mm^2; peak 250 -> weight 2; two 3 mm slices -> 2 * 10 = 20
    hu, lab = _vol()
    hu[2:4, 10:14, 10:15] = 180
    hu[2, 11, 11] = 250  # peak on slice 2 only: slice 3 stays weight 1
    lab[2:4, 8:16, 8:17] = 3
    r = agatston(hu, lab, (0.5, 0.5), 3.0, classes=range(1, 9))
    assert r.per_class[3].score == pytest.approx(5 * 2 + 5 * 1)
    assert r.per_class[3].n_lesions == 2
    assert r.per_class[3].volume_mm3 == pytest.approx(2 * 5 * 3.0)
    assert r.total == pytest.approx(15.0)
    assert r.per_class[1].score == 0 and set(r.per_class) == set(range(1, 9))


def test_threshold_area_and_labels():
    hu, lab = _vol()
    lab[:] = 0
    hu[1, 5:7, 5:7] = 500  # 4 px * 0.2 mm^2 = 0.8 mm^2 < 1 mm^2 -> ignored
    lab[1, 5:7, 5:7] = 1
    hu[1, 20:25, 20:25] = 129  # below 130 HU -> not calcium
    lab[1, 20:25, 20:25] = 1
    hu[2, 30:35, 30:35] = 700  # calcium but outside every class label -> not scored
    hu[4, 10:15, 10:15] = 420  # 25 px * 0.2 = 5 mm^2 * 4 = 20, class 6
    lab[4, 8:17, 8:17] = 6
    px = (np.sqrt(0.2), np.sqrt(0.2))
    r = agatston(hu, lab, px, 3.0)
    assert r.total == pytest.approx(20.0)
    assert r.per_class[1].score == 0 and r.per_class[1].n_lesions == 0 and r.per_class[6].score == pytest.approx(20.0)


def test_connectivity_and_two_classes_on_one_slice():
    hu, lab = _vol()
    # two diagonal touching 2x2 blocks of 1 mm pixels: one lesion with 8-connectivity, two with 4
    hu[0, 10:12, 10:12] = 150
    hu[0, 12:14, 12:14] = 350
    lab[0, 9:15, 9:15] = 2
    hu[0, 30:33, 30:33] = 450
    lab[0, 30:33, 30:33] = 8
    r8 = agatston(hu, lab, (1, 1), 3.0)
    assert r8.per_class[2].score == pytest.approx(8 * 3)  # peak 350 over the whole lesion
    r4 = agatston(hu, lab, (1, 1), 3.0, connectivity=4)
    assert r4.per_class[2].score == pytest.approx(4 * 1 + 4 * 3)
    assert r8.per_class[8].score == pytest.approx(9 * 4)


def test_thin_slices_scale_to_3mm_equivalent():
    # the same 3 mm thick calcium as three 1 mm slices scores the same as one 3 mm slice
    hu3, lab3 = _vol(z=1)
    hu3[0, 10:15, 10:15] = 300
    lab3[0] = 4
    hu1, lab1 = _vol(z=3)
    hu1[:, 10:15, 10:15] = 300
    lab1[:] = 4
    r3 = agatston(hu3, lab3, (0.7, 0.7), 3.0)
    r1 = agatston(hu1, lab1, (0.7, 0.7), 1.0)
    assert r3.total == pytest.approx(25 * 0.49 * 3)
    assert r1.total == pytest.approx(r3.total)
    assert r1.total_volume_mm3 == pytest.approx(r3.total_volume_mm3)
    raw = agatston(hu1, lab1, (0.7, 0.7), 1.0, z_rule="none")
    assert raw.total == pytest.approx(3 * r3.total)


def test_risk_categories():
    assert [DEFAULT_RISK.name(s) for s in (0, 0.5, 10, 10.5, 100, 400, 401)] == [
        "0", "1-10", "1-10", "11-100", "11-100", "101-400", ">400"]
    assert [KAPPA_RISK.index(s) for s in (0, 50, 101, 1000)] == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="risk.bounds"):
        RiskScheme.from_option([0, 100, 50], "risk.bounds")

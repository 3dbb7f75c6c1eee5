"""The Micius 2016-12-19 pass as expected decoy-state counts, shared by the estimation tests.

Ma et al. 2005 model fitted to the paper's numbers: signal detections 3.34 M of 1.365e10 pulses,
vacuum detections 2.5e4 of 6.825e9, signal QBER 1.1 %."""

import math

import numpy as np

from satqkd.postprocess.estimation import DecoyCounts, expected_decoy_counts

MU = (0.8, 0.1, 0.0)
P = (0.5, 0.25, 0.25)
EMITTED = np.array([1.365e10, 6.825e9, 6.825e9])
Y0 = 2.5e4 / 6.825e9
ETA = -math.log(1 - (3.34e6 / 1.365e10 - Y0)) / 0.8
E_D = (0.011 * 3.34e6 / 1.365e10 - 0.5 * Y0) / (1 - math.exp(-0.8 * ETA))


def micius(delta=0.05) -> DecoyCounts:
    return expected_decoy_counts(EMITTED, MU, P, eta=ETA, y0=Y0, e_d=E_D, intensity_fluctuation=delta)

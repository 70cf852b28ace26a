"""nHSIC-CKA (ours, not in the paper): ``tr(R_X R_Z) / sqrt(tr(R_X^2) tr(R_Z^2))``, in [0, 1].

The NOCCO operators of :mod:`ibstudy.estimators.nhsic` normalized like a kernel alignment, so the
values of layers of different effective rank are comparable; computed by
:class:`ibstudy.hsic.InfoPlane` (equals :func:`ibstudy.hsic.nhsic_cka` on each chunk).
"""

from __future__ import annotations

from ibstudy.estimators.nhsic import Nocco

__all__ = ["NHSIC_CKA"]

NHSIC_CKA = Nocco("nhsic_cka", "nHSIC-CKA", "alignment in [0, 1]", normalized=True)

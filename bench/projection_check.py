"""Check the decode-speed projection where the truth is known: project every calibration shape measured
on GPU A to GPU B and compare with what B measured (both directions), for the two-term model and for
the older single-term projection (fraction of A's copy-bandwidth roofline x B's spec roofline).

    python bench/projection_check.py A.json B.json      # two `optpipe calibrate` outputs

Caveat: the two-term projection of a shape uses A's fixed cost fitted on the same four shapes (not
left out), so its errors are a little optimistic for shapes outside the sweep.
"""

from __future__ import annotations

import sys
from pathlib import Path

from optpipe.measure.calibration import HostCalibration, project_step


def rows(a: HostCalibration, b: HostCalibration) -> list[tuple[str, float, float, float, float]]:
    truth = {p.shape: p for p in b.points}
    out = []
    for p in a.points:
        if p.shape not in truth:
            continue
        two_term, _, _ = project_step(p.step_s, 0.0, a.model_copy(update={"model_error_rel": 0.0}), b.spec_bandwidth_gbs)
        single = p.decode_tok_s * b.spec_bandwidth_gbs / a.copy_bandwidth_gbs
        out.append((p.shape, p.decode_tok_s, truth[p.shape].decode_tok_s, two_term, single))
    return out


def main(argv: list[str]) -> int:
    cals = [HostCalibration.model_validate_json(Path(f).read_text()) for f in argv]
    for a, b in ((cals[0], cals[1]), (cals[1], cals[0])):
        print(
            f"\n{a.gpu} -> {b.gpu} (fixed {a.fixed_s * 1e3:.3f} ms, spec {a.spec_bandwidth_gbs:g} -> {b.spec_bandwidth_gbs:g} GB/s)"
        )
        print(f"{'shape':14} {'A tok/s':>8} {'B meas':>8} {'two-term':>9} {'err':>7} {'single':>8} {'err':>7}")
        errs2, errs1 = [], []
        for shape, ta, tb, p2, p1 in rows(a, b):
            e2, e1 = p2 / tb - 1, p1 / tb - 1
            errs2.append(abs(e2))
            errs1.append(abs(e1))
            print(f"{shape:14} {ta:8.1f} {tb:8.1f} {p2:9.1f} {e2:+7.1%} {p1:8.1f} {e1:+7.1%}")
        print(
            f"mean |error|: two-term {sum(errs2) / len(errs2):.1%} (max {max(errs2):.1%}), "
            f"single-term {sum(errs1) / len(errs1):.1%} (max {max(errs1):.1%})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

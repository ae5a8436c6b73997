"""The paper figures F1..F8 (``teacherstudent figures``), one module each, installed as ``teacherstudent_analysis.figures``.

A figure module reads results only through the named experiments' tables (``tables[experiment][table]``,
as ``teacherstudent.experiments.run_study`` computes them) and defines:

- ``TITLE``: what it shows, and ``SETTING``: the setting it was measured in (the title on the figure; the setting is its caption on the report page);
- ``CLAIM``: the claim the figure tests (one sentence);
- ``EXPERIMENTS``: the named experiments it needs (each must have a ``[quick]`` table for ``--quick``);
- ``PANELS``: panel name -> axes labels (with units) and scales, in drawing order;
- ``data(tables) -> DataFrame``: exactly the numbers plotted (``teacherstudent.figures.PLOT_COLUMNS``),
  written as the figure's CSV and drawn by ``teacherstudent.figures.render``;
- ``verdict(tables) -> (measured, holds)``: the number that decides the claim, as a sentence, and
  whether the claim holds.

Adding a figure: one module here plus one line in ``FIGURES``.
"""

from . import f1_recovery, f2_luck, f3_lshape, f4_overparam, f5_strength, f6_lottery, f7_structured, f8_lucky_fanout

FIGURES = {
    "F1": f1_recovery,
    "F2": f2_luck,
    "F3": f3_lshape,
    "F4": f4_overparam,
    "F5": f5_strength,
    "F6": f6_lottery,
    "F7": f7_structured,
    "F8": f8_lucky_fanout,
}

"""Named experiments (``<name>.py`` with its base config ``<name>.toml``), installed as ``teacherstudent_analysis``.

The files are loaded by path (``teacherstudent.experiments.load_experiment``), not imported as
submodules; this package only lets them ship inside the wheel.
"""

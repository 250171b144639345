from analysis.metrics import basic_measure
from ui.technique import TechniqueSpec, technique_page

technique_page(TechniqueSpec(
    technique="enhancement",
    title="Enhancement",
    intro="Contrast, sharpening, denoising and bias correction — before/after, sweep grids and dataset-wide effect.",
    measure=basic_measure,
))

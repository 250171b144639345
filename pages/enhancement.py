from analysis.metrics import enhancement_measure, enhancement_tile_metrics
from ui.technique import TechniqueSpec, technique_page

technique_page(TechniqueSpec(
    technique="enhancement",
    title="Enhancement",
    intro="Contrast, sharpening, denoising and bias correction — linked before/after, metrics against the input and the "
          "clean reference, A/B, sweep grids, pipelines, dataset-wide effect and exports.",
    measure=enhancement_measure,
    tile_metrics=enhancement_tile_metrics,
    cnr_boxes=True,
))

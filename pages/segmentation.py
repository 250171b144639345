from ui.common import header, not_built

header("Segmentation")
not_built("The Segmentation page", "tracked in its own issue")

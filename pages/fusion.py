from ui.common import header, not_built

header("Fusion")
not_built("The Fusion page", "tracked in its own issue")

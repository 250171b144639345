from ui.common import header, not_built

header("Dataset")
not_built("The Dataset page", "tracked in its own issue")

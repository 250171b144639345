from ui.common import header, not_built

header("Recognition")
not_built("The Recognition page", "tracked in its own issue")

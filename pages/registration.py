from ui.common import header, not_built

header("Registration")
not_built("The Registration page", "tracked in its own issue")

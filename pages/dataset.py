from ui.dataset_page import dataset_page

dataset_page()

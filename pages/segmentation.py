from ui.segmentation import page

page()

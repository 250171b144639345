from ui.recognition import recognition_page

recognition_page()

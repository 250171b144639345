from ui.registration import registration_page

registration_page()

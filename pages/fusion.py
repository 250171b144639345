from ui.fusion import fusion_page

fusion_page()

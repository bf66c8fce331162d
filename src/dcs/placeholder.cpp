// placeholder translation unit for the dcs library until its code lands.

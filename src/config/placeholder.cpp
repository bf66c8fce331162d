// placeholder translation unit for the config library until its code lands.

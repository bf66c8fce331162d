// placeholder translation unit for the net library until its code lands.

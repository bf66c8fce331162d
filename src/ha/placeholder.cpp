// placeholder translation unit for the ha library until its code lands.

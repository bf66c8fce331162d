// placeholder translation unit for the pg library until its code lands.

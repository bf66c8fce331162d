// placeholder translation unit for the agent library until its code lands.

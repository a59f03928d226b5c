"""`predstore demo`: the whole loop on the UCI Bike Sharing data, with one command."""
